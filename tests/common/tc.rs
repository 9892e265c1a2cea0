//! The tensor-core parity checks shared by tests/parity_tf32.rs and tests/parity_half.rs: the precision's
//! rounding kernel against the host rounding ([`Precision::round_operand`]), one warp-level mma against a
//! reference over rounded operands, and the three convolution directions against two references:
//! - tight: a direct f64 sum over operands first rounded exactly as the kernels round them. Products of two
//!   rounded operands are exact in f32 (at most 11 x 11 significant bits), so the kernels may only differ by f32
//!   summation order: the tolerance is 4 f32 epsilons times sqrt(K) times the sum of |terms|. An unrounded
//!   (f32) result fails it, so the test also proves the tensor-core kernels ran.
//! - loose: the f32 inputs as given (what the CPU backend computes). Rounding moves each operand by at most the
//!   format's unit roundoff u (2^-11 for TF32 and fp16, 2^-8 for bf16) relative, so each product by at most
//!   2u + u^2: the bound is twice that times the sum of |terms|, plus the tight one; for fp16, whose subnormals
//!   (below 2^-14) have an absolute step of 2^-24, K * 2^-24 more (operands here are at most 1 in magnitude).
//!
//! Sizes are awkward (rows and columns not multiples of the 64 x 128 or 128 x 128 tiles, K not a multiple of the
//! 32-deep slice, split-K chunks ending inside an image) plus DCGAN-64's layer shapes at a small batch (the
//! emulation runs one fiber per CUDA thread and the portable mma is 16 warp shuffles, so the shapes stay
//! small). Outputs come from the backend's allocator, which NaN-poisons them in test builds.
//!
//! Device: the emulated CUDA backend, or the real GPU when GAN_ENGINE_TEST_DEVICE=cuda (scripts/gpu_run.sh).

use std::sync::Arc;

use gan_engine::backend::Conv2dParams;
use gan_engine::cuda::{CudaBackend, KernelArg as A, LaunchCfg, Precision};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::conv::ConvCase;

/// The backend under test (emulated, or cuda:0 when GAN_ENGINE_TEST_DEVICE=cuda) at `precision`.
pub fn backend(precision: Precision) -> Arc<CudaBackend> {
    let be = match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => gan_engine::cuda::cuda_backend(0)
            .expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open"),
        _ => gan_engine::cuda::emulated_backend().expect("the emulated CUDA backend must open"),
    };
    be.set_precision(precision);
    be
}

pub fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

pub fn upload(be: &Arc<CudaBackend>, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &be.device()).unwrap()
}

/// The largest relative error of rounding to the precision's operand format (round to nearest).
pub fn unit_roundoff(p: Precision) -> f64 {
    match p {
        Precision::F32 => f32::EPSILON as f64 / 2.0,
        Precision::Tf32 | Precision::Fp16 => 2f64.powi(-11),
        Precision::Bf16 => 2f64.powi(-8),
    }
}

/// Runs the elementwise rounding kernel `kernel` (x -> y) over `xs` and checks every result bit for bit
/// against `p.round_operand` (any NaN for a NaN).
pub fn rounding_kernel_matches_host(be: &Arc<CudaBackend>, kernel: &str, p: Precision, xs: &[f32]) {
    let x = upload(be, xs, &[xs.len()]);
    let y = be.alloc(&[xs.len()]).unwrap();
    be.launch(
        kernel,
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
        let want = p.round_operand(x);
        if want.is_nan() {
            assert!(g.is_nan(), "{kernel}: element {i}: {x} -> {g}, want NaN");
        } else {
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "{kernel}: element {i}: {x:e} -> {g:e}, want {want:e}"
            );
        }
    }
}

