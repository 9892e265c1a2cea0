//! The bf16 / fp16 forward convolution on channels-last 16-bit operands (`kernels/conv_nhwc.cu`): x and w are
//! converted once each (`to_nhwc_*`, one pass) to [N, H, W, C] and [O, kh, kw, C] in the precision's format, and
//! the GEMM reads them with 16-byte copies, 8 channels of one tap at a time. Its main loop issues about a
//! quarter of the instructions per tensor-core operation of conv.cu's NCHW gather (docs/perf-notes.md).
//!
//! Which convolutions: a forward convolution that conv.rs would run on the tensor cores at `Bf16` / `Fp16`,
//! whose input channels are a multiple of the kernel's 32-deep K slice (so that a slice is one tap's channels;
//! DCGAN's D2..D5, not the 3-channel image layer), unless `GAN_ENGINE_CONV_LAYOUT=nchw` (tuning.rs) keeps every
//! one on the NCHW kernels. Its output, activation, statistics and split-K are those of the NCHW kernel.

use anyhow::Result;

use super::backend::n_i32;
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::Tensor;

/// K depth of one slice (conv_nhwc.cu's `BK`): the input channels must be a multiple of it.
const BK: usize = 32;
/// Most taps a column's mask holds (conv_tc.cuh's `MAX_TAPS`).
const MAX_TAPS: usize = 32;

/// The kernel and its dynamic shared memory for a tensor-core tile of `tile_rows` rows (conv_nhwc.cu's
/// `Tile<BM>::SMEM_BYTES`: 4 stages of BM + 128 rows of 80 bytes).
pub(super) struct NhwcKernel {
    pub kernel: String,
    pub shared_bytes: usize,
}

/// The channels-last kernel for the forward convolution `g` on a tensor-core tile of `tile_rows` rows (the NCHW
/// choice, so both layouts tile alike), or None when it runs on the NCHW kernels.
pub(super) fn forward_kernel(be: &CudaBackend, g: &Geom, tile_rows: usize) -> Option<NhwcKernel> {
    let format = match be.precision() {
        crate::backend::Precision::Bf16 => "bf16",
        crate::backend::Precision::Fp16 => "fp16",
        _ => return None,
    };
    // The conversion's grid runs 64 channels a block along y (at most 65535 blocks).
    let applies = be.gemm_tuning().nhwc.unwrap_or(true)
        && g.c.is_multiple_of(BK)
        && g.c <= 64 * 65535
        && g.kh * g.kw <= MAX_TAPS;
    let (suffix, shared_bytes) = match tile_rows {
        64 => ("", 61440),
        128 => ("_m128", 81920),
        _ => return None,
    };
    applies.then(|| NhwcKernel {
        kernel: format!("conv2d_fwd_nhwc{suffix}_{format}"),
        shared_bytes,
    })
}

/// `t` ([n, c, h, w] f32, or weights [o, c, kh, kw]) as [n, h, w, c] values of the backend's 16-bit format, two
/// to an f32 element of the returned buffer (c must be even).
pub(super) fn to_nhwc(be: &CudaBackend, t: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = t.dims4("to_nhwc")?;
    let hw = h * w;
    let out = be.alloc(&[(n * c * hw).div_ceil(2)])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let kernel = match be.precision() {
        crate::backend::Precision::Fp16 => "to_nhwc_fp16",
        _ => "to_nhwc_bf16",
    };
    let i = |v: usize| n_i32(v, "to_nhwc").map(KernelArg::I32);
    let cfg = LaunchCfg {
        grid: (
            n_i32(n * hw.div_ceil(32), "to_nhwc")? as u32,
            c.div_ceil(64) as u32,
            1,
        ),
        block: (32, 8, 1),
        shared_bytes: 0,
    };
    be.launch(
        kernel,
        cfg,
        &[
            KernelArg::Ptr(be.ptr(t)?),
            KernelArg::Ptr(be.ptr(&out)?),
            i(n)?,
            i(c)?,
            i(hw)?,
        ],
    )?;
    Ok(out)
}
