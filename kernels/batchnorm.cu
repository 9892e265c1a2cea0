// batchnorm.cu — batch normalisation over [N, C, H, W] (BatchNorm2d) or [N, C] (BatchNorm1d, HW = 1).
//
// A channel's statistics reduce over M = N*HW elements that are not contiguous (N planes of HW floats, C*HW
// apart). One block per channel would leave most of the GPU idle for DCGAN's 64-channel layers with
// M = 128*32*32, so each channel's range is cut into S chunks (grid = (C, S)). No float atomics are used, and
// every sum runs in an order fixed by the shape, so every result is bitwise reproducible for a given shape.
//
// Train forward: the statistics arrive in parts (tile_stats.cuh: per part its count, mean and sum of squared
//                deviations from that mean), written either by the convolution that produced x, in its epilogue,
//                or by bn_train_parts_f32 (one part per chunk, two passes over the chunk so the variance does
//                not suffer the cancellation of E[x²] - E[x]²; the second pass hits L2)
//             -> bn_train_fwd_f32: every block merges its channel's parts (bn::merge_parts), normalises its chunk
//                (y = (x - mean) * invstd * gamma + beta), and the channel's first block saves mean and invstd
//                and updates the running stats: running = (1-m)*running + m*batch, unbiased variance for
//                running_var. The merge is repeated by each of a channel's blocks (a few KB read from L2) so
//                that it needs no launch of its own.
// Eval forward: bn_eval_fwd_f32 (running statistics, one elementwise pass).
// Backward:     bn_bwd_reduce_f32 (partial Σdy and Σdy·x̂ per chunk; the last of a channel's S blocks to finish
//               (last_block_to_arrive, one arrival counter per channel) sums them in chunk order into
//               dbeta = Σdy, dgamma = Σdy·x̂) -> bn_bwd_data_f32 (dx = gamma*invstd * (dy - dbeta/M - x̂*dgamma/M)).
//               Two launches: the data pass needs every channel's sums, so it cannot join the reduction.
// Fused activation: the forward passes take an ActKind (act.cuh) and apply it to their output; the backward
// passes turn dy into dz = act'(y)·dy as they read it, recomputing y = act(z) from x, gamma and beta rather than
// reading it (bn::through_act), so BN followed by ReLU or LeakyReLU costs no separate activation pass or launch
// in either direction, and its backward reads x and dy only (ACT_NONE: plain batch norm).
// Backward partials are laid out [C][S][2]. Reduction kernels need blockDim a multiple of 32 (launched with 256).
// No inline PTX.

#include "common.cuh"
#include "act.cuh"
#include "tile_stats.cuh"

namespace bn {

// Merges a channel's T statistics parts (count, mean, M2; tile_stats.cuh) into its mean and M2 over all
// M = Σ count values: mean = Σ count_t * mean_t / M, then M2 = Σ (M2_t + count_t * (mean_t - mean)²), the
// deviations of the parts' means taken from the finished mean (no cancellation). Both are block sums in a fixed
// order, so every block that merges the same parts gets the same bits. Every thread must call it.
__device__ __forceinline__ void merge_parts(const float* __restrict__ parts, int T, int M, float* scratch,
                                            float& mean, float& m2) {
    float s = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) s = fmaf(__ldg(parts + 3 * t), __ldg(parts + 3 * t + 1), s);
    mean = block_sum_all(s, scratch) / (float)M;
    float q = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        const float d = __ldg(parts + 3 * t + 1) - mean;
        q += fmaf(__ldg(parts + 3 * t) * d, d, __ldg(parts + 3 * t + 2));
    }
    m2 = block_sum_all(q, scratch);
}

// The fused activation's input z = (x - mean)·(invstd·gamma) + beta, as one fused multiply-add: the forward
// writes act(z) with it and the backward passes recompute z with it, so both see the same z bit for bit.
__device__ __forceinline__ float pre_act(float x, float mu, float scale, float b) { return fmaf(x - mu, scale, b); }

// dy taken back through the fused activation, dz = act'(y)·dy, with y = act(z) recomputed from x instead of read
// (the same bits as the forward wrote, so the same dz; one tensor fewer to read); dz = dy for ACT_NONE.
__device__ __forceinline__ float through_act(const AnyAct& f, float x, float dy, float mu, float scale, float b) {
    return f.kind == ACT_NONE ? dy : f.bwd(f.fwd(pre_act(x, mu, scale, b)), dy);
}

}  // namespace bn

// grid = (C, S), S chunks of `chunk` elements (the last may be shorter; none empty); M = N*HW >= 2.
// Writes channel c's statistics in S parts (tile_stats.cuh's format): parts[(c*S+s)*3 + 0/1/2] = (chunk length,
// chunk mean, chunk sum of squared deviations from its mean).
extern "C" __global__ void bn_train_parts_f32(const float* __restrict__ x, float* __restrict__ parts, int N, int C,
                                              int HW, int chunk) {
    __shared__ float scratch[32];
    write_chunk_part(parts, N, C, HW, chunk, scratch, [&](size_t i, bool) { return __ldg(x + i); });
}

