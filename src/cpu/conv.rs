//! Convolution on the CPU: im2col / col2im around the packed GEMM of the `gemm` crate.
//!
//! With K = C·kh·kw and P = Ho·Wo, one image's convolution is a matrix product:
//!
//! ```text
//! forward          y[O, P]    = W[O, K]  · col[K, P]         col = im2col(x)
//! backward_data    col[K, P]  = Wᵀ[K, O] · dy[O, P]          dx  = col2im(col)   (scatter-add)
//! backward_weight  dW[O, K]  += dy[O, P] · colᵀ[P, K]         summed over the batch
//! ```
//!
//! Images are processed in *chunks* of `nb` images whose columns sit side by side (`col` is [K, nb·P]). When P
//! is small (the 4×4 and 8×8 layers of DCGAN) one image alone gives a thin product that spends its time
//! re-packing W; a chunk makes the product wide enough to run at full speed. Chunks run in parallel on rayon,
//! each with its own scratch and a single-threaded GEMM; backward_weight gives every thread its own partial
//! dW and adds them at the end, so the result does not depend on scheduling.
//!
//! Within a chunk the K rows of `col` are produced in *blocks* of whole input channels, each consumed right
//! after it is made (forward: y += W[:, block] · col_block; backward_data: col2im of the block), so the
//! patch matrix never leaves the cache; DCGAN's middle layers have K·P of 2–4 MB per chunk otherwise. An
//! image with many output pixels (InceptionV3's 147×147 stem) is further cut, in the forward pass, into tiles
//! of whole output rows, so that a block of rows × tile columns fits the same budget.
//!
//! Two shapes skip im2col: a 1×1, stride-1, unpadded convolution (the image itself is the [C, H·W]
//! matrix), and a kernel covering the whole unpadded image (DCGAN's last D layer and, transposed, G's first):
//! that is a fully connected layer, one GEMM over the batch.

use anyhow::Result;
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

use crate::backend::Conv2dParams;
use crate::cpu::{data, output_buffer, tensor};
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::Tensor;

// How the work is cut. Chosen on DCGAN-64's layers (`benches/cpu_conv.rs`, 2-core AVX2 machine) as the best
// total of the handful of settings tried; neighbouring settings were within that machine's ±10% noise.

/// Columns (images × output pixels) a chunk should reach before it is handed to the GEMM. With fewer,
/// the GEMM spends its time re-packing W for a thin product; with more, the patch matrix only grows.
const TARGET_COLS: usize = 256;

/// Patch-matrix elements per block of rows: a block is written (by im2col or the GEMM) and read back right
/// away, so it should stay in the L2 cache next to the GEMM's packed operands.
const BLOCK_ELEMS: usize = 64 * 1024;

/// ... but not fewer rows than this: the forward pass sums over blocks (its GEMM re-reads y once per
/// block), and thinner blocks make thin GEMMs.
const MIN_BLOCK_ROWS: usize = 256;

/// Partial weight gradients summed at the end of a backward-weight pass: enough to keep a few threads busy
/// without threaded GEMMs, few enough that their final sum stays small next to the GEMMs.
const WEIGHT_GRAD_GROUPS: usize = 4;

/// How the work of one pass is cut: `nb` images per chunk (their columns side by side), `cb` input
/// channels per block of patch-matrix rows and, in the forward pass of a chunk of one image, `rt` output rows
/// per tile of columns.
#[derive(Clone, Copy, Debug)]
struct Plan {
    nb: usize,
    cb: usize,
    rt: usize,
}

