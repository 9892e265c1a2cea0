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

// Tensors per launch, and addresses per tensor. The list is 2568 bytes, under the 4 KiB that kernel parameters
// may take on every architecture; longer lists take several launches.
#define TENSOR_LIST_MAX 64
#define TENSOR_LIST_SLOTS 4

// For each tensor: up to four addresses, whose meaning is the kernel's (an output and its inputs; Adam's
// parameter, gradient and two moments), 0 where a kernel uses fewer; and its element count.
// Mirrored by `TensorList` in src/cuda/tensor_list.rs (#[repr(C)], same field order); both sides assert the size.
struct TensorList {
    unsigned long long ptr[TENSOR_LIST_SLOTS][TENSOR_LIST_MAX];
    int size[TENSOR_LIST_MAX];
    int first_chunk[TENSOR_LIST_MAX + 1];
    int ntensors;
};
static_assert(sizeof(TensorList) == 2568, "TensorList layout differs from src/cuda/tensor_list.rs");

// Slot `slot` of tensor t as a float pointer.
__device__ __forceinline__ float* list_ptr(const TensorList& list, int slot, int t) {
    return reinterpret_cast<float*>(list.ptr[slot][t]);
}

// This block's range [start, end) of the elements of tensor t.
__device__ __forceinline__ void list_chunk(const TensorList& list, int chunk_len, int& t, int& start, int& end) {
    t = list_tensor_of_block(list.first_chunk, list.ntensors);
    start = ((int)blockIdx.x - list.first_chunk[t]) * chunk_len;
    end = min(start + chunk_len, list.size[t]);
}
