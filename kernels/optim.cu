// optim.cu — multi-tensor Adam: ONE launch updates every parameter of a model.
//
// The tensors travel in the kernel's parameters, not in device memory: a TensorList (tensor_list.cuh) holds, per
// tensor, the addresses of param / grad / m / v (slots 0-3), its element count and the index of its first chunk
// (pieces of `chunk_len` elements). Block b updates chunk b. Gradients are fresh tensors every step, so a table
// in device memory would have to be uploaded every step; parameters are copied by the launch itself (PyTorch's
// multi_tensor_apply does the same). PyTorch's formulation (torch.optim.Adam, L2 weight decay added to the gradient):
//
//   g = grad + wd * p;  m = torch_lerp(m, g, 1 - β1) (= β1 m + (1 - β1) g);  v = β2 v + (1 - β2) g²
//   p -= step_size * m / (sqrt(v) / sqrt(1 - β2^t) + eps),   step_size = lr / (1 - β1^t)
//
// in PyTorch's operation order (as src/cpu/adam.rs). The bias corrections are computed in double precision, on
// the host (adam_step_f32) or, for a captured graph, on the device (adam_schedule_f32). No inline PTX.
#include "common.cuh"
#include "tensor_list.cuh"

// The optimizer updates round every product before the sum (__fmul_rn / __fadd_rn), as the CPU backend does:
// left to itself the compiler contracts x + y·z into one fma, which rounds once, and where the sum cancels (a
// small m from a large gradient and its weight decay) the two differ by an ulp of the large term, not of the
// result. Memory-bound kernels, so the extra instructions cost nothing.
__device__ __forceinline__ float mul_add_rn(float x, float y, float z) { return __fadd_rn(x, __fmul_rn(y, z)); }

// a + w (b - a) computed from the nearer end, as PyTorch's lerp (m = torch_lerp(m, g, 1 - β1) is its Adam's first
// moment update), exact at both ends.
__device__ __forceinline__ float torch_lerp(float a, float b, float w) {
    return fabsf(w) < 0.5f ? mul_add_rn(a, w, b - a) : __fsub_rn(b, __fmul_rn(b - a, 1.0f - w));
}

// Block b updates chunk b of the list's tensors with the given bias corrections.
__device__ __forceinline__ void adam_update(const TensorList& list, int chunk_len, float one_minus_beta1,
                                            float beta2, float one_minus_beta2, float eps, float weight_decay,
                                            float step_size, float bias_correction2_sqrt) {
    int t, start, end;
    list_chunk(list, chunk_len, t, start, end);
    float* p = list_ptr(list, 0, t);
    const float* g = list_ptr(list, 1, t);
    float* m = list_ptr(list, 2, t);
    float* v = list_ptr(list, 3, t);
    for (int i = start + (int)threadIdx.x; i < end; i += blockDim.x) {
        float gi = g[i];
        if (weight_decay != 0.0f) gi = mul_add_rn(gi, weight_decay, p[i]);
        const float mi = torch_lerp(m[i], gi, one_minus_beta1);
        const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(one_minus_beta2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        const float denom = __fadd_rn(sqrtf(vi) / bias_correction2_sqrt, eps);
        p[i] = mul_add_rn(p[i], -step_size, mi / denom);
    }
}

// The bias corrections as arguments, computed by the host for this step.
extern "C" __global__ void adam_step_f32(const TensorList list, int chunk_len, float one_minus_beta1,
                                         float beta2, float one_minus_beta2, float eps, float weight_decay,
                                         float step_size, float bias_correction2_sqrt) {
    adam_update(list, chunk_len, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, step_size,
                bias_correction2_sqrt);
}

// ---- Adam with its step counter on the device (a captured CUDA graph replays the same arguments every step) ----
// adam_schedule_f32 (one thread) advances the counter and writes sched = {step_size, sqrt(1 − β2^t)};
// adam_step_sched_f32 reads them. The host's formulas in double precision (src/cpu/adam.rs), bit for bit: the
// powers by square-and-multiply as Rust's f64::powi does it (compiler-builtins' __powidf2), each product rounded
// on its own (__dmul_rn, so no fma contraction with the 1 − x that follows); division and sqrt in double are
// correctly rounded on both sides, as are the conversions to float.
__device__ __forceinline__ double powi_rn(double a, unsigned int n) {
    double r = 1.0;
    while (true) {
        if (n & 1u) r = __dmul_rn(r, a);
        n >>= 1;
        if (n == 0) break;
        a = __dmul_rn(a, a);
    }
    return r;
}

extern "C" __global__ void adam_schedule_f32(unsigned long long* step, float* sched, float lr,
                                             unsigned long long beta1_bits, unsigned long long beta2_bits) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long t = *step + 1;
    *step = t;
    const double bc1 = 1.0 - powi_rn(__longlong_as_double((long long)beta1_bits), (unsigned int)t);
    const double bc2 = 1.0 - powi_rn(__longlong_as_double((long long)beta2_bits), (unsigned int)t);
    sched[0] = (float)((double)lr / bc1);
    sched[1] = (float)sqrt(bc2);
}