/// One warp's d = a * b + c through the self-test kernel `kernel` (a 16 x k, b k x 8, c and d 16 x 8, all
/// row-major), three random trials, against exact products of operands rounded by `p`: within 4 f32 epsilons of
/// the sum of |terms| (the hardware's summation order is unspecified), and on the emulation bit for bit equal
/// to the in-order fused sum its portable mma computes.
pub fn mma_matches_reference(
    be: &Arc<CudaBackend>,
    kernel: &str,
    p: Precision,
    k: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = |x: f32| p.round_operand(x);
    for trial in 0..3 {
        // Distinct magnitudes per row / column so that a transposed or shifted fragment cannot pass.
        let a: Vec<f32> = (0..16 * k)
            .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i / k) as f32 * 0.37))
            .collect();
        let b: Vec<f32> = (0..k * 8)
            .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i % 8) as f32 * 0.61))
            .collect();
        let c = random(&mut rng, 16 * 8);
        let (ag, bg, cg) = (
            upload(be, &a, &[a.len()]),
            upload(be, &b, &[b.len()]),
            upload(be, &c, &[128]),
        );
        let d = be.alloc(&[128]).unwrap();
        be.launch(
            kernel,
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
                let mut exact = c[m * 8 + n] as f64;
                let mut abs = exact.abs();
                let mut ordered = c[m * 8 + n];
                for kk in 0..k {
                    let (x, y) = (r(a[m * k + kk]), r(b[kk * 8 + n]));
                    exact += x as f64 * y as f64;
                    abs += (x as f64 * y as f64).abs();
                    ordered = x.mul_add(y, ordered);
                }
                let g = got[m * 8 + n];
                assert!(
                    (g as f64 - exact).abs() <= 4.0 * f32::EPSILON as f64 * abs,
                    "{kernel} trial {trial}: d[{m}][{n}] = {g}, want {exact}"
                );
                if be.is_emulated() {
                    assert_eq!(
                        g, ordered,
                        "{kernel} trial {trial}: d[{m}][{n}] (emulated: k order)"
                    );
                }
            }
        }
    }
}

/// One direction's reference: the f64 sum and the sum of |terms| per output element.
pub struct Reference {
    pub sum: Vec<f64>,
    pub abs: Vec<f64>,
}

