//! Pooling, bilinear-resize, nearest-upsampling and resize-convolution weight kernels (kernels/pool.cu,
//! kernels/resize.cu) through their launch code on the emulated CUDA backend, against the CPU backend, on random
//! inputs of awkward sizes (odd, unequal H and W; padding; strides that drop the last row; asymmetric windows; up-
//! and downsampling by non-integer ratios).
//! Outputs come from the backend's allocator, which fills them with NaN in test builds, so an element a kernel
//! forgets to write fails the comparison.
//!
//! Every comparison is bit for bit: the kernels do the CPU's arithmetic in the CPU's order (the backward gathers
//! visit outputs in the order the CPU scatters them; resize.cu blocks FMA contraction), see the kernel headers.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::backend::{Backend, Pool2d, ResizeMode};
use gan_engine::cpu::CPU;
use gan_engine::cuda::runtime::kernels;
use gan_engine::cuda::{cuda_backend, emulated_backend, CudaBackend};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn be() -> Arc<CudaBackend> {
    match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            cuda_backend(0).expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open")
        }
        _ => emulated_backend().expect("the emulated CUDA backend must open"),
    }
}

/// The same random data on the CPU and on the device under test.
fn pair(be: &Arc<CudaBackend>, rng: &mut ChaCha8Rng, shape: [usize; 4]) -> (Tensor, Tensor) {
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    (
        CPU.from_host(&v, &shape).unwrap(),
        be.from_host(&v, &shape).unwrap(),
    )
}

/// Bit-identical (NaN never equals, so an unwritten element fails).
fn assert_exact(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec().unwrap(), want.to_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

fn pool(k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> Pool2d {
    Pool2d {
        kernel: k,
        stride: s,
        padding: p,
    }
}

fn pool_cases() -> Vec<([usize; 4], Pool2d)> {
    vec![
        ([2, 3, 17, 13], Pool2d::new(3, 2, 0)), // InceptionV3's max pools (stride drops a column)
        ([3, 5, 9, 11], Pool2d::new(3, 1, 1)),  // InceptionV3's branch average pools
        ([2, 7, 8, 8], Pool2d::new(8, 1, 0)),   // the final global average pool
        ([1, 3, 10, 7], pool((1, 3), (1, 2), (0, 1))),
        ([2, 2, 7, 12], pool((3, 1), (2, 1), (1, 0))),
        ([1, 4, 15, 9], pool((4, 3), (3, 2), (2, 1))),
        ([5, 1, 1, 1], Pool2d::new(1, 1, 0)),
        ([1, 1, 2, 3], Pool2d::new(2, 1, 1)),
    ]
}

#[test]
fn max_pool2d_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    for (ci, (xs, p)) in pool_cases().into_iter().enumerate() {
        let what = format!("case {ci} {xs:?} {p:?}");
        let (xc, xg) = pair(&be, &mut rng, xs);
        let yc = CPU.max_pool2d(&xc, p).unwrap();
        let yg = be.max_pool2d(&xg, p).unwrap();
        assert_exact(&format!("max_pool2d {what}"), &yg, &yc);
        let ys: [usize; 4] = yc.shape().try_into().unwrap();
        let (dyc, dyg) = pair(&be, &mut rng, ys);
        assert_exact(
            &format!("max_pool2d_backward {what}"),
            &be.max_pool2d_backward(&xg, &dyg, p).unwrap(),
            &CPU.max_pool2d_backward(&xc, &dyc, p).unwrap(),
        );
    }
}

/// Ties (a quantised input, so windows hold equal maxima) and a NaN: the first maximum wins on both backends,
/// and a NaN propagates to every window that holds it.
#[test]
fn max_pool2d_ties_and_nan_match_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(62);
    let xs = [2, 3, 9, 10];
    let mut v: Vec<f32> = (0..xs.iter().product::<usize>())
        .map(|_| rng.gen_range(0..3) as f32)
        .collect();
    v[17] = f32::NAN;
    let (xc, xg) = (
        CPU.from_host(&v, &xs).unwrap(),
        be.from_host(&v, &xs).unwrap(),
    );
    for p in [Pool2d::new(3, 2, 1), Pool2d::new(2, 1, 0)] {
        let yc = CPU.max_pool2d(&xc, p).unwrap();
        let yg = be.max_pool2d(&xg, p).unwrap();
        // NaN == NaN bitwise here: the only NaNs are the windows holding v[17] (same bits on both sides).
        assert_exact(&format!("max_pool2d ties {p:?}"), &yg, &yc);
        let nan_count = yc.to_vec().unwrap().iter().filter(|v| v.is_nan()).count();
        assert!(nan_count >= 1, "the NaN must reach the output");
        let ys: [usize; 4] = yc.shape().try_into().unwrap();
        let (dyc, dyg) = pair(&be, &mut rng, ys);
        assert_exact(
            &format!("max_pool2d_backward ties {p:?}"),
            &be.max_pool2d_backward(&xg, &dyg, p).unwrap(),
            &CPU.max_pool2d_backward(&xc, &dyc, p).unwrap(),
        );
    }
}

