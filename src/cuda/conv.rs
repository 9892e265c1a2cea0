//! Convolution launch code for `kernels/conv.cu` (implicit-GEMM conv2d: forward, backward data, backward
//! weight). conv_transpose2d reuses these: its forward is [`conv2d_backward_data`], its input gradient
//! [`conv2d`].
//!
//! Launch geometry mirrors the kernels' tiling (BM x BN output tiles, BK-deep K slices; 256 threads for the f32
//! kernels, 128 or 256 threads and dynamic shared memory for the tensor-core ones): grid.x
//! walks the GEMM columns (pixels or weight taps), grid.y the rows (channels), grid.z either the K splits
//! (forward, backward weight) or the stride phases (backward data). The split count depends only on the
//! shapes, so the emulation and every GPU compute bit-identical sums in the same order.
//!
//! [`Precision`] picks the kernels' arithmetic: `F32` (the default) runs f32 FMA kernels; `Tf32`, `Bf16`
//! and `Fp16` run the tensor-core kernels (`*_tf32`: operands rounded to TF32 on mma m16n8k8, like PyTorch's
//! `allow_tf32`; `*_bf16` / `*_fp16`: operands rounded to nearest even in the 16-bit format on mma m16n8k16, like
//! autocast; products accumulated in f32 in every case) for every GEMM with more than 16 rows (a 64 x 128 tile
//! up to 64 rows, 128 x 128 above); the narrow GEMMs (3 or 1 channels) stay on the f32 kernels whatever the
//! precision, and so do forward and backward-data convolutions with more than 32 taps (kh*kw; the gathers keep
//! one bit per tap) or a tap table too large for shared memory. Parameters, activations and gradients stay f32
//! in memory either way. On the tensor cores a GEMM whose channel counts suit [`conv_nhwc`]'s
//! kernels (forward and backward data: a reduction over a multiple of 32 channels; backward weight: C and O
//! multiples of 8) converts its two operands to channels-last values of the precision's format first and runs
//! those kernels instead (same tile, grid, split and outputs), unless a tuning run says otherwise. At `F32` such a
//! GEMM with more than 16 rows runs conv_nhwc's FP32 kernels, on the tensor-core tiles, pipeline and split-K with
//! plain f32 products; the others run conv.cu's NCHW f32 kernels. Asked for both gradients at once
//! ([`conv2d_backward`], [`conv_transpose2d_backward`]), two channels-last GEMMs convert their three operands in
//! one launch.
//!
//! A forward convolution with no batch norm after it can store ReLU or LeakyReLU of its sums (`act`;
//! kernels/act.cuh's `epilogue_act`), in its epilogue or, when its reduction is split, in the reduction's. The
//! next convolution's backward data can then store its input gradient taken on through that activation
//! (`epilogue_act_bwd`, from the activation's output), when the tape folds the activation into it.
//!
//! Forward and backward data can also hand the batch norm after them their output's per-channel statistics
//! (`stats`; kernels/tile_stats.cuh): the GEMM kernels gather one part per output tile in their epilogue, or,
//! when a forward reduction is split, `conv2d_splitk_reduce_stats_f32` one part per chunk of a channel as it sums
//! the splits. The narrow routes below gather none.
//!
//! Backward data of few input channels or of a 1x1 output covering the input does not run the GEMM at all:
//! [`conv_narrow`] has kernels for those shapes (f32 at every precision, but for 1x1 kernels at the 16-bit
//! ones). linear.rs runs its products through these functions at the 16-bit precisions.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::batchnorm::{act_args, channel_chunks, channel_grid};
use super::conv_narrow;
use super::conv_nhwc::{self, Converted, Gemm};
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
pub use crate::backend::Precision;
use crate::backend::{Activation, Backend, Conv2dParams};
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::{numel, Tensor};

