//! max_pool2d and avg_pool2d (PyTorch semantics, floor mode), the pooling layers of InceptionV3.
//!
//! Max pooling saves its input, not argmax indices: the backward recomputes each window's first maximum from x
//! (see src/cpu/pool.rs for why). Average pooling saves nothing but the input's shape.

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::backend::Pool2d;

/// x [N, C, H, W] → [N, C, Ho, Wo]. Padded cells never win; the gradient of each output goes to the first
/// maximum of its window in row-major order.
pub fn max_pool2d(tape: &mut Tape, x: Var, p: Pool2d) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().max_pool2d(xv, p)?;
    let saved_x = xv.clone();
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                dy.backend().max_pool2d_backward(&saved_x, dy, p)?,
            )])
        }),
    ))
}

/// x [N, C, H, W] → [N, C, Ho, Wo]. `count_include_pad`: divide every window by kh·kw (PyTorch's default), or
/// only by its cells inside the image (what InceptionV3's FID graph uses).
pub fn avg_pool2d(tape: &mut Tape, x: Var, p: Pool2d, count_include_pad: bool) -> Result<Var> {
    let xv = tape.value(x);
    let x_shape = xv.dims4("avg_pool2d x")?;
    let y = xv.backend().avg_pool2d(xv, p, count_include_pad)?;
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(dy.backend().avg_pool2d_backward(
                dy,
                x_shape,
                p,
                count_include_pad,
            )?)])
        }),
    ))
}
