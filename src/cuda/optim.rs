//! Launch code for kernels/optim.cu: multi-tensor Adam, one launch for all parameters; RMSprop and weight
//! clipping (WGAN), one launch per tensor.
//!
//! The Adam kernel reads two device tables: per-tensor addresses (param, grad, m, v) and a chunk table (which
//! tensor and element range each block updates). Both are cached in the backend, one pair per tensor set (G's and
//! D's optimizers take turns on one backend). The chunk table depends only on the tensor sizes; the address table
//! is re-uploaded when an address changes. Gradients are fresh tensors every step and the caching allocator does
//! not hand them the same blocks each time, so in a DCGAN step each optimizer still uploads its address table
//! (a few hundred bytes): the one host-to-device copy per step left (benches/train.rs counts them).

use anyhow::{ensure, Result};

use super::alloc::DeviceAlloc;
use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::CudaBackend;
use crate::backend::{AdamHyper, AdamSlot, RmsPropHyper, RmsPropSlot};
use crate::tensor::Tensor;

/// Elements per block; 256 threads each update 16 of them.
const CHUNK: usize = 4096;
const BLOCK: u32 = 256;

/// The device tables of one optimizer's tensor set (found again by its tensor sizes).
struct AdamTables {
    sizes: Vec<usize>,
    /// sizes (i32) ++ chunk_tensor (i32) ++ chunk_start (i32).
    chunk_table: DeviceAlloc,
    nchunks: usize,
    addrs: Vec<u64>,
    addr_table: Option<DeviceAlloc>,
}

/// Tables of the last few tensor sets, so that G's and D's optimizers, which alternate every step on one
/// backend, do not evict each other's tables (that cost four uploads per training step).
#[derive(Default)]
pub struct AdamCache {
    sets: Vec<AdamTables>,
}

/// Tensor sets kept; a GAN has two (G, D), a conditional one no more.
const ADAM_SETS: usize = 4;

