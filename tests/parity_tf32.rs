//! The tensor-core (TF32) path of the CUDA backend: kernels/mma.cuh's warp-level m16n8k8 product and TF32
//! rounding, and the `*_tf32` convolution kernels of kernels/conv.cu selected by `Precision::Tf32`.
//!
//! Two references for every convolution output:
//! - tight: a direct f64 sum over operands first rounded to TF32 exactly as cvt.rna does. Products of two TF32
//!   values are exact in f32, so the kernels may only differ by f32 summation order: the tolerance is a few f32
//!   ulps of sqrt(K) times the sum of |terms|. An f32 (non-TF32) result fails it, so the test also proves the
//!   tensor-core kernels ran.
//! - loose: the f32 inputs as given (what the CPU backend computes). TF32 rounding moves each operand by at most
//!   2^-11 relative, so each product by at most ~2^-10: the bound is 2e-3 times the sum of |terms|.
//!
//! Sizes are awkward (rows and columns not multiples of the 64 x 128 or 128 x 128 tiles, K not a multiple of the
//! 32-deep slice, split-K chunks ending inside an image) plus
//! DCGAN-64's layer shapes at a small batch (the emulation runs one fiber per CUDA thread and the portable mma
//! is 32 warp shuffles, so the shapes stay small). Outputs come from the backend's allocator, which NaN-poisons
//! them in test builds.
//!
//! Device: the emulated CUDA backend, or the real GPU when GAN_ENGINE_TEST_DEVICE=cuda (scripts/gpu_run.sh).
//! `tf32_on_a_real_gpu` is `#[ignore]`d: it needs a GPU and runs bigger DCGAN shapes there.

#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::backend::{Backend, Conv2dParams};
use gan_engine::cuda::{CudaBackend, KernelArg as A, LaunchCfg, Precision};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::conv::ConvCase;

/// The backend under test, with TF32 convolutions.
fn backend() -> Arc<CudaBackend> {
    let be = match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => gan_engine::cuda::cuda_backend(0)
            .expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open"),
        _ => gan_engine::cuda::emulated_backend().expect("the emulated CUDA backend must open"),
    };
    be.set_precision(Precision::Tf32);
    be
}

/// cvt.rna.tf32.f32 on the host: round to nearest, ties away from zero, keeping 10 mantissa bits.
fn tf32(x: f32) -> f32 {
    let u = x.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return x; // Inf, NaN
    }
    f32::from_bits(u.wrapping_add(0x1000) & 0xffff_e000)
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn upload(be: &Arc<CudaBackend>, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &be.device()).unwrap()
}

#[test]
fn tf32_rounding_matches_cvt_rna() {
    let be = backend();
    let one = 1.0f32.to_bits();
    let mut xs: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::from_bits(one + 0x0fff), // just below the halfway point: down
        f32::from_bits(one + 0x1000), // exactly halfway: away from zero (up)
        -f32::from_bits(one + 0x1000), // negative halfway: away from zero (more negative)
        f32::from_bits(one + 0x1001), // above halfway: up
        f32::from_bits(one + 0x3000), // halfway between two odd/even TF32 values: still away from zero
        f32::from_bits(0x3fff_f000),  // rounds up across the exponent: 2.0
        f32::MAX,                     // rounds past the largest TF32 value: Inf
        f32::MIN_POSITIVE,
        f32::from_bits(0x0000_1000), // subnormal halfway
        f32::INFINITY,
        f32::NEG_INFINITY,
        std::f32::consts::PI,
        -1e-20,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    xs.extend((0..200).map(|_| rng.gen_range(-1e4f32..1e4)));
    xs.push(f32::NAN);
    let x = upload(&be, &xs, &[xs.len()]);
    let y = be.alloc(&[xs.len()]).unwrap();
    be.launch(
        "tf32_round_f32",
        LaunchCfg::blocks(2, 128),
        &[
            A::Ptr(be.ptr(&x).unwrap()),
            A::Ptr(be.ptr(&y).unwrap()),
            A::I32(xs.len() as i32),
        ],
    )
    .unwrap();
    let got = y.to_vec().unwrap();
    for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
        let want = tf32(x);
        if want.is_nan() {
            assert!(g.is_nan(), "element {i}: tf32({x}) = {g}, want NaN");
        } else {
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "element {i}: tf32({x:e}) = {g:e}, want {want:e}"
            );
        }
    }
    // The rounding rule itself: ties go away from zero, results keep 10 mantissa bits.
    assert_eq!(
        tf32(f32::from_bits(one + 0x1000)),
        f32::from_bits(one + 0x2000)
    );
    assert_eq!(tf32(f32::from_bits(one + 0x0fff)), 1.0);
    assert_eq!(tf32(f32::MAX), f32::INFINITY);
}

