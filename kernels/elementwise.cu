// elementwise.cu — fill, add, add_assign, add_list (many sums in one launch), mul, affine, affine_assign, powf,
// and a deterministic full sum.
//
// The pointwise kernels are memory bound. They walk the data as float4 vectors (one 16-byte load per operand
// per thread: whole tensors from the caching allocator are 256-byte aligned) with a grid-stride loop, then handle
// the 0..3 leftover elements one by one.
//
// No inline PTX; everything here runs unchanged on the CPU emulation.
#include "common.cuh"
#include "tensor_list.cuh"

// y[i] = v. Used to poison fresh outputs with NaN in debug builds and to fill constants.
extern "C" __global__ void fill_f32(float* __restrict__ y, float v, int n) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) y[i] = v;
}

struct AddOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a * b; }
};

// y[i] = op(a[i], b[i]). No __restrict__: add_assign passes y == a.
template <class Op>
__device__ __forceinline__ void binary_map(float* y, const float* a, const float* b, int n, Op op) {
    const long long n4 = n >> 2;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (long long i = global_thread_id(); i < n4; i += grid_stride()) {
        const float4 u = a4[i], v = b4[i];
        y4[i] = make_float4(op(u.x, v.x), op(u.y, v.y), op(u.z, v.z), op(u.w, v.w));
    }
    for (long long i = n4 * 4 + global_thread_id(); i < n; i += grid_stride()) y[i] = op(a[i], b[i]);
}

extern "C" __global__ void add_f32(float* __restrict__ y, const float* __restrict__ a,
                                   const float* __restrict__ b, int n) {
    binary_map(y, a, b, n, AddOp());
}

// a += b (gradient accumulation).
extern "C" __global__ void add_assign_f32(float* a, const float* b, int n) { binary_map(a, a, b, n, AddOp()); }

// ---- the gradient sums of a parameter used twice in a step, all in one launch ----------------------------------
// D runs on the real and on the fake batch, so each of its parameters has two gradients, summed before the
// optimizer reads them: y_t = a_t + b_t for every tensor t of the list (tensor_list.cuh; slots y, a, b), block b
// adding chunk b.
// Each element is a + b as add_f32 computes it, so the sums are the same bits.
extern "C" __global__ void add_list_f32(const TensorList list, int chunk_len) {
    int t, start, end;
    list_chunk(list, chunk_len, t, start, end);
    float* y = list_ptr(list, 0, t);
    const float* a = list_ptr(list, 1, t);
    const float* b = list_ptr(list, 2, t);
    for (int i = start + (int)threadIdx.x; i < end; i += blockDim.x) y[i] = AddOp()(a[i], b[i]);
}

extern "C" __global__ void mul_f32(float* __restrict__ y, const float* __restrict__ a,
                                   const float* __restrict__ b, int n) {
    binary_map(y, a, b, n, MulOp());
}

// y = alpha * a + beta, rounded after the multiply and after the add like the CPU backend: the _rn intrinsics
// stop the compiler from contracting the two into one fma (which rounds once and so differs in the last bit).
__device__ __forceinline__ float affine1(float alpha, float x, float beta) {
    return __fadd_rn(__fmul_rn(alpha, x), beta);
}

extern "C" __global__ void affine_f32(float* __restrict__ y, const float* __restrict__ a, float alpha,
                                      float beta, int n) {
    const long long n4 = n >> 2;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (long long i = global_thread_id(); i < n4; i += grid_stride()) {
        const float4 u = a4[i];
        y4[i] = make_float4(affine1(alpha, u.x, beta), affine1(alpha, u.y, beta), affine1(alpha, u.z, beta),
                            affine1(alpha, u.w, beta));
    }
    for (long long i = n4 * 4 + global_thread_id(); i < n; i += grid_stride()) y[i] = affine1(alpha, a[i], beta);
}

// x = alpha * x + beta in place (batch norm's step counter: a training state that must keep its address).
extern "C" __global__ void affine_assign_f32(float* x, float alpha, float beta, int n) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) x[i] = affine1(alpha, x[i], beta);
}

// y = a^p (the gradient penalty's square root and its derivatives: a few values per sample, no vectorising).
extern "C" __global__ void powf_f32(float* __restrict__ y, const float* __restrict__ a, float p, int n) {
    for (long long i = global_thread_id(); i < n; i += grid_stride()) y[i] = powf(a[i], p);
}

// *y = sum of x[0..n). One launch: every block sums a grid-stride slice, the last block to finish adds the
// per-block partials in block order (see grid_sum_finish), so the result is the same on every run.
// blockDim.x must be a multiple of 32; `partials` has gridDim.x floats; `counter` is zero on entry and on exit.
extern "C" __global__ void sum_f32(float* __restrict__ y, const float* __restrict__ x, int n,
                                   float* __restrict__ partials, unsigned int* __restrict__ counter) {
    float acc = 0.0f;
    for (long long i = global_thread_id(); i < n; i += grid_stride()) acc += x[i];
    acc = block_sum(acc);
    grid_sum_finish(acc, partials, counter, y, 1.0f);
}
