//! Shared by the side-by-side benchmarks (`ops.rs`, `train.rs`): the DCGAN layer table and its FLOP counts,
//! the devices a group runs on, and timing that is honest for asynchronous GPUs.
//!
//! Every benchmark group holds the same computation twice, as the criterion functions `ours` and (with the
//! `libtorch` feature) `libtorch`, so criterion's report and `scripts/benchmarks_md.py` put them side by side.
//! Group ids are `"<device> <what>"` with device `cpu` or `cuda`.

// Each bench binary uses only part of this module.
#![allow(dead_code)]

pub mod dcgan;
#[cfg(feature = "libtorch")]
pub mod paired;
pub mod peak;
#[cfg(feature = "libtorch")]
pub mod torch;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion};
use gan_engine::cuda::CudaBackend;
use gan_engine::Device;

/// Small samples so the whole CPU suite runs in a few minutes on two cores; every group that takes more than a
/// few milliseconds per iteration also switches to flat sampling (ten runs of one iteration each).
pub fn criterion_config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .noise_threshold(0.05)
}

/// Where "ours" runs: the CPU backend, or our CUDA backend (kept concrete so timing can synchronise it).
#[derive(Clone)]
pub struct Ours {
    pub device: Device,
    pub cuda: Option<Arc<CudaBackend>>,
}

impl Ours {
    pub fn cpu() -> Ours {
        Ours {
            device: Device::Cpu,
            cuda: None,
        }
    }

    /// "cpu" or "cuda": the first word of every group id.
    pub fn label(&self) -> &'static str {
        if self.cuda.is_some() {
            "cuda"
        } else {
            "cpu"
        }
    }

    /// Times `f`. On the GPU every launch is asynchronous, so `iters` calls are timed with CUDA events recorded
    /// on the stream before the first and after the last, starting from an idle device: device time counts,
    /// and host launch overhead counts where it leaves the device waiting, as it does in training. On the
    /// emulation (no device clock) the host clock runs from a synchronised device to a synchronised device.
    pub fn time<R>(&self, b: &mut Bencher, mut f: impl FnMut() -> R) {
        match &self.cuda {
            None => b.iter(f),
            Some(be) => b.iter_custom(|iters| {
                be.synchronize().expect("cuda synchronize");
                let mut run = || {
                    for _ in 0..iters {
                        std::hint::black_box(f());
                    }
                    Ok(())
                };
                if let Some(t) = be.device_time(&mut run).expect("cuda event timing") {
                    return t;
                }
                let t = Instant::now();
                run().expect("the timed calls");
                be.synchronize().expect("cuda synchronize");
                t.elapsed()
            }),
        }
    }
}

/// What one call did on a CUDA backend: kernel launches, host↔device copies and allocations the caching
/// allocator could not serve from its cache. Printed beside the training-iteration bench: a captured CUDA
/// graph would need the copies and driver allocations at zero, and the launch count is what it would save.
pub struct StepCounts {
    pub launches: u64,
    /// Launches per kernel, most launched first.
    pub by_kernel: Vec<(&'static str, u64)>,
    pub transfers: gan_engine::cuda::TransferCounts,
    pub driver_allocs: u64,
}

impl StepCounts {
    pub fn of(be: &CudaBackend, f: impl FnOnce()) -> StepCounts {
        let (l0, t0, a0) = (
            be.runtime().launch_counts(),
            be.runtime().transfer_counts(),
            be.alloc_stats().misses,
        );
        f();
        let t1 = be.runtime().transfer_counts();
        let by_kernel = gan_engine::cuda::launches_between(&l0, &be.runtime().launch_counts());
        StepCounts {
            launches: by_kernel.iter().map(|(_, c)| c).sum(),
            by_kernel,
            transfers: gan_engine::cuda::TransferCounts {
                htod: t1.htod - t0.htod,
                htod_bytes: t1.htod_bytes - t0.htod_bytes,
                dtoh: t1.dtoh - t0.dtoh,
                dtoh_bytes: t1.dtoh_bytes - t0.dtoh_bytes,
                dtod: t1.dtod - t0.dtod,
            },
            driver_allocs: be.alloc_stats().misses - a0,
        }
    }
}

impl std::fmt::Display for StepCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let t = &self.transfers;
        write!(
            f,
            "{} kernel launches, {} host-to-device copies ({} B), {} device-to-host copies ({} B), {} \
             device-to-device copies, {} driver allocations per step",
            self.launches, t.htod, t.htod_bytes, t.dtoh, t.dtoh_bytes, t.dtod, self.driver_allocs
        )?;
        let kernels: Vec<String> = self
            .by_kernel
            .iter()
            .map(|(k, c)| format!("{k} {c}"))
            .collect();
        write!(f, "\n  launches by kernel: {}", kernels.join(", "))
    }
}

/// Our CUDA backend, if one opens. GAN_BENCH_CUDA=emu runs the CUDA groups on the CPU emulation of the
/// kernels instead (far too slow to measure anything; it exists to exercise the CUDA code paths of these
/// benches without a GPU, with `cargo test --benches`). The outcome is printed once per process.
pub fn cuda_ours() -> Option<Ours> {
    static OPENED: OnceLock<Option<Arc<CudaBackend>>> = OnceLock::new();
    OPENED
        .get_or_init(|| {
            let spec = std::env::var("GAN_BENCH_CUDA").unwrap_or_else(|_| "cuda".into());
            let opened = if spec == "emu" {
                gan_engine::cuda::emulated_backend()
            } else {
                gan_engine::cuda::cuda_backend(0)
            };
            match opened {
                Ok(be) => {
                    eprintln!(
                        "gan-engine bench: CUDA groups run on {}",
                        be.device().name()
                    );
                    Some(be)
                }
                Err(e) => {
                    eprintln!(
                        "gan-engine bench: CUDA groups skipped (no CUDA device opened: {e:#})"
                    );
                    None
                }
            }
        })
        .clone()
        .map(|be| Ours {
            device: be.device(),
            cuda: Some(be),
        })
}

/// The devices a bench file runs on: the CPU, then our CUDA backend when one opens. GAN_BENCH_DEVICES (a
/// comma-separated subset of `cpu,cuda`) narrows the list, e.g. to spend a GPU machine's time on its GPU.
pub fn devices() -> Vec<Ours> {
    let want = std::env::var("GAN_BENCH_DEVICES").unwrap_or_else(|_| "cpu,cuda".into());
    let want: Vec<&str> = want.split(',').map(str::trim).collect();
    let mut v = Vec::new();
    if want.contains(&"cpu") {
        v.push(Ours::cpu());
    }
    if want.contains(&"cuda") {
        v.extend(cuda_ours());
    }
    v
}
