//! Launch code for kernels/shape.cu: concat / slice along dim 1.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;
use crate::tensor::Tensor;

/// (N, C, S) view of an [N, C, ...] tensor, S the product of the trailing dims.
fn ncs(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    let s = x.shape();
    ensure!(
        s.len() >= 2,
        "{what}: expected a tensor of rank >= 2 ([N, C, ...]), got {s:?}"
    );
    Ok((s[0], s[1], s[2..].iter().product()))
}

#[allow(clippy::too_many_arguments)]
fn copy(
    be: &CudaBackend,
    dst: u64,
    src: u64,
    n: usize,
    c: usize,
    s: usize,
    dst_c: (usize, usize),
    src_c: (usize, usize),
) -> Result<()> {
    let total = n * c * s;
    if total == 0 {
        return Ok(());
    }
    n_i32(total, "channel copy")?;
    be.launch(
        "channel_copy_f32",
        LaunchCfg::linear(total, 256),
        &[
            A::Ptr(dst),
            A::Ptr(src),
            A::I32(n as i32),
            A::I32(c as i32),
            A::I32(s as i32),
            A::I32(dst_c.0 as i32),
            A::I32(dst_c.1 as i32),
            A::I32(src_c.0 as i32),
            A::I32(src_c.1 as i32),
        ],
    )
}

pub fn concat_channels(be: &CudaBackend, xs: &[&Tensor]) -> Result<Tensor> {
    ensure!(!xs.is_empty(), "concat_channels: no inputs");
    let (n, _, s) = ncs(xs[0], "concat_channels")?;
    let mut total_c = 0;
    for x in xs {
        ensure!(
            x.shape().len() == xs[0].shape().len()
                && x.shape()[0] == n
                && x.shape()[2..] == xs[0].shape()[2..],
            "concat_channels: shapes {:?} and {:?} differ outside dim 1",
            xs[0].shape(),
            x.shape()
        );
        total_c += x.shape()[1];
    }
    let mut shape = xs[0].shape().to_vec();
    shape[1] = total_c;
    let y = be.alloc(&shape)?;
    let py = be.ptr(&y)?;
    let mut off = 0;
    for x in xs {
        let c = x.shape()[1];
        copy(be, py, be.ptr(x)?, n, c, s, (total_c, off), (c, 0))?;
        off += c;
    }
    Ok(y)
}

pub fn slice_channels(be: &CudaBackend, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let (n, c, s) = ncs(x, "slice_channels")?;
    ensure!(
        start.checked_add(len).is_some_and(|e| e <= c),
        "slice_channels: channels [{start}, {start}+{len}) out of range for {c} channels"
    );
    let mut shape = x.shape().to_vec();
    shape[1] = len;
    let y = be.alloc(&shape)?;
    copy(be, be.ptr(&y)?, be.ptr(x)?, n, len, s, (len, 0), (c, start))?;
    Ok(y)
}