#[test]
fn mma_m16n8k8_matches_a_tf32_reference() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for trial in 0..3 {
        // Distinct magnitudes per row / column so that a transposed or shifted fragment cannot pass.
        let a: Vec<f32> = (0..16 * 8)
            .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i / 8) as f32 * 0.37))
            .collect();
        let b: Vec<f32> = (0..8 * 8)
            .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i % 8) as f32 * 0.61))
            .collect();
        let c = random(&mut rng, 16 * 8);
        let (ag, bg, cg) = (
            upload(&be, &a, &[128]),
            upload(&be, &b, &[64]),
            upload(&be, &c, &[128]),
        );
        let d = be.alloc(&[128]).unwrap();
        be.launch(
            "mma_selftest_f32",
            LaunchCfg::blocks(1, 32),
            &[
                A::Ptr(be.ptr(&ag).unwrap()),
                A::Ptr(be.ptr(&bg).unwrap()),
                A::Ptr(be.ptr(&cg).unwrap()),
                A::Ptr(be.ptr(&d).unwrap()),
            ],
        )
        .unwrap();
        let got = d.to_vec().unwrap();
        for m in 0..16 {
            for n in 0..8 {
                // Exact products (f64 holds them), f64 sum; the portable mma adds k = 0..7 in f32 in order.
                let mut exact = c[m * 8 + n] as f64;
                let mut abs = exact.abs();
                let mut ordered = c[m * 8 + n];
                for k in 0..8 {
                    let p = tf32(a[m * 8 + k]) * tf32(b[k * 8 + n]);
                    exact += p as f64;
                    abs += (p as f64).abs();
                    ordered = tf32(a[m * 8 + k]).mul_add(tf32(b[k * 8 + n]), ordered);
                }
                let g = got[m * 8 + n];
                assert!(
                    (g as f64 - exact).abs() <= 4.0 * f32::EPSILON as f64 * abs,
                    "trial {trial}: d[{m}][{n}] = {g}, want {exact}"
                );
                if be.is_emulated() {
                    assert_eq!(g, ordered, "trial {trial}: d[{m}][{n}] (emulated: k order)");
                }
            }
        }
    }
}

// ---- convolution ---------------------------------------------------------------------------------------------

/// One direction's reference: the f64 sum and the sum of |terms| per output element.
struct Reference {
    sum: Vec<f64>,
    abs: Vec<f64>,
}

impl Reference {
    fn new(n: usize) -> Reference {
        Reference {
            sum: vec![0.0; n],
            abs: vec![0.0; n],
        }
    }
    fn add(&mut self, i: usize, a: f32, b: f32) {
        let p = a as f64 * b as f64;
        self.sum[i] += p;
        self.abs[i] += p.abs();
    }
}

/// y, dx, dw by direct summation over every in-image tap.
fn reference(case: &ConvCase, x: &[f32], w: &[f32], dy: &[f32]) -> [Reference; 3] {
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let (mut y, mut dx, mut dw) = (
        Reference::new(numel(case.y_shape())),
        Reference::new(numel(case.x_shape())),
        Reference::new(numel(case.w_shape())),
    );
    case.for_each_tap(|[n, o, c, oh, ow, ih, iw, r, s]| {
        let (xi, wi, yi) = (
            case.xi(n, c, ih, iw),
            case.wi(o, c, r, s),
            case.yi(n, o, oh, ow),
        );
        y.add(yi, x[xi], w[wi]);
        dx.add(xi, dy[yi], w[wi]);
        dw.add(wi, dy[yi], x[xi]);
    });
    [y, dx, dw]
}