extern "C" __global__ void adam_step_sched_f32(const TensorList list, int chunk_len, float one_minus_beta1,
                                               float beta2, float one_minus_beta2, float eps, float weight_decay,
                                               const float* sched) {
    adam_update(list, chunk_len, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, sched[0], sched[1]);
}

// ---- fp16 loss scaling: GradScaler's unscale and overflow check, all gradients in one launch ---------------------
// y_t = g_t · inv_scale for every tensor of the list (tensor_list.cuh; slots y, g), written as affine_f32
// computes inv·g + 0 (two roundings, and -0 becomes +0) so that a backend running affine gives the same bits;
// *found_inf = 1 where any result is Inf or NaN. Every writer stores the same value, so the race is benign; the
// flag is zeroed before the launch.
extern "C" __global__ void unscale_list_f32(const TensorList list, int chunk_len, float inv_scale, float* found_inf) {
    int t, start, end;
    list_chunk(list, chunk_len, t, start, end);
    float* y = list_ptr(list, 0, t);
    const float* g = list_ptr(list, 1, t);
    bool bad = false;
    for (int i = start + (int)threadIdx.x; i < end; i += blockDim.x) {
        const float v = __fadd_rn(__fmul_rn(inv_scale, g[i]), 0.0f);
        y[i] = v;
        bad |= !isfinite(v);
    }
    if (bad) *found_inf = 1.0f;
}

// ---- WGAN training: weight clipping and RMSprop ----------------------------------------------------------------
// Both launch once per tensor (a WGAN critic has a dozen parameter tensors; a pointer table like Adam's would save
// a few launches per step at the price of a host-to-device copy of the table).

// x[i] = clamp(x[i], lo, hi) in place. Comparisons rather than fminf/fmaxf: those drop a NaN operand, and a NaN
// weight must stay NaN so the next loss check reports the divergence instead of the clip hiding it.
extern "C" __global__ void clamp_f32(float* __restrict__ x, float lo, float hi, int n) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) {
        const float v = x[i];
        x[i] = v < lo ? lo : (v > hi ? hi : v);
    }
}

// Exponential moving average in place: avg = decay·avg + (1 − decay)·x (train --g-ema). Both products are rounded
// before the sum (__fmul_rn / __fadd_rn: no fma contraction), the CPU's order, so the backends agree bit for bit.
extern "C" __global__ void ema_f32(float* __restrict__ avg, const float* __restrict__ x, float decay,
                                   float one_minus_decay, int n) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) {
        avg[i] = __fadd_rn(__fmul_rn(decay, avg[i]), __fmul_rn(one_minus_decay, x[i]));
    }
}

// torch.optim.RMSprop without momentum, not centered, in its operation order (as src/cpu/rmsprop.rs):
//   g = grad + wd * p;  v = α v + (1 − α) g²;  p += −lr · g / (sqrt(v) + eps)
extern "C" __global__ void rmsprop_step_f32(float* __restrict__ p, const float* __restrict__ grad,
                                            float* __restrict__ square_avg, int n, float lr, float alpha,
                                            float one_minus_alpha, float eps, float weight_decay) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) {
        float g = grad[i];
        if (weight_decay != 0.0f) g = mul_add_rn(g, weight_decay, p[i]);
        const float v = __fadd_rn(__fmul_rn(square_avg[i], alpha), __fmul_rn(__fmul_rn(one_minus_alpha, g), g));
        square_avg[i] = v;
        p[i] = mul_add_rn(p[i], -lr, g / __fadd_rn(sqrtf(v), eps));
    }
}
