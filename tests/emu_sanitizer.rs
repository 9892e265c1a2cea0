//! The emulator's sanitizer (kernels/emu/cuda_emu.cpp): each planted bug of kernels/emu/planted.cu is reported by
//! the check that covers it, naming the kernel and the thread, and the correct twin of each runs clean (with the
//! right result) under every check.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::cuda::emu::{Checks, EmuRuntime};
use gan_engine::cuda::{CudaBackend, GpuRuntime, KernelArg as A, LaunchCfg};
use gan_engine::Tensor;

fn backend(checks: Checks) -> Arc<CudaBackend> {
    CudaBackend::new(Arc::new(EmuRuntime::with_checks(checks)))
}

fn checks(spec: &str) -> Checks {
    Checks::parse(spec).unwrap()
}

/// 0.5, 1.5, 2.5, ... (n floats, written).
fn ramp(be: &Arc<CudaBackend>, n: usize) -> Tensor {
    let v: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
    Tensor::from_vec(v, &[n], &be.device()).unwrap()
}

/// Runs `kernel` on `grid` blocks of 64 threads with `out` (64 * grid floats, zeroed) as its first argument and
/// the pointers and ints of `rest` after it. Returns the launch's result and `out`.
fn run(
    be: &Arc<CudaBackend>,
    kernel: &str,
    grid: u32,
    rest: &[Arg],
) -> (anyhow::Result<()>, Vec<f32>) {
    let out = be.alloc_zeros(&[64 * grid as usize]).unwrap();
    let mut args = vec![A::Ptr(be.ptr(&out).unwrap())];
    for a in rest {
        args.push(match a {
            Arg::T(t) => A::Ptr(be.ptr(t).unwrap()),
            Arg::I(i) => A::I32(*i),
        });
    }
    let res = be.launch(kernel, LaunchCfg::blocks(grid, 64), &args);
    (res, out.to_vec().unwrap())
}

enum Arg<'a> {
    T(&'a Tensor),
    I(i32),
}

/// Runs `kernel` as [`run`] does and asserts that the launch failed with a report that names the kernel and
/// contains every needle.
fn reports(be: &Arc<CudaBackend>, kernel: &str, grid: u32, rest: &[Arg], needles: &[&str]) {
    let (res, _) = run(be, kernel, grid, rest);
    reported(res, kernel, needles);
}

/// The launch failed with a report that names the kernel and contains every needle.
/// The planted bug in `kernel` (one block over a 64-element ramp) is reported, with the checks `on`, with every
/// needle, and its correct twin `<kernel>_ok` runs clean under all checks; returns the twin's output and the ramp.
fn planted_and_fixed(on: Checks, kernel: &str, needles: &[&str]) -> (Vec<f32>, Vec<f32>) {
    let be = backend(on);
    let x = ramp(&be, 64);
    reports(&be, kernel, 1, &[Arg::T(&x)], needles);
    let be = backend(Checks::ALL);
    let x = ramp(&be, 64);
    let (res, out) = run(&be, &format!("{kernel}_ok"), 1, &[Arg::T(&x)]);
    res.unwrap();
    (out, x.to_vec().unwrap())
}

fn reported(res: anyhow::Result<()>, kernel: &str, needles: &[&str]) {
    let msg = format!("{:#}", res.expect_err("the planted bug must be reported"));
    assert!(
        msg.contains(kernel),
        "the report should name the kernel: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in: {msg}");
    }
}

#[test]
fn a_missing_barrier_is_a_race_whichever_thread_writes_first() {
    let be = backend(Checks::ALL);
    let x = ramp(&be, 64);
    for shift in [1, -1] {
        let (res, _) = run(
            &be,
            "planted_missing_barrier",
            1,
            &[Arg::T(&x), Arg::I(shift)],
        );
        // In index order the reader of shift -1 runs before its writer: initcheck sees the read first.
        let want = if shift == 1 { "racecheck" } else { "initcheck" };
        reported(res, "planted_missing_barrier", &[want, "`s`", "thread ("]);

        let (res, out) = run(
            &be,
            "planted_missing_barrier_ok",
            1,
            &[Arg::T(&x), Arg::I(shift)],
        );
        res.unwrap();
        for (t, v) in out.iter().enumerate() {
            let j = t as i32 - shift;
            assert_eq!(
                *v,
                if (0..64).contains(&j) {
                    j as f32 + 0.5
                } else {
                    0.0
                }
            );
        }
    }
}

