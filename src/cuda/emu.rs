//! The emulation runtime: "device" memory is host memory and a launch runs the kernel's C++ build (see
//! `kernels/emu/cuda_emu.h` and build.rs) block by block, with the grid's blocks spread over the rayon pool.
//!
//! Every launch runs under the sanitizer of `kernels/emu/cuda_emu.cpp` (memcheck, initcheck, racecheck,
//! synccheck; [`Checks`], `GAN_ENGINE_EMU_CHECK`): this side keeps what it needs to know about device memory
//! (the live allocations with a redzone after each, which words were ever written, the recently freed ranges)
//! and, for the schedule check, runs a launch under several thread orders from the same memory and compares
//! the results. A violation is the launch's error.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::runtime::{
    check_args, kernel_sig, ArgSlots, DeviceGraph, GpuRuntime, KernelArg, LaunchCfg, LaunchCounter,
    TransferCounts,
};

type Wrapper = unsafe extern "C" fn(*mut *mut c_void);

/// One range of device memory as the sanitizer sees it (`EmuAlloc` in kernels/emu/cuda_emu.cpp).
#[repr(C)]
struct CAlloc {
    base: u64,
    size: u64,
    /// One byte per 4-byte word, non-zero once written; null for ranges that are not live.
    init: *mut u8,
    /// Index of the first pointer argument into the range, or -1.
    arg: i64,
}

/// The checks and schedule of one launch (`EmuChecks` in kernels/emu/cuda_emu.cpp).
#[repr(C)]
struct CChecks {
    flags: u32,
    schedule: u32,
    seed: u64,
    allocs: *const CAlloc,
    nallocs: u64,
    freed: *const CAlloc,
    nfreed: u64,
    /// The argument values, and the array of pointers to them (both read by the kernel wrappers).
    args: [u64; 2],
    argv: [u64; 2],
    redzone: u64,
}

const CHECK_MEM: u32 = 1;
const CHECK_RACE: u32 = 2;
const CHECK_INIT: u32 = 4;
const CHECK_SYNC: u32 = 8;

/// Thread orders a block can run in (`SCHED_*` in cuda_emu.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    Forward = 0,
    Reverse = 1,
    Random = 2,
}

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
        checks: *const CChecks,
        err: *mut c_char,
        errlen: c_ulong,
    ) -> c_int;
}

/// Alignment of every emulated allocation (cudaMalloc guarantees at least 256 bytes).
const ALIGN: usize = 256;
/// Bytes after every allocation that no other allocation uses, so that memcheck can tell an overrun from an
/// access to a neighbour.
const REDZONE: usize = 1024;
/// Freed ranges remembered for use-after-free reports.
const FREED_KEPT: usize = 4096;

/// The sanitizer's checks, from `GAN_ENGINE_EMU_CHECK`: a comma-separated list of `memcheck`, `racecheck`,
/// `initcheck`, `synccheck`, `schedules` (the first launch of each kernel) and `schedules-every`, or `all` (the
/// default: every check, schedules on first launches) or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// CHECK_* bits for the runtime.
    flags: u32,
    /// Which launches run under the forward, reverse and a random thread order, their results compared.
    schedules: Compare,
}

/// Launches whose results are compared across thread schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Compare {
    None,
    /// The first launch of each kernel on a runtime: every kernel each test uses, without multiplying the cost
    /// of training loops.
    FirstOfKernel,
    Every,
}

impl Checks {
    pub const ALL: Checks = Checks {
        flags: CHECK_MEM | CHECK_RACE | CHECK_INIT | CHECK_SYNC,
        schedules: Compare::FirstOfKernel,
    };
    pub const NONE: Checks = Checks {
        flags: 0,
        schedules: Compare::None,
    };

