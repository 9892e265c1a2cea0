//! The real CUDA runtime on GPU 0: start-up (NVRTC compile + disk cache), transfers, launch checks, the caching
//! allocator, and the clear errors when no driver / GPU is present.
//!
//! The tests that need a GPU are `#[ignore]`d, so a machine without one reports them as ignored (never as
//! passed); scripts/gpu_run.sh runs them with `--include-ignored`, and there a GPU that does not open fails them.

use std::sync::Arc;
use std::time::Instant;

use gan_engine::backend::{Activation, Backend};
use gan_engine::cuda::{cuda_backend, CudaBackend, KernelArg as A, LaunchCfg};

fn gpu(test: &str) -> Arc<CudaBackend> {
    cuda_backend(0).unwrap_or_else(|e| panic!("{test}: cuda:0 does not open: {e:#}"))
}

#[test]
fn missing_gpu_is_a_clear_error_not_a_panic() {
    // Whatever this machine has, opening must return (Ok or a readable error), never panic.
    match cuda_backend(0) {
        Ok(be) => println!("opened {}", be.runtime().name()),
        Err(e) => {
            let msg = format!("{e:#}");
            println!("no GPU here: {msg}");
            assert!(msg.contains("cuda") || msg.contains("NVRTC"), "{msg}");
        }
    }
    let err = gan_engine::Device::parse("cuda:99");
    assert!(err.is_err());
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn start_up_uses_the_kernel_cache() {
    let t = Instant::now();
    let first = gpu("start_up_uses_the_kernel_cache");
    let first_secs = t.elapsed().as_secs_f64();
    // The runtime's name ends "... -> TARGET)": the NVRTC target its modules were built for.
    let name = first.runtime().name();
    let target = name
        .rsplit("-> ")
        .next()
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no target in {name}"))
        .to_string();
    drop(first);
    // Every module is now in the disk cache: what a second start loads must all come from it. Asserted on
    // the cache, not on a time: context creation alone takes a varying fraction of a second on a real GPU.
    for file in gan_engine::cuda::nvrtc::kernel_files() {
        let c = gan_engine::cuda::nvrtc::compile_cached(file, &target).unwrap();
        assert!(c.from_cache, "{file} for {target} was compiled again");
    }
    let t = Instant::now();
    let be = cuda_backend(0).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "start of {}: first {first_secs:.3} s, second (kernel cache) {secs:.3} s",
        be.runtime().name()
    );
    // Only a gross regression: loading cached CUBINs is milliseconds, the driver's context a second at most.
    assert!(secs < 10.0, "second start took {secs:.2} s");
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn transfers_launches_and_errors() {
    let be = gpu("transfers_launches_and_errors");
    let v: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 7.0).collect();
    let x = be.from_host(&v, &[1001]).unwrap();
    assert_eq!(x.to_vec().unwrap(), v);
    let y = be.affine(&x, 2.0, 1.0).unwrap();
    let want: Vec<f32> = v.iter().map(|a| 2.0 * a + 1.0).collect();
    assert_eq!(y.to_vec().unwrap(), want);
    // Argument mismatches are caught before the launch, naming the kernel.
    let e = be
        .launch(
            "fill_f32",
            LaunchCfg::linear(4, 32),
            &[A::Ptr(be.ptr(&x).unwrap())],
        )
        .unwrap_err();
    assert!(format!("{e}").contains("fill_f32"), "{e}");
    // An invalid configuration is an error, and the runtime stays usable afterwards.
    assert!(be
        .launch(
            "fill_f32",
            LaunchCfg::linear(4, 2048),
            &[A::Ptr(be.ptr(&x).unwrap()), A::F32(0.0), A::I32(4)]
        )
        .is_err());
    be.synchronize().unwrap();
    assert_eq!(be.sum(&x).unwrap().scalar().unwrap(), v.iter().sum::<f32>());
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn warmed_up_steps_allocate_nothing_from_the_driver() {
    let be = gpu("warmed_up_steps_allocate_nothing_from_the_driver");
    let x = be.randn(&[64, 4099], 0.0, 1.0, 7, 0).unwrap();
    let step = || {
        let y = be.activation(&x, Activation::LeakyRelu(0.2)).unwrap();
        let (l, g) = be.bce_with_logits(&y, 1.0).unwrap();
        let d = be
            .activation_backward(&y, &g, Activation::LeakyRelu(0.2))
            .unwrap();
        be.sum(&d).unwrap().scalar().unwrap() + l.scalar().unwrap()
    };
    let first = step();
    let warm = be.alloc_stats();
    for _ in 0..5 {
        assert_eq!(step(), first, "deterministic reductions");
    }
    let after = be.alloc_stats();
    println!("allocator after warm-up: {warm:?} -> {after:?}");
    assert_eq!(after.misses, warm.misses);
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn event_timing_measures_the_queued_work() {
    let be = gpu("event_timing_measures_the_queued_work");
    let x = be.from_host(&vec![0.5f32; 1 << 22], &[1 << 22]).unwrap();
    let time = |launches: usize| {
        be.synchronize().unwrap();
        let host = Instant::now();
        let dev = be
            .device_time(&mut || {
                for _ in 0..launches {
                    be.affine(&x, 1.0001, 0.0)?;
                }
                Ok(())
            })
            .unwrap()
            .expect("a real GPU has events");
        (dev, host.elapsed())
    };
    time(4); // warm-up
    let (d1, h1) = time(10);
    let (d2, h2) = time(40);
    println!("10 launches: {d1:?} device, {h1:?} host; 40 launches: {d2:?} device, {h2:?} host");
    // The events bracket the work: positive, within the host's view of the same region, and growing with it.
    assert!(
        d1.as_nanos() > 0 && d1 <= h1 && d2 <= h2,
        "{d1:?} {h1:?} {d2:?} {h2:?}"
    );
    assert!(d2 > d1 * 2, "40 launches took {d2:?}, 10 took {d1:?}");
}

#[test]
fn event_timing_is_absent_on_the_emulation() {
    // The emulation has no device clock: it says so without running the closure, so callers fall back.
    let Ok(be) = gan_engine::cuda::emulated_backend() else {
        println!("no NVRTC here: the emulation does not open");
        return;
    };
    let mut called = false;
    let t = be
        .device_time(&mut || {
            called = true;
            Ok(())
        })
        .unwrap();
    assert!(t.is_none() && !called);
}
