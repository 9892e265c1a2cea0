// conv_nhwc.cu — the bf16 / fp16 forward convolution on channels-last 16-bit operands, and the conversion that
// makes them.
//
// Why a second layout. conv.cu's tensor-core kernels gather the im2col matrix from NCHW f32: consecutive k are
// channels (or taps) a whole image plane apart, so every element is its own 4-byte cp.async with its own bounds
// bit, and the 16-bit kernels convert each operand from f32 as they load fragments. In the 64 x 128 bf16 forward
// loop that gather is about two thirds of the instructions per HMMA (docs/perf-notes.md). Here the operands are
// first converted once, in one pass each, to 16-bit values with the channel innermost:
//
//   x  [N, C, H, W] f32   ->  xh [N, H, W, C] bf16 / f16      (to_nhwc_*, also for the weights:)
//   w  [O, C, kh, kw] f32 ->  wh [O, kh, kw, C]               (the same transposition, "images" O, "pixels" kh*kw)
//
// and the forward GEMM (M = O, N = N*Ho*Wo, K = kh*kw*C, k ordered tap-major, channel innermost) reads both with
// 16-byte cp.async: 8 consecutive channels of one tap of one pixel per copy. With C a multiple of 32 (conv_nhwc.rs
// routes only such layers: DCGAN's D2..D5, not the 3-channel image layer) a BK = 32 slice of K is 32 channels of
// one tap, so a column's whole slice is 64 contiguous bytes under one tap bit: the bounds test is once per copy,
// not per element, and no division or table lookup is left in the loop. The shared tiles hold the 16-bit values
// themselves, so ldmatrix hands each lane its m16n8k16 fragment directly, with no conversion in the loop.
//
// Same GEMM and outputs as conv.cu's conv2d_fwd_{bf16,fp16}: y is NCHW f32, written by the shared epilogue
// (conv_tc.cuh) with the activation or the batch-norm statistics parts, and split-K writes y + z*numel(y) for
// conv2d_splitk_reduce_f32. The sum is the same products in another k order (tap-major instead of channel-major),
// so it equals conv.cu's within f32 rounding, not bit for bit.
//
// Shared memory: STAGES = 4 stages of (BM + 128) rows of BK + 8 16-bit values (80-byte rows: 16-byte aligned,
// and 8 consecutive rows start 5 x 16 bytes apart mod 128, so ldmatrix's 8 rows of a phase hit 8 distinct
// 16-byte bank groups). 61440 B for the 64-row tile, 81920 B for the 128-row one.
//
// Buffers of 16-bit values are passed as `unsigned int*` (two values per word; the kernel signature parser takes
// no 16-bit pointer type) and addressed as `unsigned short` inside.

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
using tc::WN;

constexpr int BK = 32;       // k per slice: 32 channels of one tap
constexpr int STAGES = 4;    // cp.async stages in flight
constexpr int LDH = BK + 8;  // 16-bit values per shared row (80 bytes)
constexpr int CHUNK = 8;     // 16-bit values per 16-byte copy

template <int BM_>
struct Tile {
    static constexpr int BM = BM_;
    static constexpr int THREADS = tc::tile_threads(BM);
    static constexpr int A_BYTES = BM * LDH * 2;
    static constexpr int STAGE_BYTES = (BM + BN) * LDH * 2;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};
static_assert(Tile<64>::SMEM_BYTES == 61440 && Tile<128>::SMEM_BYTES == 81920, "conv_nhwc.rs's TILES must match");

// This thread's copies of a slice. Thread t moves 16-byte chunk (t & 3) of the slice's 64 bytes for rows
// (t >> 2) + (THREADS / 4) i of A and columns (t >> 2) + (THREADS / 4) j of B: four threads read one row's or
// column's 64 contiguous bytes, and a warp writes 8 rows x 4 chunks of shared memory.
//   A[o, k]   = wh[o][k]                         (k = tap * C + c: wh's rows are K long and contiguous)
//   B[k, col] = xh[n][ih][iw][c], (ih, iw) = (oh*SH - PH + a, ow*SW - PW + b) for tap = a*KW + b
template <int BM>
struct Loader {
    typedef Tile<BM> T;
    static constexpr int STEP = T::THREADS / 4;  // rows (columns) between a thread's copies
    static constexpr int NA = BM / STEP;         // A copies per thread and slice: 2
    static constexpr int NB = BN / STEP;         // B copies per thread and slice: 4 (BM = 64) or 2
    const unsigned short* w;
    const unsigned short* x;
    int C, W, KW;
    int a_off[NA];  // element offset of each A row's chunk at k = 0
    bool a_ok[NA];
    int b_off[NB];  // element offset of each B column's chunk at tap (0, 0), channel 0
    unsigned b_mask[NB];
    smem_addr a_dst, b_dst;
    int k;              // the slice's first k
    int ta, tb, tap, c;  // the slice's tap (row, column, index a*KW + b) and first channel

