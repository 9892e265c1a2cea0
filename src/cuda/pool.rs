//! Launch code for kernels/pool.cu (max / average pooling, forward and gather backward).

use anyhow::Result;

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;
use crate::backend::Pool2d;
use crate::ops::pool::PoolGeom;
use crate::tensor::{numel, Tensor};

/// Grid-stride launch over `n` cells: a few thousand 256-thread blocks fill any GPU, the loop covers the rest.
pub(crate) fn cells_cfg(n: usize) -> LaunchCfg {
    LaunchCfg::blocks(n.div_ceil(256).min(8192) as u32, 256)
}

/// The shared checks plus the kernels' 32-bit limit, and the size arguments every pool kernel takes after its
/// pointers: planes, H, W, Ho, Wo, KH, KW, SH, SW, PH, PW.
fn geom(what: &str, x: [usize; 4], p: Pool2d) -> Result<(PoolGeom, Vec<A<'static>>)> {
    let g = PoolGeom::new(what, x, p)?;
    n_i32(numel(&x), what)?;
    n_i32(numel(&g.out_shape()), what)?;
    // The kernels form o·s − p + k and i + p in int: bound them by the padded extent plus a stride and a window.
    n_i32(g.h + 2 * g.ph + g.sh + g.kh, what)?;
    n_i32(g.w + 2 * g.pw + g.sw + g.kw, what)?;
    let i = |v: usize| A::I32(v as i32);
    let args = vec![
        i(g.n * g.c),
        i(g.h),
        i(g.w),
        i(g.ho),
        i(g.wo),
        i(g.kh),
        i(g.kw),
        i(g.sh),
        i(g.sw),
        i(g.ph),
        i(g.pw),
    ];
    Ok((g, args))
}

pub fn max_pool2d(be: &CudaBackend, x: &Tensor, p: Pool2d) -> Result<Tensor> {
    let (g, sizes) = geom("max_pool2d", x.dims4("max_pool2d x")?, p)?;
    let y = be.alloc(&g.out_shape())?;
    if y.numel() > 0 {
        let mut args = vec![A::Ptr(be.ptr(&y)?), A::Ptr(be.ptr(x)?)];
        args.extend(sizes);
        be.launch("max_pool2d_fwd_f32", cells_cfg(y.numel()), &args)?;
    }
    Ok(y)
}

pub fn max_pool2d_backward(be: &CudaBackend, x: &Tensor, dy: &Tensor, p: Pool2d) -> Result<Tensor> {
    let (g, sizes) = geom("max_pool2d_backward", x.dims4("max_pool2d_backward x")?, p)?;
    g.check_dy("max_pool2d_backward", dy.dims4("max_pool2d_backward dy")?)?;
    let dx = be.alloc(x.shape())?;
    if dx.numel() > 0 {
        let mut args = vec![
            A::Ptr(be.ptr(&dx)?),
            A::Ptr(be.ptr(x)?),
            A::Ptr(be.ptr(dy)?),
        ];
        args.extend(sizes);
        be.launch("max_pool2d_bwd_f32", cells_cfg(dx.numel()), &args)?;
    }
    Ok(dx)
}

pub fn avg_pool2d(
    be: &CudaBackend,
    x: &Tensor,
    p: Pool2d,
    count_include_pad: bool,
) -> Result<Tensor> {
    let (g, sizes) = geom("avg_pool2d", x.dims4("avg_pool2d x")?, p)?;
    let y = be.alloc(&g.out_shape())?;
    if y.numel() > 0 {
        let mut args = vec![A::Ptr(be.ptr(&y)?), A::Ptr(be.ptr(x)?)];
        args.extend(sizes);
        args.push(A::I32(count_include_pad as i32));
        be.launch("avg_pool2d_fwd_f32", cells_cfg(y.numel()), &args)?;
    }
    Ok(y)
}

pub fn avg_pool2d_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x_shape: [usize; 4],
    p: Pool2d,
    count_include_pad: bool,
) -> Result<Tensor> {
    let (g, sizes) = geom("avg_pool2d_backward", x_shape, p)?;
    g.check_dy("avg_pool2d_backward", dy.dims4("avg_pool2d_backward dy")?)?;
    let dx = be.alloc(&x_shape)?;
    if dx.numel() > 0 {
        let mut args = vec![A::Ptr(be.ptr(&dx)?), A::Ptr(be.ptr(dy)?)];
        args.extend(sizes);
        args.push(A::I32(count_include_pad as i32));
        be.launch("avg_pool2d_bwd_f32", cells_cfg(dx.numel()), &args)?;
    }
    Ok(dx)
}
