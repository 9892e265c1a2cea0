//! The mixed-precision (bf16 / fp16) path of the CUDA backend: kernels/mma.cuh's f32 -> bf16 / f16 rounding
//! against the `half` crate, its warp-level m16n8k16 product against a reference over rounded operands, and the
//! `*_bf16` / `*_fp16` convolution kernels of kernels/conv.cu selected by `Precision::Bf16` / `Precision::Fp16`,
//! with the references and tolerances of tests/common/tc.rs (unit roundoff 2^-8 for bf16, 2^-11 for fp16).
//!
//! `bf16_on_a_real_gpu` / `fp16_on_a_real_gpu` are `#[ignore]`d: they need a GPU and run bigger DCGAN shapes.

#![cfg(feature = "emulation")]

use gan_engine::backend::Backend;
use gan_engine::cuda::Precision;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::tc::{self, case, p, random, upload};

const HALVES: [(Precision, &str); 2] = [(Precision::Bf16, "bf16"), (Precision::Fp16, "fp16")];

#[test]
fn half_rounding_matches_the_half_crate() {
    let one = 1.0f32.to_bits();
    let mut xs: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::from_bits(one + 0x7fff),   // bf16: just below halfway, down
        f32::from_bits(one + 0x8000),   // bf16: halfway, to even (down)
        f32::from_bits(one + 0x1_8000), // bf16: halfway, to even (up)
        f32::from_bits(one + 0x1000),   // fp16: halfway, to even (down)
        -f32::from_bits(one + 0x3000),  // fp16: negative halfway, to even (up in magnitude)
        65504.0,                        // fp16 max
        65519.99,                       // fp16: below the tie, down to 65504
        65520.0,                        // fp16: tie past the max, Inf
        f32::MAX,                       // bf16: rounds to Inf
        6.1035156e-5,                   // fp16's smallest normal
        5.9604645e-8,                   // fp16's smallest subnormal
        2.9802322e-8,                   // half of it: the tie goes to even 0
        2.9802326e-8,                   // just above: up to the smallest subnormal
        8.940697e-8,                    // 1.5 subnormal steps: to even, 2 steps
        -3.0e-6,
        f32::MIN_POSITIVE,
        1e-40, // f32 subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        std::f32::consts::PI,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Every binade from f32's subnormals to past fp16's range, random significands and signs.
    xs.extend((0..600).map(|_| {
        let e = rng.gen_range(-140i32..20);
        rng.gen_range(-2.0f32..2.0) * 2f32.powi(e)
    }));
    xs.push(f32::NAN);
    for (precision, name) in HALVES {
        let be = tc::backend(precision);
        tc::rounding_kernel_matches_host(&be, &format!("{name}_round_f32"), precision, &xs);
    }
    // The rules themselves, through the host rounding the kernels were just compared with.
    assert_eq!(
        Precision::Bf16.round_operand(f32::from_bits(one + 0x1_8000)),
        f32::from_bits(one + 0x2_0000)
    );
    assert_eq!(Precision::Fp16.round_operand(2.9802322e-8), 0.0);
    assert_eq!(Precision::Fp16.round_operand(8.940697e-8), 1.1920929e-7);
}

#[test]
fn mma_m16n8k16_matches_a_rounded_reference() {
    for (precision, name) in HALVES {
        let be = tc::backend(precision);
        tc::mma_matches_reference(&be, &format!("mma_k16_selftest_{name}"), precision, 16, 11);
    }
}

/// Awkward sizes, the pipeline's tails and DCGAN's shapes, in bf16 (see tests/common/tc.rs for the bounds).
#[test]
fn conv2d_bf16_matches_a_rounded_reference() {
    tc::run_case_sets(Precision::Bf16, 5);
}

#[test]
fn conv2d_fp16_matches_a_rounded_reference() {
    tc::run_case_sets(Precision::Fp16, 6);
}

