//! Run-time compilation of `kernels/*.cu` with NVRTC (through cudarc's bindings), with an on-disk cache.
//!
//! Each kernel file is one NVRTC program; the headers (`common.cuh`, ...) are handed to NVRTC by include name, so
//! nothing is read from disk at run time: the sources are embedded in the binary by build.rs. For a real GPU the
//! target is `sm_XY` of the device and the result is a CUBIN (no JIT at module load); `compute_XY` gives PTX.
//!
//! The compiled image is cached under `$GAN_ENGINE_CACHE_DIR`, `$XDG_CACHE_HOME/gan-engine/kernels` or
//! `~/.cache/gan-engine/kernels`, keyed by a hash of the sources, options, target and NVRTC version, so the
//! second start of the program loads kernels in milliseconds.

use std::ffi::{c_char, c_int, CString};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cudarc::nvrtc::{result as nrt, sys};

use super::runtime::kernel_sources;

/// Options every compilation uses. No --use_fast_math: the kernels must match the CPU reference closely.
const BASE_OPTIONS: &[&str] = &["--std=c++17", "-lineinfo"];

/// Loads libnvrtc from `$GAN_ENGINE_NVRTC_LIB_DIR` if that is set, so LD_LIBRARY_PATH is not needed: cudarc
/// opens the library by name (`libnvrtc.so.12`, ...) and the dynamic loader answers such a request with an
/// already-loaded library of that soname.
fn preload_from_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(dir) = std::env::var_os("GAN_ENGINE_NVRTC_LIB_DIR") else {
            return;
        };
        extern "C" {
            fn dlopen(filename: *const c_char, flags: c_int) -> *mut std::ffi::c_void;
        }
        const RTLD_NOW: c_int = 2;
        const RTLD_GLOBAL: c_int = 0x100;
        for name in ["libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.13"] {
            let path = PathBuf::from(&dir).join(name);
            let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: dlopen of a shared library by path; the handle is deliberately kept for the process.
            if path.exists() && !unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_GLOBAL) }.is_null() {
                return;
            }
        }
    });
}

/// Checks that libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn ensure_available() -> Result<()> {
    preload_from_env();
    // SAFETY: only probes dlopen with the candidate library names.
    if !unsafe { sys::is_culib_present() } {
        bail!(
            "NVRTC (libnvrtc.so.12) not found: pip install nvidia-cuda-nvrtc-cu12 and put its lib dir on LD_LIBRARY_PATH (or in GAN_ENGINE_NVRTC_LIB_DIR)"
        );
    }
    Ok(())
}

/// NVRTC's (major, minor) version.
pub fn version() -> Result<(i32, i32)> {
    ensure_available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to ints.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| anyhow::anyhow!("nvrtcVersion: {e}"))?;
    Ok((major, minor))
}

/// The SM architectures this NVRTC can generate code for, e.g. [50, 52, ..., 90, 100, 120].
pub fn supported_archs() -> Result<Vec<i32>> {
    ensure_available()?;
    let mut n: c_int = 0;
    // SAFETY: out-pointers sized by the first call.
    unsafe {
        sys::nvrtcGetNumSupportedArchs(&mut n)
            .result()
            .map_err(|e| anyhow::anyhow!("nvrtcGetNumSupportedArchs: {e}"))?;
        let mut v = vec![0 as c_int; n.max(0) as usize];
        sys::nvrtcGetSupportedArchs(v.as_mut_ptr())
            .result()
            .map_err(|e| anyhow::anyhow!("nvrtcGetSupportedArchs: {e}"))?;
        Ok(v)
    }
}

/// The NVRTC target for a device of compute capability `cc` (e.g. 90 for 9.0): a CUBIN for that exact SM when
/// NVRTC knows it, else PTX for the newest architecture NVRTC supports below it (the driver JIT-compiles PTX).
pub fn target_for(cc: i32) -> Result<String> {
    let archs = supported_archs()?;
    if archs.contains(&cc) {
        return Ok(format!("sm_{cc}"));
    }
    match archs.iter().filter(|&&a| a <= cc).max() {
        Some(a) => Ok(format!("compute_{a}")),
        None => bail!(
            "NVRTC {:?} supports none of the architectures up to sm_{cc} (it knows {archs:?})",
            version()?
        ),
    }
}

