// resize.cu — bilinear resize of NCHW tensors (no antialiasing) in three coordinate conventions, `mode`,
// nearest-neighbour upsampling by an integer scale, and the resize-convolution weight folding (at the end).
// Bilinear modes:
//   0 AlignCorners  src = dst * (in - 1) / (out - 1)          (PyTorch align_corners=True; 0 when out == 1)
//   1 HalfPixel     src = max((dst + 0.5) * in / out - 0.5, 0) (PyTorch align_corners=False)
//   2 Legacy        src = dst * in / out                        (TF1 resize_bilinear, what FID uses)
// Each output cell reads rows i0, i1 = min(i0 + 1, in - 1) with weights 1 - frac, frac (and likewise columns).
// src is an exact rational num/den, so i0 is exact and frac has one rounding: resize_tap mirrors
// ResizeMode::tap in src/backend.rs bit for bit, and the arithmetic uses __fmul_rn / __fadd_rn so the compiler
// cannot contract it into FMAs — both kernels give bit-identical results to the CPU backend.
//
// Forward: one thread per output cell. Backward: a *gather* (no atomics, deterministic): one thread per input
// cell finds, per axis, the contiguous range of outputs that read it (binary search on the monotone i0(dst)) and
// adds their contributions in row-major output order, term by term, exactly as the CPU backend's scatter does.
// No inline PTX.
#include "common.cuh"

struct ResizeTap {
    int i0, i1;
    float frac;
};

__device__ __forceinline__ ResizeTap resize_tap(int mode, int dst, int len_in, int len_out) {
    long long num, den;
    if (mode == 0) {
        num = len_out > 1 ? (long long)dst * (len_in - 1) : 0;
        den = len_out > 1 ? len_out - 1 : 1;
    } else if (mode == 1) {
        num = max((2LL * dst + 1) * len_in - len_out, 0LL);
        den = 2LL * len_out;
    } else {
        num = (long long)dst * len_in;
        den = len_out;
    }
    const long long i0 = num / den;
    ResizeTap t;
    t.i0 = (int)i0;
    t.i1 = min(t.i0 + 1, len_in - 1);
    t.frac = (float)(num - i0 * den) / (float)den;
    return t;
}

// First dst in [0, len_out) whose i0 exceeds `limit`, or len_out. i0(dst) never decreases with dst.
__device__ __forceinline__ int first_tap_above(int limit, int mode, int len_in, int len_out) {
    int lo = 0, hi = len_out;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (resize_tap(mode, mid, len_in, len_out).i0 > limit)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

extern "C" __global__ void resize_bilinear_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int planes,
                                                   int h, int w, int out_h, int out_w, int mode) {
    const long long total = (long long)planes * out_h * out_w;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)out_h * out_w);
        const int r = (int)(i - plane * out_h * out_w);
        const ResizeTap a = resize_tap(mode, r / out_w, h, out_h);
        const ResizeTap b = resize_tap(mode, r % out_w, w, out_w);
        const float* r0 = x + plane * h * w + (long long)a.i0 * w;
        const float* r1 = x + plane * h * w + (long long)a.i1 * w;
        const float bx0 = 1.0f - b.frac, ay0 = 1.0f - a.frac;
        // Blend along x within each row, then the two rows (PyTorch's grouping, src/cpu/resize.rs's order).
        const float top = __fadd_rn(__fmul_rn(bx0, r0[b.i0]), __fmul_rn(b.frac, r0[b.i1]));
        const float bot = __fadd_rn(__fmul_rn(bx0, r1[b.i0]), __fmul_rn(b.frac, r1[b.i1]));
        y[i] = __fadd_rn(__fmul_rn(ay0, top), __fmul_rn(a.frac, bot));
    }
}

