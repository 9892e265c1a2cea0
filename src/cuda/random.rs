//! Launch code for kernels/random.cu (Philox4x32-10, the CPU backend's exact stream).

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;
use crate::tensor::{numel, Tensor};

fn fill(
    be: &CudaBackend,
    kernel: &str,
    shape: &[usize],
    a: f32,
    b: f32,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    let n = n_i32(numel(shape), kernel)?;
    let y = be.alloc(shape)?;
    if n > 0 {
        // One thread per counter block of four outputs.
        be.launch(
            kernel,
            LaunchCfg::linear((n as usize).div_ceil(4), 256),
            &[
                A::Ptr(be.ptr(&y)?),
                A::I32(n),
                A::F32(a),
                A::F32(b),
                A::U64(seed),
                A::U64(offset),
            ],
        )?;
    }
    Ok(y)
}

pub fn randn(
    be: &CudaBackend,
    shape: &[usize],
    mean: f32,
    std: f32,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    ensure!(
        std >= 0.0 && std.is_finite() && mean.is_finite(),
        "randn: need a finite mean and std >= 0, got mean {mean} std {std}"
    );
    fill(be, "philox_normal_f32", shape, mean, std, seed, offset)
}

pub fn rand_uniform(
    be: &CudaBackend,
    shape: &[usize],
    lo: f32,
    hi: f32,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    ensure!(
        lo.is_finite() && hi.is_finite() && lo <= hi,
        "rand_uniform: need finite lo <= hi, got [{lo}, {hi})"
    );
    fill(be, "philox_uniform_f32", shape, lo, hi, seed, offset)
}
