// act.cuh — the pointwise activations, shared by activation.cu (one kernel per function) and batchnorm.cu
// (batch norm with the activation fused into its passes). Each has fwd(x) and bwd(y, dy): the derivative is
// written through the forward output y, which is what the autograd ops keep.
#pragma once

// ReLU tests `<= 0` rather than `> 0` so that a NaN passes through (forward) and keeps its gradient
// (backward), as PyTorch's relu and threshold_backward do: a diverging run must show NaN, not silent zeros.
struct Relu {
    float slope;
    __device__ __forceinline__ float fwd(float x) const { return x <= 0.0f ? 0.0f : x; }
    __device__ __forceinline__ float bwd(float y, float dy) const { return y <= 0.0f ? 0.0f : dy; }
};
struct LeakyRelu {
    float slope;
    __device__ __forceinline__ float fwd(float x) const { return x > 0.0f ? x : slope * x; }
    __device__ __forceinline__ float bwd(float y, float dy) const { return y > 0.0f ? dy : slope * dy; }
};
struct Tanh {
    float slope;
    __device__ __forceinline__ float fwd(float x) const { return tanhf(x); }
    __device__ __forceinline__ float bwd(float y, float dy) const { return dy * (1.0f - y * y); }
};
struct Sigmoid {
    float slope;
    // Written so that exp never overflows: for x < 0 use e^x / (1 + e^x).
    __device__ __forceinline__ float fwd(float x) const {
        if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
        const float e = expf(x);
        return e / (1.0f + e);
    }
    __device__ __forceinline__ float bwd(float y, float dy) const { return dy * y * (1.0f - y); }
};

// The activation as a run-time value, for the fused batch-norm passes: one kernel serves every activation, and
// the branch is uniform across the grid. Codes as `act_code` in src/cuda/batchnorm.rs.
enum ActKind { ACT_NONE = 0, ACT_RELU = 1, ACT_LEAKY_RELU = 2, ACT_TANH = 3, ACT_SIGMOID = 4 };

struct AnyAct {
    int kind;
    float slope;
    __device__ __forceinline__ float fwd(float x) const {
        switch (kind) {
            case ACT_RELU: return Relu{0.0f}.fwd(x);
            case ACT_LEAKY_RELU: return LeakyRelu{slope}.fwd(x);
            case ACT_TANH: return Tanh{0.0f}.fwd(x);
            case ACT_SIGMOID: return Sigmoid{0.0f}.fwd(x);
            default: return x;
        }
    }
    __device__ __forceinline__ float bwd(float y, float dy) const {
        switch (kind) {
            case ACT_RELU: return Relu{0.0f}.bwd(y, dy);
            case ACT_LEAKY_RELU: return LeakyRelu{slope}.bwd(y, dy);
            case ACT_TANH: return Tanh{0.0f}.bwd(y, dy);
            case ACT_SIGMOID: return Sigmoid{0.0f}.bwd(y, dy);
            default: return dy;
        }
    }
};

// The activation a forward convolution applies to its output as it stores it, when no batch norm comes between
// them: ReLU and LeakyReLU only (a compare and a select in the epilogue, the same bits as their own kernels);
// the host fuses no other, and ACT_NONE stores the sum as it is.
__device__ __forceinline__ float epilogue_act(int act, float slope, float v) {
    if (act == ACT_RELU) return Relu{0.0f}.fwd(v);
    if (act == ACT_LEAKY_RELU) return LeakyRelu{slope}.fwd(v);
    return v;
}

// The gradient a backward-data convolution stores when the activation that made its input is folded into it:
// act'(y)·v, with y that activation's output at the same index (ReLU and LeakyReLU: a load, a compare and a
// select, the same bits as their own backward kernels). ACT_NONE stores v and reads nothing.
__device__ __forceinline__ float epilogue_act_bwd(int act, float slope, const float* __restrict__ y, size_t i,
                                                  float v) {
    if (act == ACT_RELU) return Relu{0.0f}.bwd(y[i], v);
    if (act == ACT_LEAKY_RELU) return LeakyRelu{slope}.bwd(y[i], v);
    return v;
}
