//! The channels-last bf16 / fp16 forward convolution (src/cuda/conv_nhwc.rs, kernels/conv_nhwc.cu): its operand
//! conversion bit for bit against the `half` crate, the convolution against the references of tests/common/tc.rs
//! at shapes aimed at its loader (one and several slices per tap, split-K chunks starting inside a tap, padding
//! taps, partial row and column tiles, both tiles), proof that those shapes ran on it, and the layout override
//! that keeps the NCHW kernel.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use gan_engine::cuda::tuning::GemmTuning;
use gan_engine::cuda::{CudaBackend, KernelArg as A, LaunchCfg, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::backend::launches;
use common::conv::ConvCase;
use common::tc::{self, case, p, upload};

const HALVES: [(Precision, &str); 2] = [(Precision::Bf16, "bf16"), (Precision::Fp16, "fp16")];

/// A 16-bit value of `p`'s format as f32.
fn widen(p: Precision, bits: u16) -> f32 {
    match p {
        Precision::Bf16 => half::bf16::from_bits(bits).to_f32(),
        _ => half::f16::from_bits(bits).to_f32(),
    }
}

/// x [n, c, h, w] through `to_nhwc_*`: every value lands at [n, h, w, c], rounded as the host rounds operands.
/// Two channel blocks (70 channels, the second 6 deep), pixels not a multiple of the 32-pixel tile, three images;
/// ties, specials and out-of-range values among the inputs.
#[test]
fn to_nhwc_moves_and_rounds_every_value() {
    let (n, c, h, w) = (3, 70, 5, 7);
    let hw = h * w;
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let mut xs: Vec<f32> = (0..n * c * hw)
        .map(|_| rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-30..20)))
        .collect();
    let one = 1.0f32.to_bits();
    let specials = [
        f32::from_bits(one + 0x8000), // bf16 tie to even
        f32::from_bits(one + 0x1000), // fp16 tie to even
        65520.0,                      // fp16 overflow
        5.9604645e-8,                 // fp16's smallest subnormal
        f32::INFINITY,
        -0.0,
    ];
    for (i, s) in specials.into_iter().enumerate() {
        xs[i * 97] = s;
    }
    for (precision, name) in HALVES {
        let be = tc::backend(precision);
        let x = upload(&be, &xs, &[n, c, h, w]);
        let y = be.alloc(&[n * c * hw / 2]).unwrap();
        be.launch(
            &format!("to_nhwc_{name}"),
            LaunchCfg {
                grid: ((n * hw.div_ceil(32)) as u32, c.div_ceil(64) as u32, 1),
                block: (32, 8, 1),
                shared_bytes: 0,
            },
            &[
                A::Ptr(be.ptr(&x).unwrap()),
                A::Ptr(be.ptr(&y).unwrap()),
                A::I32(n as i32),
                A::I32(c as i32),
                A::I32(hw as i32),
            ],
        )
        .unwrap();
        let words = y.to_vec().unwrap();
        let halves: Vec<u16> = words
            .iter()
            .flat_map(|v| {
                let b = v.to_bits();
                [b as u16, (b >> 16) as u16]
            })
            .collect();
        for ni in 0..n {
            for ci in 0..c {
                for pi in 0..hw {
                    let want = precision.round_operand(xs[(ni * c + ci) * hw + pi]);
                    let got = widen(precision, halves[(ni * hw + pi) * c + ci]);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{name}: [{ni}, {ci}, {pi}]: got {got:e}, want {want:e}"
                    );
                }
            }
        }
    }
}

/// Shapes for the channels-last loader: input channels a multiple of 32.
fn nhwc_cases() -> Vec<(&'static str, ConvCase)> {
    vec![
        // One slice per tap, 9 taps, padding: edge columns lose taps; 2 x 63 = 126 columns, one partial tile.
        ("C=32 3x3 s1 p1, O=40", case(2, 32, 7, 9, 40, 3, p(1, 1))),
        // Three slices per tap; 3 column tiles (2 x 12 x 12 = 288 columns), the last partial.
        (
            "C=96 3x3 s1 p1, 288 columns",
            case(2, 96, 12, 12, 24, 3, p(1, 1)),
        ),
        // K = 96 x 16 = 1536 (48 slices) on one tile: split-K into chunks of 4 slices, which start inside taps.
        ("C=96 4x4 s2 p1 split", case(1, 96, 4, 4, 24, 4, p(2, 1))),
        // Padding 2 at stride 1: whole rows of taps outside the image; batch 3.
        ("C=32 4x4 s1 p2", case(3, 32, 5, 5, 33, 4, p(1, 2))),
        // 130 rows: two 128-row tiles, the second 2 deep; a 1x1 kernel (one tap).
        ("C=64 1x1, O=130", case(1, 64, 5, 6, 130, 1, p(1, 0))),
        // Stride 2 without padding, 3x3.
        ("C=32 3x3 s2 p0", case(2, 32, 9, 8, 20, 3, p(2, 0))),
    ]
}

/// The channels-last kernels' launches so far at `name`'s precision.
fn nhwc_launches(be: &CudaBackend, name: &str) -> u64 {
    launches(be, &format!("conv2d_fwd_nhwc_{name}"))
        + launches(be, &format!("conv2d_fwd_nhwc_m128_{name}"))
}

/// Every case on the channels-last kernels (one launch each), against the rounded and the f32 references; the
/// other directions of each case ride along on their NCHW kernels.
#[test]
fn channels_last_forward_matches_a_rounded_reference() {
    for (precision, name) in HALVES {
        let be = tc::backend(precision);
        let mut rng = ChaCha8Rng::seed_from_u64(72);
        for (what, c) in nhwc_cases() {
            let before = nhwc_launches(&be, name);
            let nchw = launches(&be, &format!("conv2d_fwd_{name}"));
            tc::run_case(&be, what, c, &mut rng);
            assert_eq!(nhwc_launches(&be, name) - before, 1, "{what} [{name}]");
            assert_eq!(
                launches(&be, &format!("conv2d_fwd_{name}")),
                nchw,
                "{what} [{name}]: the NCHW kernel ran"
            );
        }
    }
}

/// `GAN_ENGINE_CONV_LAYOUT=nchw` (GemmTuning::nhwc = Some(false)) keeps the NCHW kernels, which pass the same
/// checks; channels that are not a multiple of 32 never take the channels-last kernels.
#[test]
fn the_layout_override_and_other_channel_counts_keep_the_nchw_kernels() {
    let be = tc::backend(Precision::Bf16);
    let mut rng = ChaCha8Rng::seed_from_u64(73);
    let mut cases: Vec<(&str, ConvCase, bool)> = nhwc_cases()
        .into_iter()
        .take(2)
        .map(|(w, c)| (w, c, false))
        .collect();
    cases.push(("C=48 4x4 s2 p1", case(2, 48, 6, 6, 24, 4, p(2, 1)), true));
    for (what, c, default) in cases {
        be.set_gemm_tuning(GemmTuning {
            nhwc: if default { None } else { Some(false) },
            ..GemmTuning::default()
        });
        let before = nhwc_launches(&be, "bf16");
        tc::run_case(&be, what, c, &mut rng);
        assert_eq!(nhwc_launches(&be, "bf16"), before, "{what}");
    }
    be.set_gemm_tuning(GemmTuning::default());
}
