//! The interface between the CUDA backend and whatever executes its kernels: a real GPU (cudarc driver API +
//! NVRTC, [`super::real`]) or the CPU emulation of the CUDA execution model ([`super::emu`]).
//!
//! Both runtimes speak in raw device addresses (`u64`) so that launch code is identical for the two: on the
//! emulation an address is simply a host pointer.

use std::time::Duration;

use anyhow::Result;

/// One kernel argument, passed by value exactly as the kernel's C signature declares it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg<'a> {
    /// Any pointer parameter (`float*`, `const float*`, `int*`, ...): a device address.
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    U64(u64),
    /// A struct parameter (build.rs's PARAM_STRUCTS): its C name and the bytes of its `#[repr(C)]` Rust twin.
    Struct(&'static str, &'a [u8]),
}

impl KernelArg<'_> {
    /// The parameter kind this argument fills (checked against the signature parsed from the kernel source).
    pub fn kind(&self) -> ArgKind {
        match self {
            KernelArg::Ptr(_) => ArgKind::Ptr,
            KernelArg::I32(_) => ArgKind::I32,
            KernelArg::U32(_) => ArgKind::U32,
            KernelArg::F32(_) => ArgKind::F32,
            KernelArg::U64(_) => ArgKind::U64,
            KernelArg::Struct(name, _) => ArgKind::Struct(name),
        }
    }

    /// Appends the argument's bytes as the kernel receives them (native endianness, natural size) to `words`,
    /// starting on an 8-byte boundary.
    fn push_words(&self, words: &mut Vec<u64>) {
        let mut b = [0u8; 8];
        match *self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => b.copy_from_slice(&v.to_ne_bytes()),
            KernelArg::I32(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            KernelArg::U32(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            KernelArg::F32(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            KernelArg::Struct(_, bytes) => {
                if bytes.is_empty() {
                    words.push(0); // every argument gets a slot to point at
                }
                for c in bytes.chunks(8) {
                    let mut w = [0u8; 8];
                    w[..c.len()].copy_from_slice(c);
                    words.push(u64::from_ne_bytes(w));
                }
                return;
            }
        }
        words.push(u64::from_ne_bytes(b));
    }
}

/// A launch's argument values, each in its own 8-byte-aligned slot, and the array of pointers to the slots that
/// cuLaunchKernel (and the emulation's wrappers) take.
pub struct ArgSlots {
    words: Vec<u64>,
    starts: Vec<usize>,
}

impl ArgSlots {
    pub fn new(args: &[KernelArg<'_>]) -> ArgSlots {
        let mut words = Vec::with_capacity(args.len());
        let mut starts = Vec::with_capacity(args.len());
        for a in args {
            starts.push(words.len());
            a.push_words(&mut words);
        }
        ArgSlots { words, starts }
    }

    /// The bytes holding the argument values, `[start, end)` (the emulator's checks let kernels read them).
    pub fn byte_range(&self) -> (u64, u64) {
        let start = self.words.as_ptr() as u64;
        (start, start + 8 * self.words.len() as u64)
    }

    /// One pointer per argument, valid while `self` lives and is not moved. The callee only reads through
    /// them (cuLaunchKernel's `void**` is not const, hence the `mut`).
    pub fn pointers(&self) -> Vec<*mut std::ffi::c_void> {
        let base = self.words.as_ptr() as *mut u64;
        // SAFETY: every start is an index into `words` (each argument pushes at least one word).
        self.starts
            .iter()
            .map(|&i| unsafe { base.add(i) } as *mut std::ffi::c_void)
            .collect()
    }
}

/// Parameter kinds a kernel signature may use (build.rs's parser: one scalar or pointer per parameter, or one
/// of the structs it allows by value, named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    Ptr,
    I32,
    U32,
    F32,
    U64,
    Struct(&'static str),
}

/// A kernel entry point as parsed from `kernels/*.cu` by build.rs.
#[derive(Debug)]
pub struct KernelSig {
    /// Kernel name, e.g. `leaky_relu_fwd_f32`.
    pub name: &'static str,
    /// Source file stem it lives in (one NVRTC module per file), e.g. `activation`.
    pub module: &'static str,
    pub args: &'static [ArgKind],
    /// Test kernels of the emulation (`kernels/emu/tests.cu`), never compiled by NVRTC.
    pub emu_only: bool,
}

include!(concat!(env!("OUT_DIR"), "/kernel_table.rs"));

/// Every `extern "C" __global__` entry of `kernels/*.cu`, parsed at build time.
pub fn kernels() -> &'static [KernelSig] {
    KERNELS
}

/// The embedded kernel sources as (file name, text), headers included; NVRTC compiles from these.
pub fn kernel_sources() -> &'static [(&'static str, &'static str)] {
    KERNEL_SOURCES
}

