//! Bilinear resize (no antialiasing) in the coordinate conventions of [`ResizeMode`]; FID resizes its images to
//! 299×299 with [`ResizeMode::Legacy`]. Nearest-neighbour upsampling by an integer scale, and the generator's
//! resize-convolution (a 2× upsampling, then a 3×3 convolution) fused into one transposed convolution.

use anyhow::Result;

use crate::autograd::{rule, Tape, Var};
use crate::backend::{Conv2dParams, ResizeMode};
use crate::ops::conv::conv_transpose2d;
use crate::tensor::Tensor;

/// x [N, C, H, W] → [N, C, out_h, out_w], up or down.
pub fn resize_bilinear(
    tape: &mut Tape,
    x: Var,
    out_h: usize,
    out_w: usize,
    mode: ResizeMode,
) -> Result<Var> {
    let xv = tape.value(x);
    let x_shape = xv.dims4("resize_bilinear x")?;
    let y = xv.backend().resize_bilinear(xv, out_h, out_w, mode)?;
    Ok(tape.push_op(
        "bilinear resize",
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                dy.backend().resize_bilinear_backward(dy, x_shape, mode)?,
            )])
        }),
    ))
}

/// x [N, C, H, W] → [N, C, scale·H, scale·W], each cell repeated over a scale × scale block.
pub fn upsample_nearest(tape: &mut Tape, x: Var, scale: usize) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().upsample_nearest(xv, scale)?;
    Ok(tape.push_op(
        "nearest upsampling",
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                dy.backend().upsample_nearest_backward(dy, scale)?,
            )])
        }),
    ))
}

/// A 2× nearest-neighbour upsampling of x [N, C, H, W] followed by the 3×3 convolution (stride 1, padding 1) of
/// w [O, C, 3, 3] (a generator's resize-convolution, Odena et al. 2016), computed as one stride-2 transposed
/// convolution of x with the folded 4×4 weight of [`resize_conv_weight`]. The values are those of
/// `upsample_nearest(x, 2)` then `conv2d(.., w, stride 1, padding 1)` up to rounding, at 16 instead of 36
/// multiply-adds per input cell and output channel, and without the upsampled tensor.
pub fn resize_conv2d(tape: &mut Tape, x: Var, w: Var) -> Result<Var> {
    let k = resize_conv_weight(tape, w)?;
    conv_transpose2d(tape, x, k, Conv2dParams::new(2, 1), None)
}

/// w [O, C, 3, 3] → the transposed-convolution weight [C, O, 4, 4] of [`resize_conv2d`] (see
/// [`crate::backend::resize_conv_taps`]). Linear: its gradient is [`resize_conv_weight_backward`], whose gradient
/// is this op again.
pub fn resize_conv_weight(tape: &mut Tape, w: Var) -> Result<Var> {
    weight_fold(tape, w, true)
}

/// dk [C, O, 4, 4] → dw [O, C, 3, 3], the adjoint of [`resize_conv_weight`].
pub fn resize_conv_weight_backward(tape: &mut Tape, dk: Var) -> Result<Var> {
    weight_fold(tape, dk, false)
}

