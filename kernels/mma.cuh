// mma.cuh — one warp-level tensor-core product with f32 accumulation: D = A * B + C with A 16x8, B 8x8, C/D
// 16x8, operands in TF32 (the 19-bit format tensor cores read: f32's sign and 8-bit exponent, 10 mantissa bits);
// or A 16x16, B 16x8 with 16-bit operands, bfloat16 or IEEE half (section "16-bit operands" below).
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

// The inline PTX of one mma.sync with f32 C / D, four A and two B registers: d, a, b, c in scope.
#define MMA_SYNC_F32(SHAPE_AND_TYPES)                                                                        \
    asm volatile("mma.sync.aligned." SHAPE_AND_TYPES                                                          \
                 " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"                    \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                             \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),    \
                   "f"(c[2]), "f"(c[3]))

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

// The portable products' sum: d[i] = c[i] + sum over k in order of arow[i / 2][k] * bcol[i % 2][k], for the
// lane's C elements i (rows g, g+8 x columns 2t, 2t+1), once the lane has gathered its rows and columns. d may
// alias c.
template <int K>
__device__ __forceinline__ void mma_portable_sum(float d[4], const float (&arow)[2][K], const float (&bcol)[2][K],
                                                 const float c[4]) {
    float out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float acc = c[i];
#pragma unroll
        for (int k = 0; k < K; ++k) acc = fmaf(arow[i >> 1][k], bcol[i & 1][k], acc);
        out[i] = acc;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// d = a * b + c for one m16n8k8 tile. a / b hold TF32 bit patterns (from to_tf32); like the hardware, the
// portable form ignores their low 13 bits. d may alias c.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned int a[4], const unsigned int b[2],
                                                 const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    MMA_SYNC_F32("m16n8k8.row.col.f32.tf32.tf32.f32");
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
    mma_portable_sum(d, arow, bcol, c);
#endif
}

// ---- 16-bit operands: mma.sync m16n8k16 with bf16 or f16 inputs, f32 accumulation ---------------------------
// On compute capability 8.0 or newer: PTX `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32`, with
// operands packed two per 32-bit register by `cvt.rn.{bf16x2,f16x2}.f32` (round to nearest even; f16 overflows to
// Inf, which is what fp16 loss scaling detects). Elsewhere the portable form below, bit-exact for the conversions
// and following the fragment layout with warp shuffles, as for TF32.
//
// Fragment layout of m16n8k16 with .bf16 / .f16 operands (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type"), g = lane >> 2, t = lane & 3; a register holds two elements, the lower k in its low half:
//   A (16 x 16, row-major)  a[0] = A[g][2t, 2t+1]    a[1] = A[g+8][2t, 2t+1]
//                           a[2] = A[g][2t+8, 2t+9]  a[3] = A[g+8][2t+8, 2t+9]
//   B (16 x 8, col-major)   b[0] = B[2t, 2t+1][g]    b[1] = B[2t+8, 2t+9][g]
//   C, D                    as m16n8k8 above.

// The two 16-bit operand formats; a template argument of the kernels that use them.
enum class Half { Bf16, Fp16 };

