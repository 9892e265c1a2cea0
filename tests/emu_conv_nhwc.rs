//! The channels-last TF32 / bf16 / fp16 convolutions and the FP32 ones (src/cuda/conv_nhwc.rs,
//! kernels/conv_nhwc.cu): their operand conversion bit for bit against the host's rounding
//! (`Precision::round_operand`: the `half` crate for the 16-bit formats, none at F32); the three directions against
//! the references of
//! tests/common/tc.rs at shapes aimed at their loaders (one and several slices per tap, split-K chunks starting
//! inside a tap or an image row, padding taps, stride phases of unequal size and without taps, partial row, column
//! and K tiles, both tiles, more taps than a mask holds), with proof that those shapes ran on them; and the
//! layout override that keeps the NCHW kernels.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use gan_engine::backend::{Activation, Backend};
use gan_engine::cuda::tuning::GemmTuning;
use gan_engine::cuda::{CudaBackend, KernelArg as A, LaunchCfg, Precision};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::backend::launches;
use common::conv::ConvCase;
use common::tc::{self, case, p, upload};

const FORMATS: [(Precision, &str); 4] = [
    (Precision::Tf32, "tf32"),
    (Precision::Bf16, "bf16"),
    (Precision::Fp16, "fp16"),
    (Precision::F32, "f32"),
];

/// The values of a converted buffer as f32: its words at TF32 and F32, else the 16-bit values two to a word, low
/// first.
fn widen(p: Precision, words: &[f32]) -> Vec<f32> {
    let half = |bits: u16| match p {
        Precision::Bf16 => half::bf16::from_bits(bits).to_f32(),
        _ => half::f16::from_bits(bits).to_f32(),
    };
    match p {
        Precision::Tf32 | Precision::F32 => words.to_vec(),
        _ => words
            .iter()
            .flat_map(|v| {
                let b = v.to_bits();
                [half(b as u16), half((b >> 16) as u16)]
            })
            .collect(),
    }
}

/// Two tensors through one `to_nhwc_pair_*` launch: every value lands at [n, hw, c], rounded as the host rounds
/// operands. The first has two channel blocks (70 channels, the second 6 deep), pixels not a multiple of the
/// 32-pixel tile and three images, with ties, specials and out-of-range values among its inputs; the second is a
/// weight-like [1, 34, 48].
#[test]
fn to_nhwc_pair_moves_and_rounds_every_value() {
    let dims = [[3usize, 70, 35], [1, 34, 48]];
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let mut inputs: Vec<Vec<f32>> = dims
        .iter()
        .map(|d| {
            (0..d.iter().product::<usize>())
                .map(|_| rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-30..20)))
                .collect()
        })
        .collect();
    let one = 1.0f32.to_bits();
    let specials = [
        f32::from_bits(one + 0x8000), // bf16 tie to even
        f32::from_bits(one + 0x1000), // fp16 tie to even, TF32 tie away from zero
        65520.0,                      // fp16 overflow
        5.9604645e-8,                 // fp16's smallest subnormal
        f32::INFINITY,
        -0.0,
    ];
    for (i, s) in specials.into_iter().enumerate() {
        inputs[0][i * 97] = s;
    }
    for (precision, name) in FORMATS {
        let be = tc::backend(precision);
        let mut args = Vec::new();
        let mut keep = Vec::new();
        let mut blocks = 0;
        for (d, xs) in dims.iter().zip(&inputs) {
            let x = upload(&be, xs, d);
            let words = match precision {
                Precision::Tf32 | Precision::F32 => xs.len(),
                _ => xs.len() / 2,
            };
            let y = be.alloc(&[words]).unwrap();
            args.extend([A::Ptr(be.ptr(&x).unwrap()), A::Ptr(be.ptr(&y).unwrap())]);
            args.extend(d.map(|v| A::I32(v as i32)));
            blocks += d[0] * d[2].div_ceil(32) * d[1].div_ceil(64);
            keep.push((x, y));
        }
        be.launch(
            &format!("to_nhwc_pair_{name}"),
            LaunchCfg {
                grid: (blocks as u32, 1, 1),
                block: (32, 8, 1),
                shared_bytes: 0,
            },
            &args,
        )
        .unwrap();
        for ((&[n, c, hw], xs), (_, y)) in dims.iter().zip(&inputs).zip(&keep) {
            let values = widen(precision, &y.to_vec().unwrap());
            for ni in 0..n {
                for ci in 0..c {
                    for pi in 0..hw {
                        let want = precision.round_operand(xs[(ni * c + ci) * hw + pi]);
                        let got = values[(ni * hw + pi) * c + ci];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{name} {n}x{c}x{hw}: [{ni}, {ci}, {pi}]: got {got:e}, want {want:e}"
                        );
                    }
                }
            }
        }
    }
}

