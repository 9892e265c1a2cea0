// linear.cu — fully connected layers: y = x wᵀ + b, with x [N, in], w [out, in], b [out].
//
// All three products are one tiled SGEMM, C[M, Ncol] = Σ_k A(m, k) B(k, col), whose operands are read in place
// with whichever orientation they have in memory (no transposed copies):
//   forward      y  = x · wᵀ   M = N,   Ncol = out, K = in     A = x  [M, K]       B = w  [Ncol, K]
//   bwd data     dx = dy · w   M = N,   Ncol = in,  K = out    A = dy [M, K]       B = w  [K, Ncol]
//   bwd weight   dw = dyᵀ · x  M = out, Ncol = in,  K = N      A = dy [K, M]       B = x  [K, Ncol]
//   bias grad    db = Σ_rows dy  (one thread per output feature, rows summed in order)
// An operand stored "k-contiguous" ([rows, K]) is fetched with consecutive threads on consecutive k; one stored
// "row-contiguous" ([K, rows]) with consecutive threads on consecutive rows — both coalesced.
//
// Shapes of the MLP GAN range from 64x100·100x256 to 64x1024·1024x12288 and 64x12288·12288x1024: with a batch
// of 64 the output often has only a few 64x64 tiles while K is long, so gridDim.z splits K (split z writes
// out + z*M*Ncol, linear_splitk_reduce_f32 adds the partials in order and the bias — deterministic, no atomics).
//
// Tiling (v1, portable f32 FMA), same scheme as conv.cu: 256 threads, 64x64 block tile, BK = 16 k-major shared
// tiles, 4x4 register micro-tile per thread, next tile prefetched into registers during the FMAs.
// No inline PTX: the same source runs on the GPU (NVRTC) and on the CPU emulation.

#include "common.cuh"

namespace lin {

constexpr int THREADS = 256;  // blockDim = (256, 1, 1)
constexpr int BM = 64, BN = 64, BK = 16;
constexpr int TN = 4, TX = BN / TN, TY = THREADS / TX, TM = BM / TY;  // 16 x 16 threads, 4x4 outputs each
constexpr int PAD = 4;  // 16-byte aligned rows; fewer bank conflicts for the transposing stores

// Operand with element (row, k) at p[row * K + k]: consecutive threads read consecutive k.
template <int ROWS>
struct KContig {
    static constexpr int PER = BK * ROWS / THREADS;
    static constexpr int RSTEP = THREADS / BK;
    const float* p;
    int rows, K, k_end;
    int kk, row0;
    float v[PER];

    __device__ KContig(const float* p_, int rows_, int K_, int k_end_, int r0)
        : p(p_), rows(rows_), K(K_), k_end(k_end_), kk(threadIdx.x % BK), row0(r0 + threadIdx.x / BK) {}

    __device__ void fetch(int k0) {
        const int k = k0 + kk;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int r = row0 + RSTEP * i;
            v[i] = (k < k_end && r < rows) ? __ldg(p + (size_t)r * K + k) : 0.0f;
        }
    }
    __device__ void stash(float (&s)[BK][ROWS + PAD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[kk][threadIdx.x / BK + RSTEP * i] = v[i];
    }
};

// Operand with element (row, k) at p[k * rows + row]: consecutive threads read consecutive rows.
template <int ROWS>
struct RowContig {
    static constexpr int PER = BK * ROWS / THREADS;
    static constexpr int KSTEP = THREADS / ROWS;
    const float* p;
    int rows, k_end;
    int r, krow;
    float v[PER];

    __device__ RowContig(const float* p_, int rows_, int k_end_, int r0)
        : p(p_), rows(rows_), k_end(k_end_), r(threadIdx.x % ROWS), krow(threadIdx.x / ROWS) {
        r += r0;
    }

    __device__ void fetch(int k0) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int k = k0 + krow + KSTEP * i;
            v[i] = (k < k_end && r < rows) ? __ldg(p + (size_t)k * rows + r) : 0.0f;
        }
    }
    __device__ void stash(float (&s)[BK][ROWS + PAD]) const {
#pragma unroll
        for (int i = 0; i < PER; ++i) s[krow + KSTEP * i][threadIdx.x % ROWS] = v[i];
    }
};

// acc += A[m0.., k_begin:k_end] · B[k_begin:k_end, n0..]; thread (tx, ty) owns rows ty*TM + i and
// columns tx + TX*j of the tile.
template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_mainloop(LoadA& a, LoadB& b, int k_begin, int k_end, float (&As)[BK][BM + PAD],
                                              float (&Bs)[BK][BN + PAD], float (&acc)[TM][TN]) {
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    if (k_begin < k_end) {
        a.fetch(k_begin);
        b.fetch(k_begin);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        a.stash(As);
        b.stash(Bs);
        __syncthreads();
        if (k0 + BK < k_end) {  // next slice in flight during this slice's FMAs
            a.fetch(k0 + BK);
            b.fetch(k0 + BK);
        }
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float af[TM], bf[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) af[i] = As[kk][ty * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) bf[j] = Bs[kk][tx + TX * j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(af[i], bf[j], acc[i][j]);
        }
        __syncthreads();
    }
}

