//! Bilinear resize (no antialiasing) in the coordinate conventions of [`ResizeMode`]; FID resizes its images to
//! 299×299 with [`ResizeMode::Legacy`]. Nearest-neighbour upsampling by an integer scale (a generator's
//! resize-then-convolve upsampling).

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::backend::ResizeMode;

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
