// tensor_list.cuh — multi-tensor launches: one launch for a whole list of tensors (a model's parameters or
// gradients), the list passed in the kernel's parameters rather than in device memory, as PyTorch's
// multi_tensor_apply does. The tensors are cut into chunks of a fixed length and block b works on chunk b, where
// first_chunk[t] is tensor t's first chunk and first_chunk[ntensors] the number of chunks.
#pragma once

// Block b's tensor: the last one starting at or before b. A linear scan of at most a list's length, the same for
// every thread; empty tensors start where the next one does and are passed over.
__device__ __forceinline__ int list_tensor_of_block(const int* first_chunk, int ntensors) {
    const int b = (int)blockIdx.x;
    int t = 0;
    while (t + 1 < ntensors && first_chunk[t + 1] <= b) ++t;
    return t;
}

// Tensors per launch of the pointwise list kernels.
#define TENSOR_LIST_MAX 64

// For each tensor: an output y and up to two inputs a, b (unused ones are 0), and its element count.
// Mirrored by `TensorList` in src/cuda/tensor_list.rs (#[repr(C)], same field order); both sides assert the size.
struct TensorList {
    unsigned long long y[TENSOR_LIST_MAX];
    unsigned long long a[TENSOR_LIST_MAX];
    unsigned long long b[TENSOR_LIST_MAX];
    int size[TENSOR_LIST_MAX];
    int first_chunk[TENSOR_LIST_MAX + 1];
    int ntensors;
};
static_assert(sizeof(TensorList) == 2056, "TensorList layout differs from src/cuda/tensor_list.rs");

// This block's range [start, end) of the elements of tensor t.
__device__ __forceinline__ void list_chunk(const TensorList& list, int chunk_len, int& t, int& start, int& end) {
    t = list_tensor_of_block(list.first_chunk, list.ntensors);
    start = ((int)blockIdx.x - list.first_chunk[t]) * chunk_len;
    end = min(start + chunk_len, list.size[t]);
}
