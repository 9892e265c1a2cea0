// conv.cu — 2-D convolution (NCHW activations, [O, C, kh, kw] weights, no bias) as implicit GEMM.
//
// Every direction of the convolution is a matrix product whose operands are never materialised: the
// kernels gather the "im2col" matrix straight from the image while they fill shared-memory tiles.
//
//   forward          y[n,o,oh,ow]  = sum_{c,r,s} w[o,c,r,s] * x[n,c, oh*SH-PH+r, ow*SW-PW+s]
//                    GEMM  M = O,  N = N*Ho*Wo (output pixels),  K = C*kh*kw
//   backward data    dx[n,c,ih,iw] = sum_{o,r,s} w[o,c,r,s] * dy[n,o, (ih+PH-r)/SH, (iw+PW-s)/SW]
//                    (only taps where the division is exact and in range)
//                    GEMM  M = C,  N = N*H*W (input pixels),    K = O*kh*kw
//   backward weight  dw[o,c,r,s]   = sum_{n,oh,ow} dy[n,o,oh,ow] * x[n,c, oh*SH-PH+r, ow*SW-PW+s]
//                    GEMM  M = O,  N = C*kh*kw,                 K = N*Ho*Wo
//
// conv_transpose2d has no code of its own: its forward is conv2d_bwd_data and its input gradient is conv2d_fwd.
//
// Batch-norm statistics in the epilogue. A convolution that feeds a training-mode batch norm can hand it the
// per-channel statistics of its output: after storing its tile, a block computes each channel row's count, mean
// and sum of squared deviations over the tile's pixels from the accumulators still in registers
// (tile_stats.cuh), and batch norm merges those parts instead of reading the output once more.
//
// The activation in the epilogue. A forward convolution with no batch norm after it (DCGAN's first D layer) stores
// LeakyReLU or ReLU of its sums (act.cuh's epilogue_act), so the activation costs no pass of its own over the
// output: the same bits as the activation kernel, one write instead of a write, a read and a write.
// Its backward folds into the next convolution's: that convolution's backward data, whose output is the gradient
// of the activation's output, stores it already taken through the activation (act.cuh's epilogue_act_bwd, which
// reads the activation's output at the same index), so the activation's backward costs no pass of its own either.
//
// Stride-phase decomposition (backward data). With stride S, an input row ih only receives taps r with
// r ≡ (ih+PH) mod S. Naively looping over all r and skipping inexact ones wastes (S-1)/S of the work per
// dimension (3/4 for DCGAN's 4x4 stride-2 layers). Instead, blockIdx.z selects a phase (rh, rw) = the residues
// of (ih+PH, iw+PW) mod (SH, SW); the block only covers input pixels of that phase and only the taps
// r = rh + SH*t, s = rw + SW*u, which makes each phase a dense GEMM with K = O * ceil(kh/SH) * ceil(kw/SW).
// A phase with no taps (stride larger than the kernel) has K = 0 and its pixels get zeros.
//
// Split-K (forward and backward weight). When the output is small (the discriminator's last layers, or dw whose
// reduction runs over the whole batch) the M x N tiles alone cannot fill the GPU. gridDim.z then splits the
// reduction into contiguous K ranges; split z writes its partial product into out + z*numel(out), and
// conv2d_splitk_reduce_f32 adds the partials in a fixed order. No float atomics: results are bitwise
// reproducible run to run.
//
// Tiling (v1, portable f32 FMA): 256 threads compute a BM x BN output tile; each K step stages a BK x BM slice
// of A and a BK x BN slice of B in shared memory (both stored k-major so the inner product reads rows), and
// each thread accumulates a TM x TN micro-tile in registers. Global loads for step k+1 are issued into
// registers before the FMAs of step k, so memory latency overlaps the arithmetic. Two tile shapes: 64x64
// (default) and 16x128 for narrow M (e.g. 3 image channels in the generator's last layer, 1 output channel in
// the discriminator's last layer), where a 64-row tile would be mostly padding.
// The f32 kernels use no inline PTX: the same source runs on the GPU (NVRTC) and on the CPU emulation.
//
// Tensor-core kernels (*_tf32, *_bf16, *_fp16: precisions TF32, Bf16, Fp16 in conv.rs): the same GEMMs, K order
// and geometry, with their own division-free gathers feeding a cp.async pipeline and the inner product on
// mma.sync m16n8k8 TF32 or m16n8k16 bf16 / f16 (section "tensor-core path" below). Their inline PTX (mma.sync,
// cvt.rna.tf32, cvt.rn.{bf16x2,f16x2}; cp.async, ldmatrix) is inside mma.cuh and async_copy.cuh under
// `#if __CUDA_ARCH__ >= 800`; the emulation runs those headers' portable fallbacks, which gather fragments with
// warp shuffles, round operands bit-exactly like cvt and complete copies at their wait.

#include "common.cuh"
#include "async_copy.cuh"
#include "mma.cuh"
#include "tile_stats.cuh"
#include "act.cuh"
#include "conv_tc.cuh"

namespace conv {

constexpr int THREADS = 256;  // every kernel in this file is launched with blockDim = (256, 1, 1)
constexpr int BK = 16;        // reduction depth of one shared-memory tile
// Rows of the shared tiles are padded by 4 floats: it keeps each row 16-byte aligned (vector reads of the
// micro-tile) and spreads the k-major stores of k-contiguous loads over more banks (16-way -> 2-way conflict).
constexpr int PAD = 4;

// Thread layout of a BM x BN tile: TX threads across columns, TY down rows; each thread owns TM rows
// (contiguous, ty*TM + i) and TN columns (strided, tx + TX*j, so a warp's stores of one j are contiguous).
template <int BM, int BN>
struct TileShape {
    static constexpr int TN = 4;
    static constexpr int TX = BN / TN;
    static constexpr int TY = THREADS / TX;
    static constexpr int TM = BM / TY;
    static_assert(TX * TY == THREADS && TM * TY == BM, "tile does not map onto 256 threads");
};

// The shared main loop: acc += A[m0.., k_begin:k_end] * B[k_begin:k_end, n0..].
// LoadA / LoadB know how to gather their operand from global memory (fetch: global -> registers, zero outside
// the matrix) and how to lay it into the k-major shared tile (stash: registers -> shared).
template <int BM, int BN, class LoadA, class LoadB>
__device__ __forceinline__ void gemm_mainloop(LoadA& a, LoadB& b, int k_begin, int k_end,
                                              float (&As)[BK][BM + PAD], float (&Bs)[BK][BN + PAD],
                                              float (&acc)[TileShape<BM, BN>::TM][TileShape<BM, BN>::TN]) {
    typedef TileShape<BM, BN> T;
    const int tx = threadIdx.x % T::TX;
    const int ty = threadIdx.x / T::TX;

    if (k_begin < k_end) {
        a.fetch(k_begin);
        b.fetch(k_begin);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        a.stash(As);
        b.stash(Bs);
        __syncthreads();
        // Prefetch the next slice into registers; the loads are in flight during the FMAs below.
        if (k0 + BK < k_end) {
            a.fetch(k0 + BK);
            b.fetch(k0 + BK);
        }
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float af[T::TM], bf[T::TN];
#pragma unroll
            for (int i = 0; i < T::TM; ++i) af[i] = As[kk][ty * T::TM + i];
#pragma unroll
            for (int j = 0; j < T::TN; ++j) bf[j] = Bs[kk][tx + T::TX * j];
#pragma unroll
            for (int i = 0; i < T::TM; ++i)
#pragma unroll
                for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(af[i], bf[j], acc[i][j]);
        }
        __syncthreads();  // everyone is done reading the tile before the next stash overwrites it
    }
}

// ---- operand loaders ---------------------------------------------------------------------------------------
// Naming: a loader with a "k-contiguous" mapping gives consecutive threads consecutive k (coalesced when memory
// runs along k); a "column-contiguous" one gives consecutive threads consecutive tile columns/rows.

// Forward A: the weights as a row-major [O, K] matrix (K = C*kh*kw is the contiguous axis).
template <int BM>
struct FwdWeights {
    static constexpr int PER = BK * BM / THREADS;  // elements this thread moves per tile
    static constexpr int RSTEP = THREADS / BK;
    const float* w;
    int M, K, k_end;
    int kk, row0;  // this thread's tile column (k) and first global row
    float v[PER];

    __device__ FwdWeights(const float* w_, int M_, int K_, int k_end_, int m0)
        : w(w_), M(M_), K(K_), k_end(k_end_), kk(threadIdx.x % BK), row0(m0 + threadIdx.x / BK) {}