#[test]
fn avg_pool2d_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(63);
    for (ci, (xs, p)) in pool_cases().into_iter().enumerate() {
        for cip in [false, true] {
            let what = format!("case {ci} {xs:?} {p:?} count_include_pad {cip}");
            let (xc, xg) = pair(&be, &mut rng, xs);
            let yc = CPU.avg_pool2d(&xc, p, cip).unwrap();
            assert_exact(
                &format!("avg_pool2d {what}"),
                &be.avg_pool2d(&xg, p, cip).unwrap(),
                &yc,
            );
            let ys: [usize; 4] = yc.shape().try_into().unwrap();
            let (dyc, dyg) = pair(&be, &mut rng, ys);
            assert_exact(
                &format!("avg_pool2d_backward {what}"),
                &be.avg_pool2d_backward(&dyg, xs, p, cip).unwrap(),
                &CPU.avg_pool2d_backward(&dyc, xs, p, cip).unwrap(),
            );
        }
    }
}

#[test]
fn resize_bilinear_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(64);
    let cases: [([usize; 4], (usize, usize)); 7] = [
        ([1, 3, 32, 32], (299, 299)), // FID: a 32×32 DCGAN sample up to Inception's input
        ([2, 3, 13, 7], (5, 11)),
        ([1, 2, 9, 9], (4, 4)),
        ([3, 1, 1, 5], (3, 1)),
        ([1, 1, 6, 6], (6, 6)),
        ([2, 2, 5, 17], (12, 3)),
        ([1, 1, 40, 3], (7, 29)),
    ];
    for mode in [
        ResizeMode::AlignCorners,
        ResizeMode::HalfPixel,
        ResizeMode::Legacy,
    ] {
        for (xs, (oh, ow)) in cases {
            let what = format!("{mode:?} {xs:?} -> {oh}x{ow}");
            let (xc, xg) = pair(&be, &mut rng, xs);
            assert_exact(
                &format!("resize_bilinear {what}"),
                &be.resize_bilinear(&xg, oh, ow, mode).unwrap(),
                &CPU.resize_bilinear(&xc, oh, ow, mode).unwrap(),
            );
            let (dyc, dyg) = pair(&be, &mut rng, [xs[0], xs[1], oh, ow]);
            assert_exact(
                &format!("resize_bilinear_backward {what}"),
                &be.resize_bilinear_backward(&dyg, xs, mode).unwrap(),
                &CPU.resize_bilinear_backward(&dyc, xs, mode).unwrap(),
            );
        }
    }
}