pub fn adam_step(be: &CudaBackend, slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()> {
    ensure!(h.step >= 1, "adam: step is 1-based, got {}", h.step);
    ensure!(h.lr.is_finite() && h.lr >= 0.0, "adam: invalid lr {}", h.lr);
    for (name, b) in [("beta1", h.beta1), ("beta2", h.beta2)] {
        ensure!(
            (0.0..1.0).contains(&b),
            "adam: {name} must be in [0, 1), got {b}"
        );
    }
    ensure!(
        h.eps.is_finite() && h.eps >= 0.0 && h.weight_decay.is_finite() && h.weight_decay >= 0.0,
        "adam: invalid eps {} or weight_decay {}",
        h.eps,
        h.weight_decay
    );
    if slots.is_empty() {
        return Ok(());
    }
    let mut sizes = Vec::with_capacity(slots.len());
    let mut addrs = Vec::with_capacity(slots.len() * 4);
    for (i, s) in slots.iter_mut().enumerate() {
        let shape = s.param.shape().to_vec();
        for (what, t) in [("grad", s.grad), ("m", &*s.m), ("v", &*s.v)] {
            ensure!(
                t.shape() == shape.as_slice(),
                "adam slot {i}: {what} shape {:?} differs from param shape {shape:?}",
                t.shape()
            );
        }
        n_i32(shape.iter().product(), "adam")?;
        sizes.push(s.param.numel());
        let g = be.ptr(s.grad)?;
        // In-place updates: copy-on-write first if a tensor shares its storage.
        addrs.extend([be.ptr_mut(s.param)?, g, be.ptr_mut(s.m)?, be.ptr_mut(s.v)?]);
    }

    let mut cache = be.adam_cache.lock().unwrap();
    let cache = &mut *cache;
    let at = match cache.sets.iter().position(|t| t.sizes == sizes) {
        Some(i) => i,
        None => {
            let mut chunk_tensor = Vec::new();
            let mut chunk_start = Vec::new();
            for (t, &n) in sizes.iter().enumerate() {
                for start in (0..n).step_by(CHUNK) {
                    chunk_tensor.push(t as i32);
                    chunk_start.push(start as i32);
                }
            }
            let mut table: Vec<i32> = sizes.iter().map(|&n| n as i32).collect();
            table.extend(&chunk_tensor);
            table.extend(&chunk_start);
            let mem = be.alloc_bytes(table.len() * 4)?;
            be.htod_bytes(mem.ptr(), bytemuck::cast_slice(&table))?;
            if cache.sets.len() == ADAM_SETS {
                cache.sets.remove(0);
            }
            cache.sets.push(AdamTables {
                sizes,
                chunk_table: mem,
                nchunks: chunk_tensor.len(),
                addrs: Vec::new(),
                addr_table: None,
            });
            cache.sets.len() - 1
        }
    };
    let tables = &mut cache.sets[at];
    if tables.addrs != addrs || tables.addr_table.is_none() {
        let mem = match tables.addr_table.take() {
            Some(m) if m.bytes() == addrs.len() * 8 => m,
            _ => be.alloc_bytes(addrs.len() * 8)?,
        };
        be.htod_bytes(mem.ptr(), bytemuck::cast_slice(&addrs))?;
        tables.addr_table = Some(mem);
        tables.addrs = addrs;
    }
    let addr_table = tables.addr_table.as_ref().unwrap().ptr();
    let ntensors = tables.sizes.len() as u64;
    let nchunks = tables.nchunks;
    if nchunks == 0 {
        return Ok(()); // every tensor is empty
    }
    let chunks = tables.chunk_table.ptr();
    let (sizes_p, tensor_p, start_p) = (
        chunks,
        chunks + ntensors * 4,
        chunks + (ntensors + nchunks as u64) * 4,
    );
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    be.launch(
        "adam_step_f32",
        LaunchCfg::blocks(nchunks as u32, BLOCK),
        &[
            A::Ptr(addr_table),
            A::Ptr(sizes_p),
            A::Ptr(tensor_p),
            A::Ptr(start_p),
            A::I32(CHUNK as i32),
            // 1 − β in f64, then rounded: PyTorch's order (see AdamHyper).
            A::F32((1.0 - h.beta1) as f32),
            A::F32(h.beta2 as f32),
            A::F32((1.0 - h.beta2) as f32),
            A::F32(h.eps),
            A::F32(h.weight_decay),
            A::F32((h.lr as f64 / bc1) as f32),
            A::F32(bc2.sqrt() as f32),
        ],
    )
}

// ---- losses and schedules (issue 5.1): weight clipping and RMSprop ----------------------------------------------

/// WGAN weight clipping: every tensor clamped to [lo, hi] in place, one launch per tensor.
pub fn clamp_(be: &CudaBackend, xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()> {
    crate::cpu::rmsprop::check_bounds(lo, hi)?;
    // Check every tensor (device, size) before writing any.
    for x in xs.iter() {
        be.ptr(x)?;
        n_i32(x.numel(), "clamp")?;
    }
    for x in xs.iter_mut() {
        let n = x.numel();
        let p = be.ptr_mut(x)?;
        if n > 0 {
            be.launch(
                "clamp_f32",
                LaunchCfg::linear(n, BLOCK),
                &[A::Ptr(p), A::F32(lo), A::F32(hi), A::I32(n as i32)],
            )?;
        }
    }
    Ok(())
}

/// RMSprop (torch.optim.RMSprop defaults: no momentum, not centered), one launch per parameter tensor.
pub fn rmsprop_step(
    be: &CudaBackend,
    slots: &mut [RmsPropSlot<'_>],
    h: RmsPropHyper,
) -> Result<()> {
    crate::cpu::rmsprop::check_hyper(&h)?;
    for (i, s) in slots.iter().enumerate() {
        let shape = s.param.shape();
        for (what, t) in [("grad", s.grad), ("square_avg", &*s.square_avg)] {
            ensure!(
                t.shape() == shape,
                "rmsprop slot {i}: {what} shape {:?} differs from param shape {shape:?}",
                t.shape()
            );
        }
        n_i32(s.param.numel(), "rmsprop")?;
        be.ptr(s.param)?;
        be.ptr(s.grad)?;
        be.ptr(s.square_avg)?;
    }
    for s in slots.iter_mut() {
        let n = s.param.numel();
        let g = be.ptr(s.grad)?;
        let p = be.ptr_mut(s.param)?;
        let v = be.ptr_mut(s.square_avg)?;
        if n == 0 {
            continue;
        }
        be.launch(
            "rmsprop_step_f32",
            LaunchCfg::linear(n, BLOCK),
            &[
                A::Ptr(p),
                A::Ptr(g),
                A::Ptr(v),
                A::I32(n as i32),
                A::F32(h.lr),
                A::F32(h.alpha as f32),
                // 1 − α in f64, then rounded: PyTorch's order (see RmsPropHyper).
                A::F32((1.0 - h.alpha) as f32),
                A::F32(h.eps),
                A::F32(h.weight_decay),
            ],
        )?;
    }
    Ok(())
}
