//! The emulation runtime: "device" memory is host memory and a launch runs the kernel's C++ build (see
//! `kernels/emu/cuda_emu.h` and build.rs) block by block, with the grid's blocks spread over the rayon pool.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::runtime::{
    check_args, kernel_sig, ArgSlots, DeviceGraph, GpuRuntime, KernelArg, LaunchCfg, LaunchCounter,
    TransferCounts,
};

type Wrapper = unsafe extern "C" fn(*mut *mut c_void);

extern "C" {
    fn emu_lookup(name: *const c_char) -> Option<Wrapper>;
    fn emu_run_blocks(
        f: Wrapper,
        args: *mut *mut c_void,
        grid: *const u32,
        block: *const u32,
        smem_bytes: u32,
        first: u64,
        last: u64,
        err: *mut c_char,
        errlen: c_ulong,
    ) -> c_int;
}

/// Alignment of every emulated allocation (cudaMalloc guarantees at least 256 bytes).
const ALIGN: usize = 256;

pub struct EmuRuntime {
    /// Live allocations: address -> size (needed to free with the right layout).
    allocs: Mutex<BTreeMap<u64, usize>>,
    wrappers: Mutex<HashMap<String, Wrapper>>,
    counts: LaunchCounter,
    /// The operations recorded since `begin_capture`, while a capture is in progress.
    capture: Mutex<Option<Vec<Op>>>,
}

/// One recorded operation of a captured graph.
enum Op {
    Launch {
        name: &'static str,
        f: Wrapper,
        cfg: LaunchCfg,
        args: ArgSlots,
    },
    Dtod {
        dst: u64,
        src: u64,
        bytes: usize,
    },
    Memset {
        dst: u64,
        bytes: usize,
    },
}

impl Op {
    fn run(&self) -> Result<()> {
        match self {
            Op::Launch { name, f, cfg, args } => run_launch(name, *f, *cfg, args),
            // SAFETY: both ranges were checked against live allocations when recorded, and the graph's
            // owner keeps them alive (the allocator's private pool, see alloc.rs) while it replays.
            Op::Dtod { dst, src, bytes } => unsafe {
                std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes);
                Ok(())
            },
            // SAFETY: as above.
            Op::Memset { dst, bytes } => unsafe {
                std::ptr::write_bytes(*dst as *mut u8, 0, *bytes);
                Ok(())
            },
        }
    }
}

/// A captured graph on the emulation: its operations, run in order at each replay.
struct EmuGraph {
    ops: Vec<Op>,
}

impl DeviceGraph for EmuGraph {
    fn replay(&self) -> Result<()> {
        self.ops.iter().try_for_each(Op::run)
    }

    fn launches(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| matches!(op, Op::Launch { .. }))
            .count()
    }
}

impl Default for EmuRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// True if the emulation build contains a wrapper for `kernel`.
pub fn has_kernel(kernel: &str) -> bool {
    let Ok(c) = CString::new(kernel) else {
        return false;
    };
    // SAFETY: emu_lookup only reads the NUL-terminated name.
    unsafe { emu_lookup(c.as_ptr()) }.is_some()
}

impl EmuRuntime {
    pub fn new() -> EmuRuntime {
        EmuRuntime {
            allocs: Mutex::new(BTreeMap::new()),
            wrappers: Mutex::new(HashMap::new()),
            counts: LaunchCounter::default(),
            capture: Mutex::new(None),
        }
    }

    fn capturing(&self) -> bool {
        self.capture.lock().unwrap().is_some()
    }

    /// Appends `op` to the capture in progress, or runs it now if there is none.
    fn record_or_run(&self, op: Op) -> Result<()> {
        if let Some(ops) = self.capture.lock().unwrap().as_mut() {
            ops.push(op);
            return Ok(());
        }
        op.run()
    }

    fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        super::runtime::refuse_while_capturing(self.capturing(), what)
    }

    fn wrapper(&self, name: &str) -> Result<Wrapper> {
        let mut map = self.wrappers.lock().unwrap();
        if let Some(w) = map.get(name) {
            return Ok(*w);
        }
        let c = CString::new(name)?;
        // SAFETY: emu_lookup only reads the NUL-terminated name.
        let Some(w) = (unsafe { emu_lookup(c.as_ptr()) }) else {
            bail!("kernel {name}: not in the emulation build (is it an extern \"C\" __global__ in kernels/*.cu?)");
        };
        map.insert(name.to_string(), w);
        Ok(w)
    }

    /// Checks that [ptr, ptr + bytes) lies inside one live allocation, so a bad copy is an error, not a crash.
    fn check_range(&self, ptr: u64, bytes: usize, what: &str) -> Result<()> {
        let allocs = self.allocs.lock().unwrap();
        let ok = allocs
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&base, &size)| ptr + bytes as u64 <= base + size as u64);
        anyhow::ensure!(
            ok,
            "{what}: [{ptr:#x}, +{bytes}) is not inside an emulated device allocation"
        );
        Ok(())
    }
}