/// |got - want| <= rel * (sum of |terms|) + 1e-30 per element (NaN fails).
fn check(what: &str, got: &[f32], want: &Reference, rel: f64) {
    assert_eq!(got.len(), want.sum.len(), "{what}: length");
    for (i, &g) in got.iter().enumerate() {
        let tol = rel * want.abs[i] + 1e-30;
        assert!(
            (g as f64 - want.sum[i]).abs() <= tol,
            "{what}: element {i}: got {g}, want {} (tolerance {tol:e})",
            want.sum[i]
        );
    }
}

/// Runs the three directions on `be` and checks them: at TF32, against both references; at FP32, against the
/// f32 reference with the tight bound.
fn run_case(be: &Arc<CudaBackend>, name: &str, case: ConvCase, rng: &mut ChaCha8Rng) {
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let x = random(rng, numel(case.x_shape()));
    let w = random(rng, numel(case.w_shape()));
    let dy = random(rng, numel(case.y_shape()));
    let (xg, wg, dyg) = (
        upload(be, &x, &case.x_shape()),
        upload(be, &w, &case.w_shape()),
        upload(be, &dy, &case.y_shape()),
    );
    let y = be.conv2d(&xg, &wg, case.p).unwrap().to_vec().unwrap();
    let dx = be
        .conv2d_backward_data(&dyg, &wg, case.x_shape(), case.p)
        .unwrap()
        .to_vec()
        .unwrap();
    let dw = be
        .conv2d_backward_weight(&xg, &dyg, case.w_shape(), case.p)
        .unwrap()
        .to_vec()
        .unwrap();

    // Longest reduction of any direction: forward C*kh*kw, backward data O*kh*kw, backward weight N*Ho*Wo.
    let (ho, wo) = case.out();
    let k_max = (case.c.max(case.o) * case.k.0 * case.k.1).max(case.n * ho * wo) as f64;
    let tight = 4.0 * f32::EPSILON as f64 * k_max.sqrt();
    let round = |v: &[f32]| v.iter().map(|&a| tf32(a)).collect::<Vec<_>>();
    let [ry, rdx, rdw] = reference(&case, &round(&x), &round(&w), &round(&dy));
    let [fy, fdx, fdw] = reference(&case, &x, &w, &dy);
    // Which directions ran on tensor cores: at TF32, GEMMs with more than 16 rows (conv.rs); the others are the
    // f32 kernels and are held to the f32 path's own accuracy (they do not round).
    // Backward data of a 1x1 output covering the input is one f32 GEMM at any precision (conv_narrow.rs).
    let tensor_cores = be.precision() == Precision::Tf32;
    let tc = |rows: usize| tensor_cores && rows > 16;
    let plain_product = (case.h, case.w) == case.k && case.p.padding == (0, 0);
    for (dir, got, r_tf32, r_f32, rows) in [
        ("conv2d", &y, &ry, &fy, case.o),
        (
            "backward data",
            &dx,
            &rdx,
            &fdx,
            if plain_product { 0 } else { case.c },
        ),
        ("backward weight", &dw, &rdw, &fdw, case.o),
    ] {
        let what = format!("{name}: {dir}");
        if tc(rows) {
            check(
                &format!("{what} vs TF32-rounded reference"),
                got,
                r_tf32,
                tight,
            );
            check(&format!("{what} vs f32 reference"), got, r_f32, 2e-3);
        } else {
            check(
                &format!("{what} (f32 kernel) vs f32 reference"),
                got,
                r_f32,
                tight,
            );
        }
    }
}

fn p(s: usize, pad: usize) -> Conv2dParams {
    Conv2dParams {
        stride: (s, s),
        padding: (pad, pad),
    }
}

fn case(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, p: Conv2dParams) -> ConvCase {
    ConvCase {
        n,
        c,
        h,
        w,
        o,
        k: (k, k),
        p,
    }
}

