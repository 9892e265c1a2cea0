// conv_tc.cuh — what the tile convolution kernels (conv.cu's tensor-core NCHW path, conv_nhwc.cu's channels-last
// one, tensor-core and FP32) share: the output tile each warp computes, the epilogue that hands its accumulators
// out, the batch-norm statistics taken from them, and the per-column tap mask of the forward and backward-data
// gathers.
//
// The warp tile: 32 x 64 outputs per warp, 2 x 8 mma tiles of 16 x 8 with f32 accumulators in mma.cuh's C
// fragment layout (64 per thread); a block is BM / 32 warps down its rows times 2 across its 128 columns.
// Include after common.cuh, async_copy.cuh, tile_stats.cuh and act.cuh.
#pragma once

namespace conv {
namespace tc {
constexpr int BN = 128;           // block tile columns
constexpr int WM = 32;            // warp tile rows
constexpr int WN = 64;            // warp tile columns
constexpr int WARPS_N = BN / WN;  // 2 (x BM / WM along M)
constexpr int MI = WM / 16;       // mma tiles per warp along M
constexpr int NI = WN / 8;        // mma tiles per warp along N

// Threads of a block with a BM-row tile.
__host__ __device__ constexpr int tile_threads(int BM) { return (BM / WM) * WARPS_N * 32; }

typedef float Acc[MI][NI][4];

// Operand format of a tile kernel: TF32 on m16n8k8, or bf16 / fp16 on m16n8k16 (mma.cuh); or F32, plain f32
// products on the FMA units (conv_nhwc.cu's FP32 kernels), each lane computing the accumulators an mma would hand
// it, so that the epilogues below serve it unchanged.
enum class Op { Tf32, Bf16, Fp16, F32 };

// A coordinate no tap brings back in range: marks a column outside the GEMM (its elements become zeros).
constexpr int FAR = -(1 << 30);

// Taps a column's mask (tap_mask) can hold; conv.rs runs kernels with more taps on the f32 kernels.
constexpr int MAX_TAPS = 32;
static_assert(sizeof(unsigned) * 8 == MAX_TAPS, "one bit per tap");

// The taps t < R (t = a * R0 + b, reading (r + sgn a, s + sgn b)) that land inside [0, H) x [0, W) for a
// column at (r, s), as bits. Computed once per column, it turns the per-element bounds test of the gather (two
// adds, two compares) into one AND with the k value's tap bit. A column outside the GEMM (r = FAR) has none.
__device__ __forceinline__ unsigned tap_mask(int r, int s, int R, int R0, int sgn, int H, int W) {
    unsigned m = 0;
    for (int t = 0, a = 0, b = 0; t < R; ++t) {
        if ((unsigned)(r + sgn * a) < (unsigned)H && (unsigned)(s + sgn * b) < (unsigned)W) m |= 1u << t;
        if (++b == R0) {
            b = 0;
            ++a;
        }
    }
    return m;
}

// Digits of a reduction index k = (hi * R1 + mid) * R0 + lo, e.g. (c, r, s) of a weight tap with (R1, R0) =
// (KH, KW), or (n, oh, ow) of a pixel. add() steps by another digit set (one of the K slice, computed once),
// carrying at most once per digit.
struct Digits {
    int hi, mid, lo;
    __device__ void set(int k, int R1, int R0) {
        const int q = k / R0;
        lo = k - q * R0;
        hi = q / R1;
        mid = q - hi * R1;
    }
    __device__ void add(const Digits& d, int R1, int R0) {
        lo += d.lo;
        mid += d.mid;
        hi += d.hi;
        if (lo >= R0) {
            lo -= R0;
            ++mid;
        }
        if (mid >= R1) {
            mid -= R1;
            ++hi;
        }
    }
};

// The cp.async pipeline of the tensor-core main loops, STAGES deep: the copies of slice s + STAGES - 1 are issued
// while slice s is multiplied, with one barrier per slice; after it every thread has (a) waited for its own
// copies of the slice it is about to read and (b) finished reading the stage the next copies overwrite (read in
// the previous trip). `ld` loads slices one by one (load: issue the current slice's copies into a stage at the
// given shared address; advance: move to the next slice). landed(stage) runs after a thread's own copies of a
// stage have landed and before the barrier (e.g. to round them in place); multiply(stage) reads the stage.
template <int STAGES, int STAGE_BYTES, class Loader, class Landed, class Multiply>
__device__ __forceinline__ void pipeline(Loader& ld, int slices, smem_addr smem, Landed landed, Multiply multiply) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < slices) {
            ld.load(smem + s * STAGE_BYTES);
            ld.advance();
        }
        cp_async_commit();  // one group per slice, empty past the end, so the wait count below stays exact
    }
    int read = 0, write = STAGES - 1;
    for (int it = 0; it < slices; ++it) {
        cp_async_wait<STAGES - 2>();  // this thread's copies of slice `it` have landed
        landed(read);
        __syncthreads();  // everyone's have; everyone is done with slice it - 1's stage
        if (it + STAGES - 1 < slices) {
            ld.load(smem + write * STAGE_BYTES);
            ld.advance();
        }
        cp_async_commit();
        multiply(smem + read * STAGE_BYTES);
        read = read + 1 == STAGES ? 0 : read + 1;
        write = write + 1 == STAGES ? 0 : write + 1;
    }
    cp_async_wait<0>();  // nothing may be in flight when the block exits (the trailing groups are empty)
}

