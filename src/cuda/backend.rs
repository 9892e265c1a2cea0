//! `CudaBackend`: the [`Backend`] implementation on top of a [`GpuRuntime`]. This file holds the memory side
//! (tensor allocation through the caching allocator, host transfers, pointer access), the capabilities only
//! this backend has (Adam's device-side step counter, graph capture), and routes every op to its family file,
//! where the launch code lives next to nothing but its own kernel's contract.

use std::sync::{Arc, Weak};

use anyhow::{bail, ensure, Result};

use super::alloc::{AllocStats, CachingAllocator, DeviceAlloc, MemPool};
use super::operand_cache::OperandCache;
use super::runtime::{GpuRuntime, KernelArg, LaunchCfg};
use super::tuning::GemmTuning;
use super::{activation, batchnorm, conv, elementwise, linear, loss, optim, random, shape};
use super::{pool, resize};
use crate::backend::*;
use crate::tensor::{numel, DeviceMemory, GpuBuffer, Storage, Tensor};

impl DeviceMemory for DeviceAlloc {
    fn ptr(&self) -> u64 {
        DeviceAlloc::ptr(self)
    }
}

pub struct CudaBackend {
    rt: Arc<dyn GpuRuntime>,
    alloc: Arc<CachingAllocator>,
    /// Our own Arc, so `&self` methods can stamp new tensors with their backend.
    me: Weak<CudaBackend>,
    /// Fill new outputs with NaN so a kernel that skips an element is caught (debug builds; env
    /// GAN_ENGINE_POISON=0/1 overrides).
    poison: bool,
    /// Convolution arithmetic, a [`conv::Precision`] as u8 (settable through `&self`: backends are shared).
    precision: std::sync::atomic::AtomicU8,
    /// (address, count) of the arrival counters handed out by [`arrival_counters`](Self::arrival_counters).
    arrivals: std::sync::Mutex<(u64, usize)>,
    /// The GEMM launch choices overridden for a tuning run (none by default).
    tuning: std::sync::Mutex<GemmTuning>,
    /// Channels-last copies of convolution operands kept for reuse ([`super::operand_cache`]).
    operands: std::sync::Mutex<OperandCache>,
    /// Values the host has asked to convert to channels-last so far (a graph's replays not counted).
    converted: std::sync::atomic::AtomicU64,
}

/// Arrival counters allocated at the first request; enough for the batch norms of any usual network.
const MIN_ARRIVAL_COUNTERS: usize = 1024;

