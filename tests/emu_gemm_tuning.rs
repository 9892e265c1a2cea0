//! The GEMM launch overrides of a tuning run (src/cuda/tuning.rs): each runs the kernels it names, and the
//! results stay those of the default choice, bit for bit where the tile is all that changed and within rounding
//! where the reduction is split otherwise.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use gan_engine::backend::{Backend, Conv2dParams};
use gan_engine::cuda::tuning::GemmTuning;
use gan_engine::cuda::{CudaBackend, Precision};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::backend::{launches, under_test as backend};

fn random(be: &CudaBackend, rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let v: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    be.from_host(&v, shape).unwrap()
}

/// `f` under `tuning`, with the launches of `kernel` it made; the backend goes back to the default after.
fn under<T>(be: &CudaBackend, tuning: GemmTuning, kernel: &str, f: impl FnOnce() -> T) -> (T, u64) {
    be.set_gemm_tuning(tuning);
    let before = launches(be, kernel);
    let out = f();
    let n = launches(be, kernel) - before;
    be.set_gemm_tuning(GemmTuning::default());
    (out, n)
}

fn tile(rows: usize) -> GemmTuning {
    GemmTuning {
        tc_rows: Some(rows),
        ..GemmTuning::default()
    }
}

/// Backward data (conv_transpose2d's forward, never split) on the tile the override names: 40 rows take the
/// 128-row tile instead of the 64-row one, 100 rows the 64-row tile (two row tiles) instead of the 128-row one,
/// with the same bits.
#[test]
fn a_tile_override_runs_that_tile_with_the_same_bits() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let p = Conv2dParams::new(2, 1);
    for precision in [Precision::Tf32, Precision::Bf16] {
        be.set_precision(precision);
        let suffix = match precision {
            Precision::Tf32 => "tf32",
            _ => "bf16",
        };
        for (c, default_tile, forced) in [(40, "", 128), (100, "_m128", 64)] {
            let xs = [2, c, 9, 9];
            let (ho, wo) = p.output_size(9, 9, 4, 4).unwrap();
            let dy = random(&be, &mut rng, &[2, 24, ho, wo]);
            let w = random(&be, &mut rng, &[24, c, 4, 4]);
            let run = || be.conv2d_backward_data(&dy, &w, xs, p).unwrap();
            let default_kernel = format!("conv2d_bwd_data{default_tile}_{suffix}");
            let (want, n) = under(&be, GemmTuning::default(), &default_kernel, run);
            assert_eq!(n, 1, "{c} rows at {precision:?}: {default_kernel}");
            let forced_kernel = match forced {
                128 => format!("conv2d_bwd_data_m128_{suffix}"),
                _ => format!("conv2d_bwd_data_{suffix}"),
            };
            let (got, n) = under(&be, tile(forced), &forced_kernel, run);
            assert_eq!(
                n, 1,
                "{c} rows at {precision:?} forced to {forced}: {forced_kernel}"
            );
            assert_eq!(
                got.to_vec().unwrap(),
                want.to_vec().unwrap(),
                "{c} rows at {precision:?} on the {forced}-row tile"
            );
        }
    }
}

/// A forward convolution whose reduction the default splits (few output tiles, K = 256): with the split target
/// at 1 block it runs unsplit, no reduction kernel, and its sums agree with the split ones within rounding.
#[test]
fn a_split_override_of_one_block_never_splits() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(62);
    let p = Conv2dParams::new(2, 1);
    be.set_precision(Precision::F32);
    let x = random(&be, &mut rng, &[2, 16, 10, 10]);
    let w = random(&be, &mut rng, &[24, 16, 4, 4]);
    let run = || be.conv2d(&x, &w, p).unwrap();
    let reduce = "conv2d_splitk_reduce_f32";
    let (split, n) = under(&be, GemmTuning::default(), reduce, run);
    assert_eq!(n, 1, "the default splits this reduction");
    let one = GemmTuning {
        split_k_blocks: Some(1),
        ..GemmTuning::default()
    };
    let (whole, n) = under(&be, one, reduce, run);
    assert_eq!(n, 0, "split at a target of 1 block");
    let (a, b) = (whole.to_vec().unwrap(), split.to_vec().unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{i}: {x} vs {y}");
    }
}
