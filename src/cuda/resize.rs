//! Launch code for kernels/resize.cu (bilinear resize, forward and gather backward; nearest upsampling; the
//! resize-convolution weight folding).

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::pool::cells_cfg;
use super::runtime::KernelArg as A;
use super::CudaBackend;
use crate::backend::{check_resize_conv_weight, check_resize_conv_weight_backward, ResizeMode};
use crate::tensor::{numel, Tensor};

/// planes, H, W, out_h, out_w, mode: the size arguments of both kernels, after the shared checks.
fn sizes(
    what: &str,
    x: [usize; 4],
    out_h: usize,
    out_w: usize,
    mode: ResizeMode,
) -> Result<Vec<A<'static>>> {
    ResizeMode::check(what, x, out_h, out_w)?;
    let [n, c, h, w] = x;
    n_i32(numel(&x), what)?;
    n_i32(numel(&[n, c, out_h, out_w]), what)?;
    let i = |v: usize| A::I32(v as i32);
    Ok(vec![
        i(n * c),
        i(h),
        i(w),
        i(out_h),
        i(out_w),
        A::I32(mode.code()),
    ])
}

pub fn resize_bilinear(
    be: &CudaBackend,
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    mode: ResizeMode,
) -> Result<Tensor> {
    let xs @ [n, c, _, _] = x.dims4("resize_bilinear x")?;
    let sizes = sizes("resize_bilinear", xs, out_h, out_w, mode)?;
    let y = be.alloc(&[n, c, out_h, out_w])?;
    if y.numel() > 0 {
        let mut args = vec![A::Ptr(be.ptr(&y)?), A::Ptr(be.ptr(x)?)];
        args.extend(sizes);
        be.launch("resize_bilinear_fwd_f32", cells_cfg(y.numel()), &args)?;
    }
    Ok(y)
}

pub fn resize_bilinear_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x_shape: [usize; 4],
    mode: ResizeMode,
) -> Result<Tensor> {
    let ds @ [dn, dc, out_h, out_w] = dy.dims4("resize_bilinear_backward dy")?;
    let sizes = sizes("resize_bilinear_backward", x_shape, out_h, out_w, mode)?;
    ensure!(
        dn == x_shape[0] && dc == x_shape[1],
        "resize_bilinear_backward: dy {ds:?} does not match the input {x_shape:?} in batch or channels"
    );
    let dx = be.alloc(&x_shape)?;
    if dx.numel() > 0 {
        let mut args = vec![A::Ptr(be.ptr(&dx)?), A::Ptr(be.ptr(dy)?)];
        args.extend(sizes);
        be.launch("resize_bilinear_bwd_f32", cells_cfg(dx.numel()), &args)?;
    }
    Ok(dx)
}

pub fn upsample_nearest(be: &CudaBackend, x: &Tensor, scale: usize) -> Result<Tensor> {
    let xs @ [n, c, h, w] = x.dims4("upsample_nearest x")?;
    let ys = ResizeMode::check_upsample("upsample_nearest", xs, scale)?;
    n_i32(numel(&ys), "upsample_nearest")?;
    nearest(be, "upsample_nearest_fwd_f32", x, &ys, [n * c, h, w], scale)
}

pub fn upsample_nearest_backward(be: &CudaBackend, dy: &Tensor, scale: usize) -> Result<Tensor> {
    let ds = dy.dims4("upsample_nearest_backward dy")?;
    let xs @ [n, c, h, w] =
        ResizeMode::check_upsample_backward("upsample_nearest_backward", ds, scale)?;
    n_i32(dy.numel(), "upsample_nearest_backward")?;
    nearest(
        be,
        "upsample_nearest_bwd_f32",
        dy,
        &xs,
        [n * c, h, w],
        scale,
    )
}

/// Launches a nearest-upsampling kernel (forward or backward) from `src` into a new tensor of shape `out`, one
/// thread per output cell; `[planes, h, w]` is the small (input) side's size.
fn nearest(
    be: &CudaBackend,
    kernel: &str,
    src: &Tensor,
    out: &[usize; 4],
    [planes, h, w]: [usize; 3],
    scale: usize,
) -> Result<Tensor> {
    let y = be.alloc(out)?;
    if y.numel() > 0 {
        let i = |v: usize| A::I32(v as i32);
        let args = [
            A::Ptr(be.ptr(&y)?),
            A::Ptr(be.ptr(src)?),
            i(planes),
            i(h),
            i(w),
            i(scale),
        ];
        be.launch(kernel, cells_cfg(y.numel()), &args)?;
    }
    Ok(y)
}

pub fn resize_conv_weight(be: &CudaBackend, w: &Tensor) -> Result<Tensor> {
    let ks @ [c, o, _, _] = check_resize_conv_weight(w.shape())?;
    weight_fold(be, "resize_conv_weight_fwd_f32", w, &ks, c, o)
}

pub fn resize_conv_weight_backward(be: &CudaBackend, dk: &Tensor) -> Result<Tensor> {
    let ws @ [o, c, _, _] = check_resize_conv_weight_backward(dk.shape())?;
    weight_fold(be, "resize_conv_weight_bwd_f32", dk, &ws, c, o)
}

/// Launches a resize-convolution weight kernel (forward or backward) from `src` into a new tensor of shape `out`,
/// one thread per output cell; `c` and `o` are the convolution's input and output channels.
fn weight_fold(
    be: &CudaBackend,
    kernel: &str,
    src: &Tensor,
    out: &[usize; 4],
    c: usize,
    o: usize,
) -> Result<Tensor> {
    n_i32(numel(out), kernel)?;
    let y = be.alloc(out)?;
    if y.numel() > 0 {
        let args = [
            A::Ptr(be.ptr(&y)?),
            A::Ptr(be.ptr(src)?),
            A::I32(c as i32),
            A::I32(o as i32),
        ];
        be.launch(kernel, cells_cfg(y.numel()), &args)?;
    }
    Ok(y)
}