    __device__ void fetch(int k0) {
        const int k = k0 + kk;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int m = row0 + RSTEP * i;
            v[i] = (k < k_end && m < M) ? __ldg(w + (size_t)m * K + k) : 0.0f;
        }
    }
    template <int LD>
    __device__ void stash(float (&s)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[kk][threadIdx.x / BK + RSTEP * i] = v[i];
    }
};

// Forward B: the implicit im2col matrix [K = (c,r,s), Ncol = (n,oh,ow)]. A thread keeps one column (one output
// pixel) for the whole loop, so its pixel decode is done once; consecutive threads take consecutive pixels,
// which read x along a row (coalesced for stride 1, every other float for stride 2).
template <int BN>
struct FwdImage {
    static constexpr int PER = BK * BN / THREADS;
    static constexpr int KSTEP = THREADS / BN;
    const float* xn;  // start of image n of this thread's pixel
    int H, W, KHW, KW, k_end;
    int ih0, iw0;  // top-left input coordinate of the receptive field (may be negative: padding)
    bool col_ok;
    int col, krow;
    float v[PER];

    __device__ FwdImage(const float* x, int C, int H_, int W_, int KH, int KW_, int Ho, int Wo, int SH, int SW,
                        int PH, int PW, int ncols, int col0, int k_end_)
        : H(H_), W(W_), KHW(KH * KW_), KW(KW_), k_end(k_end_), col(threadIdx.x % BN), krow(threadIdx.x / BN) {
        const int p = col0 + col;
        col_ok = p < ncols;
        const int pp = col_ok ? p : 0;
        const int n = pp / (Ho * Wo);
        const int pix = pp - n * (Ho * Wo);
        const int oh = pix / Wo;
        const int ow = pix - oh * Wo;
        xn = x + (size_t)n * C * H * W;
        ih0 = oh * SH - PH;
        iw0 = ow * SW - PW;
    }

    __device__ void fetch(int k0) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int k = k0 + krow + KSTEP * i;
            float val = 0.0f;
            if (col_ok && k < k_end) {
                const int c = k / KHW;
                const int rs = k - c * KHW;
                const int r = rs / KW;
                const int ih = ih0 + r;
                const int iw = iw0 + (rs - r * KW);
                if ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W)
                    val = __ldg(xn + ((size_t)c * H + ih) * W + iw);
            }
            v[i] = val;
        }
    }
    template <int LD>
    __device__ void stash(float (&s)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[krow + KSTEP * i][col] = v[i];
    }
};

// Backward-data A for one stride phase (rh, rw): A[c, k = (o,t,u)] = w[o, c, rh + SH*t, rw + SW*u].
template <int BM>
struct BwdDataWeights {
    static constexpr int PER = BK * BM / THREADS;
    static constexpr int RSTEP = THREADS / BK;
    const float* w;
    int M, KHW, KW, RtSt, St, rh, rw, SH, SW, k_end;
    int kk, row0;
    float v[PER];

    __device__ BwdDataWeights(const float* w_, int C, int KH, int KW_, int Rt, int St_, int rh_, int rw_,
                              int SH_, int SW_, int k_end_, int m0)
        : w(w_), M(C), KHW(KH * KW_), KW(KW_), RtSt(Rt * St_), St(St_), rh(rh_), rw(rw_), SH(SH_), SW(SW_),
          k_end(k_end_), kk(threadIdx.x % BK), row0(m0 + threadIdx.x / BK) {}

    __device__ void fetch(int k0) {
        const int k = k0 + kk;
        if (k >= k_end) {
#pragma unroll
            for (int i = 0; i < PER; ++i) v[i] = 0.0f;
            return;
        }
        const int o = k / RtSt;
        const int tu = k - o * RtSt;
        const int t = tu / St;
        const int u = tu - t * St;
        // w[o, c, r, s] with c = row: the rows of one k are KHW apart.
        const float* wk = w + (size_t)o * M * KHW + (rh + SH * t) * KW + (rw + SW * u);
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int m = row0 + RSTEP * i;
            v[i] = m < M ? __ldg(wk + (size_t)m * KHW) : 0.0f;
        }
    }
    template <int LD>
    __device__ void stash(float (&s)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[kk][threadIdx.x / BK + RSTEP * i] = v[i];
    }
};

// Backward-data B for one phase: B[k = (o,t,u), col = (n, q, v)] = dy[n, o, ohb(q) - t, owb(v) - u], where
// input pixel (ih, iw) = (ih0 + SH*q, iw0 + SW*v) and ohb = (ih + PH - rh) / SH (exact by construction).
// Consecutive threads take consecutive v, i.e. consecutive ow: coalesced reads of dy.
template <int BN>
struct BwdDataGrad {
    static constexpr int PER = BK * BN / THREADS;
    static constexpr int KSTEP = THREADS / BN;
    const float* dyn;  // dy + n*O*Ho*Wo
    int Ho, Wo, RtSt, St, k_end;
    int ohb, owb;
    bool col_ok;
    int col, krow;
    float v[PER];

    __device__ BwdDataGrad(const float* dy, int O, int Ho_, int Wo_, int St_, int RtSt_, int Hq, int Wq,
                           int ohb0, int owb0, int ncols, int col0, int k_end_)
        : Ho(Ho_), Wo(Wo_), RtSt(RtSt_), St(St_), k_end(k_end_), col(threadIdx.x % BN), krow(threadIdx.x / BN) {
        const int p = col0 + col;
        col_ok = p < ncols;
        const int pp = col_ok ? p : 0;
        const int n = pp / (Hq * Wq);
        const int qv = pp - n * (Hq * Wq);
        const int q = qv / Wq;
        dyn = dy + (size_t)n * O * Ho * Wo;
        ohb = ohb0 + q;
        owb = owb0 + (qv - q * Wq);
    }

    __device__ void fetch(int k0) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int k = k0 + krow + KSTEP * i;
            float val = 0.0f;
            if (col_ok && k < k_end) {
                const int o = k / RtSt;
                const int tu = k - o * RtSt;
                const int t = tu / St;
                const int oh = ohb - t;
                const int ow = owb - (tu - t * St);
                if ((unsigned)oh < (unsigned)Ho && (unsigned)ow < (unsigned)Wo)
                    val = __ldg(dyn + ((size_t)o * Ho + oh) * Wo + ow);
            }
            v[i] = val;
        }
    }
    template <int LD>
    __device__ void stash(float (&s)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[krow + KSTEP * i][col] = v[i];
    }
};

// Backward-weight A: dy viewed as [O, P] with P = N*Ho*Wo; memory runs along P within one image, so the
// mapping is k-contiguous and the (n, pixel) decode of this thread's k is done once per tile.
template <int BM>
struct BwdWeightGrad {
    static constexpr int PER = BK * BM / THREADS;
    static constexpr int RSTEP = THREADS / BK;
    const float* dy;
    int M, HoWo, k_end;
    int kk, row0;
    float v[PER];

    __device__ BwdWeightGrad(const float* dy_, int O, int HoWo_, int k_end_, int m0)
        : dy(dy_), M(O), HoWo(HoWo_), k_end(k_end_), kk(threadIdx.x % BK), row0(m0 + threadIdx.x / BK) {}

    __device__ void fetch(int k0) {
        const int p = k0 + kk;
        if (p >= k_end) {
#pragma unroll
            for (int i = 0; i < PER; ++i) v[i] = 0.0f;
            return;
        }
        const int n = p / HoWo;
        const float* dyp = dy + (size_t)n * M * HoWo + (p - n * HoWo);
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int m = row0 + RSTEP * i;
            v[i] = m < M ? __ldg(dyp + (size_t)m * HoWo) : 0.0f;
        }
    }
    template <int LD>
    __device__ void stash(float (&s)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[kk][threadIdx.x / BK + RSTEP * i] = v[i];
    }
};

// Backward-weight B: the im2col matrix transposed, [P = (n,oh,ow), Ncol = (c,r,s)]. A thread keeps the same
// PER columns (weight taps) for the whole loop and decodes them once; its k (pixel) changes per tile and is
// decoded once per tile. Consecutive threads take consecutive pixels: reads along an image row.
template <int BN>
struct BwdWeightImage {
    static constexpr int PER = BK * BN / THREADS;
    static constexpr int CSTEP = THREADS / BK;
    const float* x;
    int C, H, W, Ho, Wo, SH, SW, PH, PW, k_end;
    int kk, col0t;
    int off[PER], r[PER], s[PER];  // per column: c*H*W + r*W + s, and the tap (r, s); r = -1 marks "no column"
    float v[PER];