// grid = (C, S) as for bn_train_parts_f32 (S chunks of `chunk` elements of a channel); blockDim a multiple of 32.
// Every block merges channel c's T statistics parts (from bn_train_parts_f32 or a convolution's epilogue) and
// normalises its chunk: y = act((x - mean) * invstd * gamma + beta) (act: an ActKind, ACT_NONE for plain batch
// norm). Block (c, 0) also writes mean[c] and invstd[c] and updates running_mean / running_var in place, and
// block (0, 0) adds one to *batches (num_batches_tracked) unless batches is null.
extern "C" __global__ void bn_train_fwd_f32(const float* __restrict__ x, const float* __restrict__ parts, int T,
                                            float* __restrict__ mean, float* __restrict__ invstd,
                                            float* running_mean, float* running_var, float* batches,
                                            const float* __restrict__ gamma, const float* __restrict__ beta,
                                            float* __restrict__ y, int N, int C, int HW, int chunk, float momentum,
                                            float eps, int act, float slope) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, s = blockIdx.y, M = N * HW;
    float mu, m2;
    bn::merge_parts(parts + (size_t)c * T * 3, T, M, scratch, mu, m2);
    const float is = 1.0f / sqrtf(m2 / (float)M + eps);  // the biased variance normalises
    if (s == 0 && threadIdx.x == 0) {
        mean[c] = mu;
        invstd[c] = is;
        const float unbiased = m2 / (float)(M - 1);
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mu;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
        if (c == 0 && batches != nullptr) *batches += 1.0f;
    }

    const AnyAct f{act, slope};
    const float scale = is * __ldg(gamma + c), b = __ldg(beta + c);
    const int end = min(M, (s + 1) * chunk);
    for (int j = s * chunk + threadIdx.x; j < end; j += blockDim.x) {
        const size_t i = chan_index(j, c, C, HW);
        y[i] = f.fwd(bn::pre_act(__ldg(x + i), mu, scale, b));
    }
}

// y = act((x - running_mean[c]) / sqrt(running_var[c] + eps) * gamma[c] + beta[c]); any 1-D grid.
extern "C" __global__ void bn_eval_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                                           const float* __restrict__ beta, const float* __restrict__ running_mean,
                                           const float* __restrict__ running_var, float* __restrict__ y, int C,
                                           int HW, int total, float eps, int act, float slope) {
    const AnyAct f{act, slope};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float scale = __ldg(gamma + c) / sqrtf(__ldg(running_var + c) + eps);
        y[i] = f.fwd((__ldg(x + i) - __ldg(running_mean + c)) * scale + __ldg(beta + c));
    }
}

// grid = (C, S) as for bn_train_parts_f32. part[(c*S+s)*2 + 0/1] = (Σ dz, Σ dz * x̂) over the chunk, where dz is
// dy taken back through the fused activation (bn::through_act, from x, gamma and beta; dz = dy for ACT_NONE,
// and then beta is not read). The channel's last block sums the partials in chunk order: dbeta[c] = Σ dz,
// dgamma[c] = Σ dz * x̂. counters: C arrival counters, zero on entry and on exit.
extern "C" __global__ void bn_bwd_reduce_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                             const float* __restrict__ mean, const float* __restrict__ invstd,
                                             const float* __restrict__ gamma, const float* __restrict__ beta,
                                             float* __restrict__ part, float* __restrict__ dgamma,
                                             float* __restrict__ dbeta, unsigned int* __restrict__ counters, int N,
                                             int C, int HW, int chunk, int act, float slope) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    const int begin = s * chunk;
    const int end = min(N * HW, begin + chunk);
    const float mu = __ldg(mean + c);
    const float is = __ldg(invstd + c);
    const AnyAct f{act, slope};
    const float scale = is * __ldg(gamma + c), b = act == ACT_NONE ? 0.0f : __ldg(beta + c);

    float sdy = 0.0f, sdyx = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const size_t idx = chan_index(j, c, C, HW);
        const float xv = __ldg(x + idx);
        const float g = bn::through_act(f, xv, __ldg(dy + idx), mu, scale, b);
        sdy += g;
        sdyx = fmaf(g, (xv - mu) * is, sdyx);
    }
    sdy = block_sum_all(sdy, scratch);
    sdyx = block_sum_all(sdyx, scratch);
    if (threadIdx.x == 0) {
        part[((size_t)c * S + s) * 2] = sdy;
        part[((size_t)c * S + s) * 2 + 1] = sdyx;
    }
    if (!last_block_to_arrive(counters + c, S) || threadIdx.x != 0) return;

    const volatile float* pc = part + (size_t)c * S * 2;
    float tot_dy = 0.0f, tot_dyx = 0.0f;
    for (int t = 0; t < S; ++t) {
        tot_dy += pc[2 * t];
        tot_dyx += pc[2 * t + 1];
    }
    dbeta[c] = tot_dy;
    dgamma[c] = tot_dyx;
}

// dx = gamma*invstd * (dz - dbeta/M - x̂ * dgamma/M), x̂ = (x - mean)*invstd, dz as in bn_bwd_reduce_f32;
// inv_m = 1/M; any 1-D grid.
extern "C" __global__ void bn_bwd_data_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                           const float* __restrict__ mean, const float* __restrict__ invstd,
                                           const float* __restrict__ gamma, const float* __restrict__ beta,
                                           const float* __restrict__ dgamma, const float* __restrict__ dbeta,
                                           float* __restrict__ dx, int C, int HW, int total, float inv_m, int act,
                                           float slope) {
    const AnyAct f{act, slope};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float mu = __ldg(mean + c), is = __ldg(invstd + c), gm = __ldg(gamma + c);
        const float xv = __ldg(x + i);
        const float xhat = (xv - mu) * is;
        const float b = act == ACT_NONE ? 0.0f : __ldg(beta + c);
        const float dz = bn::through_act(f, xv, __ldg(dy + i), mu, is * gm, b);
        const float g = dz - __ldg(dbeta + c) * inv_m - xhat * (__ldg(dgamma + c) * inv_m);
        dx[i] = gm * is * g;
    }
}