#[test]
fn racecheck_reports_both_directions() {
    let be = backend(checks("racecheck"));
    let x = ramp(&be, 64);
    reports(
        &be,
        "planted_missing_barrier",
        1,
        &[Arg::T(&x), Arg::I(1)],
        &[
            "racecheck",
            "thread (1,0,0) reads `s`[byte 0] that thread (0,0,0) wrote",
            "read-after-write",
        ],
    );
    // The reader runs first: its read is recorded, and the write that follows is the race.
    reports(
        &be,
        "planted_missing_barrier",
        1,
        &[Arg::T(&x), Arg::I(-1)],
        &[
            "racecheck",
            "thread (1,0,0) writes `s`[byte 4] that thread (0,0,0) read",
            "(read-write race)",
        ],
    );
}

#[test]
fn schedules_alone_find_races_in_shared_and_global_memory() {
    // `schedules` compares the first launch of each kernel only.
    let be = backend(checks("schedules-every"));
    let x = ramp(&be, 64);
    for shift in [1, -1] {
        reports(
            &be,
            "planted_missing_barrier",
            1,
            &[Arg::T(&x), Arg::I(shift)],
            &["schedules", "argument #0"],
        );
    }
    let be = backend(Checks::ALL);
    let scratch = be.alloc_zeros(&[64]).unwrap();
    reports(
        &be,
        "planted_global_race",
        1,
        &[Arg::T(&scratch)],
        &["schedules", "differs"],
    );
    let (res, out) = run(&be, "planted_global_race_ok", 1, &[Arg::T(&scratch)]);
    res.unwrap();
    for (t, v) in out.iter().enumerate() {
        assert_eq!(*v, ((t + 63) % 64 + 1) as f32);
    }
}

#[test]
fn an_off_by_one_store_is_out_of_bounds() {
    for c in [Checks::ALL, checks("memcheck")] {
        let be = backend(c);
        // 64 floats: 256 bytes, exactly one allocator bucket, so the element past the end is no one's.
        let out = be.alloc_zeros(&[64]).unwrap();
        let launch = |kernel: &str| {
            let args = [A::Ptr(be.ptr(&out).unwrap()), A::I32(64)];
            be.launch(kernel, LaunchCfg::blocks(2, 64), &args)
        };
        reported(
            launch("planted_off_by_one"),
            "planted_off_by_one",
            &[
                "memcheck",
                "thread (0,0,0)",
                "block (1,0,0)",
                "store",
                "past the end",
                "argument #0",
            ],
        );
        launch("planted_off_by_one_ok").unwrap();
        assert!(out.to_vec().unwrap().iter().all(|v| *v == 1.0));
    }
}

#[test]
fn a_misaligned_vector_load_is_reported() {
    let be = backend(Checks::ALL);
    let x = ramp(&be, 4 * 64 + 4);
    reports(
        &be,
        "planted_vector_load",
        1,
        &[Arg::T(&x), Arg::I(1)],
        &[
            "memcheck",
            "misaligned access to 'const struct float4'",
            "argument #1",
            "planted.cu:",
        ],
    );
    let (res, out) = run(&be, "planted_vector_load", 1, &[Arg::T(&x), Arg::I(0)]);
    res.unwrap();
    for (t, v) in out.iter().enumerate() {
        assert_eq!(*v, (16 * t + 8) as f32);
    }
}

/// cp.async.cg copies 16 bytes from a 16-byte aligned source only: the emulated copy reports one that is merely
/// 4-byte aligned, and the aligned twin moves every value.
#[test]
fn a_misaligned_16_byte_cp_async_is_reported() {
    let be = backend(Checks::ALL);
    let x = ramp(&be, 64);
    reports(
        &be,
        "planted_cp_async_misaligned",
        1,
        &[Arg::T(&x), Arg::I(1)],
        &["memcheck", "misaligned", "uint4"],
    );
    let (res, out) = run(
        &be,
        "planted_cp_async_misaligned",
        1,
        &[Arg::T(&x), Arg::I(0)],
    );
    res.unwrap();
    let xs = x.to_vec().unwrap();
    assert_eq!(out[..60], xs[..60]);
}