const THREADS: u32 = 256;
/// K depth of one shared-memory slice in conv.cu.
const BK: usize = 16;
/// A tile variant of the tensor-core kernels (conv.cu's `tc::Tile<BM>`).
struct TcTile {
    /// Output tile (rows x columns).
    tile: (usize, usize),
    threads: u32,
    /// Dynamic shared memory: 3 stages of BM + 128 rows of 36 floats.
    shared_bytes: u32,
    /// Kernel-name suffix before the precision's (`_tf32`, `_bf16`, `_fp16`).
    suffix: &'static str,
}
const TC_TILES: [TcTile; 2] = [
    TcTile {
        tile: (64, 128),
        threads: 128,
        shared_bytes: 82944,
        suffix: "",
    },
    TcTile {
        tile: (128, 128),
        threads: 256,
        shared_bytes: 110592,
        suffix: "_m128",
    },
];
/// K depth of one shared-memory slice of the tensor-core kernels (conv.cu's `tc::BK`).
const TC_BK: usize = 32;
/// Shared memory of the forward and backward-data tensor-core kernels' tap table beyond the tile's: 8 bytes for
/// each of kh*kw + 28 entries (conv.cu's `fill_tap_table`).
fn tap_table_bytes(g: &Geom) -> usize {
    (g.kh * g.kw + 28) * 8
}
/// Most taps (kh*kw) the forward and backward-data tensor-core kernels take: their gathers test a tap against a
/// 32-bit mask per column (conv.cu's `tap_mask`, `MAX_TAPS`). Larger kernels run on the f32 kernels.
const TC_MAX_TAPS: usize = 32;

/// [`use_tc`] for the kernels that gather through a tap table (forward and backward data): also None past
/// [`TC_MAX_TAPS`]. Returns the table's shared bytes beside the choice, for the launch.
fn use_tc_tapped(be: &CudaBackend, base: &str, rows: usize, g: &Geom) -> (Option<Tc>, usize) {
    let taps = tap_table_bytes(g);
    let tc = use_tc(be, base, rows, taps).filter(|_| g.kh * g.kw <= TC_MAX_TAPS);
    (tc, taps)
}
/// Most dynamic shared memory a block may have (Hopper's and Ampere's limit is 227 KiB).
const MAX_SHARED_BYTES: usize = 227 * 1024;
/// Output tiles of the two f32 kernel variants (rows x columns): the default, and the narrow one for M <= 16.
const WIDE: (usize, usize) = (64, 64);
const NARROW: (usize, usize) = (16, 128);
/// Blocks a launch should reach before split-K stops helping: about two waves of 132 SMs (H100 / H200), which
/// is also plenty for smaller GPUs.
const TARGET_BLOCKS: usize = 264;
/// Fewest K slices a split may get, so the partial sums are not dominated by their own write-back and reduction.
const MIN_SLICES_PER_SPLIT: usize = 4;
const MAX_SPLITS: usize = 64;

/// The tensor-core kernels of a precision: the name suffix after the tile's, or None for the f32 kernels.
pub(crate) fn tc_suffix(p: Precision) -> Option<&'static str> {
    match p {
        Precision::F32 => None,
        Precision::Tf32 => Some("tf32"),
        Precision::Bf16 => Some("bf16"),
        Precision::Fp16 => Some("fp16"),
    }
}

/// A tensor-core kernel chosen for one GEMM: its tile and its name.
struct Tc {
    tile: &'static TcTile,
    kernel: String,
}

/// The tensor-core tile for a GEMM with `rows` rows (a tuning run's choice, or 64 rows up to 64, 128 above), or
/// None for a narrow GEMM (the f32 kernels' 16-row tile).
fn tc_tile(be: &CudaBackend, rows: usize) -> Option<&'static TcTile> {
    if rows <= NARROW.0 {
        return None;
    }
    let tile_rows = be
        .gemm_tuning()
        .tc_rows
        .unwrap_or(if rows <= TC_TILES[0].tile.0 {
            TC_TILES[0].tile.0
        } else {
            TC_TILES[1].tile.0
        });
    TC_TILES.iter().find(|t| t.tile.0 == tile_rows)
}

/// The tensor-core kernel `base` for a GEMM with `rows` rows that needs `extra_shared` bytes of shared memory
/// beside the tile's, or None when it runs on the f32 kernels (precision F32, narrow GEMMs, kernels too large
/// for the tap table to fit).
fn use_tc(be: &CudaBackend, base: &str, rows: usize, extra_shared: usize) -> Option<Tc> {
    let suffix = tc_suffix(be.precision())?;
    let t = tc_tile(be, rows)?;
    (t.shared_bytes as usize + extra_shared <= MAX_SHARED_BYTES).then(|| Tc {
        tile: t,
        kernel: format!("{base}{}_{suffix}", t.suffix),
    })
}