    __device__ Loader(const unsigned short* x_, const unsigned short* w_, int C_, int H, int W_, int O, int KH,
                      int KW_, int Ho, int Wo, int SH, int SW, int PH, int PW, int ncols, int m0, int col0,
                      int k_begin)
        : w(w_), x(x_), C(C_), W(W_), KW(KW_), k(k_begin) {
        const int t = threadIdx.x, q = t & 3;
        const int K = KH * KW * C;
#pragma unroll
        for (int i = 0; i < NA; ++i) {
            const int o = m0 + (t >> 2) + STEP * i;
            a_ok[i] = o < O;
            a_off[i] = o * K + CHUNK * q;
        }
#pragma unroll
        for (int j = 0; j < NB; ++j) {
            const int p = col0 + (t >> 2) + STEP * j;
            int r = tc::FAR, s = 0;
            b_off[j] = 0;
            if (p < ncols) {
                const int n = p / (Ho * Wo);
                const int pix = p - n * (Ho * Wo);
                const int oh = pix / Wo;
                r = oh * SH - PH;
                s = (pix - oh * Wo) * SW - PW;
                b_off[j] = ((n * H + r) * W + s) * C + CHUNK * q;
            }
            b_mask[j] = tc::tap_mask(r, s, KH * KW, KW, 1, H, W);
        }
        a_dst = ((t >> 2) * LDH + CHUNK * q) * 2;
        b_dst = T::A_BYTES + a_dst;
        tap = k_begin / C;
        c = k_begin - tap * C;
        ta = tap / KW;
        tb = tap - ta * KW;
    }
    __device__ void load(smem_addr stage) const {
#pragma unroll
        for (int i = 0; i < NA; ++i) cp_async_16(stage + a_dst + i * (STEP * LDH * 2), w + (a_off[i] + k), a_ok[i]);
        const unsigned bit = 1u << tap;
        const int toff = (ta * W + tb) * C + c;
#pragma unroll
        for (int j = 0; j < NB; ++j)
            cp_async_16(stage + b_dst + j * (STEP * LDH * 2), x + (b_off[j] + toff), (b_mask[j] & bit) != 0);
    }
    __device__ void advance() {
        k += BK;
        c += BK;
        if (c == C) {  // C is a multiple of BK: a slice never straddles two taps
            c = 0;
            ++tap;
            if (++tb == KW) {
                tb = 0;
                ++ta;
            }
        }
    }
};

// acc += the block's A * B over `slices` slices, on conv_tc.cuh's pipeline. Per 16 k a warp loads its 2 A and
// 8 B fragments with 2 + 4 ldmatrix.x4 straight from the 16-bit tiles and issues 16 mma.
template <int BM, Half F, class Ld>
__device__ __forceinline__ void mainloop(Ld& ld, int slices, void* smem_v, Acc& acc) {
    typedef Tile<BM> T;
    const smem_addr smem = smem_address(smem_v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    // ldmatrix row addresses (async_copy.cuh): matrix L >> 3 of A is rows +0 / +8 (bit 0) x k +0 / +8 (bit 1),
    // a[0..3] of mma.cuh's m16n8k16 fragment; of B it is k +0 / +8 (bit 0) x columns +0 / +8 (bit 1), b[0], b[1]
    // of two n8 tiles.
    const smem_addr a_lane = ((wm + (lane & 7) + 8 * ((lane >> 3) & 1)) * LDH + 8 * (lane >> 4)) * 2;
    const smem_addr b_lane = T::A_BYTES + ((wn + (lane & 7) + 8 * (lane >> 4)) * LDH + 8 * ((lane >> 3) & 1)) * 2;

    tc::pipeline<STAGES, T::STAGE_BYTES>(ld, slices, smem, [](int) {}, [&](smem_addr st) {
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned int af[MI][4], bf[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) ldmatrix_x4(af[i], st + a_lane + (16 * i * LDH + kk) * 2);
            tc::ldmatrix_b(bf, st + b_lane + kk * 2, LDH * 2);
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma_m16n8k16<F>(acc[i][j], af[i], bf[j], acc[i][j]);
        }
    });
}

