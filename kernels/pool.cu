// pool.cu — max and average pooling of NCHW tensors (PyTorch MaxPool2d / AvgPool2d, ceil_mode = false).
//
// Pooling never mixes planes, so a tensor is `planes` = N*C independent H x W images. Every kernel is a
// grid-stride loop with one thread per element it writes:
// - forward: one thread per output cell reduces its window (padded cells clipped away; for max they count as
//   -inf, so they never win);
// - backward: a *gather*, one thread per input cell summing the outputs whose windows cover it. No atomics, so
//   the result is deterministic, and the outputs are visited in row-major order — the order in which the CPU
//   backend's scatter adds them — so both backends produce bit-identical gradients.
// Max-pool backward recomputes each covering window's argmax from x (same comparisons in the same order as the
// forward, so the same winner) instead of reading indices saved by the forward: our tensors are f32 only.
// The launch code (src/cuda/pool.rs) has validated the geometry (every window holds an image cell). No inline PTX.
#include "common.cuh"

struct PoolDims {
    int h, w, ho, wo, kh, kw, sh, sw, ph, pw;
};

// Image rows (or columns) [lo, hi) under window `o` of one axis.
__device__ __forceinline__ void pool_window(int o, int k, int s, int p, int len, int& lo, int& hi) {
    const int start = o * s - p;
    lo = max(start, 0);
    hi = min(start + k, len);
}

// Outputs [lo, hi) of one axis whose windows cover input cell i: o*s - p <= i < o*s - p + k.
__device__ __forceinline__ void covering(int i, int k, int s, int p, int len_out, int& lo, int& hi) {
    const int first = i + p - k + 1;  // smallest o*s that still reaches i
    lo = first <= 0 ? 0 : (first + s - 1) / s;
    hi = min((i + p) / s + 1, len_out);
}

// Offset in the plane of the first maximum of window (oh, ow) in row-major order; NaN wins (a later NaN
// replaces an earlier one), as in PyTorch's CPU kernel and src/cpu/pool.rs.
__device__ __forceinline__ int window_argmax(const float* __restrict__ plane, const PoolDims& d, int oh, int ow,
                                             float& best) {
    int h0, h1, w0, w1;
    pool_window(oh, d.kh, d.sh, d.ph, d.h, h0, h1);
    pool_window(ow, d.kw, d.sw, d.pw, d.w, w0, w1);
    int arg = h0 * d.w + w0;
    best = __uint_as_float(0xff800000u);  // -inf
    for (int ih = h0; ih < h1; ++ih) {
        for (int iw = w0; iw < w1; ++iw) {
            const float v = plane[ih * d.w + iw];
            if (v > best || v != v) {  // v != v: v is NaN
                best = v;
                arg = ih * d.w + iw;
            }
        }
    }
    return arg;
}

// kh*kw, or (count_include_pad == 0) only the window's cells inside the image. In floor mode no window reaches
// past the padding, so the first is always the full window size.
__device__ __forceinline__ float pool_divisor(const PoolDims& d, int oh, int ow, int count_include_pad) {
    if (count_include_pad) return (float)(d.kh * d.kw);
    int h0, h1, w0, w1;
    pool_window(oh, d.kh, d.sh, d.ph, d.h, h0, h1);
    pool_window(ow, d.kw, d.sw, d.pw, d.w, w0, w1);
    return (float)((h1 - h0) * (w1 - w0));
}

extern "C" __global__ void max_pool2d_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int planes, int h,
                                              int w, int ho, int wo, int kh, int kw, int sh, int sw, int ph,
                                              int pw) {
    const PoolDims d{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
    const long long total = (long long)planes * ho * wo;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)ho * wo);
        const int r = (int)(i - plane * ho * wo);
        float best;
        window_argmax(x + plane * h * w, d, r / wo, r % wo, best);
        y[i] = best;
    }
}

extern "C" __global__ void max_pool2d_bwd_f32(float* __restrict__ dx, const float* __restrict__ x,
                                              const float* __restrict__ dy, int planes, int h, int w, int ho, int wo,
                                              int kh, int kw, int sh, int sw, int ph, int pw) {
    const PoolDims d{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
    const long long total = (long long)planes * h * w;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)h * w);
        const int r = (int)(i - plane * h * w);
        const int ih = r / w, iw = r % w;
        const float* xp = x + plane * h * w;
        const float* gp = dy + plane * ho * wo;
        int oh0, oh1, ow0, ow1;
        covering(ih, kh, sh, ph, ho, oh0, oh1);
        covering(iw, kw, sw, pw, wo, ow0, ow1);
        float acc = 0.0f;
        for (int oh = oh0; oh < oh1; ++oh) {
            for (int ow = ow0; ow < ow1; ++ow) {
                float best;
                if (window_argmax(xp, d, oh, ow, best) == r) acc += gp[oh * wo + ow];
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void avg_pool2d_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int planes, int h,
                                              int w, int ho, int wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                              int count_include_pad) {
    const PoolDims d{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
    const long long total = (long long)planes * ho * wo;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)ho * wo);
        const int r = (int)(i - plane * ho * wo);
        const int oh = r / wo, ow = r % wo;
        const float* xp = x + plane * h * w;
        int h0, h1, w0, w1;
        pool_window(oh, kh, sh, ph, h, h0, h1);
        pool_window(ow, kw, sw, pw, w, w0, w1);
        float s = 0.0f;
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) s += xp[ih * w + iw];
        y[i] = s / pool_divisor(d, oh, ow, count_include_pad);
    }
}

extern "C" __global__ void avg_pool2d_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy, int planes,
                                              int h, int w, int ho, int wo, int kh, int kw, int sh, int sw, int ph,
                                              int pw, int count_include_pad) {
    const PoolDims d{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
    const long long total = (long long)planes * h * w;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)h * w);
        const int r = (int)(i - plane * h * w);
        const float* gp = dy + plane * ho * wo;
        int oh0, oh1, ow0, ow1;
        covering(r / w, kh, sh, ph, ho, oh0, oh1);
        covering(r % w, kw, sw, pw, wo, ow0, ow1);
        float acc = 0.0f;
        for (int oh = oh0; oh < oh1; ++oh)
            for (int ow = ow0; ow < ow1; ++ow) acc += gp[oh * wo + ow] / pool_divisor(d, oh, ow, count_include_pad);
        dx[i] = acc;
    }
}
