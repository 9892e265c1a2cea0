// shape.cu — channel concatenation and slicing of NCHW (or [N, F]) tensors, both as one strided block copy.
//
// A tensor [N, C, S] (S = H*W, or 1 for [N, F]) is N runs of C*S contiguous floats. Copying channels
// [src_off, src_off + c) of every sample of `src` into channels [dst_off, dst_off + c) of `dst` covers both ops:
// concat launches it once per input (src_off = 0), slice once (dst_off = 0). No inline PTX.
#include "common.cuh"

extern "C" __global__ void channel_copy_f32(float* __restrict__ dst, const float* __restrict__ src, int n,
                                            int c, int s, int dst_c_total, int dst_c_off, int src_c_total,
                                            int src_c_off) {
    const long long run = (long long)c * s;  // floats copied per sample
    const long long total = run * n;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long b = i / run, r = i - b * run;
        dst[(b * dst_c_total + dst_c_off) * s + r] = src[(b * src_c_total + src_c_off) * s + r];
    }
}