// A warp's B fragments of one k step: `row` is this lane's ldmatrix address for column tiles 0 and 1, and tile j
// starts 8 * j shared rows of `row_bytes` further. One ldmatrix.x4 covers two n8 tiles: its matrices are b[0],
// b[1] of tile j and b[0], b[1] of tile j + 1.
__device__ __forceinline__ void ldmatrix_b(unsigned int (&bf)[NI][2], smem_addr row, int row_bytes) {
#pragma unroll
    for (int j = 0; j < NI; j += 2) {
        unsigned int r[4];
        ldmatrix_x4(r, row + 8 * j * row_bytes);
        bf[j][0] = r[0];
        bf[j][1] = r[1];
        bf[j + 1][0] = r[2];
        bf[j + 1][1] = r[3];
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

// Part `tile` of `tiles` of every row of this block's BM x BN output tile (tile_stats.cuh). In the C fragment
// layout a row of a warp's tile lives in the 4 lanes of one quad (t = 0..3), which a two-step butterfly adds up
// (the same bits in all four), and spans WARPS_N warps: WARPS_N contributors per row. `smem`: the pipeline's
// stages, free after the main loop.
template <int BM, int SMEM_BYTES>
__device__ __forceinline__ void write_stats(const Acc& acc, float* smem, int ncols, int col0, int m0, int rows,
                                            int tile, int tiles, float* __restrict__ parts) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int wr = (warp / WARPS_N) * WM, slot = warp % WARPS_N, wc = col0 + slot * WN;
    static_assert(tile_threads(BM) >= BM && BM * (WARPS_N + 1) * 4 <= SMEM_BYTES, "statistics scratch");
    const auto row_sums = [&](const float* mean, float* out) {
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = wr + 16 * i + g + 8 * h;
                const float mu = mean != nullptr ? mean[r] : 0.0f;
                float s = 0.0f;
#pragma unroll
                for (int j = 0; j < NI; ++j)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (wc + 8 * j + 2 * t + e >= ncols) continue;
                        const float d = acc[i][j][2 * h + e] - mu;
                        s += mean != nullptr ? d * d : d;
                    }
                s += __shfl_xor_sync(0xffffffffu, s, 1);
                s += __shfl_xor_sync(0xffffffffu, s, 2);
                if (t == 0) out[r * WARPS_N + slot] = s;
            }
    };
    write_tile_stats<BM, WARPS_N>(smem, min(BN, ncols - col0), m0, rows, tile, tiles, parts, row_sums);
}