    /// Parses a `GAN_ENGINE_EMU_CHECK` value.
    pub fn parse(spec: &str) -> Result<Checks> {
        let mut c = Checks::NONE;
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => c = Checks::ALL,
                "none" => {}
                "memcheck" => c.flags |= CHECK_MEM,
                "racecheck" => c.flags |= CHECK_RACE,
                "initcheck" => c.flags |= CHECK_INIT,
                "synccheck" => c.flags |= CHECK_SYNC,
                "schedules" => c.schedules = c.schedules.max(Compare::FirstOfKernel),
                "schedules-every" => c.schedules = Compare::Every,
                _ => bail!(
                    "GAN_ENGINE_EMU_CHECK: unknown check `{word}` (expected all, none, or a comma-separated list of \
                     memcheck, racecheck, initcheck, synccheck, schedules, schedules-every)"
                ),
            }
        }
        Ok(c)
    }

    fn from_env() -> Result<Checks> {
        match std::env::var("GAN_ENGINE_EMU_CHECK") {
            Ok(v) => Checks::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(Checks::ALL),
            Err(e) => bail!("GAN_ENGINE_EMU_CHECK: {e}"),
        }
    }
}

/// A live emulated allocation.
struct Alloc {
    size: usize,
    /// initcheck's shadow: one byte per 4-byte word, non-zero once written.
    init: Vec<u8>,
}

/// The emulated device memory: live allocations and the recently freed ranges; and the kernels whose schedules
/// were compared.
#[derive(Default)]
struct Memory {
    live: BTreeMap<u64, Alloc>,
    freed: BTreeMap<u64, usize>,
    freed_order: VecDeque<u64>,
    compared: HashSet<&'static str>,
}

impl Memory {
    /// The live allocation containing [ptr, ptr + bytes), as (base, allocation).
    fn find(&mut self, ptr: u64, bytes: usize) -> Option<(u64, &mut Alloc)> {
        let (&base, a) = self.live.range_mut(..=ptr).next_back()?;
        (ptr + bytes as u64 <= base + a.size as u64).then_some((base, a))
    }

    /// The initcheck shadow words covering [ptr, ptr + bytes) of a live allocation.
    fn init_words(&mut self, ptr: u64, bytes: usize) -> Option<&mut [u8]> {
        if bytes == 0 {
            return None;
        }
        let (base, a) = self.find(ptr, bytes)?;
        let off = (ptr - base) as usize;
        Some(&mut a.init[off / 4..=(off + bytes - 1) / 4])
    }

    fn mark_written(&mut self, ptr: u64, bytes: usize) {
        if let Some(w) = self.init_words(ptr, bytes) {
            w.fill(1);
        }
    }

    /// A device-to-device copy carries the source's initialised state over, word by word.
    fn copy_written(&mut self, dst: u64, src: u64, bytes: usize) {
        let Some(from) = self.init_words(src, bytes).map(|w| w.to_vec()) else {
            return;
        };
        let aligned = dst % 4 == src % 4;
        if let Some(to) = self.init_words(dst, bytes) {
            if aligned && to.len() == from.len() {
                to.copy_from_slice(&from);
            } else {
                to.fill(1);
            }
        }
    }

    /// From `ptr` to the end of its allocation, the memory counts as never written again.
    fn forget_writes(&mut self, ptr: u64) {
        if let Some((base, a)) = self.find(ptr, 0) {
            let from = ((ptr - base) as usize).div_ceil(4);
            a.init[from..].fill(0);
        }
    }

    fn insert(&mut self, ptr: u64, size: usize) {
        // The range is in use again: it is no longer a use-after-free target.
        let end = ptr + (size + REDZONE) as u64;
        let stale: Vec<u64> = self
            .freed
            .range(..end)
            .rev()
            .take_while(|(&b, &s)| b + s as u64 > ptr)
            .map(|(&b, _)| b)
            .collect();
        for b in stale {
            self.freed.remove(&b);
        }
        self.live.insert(
            ptr,
            Alloc {
                size,
                init: vec![0; size.div_ceil(4)],
            },
        );
    }

    fn remove(&mut self, ptr: u64) -> Option<usize> {
        let size = self.live.remove(&ptr)?.size;
        if self.freed.insert(ptr, size).is_none() {
            self.freed_order.push_back(ptr);
        }
        while self.freed_order.len() > FREED_KEPT {
            if let Some(old) = self.freed_order.pop_front() {
                self.freed.remove(&old);
            }
        }
        Some(size)
    }
}