/// Raw pointers to the argument slots, shared read-only by the OS threads running blocks.
struct ArgPtrs(Vec<*mut c_void>);
// SAFETY: the slots are only read (by the kernel wrappers) while the launch runs, and outlive it.
unsafe impl Sync for ArgPtrs {}
unsafe impl Send for ArgPtrs {}

impl GpuRuntime for EmuRuntime {
    fn name(&self) -> String {
        format!(
            "emu (CUDA kernels on the CPU emulation, {} threads)",
            rayon::current_num_threads()
        )
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), ALIGN)?;
        // SAFETY: non-zero size layout.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            bail!("emu: out of host memory allocating {bytes} bytes");
        }
        self.allocs.lock().unwrap().insert(p as u64, bytes.max(1));
        Ok(p as u64)
    }

    fn free(&self, ptr: u64) {
        if let Some(size) = self.allocs.lock().unwrap().remove(&ptr) {
            let layout = std::alloc::Layout::from_size_align(size, ALIGN).unwrap();
            // SAFETY: allocated by `alloc` above with this layout.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.refuse_while_capturing("host-to-device copy")?;
        self.check_range(dst, src.len(), "emu htod")?;
        self.counts.record_htod(src.len());
        // SAFETY: range checked against a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.refuse_while_capturing("device-to-host copy")?;
        self.check_range(src, dst.len(), "emu dtoh")?;
        self.counts.record_dtoh(dst.len());
        // SAFETY: range checked against a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.check_range(src, bytes, "emu dtod source")?;
        self.check_range(dst, bytes, "emu dtod destination")?;
        self.counts.record_dtod();
        self.record_or_run(Op::Dtod { dst, src, bytes })
    }

    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.check_range(dst, bytes, "emu memset")?;
        self.record_or_run(Op::Memset { dst, bytes })
    }

    fn launch(&self, kernel: &str, cfg: LaunchCfg, args: &[KernelArg<'_>]) -> Result<()> {
        let sig = kernel_sig(kernel)?;
        check_args(sig, args)?;
        cfg.validate(kernel)?;
        anyhow::ensure!(
            cfg.shared_bytes <= 227 * 1024,
            "kernel {kernel}: {} bytes of dynamic shared memory is more than a GPU block can have",
            cfg.shared_bytes
        );
        let f = self.wrapper(kernel)?;
        self.counts.record(sig.name);
        self.record_or_run(Op::Launch {
            name: sig.name,
            f,
            cfg,
            args: ArgSlots::new(args),
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_while_capturing("stream synchronisation")
    }

    fn is_emulated(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        let mut capture = self.capture.lock().unwrap();
        anyhow::ensure!(
            capture.is_none(),
            "a CUDA graph capture is in progress already"
        );
        *capture = Some(Vec::new());
        Ok(())
    }

    fn is_capturing(&self) -> bool {
        self.capture.lock().unwrap().is_some()
    }

    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
        let ops = self.capture.lock().unwrap().take();
        let ops = ops.ok_or_else(|| anyhow::anyhow!("end_capture without begin_capture"))?;
        Ok(Box::new(EmuGraph { ops }))
    }

    fn launch_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    fn transfer_counts(&self) -> TransferCounts {
        self.counts.transfers()
    }
}

/// Runs one launch: the grid's blocks in a few contiguous ranges over the rayon pool.
fn run_launch(kernel: &str, f: Wrapper, cfg: LaunchCfg, args: &ArgSlots) -> Result<()> {
    let ptrs = ArgPtrs(args.pointers());
    let grid = [cfg.grid.0, cfg.grid.1, cfg.grid.2];
    let block = [cfg.block.0, cfg.block.1, cfg.block.2];
    let nblocks = cfg.num_blocks();
    // A few contiguous ranges per worker: enough to balance, few enough to keep per-range setup negligible.
    let chunks = (rayon::current_num_threads() as u64 * 4).clamp(1, nblocks);
    let ptrs = &ptrs;
    let run = |c: u64| -> Result<()> {
        let first = nblocks * c / chunks;
        let last = nblocks * (c + 1) / chunks;
        let mut err = vec![0 as c_char; 1024];
        // SAFETY: the wrapper reads `args.len()` slots as the signature (checked at launch) says; pointers in
        // them are the caller's device (= host) addresses, as on a GPU.
        let rc = unsafe {
            emu_run_blocks(
                f,
                ptrs.0.as_ptr() as *mut *mut c_void,
                grid.as_ptr(),
                block.as_ptr(),
                cfg.shared_bytes,
                first,
                last,
                err.as_mut_ptr(),
                err.len() as c_ulong,
            )
        };
        if rc != 0 {
            // SAFETY: emu_run_blocks NUL-terminates the message (snprintf).
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
            bail!("{}", msg.to_string_lossy());
        }
        Ok(())
    };
    let res = if chunks == 1 {
        run(0)
    } else {
        (0..chunks).into_par_iter().try_for_each(run)
    };
    res.with_context(|| format!("kernel {kernel} (emulated) failed"))
}

impl Drop for EmuRuntime {
    fn drop(&mut self) {
        let ptrs: Vec<u64> = self.allocs.lock().unwrap().keys().copied().collect();
        for p in ptrs {
            self.free(p);
        }
    }
}