    __device__ BwdWeightImage(const float* x_, int C_, int H_, int W_, int KH, int KW, int Ho_, int Wo_, int SH_,
                              int SW_, int PH_, int PW_, int ncols, int col0, int k_end_)
        : x(x_), C(C_), H(H_), W(W_), Ho(Ho_), Wo(Wo_), SH(SH_), SW(SW_), PH(PH_), PW(PW_), k_end(k_end_),
          kk(threadIdx.x % BK), col0t(threadIdx.x / BK) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int cidx = col0 + col0t + CSTEP * i;
            if (cidx < ncols) {
                const int c = cidx / (KH * KW);
                const int rs = cidx - c * (KH * KW);
                r[i] = rs / KW;
                s[i] = rs - r[i] * KW;
                off[i] = (c * H + r[i]) * W + s[i];
            } else {
                r[i] = -1;
                s[i] = 0;
                off[i] = 0;
            }
        }
    }

    __device__ void fetch(int k0) {
        const int p = k0 + kk;
        if (p >= k_end) {
#pragma unroll
            for (int i = 0; i < PER; ++i) v[i] = 0.0f;
            return;
        }
        const int n = p / (Ho * Wo);
        const int pix = p - n * (Ho * Wo);
        const int oh = pix / Wo;
        const int ihb = oh * SH - PH;
        const int iwb = (pix - oh * Wo) * SW - PW;
        const float* xn = x + (size_t)n * C * H * W;
        const int base = ihb * W + iwb;  // negative near the top/left border; only used for in-range taps
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int ih = ihb + r[i];
            const int iw = iwb + s[i];
            const bool ok = r[i] >= 0 && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
            v[i] = ok ? __ldg(xn + (off[i] + base)) : 0.0f;
        }
    }
    template <int LD>
    __device__ void stash(float (&s_)[BK][LD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s_[kk][col0t + CSTEP * i] = v[i];
    }
};

// ---- batch-norm statistics of the output (tile_stats.cuh) ----------------------------------------------------

// Part `tile` of `tiles` of every row of this block's BM x BN output tile: a row's TX contributors are the
// threads with the same ty, each holding TN of the row's columns. `red` is the B tile, free after the main loop.
template <int BM, int BN>
__device__ __forceinline__ void write_stats(const float (&acc)[TileShape<BM, BN>::TM][TileShape<BM, BN>::TN],
                                            float* red, int ncols, int col0, int m0, int rows, int tile, int tiles,
                                            float* __restrict__ parts) {
    typedef TileShape<BM, BN> T;
    static_assert(BM * (T::TX + 1) <= BK * (BN + PAD), "the statistics need more shared memory than the B tile");
    static_assert(THREADS >= BM, "write_tile_stats needs a thread per row");
    const int tx = threadIdx.x % T::TX, ty = threadIdx.x / T::TX;
    const auto row_sums = [&](const float* mean, float* out) {
#pragma unroll
        for (int i = 0; i < T::TM; ++i) {
            const int r = ty * T::TM + i;
            const float mu = mean != nullptr ? mean[r] : 0.0f;
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < T::TN; ++j) {
                if (col0 + tx + T::TX * j >= ncols) continue;
                const float d = acc[i][j] - mu;
                s += mean != nullptr ? d * d : d;
            }
            out[r * T::TX + tx] = s;
        }
    };
    write_tile_stats<BM, T::TX>(red, min(BN, ncols - col0), m0, rows, tile, tiles, parts, row_sums);
}

// ---- kernel bodies -----------------------------------------------------------------------------------------

template <int BM, int BN>
__device__ __forceinline__ void fwd_body(const float* __restrict__ x, const float* __restrict__ w,
                                         float* __restrict__ y, float* __restrict__ stats, int N, int C, int H,
                                         int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                         int PW, int k_chunk, int act, float slope, float (&As)[BK][BM + PAD],
                                         float (&Bs)[BK][BN + PAD]) {
    typedef TileShape<BM, BN> T;
    const int K = C * KH * KW;
    const int ncols = N * Ho * Wo;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);

    FwdWeights<BM> a(w, O, K, k_end, m0);
    FwdImage<BN> b(x, C, H, W, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, col0, k_end);
    float acc[T::TM][T::TN] = {};
    gemm_mainloop<BM, BN>(a, b, k_begin, k_end, As, Bs, acc);

    // Split z writes its partial sums into its own copy of y.
    float* out = y + (size_t)blockIdx.z * N * O * Ho * Wo;
    const int tx = threadIdx.x % T::TX, ty = threadIdx.x / T::TX;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
        const int p = col0 + tx + T::TX * j;
        if (p >= ncols) continue;
        const int n = p / (Ho * Wo);
        float* yp = out + (size_t)n * O * Ho * Wo + (p - n * Ho * Wo);
#pragma unroll
        for (int i = 0; i < T::TM; ++i) {
            const int o = m0 + ty * T::TM + i;
            if (o < O) yp[(size_t)o * Ho * Wo] = epilogue_act(act, slope, acc[i][j]);
        }
    }
    if (stats != nullptr) write_stats<BM, BN>(acc, &Bs[0][0], ncols, col0, m0, O, blockIdx.x, gridDim.x, stats);
}

template <int BM, int BN>
__device__ __forceinline__ void bwd_data_body(const float* __restrict__ dy, const float* __restrict__ w,
                                              float* __restrict__ dx, float* __restrict__ stats, int N, int C,
                                              int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                              int PH, int PW, const float* __restrict__ act_y, int act,
                                              float slope, float (&As)[BK][BM + PAD],
                                              float (&Bs)[BK][BN + PAD]) {
    typedef TileShape<BM, BN> T;
    // This block's phase: input pixels with (ih + PH) % SH == rh and (iw + PW) % SW == rw.
    const int rh = blockIdx.z / SW;
    const int rw = blockIdx.z - rh * SW;
    const int ih0 = ((rh - PH) % SH + SH) % SH;  // first input row of the phase
    const int iw0 = ((rw - PW) % SW + SW) % SW;
    const int Hq = ih0 < H ? (H - ih0 + SH - 1) / SH : 0;  // rows / columns of the phase
    const int Wq = iw0 < W ? (W - iw0 + SW - 1) / SW : 0;
    const int Rt = rh < KH ? (KH - rh + SH - 1) / SH : 0;  // taps r = rh + SH*t of the phase
    const int St = rw < KW ? (KW - rw + SW - 1) / SW : 0;
    const int ncols = N * Hq * Wq;
    const int col0 = blockIdx.x * BN;
    const int m0 = blockIdx.y * BM;
    // Statistics parts: one per (phase, column tile).
    const int tile = blockIdx.z * gridDim.x + blockIdx.x, tiles = gridDim.z * gridDim.x;
    // The grid covers the largest phase; blocks past this phase's pixels have nothing to do. The test is
    // uniform over the block, so returning before the first __syncthreads is safe.
    if (col0 >= ncols) {
        if (stats != nullptr) write_empty_tile_stats<BM>(m0, C, tile, tiles, stats);
        return;
    }
    const int K = O * Rt * St;

    BwdDataWeights<BM> a(w, C, KH, KW, Rt, St, rh, rw, SH, SW, K, m0);
    BwdDataGrad<BN> b(dy, O, Ho, Wo, St, Rt * St, Hq, Wq, (ih0 + PH - rh) / SH, (iw0 + PW - rw) / SW, ncols,
                      col0, K);
    float acc[T::TM][T::TN] = {};
    gemm_mainloop<BM, BN>(a, b, 0, K, As, Bs, acc);

    const int tx = threadIdx.x % T::TX, ty = threadIdx.x / T::TX;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
        const int p = col0 + tx + T::TX * j;
        if (p >= ncols) continue;
        const int n = p / (Hq * Wq);
        const int qv = p - n * (Hq * Wq);
        const int q = qv / Wq;
        const int ih = ih0 + SH * q;
        const int iw = iw0 + SW * (qv - q * Wq);
        const size_t at = (size_t)n * C * H * W + ih * W + iw;
#pragma unroll
        for (int i = 0; i < T::TM; ++i) {
            const int c = m0 + ty * T::TM + i;
            const size_t e = at + (size_t)c * H * W;
            if (c < C) dx[e] = epilogue_act_bwd(act, slope, act_y, e, acc[i][j]);
        }
    }
    if (stats != nullptr) write_stats<BM, BN>(acc, &Bs[0][0], ncols, col0, m0, C, tile, tiles, stats);
}

