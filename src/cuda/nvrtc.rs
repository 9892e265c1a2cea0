//! Run-time compilation of `kernels/*.cu` with NVRTC (loaded at run time, see [`LIB_NAMES`]), with an on-disk
//! cache.
//!
//! Each kernel file is one NVRTC program; the headers (`common.cuh`, ...) are handed to NVRTC by include name, so
//! nothing is read from disk at run time: the sources are embedded in the binary by build.rs. For a real GPU the
//! target is `sm_XY` of the device and the result is a CUBIN (no JIT at module load); `compute_XY` gives PTX.
//!
//! The compiled image is cached under `$GAN_ENGINE_CACHE_DIR`, `$XDG_CACHE_HOME/gan-engine/kernels` or
//! `~/.cache/gan-engine/kernels`, keyed by a hash of the sources, options, target and NVRTC version, so the
//! second start of the program loads kernels in milliseconds.

use std::ffi::{c_char, c_int, CStr, CString};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

use super::runtime::kernel_sources;

/// Options every compilation uses. No --use_fast_math: the kernels must match the CPU reference closely.
const BASE_OPTIONS: &[&str] = &["--std=c++17", "-lineinfo"];

/// The library names tried, newest first. NVRTC's C API used here (program create / compile / log / PTX /
/// CUBIN / version / supported architectures) is the same from CUDA 11.2 to 13, so one set of bindings serves
/// them all: a CUDA 13 machine needs no `libnvrtc.so.12` symlink, and the PyPI NVRTC 12 still loads.
const LIB_NAMES: &[&str] = &[
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
    "libnvrtc.so",
];

/// Folders searched after `$GAN_ENGINE_NVRTC_LIB_DIR` and the dynamic loader's own search path: where the
/// CUDA toolkit and the distributions put the library.
const LIB_DIRS: &[&str] = &[
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/lib/x86_64-linux-gnu",
];

type Program = *mut std::ffi::c_void;
type Status = c_int;

/// The NVRTC functions this engine calls, resolved once from the first library that loads.
struct Api {
    path: String,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status,
    num_archs: unsafe extern "C" fn(*mut c_int) -> Status,
    archs: unsafe extern "C" fn(*mut c_int) -> Status,
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    cubin_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    cubin: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    destroy: unsafe extern "C" fn(*mut Program) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
    // Last: the function pointers above are valid while the library stays loaded, which is for the process.
    _lib: libloading::Library,
    _builtins: Option<libloading::Library>,
}

impl Api {
    fn open(path: &str) -> Result<Api, String> {
        // SAFETY: loading libnvrtc runs no initialisers with preconditions; the symbols are looked up by their
        // C names and given the C signatures of nvrtc.h.
        unsafe {
            let builtins = preload_builtins(path);
            let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get(concat!($name, "\0").as_bytes())
                        .map_err(|e| format!("{path}: {e}"))?
                };
            }
            Ok(Api {
                path: path.to_string(),
                version: sym!("nvrtcVersion"),
                num_archs: sym!("nvrtcGetNumSupportedArchs"),
                archs: sym!("nvrtcGetSupportedArchs"),
                create: sym!("nvrtcCreateProgram"),
                compile: sym!("nvrtcCompileProgram"),
                log_size: sym!("nvrtcGetProgramLogSize"),
                log: sym!("nvrtcGetProgramLog"),
                ptx_size: sym!("nvrtcGetPTXSize"),
                ptx: sym!("nvrtcGetPTX"),
                cubin_size: sym!("nvrtcGetCUBINSize"),
                cubin: sym!("nvrtcGetCUBIN"),
                destroy: sym!("nvrtcDestroyProgram"),
                error_string: sym!("nvrtcGetErrorString"),
                _lib: lib,
                _builtins: builtins,
            })
        }
    }

    /// `Ok` for NVRTC_SUCCESS, else an error naming the call and NVRTC's message.
    fn check(&self, status: Status, what: &str) -> Result<()> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any status.
        let msg = unsafe { CStr::from_ptr((self.error_string)(status)) };
        bail!("{what}: {} ({status})", msg.to_string_lossy())
    }
}

/// NVRTC opens `libnvrtc-builtins.so.X.Y` by bare name when it compiles, which only the loader's search path
/// answers. Loading the one beside `path` first makes that request find it already loaded (by its soname), so a
/// library outside the search path (a pip wheel's folder) works without LD_LIBRARY_PATH.
fn preload_builtins(path: &str) -> Option<libloading::Library> {
    let path = std::path::Path::new(path);
    // Only beside a library that is there: most candidates are names or paths that do not exist.
    if !path.is_file() {
        return None;
    }
    let dir = path.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt."))
        })
        .collect();
    // The newest version first, should a folder hold two.
    found.sort();
    found.into_iter().rev().find_map(|p| {
        // SAFETY: loading a shared library by path; it is kept for the process.
        unsafe { libloading::Library::new(&p) }.ok()
    })
}

