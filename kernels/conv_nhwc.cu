// conv_nhwc.cu — the tile convolutions on channels-last operands, and the conversion that makes them: forward,
// backward data and backward weight at TF32, bf16 and fp16 on the tensor cores, and at FP32 on the FMA units.
//
// Why a second layout. conv.cu's tensor-core kernels gather the im2col matrix from NCHW f32: consecutive k are
// channels (or taps, or pixels) apart in ways no 16-byte copy spans, so every element is its own 4-byte cp.async
// with its own bounds bit, and each operand is rounded from f32 as fragments are loaded. In the 64 x 128 bf16
// forward loop that gather is about two thirds of the instructions per HMMA (docs/perf-notes.md). Here the
// operands are first converted once, in one pass each, to the format's values (16-bit, or f32 rounded to TF32)
// with the channel innermost:
//
//   forward          x  [N, C, H, W]   -> [N, H, W, C]     w [O, C, kh, kw] -> [O, kh, kw, C]    K = (tap, c)
//   backward data    dy [N, O, Ho, Wo] -> [N, Ho, Wo, O]   w [O, C, kh, kw] -> [C, kh, kw, O]    K = (tap, o)
//   backward weight  x  -> [N, H, W, C]                    dy -> [N, Ho, Wo, O]                  K = (n, oh, ow)
//
// (to_nhwc_pair_* transposes [n, c, p] to [n, p, c], both operands in one launch, and to_nhwc_triple_* the three of
// a backward whose two GEMMs share one; the backward-data weights are w as [1, O, C*kh*kw].) Forward and backward
// data reduce over channels: with that count a multiple of 32 (conv_nhwc.rs routes only such layers) a BK = 32
// slice of K is 32 channels of one tap, so a column's whole slice is contiguous under one tap bit (64 bytes of
// 16-bit values, 128 of f32: four or eight 16-byte cp.async), the bounds test once per copy, and no division or
// table lookup in the loop. Backward weight reduces over pixels and copies 8 (16-bit) or 4 (f32) channels of one
// pixel at a time along M and N instead (WgradLoader). The shared tiles hold the format's values themselves, so
// ldmatrix (.trans for backward weight's 16-bit tiles; plain word loads for its TF32 ones) hands each lane its
// m16n8k16 (or TF32 m16n8k8) fragment directly, with no conversion in the loop.
//
// FP32. The same tiles, loaders, pipeline and epilogues serve plain f32 operands (converted without rounding):
// instead of ldmatrix and mma, each lane multiplies the accumulators an mma would have handed it, from 16-byte
// (or, k-major, 4- and 8-byte) shared loads, about 1.1 SASS instructions per FFMA where conv.cu's one-stage NCHW
// f32 kernels issue about 3 (docs/perf-notes.md).
//
// Same GEMMs and outputs as conv.cu's conv2d_fwd_* / conv2d_bwd_data_* / conv2d_bwd_weight_* of the format:
// outputs NCHW (dw [O, C, kh, kw]) f32, written by the shared epilogues (conv_tc.cuh) with the activation (or its
// folded backward) or the batch-norm statistics parts; split-K (forward, backward weight) and stride phases
// (backward data) as there. The sums are the same products in another k order (tap-major instead of
// channel-major), so they equal conv.cu's within f32 rounding, not bit for bit.
//
// Shared memory, forward and backward data (Tile): (BM + 128) rows of BK values and 16 bytes of padding, 4
// stages of 16-bit values (61440 B for the 64-row tile, 81920 B for the 128-row one) or 3 of f32 (82944 /
// 110592 B). Backward weight (WgradTile): BK rows of BM + 8 and of 128 + 8 values, 4 stages of 16-bit values
// (53248 / 69632 B) or 3 of f32 (79872 / 104448 B).
//
// Buffers of 16-bit values are passed as `unsigned int*` (two values per word; the kernel signature parser takes
// no 16-bit pointer type) and addressed as `unsigned short` inside; TF32 buffers are `float*`.

#include "common.cuh"
#include "async_copy.cuh"
#include "mma.cuh"
#include "tile_stats.cuh"
#include "act.cuh"
#include "conv_tc.cuh"

