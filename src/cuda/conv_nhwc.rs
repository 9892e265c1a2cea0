//! The bf16 / fp16 forward and backward-data convolutions on channels-last 16-bit operands
//! (`kernels/conv_nhwc.cu`): the GEMM's two operands are converted (`to_nhwc_pair_*`, one pass over each, one
//! launch for both) to the precision's format with the reduction's channel innermost, and the GEMM reads them with
//! 16-byte copies, 8 channels of one tap at a time. Its main loops issue about a quarter of the instructions per
//! tensor-core operation of conv.cu's NCHW gathers (docs/perf-notes.md).
//!
//! - Forward: x [N, C, H, W] -> [N, H, W, C], w [O, C, kh, kw] -> [O, kh, kw, C]; K = (tap, c).
//! - Backward data (conv_transpose2d's forward): dy [N, O, Ho, Wo] -> [N, Ho, Wo, O], w -> [C, kh, kw, O];
//!   K = (tap, o) within each stride phase.
//!
//! Which convolutions: one that conv.rs would run on the tensor cores at `Bf16` / `Fp16` whose reduction channels
//! (C forward, O backward) are a multiple of the kernels' 32-deep K slice, so that a slice is one tap's channels
//! (in DCGAN-64: D2..D4 and G2..G4, forward and backward data; not the image layers), unless
//! `GAN_ENGINE_CONV_LAYOUT=nchw` (tuning.rs) keeps every one on the NCHW kernels. Outputs, activation,
//! statistics, split-K and stride phases are those of the NCHW kernels.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::Tensor;

/// K depth of one slice (conv_nhwc.cu's `BK`): the reduction's channels must be a multiple of it.
const BK: usize = 32;
/// Most taps a column's mask holds (conv_tc.cuh's `MAX_TAPS`).
const MAX_TAPS: usize = 32;

/// The kernel and its dynamic shared memory for a tensor-core tile of `tile_rows` rows (conv_nhwc.cu's
/// `Tile<BM>::SMEM_BYTES`: 4 stages of BM + 128 rows of 80 bytes).
pub(super) struct NhwcKernel {
    pub kernel: String,
    pub shared_bytes: usize,
}

/// The channels-last kernel `base` (`conv2d_fwd` or `conv2d_bwd_data`) for a GEMM of `g` whose K runs over
/// `channels` (the input channels forward, the output channels backward) on a tensor-core tile of `tile_rows`
/// rows (the NCHW choice, so both layouts tile alike), or None when it runs on the NCHW kernels.
pub(super) fn kernel(
    be: &CudaBackend,
    base: &str,
    channels: usize,
    g: &Geom,
    tile_rows: usize,
) -> Option<NhwcKernel> {
    let format = match be.precision() {
        crate::backend::Precision::Bf16 => "bf16",
        crate::backend::Precision::Fp16 => "fp16",
        _ => return None,
    };
    let applies = be.gemm_tuning().nhwc.unwrap_or(true)
        && channels.is_multiple_of(BK)
        && g.kh * g.kw <= MAX_TAPS;
    let (suffix, shared_bytes) = match tile_rows {
        64 => ("", 61440),
        128 => ("_m128", 81920),
        _ => return None,
    };
    applies.then(|| NhwcKernel {
        kernel: format!("{base}_nhwc{suffix}_{format}"),
        shared_bytes,
    })
}

/// The GEMM inputs a launch passes: converted channels-last when [`kernel`] chose the channels-last kernel (the
/// buffers kept alive until the launch is queued), the caller's tensors as given otherwise.
pub(super) struct Inputs {
    pub ptrs: [u64; 2],
    _converted: Option<(Tensor, Tensor)>,
}

/// Switches a launch to the channels-last kernel `nk` when there is one: its name into `kernel`, its shared memory
/// into `cfg` (same tile and grid), and the operands converted ([`to_nhwc_pair`]). Without one, `a` and `b` as
/// they are.
pub(super) fn inputs(
    be: &CudaBackend,
    nk: Option<NhwcKernel>,
    kernel: &mut String,
    cfg: &mut LaunchCfg,
    a: Operand,
    b: Operand,
) -> Result<Inputs> {
    let Some(nk) = nk else {
        return Ok(Inputs {
            ptrs: [be.ptr(a.0)?, be.ptr(b.0)?],
            _converted: None,
        });
    };
    *kernel = nk.kernel;
    cfg.shared_bytes = nk.shared_bytes as u32;
    let (ah, bh) = to_nhwc_pair(be, a, b)?;
    Ok(Inputs {
        ptrs: [be.ptr(&ah)?, be.ptr(&bh)?],
        _converted: Some((ah, bh)),
    })
}

/// A convolution operand viewed as [n, c, hw] f32: an image batch [n, c, h, w], or weights [o, c, kh, kw] as
/// [o, c, kh*kw] or as [1, o, c*kh*kw].
pub(super) type Operand<'a> = (&'a Tensor, [usize; 3]);

/// Both operands transposed to [n, hw, c] values of the backend's 16-bit format (c even), two to an f32 element of
/// each returned buffer, in one launch (`to_nhwc_pair_*`).
fn to_nhwc_pair(be: &CudaBackend, a: Operand, b: Operand) -> Result<(Tensor, Tensor)> {
    let what = "to_nhwc_pair";
    let mut args = Vec::with_capacity(10);
    let mut outs = Vec::with_capacity(2);
    let mut blocks = 0usize;
    for (t, [n, c, hw]) in [a, b] {
        ensure!(
            n * c * hw == t.numel() && c % 2 == 0,
            "{what}: {:?} is not [{n}, {c} (even), {hw}]",
            t.shape()
        );
        let out = be.alloc(&[(n * c * hw).div_ceil(2)])?;
        args.push(KernelArg::Ptr(be.ptr(t)?));
        args.push(KernelArg::Ptr(be.ptr(&out)?));
        for v in [n, c, hw] {
            args.push(KernelArg::I32(n_i32(v, what)?));
        }
        blocks += n * hw.div_ceil(32) * c.div_ceil(64);
        outs.push(out);
    }
    if blocks > 0 {
        let kernel = match be.precision() {
            crate::backend::Precision::Fp16 => "to_nhwc_pair_fp16",
            _ => "to_nhwc_pair_bf16",
        };
        let cfg = LaunchCfg {
            grid: (n_i32(blocks, what)? as u32, 1, 1),
            block: (32, 8, 1),
            shared_bytes: 0,
        };
        be.launch(kernel, cfg, &args)?;
    }
    let b = outs.pop().expect("two outputs");
    Ok((outs.pop().expect("two outputs"), b))
}
