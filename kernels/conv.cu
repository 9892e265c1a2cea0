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
// Tensor-core kernels (*_tf32, precision TF32 in conv.rs): the same loaders and geometry, with the inner product
// on mma.sync m16n8k8 TF32 (section "tensor-core path" below). Their only inline PTX (mma.sync, cvt.rna.tf32) is
// inside mma.cuh under `#if __CUDA_ARCH__ >= 800`; the emulation runs mma.cuh's portable fallback, which
// gathers the fragments with warp shuffles and rounds operands bit-exactly like cvt.rna.

#include "common.cuh"
#include "mma.cuh"

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

// ---- kernel bodies -----------------------------------------------------------------------------------------

template <int BM, int BN>
__device__ __forceinline__ void fwd_body(const float* __restrict__ x, const float* __restrict__ w,
                                         float* __restrict__ y, int N, int C, int H, int W, int O, int KH, int KW,
                                         int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk,
                                         float (&As)[BK][BM + PAD], float (&Bs)[BK][BN + PAD]) {
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
            if (o < O) yp[(size_t)o * Ho * Wo] = acc[i][j];
        }
    }
}

template <int BM, int BN>
__device__ __forceinline__ void bwd_data_body(const float* __restrict__ dy, const float* __restrict__ w,
                                              float* __restrict__ dx, int N, int C, int H, int W, int O, int KH,
                                              int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                              float (&As)[BK][BM + PAD], float (&Bs)[BK][BN + PAD]) {
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
    // The grid covers the largest phase; blocks past this phase's pixels have nothing to do. The test is
    // uniform over the block, so returning before the first __syncthreads is safe.
    if (col0 >= ncols) return;
    const int m0 = blockIdx.y * BM;
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
        float* xp = dx + (size_t)n * C * H * W + ih * W + iw;
#pragma unroll
        for (int i = 0; i < T::TM; ++i) {
            const int c = m0 + ty * T::TM + i;
            if (c < C) xp[(size_t)c * H * W] = acc[i][j];
        }
    }
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


// ---- tensor-core path (TF32 operands, f32 accumulation) ------------------------------------------------------
// The same three GEMMs with the same operand loaders (so the same im2col gathers, stride phases and split-K),
// but the inner product runs on tensor cores: mma.sync m16n8k8 with TF32 operands (see mma.cuh). Operands are
// rounded to TF32 once, in registers, between the global load and the shared-memory store, so the fragment
// loads in the loop are plain reads; accumulation stays f32 in registers.
//
// Tile: a block of 256 threads (8 warps) computes 64 rows x 128 columns, the warps arranged 2 x 4, each owning a
// 32 x 32 warp tile = 2 x 4 mma tiles (32 f32 accumulators per thread). Why these sizes for DCGAN-64:
//   - rows are output channels (forward, backward weight) or input channels (backward data), i.e. 64, 128, 256
//     or 512 in every hidden layer: multiples of 64, so no row of a tile is padding. The 3- and 1-channel ends
//     (generator output, discriminator output) have M <= 16 and keep the narrow f32 kernels (16 x 128 tile),
//     where a 64-row tensor-core tile would be 95% padding.
//   - columns are pixels (N*Ho*Wo: thousands even at batch 64, a multiple of 128 for every layer at a batch
//     that is a multiple of 8) or, for backward weight, taps C*4*4 (48 = the 3-channel input layer, else a
//     multiple of 1024): the wide side of the tile goes where the GEMM is long.
//   - K = C*16 (forward) is 48 or a multiple of 1024: BK = 16 divides all of them, so no K slice is padding,
//     and BK matches the f32 path, so split-K chunking is shared (conv.rs).
//   - 32 x 32 per warp reads 2 A fragments and 4 B fragments (12 shared loads) per 8 mma.sync: enough reuse to
//     keep the shared-memory pipe below the tensor pipe, at 32 accumulators (no spills, see nvrtc_compile).
// Shared rows are padded by 8 floats (row stride = 8 mod 32 words): a fragment load reads rows k = t, t+4 and
// columns g, so lane (g, t) hits bank g + 8t — all 32 lanes in different banks.
// Not done (yet): cp.async multi-stage pipelining, ldmatrix, a shared-memory-staged (coalesced) epilogue.
namespace tc {
constexpr int BM = 64;
constexpr int BN = 128;
constexpr int WM = 32;
constexpr int WN = 32;
constexpr int WARPS_N = BN / WN;  // 4 (x 2 along M = 8 warps = THREADS / 32)
constexpr int MI = WM / 16;       // mma tiles per warp along M
constexpr int NI = WN / 8;        // mma tiles per warp along N
constexpr int LDA = BM + 8;
constexpr int LDB = BN + 8;
static_assert((BM / WM) * WARPS_N * 32 == THREADS, "warp grid does not match the block");

typedef float Acc[MI][NI][4];

template <int PER>
__device__ __forceinline__ void round_operands(float (&v)[PER]) {
#pragma unroll
    for (int i = 0; i < PER; ++i) v[i] = round_tf32(v[i]);
}

// acc += A[m0.., k_begin:k_end] * B[k_begin:k_end, n0..] on tensor cores; loaders as in gemm_mainloop.
template <class LoadA, class LoadB>
__device__ __forceinline__ void mainloop(LoadA& a, LoadB& b, int k_begin, int k_end, float (&As)[BK][LDA],
                                         float (&Bs)[BK][LDB], Acc& acc) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;

