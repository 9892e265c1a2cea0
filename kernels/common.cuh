// common.cuh — device helpers shared by every kernel file: thread indexing, warp / block / grid reductions,
// and the Philox4x32-10 counter-based generator.
//
// Included by NVRTC through include-name registration and by the emulation build through an include path, so
// it must stay free of other includes. Everything here is __forceinline__ (one copy per kernel file).
#pragma once

// ---- indexing -------------------------------------------------------------------------------------------------

// Global linear thread index of a 1-D launch and the stride of a grid-stride loop. 64-bit so that
// `i += stride` cannot overflow near 2^31 elements.
__device__ __forceinline__ long long global_thread_id() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }

// ---- reductions -------------------------------------------------------------------------------------------------

// Sum over the 32 lanes of a warp; every lane gets the total. The butterfly (xor) pattern adds the same pairs in
// the same order on every run, so the result is deterministic.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Sum over a 1-D block (blockDim.x a multiple of 32, at most 1024). Every thread must call it; thread 0 gets the
// total (other threads get partial values). Ends with a barrier so it can be called again right away.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float warp_totals[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) warp_totals[warp] = v;
    __syncthreads();
    const int nwarps = blockDim.x >> 5;
    if (warp == 0) {
        v = lane < nwarps ? warp_totals[lane] : 0.0f;
        v = warp_sum(v);
    }
    __syncthreads();
    return v;
}

// Sum of v over the block, returned to *every* thread (block_sum above only informs thread 0; a statistics pass
// needs its chunk mean in all threads). warp_sum's xor butterfly gives every lane the same bits, so every warp
// computes the identical total from the per-warp partials: deterministic and uniform. blockDim.x a multiple of
// 32; `scratch` is a __shared__ float[32] owned by the caller.
__device__ __forceinline__ float block_sum_all(float v, float* scratch) {
    v = warp_sum(v);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();  // a previous call may still be reading scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < (int)(blockDim.x / 32) ? scratch[lane] : 0.0f);
}

// Address of element j (0 <= j < N*HW) of channel c of an [N, C, HW] tensor: the order in which per-channel
// reductions walk a channel.
__device__ __forceinline__ size_t chan_index(int j, int c, int C, int HW) {
    const int n = j / HW;
    return ((size_t)n * C + c) * HW + (j - n * HW);
}

// "Last block done": each of `blocks` blocks that share `counter` calls this once, after writing its partial
// results, and it returns true (in every thread) in the one block that arrives last, which may then read every
// other block's partials through volatile loads. That block also sets the counter back to zero: a counter handed
// out zeroed stays zero between launches, so no launch needs a memset before it (CudaBackend::arrival_counters).
//
// Each thread's fence makes its partials visible to every other block before thread 0 counts the block in; the
// last block's fence orders its reads after everyone's arrival. Which block is last varies from run to run, but
// the partials it reads do not, so results that combine them in a fixed order are deterministic.
__device__ __forceinline__ bool last_block_to_arrive(unsigned int* counter, unsigned int blocks) {
    __shared__ bool is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        is_last = atomicAdd(counter, 1u) == blocks - 1;
        if (is_last) *counter = 0u;  // every block has arrived: nothing else touches it in this launch
    }
    __syncthreads();
    if (is_last) __threadfence();
    return is_last;
}

// Deterministic grid-wide sum in a single launch: each block stores its partial sum, and the block that finishes
// last adds the partials in block order and writes `scale * total` to `*out`. `counter` is zero on entry and on
// exit (last_block_to_arrive). `partials` has gridDim.x floats. The result only depends on the grid size.
__device__ __forceinline__ void grid_sum_finish(float block_total, float* partials, unsigned int* counter,
                                                float* out, float scale) {
    if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
    if (!last_block_to_arrive(counter, gridDim.x)) return;
    float v = 0.0f;
    // volatile: read what the other blocks wrote, not a stale cached line.
    const volatile float* p = partials;
    for (unsigned int i = threadIdx.x; i < gridDim.x; i += blockDim.x) v += p[i];
    v = block_sum(v);
    if (threadIdx.x == 0) *out = v * scale;
}

// ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) -------------------------
// Same constants and round structure as Random123 / curand. Must match src/cpu/random.rs bit for bit.

struct Philox4 {
    unsigned int v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned int c0, unsigned int c1, unsigned int c2,
                                                 unsigned int c3, unsigned int k0, unsigned int k1) {
    const unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const unsigned int W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += W0;
            k1 += W1;
        }
        const unsigned int hi0 = __umulhi(M0, c0), lo0 = M0 * c0;
        const unsigned int hi1 = __umulhi(M1, c2), lo1 = M1 * c2;
        const unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    Philox4 out;
    out.v[0] = c0;
    out.v[1] = c1;
    out.v[2] = c2;
    out.v[3] = c3;
    return out;
}

// Uniform in (0, 1]: the top 24 bits, centred in their interval, so 0 is never produced (Box–Muller takes the log
// of it). In f32 the + 0.5 rounds to even above 2^23, so the very top bucket gives exactly 1 (as on the CPU).
__device__ __forceinline__ float philox_uniform(unsigned int x) {
    return ((float)(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}