fn layout(size: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size + REDZONE, ALIGN).expect("allocation size overflows")
}

pub struct EmuRuntime {
    memory: Arc<Mutex<Memory>>,
    wrappers: Mutex<HashMap<String, Wrapper>>,
    counts: LaunchCounter,
    /// The operations recorded since `begin_capture`, while a capture is in progress.
    capture: Mutex<Option<Vec<Op>>>,
    /// The sanitizer's checks (or why GAN_ENGINE_EMU_CHECK could not be read: every launch reports it).
    checks: Result<Checks, String>,
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
    fn run(&self, memory: &Mutex<Memory>, checks: Checks) -> Result<()> {
        match self {
            Op::Launch { name, f, cfg, args } => {
                let mut memory = memory.lock().unwrap();
                run_launch(name, *f, *cfg, args, &mut memory, checks)?;
                if let Some(ptr) = poison_fill(name, args) {
                    memory.forget_writes(ptr);
                }
                Ok(())
            }
            Op::Dtod { dst, src, bytes } => {
                memory.lock().unwrap().copy_written(*dst, *src, *bytes);
                // SAFETY: both ranges were checked against live allocations when recorded, and the graph's
                // owner keeps them alive (the allocator's private pool, see alloc.rs) while it replays.
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes) };
                Ok(())
            }
            Op::Memset { dst, bytes } => {
                memory.lock().unwrap().mark_written(*dst, *bytes);
                // SAFETY: as above.
                unsafe { std::ptr::write_bytes(*dst as *mut u8, 0, *bytes) };
                Ok(())
            }
        }
    }
}

/// A captured graph on the emulation: its operations, run in order at each replay.
struct EmuGraph {
    ops: Vec<Op>,
    memory: Arc<Mutex<Memory>>,
    checks: Checks,
}

