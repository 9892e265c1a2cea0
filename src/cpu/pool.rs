//! Max and average pooling (PyTorch MaxPool2d / AvgPool2d, floor mode). Pooling never mixes planes, so each
//! (n, c) plane is one rayon task; inside a plane these are plain loops (the work is memory-bound).
//!
//! Max-pool backward recomputes each window's argmax from x instead of having the forward store indices: our
//! tensors are f32 only (an index tensor would need a new storage type, or indices smuggled through f32), the
//! tape keeps x alive either way, and the recomputation does the same comparisons in the same order, so it
//! picks exactly the cell the forward picked. The backward passes here scatter within a plane (serially, so
//! deterministically); each input cell receives its contributions in row-major output order, the order in which
//! kernels/pool.cu's gather adds them, so both backends give bit-identical gradients.

use anyhow::Result;
use rayon::prelude::*;

use super::{data, output_buffer, tensor};
use crate::backend::Pool2d;
use crate::ops::pool::PoolGeom;
use crate::tensor::{numel, Tensor};

/// Offset within the plane of the first maximum of window (oh, ow) in row-major order, and its value. Padded
/// cells count as −inf, so they never win; NaN wins (and a later NaN replaces an earlier one), as in PyTorch's
/// CPU kernel. Every window holds at least one image cell (PoolGeom's padding rule).
fn window_argmax(g: &PoolGeom, plane: &[f32], oh: usize, ow: usize) -> (usize, f32) {
    let (h0, h1) = PoolGeom::window(oh, g.kh, g.sh, g.ph, g.h);
    let (w0, w1) = PoolGeom::window(ow, g.kw, g.sw, g.pw, g.w);
    let mut best = (h0 * g.w + w0, f32::NEG_INFINITY);
    for ih in h0..h1 {
        for iw in w0..w1 {
            let v = plane[ih * g.w + iw];
            if v > best.1 || v.is_nan() {
                best = (ih * g.w + iw, v);
            }
        }
    }
    best
}

/// Divisor of window (oh, ow): kh·kw, or only the cells inside the image.
fn divisor(g: &PoolGeom, oh: usize, ow: usize, count_include_pad: bool) -> f32 {
    if count_include_pad {
        // In floor mode a window never reaches past the padding, so it always has kh·kw cells (PyTorch clips
        // to the padded extent, which only matters with ceil_mode).
        return (g.kh * g.kw) as f32;
    }
    let (h0, h1) = PoolGeom::window(oh, g.kh, g.sh, g.ph, g.h);
    let (w0, w1) = PoolGeom::window(ow, g.kw, g.sw, g.pw, g.w);
    ((h1 - h0) * (w1 - w0)) as f32
}

/// Runs `f(plane_in, plane_out)` over every (n, c) plane in parallel; the output starts NaN-poisoned in tests so a
/// skipped element shows.
fn per_plane(
    input: &[f32],
    in_plane: usize,
    out_shape: [usize; 4],
    out_plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Tensor {
    let mut out = output_buffer(numel(&out_shape));
    if out_plane > 0 && in_plane > 0 {
        out.par_chunks_mut(out_plane)
            .zip(input.par_chunks(in_plane))
            .for_each(|(o, i)| f(i, o));
    }
    tensor(out, &out_shape)
}

/// A pooling forward: output cell (oh, ow) of each plane is `cell(g, plane, oh, ow)`.
fn pool_forward(
    what: &str,
    x: &Tensor,
    p: Pool2d,
    cell: impl Fn(&PoolGeom, &[f32], usize, usize) -> f32 + Sync,
) -> Result<Tensor> {
    let g = PoolGeom::new(what, x.dims4(&format!("{what} x"))?, p)?;
    let (h, w) = (g.h, g.w);
    Ok(per_plane(
        data(x)?,
        h * w,
        g.out_shape(),
        g.ho * g.wo,
        |xp, yp| {
            for (i, y) in yp.iter_mut().enumerate() {
                *y = cell(&g, xp, i / g.wo, i % g.wo);
            }
        },
    ))
}

pub fn max_pool2d(x: &Tensor, p: Pool2d) -> Result<Tensor> {
    pool_forward("max_pool2d", x, p, |g, xp, oh, ow| {
        window_argmax(g, xp, oh, ow).1
    })
}

pub fn max_pool2d_backward(x: &Tensor, dy: &Tensor, p: Pool2d) -> Result<Tensor> {
    let g = PoolGeom::new("max_pool2d_backward", x.dims4("max_pool2d_backward x")?, p)?;
    g.check_dy("max_pool2d_backward", dy.dims4("max_pool2d_backward dy")?)?;
    let (xd, gd) = (data(x)?, data(dy)?);
    let (in_plane, out_plane) = (g.h * g.w, g.ho * g.wo);
    let mut dx = vec![0.0f32; numel(&[g.n, g.c, g.h, g.w])];
    if in_plane > 0 && out_plane > 0 {
        dx.par_chunks_mut(in_plane)
            .zip(xd.par_chunks(in_plane).zip(gd.par_chunks(out_plane)))
            .for_each(|(dxp, (xp, gp))| {
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        dxp[window_argmax(&g, xp, oh, ow).0] += gp[oh * g.wo + ow];
                    }
                }
            });
    }
    Ok(tensor(dx, &[g.n, g.c, g.h, g.w]))
}

pub fn avg_pool2d(x: &Tensor, p: Pool2d, count_include_pad: bool) -> Result<Tensor> {
    pool_forward("avg_pool2d", x, p, |g, xp, oh, ow| {
        let (h0, h1) = PoolGeom::window(oh, g.kh, g.sh, g.ph, g.h);
        let (w0, w1) = PoolGeom::window(ow, g.kw, g.sw, g.pw, g.w);
        let mut s = 0.0f32;
        for ih in h0..h1 {
            for iw in w0..w1 {
                s += xp[ih * g.w + iw];
            }
        }
        s / divisor(g, oh, ow, count_include_pad)
    })
}

pub fn avg_pool2d_backward(
    dy: &Tensor,
    x_shape: [usize; 4],
    p: Pool2d,
    count_include_pad: bool,
) -> Result<Tensor> {
    let g = PoolGeom::new("avg_pool2d_backward", x_shape, p)?;
    g.check_dy("avg_pool2d_backward", dy.dims4("avg_pool2d_backward dy")?)?;
    let gd = data(dy)?;
    let (in_plane, out_plane) = (g.h * g.w, g.ho * g.wo);
    let mut dx = vec![0.0f32; numel(&x_shape)];
    if in_plane > 0 && out_plane > 0 {
        dx.par_chunks_mut(in_plane)
            .zip(gd.par_chunks(out_plane))
            .for_each(|(dxp, gp)| {
                for oh in 0..g.ho {
                    let (h0, h1) = PoolGeom::window(oh, g.kh, g.sh, g.ph, g.h);
                    for ow in 0..g.wo {
                        let (w0, w1) = PoolGeom::window(ow, g.kw, g.sw, g.pw, g.w);
                        let share = gp[oh * g.wo + ow] / divisor(&g, oh, ow, count_include_pad);
                        for ih in h0..h1 {
                            for iw in w0..w1 {
                                dxp[ih * g.w + iw] += share;
                            }
                        }
                    }
                }
            });
    }
    Ok(tensor(dx, &x_shape))
}