/// The shared shape checks of [`Geom::new`], plus the kernels' limit: they index with i32, so every
/// tensor and every GEMM extent must fit.
fn geom(what: &str, x: [usize; 4], w: [usize; 4], p: Conv2dParams) -> Result<Geom> {
    let g = Geom::new(what, x, w, p)?;
    n_i32(numel(&x), what)?;
    n_i32(numel(&w), what)?;
    n_i32(numel(&g.out_shape()), what)?;
    n_i32(g.sh.max(g.sw).max(g.ph).max(g.pw), what)?;
    Ok(g)
}

impl Geom {
    /// The 13 size arguments every conv kernel takes after its pointers, in kernel order:
    /// N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW (all validated to fit i32 by [`geom`]).
    pub(super) fn args(&self) -> [KernelArg<'static>; 13] {
        let i = |v: usize| KernelArg::I32(v as i32);
        [
            i(self.n),
            i(self.c),
            i(self.h),
            i(self.w),
            i(self.o),
            i(self.kh),
            i(self.kw),
            i(self.ho),
            i(self.wo),
            i(self.sh),
            i(self.sw),
            i(self.ph),
            i(self.pw),
        ]
    }
}

/// The tile variant for a GEMM with `m` rows, and the kernel-name suffix that selects it.
fn tile_for(m: usize) -> ((usize, usize), &'static str) {
    if m <= NARROW.0 {
        (NARROW, "_m16")
    } else {
        (WIDE, "")
    }
}

/// How to cut a reduction of length `k` when the output has `tiles` tiles: (splits, K range per split, a
/// multiple of BK). Splits only when the tiles alone cannot fill the GPU (TARGET_BLOCKS, or the tuning run's
/// override) and every split keeps at least MIN_SLICES_PER_SPLIT slices; never yields an empty split.
pub(crate) fn split_k(be: &CudaBackend, tiles: usize, k: usize) -> (usize, usize) {
    split_k_sliced(target_blocks(be), tiles, k, BK)
}

/// The blocks a split-K launch aims for.
fn target_blocks(be: &CudaBackend) -> usize {
    be.gemm_tuning().split_k_blocks.unwrap_or(TARGET_BLOCKS)
}

/// [`split_k`] for a kernel whose K slices are `bk` deep: the chunk is a multiple of `bk`.
fn split_k_sliced(target: usize, tiles: usize, k: usize, bk: usize) -> (usize, usize) {
    let slices = k.div_ceil(bk).max(1);
    let wanted = target.div_ceil(tiles.max(1));
    let splits = wanted
        .min(slices / MIN_SLICES_PER_SPLIT)
        .clamp(1, MAX_SPLITS);
    let per_split = slices.div_ceil(splits);
    (slices.div_ceil(per_split), per_split * bk)
}

/// Grid-stride launch for an elementwise pass over `numel` elements: a few thousand blocks saturate any GPU;
/// beyond that the loop takes over (results do not depend on the block count).
pub(crate) fn reduce_cfg(numel: usize) -> LaunchCfg {
    LaunchCfg::blocks(numel.div_ceil(THREADS as usize).min(4096) as u32, THREADS)
}

/// A tensor-core kernel's launch: its tile, block and shared memory (plus `extra_shared` bytes).
fn tc_grid(tc: &TcTile, rows: usize, cols: usize, z: usize, extra_shared: usize) -> LaunchCfg {
    let mut cfg =
        gemm_grid(rows, cols, tc.tile, z).with_shared(tc.shared_bytes + extra_shared as u32);
    cfg.block = (tc.threads, 1, 1);
    cfg
}

/// The launch of a split-K GEMM of `rows` x `cols` outputs over a reduction of `k` on `tile` (or on the
/// tensor-core tile `tc`, with its own block, shared memory and K slice), and its K range per split.
fn split_launch(
    be: &CudaBackend,
    tc: Option<&TcTile>,
    extra_shared: usize,
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    k: usize,
) -> (LaunchCfg, usize) {
    let tiles = rows.div_ceil(tile.0) * cols.div_ceil(tile.1);
    if let Some(tc) = tc {
        let (splits, k_chunk) = split_k_sliced(target_blocks(be), tiles, k, TC_BK);
        (tc_grid(tc, rows, cols, splits, extra_shared), k_chunk)
    } else {
        let (splits, k_chunk) = split_k(be, tiles, k);
        (gemm_grid(rows, cols, tile, splits), k_chunk)
    }
}

