// async_copy.cuh — asynchronous global -> shared copies (cp.async) and warp-wide shared-memory matrix loads
// (ldmatrix) and single shared words, for the pipelined tensor-core main loops.
//
// On a GPU of compute capability 8.0 or newer these are PTX instructions; everywhere else (the CPU emulation,
// which never defines __CUDA_ARCH__, or an older GPU) a portable form with the same per-lane results:
//   - cp.async in the CPU emulation (__CUDA_EMU__) keeps the PTX's group semantics: a copy reads its source when
//     issued, commit closes the thread's group, and cp_async_wait<N> writes the destinations of all but the
//     newest N committed groups (cuda_emu.h, emu_cp_async_*): the latest completion PTX allows, so a read of a
//     destination before its wait sees the old contents (initcheck reports poisoned shared memory) and the
//     sanitizer sees each copy as the issuing thread's shared write at its wait. On an older GPU the copy is
//     synchronous and commit / wait are no-ops (the earliest completion, also valid).
//   - ldmatrix gathers each lane's words from the lanes that hold the row addresses with __shfl_sync, following
//     the PTX ISA's fragment layout, so the emulation checks the layout the kernels assume.
//
// Shared-memory addresses are `smem_addr`: byte addresses that support `+ bytes`. On the GPU this is the 32-bit
// address in the .shared window (what the PTX instructions take, computed once per kernel); in the emulation
// the integer value of an ordinary pointer.
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define ASYNC_COPY_PTX 1
typedef unsigned int smem_addr;
#else
typedef unsigned long long smem_addr;
#endif

// The smem_addr of a pointer into __shared__ memory.
__device__ __forceinline__ smem_addr smem_address(const void* p) {
#ifdef ASYNC_COPY_PTX
    unsigned int a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
#else
    return (smem_addr)(unsigned long long)p;
#endif
}

// One 4-byte element: shared[dst] = ok ? *src : 0.0f (cp.async.ca: through L1, reused gathers hit it). When !ok
// the copy's source size is 0: nothing is read, so src may point anywhere (e.g. at a padding tap outside the
// tensor); selecting a safe address instead would cost instructions per element.
__device__ __forceinline__ void cp_async_4(smem_addr dst, const float* src, bool ok) {
#ifdef ASYNC_COPY_PTX
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 4 : 0));
#elif defined(__CUDA_EMU__)
    const EmuCopy c = {dst, {ok ? __float_as_uint(*src) : 0u, 0u, 0u, 0u}, 1};
    emu_cp_async_issue(&c);
#else
    *reinterpret_cast<float*>(dst) = ok ? *src : 0.0f;
#endif
}

// 16 contiguous bytes (four floats, or eight 16-bit values): shared[dst..dst+16) = ok ? src[0..16) : zeros
// (cp.async.cg: L2 only). dst and src must be 16-byte aligned (a GPU faults on a misaligned copy); the portable
// forms move the bytes as one uint4, so the emulator's memcheck reports a misaligned source or destination too.
// The bytes are moved as words, never as floats.
__device__ __forceinline__ void cp_async_16(smem_addr dst, const void* src, bool ok) {
#ifdef ASYNC_COPY_PTX
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
#else
    const uint4 v = ok ? *reinterpret_cast<const uint4*>(src) : make_uint4(0u, 0u, 0u, 0u);
#if defined(__CUDA_EMU__)
    const EmuCopy c = {dst, {v.x, v.y, v.z, v.w}, 4};
    emu_cp_async_issue(&c);
#else
    *reinterpret_cast<uint4*>(dst) = v;
#endif
#endif
}

// Closes the calling thread's group of cp.async issued since the previous commit (an empty group is fine).
__device__ __forceinline__ void cp_async_commit() {
#ifdef ASYNC_COPY_PTX
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif defined(__CUDA_EMU__)
    emu_cp_async_commit();
#endif
}

// Waits until at most N of the calling thread's committed groups are still in flight. Other threads' copies
// become visible only after a barrier that follows their own wait.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef ASYNC_COPY_PTX
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif defined(__CUDA_EMU__)
    EmuCopy c[16];
    for (int n; (n = emu_cp_async_complete(N, c, 16)) > 0;)
        for (int i = 0; i < n; ++i) {
            const unsigned int* w = c[i].data;
            if (c[i].words == 4)
                *reinterpret_cast<uint4*>(c[i].dst) = make_uint4(w[0], w[1], w[2], w[3]);
            else
                *reinterpret_cast<unsigned int*>(c[i].dst) = w[0];
        }
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16 read as four 8 x 4 matrices of 32-bit words: lane L supplies the
// address of row (L & 7) of matrix L >> 3 (16 contiguous bytes, 16-byte aligned), and receives in r[j] word
// (L & 3) of row (L >> 2) of matrix j. With rows along a TF32 operand's m (or n) and the 4 words along k, that
// is exactly the m16n8k8 fragment element [g][t] (g = L >> 2, t = L & 3; see mma.cuh). Warp-collective.
//
// TRANS (ldmatrix...x4.trans): the same four 8 x 8 matrices of 16-bit values and row addresses, each delivered
// transposed: lane L receives in r[j] elements (2 (L & 3), L >> 2) and (2 (L & 3) + 1, L >> 2) (row, column) of
// matrix j, low half first. For an operand stored k-major (rows along k, 8 consecutive m or n values per row) that
// is the m16n8k16 fragment element pair of mma.cuh: the transpose turns a [k][m] tile into the [m][k] layout the
// A fragment reads, and a [k][n] tile into B's.
template <bool TRANS = false>
__device__ __forceinline__ void ldmatrix_x4(unsigned int (&r)[4], smem_addr row) {
#ifdef ASYNC_COPY_PTX
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(row));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(row));
#else
    const int lane = threadIdx.x & 31;  // kernels using this launch 1-D blocks
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        if constexpr (TRANS) {
            const smem_addr lo = __shfl_sync(0xffffffffu, row, 8 * j + 2 * (lane & 3));
            const smem_addr hi = __shfl_sync(0xffffffffu, row, 8 * j + 2 * (lane & 3) + 1);
            const int col = 2 * (lane >> 2);  // byte offset of column L >> 2
            r[j] = (unsigned int)*reinterpret_cast<const unsigned short*>(lo + col) |
                   (unsigned int)*reinterpret_cast<const unsigned short*>(hi + col) << 16;
        } else {
            const smem_addr src = __shfl_sync(0xffffffffu, row, 8 * j + (lane >> 2));
            r[j] = *reinterpret_cast<const unsigned int*>(src + 4 * (lane & 3));
        }
    }
#endif
}

// One 32-bit word of shared memory (ld.shared.b32): fragment elements that no ldmatrix form delivers, such as
// TF32 operands stored k-major.
__device__ __forceinline__ unsigned int ld_shared_u32(smem_addr a) {
#ifdef ASYNC_COPY_PTX
    unsigned int v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(a));
    return v;
#else
    return *reinterpret_cast<const unsigned int*>(a);
#endif
}