/// The weight folding (`to_4x4`) or its adjoint, with the other one as its gradient, both as a closure and as a
/// double-backward rule.
fn weight_fold(tape: &mut Tape, v: Var, to_4x4: bool) -> Result<Var> {
    let fold = |t: &Tensor, to_4x4: bool| match to_4x4 {
        true => t.backend().resize_conv_weight(t),
        false => t.backend().resize_conv_weight_backward(t),
    };
    let y = fold(tape.value(v), to_4x4)?;
    let name = match to_4x4 {
        true => "resize-convolution weight",
        false => "resize-convolution weight gradient",
    };
    Ok(tape.push_op_with_rule(
        name,
        y,
        &[v],
        Box::new(move |g, _need| Ok(vec![Some(fold(g, !to_4x4)?)])),
        rule(move |t, a| Ok(vec![a.grad(0, || weight_fold(t, a.dy, !to_4x4))?])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

    const MODES: [ResizeMode; 3] = [
        ResizeMode::AlignCorners,
        ResizeMode::HalfPixel,
        ResizeMode::Legacy,
    ];

    /// (input shape, output size): up, down, mixed, non-integer ratios, to and from a single row/column.
    fn cases() -> Vec<([usize; 4], (usize, usize))> {
        vec![
            ([2, 2, 3, 4], (7, 5)),
            ([1, 3, 7, 9], (4, 5)),
            ([2, 1, 5, 3], (3, 8)),
            ([1, 2, 4, 5], (1, 1)),
            ([1, 2, 1, 3], (4, 2)),
            ([1, 1, 6, 5], (6, 5)),
        ]
    }

    fn upsample_nearest_gradcheck(dev: &Device) {
        for (ci, (xs, scale)) in [([2, 2, 3, 4], 2), ([1, 3, 2, 5], 3), ([1, 1, 2, 2], 1)]
            .into_iter()
            .enumerate()
        {
            let x = test_tensor(&xs, 50 + ci as u64).to_device(dev).unwrap();
            GradCheck::default()
                .run(&[x], |t, v| upsample_nearest(t, v[0], scale))
                .unwrap_or_else(|e| panic!("case {ci} {xs:?} x{scale}: {e:#}"));
        }
    }

    test_devices!(upsample_nearest_gradients_match_finite_differences => super::upsample_nearest_gradcheck);

    #[test]
    fn upsample_nearest_by_hand() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], &Device::Cpu).unwrap();
        let mut tape = Tape::new();
        let xv = tape.leaf(x);
        let y = upsample_nearest(&mut tape, xv, 2).unwrap();
        #[rustfmt::skip]
        let want = [1.0, 1.0, 2.0, 2.0,
                    1.0, 1.0, 2.0, 2.0,
                    3.0, 3.0, 4.0, 4.0,
                    3.0, 3.0, 4.0, 4.0];
        assert_eq!(tape.value(y).to_vec().unwrap(), want);
    }

    #[test]
    fn resize_conv_weight_by_hand() {
        let w: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let w = Tensor::from_vec(w, &[1, 1, 3, 3], &Device::Cpu).unwrap();
        let mut tape = Tape::new();
        let wv = tape.leaf(w);
        let k = resize_conv_weight(&mut tape, wv).unwrap();
        // Rows of the 4x4 kernel sum the 3x3 rows {2}, {1, 2}, {0, 1}, {0}, and columns likewise.
        #[rustfmt::skip]
        let want = [ 9.0, 17.0, 15.0,  7.0,
                    15.0, 28.0, 24.0, 11.0,
                     9.0, 16.0, 12.0,  5.0,
                     3.0,  5.0,  3.0,  1.0];
        assert_eq!(tape.value(k).to_vec().unwrap(), want);
        // The gradient of the sum of all 16 taps counts, per 3x3 tap, the 4x4 taps it feeds: two per axis
        // (t = 0 feeds k = 2, 3; t = 1 feeds k = 1, 2; t = 2 feeds k = 0, 1), so four each.
        let g = tape.backward_from(k, Tensor::full(&[1, 1, 4, 4], 1.0, &Device::Cpu).unwrap());
        assert_eq!(g.unwrap().get(wv).unwrap().to_vec().unwrap(), [4.0; 9]);
    }

    /// The fused resize-convolution against its definition, nearest upsampling then the 3×3 convolution, in the
    /// values and in both gradients; odd sizes, one row, one channel.
    fn resize_conv2d_matches_upsample_then_conv(dev: &Device) {
        for (ci, (xs, cout)) in [
            ([2usize, 3, 4, 5], 4usize),
            ([1, 1, 1, 3], 2),
            ([3, 5, 3, 1], 1),
            ([2, 16, 4, 4], 8),
        ]
        .into_iter()
        .enumerate()
        {
            let x = test_tensor(&xs, 70 + ci as u64).to_device(dev).unwrap();
            let w = test_tensor(&[cout, xs[1], 3, 3], 80 + ci as u64)
                .to_device(dev)
                .unwrap();
            let dy = test_tensor(&[xs[0], cout, 2 * xs[2], 2 * xs[3]], 90 + ci as u64)
                .to_device(dev)
                .unwrap();
            let run = |fused: bool| {
                let mut tape = Tape::new();
                let (xv, wv) = (tape.leaf(x.clone()), tape.leaf(w.clone()));
                let y = match fused {
                    true => resize_conv2d(&mut tape, xv, wv).unwrap(),
                    false => {
                        let u = upsample_nearest(&mut tape, xv, 2).unwrap();
                        crate::ops::conv2d(&mut tape, u, wv, Conv2dParams::new(1, 1)).unwrap()
                    }
                };
                let yv = tape.value(y).to_vec().unwrap();
                let g = tape.backward_from(y, dy.clone()).unwrap();
                let grad = |v| g.get(v).unwrap().to_vec().unwrap();
                [yv, grad(xv), grad(wv)]
            };
            let (fused, plain) = (run(true), run(false));
            for (name, (a, b)) in ["y", "dx", "dw"].iter().zip(fused.iter().zip(&plain)) {
                assert_eq!(a.len(), b.len(), "case {ci} {name}");
                let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                // Sums of up to 36 C products in another order: a few f32 ulps of the largest value.
                assert!(
                    worst <= 1e-5 * scale,
                    "case {ci} {xs:?} {name}: off by {worst} (scale {scale})"
                );
            }
        }
    }

    test_devices!(resize_conv2d_is_upsampling_then_convolution => super::resize_conv2d_matches_upsample_then_conv);

    fn resize_conv_gradcheck(dev: &Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let gc = GradCheck::default();
        gc.run(&[t(&[2, 3, 3, 4], 1), t(&[2, 3, 3, 3], 2)], |t, v| {
            resize_conv2d(t, v[0], v[1])
        })
        .unwrap();
        // Second order through the weight folding and its adjoint (squared, so that they are not zero).
        let sq = |t: &mut Tape, y: Var| crate::ops::mul(t, y, y);
        gc.run_second_order(&[t(&[3, 2, 3, 3], 3)], |t, v| {
            let k = resize_conv_weight(t, v[0])?;
            sq(t, k)
        })
        .unwrap();
        gc.run_second_order(&[t(&[2, 3, 4, 4], 4)], |t, v| {
            let w = resize_conv_weight_backward(t, v[0])?;
            sq(t, w)
        })
        .unwrap();
    }

    test_devices!(resize_conv_gradients_match_finite_differences => super::resize_conv_gradcheck);

    test_devices!(bilinear_gradients_match_finite_differences_in_every_mode => super::bilinear_gradcheck);

    fn bilinear_gradcheck(dev: &Device) {
        for mode in MODES {
            for (ci, (xs, (oh, ow))) in cases().into_iter().enumerate() {
                let x = test_tensor(&xs, 30 + ci as u64).to_device(dev).unwrap();
                GradCheck::default()
                    .run(&[x], |t, v| resize_bilinear(t, v[0], oh, ow, mode))
                    .unwrap_or_else(|e| panic!("{mode:?} case {ci} {xs:?} -> {oh}x{ow}: {e:#}"));
            }
        }
    }

    /// Source coordinates of each convention, by hand (4 → 3 and 2 → 5 cells).
    #[test]
    fn taps_by_hand() {
        let t = |m: ResizeMode, d, i, o| {
            let t = m.tap(d, i, o);
            (t.i0, t.i1, t.frac)
        };
        // AlignCorners 4 → 3: src = 0, 1.5, 3.
        assert_eq!(t(ResizeMode::AlignCorners, 1, 4, 3), (1, 2, 0.5));
        assert_eq!(t(ResizeMode::AlignCorners, 2, 4, 3), (3, 3, 0.0));
        assert_eq!(t(ResizeMode::AlignCorners, 0, 4, 1), (0, 1, 0.0));
        // HalfPixel 2 → 5: src = (d + 0.5)·0.4 − 0.5 = −0.3 (clamped to 0), 0.1, 0.5, 0.9, 1.3 (i1 clamped).
        assert_eq!(t(ResizeMode::HalfPixel, 0, 2, 5), (0, 1, 0.0));
        assert_eq!(t(ResizeMode::HalfPixel, 2, 2, 5), (0, 1, 0.5));
        assert_eq!(t(ResizeMode::HalfPixel, 4, 2, 5), (1, 1, 0.3));
        // Legacy 2 → 5: src = 0.4·d: 1.6 for d = 4 (the right neighbour clamped to the border).
        assert_eq!(t(ResizeMode::Legacy, 4, 2, 5), (1, 1, 0.6));
        assert_eq!(t(ResizeMode::Legacy, 1, 4, 3), (1, 2, 1.0 / 3.0));
    }

    /// Output size = input size is the identity in AlignCorners, HalfPixel and Legacy alike.
    #[test]
    fn same_size_is_identity() {
        let x = test_tensor(&[2, 3, 5, 7], 4);
        for mode in MODES {
            let mut tape = Tape::no_grad();
            let xv = tape.constant(x.clone());
            let y = resize_bilinear(&mut tape, xv, 5, 7, mode).unwrap();
            assert_eq!(
                tape.value(y).to_vec().unwrap(),
                x.to_vec().unwrap(),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(test_tensor(&[1, 2, 4, 3], 1));
        let err = |r: Result<Var>| format!("{:#}", r.expect_err("expected an error"));
        let e = err(resize_bilinear(&mut tape, x, 0, 3, ResizeMode::Legacy));
        assert!(e.contains("must be positive"), "{e}");
        let e = err(resize_bilinear(
            &mut tape,
            x,
            3,
            40_000,
            ResizeMode::HalfPixel,
        ));
        assert!(e.contains("not supported"), "{e}");
        let flat = tape.leaf(test_tensor(&[2, 3], 2));
        let e = err(resize_bilinear(&mut tape, flat, 3, 3, ResizeMode::Legacy));
        assert!(e.contains("4-D"), "{e}");
        let empty = tape.leaf(Tensor::zeros(&[1, 2, 0, 4], &Device::Cpu).unwrap());
        let e = err(resize_bilinear(&mut tape, empty, 3, 3, ResizeMode::Legacy));
        assert!(e.contains("empty dimension"), "{e}");
        let dy = test_tensor(&[1, 3, 5, 5], 3);
        let e = format!(
            "{:#}",
            dy.backend()
                .resize_bilinear_backward(&dy, [1, 2, 4, 3], ResizeMode::Legacy)
                .unwrap_err()
        );
        assert!(e.contains("batch or channels"), "{e}");
    }
}