namespace conv {
namespace nhwc {
using tc::Acc;
using tc::BN;
using tc::MI;
using tc::NI;
using tc::WARPS_N;
using tc::WM;
using tc::Op;
using tc::WN;

constexpr int BK = 32;  // k per slice: 32 channels of one tap (forward, backward data) or 32 pixels

// The values a kernel of format OP keeps in memory and in its shared tiles: 16-bit (bf16, fp16), f32 already
// rounded to TF32, or f32 as it is (F32).
template <Op OP>
struct Elem {
    typedef unsigned short T;
};
template <>
struct Elem<Op::Tf32> {
    typedef float T;
};
template <>
struct Elem<Op::F32> {
    typedef float T;
};

// The forward and backward-data tiles for values of type T: BM + 128 shared rows (A's m, then B's n) of BK
// values and 16 bytes of padding (80-byte rows for 16-bit values, 144-byte for f32: 8 consecutive rows start 5
// or 9 16-byte groups apart, distinct mod 8, so ldmatrix's 8 rows of a phase hit 8 distinct bank groups).
template <int BM_, class T>
struct Tile {
    static constexpr int BM = BM_;
    static constexpr int THREADS = tc::tile_threads(BM);
    static constexpr int CHUNK = 16 / sizeof(T);  // values per 16-byte copy
    static constexpr int LD = BK + CHUNK;         // values per shared row
    static constexpr int ROW_BYTES = LD * sizeof(T);
    static constexpr int STAGES = sizeof(T) == 2 ? 4 : 3;  // cp.async stages in flight
    static constexpr int A_BYTES = BM * ROW_BYTES;
    static constexpr int STAGE_BYTES = (BM + BN) * ROW_BYTES;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};
static_assert(Tile<64, unsigned short>::SMEM_BYTES == 61440 && Tile<128, unsigned short>::SMEM_BYTES == 81920 &&
                  Tile<64, float>::SMEM_BYTES == 82944 && Tile<128, float>::SMEM_BYTES == 110592,
              "conv_nhwc.rs's shared sizes must match");

// Where a slice starts in K = (tap, channel): the tap (a, b) of the kernel window (index tap = a * R0 + b) and
// the first of its BK channels, c. The channel count CH is a multiple of BK, so a slice never straddles two taps.
struct SliceWalk {
    int a, b, tap, c, CH, R0;
    // From the first slice (no division: R0 may be 0 for a stride phase without taps, which has no slices).
    __device__ SliceWalk(int CH_, int R0_) : a(0), b(0), tap(0), c(0), CH(CH_), R0(R0_) {}
    // From the slice at k (split-K).
    __device__ SliceWalk(int k, int CH_, int R0_) : CH(CH_), R0(R0_) {
        tap = k / CH;
        c = k - tap * CH;
        a = tap / R0;
        b = tap - a * R0;
    }
    __device__ void advance() {
        c += BK;
        if (c == CH) {
            c = 0;
            ++tap;
            if (++b == R0) {
                b = 0;
                ++a;
            }
        }
    }
};

// This thread's copies of a slice. A row's (or column's) slice is BK values, TPR 16-byte chunks (4 of 16-bit
// values, 8 of f32); thread t moves chunk t % TPR of rows t / TPR + STEP i of A and columns t / TPR + STEP j of B:
// TPR threads read one row's or column's contiguous bytes, and a warp writes 32 / TPR rows of shared memory. A
// loader fills in each row's and column's element offset at the first slice (and the columns' tap masks), then
// issues every slice with the offset by which it moved.
template <int BM, class T>
struct Copies {
    typedef Tile<BM, T> TT;
    static constexpr int TPR = BK * sizeof(T) / 16;  // threads per row
    static constexpr int STEP = TT::THREADS / TPR;   // rows (columns) between a thread's copies
    static constexpr int NA = BM / STEP;             // A copies per thread and slice: 2 (16-bit) or 4 (f32)
    static constexpr int NB = BN / STEP;             // B copies per thread and slice: 2 to 8
    int a_off[NA];
    bool a_ok[NA];
    int b_off[NB];
    unsigned b_mask[NB];
    smem_addr a_dst, b_dst;

    __device__ Copies() : a_dst(((threadIdx.x / TPR) * TT::LD + chunk()) * sizeof(T)), b_dst(TT::A_BYTES + a_dst) {}
    // This thread's row of A (i < NA) or column of B (i < NB) within the tile, and its chunk's first element.
    __device__ static int line(int i) { return threadIdx.x / TPR + STEP * i; }
    __device__ static int chunk() { return TT::CHUNK * (threadIdx.x % TPR); }
    // One slice: A row i from a + a_off[i] + a_at, B column j from b + b_off[j] + b_at where the slice's tap bit
    // is in the column's mask (else zeros).
    __device__ void issue(smem_addr stage, const T* a, int a_at, const T* b, int b_at, unsigned bit) const {
#pragma unroll
        for (int i = 0; i < NA; ++i)
            cp_async_16(stage + a_dst + i * (STEP * TT::ROW_BYTES), a + (a_off[i] + a_at), a_ok[i]);
#pragma unroll
        for (int j = 0; j < NB; ++j)
            cp_async_16(stage + b_dst + j * (STEP * TT::ROW_BYTES), b + (b_off[j] + b_at), (b_mask[j] & bit) != 0);
    }
};

// Forward:
//   A[o, k]   = wh[o][k]                         (k = tap * C + c: wh's rows are K long and contiguous)
//   B[k, col] = xh[n][ih][iw][c], (ih, iw) = (oh*SH - PH + a, ow*SW - PW + b) for tap = a*KW + b
template <int BM, class T>
struct Loader {
    typedef Copies<BM, T> Cp;
    const T* w;
    const T* x;
    int W;
    Cp cp;
    SliceWalk walk;

    __device__ Loader(const T* x_, const T* w_, int C, int H, int W_, int O, int KH, int KW,
                      int Ho, int Wo, int SH, int SW, int PH, int PW, int ncols, int m0, int col0, int k_begin)
        : w(w_), x(x_), W(W_), walk(k_begin, C, KW) {
        const int K = KH * KW * C;
#pragma unroll
        for (int i = 0; i < Cp::NA; ++i) {
            const int o = m0 + cp.line(i);
            cp.a_ok[i] = o < O;
            cp.a_off[i] = o * K + cp.chunk();
        }
#pragma unroll
        for (int j = 0; j < Cp::NB; ++j) {
            const int p = col0 + cp.line(j);
            int r = tc::FAR, s = 0;
            cp.b_off[j] = 0;
            if (p < ncols) {
                const int n = p / (Ho * Wo);
                const int pix = p - n * (Ho * Wo);
                const int oh = pix / Wo;
                r = oh * SH - PH;
                s = (pix - oh * Wo) * SW - PW;
                cp.b_off[j] = ((n * H + r) * W + s) * C + cp.chunk();
            }
            cp.b_mask[j] = tc::tap_mask(r, s, KH * KW, KW, 1, H, W);
        }
    }
    __device__ void load(smem_addr stage) const {
        const int C = walk.CH;
        cp.issue(stage, w, walk.tap * C + walk.c, x, (walk.a * W + walk.b) * C + walk.c, 1u << walk.tap);
    }
    __device__ void advance() { walk.advance(); }
};

// Backward data, one stride phase (conv_tc.cuh's Phase): the same GEMM as conv.cu's, K ordered (t, u, o) with the
// output channel innermost, so a slice is 32 output channels of one tap (O a multiple of BK):
//   A[c, k]   = wh[c][r][s][o]                        wh: w as [C, kh, kw, O], (r, s) = (rh + SH t, rw + SW u)
//   B[k, col] = dyh[n][ohb0 + q - t][owb0 + v - u][o] dyh: dy as [N, Ho, Wo, O], col = (n, q, v)
template <int BM, class T>
struct BwdDataLoader {
    typedef Copies<BM, T> Cp;
    const T* w;
    const T* dy;
    int a_dt, a_du, b_dt, b_du;  // offset steps of A and B per tap row t and tap column u
    Cp cp;
    SliceWalk walk;  // (a, b) = (t, u)

