//! The emulation runtime: "device" memory is host memory and a launch runs the kernel's C++ build (see
//! `kernels/emu/cuda_emu.h` and build.rs) block by block, with the grid's blocks spread over the rayon pool.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::runtime::{
    check_args, kernel_sig, ArgSlots, GpuRuntime, KernelArg, LaunchCfg, LaunchCounter,
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
        }
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
        self.check_range(dst, src.len(), "emu htod")?;
        self.counts.record_htod(src.len());
        // SAFETY: range checked against a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
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
        // SAFETY: both ranges checked; `copy` tolerates overlap.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.check_range(dst, bytes, "emu memset")?;
        // SAFETY: range checked.
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
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
        let mut slots = ArgSlots::new(args);
        let ptrs = ArgPtrs(slots.pointers());
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
            // SAFETY: the wrapper reads `args.len()` slots as the signature (checked above) says; pointers in
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
        drop(slots);
        res.with_context(|| format!("kernel {kernel} (emulated) failed"))
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn is_emulated(&self) -> bool {
        true
    }

    fn launch_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    fn transfer_counts(&self) -> TransferCounts {
        self.counts.transfers()
    }
}

impl Drop for EmuRuntime {
    fn drop(&mut self) {
        let ptrs: Vec<u64> = self.allocs.lock().unwrap().keys().copied().collect();
        for p in ptrs {
            self.free(p);
        }
    }
}