/// A compiled kernel file.
pub struct Compiled {
    /// CUBIN (target `sm_*`) or NUL-terminated PTX (target `compute_*`).
    pub image: Vec<u8>,
    pub is_cubin: bool,
    /// NVRTC's program log (warnings; with `--ptxas-options=-v`, the per-kernel resource report).
    pub log: String,
    /// True when the image came from the disk cache (then `log` is empty).
    pub from_cache: bool,
}

/// The embedded source of `file` (e.g. "conv.cu").
pub fn source(file: &str) -> Result<&'static str> {
    kernel_sources()
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(_, s)| *s)
        .ok_or_else(|| anyhow::anyhow!("no kernel source named {file}"))
}

/// Every embedded `.cu` file name.
pub fn kernel_files() -> Vec<&'static str> {
    kernel_sources()
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.ends_with(".cu"))
        .collect()
}

/// Compiles `file` for `target` (`sm_XY` or `compute_XY`) with `extra` options. No caching.
pub fn compile(file: &str, target: &str, extra: &[&str]) -> Result<Compiled> {
    ensure_available()?;
    let src = CString::new(source(file)?)?;
    let name = CString::new(file)?;
    // Every header is offered to every program under its file name, which is what `#include "common.cuh"` asks.
    let headers: Vec<(CString, CString)> = kernel_sources()
        .iter()
        .filter(|(n, _)| n.ends_with(".cuh"))
        .map(|(n, s)| Ok((CString::new(*s)?, CString::new(*n)?)))
        .collect::<Result<_>>()?;
    let header_srcs: Vec<*const c_char> = headers.iter().map(|h| h.0.as_ptr()).collect();
    let header_names: Vec<*const c_char> = headers.iter().map(|h| h.1.as_ptr()).collect();

    let mut opts: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
    opts.push(format!("--gpu-architecture={target}"));
    // CUDA's own headers (cuda_fp16.h, ...) for kernels that need them: pip's nvidia-cuda-runtime-cu12 has them.
    if let Some(inc) = std::env::var_os("GAN_ENGINE_CUDA_INCLUDE") {
        opts.push(format!("--include-path={}", inc.to_string_lossy()));
    }
    opts.extend(extra.iter().map(|s| s.to_string()));

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all strings outlive the program (destroyed below); the arrays have `headers.len()` entries.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            headers.len() as c_int,
            header_srcs.as_ptr(),
            header_names.as_ptr(),
        )
        .result()
        .map_err(|e| anyhow::anyhow!("nvrtcCreateProgram({file}): {e}"))?;
    }
    struct Guard(sys::nvrtcProgram);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: created above, destroyed once.
            unsafe {
                let _ = nrt::destroy_program(self.0);
            }
        }
    }
    let guard = Guard(prog);

    // SAFETY: valid program; options are plain strings.
    let compiled = unsafe { nrt::compile_program(guard.0, &opts) };
    // SAFETY: valid program.
    let log = unsafe { nrt::get_program_log(guard.0) }
        .map(|v| c_chars_to_string(&v))
        .unwrap_or_default();
    if let Err(e) = compiled {
        bail!(
            "NVRTC failed to compile {file} for {target} ({e}):\n{}",
            log.trim_end()
        );
    }
    let is_cubin = target.starts_with("sm_");
    let image = if is_cubin {
        let mut size = 0usize;
        // SAFETY: valid compiled program; buffer sized by the first call.
        unsafe {
            sys::nvrtcGetCUBINSize(guard.0, &mut size)
                .result()
                .map_err(|e| anyhow::anyhow!("nvrtcGetCUBINSize({file}): {e}"))?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(guard.0, buf.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| anyhow::anyhow!("nvrtcGetCUBIN({file}): {e}"))?;
            buf
        }
    } else {
        // SAFETY: valid compiled program.
        let ptx = unsafe { nrt::get_ptx(guard.0) }
            .map_err(|e| anyhow::anyhow!("nvrtcGetPTX({file}): {e}"))?;
        let mut bytes: Vec<u8> = ptx.iter().map(|&c| c as u8).collect();
        if bytes.last() != Some(&0) {
            bytes.push(0);
        }
        bytes
    };
    Ok(Compiled {
        image,
        is_cubin,
        log,
        from_cache: false,
    })
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Where compiled kernels are cached, if a cache directory can be determined.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GAN_ENGINE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gan-engine").join("kernels"))
}