/// Linear layers at the 16-bit precisions run as 1x1 convolutions on the tensor-core kernels (src/cuda/linear.rs):
/// every product with more than 16 GEMM rows (and more than 4 input channels for backward data) matches the
/// reference over rounded operands with the tight bound of tests/common/tc.rs, the others the f32 reference;
/// the bias is added in f32 (one more rounding of the output), its gradient summed in f32.
#[test]
fn linear_matches_a_rounded_reference() {
    use gan_engine::backend::LinearNeed;
    use tc::{check, Reference};
    for (precision, _) in HALVES {
        let be = tc::backend(precision);
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        // (N, in, out): every product on tensor cores, on both row tiles; one output (D's last layer: forward
        // and backward weight on the f32 narrow tile, backward data on tensor cores); few inputs (backward data
        // on conv_narrow's f32 kernel).
        for (n, inp, out) in [(20, 70, 33), (3, 40, 130), (9, 50, 1), (17, 3, 24)] {
            let (x, w, b, dy) = (
                random(&mut rng, n * inp),
                random(&mut rng, out * inp),
                random(&mut rng, out),
                random(&mut rng, n * out),
            );
            let (xg, wg, bg, dyg) = (
                upload(&be, &x, &[n, inp]),
                upload(&be, &w, &[out, inp]),
                upload(&be, &b, &[out]),
                upload(&be, &dy, &[n, out]),
            );
            let y = be.linear(&xg, &wg, Some(&bg)).unwrap().to_vec().unwrap();
            let y_nobias = be.linear(&xg, &wg, None).unwrap().to_vec().unwrap();
            let g = be.linear_backward(&xg, &wg, &dyg, LinearNeed::ALL).unwrap();
            let [dx, dw, db] = [g.dx, g.dw, g.db].map(|t| t.unwrap().to_vec().unwrap());
            let refs = |round: bool| {
                let r = |v: &[f32]| -> Vec<f32> {
                    v.iter()
                        .map(|&a| if round { precision.round_operand(a) } else { a })
                        .collect()
                };
                let (x, w, dy) = (r(&x), r(&w), r(&dy));
                let (mut ry, mut rdx, mut rdw) = (
                    Reference::new(n * out),
                    Reference::new(n * inp),
                    Reference::new(out * inp),
                );
                for s in 0..n {
                    for o in 0..out {
                        for i in 0..inp {
                            ry.add(s * out + o, x[s * inp + i], w[o * inp + i]);
                            rdx.add(s * inp + i, dy[s * out + o], w[o * inp + i]);
                            rdw.add(o * inp + i, dy[s * out + o], x[s * inp + i]);
                        }
                    }
                }
                [ry, rdx, rdw]
            };
            let ([ry, rdx, rdw], [fy, fdx, fdw]) = (refs(true), refs(false));
            let tight = 4.0 * f32::EPSILON as f64 * (inp.max(out).max(n) as f64).sqrt();
            let what = format!("linear {n}x{inp}->{out} [{precision}]");
            let (fwd_tc, bwd_data_tc) = (out > 16, inp > 16);
            for (dir, got, on_tc, rounded, plain) in [
                ("forward", &y_nobias, fwd_tc, &ry, &fy),
                ("backward data", &dx, bwd_data_tc, &rdx, &fdx),
                ("backward weight", &dw, fwd_tc, &rdw, &fdw),
            ] {
                let want = if on_tc { rounded } else { plain };
                check(
                    &format!("{what} {dir} (tensor cores: {on_tc})"),
                    got,
                    want,
                    tight,
                    0.0,
                );
            }
            for (i, (&yb, &y0)) in y.iter().zip(&y_nobias).enumerate() {
                assert_eq!(yb, y0 + b[i % out], "{what}: bias at {i}");
            }
            for (o, &g) in db.iter().enumerate() {
                let want: f64 = (0..n).map(|s| dy[s * out + o] as f64).sum();
                assert!(
                    (g as f64 - want).abs() <= 1e-5 * n as f64,
                    "{what}: db[{o}] {g} vs {want}"
                );
            }
        }
    }
}

/// Each 16-bit precision runs its own kernels: results differ from f32 (and bf16 from fp16) by about their
/// rounding, and the switch back to f32 restores the f32 results bit for bit.
#[test]
fn precision_switches_kernels() {
    let be = tc::backend(Precision::F32);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let c = case(1, 17, 6, 6, 24, 3, p(1, 1));
    let x = upload(&be, &random(&mut rng, 17 * 36), &c.x_shape());
    let w = upload(&be, &random(&mut rng, 24 * 17 * 9), &c.w_shape());
    let run = |precision| {
        be.set_precision(precision);
        be.conv2d(&x, &w, c.p).unwrap().to_vec().unwrap()
    };
    let y32 = run(Precision::F32);
    let ybf = run(Precision::Bf16);
    let yhf = run(Precision::Fp16);
    assert_eq!(run(Precision::F32), y32);
    for (y, name, tol) in [(&ybf, "bf16", 0.1), (&yhf, "fp16", 1e-2)] {
        let diff = y32.iter().zip(y).filter(|(a, b)| a != b).count();
        assert!(
            diff > y32.len() / 2,
            "{name}: only {diff} of {} outputs differ",
            y32.len()
        );
        for (a, b) in y32.iter().zip(y) {
            assert!((a - b).abs() <= tol, "{name}: {a} vs {b}");
        }
    }
    let diff = ybf.iter().zip(&yhf).filter(|(a, b)| a != b).count();
    assert!(
        diff > ybf.len() / 2,
        "bf16 and fp16 agree on {} of {}",
        ybf.len() - diff,
        ybf.len()
    );
}

/// The emulation runs mma.cuh's portable fallbacks; this checks that NVRTC takes the tensor-core branch for the
/// GPU: the PTX of conv.cu holds the m16n8k16 products and the packing conversions of both formats.
#[test]
fn gpu_build_uses_m16n8k16_instructions() {
    let Some(ptx) = tc::conv_ptx_with(
        "gpu_build_uses_m16n8k16_instructions",
        &[
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
            "cvt.rn.bf16x2.f32",
            "cvt.rn.f16x2.f32",
        ],
    ) else {
        return;
    };
    for (_, name) in HALVES {
        for dir in ["fwd", "bwd_data", "bwd_weight"] {
            for tile in ["", "_m128"] {
                let entry = format!(".entry conv2d_{dir}{tile}_{name}(");
                let body = ptx
                    .split(&entry)
                    .nth(1)
                    .unwrap_or_else(|| panic!("no {entry}"));
                let body = body.split(".entry ").next().unwrap();
                assert!(
                    body.contains("m16n8k16") && !body.contains("m16n8k8"),
                    "{entry}: not the m16n8k16 path"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn bf16_on_a_real_gpu() {
    tc::on_a_real_gpu("bf16_on_a_real_gpu", Precision::Bf16);
}

#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn fp16_on_a_real_gpu() {
    tc::on_a_real_gpu("fp16_on_a_real_gpu", Precision::Fp16);
}
