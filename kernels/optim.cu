// optim.cu — multi-tensor Adam: ONE launch updates every parameter of a model.
//
// The host builds (once per parameter set) a table with, per tensor, the device addresses of param / grad / m / v
// and its element count, and a chunk table that cuts every tensor into pieces of `chunk_len` elements. Block b
// updates chunk b. PyTorch's formulation (torch.optim.Adam, L2 weight decay added to the gradient):
//
//   g = grad + wd * p;  m = torch_lerp(m, g, 1 - β1) (= β1 m + (1 - β1) g);  v = β2 v + (1 - β2) g²
//   p -= step_size * m / (sqrt(v) / sqrt(1 - β2^t) + eps),   step_size = lr / (1 - β1^t)
//
// in PyTorch's operation order (as src/cpu/adam.rs). The bias corrections are computed on the host in double
// precision. No inline PTX.
#include "common.cuh"

// a + w (b - a) computed from the nearer end, as PyTorch's lerp (m = torch_lerp(m, g, 1 - β1) is its Adam's first
// moment update), exact at both ends.
__device__ __forceinline__ float torch_lerp(float a, float b, float w) {
    return fabsf(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

// ptrs: 4 addresses per tensor (param, grad, m, v); sizes: elements per tensor;
// chunk_tensor / chunk_start: tensor index and first element of each block's chunk.
extern "C" __global__ void adam_step_f32(const unsigned long long* __restrict__ ptrs,
                                         const int* __restrict__ sizes, const int* __restrict__ chunk_tensor,
                                         const int* __restrict__ chunk_start, int chunk_len,
                                         float one_minus_beta1, float beta2, float one_minus_beta2, float eps, float weight_decay, float step_size,
                                         float bias_correction2_sqrt) {
    const int t = chunk_tensor[blockIdx.x];
    const int start = chunk_start[blockIdx.x];
    const int end = min(start + chunk_len, sizes[t]);
    float* p = reinterpret_cast<float*>(ptrs[4 * t + 0]);
    const float* g = reinterpret_cast<const float*>(ptrs[4 * t + 1]);
    float* m = reinterpret_cast<float*>(ptrs[4 * t + 2]);
    float* v = reinterpret_cast<float*>(ptrs[4 * t + 3]);
    for (int i = start + (int)threadIdx.x; i < end; i += blockDim.x) {
        float gi = g[i];
        if (weight_decay != 0.0f) gi += weight_decay * p[i];
        const float mi = torch_lerp(m[i], gi, one_minus_beta1);
        const float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        p[i] += -step_size * (mi / denom);
    }
}

// ---- losses and schedules (issue 5.1): weight clipping and RMSprop ------------------------------------------------
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

// torch.optim.RMSprop without momentum, not centered, in its operation order (as src/cpu/rmsprop.rs):
//   g = grad + wd * p;  v = α v + (1 − α) g²;  p += −lr · g / (sqrt(v) + eps)
extern "C" __global__ void rmsprop_step_f32(float* __restrict__ p, const float* __restrict__ grad,
                                            float* __restrict__ square_avg, int n, float lr, float alpha,
                                            float one_minus_alpha, float eps, float weight_decay) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) {
        float g = grad[i];
        if (weight_decay != 0.0f) g += weight_decay * p[i];
        const float v = square_avg[i] * alpha + one_minus_alpha * g * g;
        square_avg[i] = v;
        p[i] += -lr * (g / (sqrtf(v) + eps));
    }
}
