//! The tile convolutions on channels-last operands (`kernels/conv_nhwc.cu`): the GEMM's two operands are
//! converted (`to_nhwc_pair_*`, one pass over each, one launch for both) to the precision's format (bf16, fp16, f32
//! rounded to TF32, or f32 as it is at `F32`) with the channel innermost, and the GEMM reads them with 16-byte
//! copies, 8 (16-bit) or 4 (f32) channels of one pixel and tap at a time. At TF32, bf16 and fp16 the products run
//! on the tensor cores; at F32 the same tiles, pipeline and epilogues multiply on the FMA units. A backward whose
//! two GEMMs both run here converts their three operands in one launch (`to_nhwc_triple_*`, [`convert_ahead`]),
//! the gradient they share once. Every copy is kept while its source is alive and unwritten (operand_cache.rs), so
//! a weight is converted once between optimizer steps and an activation's forward copy serves its backward weight;
//! a launch converts only what no earlier one left. The main loops issue a quarter to a third of the instructions
//! per tensor-core operation of conv.cu's NCHW gathers, and at F32 about 1.1 per FFMA against their ~3
//! (docs/perf-notes.md).
//!
//! - Forward: x [N, C, H, W] -> [N, H, W, C], w [O, C, kh, kw] -> [O, kh, kw, C]; K = (tap, c).
//! - Backward data (conv_transpose2d's forward): dy [N, O, Ho, Wo] -> [N, Ho, Wo, O], w -> [C, kh, kw, O];
//!   K = (tap, o) within each stride phase.
//! - Backward weight: x and dy as above; K = the pixels of dy, dw's columns (tap, c), both tiles stored k-major
//!   and read transposed (ldmatrix.trans at 16 bits; at TF32, which no ldmatrix form transposes, a word per
//!   fragment element).
//!
//! Which convolutions: one that conv.rs would run on the tensor cores (`Tf32`, `Bf16`, `Fp16`), or at `F32` on a
//! tensor-core tile (more than 16 rows), whose channels fit the copies ([`Gemm::fits`]: forward and backward data
//! need the reduction's channels, C or O, to be a multiple of the kernels' 32-deep K slice, so that a slice is one
//! tap's channels; backward weight needs C and O to be multiples of 8), in DCGAN-64 D2..D4 and G2..G4, not the
//! image layers, unless `GAN_ENGINE_CONV_LAYOUT=nchw` (tuning.rs) keeps every one on the NCHW kernels. Outputs,
//! activation, statistics, split-K and stride phases are those of the NCHW kernels.

use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use super::backend::n_i32;
use super::conv::tc_suffix;
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::backend::Precision;
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::{DeviceMemory, Tensor};

/// K depth of one slice (conv_nhwc.cu's `BK`): the forward and backward-data reduction channels must be a
/// multiple of it.
const BK: usize = 32;
/// 16-bit values per 16-byte copy (conv_nhwc.cu's `CHUNK`): backward weight's channels must be a multiple of it.
const CHUNK: usize = 8;
/// Most taps a column's mask holds (conv_tc.cuh's `MAX_TAPS`).
const MAX_TAPS: usize = 32;

/// The GEMMs of a convolution that have a channels-last kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gemm {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Gemm {
    /// The GEMM's kernel names before the layout and format (`conv2d_fwd`, ...).
    pub(super) fn base(self) -> &'static str {
        match self {
            Gemm::Forward => "conv2d_fwd",
            Gemm::BackwardData => "conv2d_bwd_data",
            Gemm::BackwardWeight => "conv2d_bwd_weight",
        }
    }

    /// Whether the channels-last kernel takes `g`. Forward and backward data: the reduction's channels (C, O) a
    /// multiple of the slice, so that a slice is one tap's channels, and few enough taps for the masks.
    /// Backward weight reduces over pixels: both channel counts a multiple of a 16-byte copy.
    fn fits(self, g: &Geom) -> bool {
        let taps = g.kh * g.kw <= MAX_TAPS;
        match self {
            Gemm::Forward => g.c.is_multiple_of(BK) && taps,
            Gemm::BackwardData => g.o.is_multiple_of(BK) && taps,
            Gemm::BackwardWeight => g.c.is_multiple_of(CHUNK) && g.o.is_multiple_of(CHUNK),
        }
    }

    /// Dynamic shared memory of the kernel at precision `p` on a tile of `tile_rows` rows, or None where there is
    /// no such kernel (conv_nhwc.cu's `Tile<BM, T>` and `WgradTile<BM, T>` SMEM_BYTES: 4 stages of BM + 128 rows
    /// of 80 bytes for 16-bit values, 3 of 144 bytes for f32 values (TF32, F32); 32 rows of BM + 8 and 128 + 8
    /// values, 4 stages of 16-bit values or 3 of f32).
    fn shared_bytes(self, p: Precision, tile_rows: usize) -> Option<usize> {
        let f32_values = matches!(p, Precision::Tf32 | Precision::F32);
        match (self, f32_values, tile_rows) {
            (Gemm::BackwardWeight, true, 64) => Some(79872),
            (Gemm::BackwardWeight, true, 128) => Some(104448),
            (Gemm::BackwardWeight, false, 64) => Some(53248),
            (Gemm::BackwardWeight, false, 128) => Some(69632),
            (_, true, 64) => Some(82944),
            (_, true, 128) => Some(110592),
            (_, false, 64) => Some(61440),
            (_, false, 128) => Some(81920),
            _ => None,
        }
    }
}

