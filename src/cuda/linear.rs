//! Linear-layer launch code for `kernels/linear.cu`: y = x wᵀ + b with x [N, in], w [out, in], b [out], and
//! its gradients. Every product is the one tiled SGEMM of linear.cu reading its operands in place; a small
//! output with a long reduction (batch 64 against 12288 features) is split along K over grid.z and the
//! partials summed in order by `linear_splitk_reduce_f32` (deterministic, see conv.rs's `split_k`).
//!
//! At the 16-bit precisions (bf16, fp16) the three products run instead on conv.cu's tensor-core kernels as
//! 1x1 convolutions of 1x1 images (x [N, in, 1, 1], w [out, in, 1, 1]: the same GEMMs over the same memory), so
//! linear layers round their operands as the convolutions do; the bias is added by the reduction kernel.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::conv::{self, reduce_cfg, split_k};
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::backend::{Conv2dParams, LinearGrads, LinearNeed};
use crate::tensor::Tensor;

const THREADS: u32 = 256;
/// Output tile of linear.cu's GEMM kernels.
const TILE: usize = 64;

/// [N, in] input against an [out, in] weight.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    inp: usize,
    out: usize,
}

impl Geom {
    fn new(what: &str, x: &Tensor, w: &Tensor) -> Result<Geom> {
        let [n, inp] = x.dims2(&format!("{what} x"))?;
        let [out, w_in] = w.dims2(&format!("{what} w"))?;
        ensure!(
            inp == w_in,
            "{what}: x {:?} has {inp} features but the weight {:?} expects {w_in}",
            x.shape(),
            w.shape()
        );
        n_i32(x.numel(), what)?;
        n_i32(w.numel(), what)?;
        n_i32(n * out, what)?;
        Ok(Geom { n, inp, out })
    }

    /// Whether the products run as 1x1 convolutions on the tensor-core kernels (module docs): at a 16-bit
    /// precision, for non-empty shapes.
    fn as_conv(&self, be: &CudaBackend) -> bool {
        be.precision().is_half() && self.n > 0 && self.inp > 0 && self.out > 0
    }

    /// x [N, in] and w [out, in] as the 1x1 convolution's [N, in, 1, 1] and [out, in, 1, 1].
    fn conv_shapes(&self) -> ([usize; 4], [usize; 4]) {
        ([self.n, self.inp, 1, 1], [self.out, self.inp, 1, 1])
    }
}

const UNIT: Conv2dParams = Conv2dParams {
    stride: (1, 1),
    padding: (0, 0),
};

/// The three products of linear.cu, each one GEMM kernel.
#[derive(Clone, Copy)]
enum Product<'a> {
    /// y = x · wᵀ (+ bias).
    Forward(Option<&'a Tensor>),
    /// dx = dy · w.
    BackwardData,
    /// dw = dyᵀ · x.
    BackwardWeight,
}

impl Product<'_> {
    fn kernel(&self) -> &'static str {
        match self {
            Product::Forward(_) => "linear_fwd_f32",
            Product::BackwardData => "linear_bwd_data_f32",
            Product::BackwardWeight => "linear_bwd_weight_f32",
        }
    }

    /// GEMM extents (rows, columns, reduction) of the product.
    fn dims(&self, g: &Geom) -> (usize, usize, usize) {
        match self {
            Product::Forward(_) => (g.n, g.out, g.inp),
            Product::BackwardData => (g.n, g.inp, g.out),
            Product::BackwardWeight => (g.out, g.inp, g.n),
        }
    }
}

/// out = the product of the two operand tensors `inputs` (in kernel argument order), with split-K when the
/// output tiles alone cannot fill the GPU.
fn gemm(
    be: &CudaBackend,
    g: &Geom,
    product: Product<'_>,
    inputs: [&Tensor; 2],
    out: &Tensor,
) -> Result<()> {
    let kernel = product.kernel();
    let (m, cols, k) = product.dims(g);
    let tiles = m.div_ceil(TILE) * cols.div_ceil(TILE);
    let (splits, k_chunk) = split_k(be, tiles, k);
    let ws = if splits > 1 {
        Some(be.alloc(&[splits, m * cols])?)
    } else {
        None
    };
    let cfg = LaunchCfg {
        grid: (
            cols.div_ceil(TILE) as u32,
            m.div_ceil(TILE) as u32,
            splits as u32,
        ),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    };
    let i = |v: usize| KernelArg::I32(v as i32);
    let bias = match product {
        Product::Forward(b) => b,
        _ => None,
    };
    let bias_ptr = bias.map(|b| be.ptr(b)).transpose()?.unwrap_or(0);

    let mut args = vec![
        KernelArg::Ptr(be.ptr(inputs[0])?),
        KernelArg::Ptr(be.ptr(inputs[1])?),
    ];
    if let Product::Forward(_) = product {
        args.push(KernelArg::Ptr(bias_ptr));
    }
    args.push(KernelArg::Ptr(be.ptr(ws.as_ref().unwrap_or(out))?));
    args.extend([i(g.n), i(g.out), i(g.inp), i(k_chunk)]);
    if let Product::Forward(_) = product {
        args.push(i(bias.is_some() as usize));
    }
    be.launch(kernel, cfg, &args)?;

    if let Some(ws) = ws {
        be.launch(
            "linear_splitk_reduce_f32",
            reduce_cfg(m * cols),
            &[
                KernelArg::Ptr(be.ptr(&ws)?),
                KernelArg::Ptr(bias_ptr),
                KernelArg::Ptr(be.ptr(out)?),
                i(m),
                i(cols),
                i(splits),
                i(bias.is_some() as usize),
            ],
        )?;
    }
    Ok(())
}

