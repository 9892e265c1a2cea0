// tile_stats.cuh — batch-norm statistics gathered in a GEMM's epilogue, while the output tile is still in
// registers, so that the batch norm after a convolution need not read the convolution's output to learn them.
//
// The hand-off format (batchnorm.cu's bn_train_fwd_f32 reads it): a channel's M values are cut into T disjoint
// parts, and part t is described by (count, mean, M2), M2 the sum of squared deviations from the part's own
// mean, at parts[(c*T + t)*3 + {0, 1, 2}]. Here a part is one output tile's share of a row (an output channel):
// its valid columns (pixels). Each part's M2 is taken about its own mean, in a second pass over the registers,
// so it does not suffer the cancellation of Σx² - (Σx)²/n.
//
// Within the tile a row's values are spread over several threads (NC "contributors" per row). Each contributor
// sums its own values of the row, and the row's NC sums are added in contributor order: no atomics, so the
// statistics are bitwise reproducible.
//
// A per-channel pass (grid = (C, S), one chunk of a channel per block) writes one part per chunk instead
// (write_chunk_part). Include after common.cuh.
#pragma once

// Stores part t of channel c's T parts.
__device__ __forceinline__ void store_part(float* __restrict__ parts, int c, int T, int t, float count, float mean,
                                           float m2) {
    float* p = parts + ((size_t)c * T + t) * 3;
    p[0] = count;
    p[1] = mean;
    p[2] = m2;
}

// Part blockIdx.y of channel blockIdx.x, for a grid of (C, S) blocks over an [N, C, HW] tensor whose chunk s is
// values s*chunk .. min(M, (s+1)*chunk) - 1 of the channel (M = N*HW, chan_index order). Two passes over the
// chunk: value(i, first) returns the value at address i, with first = true on the pass that sums (where a caller
// may also produce and store it) and false on the pass that sums squared deviations from the chunk's mean.
// Every thread must call it; blockDim.x a multiple of 32; `scratch` as for block_sum_all.
template <class Value>
__device__ __forceinline__ void write_chunk_part(float* __restrict__ parts, int N, int C, int HW, int chunk,
                                                 float* scratch, Value value) {
    const int c = blockIdx.x, s = blockIdx.y;
    const int begin = s * chunk;
    const int end = min(N * HW, begin + chunk);
    float sum = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) sum += value(chan_index(j, c, C, HW), true);
    const float mean = block_sum_all(sum, scratch) / (float)(end - begin);
    float sq = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const float d = value(chan_index(j, c, C, HW), false) - mean;
        sq = fmaf(d, d, sq);
    }
    const float m2 = block_sum_all(sq, scratch);
    if (threadIdx.x == 0) store_part(parts, c, gridDim.y, s, (float)(end - begin), mean, m2);
}

// Writes part `tile` of `tiles` for the rows row0 .. row0 + BM - 1 that are below `rows`, from an output tile
// with `count` valid columns. Every thread of the block must call it (it has barriers), with blockDim.x >= BM.
// `red`: BM * (NC + 1) floats of shared memory, which may alias the main loop's tiles (the first barrier
// separates their last reads from the first write here).
// row_sums(mean, red): the calling thread stores, for each (local row r, contributor k) it owns, and only those,
// red[r * NC + k] = the sum over its valid values v of row r of v (mean == nullptr) or of (v - mean[r])².
template <int BM, int NC, class RowSums>
__device__ __forceinline__ void write_tile_stats(float* red, int count, int row0, int rows, int tile, int tiles,
                                                 float* __restrict__ parts, RowSums row_sums) {
    float* mean = red + BM * NC;
    const int r = threadIdx.x;
    __syncthreads();
    row_sums(static_cast<const float*>(nullptr), red);
    __syncthreads();
    if (r < BM) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < NC; ++k) s += red[r * NC + k];
        mean[r] = count > 0 ? s / (float)count : 0.0f;
    }
    __syncthreads();
    row_sums(static_cast<const float*>(mean), red);
    __syncthreads();
    if (r < BM && row0 + r < rows) {
        float m2 = 0.0f;
#pragma unroll
        for (int k = 0; k < NC; ++k) m2 += red[r * NC + k];
        store_part(parts, row0 + r, tiles, tile, (float)count, mean[r], m2);
    }
}

// The part of a block that has no columns (a stride phase smaller than the grid): count 0, which the merge
// weighs by nothing. Needs no barrier, so it may run on the way out of an early return.
template <int BM>
__device__ __forceinline__ void write_empty_tile_stats(int row0, int rows, int tile, int tiles,
                                                       float* __restrict__ parts) {
    for (int r = threadIdx.x; r < BM; r += blockDim.x) {
        if (row0 + r >= rows) break;
        store_part(parts, row0 + r, tiles, tile, 0.0f, 0.0f, 0.0f);
    }
}