/// Both backends refuse the same bad shapes with the same messages.
#[test]
fn bad_shapes_are_errors_on_both_backends() {
    let be = be();
    let backends: [(&str, &dyn Backend); 2] = [("cpu", &CPU), ("gpu", be.as_ref())];
    for (name, b) in backends {
        let x = b.zeros(&[1, 2, 4, 3]).unwrap();
        let err = |r: anyhow::Result<Tensor>| format!("{:#}", r.expect_err("expected an error"));
        let e = err(b.max_pool2d(&x, Pool2d::new(5, 1, 0)));
        assert!(e.contains("larger than the padded input"), "{name}: {e}");
        let e = err(b.avg_pool2d(&x, pool((3, 3), (1, 1), (2, 0)), true));
        assert!(e.contains("at most half"), "{name}: {e}");
        let dy = b.zeros(&[1, 2, 3, 3]).unwrap();
        let e = err(b.max_pool2d_backward(&x, &dy, Pool2d::new(2, 2, 0)));
        assert!(e.contains("dy has shape"), "{name}: {e}");
        let e = err(b.avg_pool2d_backward(&dy, [1, 2, 4, 3], Pool2d::new(2, 2, 0), false));
        assert!(e.contains("dy has shape"), "{name}: {e}");
        let e = err(b.resize_bilinear(&x, 0, 5, ResizeMode::Legacy));
        assert!(e.contains("must be positive"), "{name}: {e}");
        let e = err(b.resize_bilinear_backward(&dy, [2, 2, 4, 3], ResizeMode::HalfPixel));
        assert!(e.contains("batch or channels"), "{name}: {e}");
        let flat = b.zeros(&[4, 3]).unwrap();
        let e = err(b.resize_bilinear(&flat, 2, 2, ResizeMode::AlignCorners));
        assert!(e.contains("4-D"), "{name}: {e}");
    }
}

/// An empty batch gives empty outputs without launching anything.
#[test]
fn empty_batch() {
    let be = be();
    let x = be.zeros(&[0, 3, 5, 5]).unwrap();
    assert_eq!(
        be.max_pool2d(&x, Pool2d::new(3, 2, 0)).unwrap().shape(),
        &[0, 3, 2, 2]
    );
    assert_eq!(
        be.avg_pool2d_backward(
            &be.zeros(&[0, 3, 2, 2]).unwrap(),
            [0, 3, 5, 5],
            Pool2d::new(3, 2, 0),
            true
        )
        .unwrap()
        .shape(),
        &[0, 3, 5, 5]
    );
    assert_eq!(
        be.resize_bilinear(&x, 7, 2, ResizeMode::Legacy)
            .unwrap()
            .shape(),
        &[0, 3, 7, 2]
    );
}

/// Every kernel of pool.cu and resize.cu is in the build and is reached by its Backend method.
#[test]
fn kernel_coverage() {
    let be = be();
    let x = be.zeros(&[1, 2, 5, 4]).unwrap();
    let p = Pool2d::new(3, 1, 1);
    let y = be.max_pool2d(&x, p).unwrap();
    be.max_pool2d_backward(&x, &y, p).unwrap();
    let y = be.avg_pool2d(&x, p, false).unwrap();
    be.avg_pool2d_backward(&y, [1, 2, 5, 4], p, false).unwrap();
    let y = be.resize_bilinear(&x, 3, 7, ResizeMode::Legacy).unwrap();
    be.resize_bilinear_backward(&y, [1, 2, 5, 4], ResizeMode::Legacy)
        .unwrap();
    let y = be.upsample_nearest(&x, 2).unwrap();
    be.upsample_nearest_backward(&y, 2).unwrap();
    let k = be
        .resize_conv_weight(&be.zeros(&[2, 3, 3, 3]).unwrap())
        .unwrap();
    be.resize_conv_weight_backward(&k).unwrap();
    let mine: Vec<_> = kernels()
        .iter()
        .filter(|k| (k.module == "pool" || k.module == "resize") && !k.emu_only)
        .map(|k| k.name)
        .collect();
    assert_eq!(mine.len(), 10, "pool.cu + resize.cu kernels: {mine:?}");
    if !be.is_emulated() {
        return;
    }
    let launched = be.runtime().launch_counts();
    for k in mine {
        assert!(
            launched.iter().any(|(n, _)| *n == k),
            "{k} never launched by its Backend method"
        );
    }
}

