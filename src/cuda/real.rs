//! The real-GPU runtime: cudarc's driver API on one stream, kernels compiled by NVRTC ([`super::nvrtc`]).
//!
//! Everything (copies, memsets, launches) goes on one non-blocking stream, so the stream order is the program
//! order and device memory can be reused as soon as the host drops it (the caching allocator relies on this).
//! Host-to-device copies from pageable memory return once the data is staged; device-to-host copies wait.
//!
//! Every launch's return code is checked. Faults inside a kernel surface at the next synchronising call; the
//! error then names the last kernel launched. `GAN_ENGINE_CUDA_SYNC=1` synchronises after every launch so the
//! failing kernel is named exactly.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{result as drv, sys, CudaContext, CudaGraph, CudaStream};

use super::nvrtc;
use super::runtime::{
    check_args, kernel_sig, kernels, ArgSlots, DeviceGraph, GpuRuntime, KernelArg, LaunchCfg,
    LaunchCounter, TransferCounts,
};

/// Raw driver handles are plain pointers; the driver API is thread-safe once the context is current.
#[derive(Clone, Copy)]
struct Func(sys::CUfunction);
// SAFETY: CUfunction handles may be used from any thread with the context bound.
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

#[derive(Clone, Copy)]
struct Module(sys::CUmodule);
// SAFETY: as above.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

struct Loaded {
    modules: HashMap<&'static str, Module>,
    /// kernel name -> (function, dynamic shared memory limit set so far)
    funcs: HashMap<&'static str, (Func, u32)>,
}

pub struct RealRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// NVRTC target, e.g. "sm_90" (CUBIN) or "compute_90" (PTX).
    target: String,
    loaded: Mutex<Loaded>,
    sync_each_launch: bool,
    /// True between begin_capture and end_capture.
    capturing: std::sync::atomic::AtomicBool,
    /// Kernel launches counted when the capture began.
    launches_at_capture: std::sync::atomic::AtomicU64,
    last_kernel: Mutex<&'static str>,
    counts: LaunchCounter,
}

impl RealRuntime {
    /// Opens GPU `ordinal` and compiles (or loads from the disk cache) every kernel module.
    pub fn new(ordinal: usize) -> Result<RealRuntime> {
        // A missing library is a panic inside cudarc, so probe first.
        // SAFETY: only probes dlopen with the candidate library names.
        if !unsafe { sys::is_culib_present() } {
            bail!("--device cuda: no CUDA driver (libcuda.so) found");
        }
        nvrtc::ensure_available()?;
        let count = CudaContext::device_count().map_err(|e| anyhow!("--device cuda: {e}"))?;
        if ordinal as i32 >= count {
            bail!("--device cuda:{ordinal}: only {count} CUDA device(s) visible");
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| anyhow!("--device cuda:{ordinal}: cannot create a context: {e}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("cuda:{ordinal}: cannot create a stream: {e}"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| anyhow!("cuda:{ordinal}: {e}"))?;
        let cc = major * 10 + minor;
        let target = nvrtc::target_for(cc)?;
        let dev_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let nv = nvrtc::version()?;
        let rt = RealRuntime {
            name: format!(
                "cuda:{ordinal} {dev_name} (sm_{cc}, NVRTC {}.{} -> {target})",
                nv.0, nv.1
            ),
            ctx,
            stream,
            target,
            loaded: Mutex::new(Loaded {
                modules: HashMap::new(),
                funcs: HashMap::new(),
            }),
            sync_each_launch: std::env::var("GAN_ENGINE_CUDA_SYNC").is_ok_and(|v| v != "0"),
            capturing: std::sync::atomic::AtomicBool::new(false),
            launches_at_capture: std::sync::atomic::AtomicU64::new(0),
            last_kernel: Mutex::new("(none)"),
            counts: LaunchCounter::default(),
        };
        rt.load_all()?;
        Ok(rt)
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| anyhow!("cannot bind the CUDA context to this thread: {e}"))
    }

    fn stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// Compiles / loads every kernel module once, so a broken kernel file fails at start-up, not mid-training.
    fn load_all(&self) -> Result<()> {
        self.bind()?;
        let mut loaded = self.loaded.lock().unwrap();
        for sig in kernels().iter().filter(|k| !k.emu_only) {
            if loaded.modules.contains_key(sig.module) {
                continue;
            }
            let file = format!("{}.cu", sig.module);
            let c = nvrtc::compile_cached(&file, &self.target)?;
            // SAFETY: the image is a complete CUBIN or NUL-terminated PTX, alive during the call.
            let m = unsafe { drv::module::load_data(c.image.as_ptr() as *const c_void) }
                .map_err(|e| anyhow!("loading the module of {file} ({}): {e}", self.target))?;
            loaded.modules.insert(sig.module, Module(m));
        }
        for sig in kernels().iter().filter(|k| !k.emu_only) {
            let m = loaded.modules[sig.module];
            // SAFETY: module loaded above and never unloaded while the runtime lives.
            let f = unsafe { drv::module::get_function(m.0, CString::new(sig.name)?) }
                .map_err(|e| anyhow!("kernel {} not found in {}.cu: {e}", sig.name, sig.module))?;
            loaded.funcs.insert(sig.name, (Func(f), 48 * 1024));
        }
        Ok(())
    }

    fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        super::runtime::refuse_while_capturing(self.is_capturing(), what)
    }