/// Shapes for the channels-last loaders, with whether forward (input channels a multiple of 32), backward data
/// (output channels a multiple of 32) and backward weight (both a multiple of 8, more than 16 output channels)
/// run on them.
fn nhwc_cases() -> Vec<(&'static str, ConvCase, bool, bool, bool)> {
    vec![
        // One slice per tap, 9 taps, padding: edge columns lose taps; 2 x 63 = 126 columns, one partial tile.
        (
            "C=32 3x3 s1 p1, O=40",
            case(2, 32, 7, 9, 40, 3, p(1, 1)),
            true,
            false,
            true,
        ),
        // Three slices per tap; 3 column tiles (2 x 12 x 12 = 288 columns), the last partial.
        (
            "C=96 3x3 s1 p1, 288 columns",
            case(2, 96, 12, 12, 24, 3, p(1, 1)),
            true,
            false,
            true,
        ),
        // K = 96 x 16 = 1536 (48 slices) on one tile: split-K into chunks of 4 slices, which start inside taps.
        (
            "C=96 4x4 s2 p1 split",
            case(1, 96, 4, 4, 24, 4, p(2, 1)),
            true,
            false,
            true,
        ),
        // Padding 2 at stride 1: whole rows of taps outside the image; batch 3. Backward data too (O = 64).
        (
            "C=32 4x4 s1 p2, O=64",
            case(3, 32, 5, 5, 64, 4, p(1, 2)),
            true,
            true,
            true,
        ),
        // 130 rows: two 128-row tiles, the second 2 deep; a 1x1 kernel (one tap).
        (
            "C=64 1x1, O=130",
            case(1, 64, 5, 6, 130, 1, p(1, 0)),
            true,
            false,
            false,
        ),
        // Stride 2 without padding, 3x3.
        (
            "C=32 3x3 s2 p0",
            case(2, 32, 9, 8, 20, 3, p(2, 0)),
            true,
            false,
            false,
        ),
        // Backward data, 4 phases of 4 taps: 23 x 23 inputs give phases of 12 x 12, 12 x 11 and 11 x 11 pixels,
        // so the grid (3 column tiles, sized for the largest) has a tile past the smaller phases' pixels.
        (
            "O=32 4x4 s2 p1, 23x23",
            case(2, 24, 23, 23, 32, 4, p(2, 1)),
            false,
            true,
            true,
        ),
        // Backward data on the 128-row tile (70 input channels), two slices per tap, one phase of 9 taps.
        (
            "O=64 3x3 s1 p1, C=70",
            case(1, 70, 6, 7, 64, 3, p(1, 1)),
            false,
            true,
            false,
        ),
        // Stride 2 with a 1x1 kernel: three of the four phases have no taps (zeros).
        (
            "O=32 1x1 s2",
            case(2, 20, 7, 8, 32, 1, p(2, 0)),
            false,
            true,
            false,
        ),
        // Backward weight: 2 x 12 x 11 = 264 pixels (8 slices and a partial one) split in two chunks of 5 slices,
        // the second starting inside an image row; 216 columns (3 x 3 taps of 24 channels), the second column
        // tile partial.
        (
            "C=24 O=40 3x3 s1 p1, 12x11",
            case(2, 24, 12, 11, 40, 3, p(1, 1)),
            false,
            false,
            true,
        ),
        // Backward weight on the 128-row tile with a partial second row tile (136 rows), 49 taps (past the masks'
        // 32: forward and backward data stay on the f32 kernels), 784 columns (7 column tiles, the last 16 wide),
        // stride 2 and padding 3.
        (
            "C=16 O=136 7x7 s2 p3",
            case(2, 16, 9, 9, 136, 7, p(2, 3)),
            false,
            false,
            true,
        ),
        // Backward weight with 8 channels: a copy is a whole tap; 75 pixels.
        (
            "C=8 O=24 4x4 s2 p1",
            case(3, 8, 10, 10, 24, 4, p(2, 1)),
            false,
            false,
            true,
        ),
    ]
}

