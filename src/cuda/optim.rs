//! Launch code for kernels/optim.cu: multi-tensor Adam, one launch for all parameters (up to 64 tensors); fp16's
//! unscale of all gradients in one launch; RMSprop and weight clipping (WGAN) and the generator average
//! (`--g-ema`), one launch per tensor.
//!
//! Adam's tensors (addresses, sizes, first chunk of each) travel as a kernel parameter, a tensor list
//! (tensor_list.rs): gradients are fresh tensors every step and land in other blocks of the caching allocator, so
//! a table in device memory had to be uploaded by every step; a parameter is copied by the launch itself, and a
//! training step makes no host-to-device copy (tests/emu_train_step.rs holds that).

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::runtime::{KernelArg as A, LaunchCfg};
use super::tensor_list::{self, Entry};
use super::{CudaBackend, DeviceAlloc};
use crate::backend::{
    check_clamp, check_ema, ema_one_minus, AdamHyper, AdamSlot, RmsPropHyper, RmsPropSlot,
};
use crate::tensor::Tensor;

/// Threads per block of the per-tensor kernels.
const BLOCK: u32 = 256;

pub fn adam_step(be: &CudaBackend, slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()> {
    adam_launches(be, slots, h, None)
}

/// Adam's step counter and this step's bias corrections in device memory, for a training step captured as a
/// CUDA graph: a replay repeats the launch arguments of the capture, so nothing that changes from step to step
/// may be one. `adam_schedule_f32` advances the counter and computes the corrections on the device, bit for
/// bit as the host would (kernels/optim.cu).
pub struct AdamSchedule {
    /// [u64 step counter, f32 step_size, f32 sqrt(1 − β2^t)].
    mem: DeviceAlloc,
}

impl AdamSchedule {
    /// A schedule whose next step is `done + 1` (one host-to-device copy).
    pub fn new(be: &CudaBackend, done: u64) -> Result<AdamSchedule> {
        let mem = be.alloc_bytes(16)?;
        let mut init = [0u8; 16];
        init[..8].copy_from_slice(&done.to_ne_bytes());
        be.htod_bytes(mem.ptr(), &init)?;
        Ok(AdamSchedule { mem })
    }

    fn counter(&self) -> u64 {
        self.mem.ptr()
    }

    fn corrections(&self) -> u64 {
        self.mem.ptr() + 8
    }
}

/// [`adam_step`] with the step counter and bias corrections on the device (`h.step` is not used).
pub fn adam_step_scheduled(
    be: &CudaBackend,
    slots: &mut [AdamSlot<'_>],
    h: AdamHyper,
    schedule: &AdamSchedule,
) -> Result<()> {
    adam_launches(be, slots, h, Some(schedule))
}

fn adam_launches(
    be: &CudaBackend,
    slots: &mut [AdamSlot<'_>],
    h: AdamHyper,
    schedule: Option<&AdamSchedule>,
) -> Result<()> {
    h.check()?;
    // Check every slot (shapes, devices, sizes) before updating any.
    for (i, s) in slots.iter().enumerate() {
        let shape = s.param.shape();
        for (what, t) in [("grad", s.grad), ("m", &*s.m), ("v", &*s.v)] {
            ensure!(
                t.shape() == shape,
                "adam slot {i}: {what} shape {:?} differs from param shape {shape:?}",
                t.shape()
            );
            be.ptr(t)?;
        }
        be.ptr(s.param)?;
        n_i32(s.param.numel(), "adam")?;
    }
    // This step's bias corrections: arguments computed here, or device memory the schedule kernel writes.
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let corrections = [
        A::F32((h.lr as f64 / bc1) as f32),
        A::F32(bc2.sqrt() as f32),
    ];
    if let Some(s) = schedule {
        be.launch(
            "adam_schedule_f32",
            LaunchCfg::blocks(1, 32),
            &[
                A::Ptr(s.counter()),
                A::Ptr(s.corrections()),
                A::F32(h.lr),
                A::U64(h.beta1.to_bits()),
                A::U64(h.beta2.to_bits()),
            ],
        )?;
    }
    // In-place updates: copy-on-write first where a tensor shares its storage.
    let entries = slots
        .iter_mut()
        .map(|s| {
            Ok(Entry {
                ptrs: [
                    be.ptr_mut(s.param)?,
                    be.ptr(s.grad)?,
                    be.ptr_mut(s.m)?,
                    be.ptr_mut(s.v)?,
                ],
                n: s.param.numel(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut args = vec![
        // 1 − β in f64, then rounded: PyTorch's order (see AdamHyper).
        A::F32((1.0 - h.beta1) as f32),
        A::F32(h.beta2 as f32),
        A::F32((1.0 - h.beta2) as f32),
        A::F32(h.eps),
        A::F32(h.weight_decay),
    ];
    let kernel = match schedule {
        Some(s) => {
            args.push(A::Ptr(s.corrections()));
            "adam_step_sched_f32"
        }
        None => {
            args.extend(corrections);
            "adam_step_f32"
        }
    };
    tensor_list::launch(be, kernel, &entries, &args)?;
    Ok(())
}

/// GradScaler's unscale of every gradient in one launch (`unscale_list_f32`, 64 tensors a launch): fresh
/// tensors g · inv_scale, and whether any element came out Inf or NaN, from a flag the kernel raises (one value
/// read back, as PyTorch's GradScaler reads its found_inf).
pub fn unscale_grads(
    be: &CudaBackend,
    grads: &[&Tensor],
    inv_scale: f32,
) -> Result<(Vec<Tensor>, bool)> {
    for g in grads {
        be.ptr(g)?;
        n_i32(g.numel(), "unscale")?;
    }
    if grads.is_empty() {
        return Ok((Vec::new(), false));
    }
    let ys = grads
        .iter()
        .map(|g| be.alloc(g.shape()))
        .collect::<Result<Vec<_>>>()?;
    let entries = grads
        .iter()
        .zip(&ys)
        .map(|(g, y)| {
            Ok(Entry {
                ptrs: [be.ptr(y)?, be.ptr(g)?, 0, 0],
                n: g.numel(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let found_inf = be.alloc_zeros(&[1])?;
    let flag = A::Ptr(be.ptr(&found_inf)?);
    tensor_list::launch(be, "unscale_list_f32", &entries, &[A::F32(inv_scale), flag])?;
    Ok((ys, found_inf.scalar()? != 0.0))
}

// ---- WGAN training: weight clipping and RMSprop; the generator average --------------------------------------

/// WGAN weight clipping: every tensor clamped to [lo, hi] in place, one launch per tensor.
pub fn clamp_(be: &CudaBackend, xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()> {
    check_clamp(lo, hi)?;
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

/// The generator average of `train --g-ema`, one launch per tensor.
pub fn ema_(be: &CudaBackend, avgs: &mut [&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()> {
    check_ema(avgs, xs, decay)?;
    // Check every tensor (device, size) before writing any.
    for (a, x) in avgs.iter().zip(xs) {
        be.ptr(a)?;
        be.ptr(x)?;
        n_i32(a.numel(), "ema")?;
    }
    let omd = ema_one_minus(decay);
    for (a, x) in avgs.iter_mut().zip(xs) {
        let n = a.numel();
        let (pa, px) = (be.ptr_mut(a)?, be.ptr(x)?);
        if n > 0 {
            be.launch(
                "ema_f32",
                LaunchCfg::linear(n, BLOCK),
                &[
                    A::Ptr(pa),
                    A::Ptr(px),
                    A::F32(decay),
                    A::F32(omd),
                    A::I32(n as i32),
                ],
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
    h.check()?;
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