/// Cache key of one compilation: every input that can change the image.
fn cache_key(file: &str, target: &str, nvrtc: (i32, i32)) -> Result<String> {
    // SipHash with fixed keys; two differently seeded passes give 128 bits, so a collision is not a concern.
    let mut parts: Vec<&str> = vec![file, target, env!("CARGO_PKG_VERSION")];
    parts.extend(BASE_OPTIONS);
    for (n, s) in kernel_sources() {
        if *n == file || n.ends_with(".cuh") {
            parts.push(n);
            parts.push(s);
        }
    }
    let hash = |seed: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        nvrtc.hash(&mut h);
        parts.hash(&mut h);
        h.finish()
    };
    let stem = file.trim_end_matches(".cu");
    Ok(format!(
        "{stem}-{target}-nvrtc{}.{}-{:016x}{:016x}",
        nvrtc.0,
        nvrtc.1,
        hash(1),
        hash(2)
    ))
}

/// [`compile`] through the disk cache (no extra options: the cache holds what the runtime loads).
pub fn compile_cached(file: &str, target: &str) -> Result<Compiled> {
    let nv = version()?;
    let key = cache_key(file, target, nv)?;
    let is_cubin = target.starts_with("sm_");
    let path =
        cache_dir().map(|d| d.join(format!("{key}.{}", if is_cubin { "cubin" } else { "ptx" })));
    if let Some(p) = &path {
        if let Ok(image) = std::fs::read(p) {
            if !image.is_empty() {
                return Ok(Compiled {
                    image,
                    is_cubin,
                    log: String::new(),
                    from_cache: true,
                });
            }
        }
    }
    let c = compile(file, target, &[])?;
    if let Some(p) = &path {
        // Best effort: a read-only home only costs the compile time next start. Write-then-rename so a
        // concurrent process never reads a half-written file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let written = p
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|_| std::fs::write(&tmp, &c.image))
            .and_then(|_| std::fs::rename(&tmp, p));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(c)
}

/// Per-kernel resources parsed from a `--ptxas-options=-v` log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Parses ptxas' verbose report: a "Compiling entry function 'NAME'" line, then lines with
/// "N bytes stack frame, N bytes spill stores, N bytes spill loads" and "Used N registers, ... N bytes smem".
pub fn parse_ptxas_report(log: &str) -> Result<Vec<KernelResources>> {
    let mut out: Vec<KernelResources> = Vec::new();
    let num_before = |line: &str, unit: &str| -> Option<u32> {
        let idx = line.find(unit)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(i) = line.find("entry function '") {
            let rest = &line[i + "entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelResources {
                name,
                ..Default::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.contains("stack frame") {
            cur.stack_bytes = num_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
            cur.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            cur.registers = num_before(line, "registers")
                .with_context(|| format!("cannot parse ptxas line: {line}"))?;
            cur.shared_bytes = num_before(line, "bytes smem").unwrap_or(0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_report_is_parsed() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'add_f32' for 'sm_90'\n\
ptxas info    : Function properties for add_f32\n\
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 12 registers, 384 bytes smem, 380 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'mul_f32' for 'sm_90'\n\
ptxas info    : Function properties for mul_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, 380 bytes cmem[0]\n";
        let r = parse_ptxas_report(log).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                name: "add_f32".into(),
                registers: 12,
                shared_bytes: 384,
                stack_bytes: 8,
                spill_stores: 4,
                spill_loads: 4
            }
        );
        assert_eq!(
            (r[1].registers, r[1].shared_bytes, r[1].spill_stores),
            (10, 0, 0)
        );
    }

    #[test]
    fn cache_key_depends_on_target_and_version() {
        let a = cache_key("elementwise.cu", "sm_90", (12, 9)).unwrap();
        assert_ne!(a, cache_key("elementwise.cu", "sm_80", (12, 9)).unwrap());
        assert_ne!(a, cache_key("elementwise.cu", "sm_90", (12, 8)).unwrap());
        assert_ne!(a, cache_key("activation.cu", "sm_90", (12, 9)).unwrap());
        assert_eq!(a, cache_key("elementwise.cu", "sm_90", (12, 9)).unwrap());
    }
}