/// Every path tried, in order: `$GAN_ENGINE_NVRTC_LIB_DIR/NAME`, then each bare NAME (LD_LIBRARY_PATH, the
/// loader cache), then the toolkit folders.
fn candidates() -> Vec<String> {
    let mut v = Vec::new();
    if let Some(dir) = std::env::var_os("GAN_ENGINE_NVRTC_LIB_DIR") {
        v.extend(
            LIB_NAMES
                .iter()
                .map(|n| PathBuf::from(&dir).join(n).to_string_lossy().into_owned()),
        );
    }
    v.extend(LIB_NAMES.iter().map(|n| n.to_string()));
    for d in LIB_DIRS {
        v.extend(LIB_NAMES.iter().map(|n| format!("{d}/{n}")));
    }
    v
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let tried = candidates();
        let mut broken = Vec::new();
        for path in &tried {
            match Api::open(path) {
                Ok(api) => return Ok(api),
                // A library that loads but lacks a symbol is worth naming; "not found" is not.
                Err(e) if e.contains(": undefined symbol") => broken.push(e),
                Err(_) => {}
            }
        }
        Err(format!(
            "NVRTC not found (tried libnvrtc.so.13, .so.12, .so.11.2 and libnvrtc.so in \
             $GAN_ENGINE_NVRTC_LIB_DIR, the loader's search path and {}){}. Install the CUDA toolkit, or \
             `pip install nvidia-cuda-nvrtc-cu12` and set GAN_ENGINE_NVRTC_LIB_DIR to its nvidia/cuda_nvrtc/lib",
            LIB_DIRS.join(", "),
            if broken.is_empty() {
                String::new()
            } else {
                format!("; unusable: {}", broken.join("; "))
            }
        ))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// Checks that an NVRTC library loads and has every function this engine calls.
pub fn ensure_available() -> Result<()> {
    api().map(|_| ())
}

/// The path of the NVRTC library in use (for `info` and the start-up banner).
pub fn library_path() -> Result<&'static str> {
    Ok(&api()?.path)
}

/// NVRTC's (major, minor) version.
pub fn version() -> Result<(i32, i32)> {
    let api = api()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to ints.
    api.check(
        unsafe { (api.version)(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    Ok((major, minor))
}

/// The SM architectures this NVRTC can generate code for, e.g. [75, 80, ..., 90, 100, 120].
pub fn supported_archs() -> Result<Vec<i32>> {
    let api = api()?;
    let mut n: c_int = 0;
    // SAFETY: out-pointer; the array is sized by the first call.
    api.check(
        unsafe { (api.num_archs)(&mut n) },
        "nvrtcGetNumSupportedArchs",
    )?;
    let mut v = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: `v` has the `n` entries NVRTC writes.
    api.check(
        unsafe { (api.archs)(v.as_mut_ptr()) },
        "nvrtcGetSupportedArchs",
    )?;
    Ok(v)
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

    let api = api()?;
    let mut prog: Program = std::ptr::null_mut();
    // SAFETY: all strings outlive the program (destroyed by the guard below); the arrays have `headers.len()`
    // entries.
    api.check(
        unsafe {
            (api.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                headers.len() as c_int,
                header_srcs.as_ptr(),
                header_names.as_ptr(),
            )
        },
        &format!("nvrtcCreateProgram({file})"),
    )?;
    struct Guard(&'static Api, Program);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: created above, destroyed once.
            unsafe { (self.0.destroy)(&mut self.1) };
        }
    }
    let guard = Guard(api, prog);

    let c_opts: Vec<CString> = opts
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<Result<_, _>>()?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: valid program; `opt_ptrs` holds `opts.len()` NUL-terminated strings alive for the call.
    let compiled = unsafe { (api.compile)(guard.1, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = read_sized(api, guard.1, api.log_size, api.log, "nvrtcGetProgramLog")
        .map(|v| c_chars_to_string(&v))
        .unwrap_or_default();
    if let Err(e) = api.check(compiled, "nvrtcCompileProgram") {
        bail!(
            "NVRTC failed to compile {file} for {target} ({e}):\n{}",
            log.trim_end()
        );
    }
    let is_cubin = target.starts_with("sm_");
    let mut image = if is_cubin {
        read_sized(api, guard.1, api.cubin_size, api.cubin, "nvrtcGetCUBIN")
    } else {
        read_sized(api, guard.1, api.ptx_size, api.ptx, "nvrtcGetPTX")
    }
    .with_context(|| format!("reading the compiled {file}"))?;
    if !is_cubin && image.last() != Some(&0) {
        image.push(0);
    }
    Ok(Compiled {
        image,
        is_cubin,
        log,
        from_cache: false,
    })
}

/// One of NVRTC's size-then-fill getters (log, PTX, CUBIN) read into a byte vector.
fn read_sized(
    api: &Api,
    prog: Program,
    size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    fill: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    what: &str,
) -> Result<Vec<u8>> {
    let mut n = 0usize;
    // SAFETY: valid program; out-pointer.
    api.check(unsafe { size(prog, &mut n) }, &format!("{what}Size"))?;
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` has the `n` bytes NVRTC asked for.
    api.check(unsafe { fill(prog, buf.as_mut_ptr() as *mut c_char) }, what)?;
    Ok(buf)
}

fn c_chars_to_string(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
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