/// The channels-last kernels of each direction launched so far at `name`'s precision.
fn nhwc_counts(be: &CudaBackend, name: &str) -> [u64; 3] {
    DIRECTIONS.map(|b| nhwc_launches(be, b, name))
}

const DIRECTIONS: [&str; 3] = ["conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_weight"];

/// The channels-last kernels `base` (`conv2d_fwd`, `conv2d_bwd_data` or `conv2d_bwd_weight`) launched so far at
/// `name`'s precision.
fn nhwc_launches(be: &CudaBackend, base: &str, name: &str) -> u64 {
    launches(be, &format!("{base}_nhwc_{name}")) + launches(be, &format!("{base}_nhwc_m128_{name}"))
}

/// Every case's three directions against the rounded and the f32 references (tests/common/tc.rs), each on the
/// channels-last kernel where the case says so (one launch) and on the NCHW one elsewhere.
#[test]
fn channels_last_convolutions_match_a_rounded_reference() {
    for (precision, name) in FORMATS {
        let be = tc::backend(precision);
        let mut rng = ChaCha8Rng::seed_from_u64(72);
        for (what, c, fwd, bwd, wgrad) in nhwc_cases() {
            let before = nhwc_counts(&be, name);
            tc::run_case(&be, what, c, &mut rng);
            let after = nhwc_counts(&be, name);
            for (i, ran) in [fwd, bwd, wgrad].into_iter().enumerate() {
                assert_eq!(
                    after[i] - before[i],
                    u64::from(ran),
                    "{what} [{name}]: {}",
                    DIRECTIONS[i]
                );
            }
        }
    }
}

