// loss.cu — binary cross-entropy with logits against a constant target t, fused: one launch writes the mean loss
// and d(loss)/d(logits).
//
//   loss_i = max(x, 0) - x t + log(1 + exp(-|x|))        (= -t log σ(x) - (1 - t) log(1 - σ(x)), never overflows)
//   dloss/dx_i = (σ(x) - t) / n
//
// The mean is a deterministic one-launch grid reduction (grid_sum_finish in common.cuh). No inline PTX.
#include "common.cuh"

__device__ __forceinline__ float stable_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

// loss: 1 float; grad: n floats; partials: gridDim.x floats; counter: zero on entry and on exit.
// blockDim.x % 32 == 0.
extern "C" __global__ void bce_logits_fwd_bwd_f32(float* __restrict__ loss, float* __restrict__ grad,
                                                  const float* __restrict__ x, float target, int n,
                                                  float* __restrict__ partials,
                                                  unsigned int* __restrict__ counter) {
    const float inv_n = 1.0f / (float)n;
    float acc = 0.0f;
    for (long long i = global_thread_id(); i < n; i += grid_stride()) {
        const float xi = x[i];
        acc += fmaxf(xi, 0.0f) - xi * target + log1pf(expf(-fabsf(xi)));
        grad[i] = (stable_sigmoid(xi) - target) * inv_n;
    }
    acc = block_sum(acc);
    grid_sum_finish(acc, partials, counter, loss, inv_n);
}
