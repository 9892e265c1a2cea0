// batchnorm.cu — batch normalisation over [N, C, H, W] (BatchNorm2d) or [N, C] (BatchNorm1d, HW = 1).
//
// A channel's statistics reduce over M = N*HW elements that are not contiguous (N planes of HW floats, C*HW
// apart). One block per channel would leave most of the GPU idle for DCGAN's 64-channel layers with
// M = 128*32*32, so each channel's range is cut into S chunks (grid = (C, S)); every block reduces one chunk
// and writes a partial, and the last of a channel's S blocks to finish (last_block_to_arrive, one arrival
// counter per channel) combines the S partials in a fixed order. The result does not depend on which block
// finishes last, and no float atomics are used, so every result is bitwise reproducible for a given shape.
//
// Train forward: bn_train_stats_f32 (chunk mean and sum of squared deviations, two passes over the chunk so
//                the variance does not suffer the cancellation of E[x²] - E[x]²; the second pass hits L2; then,
//                in the channel's last block, Chan et al.'s pairwise merge of (count, mean, M2), mean, invstd
//                and the running-stat update: running = (1-m)*running + m*batch, unbiased variance for
//                running_var)
//             -> bn_train_fwd_f32 (y = (x - mean) * invstd * gamma + beta).
// Eval forward: bn_eval_fwd_f32 (running statistics, one elementwise pass).
// Backward:     bn_bwd_reduce_f32 (partial Σdy and Σdy·x̂ per chunk; the channel's last block sums them into
//               dbeta = Σdy, dgamma = Σdy·x̂) -> bn_bwd_data_f32 (dx = gamma*invstd * (dy - dbeta/M - x̂*dgamma/M)).
// Two launches each way: the data passes need every channel's sums, so they cannot join the reductions.
// Fused activation: the forward passes take an ActKind (act.cuh) and apply it to their output; the backward
// passes then take that output y and turn dy into dz = act'(y)·dy as they read it, so BN followed by ReLU or
// LeakyReLU costs no separate activation pass or launch in either direction (ACT_NONE: plain batch norm).
// Partials are laid out [C][S][2]. Reduction kernels need blockDim a multiple of 32 (launched with 256).
// No inline PTX.

#include "common.cuh"
#include "act.cuh"

namespace bn {

// Sum of v over the block, returned to *every* thread (common.cuh's block_sum only informs thread 0, but the
// statistics pass needs the chunk mean in all threads). warp_sum's xor butterfly gives every lane the same bits,
// so every warp computes the identical total from the per-warp partials: deterministic and uniform.
// `scratch` is a __shared__ float[32] owned by the caller.
__device__ __forceinline__ float block_sum_all(float v, float* scratch) {
    v = warp_sum(v);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();  // a previous call may still be reading scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < (int)(blockDim.x / 32) ? scratch[lane] : 0.0f);
}

// Address of element j (0 <= j < N*HW) of channel c.
__device__ __forceinline__ size_t chan_index(int j, int c, int C, int HW) {
    const int n = j / HW;
    return ((size_t)n * C + c) * HW + (j - n * HW);
}

}  // namespace bn

// grid = (C, S), S chunks of `chunk` elements (the last may be shorter; none empty); M = N*HW >= 2.
// part[(c*S+s)*2 + 0/1] = (chunk mean, chunk sum of squared deviations from its mean). The channel's last block
// writes mean[c] and invstd[c] and updates running_mean / running_var in place; channel 0's also adds one to
// *batches (num_batches_tracked), unless batches is null. counters: C arrival counters, zero on entry and on exit.
extern "C" __global__ void bn_train_stats_f32(const float* __restrict__ x, float* __restrict__ part,
                                              float* __restrict__ mean, float* __restrict__ invstd,
                                              float* running_mean, float* running_var, float* batches,
                                              unsigned int* __restrict__ counters, int N, int C, int HW, int chunk,
                                              float momentum, float eps) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, s = blockIdx.y, S = gridDim.y, M = N * HW;
    const int begin = s * chunk;
    const int end = min(M, begin + chunk);

    float sum = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) sum += __ldg(x + bn::chan_index(j, c, C, HW));
    const float chunk_mean = bn::block_sum_all(sum, scratch) / (float)(end - begin);

    float sq = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const float d = __ldg(x + bn::chan_index(j, c, C, HW)) - chunk_mean;
        sq = fmaf(d, d, sq);
    }
    const float m2 = bn::block_sum_all(sq, scratch);
    if (threadIdx.x == 0) {
        part[((size_t)c * S + s) * 2] = chunk_mean;
        part[((size_t)c * S + s) * 2 + 1] = m2;
    }
    if (!last_block_to_arrive(counters + c, S) || threadIdx.x != 0) return;

    // Merge chunk 0, 1, ..., S-1 into (n, mu, m2) in order: Chan, Golub & LeVeque's update.
    const volatile float* pc = part + (size_t)c * S * 2;
    float n = (float)min(chunk, M);
    float mu = pc[0];
    float m2_all = pc[1];
    for (int t = 1; t < S; ++t) {
        const float nb = (float)min(chunk, M - t * chunk);
        const float tot = n + nb;
        const float delta = pc[2 * t] - mu;
        mu += delta * (nb / tot);
        m2_all += pc[2 * t + 1] + delta * delta * (n * nb / tot);
        n = tot;
    }
    const float var = m2_all / (float)M;  // biased: what normalisation uses
    mean[c] = mu;
    invstd[c] = 1.0f / sqrtf(var + eps);
    const float unbiased = m2_all / (float)(M - 1);
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mu;
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    if (c == 0 && batches != nullptr) *batches += 1.0f;
}