/// out [m, cols] = a [m, k] · b [k, cols], all three row-major and contiguous: the backward-data product of a
/// layer with `k` outputs and `cols` inputs, for callers whose operands have that layout under other shapes
/// (conv2d's backward data when the output is 1x1 and covers the input). Sizes are the caller's to validate.
pub(crate) fn matmul(
    be: &CudaBackend,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    (m, k, cols): (usize, usize, usize),
) -> Result<()> {
    let g = Geom {
        n: m,
        inp: cols,
        out: k,
    };
    gemm(be, &g, Product::BackwardData, [a, b], out)
}

/// y [N, out] = x [N, in] · wᵀ (+ b).
pub fn linear(be: &CudaBackend, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let g = Geom::new("linear", x, w)?;
    if let Some(b) = b {
        ensure!(
            b.shape() == [g.out],
            "linear: bias has shape {:?}, expected [{}]",
            b.shape(),
            g.out
        );
    }
    if g.as_conv(be) {
        let (xs, ws) = g.conv_shapes();
        let (prod, _) = conv::conv2d(be, &x.reshape(&xs)?, &w.reshape(&ws)?, UNIT, false, None)?;
        let Some(b) = b else {
            return prod.reshape(&[g.n, g.out]);
        };
        let y = be.alloc(&[g.n, g.out])?;
        let i = |v: usize| KernelArg::I32(v as i32);
        be.launch(
            "linear_splitk_reduce_f32",
            reduce_cfg(y.numel()),
            &[
                KernelArg::Ptr(be.ptr(&prod)?),
                KernelArg::Ptr(be.ptr(b)?),
                KernelArg::Ptr(be.ptr(&y)?),
                i(g.n),
                i(g.out),
                i(1),
                i(1),
            ],
        )?;
        return Ok(y);
    }
    let y = be.alloc(&[g.n, g.out])?;
    if y.numel() == 0 {
        return Ok(y);
    }
    gemm(be, &g, Product::Forward(b), [x, w], &y)?;
    Ok(y)
}

/// Gradients of [`linear`]: dx = dy · w, dw = dyᵀ · x, db = Σ_rows dy; only the requested ones.
pub fn linear_backward(
    be: &CudaBackend,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need: LinearNeed,
) -> Result<LinearGrads> {
    let (need_dx, need_dw, need_db) = (need.dx, need.dw, need.db);
    let what = "linear_backward";
    let g = Geom::new(what, x, w)?;
    ensure!(
        dy.shape() == [g.n, g.out],
        "{what}: dy has shape {:?}, expected [{}, {}]",
        dy.shape(),
        g.n,
        g.out
    );
    let (xs, ws) = g.conv_shapes();
    let dy4 = || dy.reshape(&[g.n, g.out, 1, 1]);
    let dx = if need_dx && g.as_conv(be) {
        let (dx, _) =
            conv::conv2d_backward_data(be, &dy4()?, &w.reshape(&ws)?, xs, UNIT, false, None)?;
        Some(dx.reshape(&[g.n, g.inp])?)
    } else if need_dx {
        let dx = be.alloc(&[g.n, g.inp])?;
        if dx.numel() > 0 {
            gemm(be, &g, Product::BackwardData, [dy, w], &dx)?;
        }
        Some(dx)
    } else {
        None
    };
    let dw = if need_dw && g.as_conv(be) {
        let dw = conv::conv2d_backward_weight(be, &x.reshape(&xs)?, &dy4()?, ws, UNIT)?;
        Some(dw.reshape(&[g.out, g.inp])?)
    } else if need_dw {
        let dw = be.alloc(&[g.out, g.inp])?;
        if dw.numel() > 0 {
            gemm(be, &g, Product::BackwardWeight, [dy, x], &dw)?;
        }
        Some(dw)
    } else {
        None
    };
    let db = if need_db {
        let db = be.alloc(&[g.out])?;
        if g.out > 0 {
            be.launch(
                "linear_bias_grad_f32",
                LaunchCfg::linear(g.out, THREADS),
                &[
                    KernelArg::Ptr(be.ptr(dy)?),
                    KernelArg::Ptr(be.ptr(&db)?),
                    KernelArg::I32(g.n as i32),
                    KernelArg::I32(g.out as i32),
                ],
            )?;
        }
        Some(db)
    } else {
        None
    };
    Ok(LinearGrads { dx, dw, db })
}