template <int BM, int BN>
__device__ __forceinline__ void bwd_weight_body(const float* __restrict__ x, const float* __restrict__ dy,
                                                float* __restrict__ dw, int N, int C, int H, int W, int O, int KH,
                                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                                int k_chunk, float (&As)[BK][BM + PAD],
                                                float (&Bs)[BK][BN + PAD]) {
    typedef TileShape<BM, BN> T;
    const int P = N * Ho * Wo;
    const int ncols = C * KH * KW;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(P, k_begin + k_chunk);

    BwdWeightGrad<BM> a(dy, O, Ho * Wo, k_end, m0);
    BwdWeightImage<BN> b(x, C, H, W, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, col0, k_end);
    float acc[T::TM][T::TN] = {};
    gemm_mainloop<BM, BN>(a, b, k_begin, k_end, As, Bs, acc);

    float* out = dw + (size_t)blockIdx.z * O * ncols;
    const int tx = threadIdx.x % T::TX, ty = threadIdx.x / T::TX;
#pragma unroll
    for (int i = 0; i < T::TM; ++i) {
        const int o = m0 + ty * T::TM + i;
        if (o >= O) continue;
#pragma unroll
        for (int j = 0; j < T::TN; ++j) {
            const int col = col0 + tx + T::TX * j;
            if (col < ncols) out[(size_t)o * ncols + col] = acc[i][j];
        }
    }
}


// ---- tensor-core path (TF32 / bf16 / fp16 operands, f32 accumulation) ----------------------------------------
// The same three GEMMs (same K order, stride phases and split-K as above), on tensor cores: mma.sync m16n8k8 with
// TF32 operands or m16n8k16 with bf16 / fp16 operands (mma.cuh, tc::Op), fed by a multi-stage cp.async pipeline
// (async_copy.cuh). The description below is the TF32 form; the 16-bit one differs only where mainloop says.
//
// Main loop (tc::mainloop): STAGES shared-memory stages of a BK = 32 slice of A (BM x BK) and B (BN x BK). The
// copies of slice s + STAGES - 1 are issued while slice s is multiplied; one barrier per slice: after it, every
// thread has (a) waited for its own copies of the slice it is about to read and (b) finished reading the stage
// the next copies overwrite (read in the previous trip).
//
// Both tiles are stored with k contiguous (A as [m][k], B as [n][k]), rows padded to LDS = 36 floats: 144-byte
// rows keep every 4-float group 16-byte aligned, and 8 consecutive rows start in 8 different 4-bank groups, so
// ldmatrix (8 rows of 16 bytes per phase) is conflict-free. ldmatrix.x4 on that layout hands each lane exactly
// its m16n8k8 TF32 fragment (async_copy.cuh). The data land in shared memory unrounded and are rounded with
// cvt.rna once per use as an operand, as the CPU reference rounds: A fragments right after ldmatrix; B fragments
// likewise on the 64-row tile, while on the 128-row tile (4 warps read each B element) the thread that copied a B
// element rounds it in shared memory before the barrier (Tile::ROUND_B_AT_COPY).
//
// Gathers without division: every thread owns a fixed set of (k value, column) positions of the tile. Column
// state (its pixel or weight tap) is decoded once; k state advances by BK per slice: mixed-radix digits
// (Digits, at most one carry per digit) or, for the forward and backward-data B gathers, a channel / tap pair
// whose taps index a per-block table in shared memory (TapWalk). An element is then two adds, two unsigned
// compares, an add for the address and one cp.async (4 bytes, src-size 0 = zero fill when masked). Forward
// weights ([O, K], K contiguous) use 16-byte cp.async when K is a multiple of 4 and w is 16-byte aligned.
//
// Tiles: BM x BN = 64 x 128 on 128 threads (4 warps, 2 x 2) for GEMMs of up to 64 rows, 128 x 128 on 256 threads
// (8 warps, 4 x 2; the *_m128_tf32 kernels) above. Each warp owns a 32 x 64 warp tile = 2 x 8 mma tiles (64 f32
// accumulators per thread) and reads 2 A and 4 B ldmatrix.x4 per 16 mma. Rows (channels) are 64..512 in DCGAN's
// hidden layers, so neither tile pads rows there; columns are pixels (or taps for backward weight), the long
// side. Shared memory (dynamic, conv.rs's TC_TILES): 3 stages x (BM + 128) x 36 x 4 B = 82944 or 110592 B, plus
// the tap table; two blocks per SM fit. The M <= 16 GEMMs stay on the narrow f32 kernels (conv.rs).
namespace tc {
constexpr int BK = 32;
constexpr int STAGES = 3;
constexpr int LDS = BK + 4;  // floats per shared row (both tiles)
// The two row-tile heights: BM = 64 (4 warps, 2 x 2) for GEMMs of up to 64 rows, BM = 128 (8 warps, 4 x 2) for
// taller ones, which halves each thread's share of the B gather per mma.
template <int BM_>
struct Tile {
    static constexpr int BM = BM_;
    static constexpr int THREADS = tile_threads(BM);  // conv.rs launches the kernel with this block
    static constexpr int A_BYTES = BM * LDS * 4;
    static constexpr int STAGE_BYTES = (BM + BN) * LDS * 4;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
    // Where B is rounded to TF32. Every B element is read by BM / WM warps, each rounding it again at fragment
    // load (2 instructions per element and read). With 4 readers it is cheaper for the thread that copied it to
    // round it once in shared memory (load, 2, store) between its wait and the barrier.
    static constexpr bool ROUND_B_AT_COPY = BM / WM > 2;
};
static_assert(Tile<64>::THREADS == 128 && Tile<128>::THREADS == 256, "conv.rs's TC_TILES must match");
static_assert(Tile<64>::SMEM_BYTES == 82944 && Tile<128>::SMEM_BYTES == 110592, "conv.rs's TC_TILES must match");
// Positions along the two image axes and an element offset, for N k values or N columns of a gather.
template <int N>
struct Coords {
    int r[N], s[N], off[N];
};

// This thread's NK x NC share of an im2col-style tile: element (i, j) (k value i, column j) is
// src[k.off[i] + col.off[j]] when kok[i] and (k.r[i] + col.r[j], k.s[i] + col.s[j]) lies in [0, H) x [0, W),
// else 0; it lands at dst + 4 * (i * KSTRIDE + j * CSTRIDE) bytes.
template <int NK, int NC, int KSTRIDE, int CSTRIDE>
__device__ __forceinline__ void gather(smem_addr dst, const float* src, int H, int W, const Coords<NK>& k,
                                       const bool (&kok)[NK], const Coords<NC>& col) {
#pragma unroll
    for (int i = 0; i < NK; ++i)
#pragma unroll
        for (int j = 0; j < NC; ++j) {
            const bool ok = kok[i] && (unsigned)(k.r[i] + col.r[j]) < (unsigned)H &&
                            (unsigned)(k.s[i] + col.s[j]) < (unsigned)W;
            cp_async_4(dst + 4 * (i * KSTRIDE + j * CSTRIDE), src + (k.off[i] + col.off[j]), ok);
        }
}

// The B k values of the forward and backward-data gathers: kb + 4i (i < 8), with k = q * R + x (x < R: the tap
// within a channel, q the channel). A per-block table in shared memory (fill_tap_table) maps x + 4i, which may
// run up to 28 past R, to the value's tap bit and element offset relative to channel q; per slice the walk
// carries (q, x) of kb across R once and reads one 8-byte entry per k value: no division and no per-value digits.
constexpr int TAP_TABLE_EXTRA = 28;  // 4 * (8 - 1)
struct TapWalk {
    const int2* tab;
    int q, x, dq, dx, R, plane;
    __device__ void init(const int2* tab_, int kb, int R_, int plane_) {
        tab = tab_;
        R = R_;
        plane = plane_;
        q = kb / R;
        x = kb - q * R;
        dq = BK / R;
        dx = BK - dq * R;
    }
    // Tap bit and element offset of each k value; a k value at or past k_end gets no bit (its elements are 0).
    __device__ void get(unsigned (&bit)[8], int (&off)[8], int kb, int k_end) const {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int2 e = tab[x + 4 * i];
            bit[i] = kb + 4 * i < k_end ? (unsigned)e.x : 0u;
            off[i] = q * plane + e.y;
        }
    }
    __device__ void advance() {
        x += dx;
        q += dq;
        if (x >= R) {
            x -= R;
            ++q;
        }
    }
};

