//! Bilinear resize of NCHW images (no antialiasing), in the three coordinate conventions of [`ResizeMode`],
//! nearest-neighbour upsampling by an integer scale, and the weight folding that runs a 2× nearest upsampling and
//! a 3×3 convolution as one transposed convolution.
//! The interpolation is separable: each output row reads two input rows and each output column two input
//! columns, with the taps from [`ResizeMode::tap`] (shared with kernels/resize.cu). One rayon task per (n, c)
//! plane; the backward scatters within a plane, serially, so it is deterministic.

use anyhow::Result;
use rayon::prelude::*;

use super::{data, output_buffer, tensor};
use crate::backend::{
    check_resize_conv_weight, check_resize_conv_weight_backward, resize_conv_taps, ResizeMode,
    ResizeTap,
};
use crate::tensor::{numel, Tensor};

fn taps(mode: ResizeMode, len_in: usize, len_out: usize) -> Vec<ResizeTap> {
    (0..len_out).map(|d| mode.tap(d, len_in, len_out)).collect()
}

pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize, mode: ResizeMode) -> Result<Tensor> {
    let xs @ [n, c, h, w] = x.dims4("resize_bilinear x")?;
    ResizeMode::check("resize_bilinear", xs, out_h, out_w)?;
    let (ty, tx) = (taps(mode, h, out_h), taps(mode, w, out_w));
    let xd = data(x)?;
    let mut y = output_buffer(numel(&[n, c, out_h, out_w]));
    if n > 0 {
        y.par_chunks_mut(out_h * out_w)
            .zip(xd.par_chunks(h * w))
            .for_each(|(yp, xp)| {
                for (oy, a) in ty.iter().enumerate() {
                    let (r0, r1) = (&xp[a.i0 * w..][..w], &xp[a.i1 * w..][..w]);
                    for (ox, b) in tx.iter().enumerate() {
                        // PyTorch's grouping: blend along x within each row, then the two rows.
                        let top = (1.0 - b.frac) * r0[b.i0] + b.frac * r0[b.i1];
                        let bot = (1.0 - b.frac) * r1[b.i0] + b.frac * r1[b.i1];
                        yp[oy * out_w + ox] = (1.0 - a.frac) * top + a.frac * bot;
                    }
                }
            });
    }
    Ok(tensor(y, &[n, c, out_h, out_w]))
}

pub fn resize_bilinear_backward(
    dy: &Tensor,
    x_shape: [usize; 4],
    mode: ResizeMode,
) -> Result<Tensor> {
    let [n, c, h, w] = x_shape;
    let ds @ [dn, dc, out_h, out_w] = dy.dims4("resize_bilinear_backward dy")?;
    ResizeMode::check("resize_bilinear_backward", x_shape, out_h, out_w)?;
    anyhow::ensure!(
        dn == n && dc == c,
        "resize_bilinear_backward: dy {ds:?} does not match the input {x_shape:?} in batch or channels"
    );
    let (ty, tx) = (taps(mode, h, out_h), taps(mode, w, out_w));
    let gd = data(dy)?;
    let mut dx = vec![0.0f32; numel(&x_shape)];
    if n > 0 {
        dx.par_chunks_mut(h * w)
            .zip(gd.par_chunks(out_h * out_w))
            .for_each(|(dxp, gp)| {
                for (oy, a) in ty.iter().enumerate() {
                    for (ox, b) in tx.iter().enumerate() {
                        let g = gp[oy * out_w + ox];
                        // The adjoint of the forward's four products; when a tap is clamped at the border
                        // (i0 == i1) both of its weights land on the same cell, as they should.
                        let (top, bot) = ((1.0 - a.frac) * g, a.frac * g);
                        dxp[a.i0 * w + b.i0] += (1.0 - b.frac) * top;
                        dxp[a.i0 * w + b.i1] += b.frac * top;
                        dxp[a.i1 * w + b.i0] += (1.0 - b.frac) * bot;
                        dxp[a.i1 * w + b.i1] += b.frac * bot;
                    }
                }
            });
    }
    Ok(tensor(dx, &x_shape))
}

