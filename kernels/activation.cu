// activation.cu — ReLU, LeakyReLU, tanh, sigmoid: forward y = f(x) and backward dx = dy * f'(x), where f' is
// written in terms of the forward output y (what the autograd op keeps):
//   relu:    dy * (y > 0)            leaky: dy * (y > 0 ? 1 : slope)    (slope >= 0, so y > 0 <=> x > 0)
//   tanh:    dy * (1 - y^2)          sigmoid: dy * y * (1 - y)
//
// One templated grid-stride loop per direction; the entry points only pick the function (act.cuh, shared with
// batchnorm.cu's fused passes). float4 vectorised like elementwise.cu. No inline PTX.
#include "common.cuh"
#include "act.cuh"


template <class F>
__device__ __forceinline__ void act_forward(float* __restrict__ y, const float* __restrict__ x, int n, F f) {
    const long long n4 = n >> 2;
    for (long long i = global_thread_id(); i < n4; i += grid_stride()) {
        const float4 v = reinterpret_cast<const float4*>(x)[i];
        reinterpret_cast<float4*>(y)[i] = make_float4(f.fwd(v.x), f.fwd(v.y), f.fwd(v.z), f.fwd(v.w));
    }
    for (long long i = n4 * 4 + global_thread_id(); i < n; i += grid_stride()) y[i] = f.fwd(x[i]);
}

template <class F>
__device__ __forceinline__ void act_backward(float* __restrict__ dx, const float* __restrict__ y,
                                             const float* __restrict__ dy, int n, F f) {
    const long long n4 = n >> 2;
    for (long long i = global_thread_id(); i < n4; i += grid_stride()) {
        const float4 a = reinterpret_cast<const float4*>(y)[i];
        const float4 g = reinterpret_cast<const float4*>(dy)[i];
        reinterpret_cast<float4*>(dx)[i] =
            make_float4(f.bwd(a.x, g.x), f.bwd(a.y, g.y), f.bwd(a.z, g.z), f.bwd(a.w, g.w));
    }
    for (long long i = n4 * 4 + global_thread_id(); i < n; i += grid_stride()) dx[i] = f.bwd(y[i], dy[i]);
}

extern "C" __global__ void relu_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    act_forward(y, x, n, Relu{0.0f});
}
extern "C" __global__ void relu_bwd_f32(float* __restrict__ dx, const float* __restrict__ y,
                                        const float* __restrict__ dy, int n) {
    act_backward(dx, y, dy, n, Relu{0.0f});
}

extern "C" __global__ void leaky_relu_fwd_f32(float* __restrict__ y, const float* __restrict__ x, float slope,
                                              int n) {
    act_forward(y, x, n, LeakyRelu{slope});
}
extern "C" __global__ void leaky_relu_bwd_f32(float* __restrict__ dx, const float* __restrict__ y,
                                              const float* __restrict__ dy, float slope, int n) {
    act_backward(dx, y, dy, n, LeakyRelu{slope});
}

extern "C" __global__ void tanh_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    act_forward(y, x, n, Tanh{0.0f});
}
extern "C" __global__ void tanh_bwd_f32(float* __restrict__ dx, const float* __restrict__ y,
                                        const float* __restrict__ dy, int n) {
    act_backward(dx, y, dy, n, Tanh{0.0f});
}

extern "C" __global__ void sigmoid_fwd_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    act_forward(y, x, n, Sigmoid{0.0f});
}
extern "C" __global__ void sigmoid_bwd_f32(float* __restrict__ dx, const float* __restrict__ y,
                                           const float* __restrict__ dy, int n) {
    act_backward(dx, y, dy, n, Sigmoid{0.0f});
}