#[test]
fn conv2d_tf32_awkward_sizes() {
    let be = backend();
    assert_eq!(be.precision(), Precision::Tf32);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let cases = [
        // 4x4 s2 p1 (DCGAN's shape) with 67 output channels (two row tiles, the second 3 rows deep), 19 input
        // channels (K = 304: 19 slices, split-K) and 2*5*6 = 60 output pixels (half a column tile).
        ("4x4 s2 p1", case(2, 19, 9, 11, 67, 4, p(2, 1))),
        ("3x3 s1 p1", case(2, 18, 7, 10, 33, 3, p(1, 1))),
        // Stride larger than the kernel: backward data has stride phases without taps.
        ("1x1 s2", case(2, 20, 7, 8, 24, 1, p(2, 0))),
        (
            "3x5 s(2,1) p(1,2)",
            ConvCase {
                n: 2,
                c: 17,
                h: 9,
                w: 7,
                o: 20,
                k: (3, 5),
                p: Conv2dParams {
                    stride: (2, 1),
                    padding: (1, 2),
                },
            },
        ),
        // One narrow side: forward / backward weight on the f32 m16 path (O = 5), backward data on TF32.
        ("O=5", case(2, 21, 6, 7, 5, 3, p(1, 1))),
    ];
    for (name, c) in cases {
        run_case(&be, name, c, &mut rng);
    }
}

/// Shapes aimed at the tensor-core main loop's masks and pipeline (BK = 32 slices, 3 stages, 64 x 128 tiles for
/// up to 64 rows, 128 x 128 above):
/// reductions shorter than one slice, between one slice and the stage count, not a multiple of a slice, split-K
/// chunks that end inside an image, batch 1, stride 1 and 2, padding 0..2, kernels 3 and 4, stride phases with
/// 1, 2 and 4 taps, forward weights with K a multiple of 4 (16-byte copies) and not (4-byte copies).
#[test]
fn conv2d_tf32_pipeline_tails() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let cases = [
        // forward K = 18 (under one slice, 4-byte weight copies); backward weight K = 7*8 = 56.
        ("b1 3x3 s1 p2 K<BK", case(1, 2, 5, 6, 24, 3, p(1, 2))),
        // forward K = 112 = 3.5 slices (16-byte weight copies), Ho x Wo = 4 x 3.
        ("b1 4x4 s2 p0", case(1, 7, 10, 9, 40, 4, p(2, 0))),
        // forward K = 272, backward data K = 18*16 = 288 in one phase, backward weight K = 7*6 = 42.
        ("b1 4x4 s1 p2", case(1, 17, 6, 5, 18, 4, p(1, 2))),
        // backward data phases with 4, 2 and 1 taps: K = 80, 40, 20.
        ("b1 3x3 s2 p0", case(1, 24, 9, 9, 20, 3, p(2, 0))),
        // forward K = 1024 on one 64 x 128 tile: split-K into 8 chunks of 4 slices.
        ("split fwd 4x4 s2 p1", case(2, 64, 4, 4, 33, 4, p(2, 1))),
        // backward weight K = 900 pixels on one tile: split-K, chunks of 128 pixels end inside image rows.
        (
            "split bwd_weight 3x3 s1 p1",
            case(1, 20, 30, 30, 17, 3, p(1, 1)),
        ),
        // 70 input channels: backward data on the 128-row tile, 58 of its rows padding.
        ("b1 4x4 s2 p1 C=70", case(1, 70, 6, 6, 20, 4, p(2, 1))),
    ];
    for (name, c) in cases {
        run_case(&be, name, c, &mut rng);
    }
}

#[test]
fn conv2d_tf32_dcgan_shapes() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // DCGAN-64 discriminator layers (4x4, stride 2, pad 1) at batch 1-2 and reduced image sizes: the channel
    // counts — which set the tile rows and K — are the real ones.
    let cases = [
        ("D1 3->64", case(2, 3, 16, 16, 64, 4, p(2, 1))),
        ("D2 64->128", case(2, 64, 8, 8, 128, 4, p(2, 1))),
    ];
    for (name, c) in cases {
        run_case(&be, name, c, &mut rng);
    }
}

