// planted.cu — kernels with one deliberate bug each, and a correct twin of each, for the emulator's sanitizer
// (tests/emu_sanitizer.rs): every bug must be reported, every twin must run clean. Compiled only into the
// emulation build, never by NVRTC. Launch each with one block of 64 threads unless its comment says otherwise.

#include "async_copy.cuh"

// Each thread publishes x[t] in shared memory and reads the value of thread t - shift (0 past either end). BUG:
// no barrier between the write and the read. With shift = 1 the writer has the lower index, so running threads
// in index order hides the race.
extern "C" __global__ void planted_missing_barrier(float* out, const float* x, int shift) {
    __shared__ float s[64];
    const int t = threadIdx.x, j = t - shift;
    s[t] = x[t];
    out[t] = j >= 0 && j < 64 ? s[j] : 0.0f;
}

extern "C" __global__ void planted_missing_barrier_ok(float* out, const float* x, int shift) {
    __shared__ float s[64];
    const int t = threadIdx.x, j = t - shift;
    s[t] = x[t];
    __syncthreads();
    out[t] = j >= 0 && j < 64 ? s[j] : 0.0f;
}

// The same race through global memory, which racecheck does not track: only the schedules see it. `scratch`
// has 64 floats, zeroed by the caller.
extern "C" __global__ void planted_global_race(float* out, float* scratch) {
    const int t = threadIdx.x;
    scratch[t] = (float)(t + 1);
    out[t] = scratch[(t + 63) % 64];
}

extern "C" __global__ void planted_global_race_ok(float* out, float* scratch) {
    const int t = threadIdx.x;
    scratch[t] = (float)(t + 1);
    __syncthreads();
    out[t] = scratch[(t + 63) % 64];
}

// out has n floats. BUG: `<=` stores one element past the end.
extern "C" __global__ void planted_off_by_one(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;
}

extern "C" __global__ void planted_off_by_one_ok(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 1.0f;
}

// Thread t loads x[4 * t + offset .. + 4] as one float4: aligned only when offset is a multiple of 4. BUG when
// it is not (the correct twin is the same kernel with offset 0).
extern "C" __global__ void planted_vector_load(float* out, const float* x, int offset) {
    const int t = threadIdx.x;
    const float4 v = *reinterpret_cast<const float4*>(x + 4 * t + offset);
    out[t] = v.x + v.y + v.z + v.w;
}

// Reverses each 64-float slice of x through shared memory; the last block's slice has only n < 64 elements. BUG:
// only its first n threads store, yet all 64 read.
extern "C" __global__ void planted_uninit_shared(float* out, const float* x, int n) {
    __shared__ float s[64];
    const int t = threadIdx.x, base = 64 * blockIdx.x;
    const int valid = blockIdx.x + 1 < gridDim.x ? 64 : n;
    if (t < valid) s[t] = x[base + t];
    __syncthreads();
    out[base + t] = s[63 - t];
}

extern "C" __global__ void planted_uninit_shared_ok(float* out, const float* x, int n) {
    __shared__ float s[64];
    const int t = threadIdx.x, base = 64 * blockIdx.x;
    const int valid = blockIdx.x + 1 < gridDim.x ? 64 : n;
    s[t] = t < valid ? x[base + t] : 0.0f;
    __syncthreads();
    out[base + t] = s[63 - t];
}

// out = 2 * x: run on an `x` that was allocated but never written to plant the bug (uninitialised global read).
extern "C" __global__ void planted_double(float* out, const float* x) {
    const int t = threadIdx.x;
    out[t] = 2.0f * x[t];
}

// BUG: each half of the block takes its own branch and waits at its own barrier.
extern "C" __global__ void planted_divergent_barrier(float* out, const float* x) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    if (t < 32) {
        s[t] = x[t];
        __syncthreads();
        out[t] = s[63 - t];
    } else {
        s[t] = -x[t];
        __syncthreads();
        out[t] = 2.0f * s[63 - t];
    }
}

extern "C" __global__ void planted_divergent_barrier_ok(float* out, const float* x) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = t < 32 ? x[t] : -x[t];
    __syncthreads();
    out[t] = t < 32 ? s[63 - t] : 2.0f * s[63 - t];
}

// Warp sum of pairs 16 lanes apart. BUG: the mask names only lanes 0-15, but all 32 lanes take part.
extern "C" __global__ void planted_shuffle_mask(float* out, const float* x) {
    const int t = threadIdx.x;
    out[t] = x[t] + __shfl_xor_sync(0x0000ffffu, x[t], 16);
}

extern "C" __global__ void planted_shuffle_mask_ok(float* out, const float* x) {
    const int t = threadIdx.x;
    out[t] = x[t] + __shfl_xor_sync(0xffffffffu, x[t], 16);
}

// Lanes 16-31 of each warp leave; lanes 0-15 shuffle among themselves (mask 0x0000ffff) with partner lane ^ span.
// BUG with span = 16: the partner is outside the mask (the correct twin is the same kernel with span 8).
extern "C" __global__ void planted_shuffle_partner(float* out, const float* x, int span) {
    const int t = threadIdx.x;
    if ((t & 31) >= 16) return;
    out[t] = __shfl_xor_sync(0x0000ffffu, x[t], span);
}

// Each thread copies x[63 - t] into shared memory with cp.async, then every thread reads its neighbour's slot.
// BUG: no cp_async_wait before the barrier, so the copies need not have landed (the emulator completes them at
// the wait, the latest completion PTX allows).
extern "C" __global__ void planted_cp_async_no_wait(float* out, const float* x) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    cp_async_4(smem_address(&s[t]), x + 63 - t, true);
    cp_async_commit();
    __syncthreads();
    out[t] = s[(t + 1) % 64];
}

extern "C" __global__ void planted_cp_async_no_wait_ok(float* out, const float* x) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    cp_async_4(smem_address(&s[t]), x + 63 - t, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[t] = s[(t + 1) % 64];
}

// Threads t < 15 copy 16 bytes from x + 4t + shift into shared memory with cp.async.cg, then write them out.
// BUG with shift = 1: the source is 4-byte but not 16-byte aligned, which cp.async.cg does not allow (a GPU
// faults); shift = 0 is the correct twin. x has 64 floats.
extern "C" __global__ void planted_cp_async_misaligned(float* out, const float* x, int shift) {
    __shared__ __align__(16) float s[64];
    const int t = threadIdx.x;
    if (t < 15) cp_async_16(smem_address(&s[4 * t]), x + 4 * t + shift, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[t] = t < 60 ? s[t] : 0.0f;
}