fn gemm_grid(rows: usize, cols: usize, tile: (usize, usize), z: usize) -> LaunchCfg {
    LaunchCfg {
        grid: (
            cols.div_ceil(tile.1) as u32,
            rows.div_ceil(tile.0) as u32,
            z as u32,
        ),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// What a split-K GEMM kernel does about batch-norm statistics of its output.
#[derive(Clone, Copy)]
enum Stats {
    /// The kernel has no statistics argument (backward weight).
    NoArgument,
    /// It has one; pass null.
    Skip,
    /// Gather them, for an output [N, rows, HW]: in the kernel's epilogue, one part per column tile, or, when
    /// the reduction is split, in the reduction of the splits, one part per chunk of a channel.
    Gather { n: usize, rows: usize, hw: usize },
}

/// Runs a split-K GEMM kernel with cfg.grid.z splits of `k_chunk`: straight into `out` when one split
/// suffices, else into a workspace of partial outputs that `conv2d_splitk_reduce_f32` (or, gathering
/// statistics, `conv2d_splitk_reduce_stats_f32`) sums in order. Returns the statistics parts ([rows, T, 3])
/// when asked to gather them. `act` (forward kernels, without statistics): the activation stored in place of
/// the sums, by the kernel's epilogue or by the reduction of the splits.
#[allow(clippy::too_many_arguments)]
fn launch_split(
    be: &CudaBackend,
    kernel: &str,
    cfg: LaunchCfg,
    inputs: [u64; 2],
    out: &Tensor,
    sizes: &[KernelArg],
    k_chunk: usize,
    stats: Stats,
    act: Option<Activation>,
) -> Result<Option<Tensor>> {
    ensure!(
        act.is_none() || matches!(stats, Stats::Skip),
        "{kernel}: an activation in the epilogue needs a forward kernel without batch-norm statistics"
    );
    ensure!(
        act.is_none_or(in_epilogue),
        "{kernel}: only ReLU and LeakyReLU run in a convolution's epilogue, not {act:?}"
    );
    let numel = out.numel();
    let splits = cfg.grid.2 as usize;
    let mut args = vec![KernelArg::Ptr(inputs[0]), KernelArg::Ptr(inputs[1])];
    let ws = if splits > 1 {
        Some(be.alloc(&[splits, numel])?)
    } else {
        None
    };
    args.push(KernelArg::Ptr(be.ptr(ws.as_ref().unwrap_or(out))?));
    let epilogue_parts = match stats {
        Stats::Gather { rows, .. } if splits == 1 => {
            Some(be.alloc(&[rows, cfg.grid.0 as usize, 3])?)
        }
        _ => None,
    };
    if !matches!(stats, Stats::NoArgument) {
        let p = epilogue_parts.as_ref().map(|t| be.ptr(t)).transpose()?;
        args.push(KernelArg::Ptr(p.unwrap_or(0)));
    }
    args.extend_from_slice(sizes);
    args.push(KernelArg::I32(n_i32(k_chunk, kernel)?));
    if !matches!(stats, Stats::NoArgument) {
        // Partial sums are no output yet: the reduction applies the activation.
        args.extend(act_args(if splits == 1 { act } else { None })?);
    }
    be.launch(kernel, cfg, &args)?;
    let Some(ws) = ws else {
        return Ok(epilogue_parts);
    };
    let (ws, out) = (KernelArg::Ptr(be.ptr(&ws)?), KernelArg::Ptr(be.ptr(out)?));
    if let Stats::Gather { n, rows, hw } = stats {
        let (s, chunk) = channel_chunks(rows, n * hw);
        let parts = be.alloc(&[rows, s, 3])?;
        let i = |v: usize| KernelArg::I32(v as i32);
        be.launch(
            "conv2d_splitk_reduce_stats_f32",
            channel_grid(rows, s),
            &[
                ws,
                out,
                KernelArg::Ptr(be.ptr(&parts)?),
                i(n),
                i(rows),
                i(hw),
                i(splits),
                i(chunk),
            ],
        )?;
        return Ok(Some(parts));
    }
    let [act, slope] = act_args(act)?;
    be.launch(
        "conv2d_splitk_reduce_f32",
        reduce_cfg(numel),
        &[
            ws,
            out,
            KernelArg::I32(n_i32(numel, kernel)?),
            KernelArg::I32(splits as i32),
            act,
            slope,
        ],
    )?;
    Ok(None)
}

/// Whether a convolution's epilogue applies `act` (forward) or its backward (backward data): ReLU and LeakyReLU,
/// a compare and a select (kernels/act.cuh). The others run as their own kernels after the convolution.
fn in_epilogue(act: Activation) -> bool {
    matches!(act, Activation::Relu | Activation::LeakyRelu(_))
}

/// x [N, C, H, W], w [O, C, kh, kw] -> y [N, O, Ho, Wo], and with `stats` y's per-channel statistics in parts
/// ([O, T, 3], kernels/tile_stats.cuh): T output tiles, or T chunks of a channel when the reduction is split.
/// With `act` (and no `stats`), y is act of the convolution: applied as it is stored where [`in_epilogue`],
/// by the activation's kernel after otherwise.
pub fn conv2d(
    be: &CudaBackend,
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
    stats: bool,
    act: Option<Activation>,
) -> Result<(Tensor, Option<Tensor>)> {
    forward(be, x, w, p, stats, act, &Converted::default())
}

/// [`conv2d`], its channels-last operands taken from `ahead` where they were converted already.
fn forward(
    be: &CudaBackend,
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
    stats: bool,
    act: Option<Activation>,
    ahead: &Converted,
) -> Result<(Tensor, Option<Tensor>)> {
    let g = geom("conv2d", x.dims4("conv2d x")?, w.dims4("conv2d w")?, p)?;
    ensure!(
        !(stats && act.is_some()),
        "conv2d: an activation ({act:?}) is not applied beside batch-norm statistics"
    );
    if let Some(a) = act.filter(|&a| !in_epilogue(a)) {
        let z = forward(be, x, w, p, false, None, ahead)?.0;
        return Ok((be.activation(&z, a)?, None));
    }
    let y = be.alloc(&g.out_shape())?;
    if g.n == 0 {
        return Ok((y, None));
    }
    // GEMM: rows = O, columns = N*Ho*Wo output pixels, K = C*kh*kw.
    let (rows, cols, k) = (g.o, g.n * g.ho * g.wo, g.c * g.kh * g.kw);
    n_i32(cols, "conv2d")?;
    let (tc, taps) = gemm_kernel(be, Gemm::Forward, &g);
    let (tile, mut kernel) = if let Some(t) = &tc {
        (t.tile.tile, t.kernel.clone())
    } else {
        let (tile, suffix) = tile_for(rows);
        (tile, format!("conv2d_fwd{suffix}_f32"))
    };
    let tile_rows = tc.as_ref().map(|t| t.tile.tile.0);
    let (mut cfg, k_chunk) = split_launch(be, tc.map(|t| t.tile), taps, rows, cols, tile, k);
    let inputs = conv_nhwc::inputs(
        be,
        Gemm::Forward,
        &g,
        tile_rows,
        &mut kernel,
        &mut cfg,
        [(x, [g.n, g.c, g.h * g.w]), (w, [g.o, g.c, g.kh * g.kw])],
        ahead,
    )?;
    let parts = launch_split(
        be,
        &kernel,
        cfg,
        inputs.ptrs,
        &y,
        &g.args(),
        k_chunk,
        match stats {
            true => Stats::Gather {
                n: g.n,
                rows,
                hw: g.ho * g.wo,
            },
            false => Stats::Skip,
        },
        act,
    )?;
    Ok((y, parts))
}

/// dx [x_shape] from dy [N, O, Ho, Wo] and w [O, C, kh, kw]. Also conv_transpose2d's forward. With `stats`,
/// also dx's per-channel statistics in parts ([C, tiles * phases, 3]) when the GEMM kernel runs (not the
/// narrow ones of conv_narrow). With `act` = (an activation, y), x being that activation's output y, dx is
/// taken on through it: as it is stored where [`in_epilogue`] (kernels/act.cuh's `epilogue_act_bwd`) and the
/// GEMM kernels run, by the activation's backward kernel after otherwise.
pub fn conv2d_backward_data(
    be: &CudaBackend,
    dy: &Tensor,
    w: &Tensor,
    x_shape: [usize; 4],
    p: Conv2dParams,
    stats: bool,
    act: Option<(Activation, &Tensor)>,
) -> Result<(Tensor, Option<Tensor>)> {
    backward_data(be, dy, w, x_shape, p, stats, act, &Converted::default())
}

/// [`conv2d_backward_data`], its channels-last operands taken from `ahead` where they were converted already.
#[allow(clippy::too_many_arguments)]
fn backward_data(
    be: &CudaBackend,
    dy: &Tensor,
    w: &Tensor,
    x_shape: [usize; 4],
    p: Conv2dParams,
    stats: bool,
    act: Option<(Activation, &Tensor)>,
    ahead: &Converted,
) -> Result<(Tensor, Option<Tensor>)> {
    let what = "conv2d_backward_data";
    let g = geom(what, x_shape, w.dims4("conv2d_backward_data w")?, p)?;
    let dy_shape = dy.dims4("conv2d_backward_data dy")?;
    g.check_dy(what, dy_shape, "x")?;
    if let Some((a, y)) = act {
        ensure!(
            !stats,
            "{what}: an activation's backward ({a:?}) is not taken beside batch-norm statistics"
        );
        ensure!(
            y.shape() == x_shape,
            "{what}: the activation's output {:?} is not the input's shape {x_shape:?}",
            y.shape()
        );
    }
    if let Some((a, y)) = act.filter(|&(a, _)| !in_epilogue(a)) {
        let (dx, _) = backward_data(be, dy, w, x_shape, p, false, None, ahead)?;
        return Ok((be.activation_backward(y, &dx, a)?, None));
    }
    let dx = be.alloc(&x_shape)?;
    if g.n == 0 {
        return Ok((dx, None));
    }
    if conv_narrow::backward_data(be, dy, w, &dx, &g)? {
        return match act {
            Some((a, y)) => Ok((be.activation_backward(y, &dx, a)?, None)),
            None => Ok((dx, None)),
        };
    }
    // One GEMM per stride phase (grid.z): rows = C, columns = the phase's input pixels. No phase has more than
    // ceil(H/SH) x ceil(W/SW) pixels per image; the grid is sized for that and smaller phases skip the rest.
    let (sh, sw) = p.stride;
    let cols = g.n * g.h.div_ceil(sh) * g.w.div_ceil(sw);
    n_i32(cols, what)?;
    n_i32(sh * sw, what)?;
    ensure!(
        sh * sw <= 65535,
        "{what}: stride {:?} gives more phases than a grid can hold",
        p.stride
    );
    let (tc, taps) = gemm_kernel(be, Gemm::BackwardData, &g);
    let (tile, mut kernel) = if let Some(t) = &tc {
        (t.tile.tile, t.kernel.clone())
    } else {
        let (tile, suffix) = tile_for(g.c);
        (tile, format!("conv2d_bwd_data{suffix}_f32"))
    };
    let mut cfg = if let Some(t) = &tc {
        tc_grid(t.tile, g.c, cols, sh * sw, taps)
    } else {
        gemm_grid(g.c, cols, tile, sh * sw)
    };
    let inputs = conv_nhwc::inputs(
        be,
        Gemm::BackwardData,
        &g,
        tc.as_ref().map(|t| t.tile.tile.0),
        &mut kernel,
        &mut cfg,
        [
            (dy, [g.n, g.o, g.ho * g.wo]),
            (w, [1, g.o, g.c * g.kh * g.kw]),
        ],
        ahead,
    )?;
    // One statistics part per column tile of each phase.
    let parts = stats
        .then(|| be.alloc(&[g.c, (cfg.grid.0 * cfg.grid.2) as usize, 3]))
        .transpose()?;
    let mut args = vec![
        KernelArg::Ptr(inputs.ptrs[0]),
        KernelArg::Ptr(inputs.ptrs[1]),
        KernelArg::Ptr(be.ptr(&dx)?),
        KernelArg::Ptr(parts.as_ref().map(|t| be.ptr(t)).transpose()?.unwrap_or(0)),
    ];
    args.extend_from_slice(&g.args());
    let act_y = act.map(|(_, y)| be.ptr(y)).transpose()?;
    args.push(KernelArg::Ptr(act_y.unwrap_or(0)));
    args.extend(act_args(act.map(|(a, _)| a))?);
    be.launch(&kernel, cfg, &args)?;
    Ok((dx, parts))
}

/// dw [w_shape] from x [N, C, H, W] and dy [N, O, Ho, Wo].
pub fn conv2d_backward_weight(
    be: &CudaBackend,
    x: &Tensor,
    dy: &Tensor,
    w_shape: [usize; 4],
    p: Conv2dParams,
) -> Result<Tensor> {
    backward_weight(be, x, dy, w_shape, p, &Converted::default())
}

/// [`conv2d_backward_weight`], its channels-last operands taken from `ahead` where they were converted already.
fn backward_weight(
    be: &CudaBackend,
    x: &Tensor,
    dy: &Tensor,
    w_shape: [usize; 4],
    p: Conv2dParams,
    ahead: &Converted,
) -> Result<Tensor> {
    let what = "conv2d_backward_weight";
    let g = geom(what, x.dims4("conv2d_backward_weight x")?, w_shape, p)?;
    let dy_shape = dy.dims4("conv2d_backward_weight dy")?;
    g.check_dy(what, dy_shape, "x")?;
    if g.n == 0 {
        return be.alloc_zeros(&w_shape);
    }
    let dw = be.alloc(&w_shape)?;
    // GEMM: rows = O, columns = C*kh*kw weight taps, K = N*Ho*Wo pixels (long: split across blocks).
    let (rows, cols, k) = (g.o, g.c * g.kh * g.kw, g.n * g.ho * g.wo);
    n_i32(k, what)?;
    let tc = gemm_kernel(be, Gemm::BackwardWeight, &g).0;
    let (tile, mut kernel) = if let Some(t) = &tc {
        (t.tile.tile, t.kernel.clone())
    } else {
        (WIDE, "conv2d_bwd_weight_f32".to_string())
    };
    let tile_rows = tc.as_ref().map(|t| t.tile.tile.0);
    let (mut cfg, k_chunk) = split_launch(be, tc.map(|t| t.tile), 0, rows, cols, tile, k);
    let inputs = conv_nhwc::inputs(
        be,
        Gemm::BackwardWeight,
        &g,
        tile_rows,
        &mut kernel,
        &mut cfg,
        [(x, [g.n, g.c, g.h * g.w]), (dy, [g.n, g.o, g.ho * g.wo])],
        ahead,
    )?;
    launch_split(
        be,
        &kernel,
        cfg,
        inputs.ptrs,
        &dw,
        &g.args(),
        k_chunk,
        Stats::NoArgument,
        None,
    )?;
    Ok(dw)
}

/// The tile kernel `gemm` of `g` runs on (None: the NCHW f32 kernels), with the forward and backward-data tap
/// tables' shared bytes: tensor-core at TF32, bf16 and fp16; at F32 the channels-last FP32 kernel on the
/// tensor-core tile (and so with its split-K) where conv_nhwc.rs takes the GEMM. What the launches above choose,
/// and what [`conv2d_backward`] and [`conv_transpose2d_backward`] look ahead at.
fn gemm_kernel(be: &CudaBackend, gemm: Gemm, g: &Geom) -> (Option<Tc>, usize) {
    let rows = if gemm == Gemm::BackwardData { g.c } else { g.o };
    if be.precision() == Precision::F32 {
        let tc = tc_tile(be, rows).and_then(|tile| {
            let kernel = conv_nhwc::kernel_name(be, gemm, g, tile.tile.0)?;
            Some(Tc { tile, kernel })
        });
        return (tc, 0);
    }
    match gemm {
        Gemm::BackwardWeight => (use_tc(be, gemm.base(), rows, 0), 0),
        _ => use_tc_tapped(be, gemm.base(), rows, g),
    }
}

/// Whether `gemm` of `g` will run on a channels-last kernel, reading converted operands.
fn converts(be: &CudaBackend, gemm: Gemm, g: &Geom) -> bool {
    let tc = match gemm {
        Gemm::BackwardData if conv_narrow::takes_backward_data(be, g) => None,
        _ => gemm_kernel(be, gemm, g).0,
    };
    g.n > 0 && conv_nhwc::converts(be, gemm, g, tc.map(|t| t.tile.tile.0))
}

/// Both gradients of a convolution, dx as [`conv2d_backward_data`] (with `act`) and dw as
/// [`conv2d_backward_weight`]. When both GEMMs run on channels-last kernels their three operands are converted
/// in one launch, dy, which both read, once.
pub fn conv2d_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
    act: Option<(Activation, &Tensor)>,
) -> Result<(Tensor, Tensor)> {
    let what = "conv2d_backward";
    let (x_shape, w_shape) = (x.dims4("conv2d_backward x")?, w.dims4("conv2d_backward w")?);
    let g = geom(what, x_shape, w_shape, p)?;
    g.check_dy(what, dy.dims4("conv2d_backward dy")?, "x")?;
    let ahead = if converts(be, Gemm::BackwardData, &g) && converts(be, Gemm::BackwardWeight, &g) {
        conv_nhwc::convert_ahead(
            be,
            &[
                (dy, [g.n, g.o, g.ho * g.wo]),
                (w, [1, g.o, g.c * g.kh * g.kw]),
                (x, [g.n, g.c, g.h * g.w]),
            ],
        )?
    } else {
        Converted::default()
    };
    let (dx, _) = backward_data(be, dy, w, x_shape, p, false, act, &ahead)?;
    let dw = backward_weight(be, x, dy, w_shape, p, &ahead)?;
    Ok((dx, dw))
}

/// Both gradients of a transposed convolution y = [`conv2d_backward_data`] (x, w) from dy (y's gradient): dx =
/// [`conv2d`] (dy, w) and dw = [`conv2d_backward_weight`] (dy, x). When both GEMMs run on channels-last kernels
/// their three operands are converted in one launch, dy, which both read, once.
pub fn conv_transpose2d_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
) -> Result<(Tensor, Tensor)> {
    let what = "conv_transpose2d_backward";
    let w_shape = w.dims4("conv_transpose2d_backward w")?;
    // The convolution whose input gradient y is: its input is dy's shape, its output x's.
    let g = geom(what, dy.dims4("conv_transpose2d_backward dy")?, w_shape, p)?;
    ensure!(
        x.shape() == g.out_shape(),
        "{what}: x has shape {:?}, but the transposed convolution of w {w_shape:?} (stride {:?}, padding {:?}) \
         that gives dy's {:?} takes {:?}",
        x.shape(),
        p.stride,
        p.padding,
        dy.shape(),
        g.out_shape()
    );
    let ahead = if converts(be, Gemm::Forward, &g) && converts(be, Gemm::BackwardWeight, &g) {
        conv_nhwc::convert_ahead(
            be,
            &[
                (dy, [g.n, g.c, g.h * g.w]),
                (w, [g.o, g.c, g.kh * g.kw]),
                (x, [g.n, g.o, g.ho * g.wo]),
            ],
        )?
    } else {
        Converted::default()
    };
    let (dx, _) = forward(be, dy, w, p, false, None, &ahead)?;
    let dw = backward_weight(be, dy, x, w_shape, p, &ahead)?;
    Ok((dx, dw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_k_covers_k_without_empty_splits() {
        // The default target and a tuning run's overrides, down to 1 (never split).
        for (target, tiles, k, bk) in [1, 3, 17, 100, 263, 264, 1000]
            .into_iter()
            .flat_map(|t| [1, 15, 16, 17, 48, 100, 1600, 8192, 131072].map(|k| (t, k)))
            .flat_map(|(t, k)| [BK, TC_BK].map(|bk| (t, k, bk)))
            .flat_map(|(t, k, bk)| [1, 132, TARGET_BLOCKS, 528].map(|g| (g, t, k, bk)))
        {
            let (splits, chunk) = split_k_sliced(target, tiles, k, bk);
            assert!((1..=MAX_SPLITS).contains(&splits));
            assert_eq!(chunk % bk, 0);
            assert!(
                splits * chunk >= k,
                "tiles {tiles} k {k}: {splits} x {chunk}"
            );
            assert!((splits - 1) * chunk < k, "tiles {tiles} k {k}: empty split");
            if tiles >= target {
                assert_eq!(splits, 1, "target {target}, tiles {tiles}");
            }
        }
    }
}
