// mma.cuh — one warp-level tensor-core product, D = A * B + C with A 16x8, B 8x8, C/D 16x8, operands in TF32
// (the 19-bit format tensor cores read: f32's sign and 8-bit exponent, 10 mantissa bits) and f32 accumulation.
//
// On a GPU of compute capability 8.0 or newer this is PTX `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32`
// and operands are rounded with `cvt.rna.tf32.f32`. Everywhere else — the CPU emulation (cuda_emu.h never
// defines __CUDA_ARCH__) or an older GPU — the same result is computed in portable CUDA C++: each lane gathers
// the A rows and B columns it needs from the lanes that own them with __shfl_sync, following the PTX ISA fragment
// layout, so the emulation checks the layout the kernels assume, not just the arithmetic.
//
// Fragment layout of m16n8k8 with .tf32 operands (PTX ISA, "Matrix Fragments for mma.m16n8k8"), with
// g = lane >> 2 (the "group") and t = lane & 3 (the thread in the group):
//   A (16 x 8, row-major)  a[0] = A[g][t]      a[1] = A[g+8][t]      a[2] = A[g][t+4]   a[3] = A[g+8][t+4]
//   B ( 8 x 8, col-major)  b[0] = B[t][g]      b[1] = B[t+4][g]
//   C, D (16 x 8, f32)     c[0] = C[g][2t]     c[1] = C[g][2t+1]     c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// Every lane of the warp must call it (it is a warp-collective operation in both forms).
#pragma once

// f32 -> TF32 bit pattern, rounding to nearest with ties away from zero on the 13 dropped mantissa bits (what
// cvt.rna does). The result is still a valid f32 whose low 13 bits are zero, so it can also be used as a float.
__device__ __forceinline__ unsigned int to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    unsigned int u = __float_as_uint(x);
    // Inf and NaN pass through (adding to a NaN's payload could turn it into Inf).
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    // Adding half a TF32 ulp to the magnitude bits and truncating rounds the magnitude half-up, i.e. ties away
    // from zero for either sign; a carry out of the mantissa correctly bumps the exponent (up to Inf).
    return (u + 0x1000u) & 0xffffe000u;
#endif
}

// The rounded value as a float (for reference computations and for staging pre-rounded operands).
__device__ __forceinline__ float round_tf32(float x) { return __uint_as_float(to_tf32(x)); }

// d = a * b + c for one m16n8k8 tile. a / b hold TF32 bit patterns (from to_tf32); like the hardware, the
// portable form ignores their low 13 bits. d may alias c.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned int a[4], const unsigned int b[2],
                                                 const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    const int lane = threadIdx.x & 31;  // kernels using this launch 1-D blocks
    const int g = lane >> 2, t = lane & 3;
    const unsigned int mask = 0xffffe000u;
    // This lane computes rows g and g+8, columns 2t and 2t+1. Row g's element k lives in lane 4g + (k & 3),
    // register a[0] (k < 4) or a[2] (k >= 4); row g+8 likewise in a[1] / a[3]. Column n's element k lives in
    // lane 4n + (k & 3), register b[0] (k < 4) or b[1] (k >= 4).
    // Registers travel in pairs (one 64-bit shuffle moves two): 16 shuffles per product instead of 32, which
    // halves the emulation's cost (every shuffle is a rendezvous of the warp's 32 fibers).
    const unsigned long long a01 = ((unsigned long long)(a[1] & mask) << 32) | (a[0] & mask);
    const unsigned long long a23 = ((unsigned long long)(a[3] & mask) << 32) | (a[2] & mask);
    const unsigned long long b01 = ((unsigned long long)(b[1] & mask) << 32) | (b[0] & mask);
    float arow[2][8], bcol[2][8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int src_a = 4 * g + k;
        const unsigned long long lo = __shfl_sync(0xffffffffu, a01, src_a);  // A[g][k], A[g+8][k]
        const unsigned long long hi = __shfl_sync(0xffffffffu, a23, src_a);  // A[g][k+4], A[g+8][k+4]
        arow[0][k] = __uint_as_float((unsigned int)lo);
        arow[1][k] = __uint_as_float((unsigned int)(lo >> 32));
        arow[0][k + 4] = __uint_as_float((unsigned int)hi);
        arow[1][k + 4] = __uint_as_float((unsigned int)(hi >> 32));
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const unsigned long long bb = __shfl_sync(0xffffffffu, b01, 4 * (2 * t + j) + k);  // B[k][n], B[k+4][n]
            bcol[j][k] = __uint_as_float((unsigned int)bb);
            bcol[j][k + 4] = __uint_as_float((unsigned int)(bb >> 32));
        }
    }
    // Products of two TF32 values are exact in f32 (11 x 11 significant bits), so fmaf and mul+add agree; the
    // hardware's internal summation order is unspecified, this one adds k = 0..7 in order.
    float out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float acc = c[i];
#pragma unroll
        for (int k = 0; k < 8; ++k) acc = fmaf(arow[i >> 1][k], bcol[i & 1][k], acc);
        out[i] = acc;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = out[i];
#endif
}
