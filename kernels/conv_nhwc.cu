// conv_nhwc.cu — the bf16 / fp16 forward and backward-data convolutions on channels-last 16-bit operands, and the
// conversion that makes them.
//
// Why a second layout. conv.cu's tensor-core kernels gather the im2col matrix from NCHW f32: consecutive k are
// channels (or taps) a whole image plane apart, so every element is its own 4-byte cp.async with its own bounds
// bit, and the 16-bit kernels convert each operand from f32 as they load fragments. In the 64 x 128 bf16 forward
// loop that gather is about two thirds of the instructions per HMMA (docs/perf-notes.md). Here the operands are
// first converted once, in one pass each, to 16-bit values with the reduction's channel innermost:
//
//   forward        x  [N, C, H, W]   -> [N, H, W, C]     w [O, C, kh, kw] -> [O, kh, kw, C]      K = (tap, c)
//   backward data  dy [N, O, Ho, Wo] -> [N, Ho, Wo, O]   w [O, C, kh, kw] -> [C, kh, kw, O]      K = (tap, o)
//
// (to_nhwc_pair_* transposes [n, c, p] to [n, p, c], both operands in one launch; the backward weights are w as
// [1, O, C*kh*kw].) With the channel
// count of K a multiple of 32 (conv_nhwc.rs routes only such layers) a BK = 32 slice of K is 32 channels of one
// tap, so a column's whole slice is 64 contiguous bytes under one tap bit: four 16-byte cp.async, the bounds test
// once per copy, and no division or table lookup in the loop. The shared tiles hold the 16-bit values
// themselves, so ldmatrix hands each lane its m16n8k16 fragment directly, with no conversion in the loop.
//
// Same GEMMs and outputs as conv.cu's conv2d_fwd_* / conv2d_bwd_data_* at bf16 / fp16: outputs NCHW f32, written
// by the shared epilogues (conv_tc.cuh) with the activation (or its folded backward) or the batch-norm statistics
// parts; split-K (forward) and stride phases (backward data) as there. The sums are the same products in another
// k order (tap-major instead of channel-major), so they equal conv.cu's within f32 rounding, not bit for bit.
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

// This thread's copies of a slice. Thread t moves 16-byte chunk (t & 3) of the slice's 64 bytes for rows
// (t >> 2) + (THREADS / 4) i of A and columns (t >> 2) + (THREADS / 4) j of B: four threads read one row's or
// column's 64 contiguous bytes, and a warp writes 8 rows x 4 chunks of shared memory. A loader fills in each
// row's and column's element offset at the first slice (and the columns' tap masks), then issues every slice with
// the offset by which it moved.
template <int BM>
struct Copies {
    typedef Tile<BM> T;
    static constexpr int STEP = T::THREADS / 4;  // rows (columns) between a thread's copies
    static constexpr int NA = BM / STEP;         // A copies per thread and slice: 2
    static constexpr int NB = BN / STEP;         // B copies per thread and slice: 4 (BM = 64) or 2
    int a_off[NA];
    bool a_ok[NA];
    int b_off[NB];
    unsigned b_mask[NB];
    smem_addr a_dst, b_dst;

    __device__ Copies() : a_dst(((threadIdx.x >> 2) * LDH + chunk()) * 2), b_dst(T::A_BYTES + a_dst) {}
    // This thread's row of A (i < NA) or column of B (i < NB) within the tile, and its chunk's first element.
    __device__ static int line(int i) { return (threadIdx.x >> 2) + STEP * i; }
    __device__ static int chunk() { return CHUNK * (threadIdx.x & 3); }
    // One slice: A row i from a + a_off[i] + a_at, B column j from b + b_off[j] + b_at where the slice's tap bit
    // is in the column's mask (else zeros).
    __device__ void issue(smem_addr stage, const unsigned short* a, int a_at, const unsigned short* b, int b_at,
                          unsigned bit) const {
#pragma unroll
        for (int i = 0; i < NA; ++i) cp_async_16(stage + a_dst + i * (STEP * LDH * 2), a + (a_off[i] + a_at), a_ok[i]);
#pragma unroll
        for (int j = 0; j < NB; ++j)
            cp_async_16(stage + b_dst + j * (STEP * LDH * 2), b + (b_off[j] + b_at), (b_mask[j] & bit) != 0);
    }
};

