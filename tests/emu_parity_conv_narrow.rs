//! conv2d's backward data (= conv_transpose2d's forward) on the shapes that skip conv.cu's GEMM
//! (src/cuda/conv_narrow.rs): few input channels, on kernels/conv_narrow.cu, and a 1x1 output covering the
//! input, on linear.cu's GEMM. Each case runs at both precisions against a direct f64 sum and the CPU backend,
//! and the launch counts name the kernel that ran, so a case cannot pass on the GEMM it was meant to avoid.
//! Shapes are awkward on purpose (odd sizes, batch 1 and 3: a partial group of the kernel's 4 images per
//! thread, phases of different sizes, taps cut by every border), plus the DCGAN layers at a small batch.
//! Outputs are poisoned with NaN before the kernels run, so an element a kernel skips fails.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::backend::{Backend, Conv2dParams};
use gan_engine::cuda::{CudaBackend, Precision};
use gan_engine::ops;
use gan_engine::{autograd::Tape, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::backend::{launches, under_test as backend};
use common::conv::ConvCase;

fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn case(
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: usize,
    s: usize,
    pad: usize,
) -> ConvCase {
    ConvCase {
        n,
        c,
        h: hw.0,
        w: hw.1,
        o,
        k: (k, k),
        p: Conv2dParams::new(s, pad),
    }
}

/// How many times `kernel` has run on `be`.
/// Runs backward data of `case` at both precisions, checks it against the f64 sum (|err| <= 1e-4 * max(1,
/// |want|)) and the CPU backend, and that each run launched `kernel` once.
fn check(be: &Arc<CudaBackend>, name: &str, case: &ConvCase, kernel: &str, rng: &mut ChaCha8Rng) {
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let dy = uniform(rng, numel(case.y_shape()));
    let w = uniform(rng, numel(case.w_shape()));
    let want = case.backward_data_reference(&dy, &w);
    let on = |d: &Device, v: &[f32], s: [usize; 4]| Tensor::from_vec(v.to_vec(), &s, d).unwrap();
    let cpu = Device::Cpu;
    let cpu_dx = cpu
        .backend()
        .conv2d_backward_data(
            &on(&cpu, &dy, case.y_shape()),
            &on(&cpu, &w, case.w_shape()),
            case.x_shape(),
            case.p,
        )
        .unwrap()
        .to_vec()
        .unwrap();
    let dev = be.device();
    let (dyg, wg) = (on(&dev, &dy, case.y_shape()), on(&dev, &w, case.w_shape()));
    for precision in [Precision::F32, Precision::Tf32] {
        be.set_precision(precision);
        let before = launches(be, kernel);
        let dx = be
            .conv2d_backward_data(&dyg, &wg, case.x_shape(), case.p)
            .unwrap();
        assert_eq!(
            launches(be, kernel),
            before + 1,
            "{name} at {precision:?}: {kernel} did not run"
        );
        assert_eq!(dx.shape(), case.x_shape());
        let got = dx.to_vec().unwrap();
        for (i, &g) in got.iter().enumerate() {
            let tol = 1e-4 * want[i].abs().max(1.0);
            assert!(
                (g as f64 - want[i]).abs() <= tol && (g - cpu_dx[i]).abs() <= tol as f32,
                "{name} at {precision:?}: dx[{i}] = {g}, want {} (CPU backend {})",
                want[i],
                cpu_dx[i]
            );
        }
    }
    be.set_precision(Precision::F32);
}

#[test]
fn few_input_channels_run_the_narrow_kernel() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let narrow = |c: usize, t: usize| format!("conv2d_bwd_data_narrow_c{c}_t{t}_f32");
    let cases = [
        // DCGAN-64's image layers at batch 2: G5's forward (ConvTranspose 64x32x32 -> 3x64x64) and D1's input
        // gradient are this same sum; and the 28x28 generator's last layer (-> 1 channel).
        ("G5 / D1 64x64", case(2, 3, (64, 64), 64, 4, 2, 1), 2),
        ("28x28 G last", case(3, 1, (28, 28), 20, 4, 2, 1), 2),
        // Every channel count, odd sizes (phases of unequal size), batch 1 and 3 (a partial image group).
        ("C=1 k4 s2 p1 odd", case(1, 1, (9, 11), 5, 4, 2, 1), 2),
        ("C=2 k4 s2 p2", case(3, 2, (13, 7), 6, 4, 2, 2), 2),
        ("C=3 k3 s2 p0", case(3, 3, (11, 10), 7, 3, 2, 0), 2),
        ("C=4 k3 s2 p1", case(1, 4, (7, 9), 9, 3, 2, 1), 2),
        ("C=4 k4 s2 p0", case(5, 4, (10, 12), 3, 4, 2, 0), 2),
        // Stride 1: every pixel in one phase, up to 4x4 taps.
        ("C=3 k3 s1 p1", case(3, 3, (7, 10), 6, 3, 1, 1), 4),
        ("C=1 k3 s1 p0", case(1, 1, (5, 8), 4, 3, 1, 0), 4),
        ("C=2 k4 s1 p2", case(3, 2, (6, 5), 5, 4, 1, 2), 4),
        ("C=4 k4 s1 p0", case(2, 4, (9, 4), 3, 4, 1, 0), 4),
        // Stride 3 (9 phases: a block's 8 warps hold parts of two position groups) and stride larger than the
        // kernel (phases without taps give zeros).
        ("C=3 k4 s3 p1", case(3, 3, (13, 11), 4, 4, 3, 1), 2),
        ("C=2 k1 s2", case(3, 2, (7, 8), 6, 1, 2, 0), 2),
        // More output channels than one shared-memory chunk (1024 taps / 16 per channel = 64 channels).
        ("O=150 chunks", case(3, 3, (6, 7), 150, 4, 2, 1), 2),
    ];
    for (name, c, t) in cases {
        check(&be, name, &c, &narrow(c.c, t), &mut rng);
    }
    // One channel above the limit, and taps past the bound, stay on the GEMM.
    for (name, c) in [
        ("C=5", case(3, 5, (9, 7), 6, 4, 2, 1)),
        ("k5 s1", case(2, 3, (8, 9), 4, 5, 1, 2)),
    ] {
        check(&be, name, &c, "conv2d_bwd_data_m16_f32", &mut rng);
    }
}