    __device__ BwdDataLoader(const T* dy_, const T* w_, int C, int O, int KH, int KW,
                             int Ho, int Wo, int SH, int SW, const tc::Phase& ph, int ncols, int m0, int col0)
        : w(w_), dy(dy_), a_dt(SH * KW * O), a_du(SW * O), b_dt(-Wo * O), b_du(-O), walk(O, ph.St) {
#pragma unroll
        for (int i = 0; i < Cp::NA; ++i) {
            const int c = m0 + cp.line(i);
            cp.a_ok[i] = c < C;
            cp.a_off[i] = ((c * KH + ph.rh) * KW + ph.rw) * O + cp.chunk();
        }
        const int HqWq = ph.Hq * ph.Wq;
#pragma unroll
        for (int j = 0; j < Cp::NB; ++j) {
            const int p = col0 + cp.line(j);
            int r = tc::FAR, s = 0;
            cp.b_off[j] = 0;
            if (p < ncols) {
                const int n = p / HqWq;
                const int qv = p - n * HqWq;
                const int q = qv / ph.Wq;
                r = ph.ohb0 + q;
                s = ph.owb0 + (qv - q * ph.Wq);
                cp.b_off[j] = ((n * Ho + r) * Wo + s) * O + cp.chunk();
            }
            cp.b_mask[j] = tc::tap_mask(r, s, ph.Rt * ph.St, ph.St, -1, Ho, Wo);
        }
    }
    __device__ void load(smem_addr stage) const {
        cp.issue(stage, w, walk.a * a_dt + walk.b * a_du + walk.c, dy, walk.a * b_dt + walk.b * b_du + walk.c,
                 1u << walk.tap);
    }
    __device__ void advance() { walk.advance(); }
};

// Where a warp's fragment loads of a stage start and how they step: this lane's row address for A's first m16
// tile and B's first pair of n8 tiles at k = 0, and the byte steps to the next m16 tile of A, the next pair of
// n8 tiles of B and the next mma's k (16 values of 16 bits, or 8 of TF32: 32 bytes of a row either way).
struct Frags {
    smem_addr a, b;
    int a_tile, b_pair, a_k, b_k;
};

// Tiles stored with k innermost (rows of m for A, of n for B), read by plain ldmatrix. Matrix L >> 3 of A is
// rows +0 / +8 (bit 0) x k +0 / +16 bytes (bit 1), a[0..3] of mma.cuh's m16n8k16 fragment (16-bit values) or of
// its m16n8k8 TF32 one (f32); of B it is k +0 / +16 bytes (bit 0) x columns +0 / +8 (bit 1), b[0], b[1] of two
// n8 tiles.
template <class TT>
__device__ __forceinline__ Frags k_inner_frags() {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    constexpr int ROW = TT::ROW_BYTES;
    return {(smem_addr)((wm + (lane & 7) + 8 * ((lane >> 3) & 1)) * ROW + 16 * (lane >> 4)),
            (smem_addr)(TT::A_BYTES + (wn + (lane & 7) + 8 * (lane >> 4)) * ROW + 16 * ((lane >> 3) & 1)),
            16 * ROW, 16 * ROW, 32, 32};
}

// The 16-bit format of a bf16 / fp16 OP.
__host__ __device__ constexpr Half half_of(Op op) { return op == Op::Fp16 ? Half::Fp16 : Half::Bf16; }

// One m16n8k16 (bf16, fp16) or m16n8k8 (TF32) product of format OP into d (mma.cuh).
template <Op OP>
__device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    if constexpr (OP == Op::Tf32)
        mma_m16n8k8_tf32(d, a, b, d);
    else
        mma_m16n8k16<half_of(OP)>(d, a, b, d);
}

// A warp's fragments for mma k step kk of stage st: 2 A and 8 B fragments with 2 + 4 ldmatrix.x4 (.trans for
// k-major tiles).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_frags(unsigned int (&af)[MI][4], unsigned int (&bf)[NI][2], smem_addr st,
                                               const Frags& f, int kk) {
#pragma unroll
    for (int i = 0; i < MI; ++i) ldmatrix_x4<TRANS>(af[i], st + f.a + i * f.a_tile + kk * f.a_k);
#pragma unroll
    for (int j = 0; j < NI; j += 2) {
        unsigned int r[4];
        ldmatrix_x4<TRANS>(r, st + f.b + (j / 2) * f.b_pair + kk * f.b_k);
        bf[j][0] = r[0];
        bf[j][1] = r[1];
        bf[j + 1][0] = r[2];
        bf[j + 1][1] = r[3];
    }
}

// The same fragments of the TF32 m16n8k8 mma from k-major f32 tiles (k_major_frags), a word per element: a[0..3]
// are (m, k) = (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) and b[0], b[1] are (k, n) = (t, g), (t + 4, g)
// (mma.cuh). 8 + 16 loads for 16 mma, against 6 ldmatrix for the 16-bit tiles. (Wider loads would need the
// tile's rows and columns permuted so that a load's values land in the registers one mma reads, and b[0], b[1]
// lie in two k rows whatever the permutation: 16-byte loads of permuted tiles cost more moves than they save.)
__device__ __forceinline__ void k_major_words(unsigned int (&af)[MI][4], unsigned int (&bf)[NI][2], smem_addr st,
                                              const Frags& f, int kk) {
    const int a_k4 = f.a_k / 2, b_k4 = f.b_k / 2;  // k + 4
#pragma unroll
    for (int i = 0; i < MI; ++i) {
        const smem_addr a = st + f.a + i * f.a_tile + kk * f.a_k;
        af[i][0] = ld_shared_u32(a);
        af[i][1] = ld_shared_u32(a + 32);
        af[i][2] = ld_shared_u32(a + a_k4);
        af[i][3] = ld_shared_u32(a + a_k4 + 32);
    }
#pragma unroll
    for (int j = 0; j < NI; ++j) {
        const smem_addr b = st + f.b + (j / 2) * f.b_pair + (j % 2) * 32 + kk * f.b_k;
        bf[j][0] = ld_shared_u32(b);
        bf[j][1] = ld_shared_u32(b + b_k4);
    }
}