// y = act((x - mean[c]) * invstd[c] * gamma[c] + beta[c]) over total = N*C*HW elements (act: an ActKind, ACT_NONE
// for plain batch norm); any 1-D grid.
extern "C" __global__ void bn_train_fwd_f32(const float* __restrict__ x, const float* __restrict__ mean,
                                            const float* __restrict__ invstd, const float* __restrict__ gamma,
                                            const float* __restrict__ beta, float* __restrict__ y, int C, int HW,
                                            int total, int act, float slope) {
    const AnyAct f{act, slope};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float scale = __ldg(invstd + c) * __ldg(gamma + c);
        y[i] = f.fwd((__ldg(x + i) - __ldg(mean + c)) * scale + __ldg(beta + c));
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

// grid = (C, S) as for bn_train_stats_f32. part[(c*S+s)*2 + 0/1] = (Σ dz, Σ dz * x̂) over the chunk, where dz is
// dy taken back through the fused activation (dz = act'(y) dy, y the fused op's output; dz = dy for ACT_NONE,
// and then y is not read). The channel's last block sums the partials in chunk order: dbeta[c] = Σ dz,
// dgamma[c] = Σ dz * x̂. counters: C arrival counters, zero on entry and on exit.
extern "C" __global__ void bn_bwd_reduce_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                             const float* __restrict__ y, const float* __restrict__ mean,
                                             const float* __restrict__ invstd, float* __restrict__ part,
                                             float* __restrict__ dgamma, float* __restrict__ dbeta,
                                             unsigned int* __restrict__ counters, int N, int C, int HW, int chunk,
                                             int act, float slope) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    const int begin = s * chunk;
    const int end = min(N * HW, begin + chunk);
    const float mu = __ldg(mean + c);
    const float is = __ldg(invstd + c);

    float sdy = 0.0f, sdyx = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const size_t idx = bn::chan_index(j, c, C, HW);
        const float g = act == ACT_NONE ? __ldg(dy + idx) : AnyAct{act, slope}.bwd(__ldg(y + idx), __ldg(dy + idx));
        sdy += g;
        sdyx = fmaf(g, (__ldg(x + idx) - mu) * is, sdyx);
    }
    sdy = bn::block_sum_all(sdy, scratch);
    sdyx = bn::block_sum_all(sdyx, scratch);
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
                                           const float* __restrict__ y, const float* __restrict__ mean,
                                           const float* __restrict__ invstd, const float* __restrict__ gamma,
                                           const float* __restrict__ dgamma, const float* __restrict__ dbeta,
                                           float* __restrict__ dx, int C, int HW, int total, float inv_m, int act,
                                           float slope) {
    const AnyAct f{act, slope};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float is = __ldg(invstd + c);
        const float xhat = (__ldg(x + i) - __ldg(mean + c)) * is;
        const float dz = act == ACT_NONE ? __ldg(dy + i) : f.bwd(__ldg(y + i), __ldg(dy + i));
        const float g = dz - __ldg(dbeta + c) * inv_m - xhat * (__ldg(dgamma + c) * inv_m);
        dx[i] = __ldg(gamma + c) * is * g;
    }
}
