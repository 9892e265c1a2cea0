//! The tensor-core (TF32) path of the CUDA backend: kernels/mma.cuh's warp-level m16n8k8 product and TF32
//! rounding, and the `*_tf32` convolution kernels of kernels/conv.cu selected by `Precision::Tf32`, against the
//! references and tolerances of tests/common/tc.rs (TF32's unit roundoff is 2^-11).
//!
//! `tf32_on_a_real_gpu` is `#[ignore]`d: it needs a GPU and runs bigger DCGAN shapes there.

#![cfg(feature = "emulation")]

use gan_engine::backend::Backend;
use gan_engine::cuda::Precision;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::tc::{self, case, p, random, upload};

fn backend() -> std::sync::Arc<gan_engine::cuda::CudaBackend> {
    tc::backend(Precision::Tf32)
}

fn tf32(x: f32) -> f32 {
    Precision::Tf32.round_operand(x)
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
    tc::rounding_kernel_matches_host(&be, "tf32_round_f32", Precision::Tf32, &xs);
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
    tc::mma_matches_reference(&backend(), "mma_selftest_f32", Precision::Tf32, 8, 11);
}

/// Awkward sizes, the pipeline's tails and DCGAN's shapes (see tests/common/tc.rs for the bound).
#[test]
fn conv2d_tf32_matches_a_rounded_reference() {
    tc::run_case_sets(Precision::Tf32, 5);
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
    let Some(ptx) = tc::conv_ptx_with(
        "gpu_build_uses_tensor_core_instructions",
        &[
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
            "cvt.rna.tf32.f32",
            ".entry conv2d_fwd_tf32(",
            ".entry conv2d_bwd_data_tf32(",
            ".entry conv2d_bwd_weight_tf32(",
        ],
    ) else {
        return;
    };
    // The f32 kernels must not have picked up tensor-core instructions: cut the PTX at each entry.
    for entry in ptx.split(".entry ").skip(1) {
        let name = entry.split('(').next().unwrap();
        let uses_mma = entry.contains("mma.sync");
        let want = ["_tf32", "_bf16", "_fp16"]
            .iter()
            .any(|s| name.ends_with(s))
            || name.starts_with("mma_");
        assert_eq!(uses_mma, want, "{name}: mma.sync present = {uses_mma}");
    }
}

/// The real GPU: the checks above on the hardware mma.sync / cvt.rna, plus larger DCGAN layers (batch 8, full
/// channel counts) that are too slow to emulate.
#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn tf32_on_a_real_gpu() {
    tc::on_a_real_gpu("tf32_on_a_real_gpu", Precision::Tf32);
}

/// The same shapes through the FP32 kernels: a failure in both names the shared code (loaders, epilogue), one
/// in the TF32 test alone names the tensor-core path.
#[test]
#[ignore = "needs a GPU: scripts/gpu_run.sh runs it with --include-ignored"]
fn fp32_on_a_real_gpu() {
    tc::on_a_real_gpu("fp32_on_a_real_gpu", Precision::F32);
}