#[test]
fn precision_defaults_to_f32_and_switches_kernels() {
    let be = match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => gan_engine::cuda::cuda_backend(0).unwrap(),
        _ => gan_engine::cuda::emulated_backend().unwrap(),
    };
    if std::env::var_os("GAN_ENGINE_PRECISION").is_none() {
        assert_eq!(be.precision(), Precision::F32);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let c = case(1, 17, 6, 6, 24, 3, p(1, 1));
    let x = upload(&be, &random(&mut rng, 17 * 36), &c.x_shape());
    let w = upload(&be, &random(&mut rng, 24 * 17 * 9), &c.w_shape());
    be.set_precision(Precision::F32);
    let y32 = be.conv2d(&x, &w, c.p).unwrap().to_vec().unwrap();
    be.set_precision(Precision::Tf32);
    let ytf = be.conv2d(&x, &w, c.p).unwrap().to_vec().unwrap();
    // Same maths, different rounding: close, but not identical (TF32 drops 13 mantissa bits per operand).
    let diff = y32.iter().zip(&ytf).filter(|(a, b)| a != b).count();
    assert!(
        diff > y32.len() / 2,
        "only {diff} of {} outputs differ",
        y32.len()
    );
    for (a, b) in y32.iter().zip(&ytf) {
        assert!((a - b).abs() <= 2e-2, "{a} vs {b}");
    }
}

/// The emulation runs mma.cuh's portable fallback; this checks that NVRTC really takes the tensor-core branch
/// (`__CUDA_ARCH__ >= 800`) for the GPU: the PTX of conv.cu must contain the mma.sync and cvt.rna instructions.
#[test]
fn gpu_build_uses_tensor_core_instructions() {
    use gan_engine::cuda::nvrtc;
    if let Err(e) = nvrtc::ensure_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but NVRTC is unavailable: {e}");
        }
        eprintln!("\n*** SKIPPED gpu_build_uses_tensor_core_instructions: {e} ***\n");
        return;
    }
    let ptx = nvrtc::compile("conv.cu", "compute_80", &[]).unwrap();
    let ptx = String::from_utf8_lossy(&ptx.image);
    for needle in [
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
        "cvt.rna.tf32.f32",
        ".entry conv2d_fwd_tf32(",
        ".entry conv2d_bwd_data_tf32(",
        ".entry conv2d_bwd_weight_tf32(",
    ] {
        assert!(
            ptx.contains(needle),
            "conv.cu PTX for compute_80 lacks {needle}"
        );
    }
    // The f32 kernels must not have picked up tensor-core instructions: cut the PTX at each entry.
    for entry in ptx.split(".entry ").skip(1) {
        let name = entry.split('(').next().unwrap();
        let uses_mma = entry.contains("mma.sync");
        let want = name.ends_with("_tf32") || name == "mma_selftest_f32";
        assert_eq!(uses_mma, want, "{name}: mma.sync present = {uses_mma}");
    }
}

/// The real GPU: the checks above on the hardware mma.sync / cvt.rna, plus larger DCGAN layers (batch 8, full
/// channel counts) that are too slow to emulate.
/// DCGAN-64's discriminator convolutions at batch 8, and an awkward shape: the real-GPU cases.
fn gpu_cases() -> Vec<(&'static str, ConvCase)> {
    vec![
        ("D1 3->64", case(8, 3, 64, 64, 64, 4, p(2, 1))),
        ("D2 64->128", case(8, 64, 32, 32, 128, 4, p(2, 1))),
        ("D3 128->256", case(8, 128, 16, 16, 256, 4, p(2, 1))),
        ("D4 256->512", case(8, 256, 8, 8, 512, 4, p(2, 1))),
        ("D5 512->1", case(8, 512, 4, 4, 1, 4, p(1, 0))),
        ("awkward", case(3, 19, 9, 11, 67, 4, p(2, 1))),
    ]
}

fn on_a_real_gpu(test: &str, precision: Precision) {
    let be = gan_engine::cuda::cuda_backend(0)
        .unwrap_or_else(|e| panic!("{test}: cuda:0 does not open: {e:#}"));
    be.set_precision(precision);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (name, c) in gpu_cases() {
        run_case(&be, name, c, &mut rng);
    }
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn tf32_on_a_real_gpu() {
    on_a_real_gpu("tf32_on_a_real_gpu", Precision::Tf32);
}

/// The same shapes through the FP32 kernels: a failure in both names the shared code (loaders, epilogue), one
/// in the TF32 test alone names the tensor-core path.
#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn fp32_on_a_real_gpu() {
    on_a_real_gpu("fp32_on_a_real_gpu", Precision::F32);
}
