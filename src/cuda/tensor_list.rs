//! Multi-tensor launches (kernels/tensor_list.cuh): one launch for a list of up to 64 tensors, the list passed
//! as a kernel parameter, so a training step that runs them copies nothing from the host. Used by Adam
//! (`adam_step_f32`, `adam_step_sched_f32`), the gradient sums (`add_list_f32`) and fp16's unscale
//! (`unscale_list_f32`).

use anyhow::Result;

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;

/// Tensors per launch (TENSOR_LIST_MAX in kernels/tensor_list.cuh).
const LIST_MAX: usize = 64;
/// Elements per block: 16 for each of its 256 threads.
const CHUNK: usize = 4096;
const BLOCK: u32 = 256;

/// The Rust twin of kernels/tensor_list.cuh's `TensorList`: same fields in the same order, `#[repr(C)]`, no
/// padding (bytemuck's `Pod` derive refuses padding), and both sides assert its size.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TensorList {
    ptr: [[u64; LIST_MAX]; SLOTS],
    size: [i32; LIST_MAX],
    first_chunk: [i32; LIST_MAX + 1],
    ntensors: i32,
}
const _: () = assert!(std::mem::size_of::<TensorList>() == 2568);

/// Addresses per tensor (TENSOR_LIST_SLOTS).
const SLOTS: usize = 4;

/// One tensor of a list: the addresses its kernel reads and writes, in the kernel's slot order (0 where it uses
/// fewer), and its element count.
pub(super) struct Entry {
    pub ptrs: [u64; SLOTS],
    pub n: usize,
}

/// The chunk table of a multi-tensor launch: `first_chunk[t]` is the first chunk of `chunk` elements of tensor
/// t, and the entry after the last tensor is the number of chunks, which is returned.
fn chunk_table(
    sizes: impl IntoIterator<Item = usize>,
    chunk: usize,
    first_chunk: &mut [i32],
) -> Result<usize> {
    let mut chunks = 0usize;
    let mut t = 0;
    for n in sizes {
        first_chunk[t] = n_i32(chunks, "multi-tensor chunks")?;
        chunks += n.div_ceil(chunk);
        t += 1;
    }
    first_chunk[t] = n_i32(chunks, "multi-tensor chunks")?;
    Ok(chunks)
}

/// Runs `kernel(TensorList, chunk_len, extra...)` over `entries`, one launch per 64 of them (none for a group
/// whose tensors are all empty).
pub(super) fn launch(be: &CudaBackend, kernel: &str, entries: &[Entry], extra: &[A]) -> Result<()> {
    for group in entries.chunks(LIST_MAX) {
        let mut list: TensorList = bytemuck::Zeroable::zeroed();
        let chunks = chunk_table(group.iter().map(|e| e.n), CHUNK, &mut list.first_chunk)?;
        if chunks == 0 {
            continue;
        }
        for (t, e) in group.iter().enumerate() {
            for (slot, &p) in e.ptrs.iter().enumerate() {
                list.ptr[slot][t] = p;
            }
            list.size[t] = n_i32(e.n, kernel)?;
        }
        list.ntensors = group.len() as i32;
        let mut args = vec![
            A::Struct("TensorList", bytemuck::bytes_of(&list)),
            A::I32(CHUNK as i32),
        ];
        args.extend_from_slice(extra);
        be.launch(kernel, LaunchCfg::blocks(chunks as u32, BLOCK), &args)?;
    }
    Ok(())
}