// grid = (ceil(N*Ho*Wo / 128), ceil(O / BM), splits); split z covers k in [z*k_chunk, min(K, (z+1)*k_chunk)),
// k_chunk a multiple of BK, and writes y + z*numel(y). C must be a multiple of BK.
template <int BM, Half F>
__device__ __forceinline__ void fwd_body(const unsigned int* __restrict__ xh, const unsigned int* __restrict__ wh,
                                         float* __restrict__ y, float* __restrict__ stats, int N, int C, int H,
                                         int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH,
                                         int PW, int k_chunk, int act, float slope, void* smem) {
    const int K = KH * KW * C;
    const int ncols = N * Ho * Wo;
    const int m0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(K, k_begin + k_chunk);

    Loader<BM> ld(reinterpret_cast<const unsigned short*>(xh), reinterpret_cast<const unsigned short*>(wh), C, H, W,
                  O, KH, KW, Ho, Wo, SH, SW, PH, PW, ncols, m0, col0, k_begin);
    Acc acc = {};
    mainloop<BM, F>(ld, max(0, k_end - k_begin) / BK, smem, acc);

    tc::forward_epilogue<BM, Tile<BM>::SMEM_BYTES>(acc, y, stats, N, O, Ho * Wo, m0, col0, act, slope,
                                                   static_cast<float*>(smem));
}

// y[n][p][c] = x[n][c][p] rounded to F (to nearest even), for x [N, C, HW] f32 and y [N, HW, C] 16-bit; C even.
// A block transposes a 64-channel x 32-pixel tile through shared memory: reads run along pixels, writes along
// channels, two per 32-bit store. grid = (N * ceil(HW / 32), ceil(C / 64)), block = (32, 8).
template <Half F>
__device__ __forceinline__ void to_nhwc_body(const float* __restrict__ x, unsigned int* __restrict__ y, int N, int C,
                                             int HW) {
    __shared__ float tile[64][33];
    const int tiles = (HW + 31) / 32;
    const int n = blockIdx.x / tiles;
    const int p0 = (blockIdx.x - n * tiles) * 32, c0 = blockIdx.y * 64;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const float* xn = x + (size_t)n * C * HW;
    for (int i = ty; i < 64; i += 8) {
        const int ch = c0 + i, p = p0 + tx;
        tile[i][tx] = ch < C && p < HW ? xn[(size_t)ch * HW + p] : 0.0f;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
        const int p = p0 + j, ch = c0 + 2 * tx;
        if (p < HW && ch < C) y[(((size_t)n * HW + p) * C + ch) / 2] = pack_half2<F>(tile[2 * tx][j], tile[2 * tx + 1][j]);
    }
}
}  // namespace nhwc
}  // namespace conv

// ---- entry points ------------------------------------------------------------------------------------------
// conv2d_fwd_nhwc[_m128]_{bf16,fp16}: the arguments of conv.cu's conv2d_fwd_* (stats, act and slope as there),
// with x and w in the channels-last 16-bit form of to_nhwc_*. blockDim = Tile<BM>::THREADS, dynamic shared memory
// Tile<BM>::SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_fwd_nhwc_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H, int W, int O,
         int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, Half::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
                                        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_fwd_nhwc_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H, int W, int O,
         int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, Half::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
                                        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_fwd_nhwc_m128_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H, int W, int O,
         int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, Half::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
                                        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_fwd_nhwc_m128_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H, int W, int O,
         int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, Half::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
                                        slope, nhwc_smem);
}

extern "C" __global__ void to_nhwc_bf16(const float* x, unsigned int* y, int N, int C, int HW) {
    conv::nhwc::to_nhwc_body<Half::Bf16>(x, y, N, C, HW);
}

extern "C" __global__ void to_nhwc_fp16(const float* x, unsigned int* y, int N, int C, int HW) {
    conv::nhwc::to_nhwc_body<Half::Fp16>(x, y, N, C, HW);
}