    if (k_begin < k_end) {
        a.fetch(k_begin);
        b.fetch(k_begin);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        round_operands(a.v);
        round_operands(b.v);
        a.stash(As);
        b.stash(Bs);
        __syncthreads();
        if (k0 + BK < k_end) {
            a.fetch(k0 + BK);
            b.fetch(k0 + BK);
        }
#pragma unroll
        for (int ks = 0; ks < BK; ks += 8) {
            unsigned int af[MI][4], bf[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                const int m = wm + 16 * i + g;
                af[i][0] = __float_as_uint(As[ks + t][m]);
                af[i][1] = __float_as_uint(As[ks + t][m + 8]);
                af[i][2] = __float_as_uint(As[ks + t + 4][m]);
                af[i][3] = __float_as_uint(As[ks + t + 4][m + 8]);
            }
#pragma unroll
            for (int j = 0; j < NI; ++j) {
                const int n = wn + 8 * j + g;
                bf[j][0] = __float_as_uint(Bs[ks + t][n]);
                bf[j][1] = __float_as_uint(Bs[ks + t + 4][n]);
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma_m16n8k8_tf32(acc[i][j], af[i], bf[j], acc[i][j]);
        }
        __syncthreads();
    }
}

// Hands every accumulator to store(row, col, value) with its global GEMM coordinates (C fragment layout:
// rows g and g+8, columns 2t and 2t+1 of each mma tile). store does the bounds checks and the index math.
template <class Store>
__device__ __forceinline__ void epilogue(const Acc& acc, int m0, int col0, Store store) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int wm = m0 + (warp / WARPS_N) * WM, wn = col0 + (warp % WARPS_N) * WN;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                store(wm + 16 * i + g + 8 * (r >> 1), wn + 8 * j + 2 * t + (r & 1), acc[i][j][r]);
}

__device__ __forceinline__ void fwd_body(const float* __restrict__ x, const float* __restrict__ w,
                                         float* __restrict__ y, int N, int C, int H, int W, int O, int KH, int KW,
                                         int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk,
                                         float (&As)[BK][LDA], float (&Bs)[BK][LDB]) {
    const int K = C * KH * KW;
    const int ncols = N * Ho * Wo;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);

    FwdWeights<BM> a(w, O, K, k_end, m0);
    FwdImage<BN> b(x, C, H, W, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, col0, k_end);
    Acc acc = {};
    mainloop(a, b, k_begin, k_end, As, Bs, acc);

    float* out = y + (size_t)blockIdx.z * N * O * Ho * Wo;
    const int HoWo = Ho * Wo;
    epilogue(acc, m0, col0, [&](int o, int p, float v) {
        if (o < O && p < ncols) {
            const int n = p / HoWo;
            out[((size_t)n * O + o) * HoWo + (p - n * HoWo)] = v;
        }
    });
}

__device__ __forceinline__ void bwd_data_body(const float* __restrict__ dy, const float* __restrict__ w,
                                              float* __restrict__ dx, int N, int C, int H, int W, int O, int KH,
                                              int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                              float (&As)[BK][LDA], float (&Bs)[BK][LDB]) {
    // Stride phase of this block, exactly as in conv::bwd_data_body.
    const int rh = blockIdx.z / SW;
    const int rw = blockIdx.z - rh * SW;
    const int ih0 = ((rh - PH) % SH + SH) % SH;
    const int iw0 = ((rw - PW) % SW + SW) % SW;
    const int Hq = ih0 < H ? (H - ih0 + SH - 1) / SH : 0;
    const int Wq = iw0 < W ? (W - iw0 + SW - 1) / SW : 0;
    const int Rt = rh < KH ? (KH - rh + SH - 1) / SH : 0;
    const int St = rw < KW ? (KW - rw + SW - 1) / SW : 0;
    const int ncols = N * Hq * Wq;
    const int col0 = blockIdx.x * BN;
    if (col0 >= ncols) return;  // uniform over the block, before any barrier
    const int m0 = blockIdx.y * BM;
    const int K = O * Rt * St;

    BwdDataWeights<BM> a(w, C, KH, KW, Rt, St, rh, rw, SH, SW, K, m0);
    BwdDataGrad<BN> b(dy, O, Ho, Wo, St, Rt * St, Hq, Wq, (ih0 + PH - rh) / SH, (iw0 + PW - rw) / SW, ncols,
                      col0, K);
    Acc acc = {};
    mainloop(a, b, 0, K, As, Bs, acc);

    epilogue(acc, m0, col0, [&](int c, int p, float v) {
        if (c < C && p < ncols) {
            const int n = p / (Hq * Wq);
            const int qv = p - n * (Hq * Wq);
            const int q = qv / Wq;
            const int ih = ih0 + SH * q;
            const int iw = iw0 + SW * (qv - q * Wq);
            dx[(((size_t)n * C + c) * H + ih) * W + iw] = v;
        }
    });
}