impl Reference {
    pub fn new(n: usize) -> Reference {
        Reference {
            sum: vec![0.0; n],
            abs: vec![0.0; n],
        }
    }
    pub fn add(&mut self, i: usize, a: f32, b: f32) {
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

/// |got - want| <= rel * (sum of |terms|) + abs per element (NaN fails).
pub fn check(what: &str, got: &[f32], want: &Reference, rel: f64, abs: f64) {
    assert_eq!(got.len(), want.sum.len(), "{what}: length");
    for (i, &g) in got.iter().enumerate() {
        let tol = rel * want.abs[i] + abs + 1e-30;
        assert!(
            (g as f64 - want.sum[i]).abs() <= tol,
            "{what}: element {i}: got {g}, want {} (tolerance {tol:e})",
            want.sum[i]
        );
    }
}

/// Runs the three directions on `be` and checks them: on the tensor-core kernels, against both references
/// (module docs); on the f32 kernels, against the f32 reference with the tight bound.
pub fn run_case(be: &Arc<CudaBackend>, name: &str, case: ConvCase, rng: &mut ChaCha8Rng) {
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let x = random(rng, numel(case.x_shape()));
    let w = random(rng, numel(case.w_shape()));
    let dy = random(rng, numel(case.y_shape()));
    let (xg, wg, dyg) = (
        upload(be, &x, &case.x_shape()),
        upload(be, &w, &case.w_shape()),
        upload(be, &dy, &case.y_shape()),
    );
    let [y, dx, dw] = case.run_all(be.as_ref(), &xg, &wg, &dyg);

    let precision = be.precision();
    // Longest reduction of any direction: forward C*kh*kw, backward data O*kh*kw, backward weight N*Ho*Wo.
    let (ho, wo) = case.out();
    let k_max = (case.c.max(case.o) * case.k.0 * case.k.1).max(case.n * ho * wo) as f64;
    let tight = 4.0 * f32::EPSILON as f64 * k_max.sqrt();
    let u = unit_roundoff(precision);
    let loose = 2.0 * (2.0 * u + u * u) + tight;
    let loose_abs = if precision == Precision::Fp16 {
        k_max * 2f64.powi(-24)
    } else {
        0.0
    };
    let round = |v: &[f32]| {
        v.iter()
            .map(|&a| precision.round_operand(a))
            .collect::<Vec<_>>()
    };
    let [ry, rdx, rdw] = reference(&case, &round(&x), &round(&w), &round(&dy));
    let [fy, fdx, fdw] = reference(&case, &x, &w, &dy);
    // Which directions ran on tensor cores: at any precision but F32, GEMMs with more than 16 rows (conv.rs);
    // the others are the f32 kernels and are held to the f32 path's own accuracy (they do not round).
    // Backward data of a 1x1 output covering the input is one f32 GEMM at any precision, but for a 1x1 kernel
    // at the 16-bit ones (conv_narrow.rs). Forward and backward data with more than 32 taps run on the f32
    // kernels too (one mask bit per tap, conv.rs); backward weight has no such limit.
    let tc = |rows: usize| precision != Precision::F32 && rows > 16;
    let few_taps = case.k.0 * case.k.1 <= 32;
    let plain_product = (case.h, case.w) == case.k
        && case.p.padding == (0, 0)
        && !(case.k == (1, 1) && precision.is_half());
    for (dir, got, r_round, r_f32, rows) in [
        ("conv2d", &y, &ry, &fy, if few_taps { case.o } else { 0 }),
        (
            "backward data",
            &dx,
            &rdx,
            &fdx,
            if plain_product || !few_taps {
                0
            } else {
                case.c
            },
        ),
        ("backward weight", &dw, &rdw, &fdw, case.o),
    ] {
        let what = format!("{name} [{precision}]: {dir}");
        if tc(rows) {
            check(
                &format!("{what} vs {precision}-rounded reference"),
                got,
                r_round,
                tight,
                0.0,
            );
            check(
                &format!("{what} vs f32 reference"),
                got,
                r_f32,
                loose,
                loose_abs,
            );
        } else {
            check(
                &format!("{what} (f32 kernel) vs f32 reference"),
                got,
                r_f32,
                tight,
                0.0,
            );
        }
    }
}

pub fn p(s: usize, pad: usize) -> Conv2dParams {
    Conv2dParams {
        stride: (s, s),
        padding: (pad, pad),
    }
}

pub fn case(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    p: Conv2dParams,
) -> ConvCase {
    rect_case([n, c, h, w], o, (k, k), p.stride, p.padding)
}

/// A convolution of x [n, c, h, w] to `o` channels with a kh x kw kernel and per-axis stride and padding.
fn rect_case(
    [n, c, h, w]: [usize; 4],
    o: usize,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> ConvCase {
    ConvCase {
        n,
        c,
        h,
        w,
        o,
        k,
        p: Conv2dParams { stride, padding },
    }
}

/// Awkward sizes for every tile and direction.
pub fn awkward_cases() -> Vec<(&'static str, ConvCase)> {
    vec![
        // 4x4 s2 p1 (DCGAN's shape) with 67 output channels (two row tiles, the second 3 rows deep), 19 input
        // channels (K = 304: 19 slices, split-K) and 2*5*6 = 60 output pixels (half a column tile).
        ("4x4 s2 p1", case(2, 19, 9, 11, 67, 4, p(2, 1))),
        ("3x3 s1 p1", case(2, 18, 7, 10, 33, 3, p(1, 1))),
        // Stride larger than the kernel: backward data has stride phases without taps.
        ("1x1 s2", case(2, 20, 7, 8, 24, 1, p(2, 0))),
        (
            "3x5 s(2,1) p(1,2)",
            rect_case([2, 17, 9, 7], 20, (3, 5), (2, 1), (1, 2)),
        ),
        // One narrow side: forward / backward weight on the f32 m16 path (O = 5), backward data on tensor cores.
        ("O=5", case(2, 21, 6, 7, 5, 3, p(1, 1))),
        // 32 taps, all a column's tap mask holds (the last one is its top bit), forward and backward data.
        (
            "4x8 s1 p(1,3): 32 taps",
            rect_case([1, 18, 6, 11], 20, (4, 8), (1, 1), (1, 3)),
        ),
        // 35 taps: forward and backward data leave the tensor cores for the f32 kernels.
        (
            "7x5 s1 p(3,2): 35 taps",
            rect_case([1, 18, 8, 6], 20, (7, 5), (1, 1), (3, 2)),
        ),
    ]
}

/// Shapes aimed at the tensor-core main loop's masks and pipeline (BK = 32 slices, 3 stages, 64 x 128 tiles for
/// up to 64 rows, 128 x 128 above):
/// reductions shorter than one slice, between one slice and the stage count, not a multiple of a slice, split-K
/// chunks that end inside an image, batch 1, stride 1 and 2, padding 0..2, kernels 3 and 4, stride phases with
/// 1, 2 and 4 taps, forward weights with K a multiple of 4 (16-byte copies) and not (4-byte copies).
pub fn pipeline_tail_cases() -> Vec<(&'static str, ConvCase)> {
    vec![
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
    ]
}

/// DCGAN-64 discriminator layers (4x4, stride 2, pad 1) at batch 2 and reduced image sizes: the channel counts —
/// which set the tile rows and K — are the real ones.
pub fn dcgan_cases() -> Vec<(&'static str, ConvCase)> {
    vec![
        ("D1 3->64", case(2, 3, 16, 16, 64, 4, p(2, 1))),
        ("D2 64->128", case(2, 64, 8, 8, 128, 4, p(2, 1))),
    ]
}

/// Every case set (awkward sizes, pipeline tails, DCGAN shapes) at `precision`, each from its own seed.
pub fn run_case_sets(precision: Precision, seed: u64) {
    run_cases(precision, awkward_cases(), seed);
    run_cases(precision, pipeline_tail_cases(), seed + 12);
    run_cases(precision, dcgan_cases(), seed + 4);
}

/// Runs `cases` at `precision` on the backend under test.
pub fn run_cases(precision: Precision, cases: Vec<(&'static str, ConvCase)>, seed: u64) {
    let be = backend(precision);
    assert_eq!(be.precision(), precision);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, c) in cases {
        run_case(&be, name, c, &mut rng);
    }
}

/// DCGAN-64's discriminator convolutions at batch 8, and an awkward shape: the real-GPU cases (too slow to
/// emulate).
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

/// The real GPU at `precision`: [`gpu_cases`] on cuda:0.
pub fn on_a_real_gpu(test: &str, precision: Precision) {
    let be = gan_engine::cuda::cuda_backend(0)
        .unwrap_or_else(|e| panic!("{test}: cuda:0 does not open: {e:#}"));
    be.set_precision(precision);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (name, c) in gpu_cases() {
        run_case(&be, name, c, &mut rng);
    }
}

/// The PTX of conv.cu for compute_80, or None (with a loud SKIPPED line) when NVRTC is unavailable outside CI.
/// conv.cu's PTX for compute_80 (see [`conv_ptx`]), checked to contain every one of `needles`.
pub fn conv_ptx_with(test: &str, needles: &[&str]) -> Option<String> {
    let ptx = conv_ptx(test)?;
    for needle in needles {
        assert!(
            ptx.contains(needle),
            "conv.cu PTX for compute_80 lacks {needle}"
        );
    }
    Some(ptx)
}

pub fn conv_ptx(test: &str) -> Option<String> {
    use gan_engine::cuda::nvrtc;
    if let Err(e) = nvrtc::ensure_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but NVRTC is unavailable: {e}");
        }
        eprintln!("\n*** SKIPPED {test}: {e} ***\n");
        return None;
    }
    let ptx = nvrtc::compile("conv.cu", "compute_80", &[]).unwrap();
    Some(String::from_utf8_lossy(&ptx.image).into_owned())
}