/// The kernel and its dynamic shared memory for a tensor-core tile.
struct NhwcKernel {
    kernel: String,
    shared_bytes: usize,
}

/// The suffix of the channels-last kernels and conversions of precision `p`: the tensor-core formats', and `f32`
/// for the FP32 kernels (plain f32 products on the FMA units, operands transposed but not rounded).
fn format(p: Precision) -> &'static str {
    tc_suffix(p).unwrap_or("f32")
}

/// The channels-last kernel for `gemm` of `g` on a tile of `tile_rows` rows (the tensor-core tile the NCHW
/// kernels would use, so both layouts tile alike), or None when it runs on the NCHW kernels.
fn kernel(be: &CudaBackend, gemm: Gemm, g: &Geom, tile_rows: usize) -> Option<NhwcKernel> {
    let format = format(be.precision());
    let shared_bytes = gemm.shared_bytes(be.precision(), tile_rows)?;
    let suffix = if tile_rows == 128 { "_m128" } else { "" };
    (be.gemm_tuning().nhwc.unwrap_or(true) && gemm.fits(g)).then(|| NhwcKernel {
        kernel: format!("{}_nhwc{suffix}_{format}", gemm.base()),
        shared_bytes,
    })
}

/// The name of [`kernel`]: the channels-last kernel for `gemm` of `g` on a tile of `tile_rows` rows, or None.
pub(super) fn kernel_name(
    be: &CudaBackend,
    gemm: Gemm,
    g: &Geom,
    tile_rows: usize,
) -> Option<String> {
    kernel(be, gemm, g, tile_rows).map(|k| k.kernel)
}

/// Whether a launch of `gemm` on a tensor-core tile of `tile_rows` rows (None: the f32 kernels) runs on the
/// channels-last kernel and so reads converted operands.
pub(super) fn converts(be: &CudaBackend, gemm: Gemm, g: &Geom, tile_rows: Option<usize>) -> bool {
    tile_rows.is_some_and(|rows| kernel(be, gemm, g, rows).is_some())
}

/// A channels-last copy of an operand, device memory of its own.
type Twin = Arc<dyn DeviceMemory>;

/// Operands already converted for the GEMMs about to run ([`convert_ahead`]), found again by source address and
/// view.
#[derive(Default)]
pub(super) struct Converted(Vec<(u64, [usize; 3], Twin)>);

impl Converted {
    fn find(&self, be: &CudaBackend, (t, view): Operand) -> Result<Option<Twin>> {
        let ptr = be.ptr(t)?;
        Ok(self
            .0
            .iter()
            .find(|(p, v, _)| *p == ptr && *v == view)
            .map(|(.., c)| c.clone()))
    }
}

/// `ops` converted ahead, for the GEMMs of one convolution's backward that share an operand: [`inputs`] finds
/// them instead of converting again.
pub(super) fn convert_ahead(be: &CudaBackend, ops: &[Operand]) -> Result<Converted> {
    let copies = copies(be, ops, &Converted::default())?;
    let mut ahead = Vec::with_capacity(ops.len());
    for (&(t, view), c) in ops.iter().zip(copies) {
        ahead.push((be.ptr(t)?, view, c));
    }
    Ok(Converted(ahead))
}

/// The channels-last copy of each of `ops`: from `ahead`, or kept by the backend from an earlier conversion
/// (operand_cache.rs), or converted now, all that are missing in one launch ([`to_nhwc`]) and kept for reuse.
fn copies(be: &CudaBackend, ops: &[Operand], ahead: &Converted) -> Result<Vec<Twin>> {
    let format = format(be.precision());
    let mut found = Vec::with_capacity(ops.len());
    for &op in ops {
        let f = match ahead.find(be, op)? {
            Some(c) => Some(c),
            None => be.kept_operand(op.0, op.1, format)?,
        };
        found.push(f);
    }
    let missing: Vec<Operand> = ops
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(&op, _)| op)
        .collect();
    let mut fresh = missing.iter().zip(to_nhwc(be, &missing)?);
    let mut copies = Vec::with_capacity(ops.len());
    for f in found {
        let c = match f {
            Some(c) => c,
            None => {
                let (&(t, view), copy) = fresh.next().context("an operand was not converted")?;
                let twin = be.memory(&copy)?;
                be.keep_operand(t, view, format, twin.clone())?;
                twin
            }
        };
        copies.push(c);
    }
    Ok(copies)
}

