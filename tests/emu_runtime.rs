//! Tests of the CUDA emulation runtime itself (kernels/emu/cuda_emu.*), using the test kernels in
//! kernels/emu/tests.cu: shared memory, barriers, shuffles and atomics give the right answers, and barriers that
//! some threads never reach are reported as errors instead of hanging.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::cuda::{emulated_backend, CudaBackend, KernelArg as A, LaunchCfg};
use gan_engine::Tensor;

fn be() -> Arc<CudaBackend> {
    emulated_backend().unwrap()
}

fn upload(be: &Arc<CudaBackend>, v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], &be.device()).unwrap()
}

fn cfg(grid: u32, block: u32) -> LaunchCfg {
    LaunchCfg::blocks(grid, block)
}

#[test]
fn block_sum_with_shared_memory_barriers_and_shuffles() {
    let be = be();
    // 7 blocks of 96 threads (3 warps, exercising the 2nd reduction stage) over an awkward length.
    let n = 7 * 96 - 13;
    let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
    let xt = upload(&be, &x);
    let out = be.alloc(&[7]).unwrap();
    be.launch(
        "emu_test_block_sum",
        cfg(7, 96),
        &[
            A::Ptr(be.ptr(&out).unwrap()),
            A::Ptr(be.ptr(&xt).unwrap()),
            A::I32(n as i32),
        ],
    )
    .unwrap();
    let got = out.to_vec().unwrap();
    for b in 0..7 {
        let want: f32 = x[(b * 96).min(n)..((b + 1) * 96).min(n)].iter().sum();
        assert_eq!(got[b], want, "block {b}");
    }
}

#[test]
fn shuffles_and_ballots_follow_cuda_semantics() {
    let be = be();
    // 70 threads: two full warps and a partial warp of 6 lanes.
    let nt = 70usize;
    let out = be.alloc_zeros(&[nt * 8]).unwrap();
    be.launch(
        "emu_test_shuffles",
        cfg(1, nt as u32),
        &[A::Ptr(be.ptr(&out).unwrap())],
    )
    .unwrap();
    let got: Vec<i32> = out
        .to_vec()
        .unwrap()
        .iter()
        .map(|f| f.to_bits() as i32)
        .collect();
    for t in 0..nt {
        let (warp, lane) = (t / 32, t % 32);
        let lanes = (nt - warp * 32).min(32);
        let at = |l: usize| (warp * 32 + l) as i32;
        let live = |l: usize| l < lanes;
        let o = &got[8 * t..8 * t + 8];
        let src3 = if live(3) { at(3) * 10 } else { t as i32 * 10 };
        assert_eq!(o[0], src3, "shfl t={t}");
        assert_eq!(
            o[1],
            if live(lane ^ 5) {
                at(lane ^ 5)
            } else {
                t as i32
            },
            "xor t={t}"
        );
        assert_eq!(
            o[2],
            if lane + 4 < 32 && live(lane + 4) {
                at(lane + 4)
            } else {
                t as i32
            },
            "down t={t}"
        );
        assert_eq!(
            o[3],
            if lane >= 2 { at(lane - 2) } else { t as i32 },
            "up t={t}"
        );
        let seg_ok = (lane + 1) / 8 == lane / 8 && live(lane + 1);
        assert_eq!(
            o[4],
            if seg_ok { at(lane + 1) } else { t as i32 },
            "down width 8 t={t}"
        );
        let mask = (0..lanes)
            .filter(|l| l % 3 == 0)
            .fold(0u32, |m, l| m | (1 << l));
        assert_eq!(o[5] as u32, mask, "ballot t={t}");
        assert_eq!(o[6], 1, "all t={t}");
        assert_eq!(o[7], (lanes == 32) as i32, "any t={t}");
    }
}

#[test]
fn dynamic_shared_memory() {
    let be = be();
    let (block, grid) = (50u32, 3u32);
    let n = 137usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xt = upload(&be, &x);
    let out = be.alloc(&[n]).unwrap();
    be.launch(
        "emu_test_dynamic_smem",
        cfg(grid, block).with_shared(block * 4),
        &[
            A::Ptr(be.ptr(&out).unwrap()),
            A::Ptr(be.ptr(&xt).unwrap()),
            A::I32(n as i32),
        ],
    )
    .unwrap();
    let got = out.to_vec().unwrap();
    for (i, g) in got.iter().enumerate() {
        let (b, t) = (i / 50, i % 50);
        let j = b * 50 + 49 - t;
        let want = if j < n { j as f32 } else { -1.0 };
        assert_eq!(*g, want, "i={i}");
    }
}

#[test]
fn atomics_are_exact_across_parallel_blocks() {
    let be = be();
    let f = be.alloc_zeros(&[1]).unwrap();
    let i = be.alloc_zeros(&[1]).unwrap();
    be.launch(
        "emu_test_atomics",
        cfg(301, 64),
        &[A::Ptr(be.ptr(&f).unwrap()), A::Ptr(be.ptr(&i).unwrap())],
    )
    .unwrap();
    assert_eq!(f.to_vec().unwrap()[0], (301 * 64) as f32);
    assert_eq!(f32::to_bits(i.to_vec().unwrap()[0]) as i32, 301 * 64);
}

fn expect_error(kernel: &str, threads: u32, needle: &str) {
    let be = be();
    let out = be.alloc_zeros(&[threads as usize]).unwrap();
    let err = be
        .launch(kernel, cfg(2, threads), &[A::Ptr(be.ptr(&out).unwrap())])
        .expect_err("a divergent barrier must be an error");
    let msg = format!("{err:#}");
    assert!(msg.contains(kernel), "error should name the kernel: {msg}");
    assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
    // The emulation stays usable after a failed launch.
    block_sum_with_shared_memory_barriers_and_shuffles();
}

#[test]
fn divergent_syncthreads_is_reported() {
    expect_error("emu_test_divergent_barrier", 64, "exited while");
}

#[test]
fn divergent_shuffle_is_reported() {
    expect_error("emu_test_divergent_shuffle", 32, "exited while");
}

#[test]
fn deadlock_is_reported() {
    expect_error("emu_test_deadlock", 64, "deadlock");
}

#[test]
fn philox_known_answers() {
    // Known-answer vectors of Random123's philox4x32_10 (kat_vectors).
    let be = be();
    let out = be.alloc_zeros(&[4]).unwrap();
    let cases: [([u32; 6], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0, 0, 0],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [
                0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
            ],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (input, want) in cases {
        let mut args = vec![A::Ptr(be.ptr(&out).unwrap())];
        args.extend(input.iter().map(|&w| A::U32(w)));
        be.launch("emu_test_philox", cfg(1, 1), &args).unwrap();
        let got: Vec<u32> = out.to_vec().unwrap().iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn launch_argument_mismatch_is_an_error() {
    let be = be();
    let out = be.alloc(&[4]).unwrap();
    let err = be
        .launch(
            "fill_f32",
            cfg(1, 32),
            &[A::Ptr(be.ptr(&out).unwrap()), A::I32(4)],
        )
        .unwrap_err();
    assert!(format!("{err}").contains("2 arguments given"), "{err}");
    let err = be
        .launch(
            "fill_f32",
            cfg(1, 32),
            &[A::Ptr(be.ptr(&out).unwrap()), A::I32(0), A::I32(4)],
        )
        .unwrap_err();
    assert!(format!("{err}").contains("argument 1"), "{err}");
    assert!(be.launch("no_such_kernel", cfg(1, 1), &[]).is_err());
    assert!(be
        .launch("emu_test_atomics", cfg(1, 2048), &[A::Ptr(0), A::Ptr(0)])
        .is_err());
}