#[test]
fn a_1x1_output_covering_the_input_runs_one_gemm() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let cases = [
        // DCGAN's first generator layer (ConvTranspose 100x1x1 -> 512x4x4) at batch 3 and with the 28x28
        // variant's 7x7 kernel; the discriminator's last layer (512x4x4 -> 1); a non-square one with stride.
        ("G1 4x4", case(3, 512, (4, 4), 100, 4, 1, 0)),
        ("G1 7x7", case(1, 64, (7, 7), 110, 7, 1, 0)),
        ("D5", case(2, 512, (4, 4), 1, 4, 1, 0)),
        (
            "3x5 s2",
            ConvCase {
                k: (3, 5),
                p: Conv2dParams::new(2, 0),
                ..case(3, 19, (3, 5), 7, 3, 2, 0)
            },
        ),
    ];
    for (name, c) in cases {
        check(&be, name, &c, "linear_bwd_data_f32", &mut rng);
    }
    // A 1x1 output that padding or an uncovered border keeps from being a plain product (6 channels: the
    // narrow GEMM tile at both precisions).
    for (name, c) in [
        ("1x1 out, pad 1", case(2, 6, (2, 2), 5, 4, 1, 1)),
        ("1x1 out, border", case(2, 6, (5, 5), 5, 4, 2, 0)),
    ] {
        check(&be, name, &c, "conv2d_bwd_data_m16_f32", &mut rng);
    }
}

/// The public op: conv_transpose2d's forward (this backward data) and its gradients, device against CPU, for
/// the generator's first and last DCGAN layers.
#[test]
fn conv_transpose2d_on_device_matches_cpu() {
    let be = backend();
    let dev = be.device();
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    // (x shape, w shape [Cin, Cout, k, k], stride, pad)
    let layers = [
        ([3, 100, 1, 1], [100, 16, 4, 4], 1, 0),
        ([2, 24, 8, 8], [24, 3, 4, 4], 2, 1),
        ([3, 12, 7, 7], [12, 1, 4, 4], 2, 1),
    ];
    for (xs, ws, s, p) in layers {
        let x = uniform(&mut rng, xs.iter().product());
        let w = uniform(&mut rng, ws.iter().product());
        let run = |d: &Device| {
            let mut tape = Tape::new();
            let xv = tape.leaf(Tensor::from_vec(x.clone(), &xs, d).unwrap());
            let wv = tape.leaf(Tensor::from_vec(w.clone(), &ws, d).unwrap());
            let y =
                ops::conv_transpose2d(&mut tape, xv, wv, Conv2dParams::new(s, p), None).unwrap();
            let yv = tape.value(y).clone();
            let g = tape.backward_from(y, yv.clone()).unwrap();
            let host = |t: &Tensor| t.to_vec().unwrap();
            [
                host(&yv),
                host(g.get(xv).unwrap()),
                host(g.get(wv).unwrap()),
            ]
        };
        let (want, got) = (run(&Device::Cpu), run(&dev));
        for (what, (g, w)) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&want)) {
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "conv_transpose2d x {xs:?} w {ws:?}: {what}[{i}] = {a}, CPU {b}"
                );
            }
        }
    }
}