/// The bits of each tensor.
fn bits(ts: [&Tensor; 2]) -> [Vec<u32>; 2] {
    ts.map(|t| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
}

/// A convolution's backward with both gradients (`Backend::conv2d_backward`, with and without a folded
/// activation) and a transposed convolution's (`conv_transpose2d_backward`): the same bits as the two GEMMs
/// called one by one, with one `to_nhwc_triple_*` launch for the three operands and no pair where both GEMMs run
/// channels-last, and the pairs as before where only one does (from no kept copies: tests/emu_operand_reuse.rs
/// covers what they save).
#[test]
fn a_backward_converts_the_operand_both_gemms_read_once() {
    let act = Activation::LeakyRelu(0.2);
    for (precision, name) in FORMATS {
        let be = tc::backend(precision);
        let mut rng = ChaCha8Rng::seed_from_u64(74);
        // (case, whether backward data / forward and backward weight both run channels-last)
        for (c, shared) in [
            (case(3, 32, 5, 5, 64, 4, p(1, 2)), true),
            (case(2, 24, 12, 11, 40, 3, p(1, 1)), false),
        ] {
            let what = format!("{c:?} [{name}]");
            let mut random = |shape: [usize; 4]| {
                upload(&be, &tc::random(&mut rng, shape.iter().product()), &shape)
            };
            let (x, w, dy, y) = (
                random(c.x_shape()),
                random(c.w_shape()),
                random(c.y_shape()),
                random(c.x_shape()),
            );
            let counts = |be: &CudaBackend| {
                [
                    launches(be, &format!("to_nhwc_pair_{name}")),
                    launches(be, &format!("to_nhwc_triple_{name}")),
                ]
            };
            let expect = |before: [u64; 2], after: [u64; 2], one_by_one: u64| {
                let want = if shared { [0, 1] } else { [one_by_one, 0] };
                assert_eq!([after[0] - before[0], after[1] - before[1]], want, "{what}");
            };

            for fold in [None, Some((act, &y))] {
                let dx = match fold {
                    Some((a, y)) => be.conv2d_backward_data_act(&dy, &w, c.p, a, y),
                    None => be.conv2d_backward_data(&dy, &w, c.x_shape(), c.p),
                }
                .unwrap();
                let dw = be
                    .conv2d_backward_weight(&x, &dy, c.w_shape(), c.p)
                    .unwrap();
                // From no kept copies (the calls above left theirs), as a backward whose operands are new.
                be.forget_operands();
                let before = counts(&be);
                let both = be.conv2d_backward(&dy, &x, &w, c.p, fold).unwrap();
                expect(before, counts(&be), 1);
                assert_eq!(
                    bits([&both.0, &both.1]),
                    bits([&dx, &dw]),
                    "{what} fold {fold:?}"
                );
            }

            // The transposed convolution of this case maps y's shape to x's: its input is dy, its output's
            // gradient has x's shape.
            let g = y;
            let dxin = be.conv2d(&g, &w, c.p).unwrap();
            let dw = be
                .conv2d_backward_weight(&g, &dy, c.w_shape(), c.p)
                .unwrap();
            be.forget_operands();
            let before = counts(&be);
            let both = be.conv_transpose2d_backward(&g, &dy, &w, c.p).unwrap();
            // Unshared, forward (C = 24) stays NCHW: only backward weight converts.
            expect(before, counts(&be), 1);
            assert_eq!(
                bits([&both.0, &both.1]),
                bits([&dxin, &dw]),
                "{what} transposed"
            );
        }
    }
}

/// `GAN_ENGINE_CONV_LAYOUT=nchw` (GemmTuning::nhwc = Some(false)) keeps the NCHW kernels, which pass the same
/// checks; channel counts that do not suit a direction's copies keep its NCHW kernel by default.
#[test]
fn the_layout_override_and_other_channel_counts_keep_the_nchw_kernels() {
    let be = tc::backend(Precision::Bf16);
    let mut rng = ChaCha8Rng::seed_from_u64(73);
    let mut cases: Vec<(&str, ConvCase, bool, [bool; 3])> = nhwc_cases()
        .into_iter()
        .filter(|(w, ..)| w.starts_with("C=32 4x4 s1 p2") || w.starts_with("O=32 4x4"))
        .map(|(w, c, ..)| (w, c, false, [false; 3]))
        .collect();
    assert_eq!(cases.len(), 2);
    // Neither reduction over a multiple of 32 channels, but both counts multiples of 8: backward weight only.
    cases.push((
        "C=48 O=40 4x4 s2 p1",
        case(2, 48, 6, 6, 40, 4, p(2, 1)),
        true,
        [false, false, true],
    ));
    // Channels that are not a multiple of 8: no direction.
    cases.push((
        "C=36 O=44 3x3 s1 p1",
        case(2, 36, 5, 5, 44, 3, p(1, 1)),
        true,
        [false; 3],
    ));
    for (what, c, default, ran) in cases {
        be.set_gemm_tuning(GemmTuning {
            nhwc: if default { None } else { Some(false) },
            ..GemmTuning::default()
        });
        let before = nhwc_counts(&be, "bf16");
        tc::run_case(&be, what, c, &mut rng);
        let after = nhwc_counts(&be, "bf16");
        for i in 0..3 {
            assert_eq!(
                after[i] - before[i],
                u64::from(ran[i]),
                "{what}: {}",
                DIRECTIONS[i]
            );
        }
    }
    be.set_gemm_tuning(GemmTuning::default());
}
