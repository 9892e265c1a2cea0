// tests.cu — kernels that test the emulation itself (compiled only into the emulation build; see
// tests/emu_runtime.rs). They exercise what the real kernels rely on: static and dynamic shared memory,
// __syncthreads, warp shuffles and ballots, atomics across concurrently running blocks — and the error paths:
// a barrier some threads never reach must be reported, not hang.
#include "common.cuh"

// out[b] = sum of block b's slice of x, via block_sum (warp shuffles + shared memory + barriers).
extern "C" __global__ void emu_test_block_sum(float* out, const float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? x[i] : 0.0f;
    const float total = block_sum(v);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// Per lane: out[8 * t + k] for the k-th collective below.
extern "C" __global__ void emu_test_shuffles(int* out) {
    const int t = threadIdx.x, lane = t & 31;
    int* o = out + 8 * t;
    o[0] = __shfl_sync(0xffffffffu, t * 10, 3);                  // everyone reads lane 3 of its warp
    o[1] = __shfl_xor_sync(0xffffffffu, t, 5);                   // butterfly partner
    o[2] = __shfl_down_sync(0xffffffffu, t, 4);                  // lane + 4, own value past the end
    o[3] = __shfl_up_sync(0xffffffffu, t, 2);                    // lane - 2, own value before the start
    o[4] = __shfl_down_sync(0xffffffffu, t, 1, 8);               // within segments of 8
    o[5] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);       // bitmask of lanes divisible by 3
    o[6] = __all_sync(0xffffffffu, lane < 40);                   // true for every live lane
    o[7] = __any_sync(0xffffffffu, lane == 31);                  // false in a partial warp without lane 31
}

// Reverses each block's slice through dynamic shared memory (tests extern __shared__ and the barrier).
extern "C" __global__ void emu_test_dynamic_smem(float* out, const float* x, int n) {
    extern __shared__ float buf[];
    const int base = blockIdx.x * blockDim.x;
    const int i = base + threadIdx.x;
    buf[threadIdx.x] = i < n ? x[i] : -1.0f;
    __syncthreads();
    const int j = blockDim.x - 1 - threadIdx.x;
    if (i < n) out[i] = buf[j];
}

// Every thread of every block adds 1 (float) and 1 (int): the totals must be exact.
extern "C" __global__ void emu_test_atomics(float* fsum, int* isum) {
    atomicAdd(fsum, 1.0f);
    atomicAdd(isum, 1);
}

// Threads with threadIdx.x < 16 return before the barrier the others wait at: must be reported.
extern "C" __global__ void emu_test_divergent_barrier(float* out) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Lane 0 leaves while the rest of its warp shuffles: must be reported.
extern "C" __global__ void emu_test_divergent_shuffle(float* out) {
    if (threadIdx.x == 0) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
}

// Half a warp waits at __syncthreads, the other half at a shuffle that needs the first half: a deadlock.
extern "C" __global__ void emu_test_deadlock(float* out) {
    if ((threadIdx.x & 31) < 16) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    }
}

// Raw Philox4x32-10 output for counter (c0..c3) and key (k0, k1), for known-answer tests.
extern "C" __global__ void emu_test_philox(unsigned int* out, unsigned int c0, unsigned int c1, unsigned int c2,
                                           unsigned int c3, unsigned int k0, unsigned int k1) {
    const Philox4 r = philox4x32_10(c0, c1, c2, c3, k0, k1);
    for (int i = 0; i < 4; ++i) out[i] = r.v[i];
}