impl DeviceGraph for EmuGraph {
    fn replay(&self) -> Result<()> {
        self.ops
            .iter()
            .try_for_each(|op| op.run(&self.memory, self.checks))
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
    /// A runtime with the checks GAN_ENGINE_EMU_CHECK names (all of them if it is not set).
    pub fn new() -> EmuRuntime {
        Self::with_checks_or(Checks::from_env().map_err(|e| format!("{e:#}")))
    }

    /// A runtime with the given checks instead of GAN_ENGINE_EMU_CHECK's.
    pub fn with_checks(checks: Checks) -> EmuRuntime {
        Self::with_checks_or(Ok(checks))
    }

    fn with_checks_or(checks: Result<Checks, String>) -> EmuRuntime {
        EmuRuntime {
            memory: Arc::new(Mutex::new(Memory::default())),
            wrappers: Mutex::new(HashMap::new()),
            counts: LaunchCounter::default(),
            capture: Mutex::new(None),
            checks,
        }
    }

    fn checks(&self) -> Result<Checks> {
        self.checks.clone().map_err(anyhow::Error::msg)
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
        op.run(&self.memory, self.checks()?)
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
        let ok = self.memory.lock().unwrap().find(ptr, bytes).is_some();
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
        anyhow::ensure!(
            bytes <= isize::MAX as usize - REDZONE - ALIGN,
            "emu: cannot allocate {bytes} bytes"
        );
        let size = bytes.max(1);
        // SAFETY: non-zero size layout.
        let p = unsafe { std::alloc::alloc(layout(size)) };
        if p.is_null() {
            bail!("emu: out of host memory allocating {bytes} bytes");
        }
        self.memory.lock().unwrap().insert(p as u64, size);
        Ok(p as u64)
    }

    fn free(&self, ptr: u64) {
        if let Some(size) = self.memory.lock().unwrap().remove(ptr) {
            // SAFETY: allocated by `alloc` above with this layout.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout(size)) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.refuse_while_capturing("host-to-device copy")?;
        self.check_range(dst, src.len(), "emu htod")?;
        self.memory.lock().unwrap().mark_written(dst, src.len());
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
        Ok(Box::new(EmuGraph {
            ops,
            memory: self.memory.clone(),
            checks: self.checks()?,
        }))
    }

    fn launch_counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    fn transfer_counts(&self) -> TransferCounts {
        self.counts.transfers()
    }
}

/// Runs one launch under `checks`: once in forward thread order, or, with the schedule check, under the forward,
/// reverse and a random order from the same starting memory, comparing what each leaves in the memory its
/// pointer arguments reach. `memory` stays locked throughout, so that the sanitizer's view of it holds.
fn run_launch(
    kernel: &'static str,
    f: Wrapper,
    cfg: LaunchCfg,
    args: &ArgSlots,
    memory: &mut Memory,
    checks: Checks,
) -> Result<()> {
    let ptrs = ArgPtrs(args.pointers());
    let (args_lo, args_hi) = args.byte_range();
    // Every 8-byte word of the argument values with the argument it belongs to: pointer arguments, and the
    // pointers inside struct arguments (a multi-tensor list), are among them.
    let arg_ptrs: Vec<(usize, u64)> = (args_lo..args_hi)
        .step_by(8)
        .map(|w| {
            let arg = ptrs.0.iter().rposition(|&p| p as u64 <= w).unwrap_or(0);
            // SAFETY: w is a word of the argument values.
            (arg, unsafe { *(w as *const u64) })
        })
        .collect();
    let first_arg = |base: u64, size: usize| {
        arg_ptrs
            .iter()
            .find(|(_, p)| (base..base + size as u64).contains(p))
            .map_or(-1, |&(i, _)| i as i64)
    };
    let allocs: Vec<CAlloc> = memory
        .live
        .iter_mut()
        .map(|(&base, a)| CAlloc {
            base,
            size: a.size as u64,
            init: a.init.as_mut_ptr(),
            arg: first_arg(base, a.size),
        })
        .collect();
    let freed: Vec<CAlloc> = memory
        .freed
        .iter()
        .map(|(&base, &size)| CAlloc {
            base,
            size: size as u64,
            init: std::ptr::null_mut(),
            arg: -1,
        })
        .collect();
    let argv_lo = ptrs.0.as_ptr() as u64;
    let mut c = CChecks {
        flags: checks.flags,
        schedule: Schedule::Forward as u32,
        seed: seed(kernel, &cfg),
        allocs: allocs.as_ptr(),
        nallocs: allocs.len() as u64,
        freed: freed.as_ptr(),
        nfreed: freed.len() as u64,
        args: [args_lo, args_hi],
        argv: [argv_lo, argv_lo + 8 * ptrs.0.len() as u64],
        redzone: REDZONE as u64,
    };
    let run = |c: &CChecks| {
        run_blocks(f, &ptrs, cfg, c).with_context(|| format!("kernel {kernel} (emulated) failed"))
    };
    let compare = match checks.schedules {
        Compare::None => false,
        Compare::FirstOfKernel => memory.compared.insert(kernel),
        Compare::Every => true,
    };
    if !compare {
        return run(&c);
    }
    // The allocations the launch can reach, and their bytes and initcheck shadow before it.
    let reach: Vec<&CAlloc> = allocs.iter().filter(|a| a.arg >= 0).collect();
    // SAFETY (the three blocks below): every range is a live allocation of `memory`, locked by the caller;
    // the init shadow has size.div_ceil(4) bytes.
    let bytes =
        |a: &CAlloc| unsafe { std::slice::from_raw_parts(a.base as *const u8, a.size as usize) };
    let shadow = |a: &CAlloc| unsafe {
        std::slice::from_raw_parts_mut(a.init, (a.size as usize).div_ceil(4))
    };
    let before: Vec<(Vec<u8>, Vec<u8>)> = reach
        .iter()
        .map(|a| (bytes(a).to_vec(), shadow(a).to_vec()))
        .collect();
    run(&c)?;
    let forward: Vec<Vec<u8>> = reach.iter().map(|a| bytes(a).to_vec()).collect();
    for schedule in [Schedule::Reverse, Schedule::Random] {
        for (a, (data, init)) in reach.iter().zip(&before) {
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), a.base as *mut u8, data.len()) };
            shadow(a).copy_from_slice(init);
        }
        c.schedule = schedule as u32;
        run(&c)?;
        for (a, want) in reach.iter().zip(&forward) {
            if let Some(at) = bytes(a).iter().zip(want).position(|(x, y)| x != y) {
                bail!(
                    "kernel {kernel} (emulated): schedules: argument #{} differs at byte {at} between the forward \
                     and the {} thread order (a race between threads of a block, or between blocks; seed {:#x})",
                    a.arg,
                    format!("{schedule:?}").to_lowercase(),
                    c.seed
                );
            }
        }
    }
    Ok(())
}

