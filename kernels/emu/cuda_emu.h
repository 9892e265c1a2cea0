// cuda_emu.h — a CPU emulation of the CUDA execution model, enough to run kernels/*.cu as plain C++.
//
// build.rs compiles every kernel file with `g++ -O2 -include cuda_emu.h`, so the kernel sources are the exact
// text NVRTC compiles for the GPU. The runtime (cuda_emu.cpp) runs a launch block by block; within a block every
// CUDA thread is a fiber (its own stack, cooperative switching) so that __syncthreads() and warp shuffles can
// suspend a thread until its peers arrive — the real semantics, not a serialisation that only works for
// barrier-free kernels. Blocks of one grid run in parallel on a few OS threads (each OS thread runs one block
// at a time), so atomics are real atomics and a kernel that relies on inter-block ordering is caught out the
// same way it would be on a GPU.
//
// EMULATED
//   threadIdx / blockIdx / blockDim / gridDim (per-fiber thread-locals), warpSize
//   __global__ __device__ __host__ __forceinline__ __noinline__ __launch_bounds__ __align__ __restrict__
//   __shared__ (static: one instance per OS thread = per running block; build.rs rewrites each declaration so
//     that the runtime registers it), extern __shared__ (dynamic: build.rs rewrites the declaration into a pointer
//     to the block's buffer); both are filled with 0xff bytes (NaN as floats) at every block start
//   __syncthreads()            block barrier; a barrier some threads never reach (they exited, or wait elsewhere)
//                              is reported as a launch error instead of hanging
//   __syncwarp, __shfl_sync, __shfl_xor_sync, __shfl_down_sync, __shfl_up_sync (with width), __ballot_sync,
//   __any_sync, __all_sync     every live lane of the warp must arrive, then values are exchanged; lanes that
//                              exited are fine unless the mask names them. __activemask() = the live lanes
//
// Every kernel memory access is checked by the runtime's sanitizer (cuda_emu.cpp: memcheck, initcheck, racecheck,
// synccheck), which also enforces the member masks of the warp collectives.
//   atomicAdd (float, int, unsigned, unsigned long long), atomicSub, atomicMax/Min (int, unsigned), atomicExch,
//   atomicCAS; __threadfence(), __threadfence_block()
//   math: the float C library (expf, logf, sqrtf, ...), rsqrtf, __expf, __logf, __sinf, __cosf, __powf,
//     __fdividef, __frcp_rn, __fsqrt_rn, __fadd_rn, __fsub_rn, __fmul_rn, __saturatef, sincosf, __sincosf,
//     fmaf, __fmaf_rn;
//     intrinsics __float_as_int / __int_as_float / __float_as_uint / __uint_as_float, __umulhi, __mulhi,
//     __popc, __clz, __ffs, __brev; min / max overloads; __ldg, __ldcg, __ldcs, __stcg, __stcs
//   float2 / float4 / int2 / int4 / uint2 / uint4 / dim3 / uint3 and their make_* functions
//
// NOT EMULATED (compile errors or wrong results if used — kernels must not rely on them in the portable path)
//   inline PTX (asm volatile ...: mma.sync, cp.async, ldmatrix, ...): guard with `#ifdef __CUDA_ARCH__` and keep a
//     portable fallback; the emulation never defines __CUDA_ARCH__ (it defines __CUDA_EMU__ instead)
//   __syncthreads_count/_and/_or, cooperative groups, grid sync, dynamic parallelism, textures/surfaces,
//   __constant__ memory written from the host, __half / __nv_bfloat16 arithmetic, clock(), warp-synchronous
//   code WITHOUT *_sync intrinsics (lanes are not in lock-step here), a collective that only part of the live
//   lanes of a warp call (every live lane must take part), memory-model subtleties beyond "blocks run
//   concurrently" and barriers.
//   Fast-math intrinsics are computed at full precision, so results can differ from a GPU in the last bits.
#pragma once

#define __CUDA_EMU__ 1

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>

// ---- qualifiers ---------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One OS thread runs one block at a time, so a per-OS-thread static is exactly a per-block shared variable.
#define __shared__ static thread_local
#define __constant__ static const
// __restrict__ is a GCC keyword already.

// ---- vector types ---------------------------------------------------------------------------------------------
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned int x, y; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- thread coordinates (set by the runtime before it resumes each fiber) -------------------------------------
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
static const int warpSize = 32;