#[test]
fn an_uninitialised_shared_read_is_reported_and_reads_poison_unchecked() {
    let be = backend(Checks::ALL);
    let x = ramp(&be, 128);
    reports(
        &be,
        "planted_uninit_shared",
        2,
        &[Arg::T(&x), Arg::I(40)],
        &["initcheck", "block (1,0,0)", "`s`", "uninitialised"],
    );
    let (res, out) = run(
        &be,
        "planted_uninit_shared_ok",
        2,
        &[Arg::T(&x), Arg::I(40)],
    );
    res.unwrap();
    for t in 0..64 {
        assert_eq!(out[t], (63 - t) as f32 + 0.5);
        assert_eq!(
            out[64 + t],
            if 63 - t < 40 {
                (127 - t) as f32 + 0.5
            } else {
                0.0
            }
        );
    }
    // Without the checks the read still cannot return plausible numbers: shared memory is poisoned (NaN) at
    // every block start, whatever the previous block left there.
    let be = backend(Checks::NONE);
    let x = ramp(&be, 128);
    let (res, out) = run(&be, "planted_uninit_shared", 2, &[Arg::T(&x), Arg::I(40)]);
    res.unwrap();
    for t in 0..64 {
        assert_eq!(out[64 + t].is_nan(), 63 - t >= 40, "t = {t}");
    }
}

/// cp.async completes at the wait in the emulation (async_copy.cuh): a read of its destination without the wait
/// sees the poisoned shared memory, which initcheck reports; with the wait the data are there.
#[test]
fn a_cp_async_read_before_its_wait_is_reported() {
    let (out, xs) = planted_and_fixed(
        Checks::ALL,
        "planted_cp_async_no_wait",
        &["initcheck", "`s`", "uninitialised"],
    );
    for t in 0..64 {
        assert_eq!(out[t], xs[63 - (t + 1) % 64], "t = {t}");
    }
}

#[test]
fn reading_global_memory_never_written_is_reported() {
    let be = backend(Checks::ALL);
    let never_written = be.alloc(&[64]).unwrap();
    reports(
        &be,
        "planted_double",
        1,
        &[Arg::T(&never_written)],
        &["initcheck", "argument #1", "never written"],
    );
    let x = ramp(&be, 64);
    let (res, out) = run(&be, "planted_double", 1, &[Arg::T(&x)]);
    res.unwrap();
    assert_eq!(out[3], 7.0);
}

#[test]
fn a_barrier_in_divergent_code_is_reported() {
    let (out, _) = planted_and_fixed(
        checks("synccheck"),
        "planted_divergent_barrier",
        &[
            "synccheck",
            "__syncthreads() of",
            "planted.cu:",
            "divergent code",
        ],
    );
    assert_eq!((out[0], out[63]), (-63.5, 1.0));
}

#[test]
fn a_shuffle_mask_that_leaves_out_active_lanes_is_reported() {
    let (out, _) = planted_and_fixed(
        Checks::ALL,
        "planted_shuffle_mask",
        &["synccheck", "0x0000ffff"],
    );
    assert_eq!((out[0], out[17]), (0.5 + 16.5, 17.5 + 1.5));
}

#[test]
fn a_shuffle_from_a_lane_outside_the_mask_is_reported() {
    let be = backend(Checks::ALL);
    let x = ramp(&be, 64);
    reports(
        &be,
        "planted_shuffle_partner",
        1,
        &[Arg::T(&x), Arg::I(16)],
        &["synccheck", "outside the shuffle mask"],
    );
    // Lanes 0-15 exchanging among themselves after lanes 16-31 left is fine.
    let (res, out) = run(&be, "planted_shuffle_partner", 1, &[Arg::T(&x), Arg::I(8)]);
    res.unwrap();
    assert_eq!((out[0], out[9], out[16], out[40]), (8.5, 1.5, 0.0, 32.5));
}

#[test]
fn unknown_check_names_are_errors() {
    let err = Checks::parse("memcheck,bogus").unwrap_err();
    assert!(format!("{err}").contains("unknown check `bogus`"), "{err}");
    assert_eq!(Checks::parse("all").unwrap(), Checks::ALL);
    assert_eq!(Checks::parse("none").unwrap(), Checks::NONE);
    assert_eq!(
        Checks::parse("memcheck, racecheck,initcheck,synccheck,schedules").unwrap(),
        Checks::ALL
    );
}

#[test]
fn reading_freed_device_memory_is_a_use_after_free() {
    // Straight on the runtime: the backend's caching allocator keeps freed blocks, so tensors never free.
    let rt = EmuRuntime::with_checks(Checks::ALL);
    let out = rt.alloc(256).unwrap();
    rt.memset_zero(out, 256).unwrap();
    let x = rt.alloc(256).unwrap();
    rt.htod(x, &[0u8; 256]).unwrap();
    let args = [A::Ptr(out), A::Ptr(x)];
    rt.launch("planted_double", LaunchCfg::blocks(1, 64), &args)
        .unwrap();
    rt.free(x);
    reported(
        rt.launch("planted_double", LaunchCfg::blocks(1, 64), &args),
        "planted_double",
        &["memcheck", "use after free"],
    );
}