// Writes the tile into out + z*M*Ncol (row-major, ld = Ncol), adding bias[col] when bias != nullptr.
__device__ __forceinline__ void store_tile(const float (&acc)[TM][TN], float* out, const float* bias, int M,
                                           int Ncol) {
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    out += (size_t)blockIdx.z * M * Ncol;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tx + TX * j;
            if (n < Ncol) out[(size_t)m * Ncol + n] = acc[i][j] + (bias ? __ldg(bias + n) : 0.0f);
        }
    }
}

}  // namespace lin

// All GEMM entries: blockDim = 256, grid = (ceil(Ncol / 64), ceil(M / 64), splits); split z reduces
// k in [z*k_chunk, min(K, (z+1)*k_chunk)) and writes out + z*M*Ncol. With splits > 1, pass a workspace of
// splits*M*Ncol floats and finish with linear_splitk_reduce_f32.

// y [N, out] = x [N, in] · w[out, in]ᵀ (+ b when has_bias and not split).
extern "C" __global__ void linear_fwd_f32(const float* x, const float* w, const float* b, float* y, int N, int OUT,
                                          int IN, int k_chunk, int has_bias) {
    __shared__ float As[lin::BK][lin::BM + lin::PAD];
    __shared__ float Bs[lin::BK][lin::BN + lin::PAD];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(IN, k_begin + k_chunk);
    lin::KContig<lin::BM> a(x, N, IN, k_end, blockIdx.y * lin::BM);
    lin::KContig<lin::BN> bb(w, OUT, IN, k_end, blockIdx.x * lin::BN);
    float acc[lin::TM][lin::TN] = {};
    lin::gemm_mainloop(a, bb, k_begin, k_end, As, Bs, acc);
    lin::store_tile(acc, y, (has_bias && gridDim.z == 1) ? b : nullptr, N, OUT);
}

// dx [N, in] = dy [N, out] · w [out, in].
extern "C" __global__ void linear_bwd_data_f32(const float* dy, const float* w, float* dx, int N, int OUT, int IN,
                                               int k_chunk) {
    __shared__ float As[lin::BK][lin::BM + lin::PAD];
    __shared__ float Bs[lin::BK][lin::BN + lin::PAD];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(OUT, k_begin + k_chunk);
    lin::KContig<lin::BM> a(dy, N, OUT, k_end, blockIdx.y * lin::BM);
    lin::RowContig<lin::BN> bb(w, IN, k_end, blockIdx.x * lin::BN);
    float acc[lin::TM][lin::TN] = {};
    lin::gemm_mainloop(a, bb, k_begin, k_end, As, Bs, acc);
    lin::store_tile(acc, dx, nullptr, N, IN);
}

// dw [out, in] = dy [N, out]ᵀ · x [N, in].
extern "C" __global__ void linear_bwd_weight_f32(const float* dy, const float* x, float* dw, int N, int OUT,
                                                 int IN, int k_chunk) {
    __shared__ float As[lin::BK][lin::BM + lin::PAD];
    __shared__ float Bs[lin::BK][lin::BN + lin::PAD];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(N, k_begin + k_chunk);
    lin::RowContig<lin::BM> a(dy, OUT, k_end, blockIdx.y * lin::BM);
    lin::RowContig<lin::BN> bb(x, IN, k_end, blockIdx.x * lin::BN);
    float acc[lin::TM][lin::TN] = {};
    lin::gemm_mainloop(a, bb, k_begin, k_end, As, Bs, acc);
    lin::store_tile(acc, dw, nullptr, OUT, IN);
}

// db[o] = Σ_n dy[n, o], rows in order; one thread per o (consecutive threads read consecutive o: coalesced).
extern "C" __global__ void linear_bias_grad_f32(const float* __restrict__ dy, float* __restrict__ db, int N,
                                                int OUT) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OUT) return;
    float s = 0.0f;
    for (int n = 0; n < N; ++n) s += __ldg(dy + (size_t)n * OUT + o);
    db[o] = s;
}

// out[m, n] = Σ_{z < splits} parts[z][m, n] (in order) + (has_bias ? bias[n] : 0); any 1-D grid.
extern "C" __global__ void linear_splitk_reduce_f32(const float* __restrict__ parts, const float* __restrict__ bias,
                                                    float* __restrict__ out, int M, int Ncol, int splits,
                                                    int has_bias) {
    const int numel = M * Ncol;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += parts[(size_t)z * numel + i];
        out[i] = has_bias ? s + __ldg(bias + i % Ncol) : s;
    }
}