// Entries x < R + TAP_TABLE_EXTRA of a TapWalk table, for taps t = x mod R = a * R0 + b of channel x / R:
// (1 << t, (x / R) * plane + sgn (a * row + b)), the tap's bit in a column's tap_mask and the element offset.
// Every thread of the block takes part; a barrier must follow before the table is read.
__device__ __forceinline__ void fill_tap_table(int2* tab, int R, int R0, int sgn, int plane, int row) {
    for (int x = threadIdx.x; x < R + TAP_TABLE_EXTRA; x += blockDim.x) {
        const int q = x / R;
        const int t = x - q * R;
        const int a = t / R0;
        tab[x] = make_int2((int)(1u << t), q * plane + sgn * (a * row + t - a * R0));
    }
}

// Columns of a tap-table gather: each column's tap_mask and element offset.
template <int N>
struct TapCols {
    unsigned mask[N];
    int off[N];
};

// This thread's NK x NC share of a forward / backward-data B tile: element (i, j) is src[off[i] + col.off[j]]
// when bit[i] & col.mask[j] (k value i's tap lands in the image at column j), else 0; it lands at
// dst + 4 * (i * KSTRIDE + j * CSTRIDE) bytes.
template <int NK, int NC, int KSTRIDE, int CSTRIDE>
__device__ __forceinline__ void gather_taps(smem_addr dst, const float* src, const unsigned (&bit)[NK],
                                            const int (&off)[NK], const TapCols<NC>& col) {
#pragma unroll
    for (int i = 0; i < NK; ++i)
#pragma unroll
        for (int j = 0; j < NC; ++j)
            cp_async_4(dst + 4 * (i * KSTRIDE + j * CSTRIDE), src + (off[i] + col.off[j]), (bit[i] & col.mask[j]) != 0);
}

// Rounds to TF32, in place, the elements gather<NK, NC, KSTRIDE, CSTRIDE> copied to dst (once they have landed).
template <int NK, int NC, int KSTRIDE, int CSTRIDE>
__device__ __forceinline__ void round_gathered(float* dst) {
#pragma unroll
    for (int i = 0; i < NK; ++i)
#pragma unroll
        for (int j = 0; j < NC; ++j) dst[i * KSTRIDE + j * CSTRIDE] = round_tf32(dst[i * KSTRIDE + j * CSTRIDE]);
}

// An A operand read one float at a time: element (row, k) = src[row * ld + koff(k)]. Thread t moves k value
// (t & 31) of the slice for rows (t >> 5) + (THREADS / 32) i: a warp reads 32 consecutive k of one row
// (consecutive addresses where k is contiguous) and writes 32 consecutive words of a shared row (no conflict).
template <int BM>
struct RowsA {
    static constexpr int RSTEP = Tile<BM>::THREADS / 32;
    static constexpr int ROWS = BM / RSTEP;  // 16
    const float* src;
    int row0, M, ld;
    smem_addr dst;  // offset of this thread's first element in a stage
    __device__ RowsA(const float* src_, int M_, int ld_, int m0)
        : src(src_), row0(m0 + (threadIdx.x >> 5)), M(M_), ld(ld_),
          dst(((threadIdx.x >> 5) * LDS + (threadIdx.x & 31)) * 4) {}
    __device__ int k_of_thread() const { return threadIdx.x & 31; }
    __device__ void load(smem_addr stage, int koff, bool kok) const {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int row = row0 + RSTEP * i;
            const bool ok = kok && row < M;
            cp_async_4(stage + dst + 4 * (RSTEP * i * LDS), src + (row * ld + koff), ok);
        }
    }
};

// Forward: A = w as [O, K]; B = im2col(x) [K = (c, r, s), col = (n, oh, ow)].
// B mapping: in warp w, lane L takes columns 8w + (L & 7) + (THREADS / 4) j (j < NC) and k values (L >> 3) + 4i
// (i < 8): 8 consecutive pixels x 4 k per warp instruction (32-byte runs of x at stride 1), shared words
// 4 * col + k mod 32 all distinct. A: 16-byte copies when possible (thread t: k 4 (t & 7), rows (t >> 3) +
// (THREADS / 8) i), else RowsA.
template <int BM>
struct FwdLoader {
    typedef Tile<BM> T;
    static constexpr int NC = BN * BK / T::THREADS / 8;
    const float* w;
    const float* x;
    int M, K, k_end, H, W, KH, KW;
    bool vec;
    int m0;
    int ka;        // A: k of this thread's first element in the current slice
    RowsA<BM> rows;  // A when !vec
    int kb;        // B: k of this thread's k value 0 in the current slice
    TapWalk taps;  // B: tap bits and offsets of the k values
    TapCols<NC> col;
    smem_addr bdst;

    __device__ FwdLoader(const float* x_, const float* w_, int C, int H_, int W_, int O, int KH_, int KW_, int Ho,
                         int Wo, int SH, int SW, int PH, int PW, int ncols, int m0_, int col0, int k_begin,
                         int k_end_, const int2* tab)
        : w(w_), x(x_), M(O), K(C * KH_ * KW_), k_end(k_end_), H(H_), W(W_), KH(KH_), KW(KW_), m0(m0_),
          rows(w_, O, C * KH_ * KW_, m0_) {
        const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
        vec = K % 4 == 0 && ((unsigned long long)w & 15) == 0;
        ka = k_begin + (vec ? 4 * (t & 7) : rows.k_of_thread());
        kb = k_begin + (lane >> 3);
        taps.init(tab, kb, KH * KW, H * W);
#pragma unroll
        for (int j = 0; j < NC; ++j) {
            const int p = col0 + 8 * warp + (lane & 7) + T::THREADS / 4 * j;
            int r = FAR, s = 0;
            col.off[j] = 0;
            if (p < ncols) {
                const int n = p / (Ho * Wo);
                const int pix = p - n * (Ho * Wo);
                const int oh = pix / Wo;
                r = oh * SH - PH;
                s = (pix - oh * Wo) * SW - PW;
                col.off[j] = n * C * H * W + r * W + s;
            }
            col.mask[j] = tap_mask(r, s, KH * KW, KW, 1, H, W);
        }
        bdst = T::A_BYTES + ((8 * warp + (lane & 7)) * LDS + (lane >> 3)) * 4;
    }
    __device__ void load(smem_addr stage) const {
        if (vec) {
            const int t = threadIdx.x;
#pragma unroll
            for (int i = 0; i < BM * BK / 4 / T::THREADS; ++i) {
                const int row = (t >> 3) + T::THREADS / 8 * i;
                const bool ok = ka < k_end && m0 + row < M;
                cp_async_16(stage + (row * LDS + 4 * (t & 7)) * 4, w + ((m0 + row) * K + ka), ok);
            }
        } else {
            rows.load(stage, ka, ka < k_end);
        }
        unsigned bit[8];
        int off[8];
        taps.get(bit, off, kb, k_end);
        gather_taps<8, NC, 4, T::THREADS / 4 * LDS>(stage + bdst, x, bit, off, col);
    }
    __device__ void round_b(float* stage) const { round_gathered<8, NC, 4, T::THREADS / 4 * LDS>(stage + bdst / 4); }
    __device__ void advance() {
        ka += BK;
        kb += BK;
        taps.advance();
    }
};

// Backward data, one stride phase (rh, rw) (see bwd_data_body above): A[c, k = (o, t, u)] =
// w[o, c, rh + SH*t, rw + SW*u] (rows KHW apart, RowsA); B[k, col = (n, q, v)] = dy[n, o, ohb - t, owb - u] with
// (ohb, owb) the column's dy coordinates. B uses the forward's thread mapping.
template <int BM>
struct BwdDataLoader {
    typedef Tile<BM> T;
    static constexpr int NC = BN * BK / T::THREADS / 8;
    const float* dy;
    int Ho, Wo, HoWo, Rt, St, k_end;
    int CKHW, KW, rh, rw, SH, SW;  // A's tap offsets
    RowsA<BM> rows;
    int ka, kb;
    Digits da;     // A: (o, t, u) of this thread's k value
    Digits step;   // BK as (o, t, u) digits
    TapWalk taps;  // B: tap bits and offsets of the k values
    TapCols<NC> col;
    smem_addr bdst;

