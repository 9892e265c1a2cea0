//! Launch code for kernels/elementwise.cu: fill, add, add_assign, add_each (many sums, one launch), mul, affine,
//! affine_assign, powf, sum.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::tensor_list::{self, Entry};
use super::CudaBackend;
use crate::tensor::Tensor;

/// Threads per block for the pointwise kernels.
const BLOCK: u32 = 256;
/// Blocks of the one-launch reductions (sum, BCE): enough to fill a large GPU, few enough that the last block's
/// pass over the partials is trivial.
pub(crate) const REDUCE_BLOCKS_MAX: usize = 512;

/// Grid for a float4-vectorised pointwise kernel over `n` elements (one vector per thread).
pub(crate) fn vec4_cfg(n: usize) -> LaunchCfg {
    LaunchCfg::linear(n.div_ceil(4), BLOCK)
}

fn same_shape(what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    ensure!(
        a.shape() == b.shape(),
        "{what}: shapes {:?} and {:?} differ",
        a.shape(),
        b.shape()
    );
    Ok(())
}

/// Sets every element of `t` to `v`.
pub fn fill(be: &CudaBackend, t: &Tensor, v: f32) -> Result<()> {
    let n = n_i32(t.numel(), "fill")?;
    if n == 0 {
        return Ok(());
    }
    be.launch(
        "fill_f32",
        LaunchCfg::linear(n as usize, BLOCK),
        &[A::Ptr(be.ptr(t)?), A::F32(v), A::I32(n)],
    )
}

fn binary(be: &CudaBackend, kernel: &str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape(kernel, a, b)?;
    let n = n_i32(a.numel(), kernel)?;
    let y = be.alloc(a.shape())?;
    if n > 0 {
        be.launch(
            kernel,
            vec4_cfg(n as usize),
            &[
                A::Ptr(be.ptr(&y)?),
                A::Ptr(be.ptr(a)?),
                A::Ptr(be.ptr(b)?),
                A::I32(n),
            ],
        )?;
    }
    Ok(y)
}

pub fn add(be: &CudaBackend, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(be, "add_f32", a, b)
}

/// a + b for every pair into fresh tensors, one launch per 64 pairs (tensor_list.rs).
pub fn add_each(be: &CudaBackend, pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<Tensor>> {
    // Check every pair before launching any.
    for (a, b) in pairs {
        same_shape("add_each", a, b)?;
        n_i32(a.numel(), "add_each")?;
        be.ptr(a)?;
        be.ptr(b)?;
    }
    let sums = pairs
        .iter()
        .map(|(a, _)| be.alloc(a.shape()))
        .collect::<Result<Vec<_>>>()?;
    let entries = pairs
        .iter()
        .zip(&sums)
        .map(|((a, b), y)| {
            Ok(Entry {
                ptrs: [be.ptr(y)?, be.ptr(a)?, be.ptr(b)?, 0],
                n: a.numel(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tensor_list::launch(be, "add_list_f32", &entries, &[])?;
    Ok(sums)
}

pub fn mul(be: &CudaBackend, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(be, "mul_f32", a, b)
}

pub fn add_assign(be: &CudaBackend, a: &mut Tensor, b: &Tensor) -> Result<()> {
    same_shape("add_assign", a, b)?;
    let n = n_i32(a.numel(), "add_assign")?;
    let pb = be.ptr(b)?;
    let pa = be.ptr_mut(a)?;
    if n > 0 {
        be.launch(
            "add_assign_f32",
            vec4_cfg(n as usize),
            &[A::Ptr(pa), A::Ptr(pb), A::I32(n)],
        )?;
    }
    Ok(())
}

pub fn affine_assign(be: &CudaBackend, x: &mut Tensor, alpha: f32, beta: f32) -> Result<()> {
    let n = n_i32(x.numel(), "affine_assign")?;
    let px = be.ptr_mut(x)?;
    if n > 0 {
        be.launch(
            "affine_assign_f32",
            LaunchCfg::linear(n as usize, BLOCK),
            &[A::Ptr(px), A::F32(alpha), A::F32(beta), A::I32(n)],
        )?;
    }
    Ok(())
}

pub fn affine(be: &CudaBackend, a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    map(
        be,
        "affine_f32",
        vec4_cfg,
        a,
        &[A::F32(alpha), A::F32(beta)],
    )
}

/// y = kernel(a, scalars...) elementwise into a new tensor: the kernel takes (y, a, scalars..., n).
fn map(
    be: &CudaBackend,
    kernel: &str,
    cfg: impl Fn(usize) -> LaunchCfg,
    a: &Tensor,
    scalars: &[A],
) -> Result<Tensor> {
    let n = n_i32(a.numel(), kernel)?;
    let y = be.alloc(a.shape())?;
    if n > 0 {
        let mut args = vec![A::Ptr(be.ptr(&y)?), A::Ptr(be.ptr(a)?)];
        args.extend_from_slice(scalars);
        args.push(A::I32(n));
        be.launch(kernel, cfg(n as usize), &args)?;
    }
    Ok(y)
}

pub fn powf(be: &CudaBackend, a: &Tensor, p: f32) -> Result<Tensor> {
    map(
        be,
        "powf_f32",
        |n| LaunchCfg::linear(n, BLOCK),
        a,
        &[A::F32(p)],
    )
}

/// Scratch for a one-launch grid reduction: `blocks` partial sums, and an arrival counter (zero, and left zero
/// by the kernel). Returns (allocation, partials address, counter address).
pub(crate) fn reduce_scratch(
    be: &CudaBackend,
    blocks: usize,
) -> Result<(super::DeviceAlloc, u64, u64)> {
    let mem = be.alloc_bytes(blocks * 4)?;
    let partials = mem.ptr();
    Ok((mem, partials, be.arrival_counters(1)?))
}

/// Blocks of a one-launch reduction over `n` elements (4 elements per thread at least).
pub(crate) fn reduce_blocks(n: usize) -> usize {
    n.div_ceil(BLOCK as usize * 4).clamp(1, REDUCE_BLOCKS_MAX)
}

/// Sum of all elements, shape [1]. Deterministic: the reduction order depends only on `n`.
pub fn sum(be: &CudaBackend, a: &Tensor) -> Result<Tensor> {
    let n = n_i32(a.numel(), "sum")?;
    let y = be.alloc(&[1])?;
    let blocks = reduce_blocks(n as usize);
    let (_scratch, partials, counter) = reduce_scratch(be, blocks)?;
    be.launch(
        "sum_f32",
        LaunchCfg::blocks(blocks as u32, BLOCK),
        &[
            A::Ptr(be.ptr(&y)?),
            A::Ptr(be.ptr(a)?),
            A::I32(n),
            A::Ptr(partials),
            A::Ptr(counter),
        ],
    )?;
    Ok(y)
}