// The forward convolutions' epilogue: y [N, O, HoWo] (split z of a split reduction at y + z * numel(y)) gets
// act of each sum (act.cuh's epilogue_act), and with `stats` the batch-norm statistics parts of this block's tile.
// `smem`: the pipeline's stages, free after the main loop.
template <int BM, int SMEM_BYTES>
__device__ __forceinline__ void forward_epilogue(const Acc& acc, float* __restrict__ y, float* __restrict__ stats,
                                                 int N, int O, int HoWo, int m0, int col0, int act, float slope,
                                                 float* smem) {
    const int ncols = N * HoWo;
    float* out = y + (size_t)blockIdx.z * N * O * HoWo;
    epilogue(acc, m0, col0, [&](int o, int p, float v) {
        if (o < O && p < ncols) {
            const int n = p / HoWo;
            out[((size_t)n * O + o) * HoWo + (p - n * HoWo)] = epilogue_act(act, slope, v);
        }
    });
    if (stats != nullptr) write_stats<BM, SMEM_BYTES>(acc, smem, ncols, col0, m0, O, blockIdx.x, gridDim.x, stats);
}

// One stride phase of a backward-data GEMM, blockIdx.z = rh * SW + rw (conv.cu, "Stride-phase decomposition"):
// its input pixels (ih0 + SH q, iw0 + SW v) for q < Hq, v < Wq, and its taps r = rh + SH t, s = rw + SW u for
// t < Rt, u < St, which read dy at (ohb0 + q - t, owb0 + v - u).
struct Phase {
    int SH, SW, rh, rw, ih0, iw0, Hq, Wq, Rt, St, ohb0, owb0;
    __device__ Phase(int z, int H, int W, int KH, int KW, int SH_, int SW_, int PH, int PW) : SH(SH_), SW(SW_) {
        rh = z / SW;
        rw = z - rh * SW;
        ih0 = ((rh - PH) % SH + SH) % SH;
        iw0 = ((rw - PW) % SW + SW) % SW;
        Hq = ih0 < H ? (H - ih0 + SH - 1) / SH : 0;
        Wq = iw0 < W ? (W - iw0 + SW - 1) / SW : 0;
        Rt = rh < KH ? (KH - rh + SH - 1) / SH : 0;
        St = rw < KW ? (KW - rw + SW - 1) / SW : 0;
        ohb0 = (ih0 + PH - rh) / SH;
        owb0 = (iw0 + PW - rw) / SW;
    }
    // The GEMM's columns: the phase's input pixels of all N images.
    __device__ int cols(int N) const { return N * Hq * Wq; }
};

// The backward-data epilogue of phase `ph`: dx [N, C, H, W] gets each sum taken through the folded activation
// (act.cuh's epilogue_act_bwd, from act_y), and with `stats` the batch-norm statistics part of this block's tile
// (one part per column tile of each phase). `smem`: the pipeline's stages, free after the main loop.
template <int BM, int SMEM_BYTES>
__device__ __forceinline__ void bwd_data_epilogue(const Acc& acc, float* __restrict__ dx, float* __restrict__ stats,
                                                  int N, int C, int H, int W, const Phase& ph, int m0, int col0,
                                                  const float* __restrict__ act_y, int act, float slope,
                                                  float* smem) {
    const int HqWq = ph.Hq * ph.Wq, ncols = ph.cols(N);
    epilogue(acc, m0, col0, [&](int c, int p, float v) {
        if (c < C && p < ncols) {
            const int n = p / HqWq;
            const int qv = p - n * HqWq;
            const int q = qv / ph.Wq;
            const int ih = ph.ih0 + ph.SH * q;
            const int iw = ph.iw0 + ph.SW * (qv - q * ph.Wq);
            const size_t e = (((size_t)n * C + c) * H + ih) * W + iw;
            dx[e] = epilogue_act_bwd(act, slope, act_y, e, v);
        }
    });
    if (stats != nullptr)
        write_stats<BM, SMEM_BYTES>(acc, smem, ncols, col0, m0, C, blockIdx.z * gridDim.x + blockIdx.x,
                                    gridDim.z * gridDim.x, stats);
}

// Whether this block's columns lie past its phase's (the grid is sized for the largest phase): then it computes
// nothing and, with `stats`, writes an empty part. Uniform over the block, so it may return before any barrier.
template <int BM>
__device__ __forceinline__ bool past_phase(const Phase& ph, int N, int C, int m0, int col0, float* stats) {
    if (col0 < ph.cols(N)) return false;
    if (stats != nullptr)
        write_empty_tile_stats<BM>(m0, C, blockIdx.z * gridDim.x + blockIdx.x, gridDim.z * gridDim.x, stats);
    return true;
}
}  // namespace tc
}  // namespace conv