/// Signature of the kernel `name`, or an error listing that it does not exist.
pub fn kernel_sig(name: &str) -> Result<&'static KernelSig> {
    KERNELS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| anyhow::anyhow!("no kernel named '{name}' in kernels/*.cu"))
}

/// Checks `args` against the kernel's parsed signature, so a wrong argument list is a clear error on both
/// runtimes instead of garbage on the GPU.
pub fn check_args(sig: &KernelSig, args: &[KernelArg<'_>]) -> Result<()> {
    anyhow::ensure!(
        sig.args.len() == args.len(),
        "kernel {}: {} arguments given, the signature has {}",
        sig.name,
        args.len(),
        sig.args.len()
    );
    for (i, (want, got)) in sig.args.iter().zip(args).enumerate() {
        anyhow::ensure!(
            *want == got.kind(),
            "kernel {}: argument {} is {:?} but the signature wants {:?}",
            sig.name,
            i,
            got.kind(),
            want
        );
    }
    Ok(())
}

/// Grid and block dimensions plus dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl LaunchCfg {
    /// A 1-D launch of `block` threads per block covering `n` threads (at least one block).
    pub fn linear(n: usize, block: u32) -> LaunchCfg {
        let blocks = n.div_ceil(block as usize).max(1);
        LaunchCfg {
            grid: (blocks as u32, 1, 1),
            block: (block, 1, 1),
            shared_bytes: 0,
        }
    }

    /// A 1-D launch with an explicit block count (grid-stride kernels).
    pub fn blocks(blocks: u32, block: u32) -> LaunchCfg {
        LaunchCfg {
            grid: (blocks.max(1), 1, 1),
            block: (block, 1, 1),
            shared_bytes: 0,
        }
    }

    pub fn with_shared(mut self, bytes: u32) -> LaunchCfg {
        self.shared_bytes = bytes;
        self
    }

    pub fn threads_per_block(&self) -> u64 {
        self.block.0 as u64 * self.block.1 as u64 * self.block.2 as u64
    }

    pub fn num_blocks(&self) -> u64 {
        self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64
    }

    /// CUDA's hard limits, checked before launching so both runtimes fail the same way.
    pub fn validate(&self, kernel: &str) -> Result<()> {
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        anyhow::ensure!(
            gx >= 1 && gy >= 1 && gz >= 1 && gy <= 65535 && gz <= 65535 && gx < (1 << 31),
            "kernel {kernel}: invalid grid {:?}",
            self.grid
        );
        anyhow::ensure!(
            bx >= 1 && by >= 1 && (1..=64).contains(&bz) && self.threads_per_block() <= 1024,
            "kernel {kernel}: invalid block {:?} (at most 1024 threads, z <= 64)",
            self.block
        );
        Ok(())
    }
}

/// The error of an operation a graph cannot contain (a host copy, a synchronisation), made while capturing:
/// both runtimes refuse it with this message rather than invalidate the capture.
pub fn refuse_while_capturing(capturing: bool, what: &str) -> Result<()> {
    anyhow::ensure!(
        !capturing,
        "{what} while a CUDA graph is being captured (a graph holds device work only)"
    );
    Ok(())
}

/// Device work recorded by a stream capture and replayable: a CUDA graph, or on the emulation the list of
/// recorded operations. The trait is the core's, so graph capture is reached through the backend trait.
pub use crate::backend::DeviceGraph;