    __device__ BwdDataLoader(const float* dy_, const float* w, int C, int O, int KH, int KW_, int Ho_, int Wo_,
                             int Rt_, int St_, int rh_, int rw_, int SH_, int SW_, int Hq, int Wq, int ohb0,
                             int owb0, int ncols, int m0, int col0, int K, const int2* tab)
        : dy(dy_), Ho(Ho_), Wo(Wo_), HoWo(Ho_ * Wo_), Rt(Rt_), St(St_), k_end(K), CKHW(C * KH * KW_), KW(KW_),
          rh(rh_), rw(rw_), SH(SH_), SW(SW_), rows(w, C, KH * KW_, m0) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        ka = rows.k_of_thread();
        da.set(ka, Rt, St);
        kb = lane >> 3;
        taps.init(tab, kb, Rt * St, HoWo);
        step.set(BK, Rt, St);
#pragma unroll
        for (int j = 0; j < NC; ++j) {
            const int p = col0 + 8 * warp + (lane & 7) + T::THREADS / 4 * j;
            int r = FAR, s = 0;
            col.off[j] = 0;
            if (p < ncols) {
                const int n = p / (Hq * Wq);
                const int qv = p - n * (Hq * Wq);
                const int q = qv / Wq;
                r = ohb0 + q;
                s = owb0 + (qv - q * Wq);
                col.off[j] = n * O * HoWo + r * Wo + s;
            }
            col.mask[j] = tap_mask(r, s, Rt * St, St, -1, Ho, Wo);
        }
        bdst = T::A_BYTES + ((8 * warp + (lane & 7)) * LDS + (lane >> 3)) * 4;
    }
    __device__ void load(smem_addr stage) const {
        rows.load(stage, da.hi * CKHW + (rh + SH * da.mid) * KW + rw + SW * da.lo, ka < k_end);
        unsigned bit[8];
        int off[8];
        taps.get(bit, off, kb, k_end);
        gather_taps<8, NC, 4, T::THREADS / 4 * LDS>(stage + bdst, dy, bit, off, col);
    }
    __device__ void round_b(float* stage) const { round_gathered<8, NC, 4, T::THREADS / 4 * LDS>(stage + bdst / 4); }
    __device__ void advance() {
        ka += BK;
        kb += BK;
        da.add(step, Rt, St);
        taps.advance();
    }
};

// Backward weight: A[o, k = (n, oh, ow)] = dy[n, o, oh, ow] (rows HoWo apart, RowsA); B[k, col = (c, r, s)] =
// x[n, c, oh*SH - PH + r, ow*SW - PW + s]. Here the k values carry the pixel and the columns the tap, so a
// thread takes fewer k values and more columns: lane L of warp w, k values (L & 7) + 8i (i < 4), columns
// 2 (L >> 3) + (w & 1) + 8 (w >> 1) + (THREADS / 8) j (j < NC). A warp instruction reads 8 consecutive pixels
// of 4 taps and writes shared words 8 (L >> 3) + (L & 7) + const mod 32: all distinct.
template <int BM>
struct BwdWeightLoader {
    typedef Tile<BM> T;
    static constexpr int NC = BN * BK / T::THREADS / 4;
    const float* x;
    int H, W, Ho, Wo, SH, SW, PH, PW, CHW, MHoWo, k_end;
    RowsA<BM> rows;
    int ka, kb;
    Digits da;     // A: (n, oh, ow) of this thread's k value
    Digits d[4];   // B: (n, oh, ow) of each k value
    Digits step;
    Coords<NC> col;
    smem_addr bdst;

    __device__ BwdWeightLoader(const float* x_, const float* dy, int C, int H_, int W_, int O, int KH, int KW,
                               int Ho_, int Wo_, int SH_, int SW_, int PH_, int PW_, int ncols, int m0, int col0,
                               int k_begin, int k_end_)
        : x(x_), H(H_), W(W_), Ho(Ho_), Wo(Wo_), SH(SH_), SW(SW_), PH(PH_), PW(PW_), CHW(C * H_ * W_),
          MHoWo(O * Ho_ * Wo_), k_end(k_end_), rows(dy, O, Ho_ * Wo_, m0) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        ka = k_begin + rows.k_of_thread();
        da.set(ka, Ho, Wo);
        kb = k_begin + (lane & 7);
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i].set(kb + 8 * i, Ho, Wo);
        step.set(BK, Ho, Wo);
        const int c0 = 2 * (lane >> 3) + (warp & 1) + 8 * (warp >> 1);
#pragma unroll
        for (int j = 0; j < NC; ++j) {
            const int cidx = col0 + c0 + T::THREADS / 8 * j;
            if (cidx < ncols) {
                const int c = cidx / (KH * KW);
                const int rs = cidx - c * (KH * KW);
                col.r[j] = rs / KW;
                col.s[j] = rs - col.r[j] * KW;
                col.off[j] = (c * H + col.r[j]) * W + col.s[j];
            } else {
                col.r[j] = FAR;
                col.s[j] = 0;
                col.off[j] = 0;
            }
        }
        bdst = T::A_BYTES + (c0 * LDS + (lane & 7)) * 4;
    }
    __device__ void load(smem_addr stage) const {
        rows.load(stage, da.hi * MHoWo + da.mid * Wo + da.lo, ka < k_end);
        Coords<4> k;
        bool kok[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            k.r[i] = d[i].mid * SH - PH;
            k.s[i] = d[i].lo * SW - PW;
            k.off[i] = d[i].hi * CHW + k.r[i] * W + k.s[i];
            kok[i] = kb + 8 * i < k_end;
        }
        gather<4, NC, 8, T::THREADS / 8 * LDS>(stage + bdst, x, H, W, k, kok, col);
    }
    __device__ void round_b(float* stage) const { round_gathered<4, NC, 8, T::THREADS / 8 * LDS>(stage + bdst / 4); }
    __device__ void advance() {
        ka += BK;
        kb += BK;
        da.add(step, Ho, Wo);
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i].add(step, Ho, Wo);
    }
};

// acc += the block's A * B over `slices` BK-slices that `ld` loads one by one (load: issue the current slice's
// copies into a stage; advance: move to the next slice; round_b: round this thread's landed B copies of a stage).
// smem_f: the dynamic shared buffer, STAGES stages. OP: the operand format (conv_tc.cuh's Op); the stages hold f32
// whatever the format, and operands are rounded as fragments are loaded (or, for TF32 on the 128-row tile, in
// shared memory, see ROUND_B_AT_COPY).
template <int BM, Op OP, class Loader>
__device__ __forceinline__ void mainloop(Loader& ld, int slices, float* smem_f, Acc& acc) {
    typedef Tile<BM> T;
    constexpr bool ROUND_B_AT_COPY = OP == Op::Tf32 && T::ROUND_B_AT_COPY;
    const smem_addr smem = smem_address(smem_f);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    // This lane's ldmatrix row (see ldmatrix_x4): A's four matrices are rows +0 / +8 x k +0 / +4 in the order
    // of the a[] fragment registers; B's are k +0 / +4 x rows +0 / +8 (two n8 tiles, b[0], b[1] each).
    const smem_addr a_lane = ((wm + (lane & 7) + 8 * ((lane >> 3) & 1)) * LDS + 4 * (lane >> 4)) * 4;
    const smem_addr b_lane = T::A_BYTES + ((wn + (lane & 7) + 8 * (lane >> 4)) * LDS + 4 * ((lane >> 3) & 1)) * 4;

    const auto landed = [&](int stage) {
        if (ROUND_B_AT_COPY) ld.round_b(smem_f + stage * (T::STAGE_BYTES / 4));
    };
    pipeline<STAGES, T::STAGE_BYTES>(ld, slices, smem, landed, [&](smem_addr st) {
        if constexpr (OP == Op::Tf32) {
#pragma unroll
            for (int kk = 0; kk < BK; kk += 8) {
                unsigned int af[MI][4], bf[NI][2];
#pragma unroll
                for (int i = 0; i < MI; ++i) ldmatrix_x4(af[i], st + a_lane + (16 * i * LDS + kk) * 4);
                ldmatrix_b(bf, st + b_lane + kk * 4, LDS * 4);
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int q = 0; q < 4; ++q) af[i][q] = to_tf32(__uint_as_float(af[i][q]));
                if (!ROUND_B_AT_COPY)
#pragma unroll
                    for (int j = 0; j < NI; ++j)
#pragma unroll
                        for (int q = 0; q < 2; ++q) bf[j][q] = to_tf32(__uint_as_float(bf[j][q]));
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NI; ++j) mma_m16n8k8_tf32(acc[i][j], af[i], bf[j], acc[i][j]);
            }
        } else {
            // 16 k per product. Two TF32-shaped ldmatrix loads (k +0..7, +8..15) give lane (g, t) the f32 words
            // k = t, t+4 and 8+t, 12+t of its rows / columns; packed in pairs they are the m16n8k16 fragment of
            // the k order (t, t+4, ..., 8+t, 12+t) = logical (2t, 2t+1, ..., 2t+8, 2t+9). A and B use the same
            // permutation of k, so the product is the same sum (the tensor core's summation order is unspecified
            // anyway). Operands are rounded (cvt.rn) as they are packed.
            constexpr Half F = OP == Op::Fp16 ? Half::Fp16 : Half::Bf16;
            const auto pack = [](unsigned int lo, unsigned int hi) {
                return pack_half2<F>(__uint_as_float(lo), __uint_as_float(hi));
            };
#pragma unroll
            for (int kk = 0; kk < BK; kk += 16) {
                unsigned int af[MI][4], bf[NI][2];
#pragma unroll
                for (int i = 0; i < MI; ++i) {
                    unsigned int lo[4], hi[4];
                    ldmatrix_x4(lo, st + a_lane + (16 * i * LDS + kk) * 4);
                    ldmatrix_x4(hi, st + a_lane + (16 * i * LDS + kk + 8) * 4);
                    af[i][0] = pack(lo[0], lo[2]);
                    af[i][1] = pack(lo[1], lo[3]);
                    af[i][2] = pack(hi[0], hi[2]);
                    af[i][3] = pack(hi[1], hi[3]);
                }
#pragma unroll
                for (int j = 0; j < NI; j += 2) {
                    unsigned int lo[4], hi[4];
                    ldmatrix_x4(lo, st + b_lane + (8 * j * LDS + kk) * 4);
                    ldmatrix_x4(hi, st + b_lane + (8 * j * LDS + kk + 8) * 4);
                    bf[j][0] = pack(lo[0], lo[1]);
                    bf[j][1] = pack(hi[0], hi[1]);
                    bf[j + 1][0] = pack(lo[2], lo[3]);
                    bf[j + 1][1] = pack(hi[2], hi[3]);
                }
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NI; ++j) mma_m16n8k16<F>(acc[i][j], af[i], bf[j], acc[i][j]);
            }
        }
    });
}

