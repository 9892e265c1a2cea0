// random.cu — normal and uniform fills from Philox4x32-10, the same stream as the CPU backend (src/cpu/random.rs):
//
//   element i uses counter (offset + i / 4) split into words [lo32, hi32, 0, 0], key [seed lo32, seed hi32], and
//   output lane i % 4. Uniform: ((x >> 8) + 0.5) * 2^-24 in (0, 1] (f32 rounding makes the top bucket 1). Normal: Box–Muller on the lane pairs
//   (u0, u1) and (u2, u3): r = sqrt(-2 ln u_even), θ = 2π u_odd; the even lane gets r cos θ, the odd lane r sin θ.
//
// The final scale-and-shift uses __fmul_rn / __fadd_rn so no fma contraction makes it differ from the CPU: uniform
// draws are bit-identical to the CPU backend. One thread per counter block (four outputs). Precise logf / sincospif (not the fast intrinsics) so the values
// match the CPU to a few ulps. No inline PTX.
#include "common.cuh"

__device__ __forceinline__ Philox4 philox_block(unsigned long long seed, unsigned long long ctr) {
    return philox4x32_10((unsigned int)ctr, (unsigned int)(ctr >> 32), 0u, 0u, (unsigned int)seed,
                         (unsigned int)(seed >> 32));
}

extern "C" __global__ void philox_normal_f32(float* __restrict__ y, int n, float mean, float std,
                                             unsigned long long seed, unsigned long long offset) {
    const long long blocks = ((long long)n + 3) / 4;
    for (long long j = global_thread_id(); j < blocks; j += grid_stride()) {
        const Philox4 r = philox_block(seed, offset + (unsigned long long)j);
        float z[4];
#pragma unroll
        for (int pair = 0; pair < 2; ++pair) {
            const float u_even = philox_uniform(r.v[2 * pair]);
            const float u_odd = philox_uniform(r.v[2 * pair + 1]);
            const float radius = sqrtf(-2.0f * logf(u_even));
            // sincospif(2u) = (sin 2πu, cos 2πu) without the large-argument reduction path of sincosf (which
            // would put a local array on the stack).
            float s, c;
            sincospif(2.0f * u_odd, &s, &c);
            z[2 * pair] = radius * c;
            z[2 * pair + 1] = radius * s;
        }
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) {
            const long long i = 4 * j + lane;
            if (i < n) y[i] = __fadd_rn(mean, __fmul_rn(std, z[lane]));
        }
    }
}

extern "C" __global__ void philox_uniform_f32(float* __restrict__ y, int n, float lo, float hi,
                                              unsigned long long seed, unsigned long long offset) {
    const long long blocks = ((long long)n + 3) / 4;
    for (long long j = global_thread_id(); j < blocks; j += grid_stride()) {
        const Philox4 r = philox_block(seed, offset + (unsigned long long)j);
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) {
            const long long i = 4 * j + lane;
            if (i < n) y[i] = __fadd_rn(lo, __fmul_rn(hi - lo, philox_uniform(r.v[lane])));
        }
    }
}