// The FP32 kernels' products of one stage of f32 tiles, on the FMA units. Lane (g, t) = (L >> 2, L & 3) owns the
// accumulators of mma.cuh's C fragment layout: rows g and g + 8 of each of the warp's MI m16 tiles, columns 2t and
// 2t + 1 of each of its NI n8 tiles, 4 rows x 16 columns. Per k it reads 4 A and 16 B values for 64 FMAs.
//
// k-inner tiles (forward, backward data: a shared row of BK values per m or n): a 16-byte load brings 4
// consecutive k of one row, so 4 k steps cost 4 + 16 loads for 256 FMAs. The 8 lanes of a 16-byte load's phase
// read 2 adjacent rows of A (36 floats, 4 banks apart) or 4 rows of B (columns 2t + e, 72 floats, 8 banks apart),
// each row's 4 banks distinct, the other lanes broadcasts.
// The loop over k stays rolled: unrolled, the compiler hoists a whole stage's loads and needs more than the 128
// registers of two 256-thread blocks per SM (the 128-row kernels spilled).
template <class TT>
__device__ __forceinline__ void ffma_k_inner(Acc& acc, const float* __restrict__ st) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    constexpr int LD = TT::LD;
    const float* a = st + ((warp / WARPS_N) * WM + g) * LD;
    const float* b = st + (TT::BM + (warp % WARPS_N) * WN + 2 * t) * LD;
#pragma unroll 1
    for (int k = 0; k < BK; k += 4) {
        float4 av[MI][2];
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) av[i][h] = *reinterpret_cast<const float4*>(a + (16 * i + 8 * h) * LD + k);
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            float4 bv[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) bv[e] = *reinterpret_cast<const float4*>(b + (8 * j + e) * LD + k);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float& c = acc[i][j][2 * h + e];
                        c = fmaf(av[i][h].x, bv[e].x, c);
                        c = fmaf(av[i][h].y, bv[e].y, c);
                        c = fmaf(av[i][h].z, bv[e].z, c);
                        c = fmaf(av[i][h].w, bv[e].w, c);
                    }
        }
    }
}

// k-major tiles (backward weight: a shared row of BM values of A and BN of B per k): per k, A's 4 rows are 4 words
// (g, g + 8, g + 16, g + 24: the warp's 32 lanes read 8 consecutive words), B's 16 columns 8 pairs (8-byte
// loads of columns 2t, 2t + 1): 12 loads for 64 FMAs.
template <class TT>
__device__ __forceinline__ void ffma_k_major(Acc& acc, const float* __restrict__ st) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const float* a = st + (warp / WARPS_N) * WM + g;
    const float* b = st + TT::A_BYTES / 4 + (warp % WARPS_N) * WN + 2 * t;
#pragma unroll 4
    for (int k = 0; k < BK; ++k) {
        float av[MI][2];
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) av[i][h] = a[k * TT::LDA + 16 * i + 8 * h];
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const float2 bv = *reinterpret_cast<const float2*>(b + k * TT::LDB + 8 * j);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    acc[i][j][2 * h] = fmaf(av[i][h], bv.x, acc[i][j][2 * h]);
                    acc[i][j][2 * h + 1] = fmaf(av[i][h], bv.y, acc[i][j][2 * h + 1]);
                }
        }
    }
}

// acc += the block's A * B over `slices` slices, on conv_tc.cuh's pipeline (STAGES deep, stages STAGE_BYTES
// apart). Per mma k step a warp loads its fragments (ldmatrix_frags, or k_major_words for k-major TF32 tiles)
// straight from the tiles and issues 16 mma: no conversion in the loop, the operands are in OP's format already.
// F32 multiplies on the FMA units instead (ffma_k_inner, ffma_k_major), reading the stage through an ordinary
// pointer, `f` unused.
template <int STAGES, int STAGE_BYTES, Op OP, bool TRANS, class TT, class Ld>
__device__ __forceinline__ void mainloop(Ld& ld, int slices, void* smem_v, const Frags& f, Acc& acc) {
    constexpr int K_MMA = OP == Op::Tf32 ? 8 : 16;
    const smem_addr smem = smem_address(smem_v);
    if constexpr (OP == Op::F32) {
        const char* base = static_cast<const char*>(smem_v);
        tc::pipeline<STAGES, STAGE_BYTES>(ld, slices, smem, [](int) {}, [&](smem_addr st) {
            const float* stage = reinterpret_cast<const float*>(base + (st - smem));
            if constexpr (TRANS)
                ffma_k_major<TT>(acc, stage);
            else
                ffma_k_inner<TT>(acc, stage);
        });
    } else {
        tc::pipeline<STAGES, STAGE_BYTES>(ld, slices, smem, [](int) {}, [&](smem_addr st) {
#pragma unroll
            for (int kk = 0; kk < BK / K_MMA; ++kk) {
                unsigned int af[MI][4], bf[NI][2];
                if constexpr (OP == Op::Tf32 && TRANS)
                    k_major_words(af, bf, st, f, kk);
                else
                    ldmatrix_frags<TRANS>(af, bf, st, f, kk);
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NI; ++j) mma<OP>(acc[i][j], af[i], bf[j]);
            }
        });
    }
}