    fn describe(&self, what: &str, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "{what}: {e} (last kernel launched: {})",
            self.last_kernel.lock().unwrap()
        )
    }
}

/// cudarc's graph handle holds raw driver pointers; CUDA allows using a graph from any thread as long as the
/// calls are serialised, which the Mutex around it does.
struct SendGraph(CudaGraph);
// SAFETY: see above; every use goes through `RealGraph::graph`'s lock.
unsafe impl Send for SendGraph {}

/// A captured, instantiated CUDA graph.
struct RealGraph {
    graph: Mutex<SendGraph>,
    launches: usize,
}

impl DeviceGraph for RealGraph {
    fn replay(&self) -> Result<()> {
        self.graph
            .lock()
            .unwrap()
            .0
            .launch()
            .map_err(|e| anyhow!("cuGraphLaunch: {e}"))
    }

    fn launches(&self) -> usize {
        self.launches
    }
}

impl GpuRuntime for RealRuntime {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: plain allocation; freed by `free`.
        unsafe { drv::malloc_sync(bytes) }
            .map_err(|e| self.describe(&format!("cuMemAlloc({bytes} bytes)"), e))
    }

    fn free(&self, ptr: u64) {
        if self.bind().is_ok() {
            // The block may still be in use by queued work: wait for the stream first.
            // SAFETY: ptr came from `alloc`; freed once (the caching allocator owns it).
            unsafe {
                let _ = drv::stream::synchronize(self.stream());
                let _ = drv::free_sync(ptr);
            }
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.refuse_while_capturing("host-to-device copy")?;
        self.bind()?;
        self.counts.record_htod(src.len());
        // SAFETY: dst is a device allocation of at least src.len() bytes (the backend sizes it). From pageable
        // memory the call returns after staging `src`, so `src` may be dropped afterwards.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream()) }
            .map_err(|e| self.describe("host-to-device copy", e))
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.refuse_while_capturing("device-to-host copy")?;
        self.bind()?;
        self.counts.record_dtoh(dst.len());
        // SAFETY: src holds at least dst.len() bytes; we synchronise before `dst` is used.
        unsafe {
            drv::memcpy_dtoh_async(dst, src, self.stream())
                .map_err(|e| self.describe("device-to-host copy", e))?;
            drv::stream::synchronize(self.stream())
                .map_err(|e| self.describe("device-to-host copy", e))
        }
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        self.counts.record_dtod();
        // SAFETY: both ranges are live device allocations of at least `bytes`.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream()) }
            .map_err(|e| self.describe("device-to-device copy", e))
    }

    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: dst is a live device allocation of at least `bytes`.
        unsafe { drv::memset_d8_async(dst, 0, bytes, self.stream()) }
            .map_err(|e| self.describe("memset", e))
    }

    fn launch(&self, kernel: &str, cfg: LaunchCfg, args: &[KernelArg<'_>]) -> Result<()> {
        let sig = kernel_sig(kernel)?;
        check_args(sig, args)?;
        cfg.validate(kernel)?;
        self.bind()?;
        let func = {
            let mut loaded = self.loaded.lock().unwrap();
            let entry = loaded
                .funcs
                .get_mut(sig.name)
                .ok_or_else(|| anyhow!("kernel {kernel} is not loaded (emulation-only?)"))?;
            // More than 48 KiB of dynamic shared memory must be opted into per function.
            if cfg.shared_bytes > entry.1 {
                // SAFETY: valid function handle.
                unsafe {
                    drv::function::set_function_attribute(
                        entry.0 .0,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        cfg.shared_bytes as i32,
                    )
                }
                .map_err(|e| {
                    anyhow!(
                        "kernel {kernel}: cannot allow {} bytes of dynamic shared memory: {e}",
                        cfg.shared_bytes
                    )
                })?;
                entry.1 = cfg.shared_bytes;
            }
            entry.0
        };
        // cuLaunchKernel takes an array of pointers to each argument's value; it copies the values before
        // returning, so the slots only need to live across the call.
        let slots = ArgSlots::new(args);
        let mut params = slots.pointers();
        *self.last_kernel.lock().unwrap() = sig.name;
        self.counts.record(sig.name);
        // SAFETY: argument kinds and count were checked against the kernel's parsed signature; pointer
        // arguments are device addresses owned by live tensors (the caller's contract).
        unsafe {
            drv::launch_kernel(
                func.0,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                self.stream(),
                &mut params,
            )
        }
        .map_err(|e| anyhow!("kernel {kernel}: launch with {cfg:?} failed: {e}"))?;
        if self.sync_each_launch && !self.is_capturing() {
            // SAFETY: our stream.
            unsafe { drv::stream::synchronize(self.stream()) }
                .map_err(|e| anyhow!("kernel {kernel} failed: {e}"))?;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_while_capturing("stream synchronisation")?;
        self.bind()?;
        // SAFETY: our stream.
        unsafe { drv::stream::synchronize(self.stream()) }
            .map_err(|e| self.describe("stream synchronize", e))
            .context("a queued CUDA operation failed")
    }

    fn device_time(&self, enqueue: &mut dyn FnMut() -> Result<()>) -> Result<Option<Duration>> {
        self.bind()?;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT; // timing enabled
        let start = drv::event::create(flags).map_err(|e| self.describe("event create", e))?;
        let end = match drv::event::create(flags) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: created above, not recorded.
                unsafe {
                    let _ = drv::event::destroy(start);
                }
                return Err(self.describe("event create", e));
            }
        };
        // SAFETY: both events are ours and live until the destroys below; the stream is ours.
        let timed = unsafe {
            (|| -> Result<Duration> {
                drv::event::record(start, self.stream())
                    .map_err(|e| self.describe("event record", e))?;
                enqueue()?;
                drv::event::record(end, self.stream())
                    .map_err(|e| self.describe("event record", e))?;
                drv::event::synchronize(end)
                    .map_err(|e| self.describe("event synchronize", e))
                    .context("a queued CUDA operation failed")?;
                let ms = drv::event::elapsed(start, end)
                    .map_err(|e| self.describe("event elapsed", e))?;
                Ok(Duration::from_secs_f64(ms as f64 / 1e3))
            })()
        };
        // SAFETY: nothing uses the events after this.
        unsafe {
            let _ = drv::event::destroy(start);
            let _ = drv::event::destroy(end);
        }
        timed.map(Some)
    }

    fn begin_capture(&self) -> Result<()> {
        anyhow::ensure!(
            !self.is_capturing(),
            "a CUDA graph capture is in progress already"
        );
        // Relaxed: the caching allocator may call cuMemAlloc while the step is captured.
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| self.describe("cuStreamBeginCapture", e))?;
        self.launches_at_capture.store(
            self.counts.total_launches(),
            std::sync::atomic::Ordering::Release,
        );
        self.capturing
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn is_capturing(&self) -> bool {
        self.capturing.load(std::sync::atomic::Ordering::Acquire)
    }

    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
        anyhow::ensure!(self.is_capturing(), "end_capture without begin_capture");
        self.capturing
            .store(false, std::sync::atomic::Ordering::Release);
        let launches = self.counts.total_launches()
            - self
                .launches_at_capture
                .load(std::sync::atomic::Ordering::Acquire);
        let graph = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(|e| self.describe("cuStreamEndCapture / cuGraphInstantiate", e))?
            .ok_or_else(|| anyhow!("the CUDA graph capture recorded nothing"))?;
        graph
            .upload()
            .map_err(|e| self.describe("cuGraphUpload", e))?;
        Ok(Box::new(RealGraph {
            graph: Mutex::new(SendGraph(graph)),
            launches: launches as usize,
        }))
    }

    fn is_emulated(&self) -> bool {
        false
    }

    fn launch_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    fn transfer_counts(&self) -> TransferCounts {
        self.counts.transfers()
    }
}

impl Drop for RealRuntime {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            // SAFETY: our stream and modules; nothing uses them after this.
            unsafe {
                let _ = drv::stream::synchronize(self.stream());
                for m in self.loaded.lock().unwrap().modules.values() {
                    let _ = drv::module::unload(m.0);
                }
            }
        }
    }
}
