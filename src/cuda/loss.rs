//! Launch code for kernels/loss.cu.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::elementwise::{reduce_blocks, reduce_scratch};
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;
use crate::tensor::Tensor;

/// Mean BCE-with-logits against a constant target and its gradient, from one launch.
pub fn bce_with_logits(be: &CudaBackend, logits: &Tensor, target: f32) -> Result<(Tensor, Tensor)> {
    ensure!(
        (0.0..=1.0).contains(&target),
        "bce_with_logits: target must be in [0, 1], got {target}"
    );
    let n = n_i32(logits.numel(), "bce_with_logits")?;
    ensure!(n > 0, "bce_with_logits: empty logits tensor");
    let loss = be.alloc(&[1])?;
    let grad = be.alloc(logits.shape())?;
    let blocks = reduce_blocks(n as usize);
    let (_scratch, partials, counter) = reduce_scratch(be, blocks)?;
    be.launch(
        "bce_logits_fwd_bwd_f32",
        LaunchCfg::blocks(blocks as u32, 256),
        &[
            A::Ptr(be.ptr(&loss)?),
            A::Ptr(be.ptr(&grad)?),
            A::Ptr(be.ptr(logits)?),
            A::F32(target),
            A::I32(n),
            A::Ptr(partials),
            A::Ptr(counter),
        ],
    )?;
    Ok((loss, grad))
}