// grid = (ceil(N*Ho*Wo / 128), ceil(O / BM), splits); split z covers k in [z*k_chunk, min(K, (z+1)*k_chunk)),
// k_chunk a multiple of BK, and writes y + z*numel(y). C must be a multiple of BK.
template <int BM, Op OP>
__device__ __forceinline__ void fwd_body(const void* __restrict__ xh, const void* __restrict__ wh,
                                         float* __restrict__ y, float* __restrict__ stats, int N, int C, int H,
                                         int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                         int PW, int k_chunk, int act, float slope, void* smem) {
    const int K = KH * KW * C;
    const int ncols = N * Ho * Wo;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);

    typedef typename Elem<OP>::T T;
    typedef Tile<BM, T> TT;
    Loader<BM, T> ld(static_cast<const T*>(xh), static_cast<const T*>(wh), C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
                     PW, ncols, m0, col0, k_begin);
    Acc acc = {};
    mainloop<TT::STAGES, TT::STAGE_BYTES, OP, false, TT>(ld, max(0, k_end - k_begin) / BK, smem, k_inner_frags<TT>(),
                                                     acc);

    tc::forward_epilogue<BM, TT::SMEM_BYTES>(acc, y, stats, N, O, Ho * Wo, m0, col0, act, slope,
                                                   static_cast<float*>(smem));
}

// grid = (ceil(N * ceil(H/SH) * ceil(W/SW) / 128), ceil(C / BM), SH*SW phases); writes every element of dx. O
// must be a multiple of BK.
template <int BM, Op OP>
__device__ __forceinline__ void bwd_data_body(const void* __restrict__ dyh, const void* __restrict__ wh,
                                              float* __restrict__ dx, float* __restrict__ stats, int N, int C,
                                              int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW,
                                              int PH, int PW, const float* __restrict__ act_y, int act,
                                              float slope, void* smem) {
    const tc::Phase ph(blockIdx.z, H, W, KH, KW, SH, SW, PH, PW);
    const int col0 = blockIdx.x * BN;
    const int m0 = blockIdx.y * BM;
    if (tc::past_phase<BM>(ph, N, C, m0, col0, stats)) return;
    Acc acc = {};
    // A phase without taps (stride larger than the kernel) has no slices and writes zeros.
    typedef typename Elem<OP>::T T;
    typedef Tile<BM, T> TT;
    BwdDataLoader<BM, T> ld(static_cast<const T*>(dyh), static_cast<const T*>(wh), C, O, KH, KW, Ho, Wo, SH, SW, ph,
                            ph.cols(N), m0, col0);
    mainloop<TT::STAGES, TT::STAGE_BYTES, OP, false, TT>(ld, ph.Rt * ph.St * O / BK, smem, k_inner_frags<TT>(), acc);
    tc::bwd_data_epilogue<BM, TT::SMEM_BYTES>(acc, dx, stats, N, C, H, W, ph, m0, col0, act_y, act, slope,
                                                    static_cast<float*>(smem));
}

// Backward weight: rows o, columns col = tap * C + c (the channel innermost, tap = r * KW + s), K = the
// pixels p = (n, oh, ow) of dy:
//   A[o, k]   = dyh[k][o]                                    dyh: dy as [N, Ho, Wo, O] = [K, O]
//   B[k, col] = xh[n][oh*SH - PH + r][ow*SW - PW + s][c]     xh:  x as [N, H, W, C]
// Here the operands' contiguous axis is M and N, not K, so both tiles are stored k-major: a shared row per k, BM
// values of A and BN of B, each padded by 8 values. 16-bit tiles are read with ldmatrix.trans, whose 8 row
// addresses of a phase are 8 consecutive k: rows BM / 8 + 1 (odd) 16-byte groups apart fall in 8 distinct bank
// groups. TF32 tiles have no 32-bit ldmatrix.trans and are read a word per fragment element: a warp's 32 words
// are 4 rows k x 8 consecutive m (or n), and rows 8 banks apart (BM + 8 = 8 mod 32) put them in 32 distinct
// banks. A 16-byte copy is 8 (16-bit) or 4 (f32) output channels of one pixel (A) or input channels of one pixel
// and tap (B), so O and C must be multiples of 8 (conv_nhwc.rs asks that of every format); there is no tap mask
// and no limit on taps, as each copy tests its own pixel's bounds. dw is written as [O, C, kh, kw], the columns
// permuted in the epilogue.
template <int BM_, class T>
struct WgradTile {
    typedef T Value;
    static constexpr int BM = BM_;
    static constexpr int THREADS = tc::tile_threads(BM);
    static constexpr int CHUNK = Tile<BM, T>::CHUNK;    // values per 16-byte copy
    static constexpr int STAGES = Tile<BM, T>::STAGES;  // as deep as the format's other kernels
    static constexpr int LDA = BM + 8;                  // values per shared row of A
    static constexpr int LDB = BN + 8;
    static constexpr int A_BYTES = BK * LDA * sizeof(T);
    static constexpr int STAGE_BYTES = A_BYTES + BK * LDB * sizeof(T);
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};
static_assert(WgradTile<64, unsigned short>::SMEM_BYTES == 53248 &&
                  WgradTile<128, unsigned short>::SMEM_BYTES == 69632 &&
                  WgradTile<64, float>::SMEM_BYTES == 79872 && WgradTile<128, float>::SMEM_BYTES == 104448,
              "conv_nhwc.rs's shared sizes must match");