// Forward:
//   A[o, k]   = wh[o][k]                         (k = tap * C + c: wh's rows are K long and contiguous)
//   B[k, col] = xh[n][ih][iw][c], (ih, iw) = (oh*SH - PH + a, ow*SW - PW + b) for tap = a*KW + b
template <int BM>
struct Loader {
    const unsigned short* w;
    const unsigned short* x;
    int W;
    Copies<BM> cp;
    SliceWalk walk;

    __device__ Loader(const unsigned short* x_, const unsigned short* w_, int C, int H, int W_, int O, int KH, int KW,
                      int Ho, int Wo, int SH, int SW, int PH, int PW, int ncols, int m0, int col0, int k_begin)
        : w(w_), x(x_), W(W_), walk(k_begin, C, KW) {
        const int K = KH * KW * C;
#pragma unroll
        for (int i = 0; i < Copies<BM>::NA; ++i) {
            const int o = m0 + cp.line(i);
            cp.a_ok[i] = o < O;
            cp.a_off[i] = o * K + cp.chunk();
        }
#pragma unroll
        for (int j = 0; j < Copies<BM>::NB; ++j) {
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
template <int BM>
struct BwdDataLoader {
    const unsigned short* w;
    const unsigned short* dy;
    int a_dt, a_du, b_dt, b_du;  // offset steps of A and B per tap row t and tap column u
    Copies<BM> cp;
    SliceWalk walk;  // (a, b) = (t, u)

    __device__ BwdDataLoader(const unsigned short* dy_, const unsigned short* w_, int C, int O, int KH, int KW,
                             int Ho, int Wo, int SH, int SW, const tc::Phase& ph, int ncols, int m0, int col0)
        : w(w_), dy(dy_), a_dt(SH * KW * O), a_du(SW * O), b_dt(-Wo * O), b_du(-O), walk(O, ph.St) {
#pragma unroll
        for (int i = 0; i < Copies<BM>::NA; ++i) {
            const int c = m0 + cp.line(i);
            cp.a_ok[i] = c < C;
            cp.a_off[i] = ((c * KH + ph.rh) * KW + ph.rw) * O + cp.chunk();
        }
        const int HqWq = ph.Hq * ph.Wq;
#pragma unroll
        for (int j = 0; j < Copies<BM>::NB; ++j) {
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

// grid = (ceil(N * ceil(H/SH) * ceil(W/SW) / 128), ceil(C / BM), SH*SW phases); writes every element of dx. O
// must be a multiple of BK.
template <int BM, Half F>
__device__ __forceinline__ void bwd_data_body(const unsigned int* __restrict__ dyh, const unsigned int* __restrict__ wh,
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
    BwdDataLoader<BM> ld(reinterpret_cast<const unsigned short*>(dyh), reinterpret_cast<const unsigned short*>(wh),
                         C, O, KH, KW, Ho, Wo, SH, SW, ph, ph.cols(N), m0, col0);
    mainloop<BM, F>(ld, ph.Rt * ph.St * O / BK, smem, acc);
    tc::bwd_data_epilogue<BM, Tile<BM>::SMEM_BYTES>(acc, dx, stats, N, C, H, W, ph, m0, col0, act_y, act, slope,
                                                    static_cast<float*>(smem));
}

// y[n][p][c] = x[n][c][p] rounded to F (to nearest even), for x [N, C, HW] f32 and y [N, HW, C] 16-bit; C even.
// Block `b` of the conversion's N * ceil(HW / 32) * ceil(C / 64) transposes a 64-channel x 32-pixel tile through
// shared memory: reads run along pixels, writes along channels, two per 32-bit store. block = (32, 8).
template <Half F>
__device__ __forceinline__ void to_nhwc_block(int b, const float* __restrict__ x, unsigned int* __restrict__ y, int N,
                                              int C, int HW) {
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
        if (p < HW && ch < C)
            y[(((size_t)n * HW + p) * C + ch) / 2] = pack_half2<F>(tile[2 * tx][j], tile[2 * tx + 1][j]);
    }
}

// Blocks of one conversion of to_nhwc_block.
__device__ __forceinline__ int to_nhwc_blocks(int N, int C, int HW) { return N * ((HW + 31) / 32) * ((C + 63) / 64); }

// Two conversions in one grid: the first to_nhwc_blocks(N1, C1, HW1) blocks convert x1, the rest x2.
template <Half F>
__device__ __forceinline__ void to_nhwc_pair(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
                                             const float* x2, unsigned int* y2, int N2, int C2, int HW2) {
    const int b = blockIdx.x, first = to_nhwc_blocks(N1, C1, HW1);
    if (b < first)
        to_nhwc_block<F>(b, x1, y1, N1, C1, HW1);
    else
        to_nhwc_block<F>(b - first, x2, y2, N2, C2, HW2);
}
}  // namespace nhwc
}  // namespace conv

// ---- entry points ------------------------------------------------------------------------------------------
// conv2d_fwd_nhwc[_m128]_{bf16,fp16}: the arguments of conv.cu's conv2d_fwd_* (stats, act and slope as there), with
// x and w in the channels-last 16-bit form of to_nhwc_pair_*. blockDim = Tile<BM>::THREADS, dynamic shared memory
// Tile<BM>::SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_fwd_nhwc_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, Half::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_fwd_nhwc_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C, int H,
        int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<64, Half::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_fwd_nhwc_m128_bf16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, Half::Bf16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
        slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_fwd_nhwc_m128_fp16(const unsigned int* x, const unsigned int* w, float* y, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, int k_chunk, int act,
        float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::fwd_body<128, Half::Fp16>(x, w, y, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, k_chunk, act,
        slope, nhwc_smem);
}

// conv2d_bwd_data_nhwc[_m128]_{bf16,fp16}: the arguments of conv.cu's conv2d_bwd_data_* (stats, act_y, act and
// slope as there), with dy as [N, Ho, Wo, O] and w as [C, kh, kw, O], both 16-bit (to_nhwc_pair_*). blockDim and
// dynamic shared memory as the forward's.
extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_bwd_data_nhwc_bf16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, Half::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y,
        act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<64>::THREADS)
    conv2d_bwd_data_nhwc_fp16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N, int C,
        int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW, const float* act_y,
        int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<64, Half::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y,
        act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_bwd_data_nhwc_m128_bf16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
        const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, Half::Bf16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y,
        act, slope, nhwc_smem);
}