/// The tensor a launch poisons, if it is one: the backend fills every new tensor with NaN in debug builds
/// (`GAN_ENGINE_POISON`), and to initcheck that fill leaves the memory unwritten (from the tensor's start to the
/// end of its allocator block, so that reads past the tensor's end are reported too).
fn poison_fill(kernel: &str, args: &ArgSlots) -> Option<u64> {
    if kernel != "fill_f32" {
        return None;
    }
    let p = args.pointers();
    // SAFETY: fill_f32(float* out, float value, int n): slot 0 holds a pointer, slot 1 an f32.
    let (ptr, value) = unsafe { (*(p[0] as *const u64), *(p[1] as *const f32)) };
    value.is_nan().then_some(ptr)
}

/// Grid, block and dynamic shared memory of a launch.
fn launch_shape(cfg: &LaunchCfg) -> [u32; 7] {
    let (g, b) = (cfg.grid, cfg.block);
    [g.0, g.1, g.2, b.0, b.1, b.2, cfg.shared_bytes]
}

/// The random schedule's seed: fixed per kernel and launch shape, so a failure reproduces.
fn seed(kernel: &str, cfg: &LaunchCfg) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in kernel
        .bytes()
        .chain(launch_shape(cfg).iter().flat_map(|v| v.to_le_bytes()))
    {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Runs one launch's blocks in a few contiguous ranges over the rayon pool.
fn run_blocks(f: Wrapper, ptrs: &ArgPtrs, cfg: LaunchCfg, checks: &CChecks) -> Result<()> {
    let grid = [cfg.grid.0, cfg.grid.1, cfg.grid.2];
    let block = [cfg.block.0, cfg.block.1, cfg.block.2];
    let nblocks = cfg.num_blocks();
    // A few contiguous ranges per worker: enough to balance, few enough to keep per-range setup negligible.
    let chunks = (rayon::current_num_threads() as u64 * 4).clamp(1, nblocks);
    let checks = &ChecksPtr(checks);
    let run = |c: u64| -> Result<()> {
        let first = nblocks * c / chunks;
        let last = nblocks * (c + 1) / chunks;
        let mut err = vec![0 as c_char; 1024];
        // SAFETY: the wrapper reads `args.len()` slots as the signature (checked at launch) says; pointers in
        // them are the caller's device (= host) addresses, as on a GPU. The checks' tables outlive the call.
        let rc = unsafe {
            emu_run_blocks(
                f,
                ptrs.0.as_ptr() as *mut *mut c_void,
                grid.as_ptr(),
                block.as_ptr(),
                cfg.shared_bytes,
                first,
                last,
                checks.0,
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
    if chunks == 1 {
        run(0)
    } else {
        (0..chunks).into_par_iter().try_for_each(run)
    }
}

/// The launch's checks, read (never written) by the OS threads running its blocks.
struct ChecksPtr(*const CChecks);
// SAFETY: the pointee and the tables it points to are only read while the launch runs, and outlive it; the init
// shadows are written with atomic byte stores.
unsafe impl Sync for ChecksPtr {}
unsafe impl Send for ChecksPtr {}

impl Drop for EmuRuntime {
    fn drop(&mut self) {
        let ptrs: Vec<u64> = self.memory.lock().unwrap().live.keys().copied().collect();
        for p in ptrs {
            self.free(p);
        }
    }
}