__device__ __forceinline__ int slices_of(int k_begin, int k_end) { return max(0, k_end - k_begin + BK - 1) / BK; }

template <int BM, Op OP>
__device__ __forceinline__ void fwd_body(const float* __restrict__ x, const float* __restrict__ w,
                                         float* __restrict__ y, float* __restrict__ stats, int N, int C, int H,
                                         int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                         int PW, int k_chunk, int act, float slope, float* smem) {
    const int K = C * KH * KW;
    const int ncols = N * Ho * Wo;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);

    int2* tab = reinterpret_cast<int2*>(smem + Tile<BM>::SMEM_BYTES / 4);
    fill_tap_table(tab, KH * KW, KW, 1, H * W, W);
    __syncthreads();
    FwdLoader<BM> ld(x, w, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, m0, col0, k_begin, k_end, tab);
    Acc acc = {};
    mainloop<BM, OP>(ld, slices_of(k_begin, k_end), smem, acc);

    forward_epilogue<BM, Tile<BM>::SMEM_BYTES>(acc, y, stats, N, O, Ho * Wo, m0, col0, act, slope, smem);
}

template <int BM, Op OP>
__device__ __forceinline__ void bwd_data_body(const float* __restrict__ dy, const float* __restrict__ w,
                                              float* __restrict__ dx, float* __restrict__ stats, int N, int C,
                                              int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                              int PH, int PW, const float* __restrict__ act_y, int act,
                                              float slope, float* smem) {
    // Stride phase of this block, exactly as in conv::bwd_data_body.
    const Phase ph(blockIdx.z, H, W, KH, KW, SH, SW, PH, PW);
    const int col0 = blockIdx.x * BN;
    const int m0 = blockIdx.y * BM;
    if (past_phase<BM>(ph, N, C, m0, col0, stats)) return;
    const int K = O * ph.Rt * ph.St;

    Acc acc = {};
    if (K > 0) {  // a phase without taps writes zeros (and its loader's digits would divide by zero)
        int2* tab = reinterpret_cast<int2*>(smem + Tile<BM>::SMEM_BYTES / 4);
        fill_tap_table(tab, ph.Rt * ph.St, ph.St, -1, Ho * Wo, Wo);
        __syncthreads();
        BwdDataLoader<BM> ld(dy, w, C, O, KH, KW, Ho, Wo, ph.Rt, ph.St, ph.rh, ph.rw, SH, SW, ph.Hq, ph.Wq, ph.ohb0,
                             ph.owb0, ph.cols(N), m0, col0, K, tab);
        mainloop<BM, OP>(ld, slices_of(0, K), smem, acc);
    }
    bwd_data_epilogue<BM, Tile<BM>::SMEM_BYTES>(acc, dx, stats, N, C, H, W, ph, m0, col0, act_y, act, slope, smem);
}

template <int BM, Op OP>
__device__ __forceinline__ void bwd_weight_body(const float* __restrict__ x, const float* __restrict__ dy,
                                                float* __restrict__ dw, int N, int C, int H, int W, int O, int KH,
                                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                                int k_chunk, float* smem) {
    const int P = N * Ho * Wo;
    const int ncols = C * KH * KW;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(P, k_begin + k_chunk);

    BwdWeightLoader<BM> ld(x, dy, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, m0, col0, k_begin, k_end);
    Acc acc = {};
    mainloop<BM, OP>(ld, slices_of(k_begin, k_end), smem, acc);

    float* out = dw + (size_t)blockIdx.z * O * ncols;
    epilogue(acc, m0, col0, [&](int o, int col, float v) {
        if (o < O && col < ncols) out[(size_t)o * ncols + col] = v;
    });
}
}  // namespace tc

}  // namespace conv

// ---- entry points ------------------------------------------------------------------------------------------
// Launch: blockDim = 256. grid = (ceil(ncols / BN), ceil(M / BM), splits or phases), see each entry.
// The _m16 variants use the 16 x 128 tile for narrow M (M <= 16); otherwise identical.
// stats (forward and backward data): null, or where the kernel writes its output's batch-norm statistics in
// parts (tile_stats.cuh), [rows][tiles][3] with tiles = gridDim.x * gridDim.z (one part per column tile and
// phase); forward only without split-K (gridDim.z == 1), whose partial sums are no output yet.
// act, slope (forward): the activation stored in place of the sum when no batch norm comes next (act.cuh's
// epilogue_act: ACT_NONE, ACT_RELU or ACT_LEAKY_RELU); ACT_NONE under split-K, where the reduction applies it.
// act_y, act, slope (backward data): the activation that made the convolution's input, folded into its gradient
// (act.cuh's epilogue_act_bwd): dx is stored as act'(act_y)·dx, act_y being that activation's output, the
// convolution's input. ACT_NONE (and act_y null) stores dx itself, as conv_transpose2d's forward does.

// grid = (ceil(N*Ho*Wo / 64), ceil(O / 64), splits); split z covers K range [z*k_chunk, (z+1)*k_chunk) and
// writes y + z*numel(y) (pass a workspace of splits*numel(y) floats and reduce when splits > 1).
extern "C" __global__ void conv2d_fwd_f32(const float* x, const float* w, float* y, float* stats, int N, int C, int H,
                                          int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                          int k_chunk, int act, float slope) {
    __shared__ float As[conv::BK][64 + conv::PAD];
    __shared__ float Bs[conv::BK][64 + conv::PAD];
    conv::fwd_body<64, 64>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act, slope, As, Bs);
}

extern "C" __global__ void conv2d_fwd_m16_f32(const float* x, const float* w, float* y, float* stats, int N, int C,
                                              int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                              int PH, int PW, int k_chunk, int act, float slope) {
    __shared__ float As[conv::BK][16 + conv::PAD];
    __shared__ float Bs[conv::BK][128 + conv::PAD];
    conv::fwd_body<16, 128>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act, slope, As, Bs);
}

// grid = (ceil(N * ceil(H/SH) * ceil(W/SW) / 64), ceil(C / 64), SH*SW phases). Writes every element of dx.
extern "C" __global__ void conv2d_bwd_data_f32(const float* dy, const float* w, float* dx, float* stats, int N, int C,
                                               int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                               int PH, int PW, const float* act_y, int act, float slope) {
    __shared__ float As[conv::BK][64 + conv::PAD];
    __shared__ float Bs[conv::BK][64 + conv::PAD];
    conv::bwd_data_body<64, 64>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y, act, slope,
                                As, Bs);
}

extern "C" __global__ void conv2d_bwd_data_m16_f32(const float* dy, const float* w, float* dx, float* stats, int N,
                                                   int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH,
                                                   int SW, int PH, int PW, const float* act_y, int act, float slope) {
    __shared__ float As[conv::BK][16 + conv::PAD];
    __shared__ float Bs[conv::BK][128 + conv::PAD];
    conv::bwd_data_body<16, 128>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y, act, slope,
                                As, Bs);
}