// ---- runtime entry points (cuda_emu.cpp) ----------------------------------------------------------------------
// `file` and `line` name the __syncthreads() call: synccheck requires all threads to wait at the same one.
extern "C" void emu_syncthreads(const char* file, int line);
// Warp exchange: every live lane of the calling warp deposits `value`; once all have, lane L receives the value
// deposited by lane src[L] (its own value if src[L] is not a live lane). op 1 = ballot: every lane receives the
// bitmask of lanes whose value was non-zero. `mask` is the intrinsic's member mask (checked by synccheck).
extern "C" unsigned long long emu_warp_exchange(unsigned long long value, int src_lane, int op, unsigned mask);
extern "C" void* emu_dynamic_smem(const char* name);
// Registers a static __shared__ variable of the running block (build.rs rewrites each declaration to call it):
// the first call per block poisons it, and the checks learn its extent and name. Returns `p`; being opaque to the
// compiler, it also makes every access go through the instrumented path.
extern "C" void* emu_register_shared(void* p, unsigned long long bytes, const char* name);
template <typename T>
inline T* emu_shared_static(T* p, const char* name) {
    return static_cast<T*>(emu_register_shared(p, sizeof(T), name));
}
// Member mask of the calling lane's warp: its live lanes.
extern "C" unsigned emu_active_mask(void);
// cp.async (kernels/async_copy.cuh): each thread's copies issued and not yet complete, in committed groups. The
// kernel reads the source at issue and writes the destination when a wait completes the copy, both in kernel code
// (so the sanitizer sees them as that thread's accesses); in between the destination keeps what it held (shared
// memory is poisoned at block start), so a read before the wait is caught.
struct EmuCopy {
    unsigned long long dst;
    unsigned int data[4];
    int words;
};
extern "C" void emu_cp_async_issue(const EmuCopy* c);
extern "C" void emu_cp_async_commit(void);
// Moves into out (at most cap) the oldest pending copies of the calling thread's committed groups, leaving the newest
// `keep` committed groups (and the uncommitted copies) pending; returns how many it moved (0: nothing to complete).
extern "C" int emu_cp_async_complete(int keep, EmuCopy* out, int cap);

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    emu_syncthreads(file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)emu_warp_exchange(0, 0, 2, mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- warp shuffles ---------------------------------------------------------------------------------------------
inline unsigned int emu_lane_id() {
    unsigned int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return t & 31u;
}

template <typename T>
inline T emu_shfl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = emu_warp_exchange(bits, src, 0, mask);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

// Source lanes follow the CUDA programming guide: `width` splits the warp into segments; a source outside the
// caller's segment yields the caller's own value.
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    int lane = (int)emu_lane_id();
    int base = lane & ~(width - 1);
    return emu_shfl(mask, v, base + (src_lane & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = (int)emu_lane_id();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return emu_shfl(mask, v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = (int)emu_lane_id();
    int src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return emu_shfl(mask, v, src);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = (int)emu_lane_id();
    int src = lane - (int)delta;
    if (src < (lane & ~(width - 1))) src = lane;
    return emu_shfl(mask, v, src);
}
inline unsigned int __ballot_sync(unsigned mask, int pred) {
    return (unsigned int)emu_warp_exchange(pred ? 1 : 0, 0, 1, mask);
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) {
    // Every live lane votes; "all" means no live lane voted false.
    return __ballot_sync(m, !pred) == 0;
}
inline unsigned int __activemask() { return emu_active_mask(); }

// ---- atomics (blocks run on several OS threads: these must be real atomics) -------------------------------------
inline float atomicAdd(float* p, float v) {
    unsigned int* u = reinterpret_cast<unsigned int*>(p);
    unsigned int old = __atomic_load_n(u, __ATOMIC_RELAXED);
    for (;;) {
        float f;
        memcpy(&f, &old, 4);
        f += v;
        unsigned int nw;
        memcpy(&nw, &f, 4);
        if (__atomic_compare_exchange_n(u, &old, nw, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            memcpy(&f, &old, 4);
            return f;
        }
    }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL); }
inline unsigned int atomicSub(unsigned int* p, unsigned int v) { return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
inline unsigned int atomicExch(unsigned int* p, unsigned int v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
inline float atomicExch(float* p, float v) {
    unsigned int nw, old;
    memcpy(&nw, &v, 4);
    old = __atomic_exchange_n(reinterpret_cast<unsigned int*>(p), nw, __ATOMIC_ACQ_REL);
    float f;
    memcpy(&f, &old, 4);
    return f;
}
template <typename T>
inline T atomicCAS(T* p, T compare, T val) {
    __atomic_compare_exchange_n(p, &compare, val, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return compare;  // on failure updated to the current value; on success it already equals the old value
}
template <typename T>
inline T emu_atomic_minmax(T* p, T v, bool want_max) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while ((want_max ? v > old : v < old) &&
           !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicMax(int* p, int v) { return emu_atomic_minmax(p, v, true); }
inline unsigned int atomicMax(unsigned int* p, unsigned int v) { return emu_atomic_minmax(p, v, true); }
inline int atomicMin(int* p, int v) { return emu_atomic_minmax(p, v, false); }
inline unsigned int atomicMin(unsigned int* p, unsigned int v) { return emu_atomic_minmax(p, v, false); }

// ---- math -----------------------------------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : (x == x ? x : 0.f)); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline void sincospif(float x, float* s, float* c) { sincosf((float)M_PI * x, s, c); }

inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
inline unsigned int __float_as_uint(float f) { unsigned int i; memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned int i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}

// CUDA's min / max overloads (device code calls them unqualified).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---- cache-hinted loads / stores: plain memory accesses on the host ------------------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

// ---- the generated launch registry (build.rs) -------------------------------------------------------------------
typedef void (*EmuWrapper)(void**);
struct EmuKernelEntry {
    const char* name;
    EmuWrapper fn;
};