pub fn upsample_nearest(x: &Tensor, scale: usize) -> Result<Tensor> {
    let xs @ [_, _, h, w] = x.dims4("upsample_nearest x")?;
    let ys = ResizeMode::check_upsample("upsample_nearest", xs, scale)?;
    let xd = data(x)?;
    let mut y = output_buffer(numel(&ys));
    if !y.is_empty() {
        y.par_chunks_mut(ys[2] * ys[3])
            .zip(xd.par_chunks(h * w))
            .for_each(|(yp, xp)| {
                for (oy, row) in yp.chunks_mut(ys[3]).enumerate() {
                    let src = &xp[(oy / scale) * w..][..w];
                    for (ox, v) in row.iter_mut().enumerate() {
                        *v = src[ox / scale];
                    }
                }
            });
    }
    Ok(tensor(y, &ys))
}

pub fn upsample_nearest_backward(dy: &Tensor, scale: usize) -> Result<Tensor> {
    let ds @ [_, _, oh, ow] = dy.dims4("upsample_nearest_backward dy")?;
    let xs = ResizeMode::check_upsample_backward("upsample_nearest_backward", ds, scale)?;
    let gd = data(dy)?;
    let mut dx = output_buffer(numel(&xs));
    if !dx.is_empty() {
        dx.par_chunks_mut(xs[2] * xs[3])
            .zip(gd.par_chunks(oh * ow))
            .for_each(|(dxp, gp)| {
                for (i, v) in dxp.iter_mut().enumerate() {
                    let (iy, ix) = (i / xs[3], i % xs[3]);
                    // The block's cells in row-major order (kernels/resize.cu sums in the same order).
                    let mut acc = 0.0f32;
                    for r in 0..scale {
                        for s in 0..scale {
                            acc += gp[(iy * scale + r) * ow + ix * scale + s];
                        }
                    }
                    *v = acc;
                }
            });
    }
    Ok(tensor(dx, &xs))
}

/// The resize-convolution's 4×4 transposed-convolution weight [C, O, 4, 4] from the 3×3 weight [O, C, 3, 3] (see
/// [`resize_conv_taps`]).
pub fn resize_conv_weight(w: &Tensor) -> Result<Tensor> {
    let ks @ [c, o, _, _] = check_resize_conv_weight(w.shape())?;
    Ok(tensor(resize_conv_fold(data(w)?, c, o, true), &ks))
}

/// dw [O, C, 3, 3] from dk [C, O, 4, 4], the adjoint of [`resize_conv_weight`].
pub fn resize_conv_weight_backward(dk: &Tensor) -> Result<Tensor> {
    let ws @ [o, c, _, _] = check_resize_conv_weight_backward(dk.shape())?;
    Ok(tensor(resize_conv_fold(data(dk)?, o, c, false), &ws))
}

/// dst [rows, cols, taps] from src [cols, rows, taps'], 4×4 taps from 3×3 ones (`to_4x4`) or back: each dst cell
/// sums, in order, the src taps of the transposed plane that [`resize_conv_taps`] links it to (kernels/resize.cu
/// sums in the same order).
fn resize_conv_fold(src: &[f32], rows: usize, cols: usize, to_4x4: bool) -> Vec<f32> {
    let (nd, ns) = if to_4x4 { (16, 9) } else { (9, 16) };
    let mut dst = output_buffer(rows * cols * nd);
    dst.par_chunks_mut(nd).enumerate().for_each(|(plane, out)| {
        let s = &src[((plane % cols) * rows + plane / cols) * ns..][..ns];
        for (d, v) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (j, x) in s.iter().enumerate() {
                let (k, t) = if to_4x4 { (d, j) } else { (j, d) }; // the 4×4 tap and the 3×3 tap
                if resize_conv_taps(k / 4, t / 3) && resize_conv_taps(k % 4, t % 3) {
                    acc += x;
                }
            }
            *v = acc;
        }
    });
    dst
}