// grid = (ceil(C*KH*KW / 64), ceil(O / 64), splits); split z covers pixels [z*k_chunk, (z+1)*k_chunk) of the
// N*Ho*Wo reduction and writes dw + z*numel(dw).
extern "C" __global__ void conv2d_bwd_weight_f32(const float* x, const float* dy, float* dw, int N, int C, int H,
                                                 int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                                 int PH, int PW, int k_chunk) {
    __shared__ float As[conv::BK][64 + conv::PAD];
    __shared__ float Bs[conv::BK][64 + conv::PAD];
    conv::bwd_weight_body<64, 64>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, As, Bs);
}

// out[i] = sum over z = 0..splits-1 of parts[z*numel + i], in that order (deterministic), through the forward's
// activation (act, slope as the forward kernels'; ACT_NONE for backward weight). Any 1-D grid.
extern "C" __global__ void conv2d_splitk_reduce_f32(const float* parts, float* out, int numel, int splits, int act,
                                                    float slope) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += parts[(size_t)z * numel + i];
        out[i] = epilogue_act(act, slope, s);
    }
}


// grid = (O, S), blockDim a multiple of 32: conv2d_splitk_reduce_f32 for a forward convolution whose output
// goes to a training-mode batch norm. Block (o, s) sums the splits of chunk s (`chunk` values in chan_index
// order, the last may be shorter) of output channel o, in the same order (the same bits), and writes the
// chunk's statistics part (tile_stats.cuh) to parts[(o*S + s)*3 ..]: count, mean, and the sum of squared
// deviations in a second pass over what it wrote (its own writes, in cache).
extern "C" __global__ void conv2d_splitk_reduce_stats_f32(const float* __restrict__ ws, float* __restrict__ out,
                                                          float* __restrict__ parts, int N, int O, int HW,
                                                          int splits, int chunk) {
    __shared__ float scratch[32];
    const size_t numel = (size_t)N * O * HW;
    write_chunk_part(parts, N, O, HW, chunk, scratch, [&](size_t i, bool first) {
        if (!first) return out[i];
        float v = 0.0f;
        for (int z = 0; z < splits; ++z) v += ws[z * numel + i];
        out[i] = v;
        return v;
    });
}

// ---- tensor-core (TF32) entry points: same arguments, grids and outputs as the f32 kernels above. The plain
// names use the 64 x 128 tile (128 threads), the _m128 ones the 128 x 128 tile (256 threads), each with
// tc::Tile<BM>::SMEM_BYTES of dynamic shared memory plus, for forward and backward data, (KH*KW + 28) * 16 bytes
// of tap table: grid = (ceil(cols / 128), ceil(rows / BM), splits or phases); k_chunk (split-K) need not be a
// multiple of tc::BK. Chosen by conv.rs when the backend's precision is TF32 and rows > 16 (the _m128 ones for
// rows > 64).
extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_fwd_tf32(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O, int KH,
                    int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<64, conv::tc::Op::Tf32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                               k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_data_tf32(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<64, conv::tc::Op::Tf32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                    act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_weight_tf32(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                           int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<64, conv::tc::Op::Tf32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                      k_chunk, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_fwd_m128_tf32(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<128, conv::tc::Op::Tf32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_data_m128_tf32(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W,
                    int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<128, conv::tc::Op::Tf32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                     act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_weight_m128_tf32(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                           int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<128, conv::tc::Op::Tf32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                       k_chunk, tc_smem);
}

// ---- mixed-precision entry points (bf16 / fp16 operands on mma.sync m16n8k16, f32 accumulation): same
// arguments, grids, shared memory and outputs as the TF32 ones above. Chosen by conv.rs at precision Bf16 / Fp16.

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_fwd_bf16(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O, int KH,
                    int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<64, conv::tc::Op::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                               k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_data_bf16(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<64, conv::tc::Op::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                    act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_weight_bf16(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                           int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<64, conv::tc::Op::Bf16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                      k_chunk, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_fwd_m128_bf16(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<128, conv::tc::Op::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_data_m128_bf16(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W,
                    int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<128, conv::tc::Op::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                     act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_weight_m128_bf16(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<128, conv::tc::Op::Bf16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                       k_chunk, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_fwd_fp16(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O, int KH,
                    int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<64, conv::tc::Op::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                               k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_data_fp16(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<64, conv::tc::Op::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                    act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<64>::THREADS)
    conv2d_bwd_weight_fp16(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                           int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<64, conv::tc::Op::Fp16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                      k_chunk, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_fwd_m128_fp16(const float* x, const float* w, float* y, float* stats, int N, int C, int H, int W, int O,
                    int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::fwd_body<128, conv::tc::Op::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                k_chunk, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_data_m128_fp16(const float* dy, const float* w, float* dx, float* stats, int N, int C, int H, int W,
                    int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                    const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_data_body<128, conv::tc::Op::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                     act_y, act, slope, tc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::Tile<128>::THREADS)
    conv2d_bwd_weight_m128_fp16(const float* x, const float* dy, float* dw, int N, int C, int H, int W, int O, int KH,
                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) float tc_smem[];
    conv::tc::bwd_weight_body<128, conv::tc::Op::Fp16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
                                                       k_chunk, tc_smem);
}

// ---- self-tests of mma.cuh (tests/emu_parity_conv.rs; tests/cuda_runtime.rs on a GPU) -------------------------

// One warp (blockDim = 32): d = tf32(a) * tf32(b) + c for a 16 x 8 (row-major), b 8 x 8 (row-major, b[k*8+n]),
// c and d 16 x 8 (row-major). Each lane loads exactly its fragment, so a wrong layout gives wrong elements.
extern "C" __global__ void mma_selftest_f32(const float* a, const float* b, const float* c, float* d) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const unsigned int af[4] = {to_tf32(a[g * 8 + t]), to_tf32(a[(g + 8) * 8 + t]), to_tf32(a[g * 8 + t + 4]),
                                to_tf32(a[(g + 8) * 8 + t + 4])};
    const unsigned int bf[2] = {to_tf32(b[t * 8 + g]), to_tf32(b[(t + 4) * 8 + g])};
    const float cf[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    float df[4];
    mma_m16n8k8_tf32(df, af, bf, cf);
    d[g * 8 + 2 * t] = df[0];
    d[g * 8 + 2 * t + 1] = df[1];
    d[(g + 8) * 8 + 2 * t] = df[2];
    d[(g + 8) * 8 + 2 * t + 1] = df[3];
}

// y[i] = x[i] rounded to TF32 (cvt.rna on a GPU, the portable rounding in the emulation). Any 1-D grid.
extern "C" __global__ void tf32_round_f32(const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = round_tf32(x[i]);
}

// One warp (blockDim = 32): d = F(a) * F(b) + c on mma m16n8k16 for a 16 x 16 (row-major), b 16 x 8 (row-major,
// b[k*8+n]), c and d 16 x 8 (row-major), F the 16-bit format. Each lane packs exactly its fragment of the PTX
// layout (mma.cuh), so a wrong layout gives wrong elements.
template <Half F>
__device__ __forceinline__ void mma_k16_selftest(const float* a, const float* b, const float* c, float* d) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const auto at = [&](int row, int k) { return pack_half2<F>(a[row * 16 + k], a[row * 16 + k + 1]); };
    const auto bt = [&](int k, int n) { return pack_half2<F>(b[k * 8 + n], b[(k + 1) * 8 + n]); };
    const unsigned int af[4] = {at(g, 2 * t), at(g + 8, 2 * t), at(g, 2 * t + 8), at(g + 8, 2 * t + 8)};
    const unsigned int bf[2] = {bt(2 * t, g), bt(2 * t + 8, g)};
    const float cf[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    float df[4];
    mma_m16n8k16<F>(df, af, bf, cf);
    d[g * 8 + 2 * t] = df[0];
    d[g * 8 + 2 * t + 1] = df[1];
    d[(g + 8) * 8 + 2 * t] = df[2];
    d[(g + 8) * 8 + 2 * t + 1] = df[3];
}

extern "C" __global__ void mma_k16_selftest_bf16(const float* a, const float* b, const float* c, float* d) {
    mma_k16_selftest<Half::Bf16>(a, b, c, d);
}

extern "C" __global__ void mma_k16_selftest_fp16(const float* a, const float* b, const float* c, float* d) {
    mma_k16_selftest<Half::Fp16>(a, b, c, d);
}

// y[i] = x[i] rounded to bf16 / fp16 and back (cvt.rn on a GPU, the portable rounding in the emulation). Any 1-D
// grid.
extern "C" __global__ void bf16_round_f32(const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = round_half<Half::Bf16>(x[i]);
}

extern "C" __global__ void fp16_round_f32(const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = round_half<Half::Fp16>(x[i]);
}