// k-major tiles. 16-bit, read by ldmatrix.trans: matrix L >> 3 of A is m +0 / +8 (bit 0) x k +0 / +8 (bit 1),
// each lane addressing row k of 8 consecutive m; of B it is k +0 / +8 (bit 0) x columns +0 / +8 (bit 1). TF32,
// read a word at a time (k_major_words): lane (g, t) = (L >> 2, L & 3) addresses element (k = t, m = g) of its
// A tile and (k = t, n = g) of its first n8 tile of B; the fragment's other elements are m + 8 (32 bytes on) and
// k + 4 (half a k step on), the next n8 tile 32 bytes on.
template <class TT>
__device__ __forceinline__ Frags k_major_frags() {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    if constexpr (sizeof(typename TT::Value) == 4) {
        const int g = lane >> 2, t = lane & 3;
        return {(smem_addr)((t * TT::LDA + wm + g) * 4), (smem_addr)(TT::A_BYTES + (t * TT::LDB + wn + g) * 4),
                16 * 4, 16 * 4, 8 * TT::LDA * 4, 8 * TT::LDB * 4};
    } else {
        return {(smem_addr)((((lane & 7) + 8 * (lane >> 4)) * TT::LDA + wm + 8 * ((lane >> 3) & 1)) * 2),
                (smem_addr)(TT::A_BYTES + (((lane & 7) + 8 * ((lane >> 3) & 1)) * TT::LDB + wn + 8 * (lane >> 4)) * 2),
                16 * 2, 16 * 2, 16 * TT::LDA * 2, 16 * TT::LDB * 2};
    }
}

// The backward-weight copies of a slice (CHUNK values per 16-byte copy: 8 of 16 bits, 4 of f32). A: thread t moves
// chunk t % (BM / CHUNK) of k rows t / (BM / CHUNK) + A_STEP i, one output pixel's CHUNK channels at a time (a row
// is BM / CHUNK consecutive chunks of dyh). B: thread t owns one k row (one pixel) and the column chunks (t % TPR)
// + TPR j, TPR = THREADS / BK threads per row, so a pixel's (n, oh, ow) digits advance once per slice (no division)
// and TPR consecutive threads read TPR * 16 contiguous bytes of one tap. Each column chunk keeps its tap's (r, s)
// and element offset from the pixel's.
template <int BM, class T>
struct WgradLoader {
    typedef WgradTile<BM, T> TT;
    static constexpr int CHUNK = TT::CHUNK;
    static constexpr int A_CHUNKS = BM / CHUNK;            // chunks per A row
    static constexpr int A_STEP = TT::THREADS / A_CHUNKS;  // k rows between a thread's A copies: 16 or 8
    static constexpr int NA = BK / A_STEP;                 // A copies per thread and slice: 2 or 4
    static constexpr int TPR = TT::THREADS / BK;           // threads per B row: 4 (BM = 64) or 8
    static constexpr int NB = BN / CHUNK / TPR;            // B copies per thread and slice: 2 to 8
    static_assert(NA * A_STEP == BK && TPR * NB * CHUNK == BN, "every element copied once");
    const T* dy;
    const T* x;
    int O, H, W, C, SH, SW, PH, PW, Ho, Wo, k_end;
    int ka, a_off;  // this thread's first A row (k) and its element offset, for the current slice
    bool a_ok;      // its chunk's channels lie below O
    int kb;         // this thread's B row (k) for the current slice
    tc::Digits pix, step;  // (n, oh, ow) of kb, and BK as pixel digits
    int b_r[NB], b_s[NB], b_off[NB];
    smem_addr a_dst, b_dst;

    __device__ WgradLoader(const T* x_, const T* dy_, int C_, int H_, int W_, int O_, int KW,
                           int Ho_, int Wo_, int SH_, int SW_, int PH_, int PW_, int ncols, int m0, int col0,
                           int k_begin, int k_end_)
        : dy(dy_), x(x_), O(O_), H(H_), W(W_), C(C_), SH(SH_), SW(SW_), PH(PH_), PW(PW_), Ho(Ho_), Wo(Wo_),
          k_end(k_end_) {
        const int t = threadIdx.x;
        const int o = m0 + CHUNK * (t % A_CHUNKS);
        ka = k_begin + t / A_CHUNKS;
        a_off = ka * O + o;
        a_ok = o < O;
        a_dst = ((t / A_CHUNKS) * TT::LDA + CHUNK * (t % A_CHUNKS)) * sizeof(T);
        kb = k_begin + t / TPR;
        pix.set(kb, Ho, Wo);
        step.set(BK, Ho, Wo);
#pragma unroll
        for (int j = 0; j < NB; ++j) {
            const int col = col0 + CHUNK * (t % TPR + TPR * j);
            b_r[j] = tc::FAR;
            b_s[j] = 0;
            b_off[j] = 0;
            if (col < ncols) {  // ncols = taps * C, a multiple of CHUNK: a chunk is all in or all out
                const int tap = col / C;
                b_r[j] = tap / KW;
                b_s[j] = tap - b_r[j] * KW;
                b_off[j] = (b_r[j] * W + b_s[j]) * C + (col - tap * C);
            }
        }
        b_dst = TT::A_BYTES + ((t / TPR) * TT::LDB + CHUNK * (t % TPR)) * sizeof(T);
    }
    __device__ void load(smem_addr stage) const {
#pragma unroll
        for (int i = 0; i < NA; ++i)
            cp_async_16(stage + a_dst + i * (A_STEP * TT::LDA * sizeof(T)), dy + (a_off + i * A_STEP * O),
                        a_ok && ka + i * A_STEP < k_end);
        const int r0 = pix.mid * SH - PH, s0 = pix.lo * SW - PW;
        const int base = ((pix.hi * H + r0) * W + s0) * C;
        const bool kok = kb < k_end;
#pragma unroll
        for (int j = 0; j < NB; ++j) {
            const bool ok = kok && (unsigned)(r0 + b_r[j]) < (unsigned)H && (unsigned)(s0 + b_s[j]) < (unsigned)W;
            cp_async_16(stage + b_dst + j * (TPR * CHUNK * sizeof(T)), x + (base + b_off[j]), ok);
        }
    }
    __device__ void advance() {
        ka += BK;
        a_off += BK * O;
        kb += BK;
        pix.add(step, Ho, Wo);
    }
};