/// The GEMM inputs a launch passes: converted channels-last when [`kernel`] chose the channels-last kernel (the
/// copies held until the launch is queued), the caller's tensors as given otherwise.
pub(super) struct Inputs {
    pub ptrs: [u64; 2],
    _copies: Vec<Twin>,
}

/// Switches a launch of `gemm` on a tensor-core tile of `tile_rows` rows (None: the f32 kernels) to the
/// channels-last kernel when there is one ([`kernel`]): its name into `kernel`, its shared memory into `cfg` (same
/// tile and grid), and the operands' channels-last copies ([`copies`]: from `ahead`, kept, or converted now).
/// Without one, the operands as they are.
#[allow(clippy::too_many_arguments)]
pub(super) fn inputs(
    be: &CudaBackend,
    gemm: Gemm,
    g: &Geom,
    tile_rows: Option<usize>,
    kernel: &mut String,
    cfg: &mut LaunchCfg,
    ops: [Operand; 2],
    ahead: &Converted,
) -> Result<Inputs> {
    let Some(nk) = tile_rows.and_then(|rows| self::kernel(be, gemm, g, rows)) else {
        return Ok(Inputs {
            ptrs: [be.ptr(ops[0].0)?, be.ptr(ops[1].0)?],
            _copies: Vec::new(),
        });
    };
    *kernel = nk.kernel;
    cfg.shared_bytes = nk.shared_bytes as u32;
    let copies = copies(be, &ops, ahead)?;
    Ok(Inputs {
        ptrs: [copies[0].ptr(), copies[1].ptr()],
        _copies: copies,
    })
}

/// A convolution operand viewed as [n, c, hw] f32: an image batch [n, c, h, w], or weights [o, c, kh, kw] as
/// [o, c, kh*kw] or as [1, o, c*kh*kw].
pub(super) type Operand<'a> = (&'a Tensor, [usize; 3]);

/// Each operand transposed to [n, hw, c] values of the backend's tensor-core format (c even), two 16-bit values or
/// one TF32 value to an f32 element of each returned buffer, all in one launch: `to_nhwc_pair_*` for one or two
/// (one: the second empty), `to_nhwc_triple_*` for three.
fn to_nhwc(be: &CudaBackend, ops: &[Operand]) -> Result<Vec<Tensor>> {
    let what = "to_nhwc";
    let p = be.precision();
    let format = format(p);
    let kernel = match ops.len() {
        0 => return Ok(Vec::new()),
        1 | 2 => format!("to_nhwc_pair_{format}"),
        3 => format!("to_nhwc_triple_{format}"),
        n => bail!("{what}: {n} operands in one launch"),
    };
    let words = |values: usize| match p {
        Precision::Tf32 | Precision::F32 => values,
        _ => values.div_ceil(2),
    };
    let mut args = Vec::with_capacity(15);
    let mut outs = Vec::with_capacity(ops.len());
    let mut blocks = 0usize;
    for &(t, [n, c, hw]) in ops {
        ensure!(
            n * c * hw == t.numel() && c % 2 == 0,
            "{what}: {:?} is not [{n}, {c} (even), {hw}]",
            t.shape()
        );
        let out = be.alloc(&[words(n * c * hw)])?;
        args.push(KernelArg::Ptr(be.ptr(t)?));
        args.push(KernelArg::Ptr(be.ptr(&out)?));
        for v in [n, c, hw] {
            args.push(KernelArg::I32(n_i32(v, what)?));
        }
        blocks += n * hw.div_ceil(32) * c.div_ceil(64);
        be.count_converted(n * c * hw);
        outs.push(out);
    }
    if ops.len() == 1 {
        // The pair kernel's second conversion, empty: no blocks, never read.
        let first = args[..2].to_vec();
        args.extend(first);
        args.extend([0, 0, 0].map(KernelArg::I32));
    }
    if blocks > 0 {
        let cfg = LaunchCfg {
            grid: (n_i32(blocks, what)? as u32, 1, 1),
            block: (32, 8, 1),
            shared_bytes: 0,
        };
        be.launch(&kernel, cfg, &args)?;
    }
    Ok(outs)
}