extern "C" __global__ void resize_bilinear_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                   int planes, int h, int w, int out_h, int out_w, int mode) {
    const long long total = (long long)planes * h * w;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)h * w);
        const int r = (int)(i - plane * h * w);
        const int iy = r / w, ix = r % w;
        const float* gp = dy + plane * out_h * out_w;
        // Outputs that read this row have i0 == iy (weight 1 - frac) or i0 == iy - 1 (i1 == iy, weight frac);
        // i0 == i1 == iy at the clamped border is the first case with both weights.
        const int oy0 = first_tap_above(iy - 2, mode, h, out_h), oy1 = first_tap_above(iy, mode, h, out_h);
        const int ox0 = first_tap_above(ix - 2, mode, w, out_w), ox1 = first_tap_above(ix, mode, w, out_w);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; ++oy) {
            const ResizeTap a = resize_tap(mode, oy, h, out_h);
            for (int ox = ox0; ox < ox1; ++ox) {
                const ResizeTap b = resize_tap(mode, ox, w, out_w);
                const float g = gp[oy * out_w + ox];
                const float top = __fmul_rn(1.0f - a.frac, g), bot = __fmul_rn(a.frac, g);
                const float bx0 = 1.0f - b.frac;
                // The CPU scatter's four adds, in its order, keeping only those that land on (iy, ix).
                if (a.i0 == iy && b.i0 == ix) acc = __fadd_rn(acc, __fmul_rn(bx0, top));
                if (a.i0 == iy && b.i1 == ix) acc = __fadd_rn(acc, __fmul_rn(b.frac, top));
                if (a.i1 == iy && b.i0 == ix) acc = __fadd_rn(acc, __fmul_rn(bx0, bot));
                if (a.i1 == iy && b.i1 == ix) acc = __fadd_rn(acc, __fmul_rn(b.frac, bot));
            }
        }
        dx[i] = acc;
    }
}

// ---- nearest-neighbour upsampling by an integer scale ------------------------------------------------------
// Forward: one thread per output cell copies its source cell. Backward: one thread per input cell sums its
// scale x scale block of dy in row-major order, as src/cpu/resize.rs does, so both backends agree bit for bit.
extern "C" __global__ void upsample_nearest_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int planes,
                                                    int h, int w, int scale) {
    const int oh = h * scale, ow = w * scale;
    const long long total = (long long)planes * oh * ow;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)oh * ow);
        const int r = (int)(i - plane * oh * ow);
        y[i] = x[plane * h * w + (long long)(r / ow / scale) * w + (r % ow) / scale];
    }
}

extern "C" __global__ void upsample_nearest_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                    int planes, int h, int w, int scale) {
    const int ow = w * scale;
    const long long total = (long long)planes * h * w;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const long long plane = i / ((long long)h * w);
        const int r = (int)(i - plane * h * w);
        const float* g = dy + plane * h * scale * ow + (long long)(r / w) * scale * ow + (r % w) * scale;
        float acc = 0.0f;
        for (int a = 0; a < scale; ++a)
            for (int b = 0; b < scale; ++b) acc += g[a * ow + b];
        dx[i] = acc;
    }
}

// ---- resize-convolution weights: 2x nearest upsampling + 3x3 convolution as one 4x4 transposed convolution ----
// Per axis, tap k (0..3) of the stride-2, padding-1 transposed convolution sums the 3x3 taps t with k + t in
// {2, 3}: [w1, w0 + w1, w-1 + w0, w-1] (the derivation is at resize_conv_taps in src/backend.rs). The weights are
// small (C * O * 16 cells), so one thread per output cell, summing its taps in order as the CPU backend does: both
// give the same bits.
__device__ __forceinline__ bool resize_conv_tap(int k, int t) { return k + t == 2 || k + t == 3; }

// dst [rows, cols, taps] from src [cols, rows, taps'], 4x4 taps from 3x3 ones (to_4x4) or back: each dst cell
// sums, in order, the src taps of the transposed plane that resize_conv_tap links it to.
__device__ __forceinline__ void resize_conv_fold(float* __restrict__ dst, const float* __restrict__ src, int rows,
                                                 int cols, bool to_4x4) {
    const int nd = to_4x4 ? 16 : 9, ns = to_4x4 ? 9 : 16;
    const long long total = (long long)rows * cols * nd;
    for (long long i = global_thread_id(); i < total; i += grid_stride()) {
        const int plane = (int)(i / nd), d = (int)(i % nd);
        const float* s = src + ((long long)(plane % cols) * rows + plane / cols) * ns;
        float acc = 0.0f;
        for (int j = 0; j < ns; ++j) {
            const int k = to_4x4 ? d : j, t = to_4x4 ? j : d;  // the 4x4 tap and the 3x3 tap
            if (resize_conv_tap(k / 4, t / 3) && resize_conv_tap(k % 4, t % 3)) acc += s[j];
        }
        dst[i] = acc;
    }
}

// k [C, O, 4, 4] from w [O, C, 3, 3].
extern "C" __global__ void resize_conv_weight_fwd_f32(float* __restrict__ k, const float* __restrict__ w, int c,
                                                      int o) {
    resize_conv_fold(k, w, c, o, true);
}

// dw [O, C, 3, 3] from dk [C, O, 4, 4]: the adjoint, each 3x3 tap summing the 4x4 taps it feeds.
extern "C" __global__ void resize_conv_weight_bwd_f32(float* __restrict__ dw, const float* __restrict__ dk, int c,
                                                      int o) {
    resize_conv_fold(dw, dk, o, c, false);
}