// grid = (ceil(C*kh*kw / 128), ceil(O / BM), splits); split z covers the pixels [z*k_chunk, min(N*Ho*Wo,
// (z+1)*k_chunk)), k_chunk a multiple of BK, and writes dw + z*numel(dw). O and C must be multiples of 8.
template <int BM, Op OP>
__device__ __forceinline__ void bwd_weight_body(const void* __restrict__ xh, const void* __restrict__ dyh,
                                                float* __restrict__ dw, int N, int C, int H, int W, int O, int KH,
                                                int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk,
                                                void* smem) {
    const int taps = KH * KW;
    const int ncols = taps * C;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(N * Ho * Wo, k_begin + k_chunk);

    typedef typename Elem<OP>::T T;
    typedef WgradTile<BM, T> TT;
    WgradLoader<BM, T> ld(static_cast<const T*>(xh), static_cast<const T*>(dyh), C, H, W, O, KW, Ho, Wo, SH, SW,
                          PH, PW, ncols, m0, col0, k_begin, k_end);
    Acc acc = {};
    mainloop<TT::STAGES, TT::STAGE_BYTES, OP, true, TT>(ld, (max(0, k_end - k_begin) + BK - 1) / BK, smem,
                                                    k_major_frags<TT>(), acc);

    float* out = dw + (size_t)blockIdx.z * O * ncols;
    tc::epilogue(acc, m0, col0, [&](int o, int col, float v) {
        if (o < O && col < ncols) {
            const int tap = col / C;
            out[(size_t)o * ncols + (col - tap * C) * taps + tap] = v;
        }
    });
}

// y[n][p][c] = x[n][c][p] rounded to OP's format, for x [N, C, HW] f32 and y [N, HW, C] (16-bit values, or f32
// rounded to TF32 as cvt.rna does); C even. Block `b` of the conversion's N * ceil(HW / 32) * ceil(C / 64)
// transposes a 64-channel x 32-pixel tile through shared memory: reads run along pixels, writes along channels,
// two channels per store. block = (32, 8).
template <Op OP>
__device__ __forceinline__ void to_nhwc_block(int b, const float* __restrict__ x, void* __restrict__ y, int N, int C,
                                              int HW) {
    __shared__ float tile[64][33];
    const int tiles = (HW + 31) / 32;
    const int cb = b / (N * tiles), nt = b - cb * (N * tiles);
    const int n = nt / tiles;
    const int p0 = (nt - n * tiles) * 32, c0 = cb * 64;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const float* xn = x + (size_t)n * C * HW;
    for (int i = ty; i < 64; i += 8) {
        const int ch = c0 + i, p = p0 + tx;
        tile[i][tx] = ch < C && p < HW ? xn[(size_t)ch * HW + p] : 0.0f;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
        const int p = p0 + j, ch = c0 + 2 * tx;
        if (p >= HW || ch >= C) continue;
        const size_t pair = (((size_t)n * HW + p) * C + ch) / 2;
        const float lo = tile[2 * tx][j], hi = tile[2 * tx + 1][j];
        if constexpr (OP == Op::Tf32)
            static_cast<float2*>(y)[pair] = make_float2(round_tf32(lo), round_tf32(hi));
        else if constexpr (OP == Op::F32)
            static_cast<float2*>(y)[pair] = make_float2(lo, hi);
        else
            static_cast<unsigned int*>(y)[pair] = pack_half2<half_of(OP)>(lo, hi);
    }
}

// Blocks of one conversion of to_nhwc_block.
__device__ __forceinline__ int to_nhwc_blocks(int N, int C, int HW) { return N * ((HW + 31) / 32) * ((C + 63) / 64); }

// Two conversions in one grid: of blocks b..., the first to_nhwc_blocks(N1, C1, HW1) convert x1, the rest x2.
template <Op OP>
__device__ __forceinline__ void to_nhwc_pair(int b, const float* x1, void* y1, int N1, int C1, int HW1,
                                             const float* x2, void* y2, int N2, int C2, int HW2) {
    const int first = to_nhwc_blocks(N1, C1, HW1);
    if (b < first)
        to_nhwc_block<OP>(b, x1, y1, N1, C1, HW1);
    else
        to_nhwc_block<OP>(b - first, x2, y2, N2, C2, HW2);
}

// Three conversions in one grid (x1's blocks first, then x2's, then x3's).
template <Op OP>
__device__ __forceinline__ void to_nhwc_triple(const float* x1, void* y1, int N1, int C1, int HW1, const float* x2,
                                               void* y2, int N2, int C2, int HW2, const float* x3, void* y3, int N3,
                                               int C3, int HW3) {
    const int b = blockIdx.x, first = to_nhwc_blocks(N1, C1, HW1);
    if (b < first)
        to_nhwc_block<OP>(b, x1, y1, N1, C1, HW1);
    else
        to_nhwc_pair<OP>(b - first, x2, y2, N2, C2, HW2, x3, y3, N3, C3, HW3);
}
}  // namespace nhwc
}  // namespace conv

// ---- entry points ------------------------------------------------------------------------------------------
// Buffers of 16-bit values are `unsigned int*`, of TF32-rounded f32 `float*`.
//
// conv2d_fwd_nhwc[_m128]_{tf32,bf16,fp16}: the arguments of conv.cu's conv2d_fwd_* (stats, act and slope as
// there), with x and w in the channels-last form of to_nhwc_pair_*. blockDim = tile_threads(BM), dynamic shared
// memory Tile<BM, T>::SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_fwd_nhwc_tf32(const float* x, const float* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, conv::tc::Op::Tf32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_fwd_nhwc_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, conv::tc::Op::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_fwd_nhwc_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, conv::tc::Op::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_fwd_nhwc_m128_tf32(const float* x, const float* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, conv::tc::Op::Tf32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_fwd_nhwc_m128_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, conv::tc::Op::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_fwd_nhwc_m128_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, conv::tc::Op::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