/// What a GPU runtime provides: real CUDA (cudarc driver + NVRTC) or the CPU emulation.
///
/// All operations are ordered as if on one stream: a `dtoh` observes every earlier launch.
pub trait GpuRuntime: Send + Sync {
    fn name(&self) -> String;
    /// Device address of a fresh allocation of `bytes` (> 0) bytes, 256-byte aligned.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    fn free(&self, ptr: u64);
    fn htod(&self, dst: u64, src: &[u8]) -> Result<()>;
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()>;
    /// Launches `kernel` (errors name the kernel). Arguments are checked against the parsed signature.
    fn launch(&self, kernel: &str, cfg: LaunchCfg, args: &[KernelArg<'_>]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Device time of the work `enqueue` queues, read from two events recorded on the stream around it (so
    /// the host's launch overhead counts only where it leaves the device idle). None, without calling
    /// `enqueue`, where the runtime has no device clock (the emulation): callers then time with the host clock
    /// around a synchronised region.
    fn device_time(&self, enqueue: &mut dyn FnMut() -> Result<()>) -> Result<Option<Duration>> {
        let _ = enqueue;
        Ok(None)
    }
    /// True for the CPU emulation (tests use this to pick tolerances / sizes).
    fn is_emulated(&self) -> bool;
    /// Starts recording the stream's work (CUDA stream capture, relaxed mode): launches, device-to-device
    /// copies and memsets are recorded, not executed, until [`end_capture`](Self::end_capture). Host↔device
    /// copies and synchronisation are errors meanwhile (they cannot be part of a graph); allocations are
    /// allowed.
    fn begin_capture(&self) -> Result<()>;
    /// Ends the recording and returns it as a replayable graph.
    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>>;
    /// True between [`begin_capture`](Self::begin_capture) and [`end_capture`](Self::end_capture).
    fn is_capturing(&self) -> bool;
    /// Launches per kernel name since the runtime was created (tests check coverage; benchmarks count launches).
    fn launch_counts(&self) -> Vec<(&'static str, u64)>;
    /// Host↔device copies since the runtime was created.
    fn transfer_counts(&self) -> TransferCounts;
}

/// Copies since a runtime was created: how many calls and how many bytes each way between host and device,
/// and how many device-to-device copies (a warm training step makes none: parameters are updated in place).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCounts {
    pub htod: u64,
    pub htod_bytes: u64,
    pub dtoh: u64,
    pub dtoh_bytes: u64,
    pub dtod: u64,
}

/// The launches per kernel between two [`GpuRuntime::launch_counts`] snapshots, kernels not launched in between
/// left out, most launched first (ties by name).
pub fn launches_between(
    before: &[(&'static str, u64)],
    after: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    let earlier = |k: &str| before.iter().find(|(b, _)| *b == k).map_or(0, |(_, c)| *c);
    let mut d: Vec<(&'static str, u64)> = after
        .iter()
        .map(|&(k, c)| (k, c - earlier(k)))
        .filter(|(_, c)| *c > 0)
        .collect();
    d.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    d
}

/// What a runtime has done, shared by the runtimes: launches per kernel name and host↔device copies. The
/// training loop's promise (after warm-up, a step copies nothing but the logged scalars) is checked with it.
#[derive(Default)]
pub struct LaunchCounter {
    launches: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
    transfers: std::sync::Mutex<TransferCounts>,
}

impl LaunchCounter {
    pub fn record(&self, kernel: &'static str) {
        *self.launches.lock().unwrap().entry(kernel).or_insert(0) += 1;
    }

    pub fn record_htod(&self, bytes: usize) {
        let mut t = self.transfers.lock().unwrap();
        t.htod += 1;
        t.htod_bytes += bytes as u64;
    }

    pub fn record_dtoh(&self, bytes: usize) {
        let mut t = self.transfers.lock().unwrap();
        t.dtoh += 1;
        t.dtoh_bytes += bytes as u64;
    }

    pub fn record_dtod(&self) {
        self.transfers.lock().unwrap().dtod += 1;
    }

    /// Launches of all kernels together.
    pub fn total_launches(&self) -> u64 {
        self.launches.lock().unwrap().values().sum()
    }

    /// Sorted by kernel name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .launches
            .lock()
            .unwrap()
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort();
        v
    }

    pub fn transfers(&self) -> TransferCounts {
        *self.transfers.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_between_keeps_what_ran_most_launched_first() {
        let before = [("a", 2), ("b", 5)];
        let after = [("a", 3), ("b", 5), ("c", 4), ("d", 1)];
        assert_eq!(
            launches_between(&before, &after),
            [("c", 4), ("a", 1), ("d", 1)]
        );
    }
}