impl CudaBackend {
    pub fn new(rt: Arc<dyn GpuRuntime>) -> Arc<CudaBackend> {
        let poison = match std::env::var("GAN_ENGINE_POISON").ok().as_deref() {
            Some("0") => false,
            Some(_) => true,
            None => cfg!(debug_assertions),
        };
        Arc::new_cyclic(|me| CudaBackend {
            alloc: CachingAllocator::new(rt.clone()),
            rt,
            me: me.clone(),
            poison,
            precision: std::sync::atomic::AtomicU8::new(0),
            arrivals: std::sync::Mutex::new((0, 0)),
            tuning: std::sync::Mutex::new(GemmTuning::default()),
            operands: std::sync::Mutex::new(OperandCache::default()),
            converted: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The address of `n` u32 arrival counters for "last block done" reductions (`last_block_to_arrive` in
    /// kernels/common.cuh). They are zero, and every kernel that uses them leaves them zero, so a launch needs no
    /// memset first. One set serves every launch: launches run in stream order, so no two use it at once.
    ///
    /// The set grows (outside a graph capture only) when a launch needs more than it has. It is raw driver memory,
    /// outside the caching allocator, so a graph's private pool never holds it.
    pub(crate) fn arrival_counters(&self, n: usize) -> Result<u64> {
        let mut a = self.arrivals.lock().unwrap();
        if n <= a.1 {
            return Ok(a.0);
        }
        ensure!(
            !self.rt.is_capturing(),
            "{n} arrival counters were first needed during a CUDA graph capture; run the captured work once \
             eagerly before capturing it"
        );
        let count = n.next_power_of_two().max(MIN_ARRIVAL_COUNTERS);
        let ptr = self.rt.alloc(count * 4)?;
        if let Err(e) = self.rt.memset_zero(ptr, count * 4) {
            self.rt.free(ptr);
            return Err(e);
        }
        if a.1 > 0 {
            // Launches already queued may still count in the old set.
            self.rt.synchronize()?;
            self.rt.free(a.0);
        }
        *a = (ptr, count);
        Ok(ptr)
    }

    /// The convolutions' operand precision (F32 unless set; see [`conv::Precision`]).
    pub fn precision(&self) -> conv::Precision {
        conv::Precision::from_u8(self.precision.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set_precision(&self, p: conv::Precision) {
        self.precision
            .store(p.to_u8(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The GEMM launch choices a tuning run overrides ([`super::tuning`]).
    pub fn gemm_tuning(&self) -> GemmTuning {
        *self.tuning.lock().unwrap()
    }

    pub fn set_gemm_tuning(&self, t: GemmTuning) {
        *self.tuning.lock().unwrap() = t;
        self.forget_operands();
    }

    /// The channels-last copy of `t` viewed as `view` ([n, c, hw]) in `format` that an earlier conversion kept
    /// ([`super::operand_cache`]), if any.
    pub(super) fn kept_operand(
        &self,
        t: &Tensor,
        view: [usize; 3],
        format: &str,
    ) -> Result<Option<Arc<dyn DeviceMemory>>> {
        let source = &self.buffer(t)?.mem;
        Ok(self.operands.lock().unwrap().find(source, view, format))
    }

    /// Keeps `copy`, the channels-last conversion of `t` viewed as `view` in `format`, for the next GEMM that
    /// reads it, until `t` is written or dropped; unless the tuning run turned reuse off.
    pub(super) fn keep_operand(
        &self,
        t: &Tensor,
        view: [usize; 3],
        format: &'static str,
        copy: Arc<dyn DeviceMemory>,
    ) -> Result<()> {
        if self.gemm_tuning().reuse.unwrap_or(true) {
            let source = &self.buffer(t)?.mem;
            self.operands
                .lock()
                .unwrap()
                .keep(source, view, format, copy);
        }
        Ok(())
    }

    /// Counts `n` values converted to channels-last.
    pub(super) fn count_converted(&self, n: usize) {
        self.converted
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Operand copies kept now (tests).
    pub fn kept_operands(&self) -> usize {
        self.operands.lock().unwrap().len()
    }

    /// Forgets every kept operand copy (their sources may change without an in-place op this backend sees).
    pub fn forget_operands(&self) {
        self.operands.lock().unwrap().clear();
    }

    /// This backend as a [`crate::device::Device`].
    pub fn device(self: &Arc<Self>) -> crate::device::Device {
        crate::device::Device::Cuda(self.clone())
    }

    pub fn runtime(&self) -> &Arc<dyn GpuRuntime> {
        &self.rt
    }

    pub fn is_emulated(&self) -> bool {
        self.rt.is_emulated()
    }

    /// The caching allocator (graph capture opens private pools in it).
    pub fn allocator(&self) -> &Arc<CachingAllocator> {
        &self.alloc
    }

    pub fn alloc_stats(&self) -> AllocStats {
        self.alloc.stats()
    }

    /// Gives every cached (free) block back to the driver.
    pub fn empty_cache(&self) {
        self.alloc.empty_cache()
    }

    pub fn set_poison(&mut self, on: bool) {
        self.poison = on;
    }

    fn wrap(&self, mem: DeviceAlloc, shape: &[usize]) -> Tensor {
        let backend: Arc<dyn Backend> = self.me.upgrade().expect("CudaBackend used after drop");
        Tensor::from_storage(
            Storage::Gpu(GpuBuffer {
                backend,
                mem: Arc::new(mem),
            }),
            shape,
        )
    }

    /// New uninitialised output tensor from the caching allocator; filled with NaN when poisoning is on.
    pub fn alloc(&self, shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape);
        let mem = self.alloc.alloc(n * 4)?;
        let t = self.wrap(mem, shape);
        if self.poison && n > 0 {
            elementwise::fill(self, &t, f32::NAN)?;
        }
        Ok(t)
    }

    pub fn alloc_zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape);
        let mem = self.alloc.alloc(n * 4)?;
        if n > 0 {
            self.rt.memset_zero(mem.ptr(), n * 4)?;
        }
        Ok(self.wrap(mem, shape))
    }

    /// Raw device memory (not a tensor) of `bytes` bytes, e.g. for kernel-side tables and scratch.
    pub fn alloc_bytes(&self, bytes: usize) -> Result<DeviceAlloc> {
        self.alloc.alloc(bytes)
    }

    fn buffer<'t>(&self, t: &'t Tensor) -> Result<&'t GpuBuffer> {
        match t.storage() {
            Storage::Gpu(b)
                if std::ptr::eq(
                    Arc::as_ptr(&b.backend) as *const u8,
                    self as *const Self as *const u8,
                ) =>
            {
                Ok(b)
            }
            _ => bail!(
                "tensor {:?} is on {}, not on this backend ({}); move it with .to_device()",
                t.shape(),
                t.device().name(),
                self.rt.name()
            ),
        }
    }

    /// A tensor's device memory (shared with it); error if the tensor is not on this backend.
    pub(super) fn memory(&self, t: &Tensor) -> Result<Arc<dyn DeviceMemory>> {
        Ok(self.buffer(t)?.mem.clone())
    }

    /// Device address of a tensor's data; error if the tensor is not on this backend.
    pub fn ptr(&self, t: &Tensor) -> Result<u64> {
        Ok(self.buffer(t)?.mem.ptr())
    }

    /// Device address of a tensor about to be written in place. Like the CPU storage, GPU storage is
    /// copy-on-write: if another tensor shares the allocation (a clone, a reshape) the data is copied first so
    /// the write cannot leak into it.
    pub fn ptr_mut(&self, t: &mut Tensor) -> Result<u64> {
        let shared = Arc::strong_count(&self.buffer(t)?.mem) > 1;
        if shared {
            let src = self.ptr(t)?;
            let n = t.numel();
            let mem = self.alloc.alloc(n * 4)?;
            if n > 0 {
                self.rt.dtod(mem.ptr(), src, n * 4)?;
            }
            let shape = t.shape().to_vec();
            *t = self.wrap(mem, &shape);
        }
        let mem = &self.buffer(t)?.mem;
        self.operands.lock().unwrap().forget(mem);
        Ok(mem.ptr())
    }

    /// Launches a kernel (arguments checked against its parsed signature; errors name the kernel).
    pub fn launch(&self, kernel: &str, cfg: LaunchCfg, args: &[KernelArg<'_>]) -> Result<()> {
        self.rt.launch(kernel, cfg, args)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.rt.synchronize()
    }

    /// Device time of the work `enqueue` queues, from CUDA events; None (and `enqueue` not called) on the
    /// emulation. See [`super::runtime::GpuRuntime::device_time`].
    pub fn device_time(
        &self,
        enqueue: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<std::time::Duration>> {
        self.rt.device_time(enqueue)
    }

    /// Copies raw bytes to the device (tables for kernels).
    pub fn htod_bytes(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.rt.htod(dst, src)
    }
}

/// `n` as a kernel's `int` element count, or an error: kernels index with 32-bit ints.
pub fn n_i32(n: usize, what: &str) -> Result<i32> {
    ensure!(
        n <= i32::MAX as usize,
        "{what}: {n} elements is more than the kernels' 32-bit indexing supports"
    );
    Ok(n as i32)
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.rt.name()
    }

    fn precision(&self) -> Precision {
        CudaBackend::precision(self)
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.alloc_zeros(shape)
    }

    fn from_host(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        ensure!(
            data.len() == numel(shape),
            "{} values for shape {:?}",
            data.len(),
            shape
        );
        let mem = self.alloc.alloc(data.len() * 4)?;
        if !data.is_empty() {
            self.rt.htod(mem.ptr(), bytemuck::cast_slice(data))?;
        }
        Ok(self.wrap(mem, shape))
    }

    fn to_host(&self, x: &Tensor) -> Result<Vec<f32>> {
        let p = self.ptr(x)?;
        let mut v = vec![0f32; x.numel()];
        if !v.is_empty() {
            self.rt.dtoh(p, bytemuck::cast_slice_mut(&mut v))?;
        }
        Ok(v)
    }

    fn randn(
        &self,
        shape: &[usize],
        mean: f32,
        std: f32,
        seed: u64,
        offset: u64,
    ) -> Result<Tensor> {
        random::randn(self, shape, mean, std, seed, offset)
    }

    fn rand_uniform(
        &self,
        shape: &[usize],
        lo: f32,
        hi: f32,
        seed: u64,
        offset: u64,
    ) -> Result<Tensor> {
        random::rand_uniform(self, shape, lo, hi, seed, offset)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        elementwise::add(self, a, b)
    }

    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()> {
        elementwise::add_assign(self, a, b)
    }

    fn add_each(&self, pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<Tensor>> {
        elementwise::add_each(self, pairs)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        elementwise::mul(self, a, b)
    }

    fn affine_assign(&self, x: &mut Tensor, alpha: f32, beta: f32) -> Result<()> {
        elementwise::affine_assign(self, x, alpha, beta)
    }

    fn affine(&self, a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        elementwise::affine(self, a, alpha, beta)
    }

    fn powf(&self, a: &Tensor, p: f32) -> Result<Tensor> {
        elementwise::powf(self, a, p)
    }

    fn sum(&self, a: &Tensor) -> Result<Tensor> {
        elementwise::sum(self, a)
    }

    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        activation::activation(self, x, act)
    }

    fn activation_backward(&self, y: &Tensor, dy: &Tensor, act: Activation) -> Result<Tensor> {
        activation::activation_backward(self, y, dy, act)
    }

    fn conv2d(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        Ok(conv::conv2d(self, x, w, p, false, None)?.0)
    }

    fn conv2d_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        Ok(conv::conv2d(self, x, w, p, false, Some(act))?.0)
    }

    fn conv2d_with_stats(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
    ) -> Result<(Tensor, Option<Tensor>)> {
        conv::conv2d(self, x, w, p, true, None)
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        Ok(conv::conv2d_backward_data(self, dy, w, x_shape, p, false, None)?.0)
    }

    fn conv2d_backward_data_act(
        &self,
        dy: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Activation,
        y: &Tensor,
    ) -> Result<Tensor> {
        let x_shape = y.dims4("conv2d_backward_data_act y")?;
        Ok(conv::conv2d_backward_data(self, dy, w, x_shape, p, false, Some((act, y)))?.0)
    }

    fn conv2d_backward_data_with_stats(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<(Tensor, Option<Tensor>)> {
        conv::conv2d_backward_data(self, dy, w, x_shape, p, true, None)
    }

    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        conv::conv2d_backward_weight(self, x, dy, w_shape, p)
    }

    fn conv2d_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Option<(Activation, &Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        conv::conv2d_backward(self, dy, x, w, p, act)
    }

    fn conv_transpose2d_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
    ) -> Result<(Tensor, Tensor)> {
        conv::conv_transpose2d_backward(self, dy, x, w, p)
    }

    fn batch_norm_train(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStatsMut<'_>,
        act: Option<Activation>,
    ) -> Result<BatchNormOut> {
        batchnorm::batch_norm_train(self, x, affine, running, act)
    }

    fn batch_norm_train_from_parts(
        &self,
        x: &Tensor,
        parts: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStatsMut<'_>,
        act: Option<Activation>,
    ) -> Result<BatchNormOut> {
        batchnorm::batch_norm_train_from_parts(self, x, parts, affine, running, act)
    }

    fn batch_norm_eval(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStats<'_>,
        act: Option<Activation>,
    ) -> Result<Tensor> {
        batchnorm::batch_norm_eval(self, x, affine, running, act)
    }

    fn batch_norm_backward(
        &self,
        saved: BatchNormSaved<'_>,
        dy: &Tensor,
    ) -> Result<BatchNormGrads> {
        batchnorm::batch_norm_backward(self, saved, dy)
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        linear::linear(self, x, w, b)
    }

    fn linear_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        need: LinearNeed,
    ) -> Result<LinearGrads> {
        linear::linear_backward(self, x, w, dy, need)
    }

    fn bce_with_logits(&self, logits: &Tensor, target: f32) -> Result<(Tensor, Tensor)> {
        loss::bce_with_logits(self, logits, target)
    }

    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor> {
        shape::concat_channels(self, xs)
    }

    fn slice_channels(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        shape::slice_channels(self, x, start, len)
    }

    fn adam_step(&self, slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()> {
        optim::adam_step(self, slots, h)
    }

    fn unscale_grads(&self, grads: &[&Tensor], inv_scale: f32) -> Result<(Vec<Tensor>, bool)> {
        optim::unscale_grads(self, grads, inv_scale)
    }

    // ---- pooling and bilinear resize ----
    fn max_pool2d(&self, x: &Tensor, p: Pool2d) -> Result<Tensor> {
        pool::max_pool2d(self, x, p)
    }

    fn max_pool2d_backward(&self, x: &Tensor, dy: &Tensor, p: Pool2d) -> Result<Tensor> {
        pool::max_pool2d_backward(self, x, dy, p)
    }

    fn avg_pool2d(&self, x: &Tensor, p: Pool2d, count_include_pad: bool) -> Result<Tensor> {
        pool::avg_pool2d(self, x, p, count_include_pad)
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        p: Pool2d,
        count_include_pad: bool,
    ) -> Result<Tensor> {
        pool::avg_pool2d_backward(self, dy, x_shape, p, count_include_pad)
    }

    fn resize_bilinear(
        &self,
        x: &Tensor,
        out_h: usize,
        out_w: usize,
        mode: ResizeMode,
    ) -> Result<Tensor> {
        resize::resize_bilinear(self, x, out_h, out_w, mode)
    }

    fn resize_bilinear_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        mode: ResizeMode,
    ) -> Result<Tensor> {
        resize::resize_bilinear_backward(self, dy, x_shape, mode)
    }

    fn upsample_nearest(&self, x: &Tensor, scale: usize) -> Result<Tensor> {
        resize::upsample_nearest(self, x, scale)
    }

    fn upsample_nearest_backward(&self, dy: &Tensor, scale: usize) -> Result<Tensor> {
        resize::upsample_nearest_backward(self, dy, scale)
    }

    fn resize_conv_weight(&self, w: &Tensor) -> Result<Tensor> {
        resize::resize_conv_weight(self, w)
    }

    fn resize_conv_weight_backward(&self, dk: &Tensor) -> Result<Tensor> {
        resize::resize_conv_weight_backward(self, dk)
    }

    // ---- WGAN training: weight clipping and RMSprop; the generator average ----------------------------------
    fn clamp_(&self, xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()> {
        optim::clamp_(self, xs, lo, hi)
    }

    fn ema_(&self, avgs: &mut [&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()> {
        optim::ema_(self, avgs, xs, decay)
    }

    fn rmsprop_step(&self, slots: &mut [RmsPropSlot<'_>], h: RmsPropHyper) -> Result<()> {
        optim::rmsprop_step(self, slots, h)
    }

    fn adam_counter(&self, done: u64) -> Result<Option<AdamCounter>> {
        let schedule = optim::AdamSchedule::new(self, done)?;
        Ok(Some(AdamCounter(Box::new(schedule))))
    }

    fn adam_step_counted(
        &self,
        slots: &mut [AdamSlot<'_>],
        h: AdamHyper,
        counter: &AdamCounter,
    ) -> Result<()> {
        let Some(schedule) = counter.0.downcast_ref::<optim::AdamSchedule>() else {
            bail!("Adam: the step counter was made by another backend");
        };
        optim::adam_step_scheduled(self, slots, h, schedule)
    }

    fn graph_capture(&self) -> Option<&dyn GraphCapture> {
        Some(self)
    }

    fn launch_counts(&self) -> Option<Vec<(&'static str, u64)>> {
        Some(self.rt.launch_counts())
    }

    fn relayout_values(&self) -> Option<u64> {
        Some(self.converted.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn synchronize(&self) -> Result<()> {
        self.rt.synchronize()
    }

    fn device_time(
        &self,
        enqueue: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<std::time::Duration>> {
        self.rt.device_time(enqueue)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let (ptr, count) = *self.arrivals.lock().unwrap();
        if count > 0 {
            self.rt.free(ptr);
        }
    }
}

/// A private pool of the caching allocator, retired (its blocks handed back) when the handle drops.
struct PoolGuard {
    alloc: Arc<CachingAllocator>,
    pool: Arc<MemPool>,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        self.alloc.retire_pool(&self.pool);
    }
}

impl GraphCapture for CudaBackend {
    fn alloc_uninit(&self, shape: &[usize]) -> Result<Tensor> {
        self.alloc(shape)
    }

    fn address(&self, t: &Tensor) -> Result<u64> {
        self.ptr(t)
    }

    fn copy_into(&self, dst: &Tensor, src: &Tensor) -> Result<()> {
        ensure!(
            dst.numel() == src.numel(),
            "copy of {:?} into {:?}: sizes differ",
            src.shape(),
            dst.shape()
        );
        let mem = &self.buffer(dst)?.mem;
        self.operands.lock().unwrap().forget(mem);
        let p = mem.ptr();
        match self.ptr(src) {
            Ok(s) => self.rt.dtod(p, s, src.numel() * 4),
            Err(_) => self.htod_bytes(p, bytemuck::cast_slice(&src.to_vec()?)),
        }
    }

    fn device_copies(&self) -> u64 {
        self.rt.transfer_counts().dtod
    }

    fn open_pool(&self) -> Result<PoolHandle> {
        let pool = self.alloc.open_pool()?;
        Ok(PoolHandle(Box::new(PoolGuard {
            alloc: self.alloc.clone(),
            pool,
        })))
    }

    fn close_pool(&self) {
        self.alloc.close_pool()
    }

    // A copy kept from before the capture would be read by the graph but never made again by it, and one made
    // in the capture is only valid where the replay is: both are forgotten.
    fn begin_capture(&self) -> Result<()> {
        self.forget_operands();
        self.rt.begin_capture()
    }

    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
        self.forget_operands();
        Ok(Box::new(ForgetOnReplay {
            graph: self.rt.end_capture()?,
            be: self.me.clone(),
        }))
    }
}

/// A captured graph whose replays make the backend forget its kept operand copies: a replay writes the weights
/// and activations it recorded without an op the backend sees.
struct ForgetOnReplay {
    graph: Box<dyn DeviceGraph>,
    be: Weak<CudaBackend>,
}

impl DeviceGraph for ForgetOnReplay {
    fn replay(&self) -> Result<()> {
        if let Some(be) = self.be.upgrade() {
            be.forget_operands();
        }
        self.graph.replay()
    }

    fn launches(&self) -> usize {
        self.graph.launches()
    }
}