// conv2d_bwd_data_nhwc[_m128]_{tf32,bf16,fp16}: the arguments of conv.cu's conv2d_bwd_data_* (stats, act_y, act
// and slope as there), with dy as [N, Ho, Wo, O] and w as [C, kh, kw, O] (to_nhwc_pair_*). blockDim and dynamic
// shared memory as the forward's.
extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_data_nhwc_tf32(const float* dy, const float* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, conv::tc::Op::Tf32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_data_nhwc_bf16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, conv::tc::Op::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_data_nhwc_fp16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, conv::tc::Op::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_data_nhwc_m128_tf32(const float* dy, const float* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, conv::tc::Op::Tf32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_data_nhwc_m128_bf16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, conv::tc::Op::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_data_nhwc_m128_fp16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, conv::tc::Op::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

// conv2d_bwd_weight_nhwc[_m128]_{tf32,bf16,fp16}: the arguments of conv.cu's conv2d_bwd_weight_*, with x as
// [N, H, W, C] and dy as [N, Ho, Wo, O] (to_nhwc_pair_*). blockDim = WgradTile<BM, T>::THREADS, dynamic shared
// memory WgradTile<BM, T>::SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_weight_nhwc_tf32(const float* x, const float* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<64, conv::tc::Op::Tf32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_weight_nhwc_bf16(const unsigned int* x, const unsigned int* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<64, conv::tc::Op::Bf16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_weight_nhwc_fp16(const unsigned int* x, const unsigned int* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<64, conv::tc::Op::Fp16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_weight_nhwc_m128_tf32(const float* x, const float* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<128, conv::tc::Op::Tf32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_weight_nhwc_m128_bf16(const unsigned int* x, const unsigned int* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<128, conv::tc::Op::Bf16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128))
    conv2d_bwd_weight_nhwc_m128_fp16(const unsigned int* x, const unsigned int* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<128, conv::tc::Op::Fp16>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

// conv2d_fwd_nhwc[_m128]_f32, conv2d_bwd_data_nhwc[_m128]_f32, conv2d_bwd_weight_nhwc[_m128]_f32: the FP32
// kernels, plain f32 products on the FMA units with the tiles, pipeline and epilogues of the TF32 ones, on
// operands transposed unrounded by to_nhwc_pair_f32 / to_nhwc_triple_f32. Arguments, blockDim and dynamic shared
// memory as the TF32 kernels'. The 128-row ones are held to 128 registers (two blocks of 256 threads per SM, as
// their shared memory allows); unbounded, the compiler takes ~240 to hoist a stage's loads.
extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_fwd_nhwc_f32(const float* x, const float* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, conv::tc::Op::F32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128), 2)
    conv2d_fwd_nhwc_m128_f32(const float* x, const float* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, conv::tc::Op::F32>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_data_nhwc_f32(const float* dy, const float* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, conv::tc::Op::F32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128), 2)
    conv2d_bwd_data_nhwc_m128_f32(const float* dy, const float* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, conv::tc::Op::F32>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH,
        PW, act_y, act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(64))
    conv2d_bwd_weight_nhwc_f32(const float* x, const float* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<64, conv::tc::Op::F32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::tc::tile_threads(128), 2)
    conv2d_bwd_weight_nhwc_m128_f32(const float* x, const float* dy, float* dw, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_weight_body<128, conv::tc::Op::F32>(x, dy, dw, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW,
        k_chunk, nhwc_smem);
}

// to_nhwc_pair_{tf32,bf16,fp16,f32}: two conversions in one launch (a convolution's two operands): x1 [N1, C1,
// HW1] -> y1 [N1, HW1, C1] and x2 -> y2 likewise (f32: transposed, not rounded). grid = (to_nhwc_blocks of the
// first + of the second), block = (32, 8).
extern "C" __global__ void to_nhwc_pair_tf32(const float* x1, float* y1, int N1, int C1, int HW1,
    const float* x2, float* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<conv::tc::Op::Tf32>(blockIdx.x, x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}

extern "C" __global__ void to_nhwc_pair_bf16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
    const float* x2, unsigned int* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<conv::tc::Op::Bf16>(blockIdx.x, x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}

extern "C" __global__ void to_nhwc_pair_fp16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
    const float* x2, unsigned int* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<conv::tc::Op::Fp16>(blockIdx.x, x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}

extern "C" __global__ void to_nhwc_pair_f32(const float* x1, float* y1, int N1, int C1, int HW1,
    const float* x2, float* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<conv::tc::Op::F32>(blockIdx.x, x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}

// to_nhwc_triple_{tf32,bf16,fp16,f32}: three conversions in one launch (the operands of a convolution's two backward
// GEMMs, the one they share converted once), as to_nhwc_pair_*. grid = (to_nhwc_blocks of all three), block =
// (32, 8).
extern "C" __global__ void to_nhwc_triple_tf32(const float* x1, float* y1, int N1, int C1, int HW1,
    const float* x2, float* y2, int N2, int C2, int HW2, const float* x3, float* y3, int N3, int C3, int HW3) {
    conv::nhwc::to_nhwc_triple<conv::tc::Op::Tf32>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2, x3, y3, N3, C3, HW3);
}

extern "C" __global__ void to_nhwc_triple_bf16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
    const float* x2, unsigned int* y2, int N2, int C2, int HW2, const float* x3, unsigned int* y3, int N3, int C3,
    int HW3) {
    conv::nhwc::to_nhwc_triple<conv::tc::Op::Bf16>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2, x3, y3, N3, C3, HW3);
}

extern "C" __global__ void to_nhwc_triple_fp16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
    const float* x2, unsigned int* y2, int N2, int C2, int HW2, const float* x3, unsigned int* y3, int N3, int C3,
    int HW3) {
    conv::nhwc::to_nhwc_triple<conv::tc::Op::Fp16>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2, x3, y3, N3, C3, HW3);
}

extern "C" __global__ void to_nhwc_triple_f32(const float* x1, float* y1, int N1, int C1, int HW1,
    const float* x2, float* y2, int N2, int C2, int HW2, const float* x3, float* y3, int N3, int C3, int HW3) {
    conv::nhwc::to_nhwc_triple<conv::tc::Op::F32>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2, x3, y3, N3, C3, HW3);
}