extern "C" __global__ void __launch_bounds__(conv::nhwc::Tile<128>::THREADS)
    conv2d_bwd_data_nhwc_m128_fp16(const unsigned int* dy, const unsigned int* w, float* dx, float* stats, int N,
        int C, int H, int W, int O, int KH, int KW, int Ho, int Wo, int SH, int SW, int PH, int PW,
        const float* act_y, int act, float slope) {
    extern __shared__ __align__(16) unsigned char nhwc_smem[];
    conv::nhwc::bwd_data_body<128, Half::Fp16>(dy, w, dx, stats, N, C, H, W, O, KH, KW, Ho, Wo, SH, SW, PH, PW, act_y,
        act, slope, nhwc_smem);
}

// to_nhwc_pair_{bf16,fp16}: two conversions in one launch (a convolution's two operands): x1 [N1, C1, HW1] -> y1
// [N1, HW1, C1] and x2 -> y2 likewise. grid = (to_nhwc_blocks of the first + of the second), block = (32, 8).
extern "C" __global__ void to_nhwc_pair_bf16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
                                             const float* x2, unsigned int* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<Half::Bf16>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}

extern "C" __global__ void to_nhwc_pair_fp16(const float* x1, unsigned int* y1, int N1, int C1, int HW1,
                                             const float* x2, unsigned int* y2, int N2, int C2, int HW2) {
    conv::nhwc::to_nhwc_pair<Half::Fp16>(x1, y1, N1, C1, HW1, x2, y2, N2, C2, HW2);
}