impl Geom {
    /// Rows of the patch matrix.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn in_pixels(&self) -> usize {
        self.h * self.w
    }
    fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }
    fn x_len(&self) -> usize {
        self.c * self.in_pixels()
    }
    fn y_len(&self) -> usize {
        self.o * self.out_pixels()
    }

    /// Whether the image already is its own patch matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Whether the kernel covers the whole unpadded image (one output pixel): then every image is one row
    /// of an [N, K] matrix and the convolution is a fully connected layer, one GEMM over the batch.
    fn dense(&self) -> bool {
        self.kh == self.h && self.kw == self.w && self.ph == 0 && self.pw == 0
    }

    /// The output indices `lo..hi` along one axis whose input index `o·s + k − p` falls inside `0..len`.
    /// Everything outside reads (or writes) the zero padding.
    fn valid_range(out: usize, len: usize, s: usize, k: usize, p: usize) -> (usize, usize) {
        let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
        let hi = if len + p > k {
            (len + p - k).div_ceil(s).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Enough images per chunk for TARGET_COLS columns, but never so many that some thread is left
    /// without a chunk; enough channels per block for BLOCK_ELEMS elements or MIN_BLOCK_ROWS rows.
    ///
    /// A single image can still have far more columns than BLOCK_ELEMS allows (InceptionV3's 147×147 stem
    /// layers: a block of 252 rows × 21609 columns is 22 MB), and the block then goes to memory and back. The
    /// forward pass therefore also cuts such an image into tiles of whole output rows, about BLOCK_ELEMS per
    /// block and tile but at least TARGET_COLS columns.
    ///
    /// The thread count may change how the columns are cut (which output a chunk computes), never how a sum
    /// is cut: the channel blocks, over which the forward pass sums, are sized for the largest chunk any
    /// thread count gives, so a run resumed with another RAYON_NUM_THREADS computes the same bits.
    fn plan(&self) -> Plan {
        let threads = rayon::current_num_threads().max(1);
        self.plan_with(self.chunk_images_max().min(self.n.div_ceil(threads)).max(1))
    }

    /// Images per chunk with one thread: as many as TARGET_COLS columns need.
    fn chunk_images_max(&self) -> usize {
        TARGET_COLS.div_ceil(self.out_pixels()).min(self.n).max(1)
    }

    /// The plan for chunks of `nb` images.
    fn plan_with(&self, nb: usize) -> Plan {
        let rows =
            (BLOCK_ELEMS / (self.chunk_images_max() * self.out_pixels())).max(MIN_BLOCK_ROWS);
        let cb = (rows / (self.kh * self.kw)).clamp(1, self.c);
        let block = cb * self.kh * self.kw * self.out_pixels();
        let rt = if nb == 1 && block >= 2 * BLOCK_ELEMS {
            let tiles = block / BLOCK_ELEMS;
            let min_rows = TARGET_COLS.div_ceil(self.wo);
            self.ho.div_ceil(tiles).max(min_rows).min(self.ho)
        } else {
            self.ho
        };
        Plan { nb, cb, rt }
    }

    /// The input-channel blocks of a plan, as ranges.
    fn channel_blocks(&self, plan: Plan) -> impl Iterator<Item = Range<usize>> {
        let (c, cb) = (self.c, plan.cb);
        (0..c).step_by(cb).map(move |c0| c0..(c0 + cb).min(c))
    }
}

/// A read-only strided matrix: element (r, c) is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with rows of length `ld`.
    fn row_major(data: &'a [f32], ld: usize) -> Mat<'a> {
        Mat {
            data,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with rows of length `ld`, without a copy.
    fn col_major(data: &'a [f32], ld: usize) -> Mat<'a> {
        Mat {
            data,
            rs: 1,
            cs: ld,
        }
    }
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` (or `+=` when `accumulate`), `dst` row-major with row stride `dst_rs`.
/// The one place that calls into the (unsafe, pointer-based) GEMM; it checks every extent first.
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum (an empty batch in backward_weight) is zero; the GEMM need not be asked.
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // Last element each operand touches; the GEMM reads nothing beyond these.
    let end =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(dst.len() >= end(m, n, dst_rs, 1), "matmul: dst too short");
    assert!(
        lhs.data.len() >= end(m, k, lhs.rs, lhs.cs),
        "matmul: lhs too short"
    );
    assert!(
        rhs.data.len() >= end(k, n, rhs.rs, rhs.cs),
        "matmul: rhs too short"
    );
    // SAFETY: the asserts above keep every access of the three operands in bounds; `dst` is a unique borrow
    // and does not alias `lhs` / `rhs` (shared borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0, // alpha: weight of the old dst (ignored unless `accumulate`)
            1.0, // beta: weight of lhs·rhs
            false,
            false,
            false,
            par,
        )
    }
}

/// Writes one image's patches for the input channels `chans` and the output rows `ohs` into columns
/// `off .. off + ohs.len()·Wo` of `col` (row length `ld`):
/// `col[(c − chans.start, i, j), off + (oh − ohs.start)·Wo + ow] = x[c, oh·sh + i − ph, ow·sw + j − pw]`,
/// zero in the padding.
/// Every element of those columns is written, so the scratch needs no clearing between uses.
///
/// The valid (non-padding) output range of each tap is computed once per row of `col`, so the inner loop
/// is a plain (strided) copy with no bounds tests: DCGAN's rows are only 4 to 32 elements long, and
/// per-element branching would cost as much as the copy.
fn im2col(
    g: &Geom,
    x: &[f32],
    chans: Range<usize>,
    ohs: Range<usize>,
    col: &mut [f32],
    (ld, off): (usize, usize),
) {
    let p = ohs.len() * g.wo;
    let c0 = chans.start;
    for c in chans {
        let xc = &x[c * g.in_pixels()..(c + 1) * g.in_pixels()];
        for i in 0..g.kh {
            let (lo, hi) = Geom::valid_range(g.ho, g.h, g.sh, i, g.ph);
            let oh_hi = hi.min(ohs.end);
            let oh_lo = lo.max(ohs.start).min(oh_hi);
            for j in 0..g.kw {
                let (ow_lo, ow_hi) = Geom::valid_range(g.wo, g.w, g.sw, j, g.pw);
                let row = ((c - c0) * g.kh + i) * g.kw + j;
                let dst = &mut col[row * ld + off..][..p];
                // One memset for the whole row beats zeroing the padded edges of every output row.
                if oh_lo > ohs.start || oh_hi < ohs.end || ow_lo > 0 || ow_hi < g.wo {
                    dst.fill(0.0);
                }
                if ow_lo == ow_hi {
                    continue;
                }
                let first = ow_lo * g.sw + j - g.pw;
                for oh in oh_lo..oh_hi {
                    let src = &xc[(oh * g.sh + i - g.ph) * g.w + first..];
                    let d = (oh - ohs.start) * g.wo;
                    copy_strided(&mut dst[d + ow_lo..d + ow_hi], src, g.sw);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds columns `off .. off + P` of `col` back onto the channels `chans` of the
/// image `dx` (which the caller has zeroed). Padding positions are dropped.
fn col2im(g: &Geom, col: &[f32], chans: Range<usize>, ld: usize, off: usize, dx: &mut [f32]) {
    let p = g.out_pixels();
    let c0 = chans.start;
    for c in chans {
        let dxc = &mut dx[c * g.in_pixels()..(c + 1) * g.in_pixels()];
        for i in 0..g.kh {
            let (oh_lo, oh_hi) = Geom::valid_range(g.ho, g.h, g.sh, i, g.ph);
            for j in 0..g.kw {
                let (ow_lo, ow_hi) = Geom::valid_range(g.wo, g.w, g.sw, j, g.pw);
                if ow_lo == ow_hi {
                    continue;
                }
                let row = ((c - c0) * g.kh + i) * g.kw + j;
                let src = &col[row * ld + off..][..p];
                let first = ow_lo * g.sw + j - g.pw;
                for oh in oh_lo..oh_hi {
                    let d = &mut dxc[(oh * g.sh + i - g.ph) * g.w + first..];
                    add_strided(d, &src[oh * g.wo + ow_lo..oh * g.wo + ow_hi], g.sw);
                }
            }
        }
    }
}

/// `d[t] = s[t·step]` for every t of `d`. Strides 1 and 2 (all of DCGAN) get their own loops so that the
/// compiler sees a constant stride and can vectorise.
#[inline(always)]
fn copy_strided(d: &mut [f32], s: &[f32], step: usize) {
    match step {
        1 => d.copy_from_slice(&s[..d.len()]),
        2 => copy_stride_n::<2>(d, s),
        _ => {
            for (t, v) in d.iter_mut().enumerate() {
                *v = s[t * step];
            }
        }
    }
}

#[inline(always)]
fn copy_stride_n<const S: usize>(d: &mut [f32], s: &[f32]) {
    // Iterating over whole strides (`chunks_exact`) leaves the loop free of bounds checks, so the
    // compiler can vectorise it. The last element gets its own line: it may sit at the very end of the
    // input, with no full stride after it.
    let Some((last, head)) = d.split_last_mut() else {
        return;
    };
    for (v, stride) in head.iter_mut().zip(s.chunks_exact(S)) {
        *v = stride[0];
    }
    *last = s[head.len() * S];
}

/// `d[t·step] += s[t]` for every t of `s`.
#[inline(always)]
fn add_strided(d: &mut [f32], s: &[f32], step: usize) {
    match step {
        1 => {
            for (a, b) in d[..s.len()].iter_mut().zip(s) {
                *a += b;
            }
        }
        2 => add_stride_n::<2>(d, s),
        _ => {
            for (t, v) in s.iter().enumerate() {
                d[t * step] += v;
            }
        }
    }
}

#[inline(always)]
fn add_stride_n<const S: usize>(d: &mut [f32], s: &[f32]) {
    // As in `copy_stride_n`: whole strides, then the last element on its own.
    let Some((last, head)) = s.split_last() else {
        return;
    };
    for (stride, v) in d.chunks_exact_mut(S).zip(head) {
        stride[0] += v;
    }
    d[head.len() * S] += last;
}

/// Copies a chunk of `nb` NCHW images ([nb, rows, P] contiguous) into the [rows, nb·P] layout the GEMM
/// wants (images side by side), or back with [`unpack_chunk`].
fn pack_chunk(src: &[f32], rows: usize, p: usize, nb: usize, dst: &mut [f32]) {
    for img in 0..nb {
        for r in 0..rows {
            dst[r * nb * p + img * p..][..p].copy_from_slice(&src[(img * rows + r) * p..][..p]);
        }
    }
}

fn unpack_chunk(src: &[f32], rows: usize, p: usize, nb: usize, dst: &mut [f32]) {
    for img in 0..nb {
        for r in 0..rows {
            dst[(img * rows + r) * p..][..p].copy_from_slice(&src[r * nb * p + img * p..][..p]);
        }
    }
}

/// A GEMM that spreads itself over the rayon pool.
fn threaded() -> Parallelism {
    Parallelism::Rayon(rayon::current_num_threads())
}

/// Threading inside the GEMM: only when there are too few chunks to keep every thread busy (batch of 1).
fn gemm_parallelism(chunks: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if chunks >= threads {
        Parallelism::None
    } else {
        threaded()
    }
}

/// Per-chunk scratch, grown on demand and reused by the chunks one rayon worker runs.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    packed: Vec<f32>,
}

/// New scratch is NaN: im2col promises to write every element it hands to the GEMM, and a broken promise
/// then shows up as NaN in the result instead of silently reading zeros.
fn scratch(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, f32::NAN);
    }
    &mut v[..len]
}

/// x [N, C, H, W], w [O, C, kh, kw] → y [N, O, Ho, Wo].
pub fn conv2d(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let g = Geom::new("conv2d", x.dims4("conv2d x")?, w.dims4("conv2d w")?, p)?;
    let (x, w) = (data(x)?, data(w)?);
    if g.dense() {
        // y [N, O] = X [N, K] · Wᵀ [K, O]
        let mut y = output_buffer(g.n * g.o);
        let (xm, wt) = (Mat::row_major(x, g.k()), Mat::col_major(w, g.k()));
        matmul((g.n, g.o, g.k()), &mut y, g.o, false, xm, wt, threaded());
        return Ok(tensor(y, &g.out_shape()));
    }
    Ok(forward_planned(&g, x, w, g.plan()))
}

/// y = W · col, summed over channel blocks: block b adds W[:, rows of b] · col_b.
fn forward_planned(g: &Geom, x: &[f32], w: &[f32], plan: Plan) -> Tensor {
    let (k, p, taps) = (g.k(), g.out_pixels(), g.kh * g.kw);
    let par = gemm_parallelism(g.n.div_ceil(plan.nb));
    let mut y = output_buffer(g.n * g.y_len());
    y.par_chunks_mut(plan.nb * g.y_len())
        .zip(x.par_chunks(plan.nb * g.x_len()))
        .for_each_init(Scratch::default, |s, (yc, xc)| {
            let nbc = yc.len() / g.y_len();
            let cols = nbc * p;
            // One image writes straight into y; several go through [O, cols] and are unpacked after.
            let out = if nbc == 1 {
                &mut *yc
            } else {
                scratch(&mut s.packed, g.o * cols)
            };
            if g.pointwise() && nbc == 1 {
                let wm = Mat::row_major(w, k);
                let xm = Mat::row_major(xc, p);
                matmul((g.o, p, k), out, p, false, wm, xm, par);
            } else {
                // Tiles of output rows only for a chunk of one image (several images have few pixels).
                let rt = if nbc == 1 { plan.rt } else { g.ho };
                for oh0 in (0..g.ho).step_by(rt.max(1)) {
                    let ohs = oh0..(oh0 + rt).min(g.ho);
                    let tile = ohs.len() * g.wo;
                    let tile_cols = nbc * tile;
                    for (bi, chans) in g.channel_blocks(plan).enumerate() {
                        let rows = chans.len() * taps;
                        let wb = Mat::row_major(&w[chans.start * taps..], k);
                        let col = scratch(&mut s.col, rows * tile_cols);
                        for img in 0..nbc {
                            let xi = &xc[img * g.x_len()..];
                            im2col(
                                g,
                                xi,
                                chans.clone(),
                                ohs.clone(),
                                col,
                                (tile_cols, img * tile),
                            );
                        }
                        let colm = Mat::row_major(col, tile_cols);
                        let dst = &mut out[oh0 * g.wo..];
                        matmul((g.o, tile_cols, rows), dst, cols, bi > 0, wb, colm, par);
                    }
                }
            }
            if nbc > 1 {
                unpack_chunk(&s.packed[..g.o * cols], g.o, p, nbc, yc);
            }
        });
    tensor(y, &g.out_shape())
}

/// dx [x_shape] from dy [N, O, Ho, Wo] and w [O, C, kh, kw].
pub fn conv2d_backward_data(
    dy: &Tensor,
    w: &Tensor,
    x_shape: [usize; 4],
    p: Conv2dParams,
) -> Result<Tensor> {
    let what = "conv2d_backward_data";
    let g = Geom::new(what, x_shape, w.dims4("conv2d_backward_data w")?, p)?;
    g.check_dy(what, dy.dims4("conv2d_backward_data dy")?, "x_shape")?;
    let (dy, w) = (data(dy)?, data(w)?);
    if g.dense() {
        // dX [N, K] = dY [N, O] · W [O, K]
        let mut dx = output_buffer(g.n * g.k());
        let (dym, wm) = (Mat::row_major(dy, g.o), Mat::row_major(w, g.k()));
        matmul(
            (g.n, g.k(), g.o),
            &mut dx,
            g.k(),
            false,
            dym,
            wm,
            threaded(),
        );
        return Ok(tensor(dx, &x_shape));
    }
    Ok(backward_data_planned(&g, dy, w, g.plan()))
}

/// col = Wᵀ · dy one channel block at a time, each block scattered into dx by col2im while still in cache.
fn backward_data_planned(g: &Geom, dy: &[f32], w: &[f32], plan: Plan) -> Tensor {
    let (k, p, taps) = (g.k(), g.out_pixels(), g.kh * g.kw);
    let par = gemm_parallelism(g.n.div_ceil(plan.nb));
    let mut dx = output_buffer(g.n * g.x_len());
    dx.par_chunks_mut(plan.nb * g.x_len())
        .zip(dy.par_chunks(plan.nb * g.y_len()))
        .for_each_init(Scratch::default, |s, (dxc, dyc)| {
            let nbc = dxc.len() / g.x_len();
            let cols = nbc * p;
            let dym = if nbc == 1 {
                Mat::row_major(dyc, p)
            } else {
                let packed = scratch(&mut s.packed, g.o * cols);
                pack_chunk(dyc, g.o, p, nbc, packed);
                Mat::row_major(packed, cols)
            };
            // Wᵀ without a copy: element (r, o) of Wᵀ is w[o·K + r].
            if g.pointwise() && nbc == 1 {
                let wt = Mat::col_major(w, k);
                matmul((k, p, g.o), dxc, p, false, wt, dym, par);
                return;
            }
            dxc.fill(0.0);
            for chans in g.channel_blocks(plan) {
                let rows = chans.len() * taps;
                let wt = Mat::col_major(&w[chans.start * taps..], k);
                let col = scratch(&mut s.col, rows * cols);
                matmul((rows, cols, g.o), col, cols, false, wt, dym, par);
                for img in 0..nbc {
                    col2im(
                        g,
                        col,
                        chans.clone(),
                        cols,
                        img * p,
                        &mut dxc[img * g.x_len()..],
                    );
                }
            }
        });
    tensor(dx, &[g.n, g.c, g.h, g.w])
}

/// dw [w_shape] from x [N, C, H, W] and dy [N, O, Ho, Wo].
pub fn conv2d_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    w_shape: [usize; 4],
    p: Conv2dParams,
) -> Result<Tensor> {
    let what = "conv2d_backward_weight";
    let g = Geom::new(what, x.dims4("conv2d_backward_weight x")?, w_shape, p)?;
    g.check_dy(what, dy.dims4("conv2d_backward_weight dy")?, "x")?;
    let (x, dy) = (data(x)?, data(dy)?);
    if g.dense() {
        // dW [O, K] = dYᵀ [O, N] · X [N, K] (an empty batch gives zeros: see `matmul`).
        let mut dw = output_buffer(g.o * g.k());
        let (dyt, xm) = (Mat::col_major(dy, g.o), Mat::row_major(x, g.k()));
        matmul(
            (g.o, g.k(), g.n),
            &mut dw,
            g.k(),
            false,
            dyt,
            xm,
            threaded(),
        );
        return Ok(tensor(dw, &w_shape));
    }
    // The weight gradient sums over images, so its chunks must not depend on the thread count.
    Ok(backward_weight_planned(
        &g,
        x,
        dy,
        g.plan_with(g.chunk_images_max()),
    ))
}

/// dW[:, rows of block b] += dy · col_bᵀ over every chunk and block.
fn backward_weight_planned(g: &Geom, x: &[f32], dy: &[f32], plan: Plan) -> Tensor {
    let (k, p, taps, nb) = (g.k(), g.out_pixels(), g.kh * g.kw, plan.nb);
    let w_shape = [g.o, g.c, g.kh, g.kw];
    let chunks = g.n.div_ceil(nb);
    if chunks == 0 {
        // An empty batch contributes nothing.
        return tensor(vec![0.0; g.o * k], &w_shape);
    }
    // Contiguous runs of chunks, each summed into its own dW, then the partial dWs in order: a fixed number
    // of groups (not one per thread, not work-stolen) keeps the summation order, hence the result,
    // independent of the thread count and of scheduling. With fewer groups than threads the GEMMs thread
    // themselves (their threads split the output, not the sum).
    let groups = chunks.min(WEIGHT_GRAD_GROUPS);
    let imgs_per_group = chunks.div_ceil(groups) * nb;
    let par = gemm_parallelism(groups);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(imgs_per_group * g.x_len())
        .zip(dy.par_chunks(imgs_per_group * g.y_len()))
        .map(|(xg, dyg)| {
            let mut s = Scratch::default();
            let mut dw = output_buffer(g.o * k);
            let chunks = xg.chunks(nb * g.x_len()).zip(dyg.chunks(nb * g.y_len()));
            for (ci, (xc, dyc)) in chunks.enumerate() {
                let nbc = xc.len() / g.x_len();
                let cols = nbc * p;
                let dym = if nbc == 1 {
                    Mat::row_major(dyc, p)
                } else {
                    let packed = scratch(&mut s.packed, g.o * cols);
                    pack_chunk(dyc, g.o, p, nbc, packed);
                    Mat::row_major(packed, cols)
                };
                // colᵀ without a copy: element (j, r) of colᵀ is col[r·cols + j].
                if g.pointwise() && nbc == 1 {
                    let xt = Mat::col_major(xc, p);
                    matmul((g.o, k, cols), &mut dw, k, ci > 0, dym, xt, par);
                    continue;
                }
                for chans in g.channel_blocks(plan) {
                    let rows = chans.len() * taps;
                    let col = scratch(&mut s.col, rows * cols);
                    for img in 0..nbc {
                        let xi = &xc[img * g.x_len()..];
                        im2col(g, xi, chans.clone(), 0..g.ho, col, (cols, img * p));
                    }
                    let colt = Mat::col_major(col, cols);
                    let dwb = &mut dw[chans.start * taps..];
                    matmul((g.o, rows, cols), dwb, k, ci > 0, dym, colt, par);
                }
            }
            dw
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().expect("at least one group");
    for part in partials {
        dw.par_iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    tensor(dw, &w_shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_tensor;

    fn params(stride: (usize, usize), padding: (usize, usize)) -> Conv2dParams {
        Conv2dParams { stride, padding }
    }

    /// Calls `f(x_index, w_index, y_index)` for every product x·w that contributes to an output of the
    /// convolution, straight from the definition y[n,o,oh,ow] = Σ x[n,c,oh·sh+i−ph, ow·sw+j−pw] w[o,c,i,j].
    /// All three reference passes are sums over these same triples.
    fn for_each_tap(
        xs: [usize; 4],
        ws: [usize; 4],
        p: Conv2dParams,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let [n, c, h, w] = xs;
        let [o, _, kh, kw] = ws;
        let (ho, wo) = p.output_size(h, w, kh, kw).unwrap();
        for ni in 0..n {
            for oi in 0..o {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let yi = ((ni * o + oi) * ho + oh) * wo + ow;
                        for ci in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let ih = (oh * p.stride.0 + i) as isize - p.padding.0 as isize;
                                    let iw = (ow * p.stride.1 + j) as isize - p.padding.1 as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                        continue;
                                    }
                                    let xi = ((ni * c + ci) * h + ih as usize) * w + iw as usize;
                                    let wi = ((oi * c + ci) * kh + i) * kw + j;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A reference result in f64 and, per element, the sum of |terms| (the scale of its rounding error).
    struct Reference {
        value: Vec<f64>,
        magnitude: Vec<f64>,
    }

    impl Reference {
        fn new(len: usize) -> Reference {
            Reference {
                value: vec![0.0; len],
                magnitude: vec![0.0; len],
            }
        }
        fn add(&mut self, i: usize, a: f32, b: f32) {
            let t = a as f64 * b as f64;
            self.value[i] += t;
            self.magnitude[i] += t.abs();
        }
        fn check(&self, what: &str, got: &[f32]) {
            assert_eq!(got.len(), self.value.len(), "{what}: length");
            for (i, (&g, (&v, &m))) in got
                .iter()
                .zip(self.value.iter().zip(&self.magnitude))
                .enumerate()
            {
                let err = (g as f64 - v).abs();
                // Written so that a NaN (an element nobody wrote) fails too.
                assert!(
                    err <= 1e-6 + 1e-5 * m,
                    "{what}: element {i}: got {g}, expected {v} (|err| {err})"
                );
            }
        }
    }

    fn ref_forward(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        p: Conv2dParams,
    ) -> Reference {
        let (ho, wo) = p.output_size(xs[2], xs[3], ws[2], ws[3]).unwrap();
        let mut r = Reference::new(xs[0] * ws[0] * ho * wo);
        for_each_tap(xs, ws, p, |xi, wi, yi| r.add(yi, x[xi], w[wi]));
        r
    }

    fn ref_backward_data(
        dy: &[f32],
        w: &[f32],
        xs: [usize; 4],
        ws: [usize; 4],
        p: Conv2dParams,
    ) -> Reference {
        let mut r = Reference::new(xs.iter().product());
        for_each_tap(xs, ws, p, |xi, wi, yi| r.add(xi, dy[yi], w[wi]));
        r
    }

    fn ref_backward_weight(
        x: &[f32],
        dy: &[f32],
        xs: [usize; 4],
        ws: [usize; 4],
        p: Conv2dParams,
    ) -> Reference {
        let mut r = Reference::new(ws.iter().product());
        for_each_tap(xs, ws, p, |xi, wi, yi| r.add(wi, x[xi], dy[yi]));
        r
    }

    /// Awkward shapes: odd sizes, non-square and 1×1 kernels, strides 1–3, paddings 0–3, asymmetric
    /// stride and padding, padding as wide as the kernel, a kernel covering the whole input.
    fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
        let x = [3, 5, 7, 9];
        vec![
            (x, [6, 5, 3, 3], params((1, 1), (1, 1))),
            (x, [6, 5, 4, 4], params((2, 2), (1, 1))),
            (x, [6, 5, 1, 7], params((1, 1), (0, 3))),
            (x, [6, 5, 7, 1], params((1, 1), (3, 0))),
            (x, [6, 5, 1, 7], params((2, 1), (0, 2))),
            (x, [6, 5, 1, 1], params((1, 1), (0, 0))),
            (x, [6, 5, 1, 1], params((2, 2), (0, 0))),
            (x, [6, 5, 1, 1], params((1, 1), (1, 0))),
            (x, [6, 5, 3, 3], params((2, 1), (0, 2))),
            (x, [6, 5, 4, 4], params((3, 3), (2, 2))),
            (x, [6, 5, 3, 3], params((1, 1), (3, 3))),
            (x, [6, 5, 7, 9], params((1, 1), (0, 0))),
            (x, [6, 5, 2, 5], params((1, 2), (1, 0))),
            // Small outputs and a larger batch: several images per chunk, a ragged last chunk.
            ([7, 3, 4, 5], [4, 3, 3, 3], params((1, 1), (0, 0))),
            ([7, 3, 4, 5], [4, 3, 1, 1], params((1, 1), (0, 0))),
            // Kernel covering the whole image: the fully connected path.
            ([7, 3, 4, 5], [4, 3, 4, 5], params((1, 1), (0, 0))),
            ([7, 3, 4, 5], [4, 3, 4, 5], params((2, 3), (0, 0))),
            // One image: the GEMM itself is threaded.
            ([1, 4, 6, 5], [3, 4, 3, 2], params((1, 2), (1, 1))),
            ([1, 4, 6, 5], [3, 4, 1, 1], params((1, 1), (0, 0))),
        ]
    }

    #[test]
    fn conv_matches_direct_loops_for_every_chunking() {
        for (ci, (xs, ws, p)) in cases().into_iter().enumerate() {
            let x = test_tensor(&xs, 1 + ci as u64);
            let w = test_tensor(&ws, 100 + ci as u64);
            let y = conv2d(&x, &w, p).unwrap();
            let (xd, wd, yd) = (
                x.to_vec().unwrap(),
                w.to_vec().unwrap(),
                y.to_vec().unwrap(),
            );
            let g = Geom::new("test", xs, ws, p).unwrap();
            let dy = test_tensor(y.shape(), 200 + ci as u64).to_vec().unwrap();

            let want_y = ref_forward(&xd, xs, &wd, ws, p);
            let want_dx = ref_backward_data(&dy, &wd, xs, ws, p);
            let want_dw = ref_backward_weight(&xd, &dy, xs, ws, p);
            let tag = format!("case {ci}: x {xs:?} w {ws:?} {p:?}");
            want_y.check(&format!("{tag} forward"), &yd);

            // The public entry points (default chunking) ...
            let dyt = crate::cpu::tensor(dy.clone(), y.shape());
            let dx = conv2d_backward_data(&dyt, &w, xs, p).unwrap();
            assert_eq!(dx.shape(), &xs);
            want_dx.check(&format!("{tag} backward_data"), dx.cpu_data().unwrap());
            let dw = conv2d_backward_weight(&x, &dyt, ws, p).unwrap();
            assert_eq!(dw.shape(), &ws);
            want_dw.check(&format!("{tag} backward_weight"), dw.cpu_data().unwrap());

            // ... and every chunk size, several channel blocks and row tiles, so the packed multi-image layout,
            // ragged chunks, ragged channel blocks and ragged tiles are covered whatever the machine makes the
            // default plan.
            for nb in 1..=xs[0] {
                for (cb, rt) in [1, 2, xs[1]]
                    .into_iter()
                    .flat_map(|cb| [1, 2, g.ho].map(|rt| (cb, rt)))
                {
                    let plan = Plan { nb, cb, rt };
                    let y = forward_planned(&g, &xd, &wd, plan);
                    want_y.check(&format!("{tag} forward {plan:?}"), y.cpu_data().unwrap());
                    let dx = backward_data_planned(&g, &dy, &wd, plan);
                    want_dx.check(
                        &format!("{tag} backward_data {plan:?}"),
                        dx.cpu_data().unwrap(),
                    );
                    let dw = backward_weight_planned(&g, &xd, &dy, plan);
                    want_dw.check(
                        &format!("{tag} backward_weight {plan:?}"),
                        dw.cpu_data().unwrap(),
                    );
                }
            }
        }
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for out in 1..6 {
            for len in 1..7 {
                for s in 1..4 {
                    for k in 0..5 {
                        for p in 0..4 {
                            let inside = |o: usize| {
                                let i = (o * s + k) as isize - p as isize;
                                i >= 0 && i < len as isize
                            };
                            let (lo, hi) = Geom::valid_range(out, len, s, k, p);
                            for o in 0..out {
                                assert_eq!(
                                    inside(o),
                                    (lo..hi).contains(&o),
                                    "out {out} len {len} s {s} k {k} p {p} o {o}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn err_text(r: Result<Tensor>) -> String {
        format!("{:#}", r.expect_err("expected an error"))
    }

    #[test]
    fn bad_shapes_are_errors() {
        let p = Conv2dParams::new(1, 0);
        let x = test_tensor(&[2, 3, 5, 5], 1);
        let w = test_tensor(&[4, 3, 3, 3], 2);
        let dy = test_tensor(&[2, 4, 3, 3], 3);

        let e = err_text(conv2d(&x, &test_tensor(&[4, 2, 3, 3], 2), p));
        assert!(e.contains("3 channels") && e.contains("expects 2"), "{e}");
        let e = err_text(conv2d(&x, &test_tensor(&[4, 3, 6, 3], 2), p));
        assert!(e.contains("larger than the padded input"), "{e}");
        let e = err_text(conv2d(
            &x,
            &test_tensor(&[4, 3, 8, 3], 2),
            Conv2dParams::new(1, 1),
        ));
        assert!(e.contains("kernel 8x3") && e.contains("7x7"), "{e}");
        let e = err_text(conv2d(&test_tensor(&[3, 5, 5], 1), &w, p));
        assert!(e.contains("4-D"), "{e}");
        let e = err_text(conv2d(&x, &test_tensor(&[4, 3, 3], 2), p));
        assert!(e.contains("4-D"), "{e}");
        let e = err_text(conv2d(&x, &w, Conv2dParams::new(0, 0)));
        assert!(e.contains("stride"), "{e}");
        let e = err_text(conv2d(&x, &test_tensor(&[0, 3, 3, 3], 2), p));
        assert!(e.contains("empty"), "{e}");

        // backward_data: dy must be what x_shape and w produce.
        assert!(conv2d_backward_data(&dy, &w, [2, 3, 5, 5], p).is_ok());
        let e = err_text(conv2d_backward_data(&dy, &w, [2, 3, 6, 5], p));
        assert!(e.contains("dy has shape") && e.contains("x_shape"), "{e}");
        let e = err_text(conv2d_backward_data(&dy, &w, [3, 3, 5, 5], p));
        assert!(e.contains("dy has shape"), "{e}");
        let e = err_text(conv2d_backward_data(
            &dy,
            &test_tensor(&[5, 3, 3, 3], 2),
            [2, 3, 5, 5],
            p,
        ));
        assert!(e.contains("dy has shape"), "{e}");
        let e = err_text(conv2d_backward_data(&dy, &w, [2, 2, 5, 5], p));
        assert!(e.contains("channels"), "{e}");
        let e = err_text(conv2d_backward_data(&dy, &w, [2, 3, 2, 2], p));
        assert!(e.contains("larger than the padded input"), "{e}");

        // backward_weight: same rules, with x given as a tensor.
        assert!(conv2d_backward_weight(&x, &dy, [4, 3, 3, 3], p).is_ok());
        let e = err_text(conv2d_backward_weight(&x, &dy, [4, 3, 2, 3], p));
        assert!(e.contains("dy has shape"), "{e}");
        let e = err_text(conv2d_backward_weight(
            &test_tensor(&[3, 3, 5, 5], 1),
            &dy,
            [4, 3, 3, 3],
            p,
        ));
        assert!(e.contains("dy has shape"), "{e}");
        let e = err_text(conv2d_backward_weight(&x, &dy, [4, 2, 3, 3], p));
        assert!(e.contains("channels"), "{e}");
        let e = err_text(conv2d_backward_weight(
            &x,
            &test_tensor(&[2, 4, 9], 3),
            [4, 3, 3, 3],
            p,
        ));
        assert!(e.contains("4-D"), "{e}");
    }

    #[test]
    fn empty_batch_gives_empty_outputs_and_zero_weight_grad() {
        let p = Conv2dParams::new(2, 1);
        let x = test_tensor(&[0, 3, 5, 5], 1);
        let w = test_tensor(&[4, 3, 3, 3], 2);
        let y = conv2d(&x, &w, p).unwrap();
        assert_eq!(y.shape(), &[0, 4, 3, 3]);
        let dx = conv2d_backward_data(&y, &w, [0, 3, 5, 5], p).unwrap();
        assert_eq!(dx.shape(), &[0, 3, 5, 5]);
        let dw = conv2d_backward_weight(&x, &y, [4, 3, 3, 3], p).unwrap();
        assert!(dw.to_vec().unwrap().iter().all(|&v| v == 0.0));

        // The same through the fully connected path (kernel = image).
        let p = Conv2dParams::new(1, 0);
        let w = test_tensor(&[4, 3, 5, 5], 2);
        let y = conv2d(&x, &w, p).unwrap();
        assert_eq!(y.shape(), &[0, 4, 1, 1]);
        let dx = conv2d_backward_data(&y, &w, [0, 3, 5, 5], p).unwrap();
        assert_eq!(dx.shape(), &[0, 3, 5, 5]);
        let dw = conv2d_backward_weight(&x, &y, [4, 3, 5, 5], p).unwrap();
        assert_eq!(dw.shape(), &[4, 3, 5, 5]);
        assert!(dw.to_vec().unwrap().iter().all(|&v| v == 0.0));
    }
}