/// The tape ops on the device under test against finite differences: the kernels' backward passes are the
/// gradients of their forward passes (not only equal to the CPU's).
#[test]
fn gradcheck_on_device() {
    use gan_engine::ops::{self, gradcheck::GradCheck};
    let dev = be().device();
    let on_dev = |shape: &[usize], v: Vec<f32>| Tensor::from_vec(v, shape, &dev).unwrap();
    // Distinct values 0.05 apart, so the ±1e-2 probes never change a window's maximum.
    let xs = [1, 2, 7, 6];
    let n: usize = xs.iter().product();
    let distinct: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 * 0.05 - 2.0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(65);
    let random: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let check = GradCheck::default();
    let p = Pool2d::new(3, 2, 1);
    check
        .run(&[on_dev(&xs, distinct)], |t, v| ops::max_pool2d(t, v[0], p))
        .unwrap();
    for cip in [false, true] {
        check
            .run(&[on_dev(&xs, random.clone())], |t, v| {
                ops::avg_pool2d(t, v[0], pool((2, 3), (1, 2), (1, 1)), cip)
            })
            .unwrap();
    }
    for mode in [
        ResizeMode::AlignCorners,
        ResizeMode::HalfPixel,
        ResizeMode::Legacy,
    ] {
        for (oh, ow) in [(9, 4), (3, 11)] {
            check
                .run(&[on_dev(&xs, random.clone())], |t, v| {
                    ops::resize_bilinear(t, v[0], oh, ow, mode)
                })
                .unwrap_or_else(|e| panic!("{mode:?} -> {oh}x{ow}: {e:#}"));
        }
    }
}

/// The resize-convolution's weight folding and its adjoint, from one channel to a DCGAN layer's 256 x 128 (more
/// cells than one block of threads covers), bit for bit; wrong shapes are refused.
#[test]
fn resize_conv_weight_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (o, c) in [(1usize, 1usize), (4, 3), (3, 7), (128, 256)] {
        let (wc, wg) = pair(&be, &mut rng, [o, c, 3, 3]);
        let (dkc, dkg) = pair(&be, &mut rng, [c, o, 4, 4]);
        assert_exact(
            &format!("resize_conv_weight {o}x{c}"),
            &be.resize_conv_weight(&wg).unwrap(),
            &CPU.resize_conv_weight(&wc).unwrap(),
        );
        assert_exact(
            &format!("resize_conv_weight_backward {o}x{c}"),
            &be.resize_conv_weight_backward(&dkg).unwrap(),
            &CPU.resize_conv_weight_backward(&dkc).unwrap(),
        );
    }
    let w = be.zeros(&[2, 3, 4, 4]).unwrap();
    let e = be.resize_conv_weight(&w).unwrap_err().to_string();
    assert!(e.contains("3x3 convolution weight"), "{e}");
    let dk = be.zeros(&[2, 3, 3, 3]).unwrap();
    assert!(be.resize_conv_weight_backward(&dk).is_err());
}

#[test]
fn upsample_nearest_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (xs, scale) in [
        ([2usize, 3, 4, 4], 2usize),
        ([1, 5, 7, 3], 2),
        ([3, 2, 5, 6], 3),
        ([1, 1, 1, 1], 4),
        ([2, 4, 3, 5], 1),
        ([64, 3, 8, 8], 2),
    ] {
        let what = format!("{xs:?} x{scale}");
        let ys = [xs[0], xs[1], xs[2] * scale, xs[3] * scale];
        let (xc, xg) = pair(&be, &mut rng, xs);
        let (dyc, dyg) = pair(&be, &mut rng, ys);
        assert_exact(
            &format!("upsample_nearest {what}"),
            &be.upsample_nearest(&xg, scale).unwrap(),
            &CPU.upsample_nearest(&xc, scale).unwrap(),
        );
        assert_exact(
            &format!("upsample_nearest_backward {what}"),
            &be.upsample_nearest_backward(&dyg, scale).unwrap(),
            &CPU.upsample_nearest_backward(&dyc, scale).unwrap(),
        );
    }
    let x = be.zeros(&[1, 1, 2, 2]).unwrap();
    assert!(be.upsample_nearest(&x, 0).is_err(), "scale 0 is refused");
    let dy = be.zeros(&[1, 1, 3, 4]).unwrap();
    assert!(
        be.upsample_nearest_backward(&dy, 2).is_err(),
        "3 rows are not an upsampling by 2"
    );
}