__device__ __forceinline__ void bwd_weight_body(const float* __restrict__ x, const float* __restrict__ dy,
                                                float* __restrict__ dw, int N, int C, int H, int W, int O, int KH,
                                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                                int k_chunk, float (&As)[BK][LDA], float (&Bs)[BK][LDB]) {
    const int P = N * Ho * Wo;
    const int ncols = C * KH * KW;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(P, k_begin + k_chunk);

    BwdWeightGrad<BM> a(dy, O, Ho * Wo, k_end, m0);
    BwdWeightImage<BN> b(x, C, H, W, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, col0, k_end);
    Acc acc = {};
    mainloop(a, b, k_begin, k_end, As, Bs, acc);

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

// grid = (ceil(N*Ho*Wo / 64), ceil(O / 64), splits); split z covers K range [z*k_chunk, (z+1)*k_chunk) and
// writes y + z*numel(y) (pass a workspace of splits*numel(y) floats and reduce when splits > 1).
extern "C" __global__ void conv2d_fwd_f32(const float* x, const float* w, float* y, int N, int C, int H, int W,
                                          int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                          int k_chunk) {
    __shared__ float As[conv::BK][64 + conv::PAD];
    __shared__ float Bs[conv::BK][64 + conv::PAD];
    conv::fwd_body<64, 64>(x, w, y, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, As, Bs);
}

extern "C" __global__ void conv2d_fwd_m16_f32(const float* x, const float* w, float* y, int N, int C, int H,
                                              int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                              int PW, int k_chunk) {
    __shared__ float As[conv::BK][16 + conv::PAD];
    __shared__ float Bs[conv::BK][128 + conv::PAD];
    conv::fwd_body<16, 128>(x, w, y, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, As, Bs);
}

// grid = (ceil(N * ceil(H/SH) * ceil(W/SW) / 64), ceil(C / 64), SH*SW phases). Writes every element of dx.
extern "C" __global__ void conv2d_bwd_data_f32(const float* dy, const float* w, float* dx, int N, int C, int H,
                                               int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                               int PW) {
    __shared__ float As[conv::BK][64 + conv::PAD];
    __shared__ float Bs[conv::BK][64 + conv::PAD];
    conv::bwd_data_body<64, 64>(dy, w, dx, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, As, Bs);
}

extern "C" __global__ void conv2d_bwd_data_m16_f32(const float* dy, const float* w, float* dx, int N, int C,
                                                   int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH,
                                                   int SW, int PH, int PW) {
    __shared__ float As[conv::BK][16 + conv::PAD];
    __shared__ float Bs[conv::BK][128 + conv::PAD];
    conv::bwd_data_body<16, 128>(dy, w, dx, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, As, Bs);
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

// out[i] = sum over z = 0..splits-1 of parts[z*numel + i], in that order (deterministic). Any 1-D grid.
extern "C" __global__ void conv2d_splitk_reduce_f32(const float* parts, float* out, int numel, int splits) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += parts[(size_t)z * numel + i];
        out[i] = s;
    }
}


// ---- tensor-core (TF32) entry points: same arguments, grids and outputs as the f32 kernels above, with the
// 64 x 128 tile: grid = (ceil(cols / 128), ceil(rows / 64), splits or phases). Chosen by conv.rs when the
// backend's precision is TF32 and rows > 16.
extern "C" __global__ void conv2d_fwd_tf32(const float* x, const float* w, float* y, int N, int C, int H, int W,
                                           int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
                                           int k_chunk) {
    __shared__ float As[conv::BK][conv::tc::LDA];
    __shared__ float Bs[conv::BK][conv::tc::LDB];
    conv::tc::fwd_body(x, w, y, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, As, Bs);
}

extern "C" __global__ void conv2d_bwd_data_tf32(const float* dy, const float* w, float* dx, int N, int C, int H,
                                                int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                                int PH, int PW) {
    __shared__ float As[conv::BK][conv::tc::LDA];
    __shared__ float Bs[conv::BK][conv::tc::LDB];
    conv::tc::bwd_data_body(dy, w, dx, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, As, Bs);
}

extern "C" __global__ void conv2d_bwd_weight_tf32(const float* x, const float* dy, float* dw, int N, int C, int H,
                                                  int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                                  int PH, int PW, int k_chunk) {
    __shared__ float As[conv::BK][conv::tc::LDA];
    __shared__ float Bs[conv::BK][conv::tc::LDB];
    conv::tc::bwd_weight_body(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, As, Bs);
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
