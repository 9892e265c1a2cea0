//! Bilinear resize (no antialiasing) in the coordinate conventions of [`ResizeMode`]; FID resizes its images to
//! 299×299 with [`ResizeMode::Legacy`].

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
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                dy.backend().resize_bilinear_backward(dy, x_shape, mode)?,
            )])
        }),
    ))
}