// f32 -> bfloat16 bits, round to nearest even (overflow gives Inf; NaN stays a quiet NaN).
__device__ __forceinline__ unsigned int f32_to_bf16_bits(float x) {
    const unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// f32 -> IEEE half bits, round to nearest even, subnormals included (magnitudes from 65520 up give Inf; NaN
// stays a quiet NaN).
__device__ __forceinline__ unsigned int f32_to_f16_bits(float x) {
    const unsigned int u = __float_as_uint(x);
    const unsigned int sign = (u >> 16) & 0x8000u;
    const unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // 65520 is the tie between 65504 and 2^16: even is 2^16, Inf
    if (a >= 0x38800000u) {                      // normal half: rebias the exponent (127 -> 15), round 13 bits
        const unsigned int v = a - 0x38000000u;
        return sign | ((v + 0x0fffu + ((v >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) return sign;  // at most 2^-25, half the smallest subnormal: the tie goes to even 0
    // Subnormal half m * 2^-24: the significand (implicit bit set) shifted right by 126 - exponent, rounded.
    const unsigned int mant = (a & 0x7fffffu) | 0x800000u;
    const unsigned int shift = 126u - (a >> 23);
    const unsigned int m = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    return sign | (m + (rest > half || (rest == half && (m & 1u))));
}

__device__ __forceinline__ float bf16_bits_to_f32(unsigned int h) { return __uint_as_float((h & 0xffffu) << 16); }

__device__ __forceinline__ float f16_bits_to_f32(unsigned int h) {
    const unsigned int sign = (h & 0x8000u) << 16;
    const unsigned int e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) return __uint_as_float(sign | __float_as_uint((float)m * 5.9604644775390625e-8f));  // m * 2^-24
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// Two f32 values rounded to format F and packed: lo in bits 0..15, hi in bits 16..31.
template <Half F>
__device__ __forceinline__ unsigned int pack_half2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned int r;
    if constexpr (F == Half::Bf16)
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    if constexpr (F == Half::Bf16)
        return f32_to_bf16_bits(lo) | (f32_to_bf16_bits(hi) << 16);
    else
        return f32_to_f16_bits(lo) | (f32_to_f16_bits(hi) << 16);
#endif
}

// The value of one 16-bit element of format F (the low 16 bits of h).
template <Half F>
__device__ __forceinline__ float half_bits_to_f32(unsigned int h) {
    if constexpr (F == Half::Bf16)
        return bf16_bits_to_f32(h);
    else
        return f16_bits_to_f32(h);
}

// x rounded to format F and back (the operand rounding, for reference computations).
template <Half F>
__device__ __forceinline__ float round_half(float x) {
    return half_bits_to_f32<F>(pack_half2<F>(x, 0.0f));
}

// d = a * b + c for one m16n8k16 tile; a / b hold packed operands of format F (pack_half2). d may alias c.
template <Half F>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const unsigned int a[4], const unsigned int b[2],
                                             const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (F == Half::Bf16)
        MMA_SYNC_F32("m16n8k16.row.col.f32.bf16.bf16.f32");
    else
        MMA_SYNC_F32("m16n8k16.row.col.f32.f16.f16.f32");
#else
    const int lane = threadIdx.x & 31;  // kernels using this launch 1-D blocks
    const int g = lane >> 2, t = lane & 3;
    // This lane computes rows g and g+8, columns 2t and 2t+1. Row g's elements k, k+1 (k even) live in lane
    // 4g + (k & 7) / 2, register a[0] (k < 8) or a[2] (k >= 8); row g+8's in a[1] / a[3]. Column n's elements
    // k, k+1 live in lane 4n + (k & 7) / 2, register b[0] (k < 8) or b[1]. One 64-bit shuffle moves two
    // registers: 16 shuffles per product.
    const unsigned long long a01 = ((unsigned long long)a[1] << 32) | a[0];
    const unsigned long long a23 = ((unsigned long long)a[3] << 32) | a[2];
    const unsigned long long b01 = ((unsigned long long)b[1] << 32) | b[0];
    float arow[2][16], bcol[2][16];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const unsigned long long lo = __shfl_sync(0xffffffffu, a01, 4 * g + q);  // k 2q, 2q+1 of rows g, g+8
        const unsigned long long hi = __shfl_sync(0xffffffffu, a23, 4 * g + q);  // k 2q+8, 2q+9
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const unsigned int l = (unsigned int)(lo >> (32 * r)), h = (unsigned int)(hi >> (32 * r));
            arow[r][2 * q] = half_bits_to_f32<F>(l);
            arow[r][2 * q + 1] = half_bits_to_f32<F>(l >> 16);
            arow[r][2 * q + 8] = half_bits_to_f32<F>(h);
            arow[r][2 * q + 9] = half_bits_to_f32<F>(h >> 16);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const unsigned long long bb = __shfl_sync(0xffffffffu, b01, 4 * (2 * t + j) + q);
            const unsigned int l = (unsigned int)bb, h = (unsigned int)(bb >> 32);
            bcol[j][2 * q] = half_bits_to_f32<F>(l);
            bcol[j][2 * q + 1] = half_bits_to_f32<F>(l >> 16);
            bcol[j][2 * q + 8] = half_bits_to_f32<F>(h);
            bcol[j][2 * q + 9] = half_bits_to_f32<F>(h >> 16);
        }
    }
    // Products of two 16-bit values are exact in f32 (at most 11 x 11 significant bits, and no product of
    // f16 subnormals underflows f32), so fmaf and mul+add agree; this form adds k = 0..15 in order.
    mma_portable_sum(d, arow, bcol, c);
#endif
}
