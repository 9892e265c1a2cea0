//! Compiles every kernels/*.cu with NVRTC — PTX for compute_80, CUBIN for sm_80 and sm_90 with
//! `--ptxas-options=-v` — prints the per-kernel register / shared memory / spill report, and fails on a compile
//! error, a kernel missing from the output, or any register spill. Also counts the tensor-core conv kernels'
//! main loops, in PTX and in SASS (the cubins disassembled with nvdisasm), against per-kernel ceilings.
//!
//! NVRTC comes from `pip install nvidia-cuda-nvrtc-cu12` (its lib dir on LD_LIBRARY_PATH). Without it the test
//! prints a loud SKIPPED line, unless the environment variable CI is set, in which case it fails. nvdisasm comes
//! from `pip install nvidia-cuda-nvdisasm`, named by GAN_ENGINE_NVDISASM (scripts/test.sh installs it and sets
//! that); see [`find_nvdisasm`] for when its absence fails and when it skips.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use gan_engine::cuda::nvrtc;
use gan_engine::cuda::runtime::kernels;

fn nvrtc_or_skip() -> bool {
    match nvrtc::ensure_available() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but NVRTC is unavailable: {e}");
            }
            eprintln!("\n\n*** SKIPPED nvrtc_compile: {e} ***\n\n");
            false
        }
    }
}

/// `file` compiled for `target` (CUBINs with `--ptxas-options=-v`), once per binary: the tests run in parallel
/// and several need the same image (conv.cu for sm_90 is the slowest compile), so the first to ask compiles and
/// the others wait for it.
fn compile_once(file: &str, target: &str) -> Arc<Result<nvrtc::Compiled, String>> {
    type Slot = Arc<OnceLock<Arc<Result<nvrtc::Compiled, String>>>>;
    static SLOTS: Mutex<BTreeMap<(String, String), Slot>> = Mutex::new(BTreeMap::new());
    let slot = SLOTS
        .lock()
        .unwrap()
        .entry((file.to_string(), target.to_string()))
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let extra: &[&str] = if target.starts_with("sm_") {
            &["--ptxas-options=-v"]
        } else {
            &[]
        };
        Arc::new(nvrtc::compile(file, target, extra).map_err(|e| format!("{e:#}")))
    })
    .clone()
}

/// The PTX of `file` for compute_80, as text.
fn ptx_of(file: &str) -> String {
    match &*compile_once(file, "compute_80") {
        Ok(c) => String::from_utf8_lossy(&c.image).into_owned(),
        Err(e) => panic!("{e}"),
    }
}

/// Kernels of `file` according to the signature table parsed by build.rs.
fn expected(file: &str) -> Vec<&'static str> {
    let stem = file.trim_end_matches(".cu");
    kernels()
        .iter()
        .filter(|k| k.module == stem && !k.emu_only)
        .map(|k| k.name)
        .collect()
}

#[test]
fn every_kernel_compiles_without_spills() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    println!("NVRTC {major}.{minor}");
    let files = nvrtc::kernel_files();
    assert!(!files.is_empty(), "no kernel sources embedded");
    let mut failures = Vec::new();
    let mut compiled = 0usize;
    for file in &files {
        let want = expected(file);

        // PTX for the oldest architecture we support: every entry must be present.
        match &*compile_once(file, "compute_80") {
            Ok(c) => {
                let ptx = String::from_utf8_lossy(&c.image);
                for k in &want {
                    if !ptx.contains(&format!(".entry {k}(")) {
                        failures.push(format!("{file} compute_80: entry {k} missing from the PTX"));
                    }
                }
            }
            Err(e) => failures.push(e.clone()),
        }

        for arch in ["sm_80", "sm_90"] {
            let c = compile_once(file, arch);
            let c = match &*c {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e.clone());
                    continue;
                }
            };
            let report = nvrtc::parse_ptxas_report(&c.log).unwrap();
            println!("{file} [{arch}]");
            println!(
                "  {:<34} {:>5} {:>8} {:>6} {:>7}",
                "kernel", "regs", "smem B", "stack", "spills"
            );
            for r in &report {
                println!(
                    "  {:<34} {:>5} {:>8} {:>6} {:>7}",
                    r.name,
                    r.registers,
                    r.shared_bytes,
                    r.stack_bytes,
                    r.spill_stores + r.spill_loads
                );
                if r.spill_stores + r.spill_loads > 0 {
                    failures.push(format!(
                        "{file} [{arch}] {}: {} bytes spill stores, {} bytes spill loads",
                        r.name, r.spill_stores, r.spill_loads
                    ));
                }
            }
            for k in &want {
                if !report.iter().any(|r| r.name == *k) {
                    failures.push(format!(
                        "{file} [{arch}]: no ptxas report for {k} (log:\n{})",
                        c.log
                    ));
                }
            }
            if arch == "sm_90" {
                compiled += report
                    .iter()
                    .filter(|r| want.contains(&r.name.as_str()))
                    .count();
            }
        }
    }
    let total: usize = files.iter().map(|f| expected(f).len()).sum();
    println!(
        "{compiled} kernels compiled (of {total} in the signature table) from {} files",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "NVRTC failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(compiled, total);
}

#[test]
fn disk_cache_round_trip() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("GAN_ENGINE_CACHE_DIR", dir.path());
    let first = nvrtc::compile_cached("elementwise.cu", "sm_90").unwrap();
    assert!(!first.from_cache && first.is_cubin && !first.image.is_empty());
    let second = nvrtc::compile_cached("elementwise.cu", "sm_90").unwrap();
    assert!(
        second.from_cache,
        "second compile should come from the cache"
    );
    assert_eq!(first.image, second.image);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "exactly one cache file: {files:?}");
}

#[test]
fn device_target_selection() {
    if !nvrtc_or_skip() {
        return;
    }
    assert_eq!(nvrtc::target_for(90).unwrap(), "sm_90");
    assert_eq!(nvrtc::target_for(80).unwrap(), "sm_80");
    // An architecture newer than this NVRTC knows falls back to PTX of the newest one it does.
    let archs = nvrtc::supported_archs().unwrap();
    let newest = *archs.iter().max().unwrap();
    assert_eq!(
        nvrtc::target_for(newest + 1).unwrap(),
        format!("compute_{newest}")
    );
}

/// The static instruction count of a kernel's main loop, read from its PTX, and how many of them do the work
/// (`mma.sync` in a tensor-core kernel, `fma.rn.f32` in an FMA kernel).
#[derive(Debug, PartialEq)]
struct MainLoop {
    instructions: usize,
    work: usize,
}

/// The innermost loop of `kernel` that holds an instruction containing `op`, in the PTX of its file: the lines
/// from a label to the last backward branch to it. Every instruction line in between counts once (both sides of
/// a branch inside the loop), so this is what the loop's body costs per trip as written, not a dynamic count.
fn main_loop(ptx: &str, kernel: &str, op: &str) -> Option<MainLoop> {
    let start = ptx.find(&format!(".entry {kernel}("))?;
    let body = &ptx[start..];
    let end = body[1..].find(".entry ").map_or(body.len(), |e| e + 1);
    let lines: Vec<&str> = body[..end].lines().map(str::trim).collect();
    let body = innermost_loop(
        &lines,
        |l| l.strip_suffix(':'),
        |l| {
            Some(
                l.split("bra")
                    .nth(1)?
                    .split_whitespace()
                    .last()?
                    .trim_end_matches(';'),
            )
        },
        |l| l.ends_with(';') && !l.starts_with('.') && !l.starts_with("//"),
        |l| l.contains(op),
    )?;
    Some(MainLoop {
        instructions: body.len(),
        work: body.iter().filter(|l| l.contains(op)).count(),
    })
}

/// The instruction lines of the smallest loop in `lines` that holds a `work` instruction: a loop runs from a label
/// to a backward branch to it. `label` names the label a line defines, `target` the label a branch line jumps to.
fn innermost_loop<'a>(
    lines: &[&'a str],
    label: impl Fn(&'a str) -> Option<&'a str>,
    target: impl Fn(&'a str) -> Option<&'a str>,
    is_instruction: impl Fn(&str) -> bool,
    is_work: impl Fn(&str) -> bool,
) -> Option<Vec<&'a str>> {
    let labels: std::collections::HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((label(l)?, i)))
        .collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let from = *labels.get(target(l)?)?;
            (from < i).then_some((from, i))
        })
        .map(|(from, to)| {
            lines[from..=to]
                .iter()
                .copied()
                .filter(|l| is_instruction(l))
                .collect::<Vec<_>>()
        })
        .filter(|body| body.iter().any(|l| is_work(l)))
        .min_by_key(Vec::len)
}

#[test]
fn main_loop_is_found_in_ptx() {
    let ptx = ".visible .entry k(\n.reg .f32 %f<4>;\nmov.u32 %r1, 0;\n$L__BB0_1:\nld.shared.f32 %f1, [%r1];\n\
               @%p1 bra $L__BB0_2;\nadd.s32 %r1, %r1, 4;\n$L__BB0_2:\nmma.sync.aligned.m16n8k8 {%f1}, {%r1}, {%r2}, {%f1};\n\
               setp.lt.s32 %p2, %r1, 64;\n@%p2 bra $L__BB0_1;\nret;\n}\n.visible .entry other(\nret;\n}\n";
    assert_eq!(
        main_loop(ptx, "k", "mma.sync"),
        Some(MainLoop {
            instructions: 6,
            work: 1
        })
    );
    assert_eq!(main_loop(ptx, "other", "mma.sync"), None);
    assert_eq!(main_loop(ptx, "k", "fma.rn"), None);
}

/// The files that hold tensor-core conv kernels: the NCHW path and the channels-last 16-bit forward.
const TENSOR_CORE_FILES: [&str; 2] = ["conv.cu", "conv_nhwc.cu"];

/// The tensor-core conv kernels (`conv2d_*_{tf32,bf16,fp16}`) of `file` in the signature table.
fn tensor_core_kernels(file: &str) -> Vec<&'static str> {
    let kernels: Vec<&str> = expected(file)
        .into_iter()
        .filter(|k| {
            k.starts_with("conv2d") && ["_tf32", "_bf16", "_fp16"].iter().any(|s| k.ends_with(s))
        })
        .collect();
    assert!(!kernels.is_empty(), "no tensor-core conv kernels found");
    kernels
}

/// Prints each tensor-core conv kernel's main-loop PTX instructions per MMA (docs/perf-notes.md records them),
/// and holds them under a loose ceiling. PTX is only a cheap first look: ptxas rewrites the loop (movs vanish,
/// F2FP packs two values, loads change form), and a change that cut PTX per MMA by a quarter has left SASS no
/// lower. The SASS count of [`tensor_core_sass_per_hmma`] is the number that counts.
/// The bf16 / fp16 kernels' m16n8k16 does twice the work of TF32's m16n8k8: their ceiling per MMA is twice as
/// high (the same instructions per multiply-add).
#[test]
fn tensor_core_main_loops_per_mma() {
    if !nvrtc_or_skip() {
        return;
    }
    let ptx = ptx_of("conv.cu");
    let kernels = tensor_core_kernels("conv.cu");
    // Before the cp.async pipeline the loops were at 18-25 PTX instructions per mma; the pipelined ones are at
    // 11-16 (docs/perf-notes.md, "TF32 conv main loop"). The ceiling sits just above the worst of them.
    const CEILING: f64 = 17.0;
    for k in kernels {
        let m = main_loop(&ptx, k, "mma.sync")
            .unwrap_or_else(|| panic!("{k}: no loop with an mma in its PTX"));
        let per = m.instructions as f64 / m.work as f64;
        let ceiling = if k.ends_with("_tf32") {
            CEILING
        } else {
            2.0 * CEILING
        };
        println!(
            "{k:27} main loop: {:4} PTX instructions, {:3} mma, {per:5.1} per mma",
            m.instructions, m.work
        );
        assert!(
            per <= ceiling,
            "{k}: {per:.1} instructions per mma (ceiling {ceiling})"
        );
    }
}

/// SASS instructions per HMMA allowed in each tensor-core conv kernel's main loop, by kernel (the precision
/// suffix taken off) and column: [`SASS_ARCHS`] in order, each TF32 then bf16 / fp16 (one ceiling, their loops
/// differ only in type suffixes). About 3 % above the counts of the kernels when the ceilings were set
/// (docs/perf-notes.md, "Tap masks"), so that a loop that grows fails here; lower a ceiling when a kernel
/// gets cheaper.
const SASS_CEILINGS: &[(&str, [f64; 4])] = &[
    // kernel, sm_80 TF32, sm_80 bf16 / fp16, sm_90 TF32, sm_90 bf16 / fp16
    ("conv2d_fwd", [9.8, 13.8, 9.8, 13.9]),
    ("conv2d_bwd_data", [9.7, 13.6, 9.7, 13.6]),
    ("conv2d_bwd_weight", [11.8, 17.9, 11.8, 17.8]),
    ("conv2d_fwd_m128", [8.1, 12.2, 8.2, 12.2]),
    ("conv2d_bwd_data_m128", [7.8, 11.5, 7.8, 11.5]),
    ("conv2d_bwd_weight_m128", [9.2, 14.0, 9.2, 14.0]),
    // conv_nhwc.cu
    ("conv2d_fwd_nhwc", [2.8, 3.6, 2.8, 3.7]),
    ("conv2d_fwd_nhwc_m128", [2.6, 3.3, 2.7, 3.4]),
    ("conv2d_bwd_data_nhwc", [3.1, 3.6, 3.1, 3.7]),
    ("conv2d_bwd_data_nhwc_m128", [2.8, 3.5, 2.8, 3.5]),
    ("conv2d_bwd_weight_nhwc", [4.7, 4.4, 4.7, 4.4]),
    ("conv2d_bwd_weight_nhwc_m128", [4.2, 4.0, 4.3, 4.0]),
];

/// The architectures the SASS count compiles for.
const SASS_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// The NVRTC release (major, minor) the ceilings were measured with, the one scripts/test.sh pins. Another
/// release compiles the loops differently, so there (on a GPU host's CUDA toolkit, say) the counts are printed
/// but not held to the ceilings.
const SASS_NVRTC: (i32, i32) = (12, 9);

/// Where a CUDA toolkit keeps nvdisasm when it is not on PATH.
const TOOLKIT_BIN: &str = "/usr/local/cuda/bin";

/// The nvdisasm to run: `var` (GAN_ENGINE_NVDISASM, which scripts/test.sh sets to the one it installs from PyPI
/// `nvidia-cuda-nvdisasm`) when set, which must then name a file; else `nvdisasm` on `path` (PATH), as a CUDA
/// toolkit has it. With neither: an error when `ci` (CI is set), so that CI never passes without the count;
/// `None` otherwise, and the test prints a loud SKIPPED line, as the NVRTC tests do without NVRTC.
fn find_nvdisasm(
    var: Option<&OsStr>,
    path: Option<&OsStr>,
    ci: bool,
) -> Result<Option<PathBuf>, String> {
    if let Some(tool) = var {
        let tool = PathBuf::from(tool);
        return if tool.is_file() {
            Ok(Some(tool))
        } else {
            Err(format!(
                "GAN_ENGINE_NVDISASM={} is not a file (pip install nvidia-cuda-nvdisasm; \
                 scripts/test.sh does)",
                tool.display()
            ))
        };
    }
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nvdisasm"))
        .find(|tool| tool.is_file());
    match on_path {
        Some(tool) => Ok(Some(tool)),
        None if ci => Err(
            "CI is set but nvdisasm was not found: set GAN_ENGINE_NVDISASM \
                          (scripts/test.sh installs pip's nvidia-cuda-nvdisasm and sets it)"
                .to_string(),
        ),
        None => Ok(None),
    }
}

/// `nvdisasm -c` of `cubin`: the SASS of every function, one instruction a line.
fn disassemble(tool: &Path, cubin: &[u8]) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("kernels.cubin");
    std::fs::write(&file, cubin).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = std::process::Command::new(tool)
        .arg("-c")
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} -c failed ({}):\n{}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("nvdisasm output is not UTF-8: {e}"))
}

/// A main loop in SASS: its instructions and its HMMAs, and the HMMAs counted in m16n8k8 units (a bf16 / fp16
/// m16n8k16 is two).
#[derive(Debug, PartialEq)]
struct SassLoop {
    instructions: usize,
    hmma: usize,
    k8_units: usize,
}

/// The HMMA's k in units of 8 (`HMMA.1688...` 1, `HMMA.16816...` 2), or None when `line` is no HMMA.
fn hmma_k8_units(line: &str) -> Option<usize> {
    let shape = line.split_once(" HMMA.")?.1.split('.').next()?;
    let k: usize = shape.strip_prefix("168")?.parse().ok()?;
    Some(k / 8)
}

/// The innermost loop holding an HMMA of `kernel` in `sass` (`nvdisasm -c`), by the rule of [`main_loop`]:
/// the function runs from its `.text.KERNEL:` line to the next function's; instruction lines start with their
/// address comment (`/*0a10*/`), labels are `.L_x_N:`, branches `BRA` to `` `(.L_x_N) ``.
fn sass_main_loop(sass: &str, kernel: &str) -> Option<SassLoop> {
    let body = sass_loop(sass, kernel, |l| hmma_k8_units(l).is_some())?;
    Some(SassLoop {
        instructions: body.len(),
        hmma: body.iter().filter_map(|l| hmma_k8_units(l)).count(),
        k8_units: body.iter().filter_map(|l| hmma_k8_units(l)).sum(),
    })
}

/// The instruction lines of the innermost loop of `kernel` in `sass` that holds an `is_work` instruction
/// ([`sass_main_loop`]'s rule).
fn sass_loop<'a>(
    sass: &'a str,
    kernel: &str,
    is_work: impl Fn(&str) -> bool,
) -> Option<Vec<&'a str>> {
    let mut lines = sass.lines().map(str::trim);
    let header = format!(".text.{kernel}:");
    lines.by_ref().find(|l| *l == header)?;
    let function: Vec<&str> = lines
        .take_while(|l| !(l.starts_with(".text.") && l.ends_with(':')))
        .collect();
    innermost_loop(
        &function,
        |l| l.strip_suffix(':').filter(|name| name.starts_with(".L")),
        |l| {
            Some(
                l.split_once(" BRA ")?
                    .1
                    .split_once("`(")?
                    .1
                    .split_once(')')?
                    .0,
            )
        },
        |l| l.starts_with("/*"),
        is_work,
    )
}

#[test]
fn main_loop_is_found_in_sass() {
    let sass = "\t.section\t.text.k,\"ax\",@progbits\n.text.k:\n\
        /*0000*/ MOV R1, c[0x0][0x28] ;\n.L_x_0:\n\
        /*0010*/ LDSM.16.M88.4 R8, [R2] ;\n\
        /*0020*/ @P0 BRA `(.L_x_1) ;\n\
        /*0030*/ IADD3 R2, R2, 0x10, RZ ;\n.L_x_1:\n\
        /*0040*/ HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n\
        /*0050*/ HMMA.1688.F32.TF32 R4, R8, R12, R4 ;\n\
        /*0060*/ @P1 BRA `(.L_x_0) ;\n\
        /*0070*/ EXIT ;\n.L_x_2:\n\
        /*0080*/ BRA `(.L_x_2);\n\
        \t.section\t.text.other,\"ax\",@progbits\n.text.other:\n\
        .L_x_3:\n/*0000*/ HMMA.1688.F32.TF32 R4, R8, R12, R4 ;\n/*0010*/ BRA `(.L_x_3);\n";
    assert_eq!(
        sass_main_loop(sass, "k"),
        Some(SassLoop {
            instructions: 6,
            hmma: 2,
            k8_units: 3
        })
    );
    assert_eq!(
        sass_main_loop(sass, "other"),
        Some(SassLoop {
            instructions: 2,
            hmma: 1,
            k8_units: 1
        })
    );
    assert_eq!(sass_main_loop(sass, "absent"), None);
}

#[test]
fn nvdisasm_is_required_where_it_must_be() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("nvdisasm");
    let missing = dir.path().join("missing");
    let empty = tempfile::tempdir().unwrap();
    // Nothing to run: skipped by a user, an error under CI or when the variable names no file.
    assert_eq!(
        find_nvdisasm(None, Some(empty.path().as_os_str()), false),
        Ok(None)
    );
    assert!(find_nvdisasm(None, Some(empty.path().as_os_str()), true).is_err());
    assert!(find_nvdisasm(None, None, true).is_err());
    let err = find_nvdisasm(Some(missing.as_os_str()), None, false).unwrap_err();
    assert!(err.contains("GAN_ENGINE_NVDISASM"), "{err}");
    std::fs::write(&tool, "").unwrap();
    assert_eq!(
        find_nvdisasm(Some(tool.as_os_str()), None, true),
        Ok(Some(tool.clone()))
    );
    assert_eq!(
        find_nvdisasm(None, Some(dir.path().as_os_str()), true),
        Ok(Some(tool.clone()))
    );
    // A tool that runs and fails is an error, not a skip.
    let err = disassemble(Path::new("false"), b"not a cubin").unwrap_err();
    assert!(err.contains("failed"), "{err}");
}

/// The nvdisasm for a SASS count (see [`find_nvdisasm`]; searched on PATH, then in [`TOOLKIT_BIN`]) and whether
/// the ceilings hold (NVRTC [`SASS_NVRTC`]); None, with a loud SKIPPED line naming `test`, where there is none
/// and none is required.
fn sass_tool(test: &str) -> Option<(PathBuf, bool)> {
    let mut search: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    search.push(PathBuf::from(TOOLKIT_BIN));
    let search = std::env::join_paths(search).unwrap();
    let tool = match find_nvdisasm(
        std::env::var_os("GAN_ENGINE_NVDISASM").as_deref(),
        Some(search.as_os_str()),
        std::env::var_os("CI").is_some(),
    ) {
        Ok(Some(tool)) => tool,
        Ok(None) => {
            eprintln!("\n\n*** SKIPPED {test}: no nvdisasm (set GAN_ENGINE_NVDISASM) ***\n\n");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let version = std::process::Command::new(&tool)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (major, minor) = nvrtc::version().unwrap();
    println!(
        "NVRTC {major}.{minor}; {}: {}",
        tool.display(),
        version
            .lines()
            .find(|l| l.contains("release"))
            .unwrap_or("version unknown")
    );
    let enforce = (major, minor) == SASS_NVRTC;
    if !enforce {
        eprintln!(
            "\n\n*** {test}: NVRTC {major}.{minor}, not {}.{} (the ceilings' compiler): counts printed, \
             ceilings not held ***\n\n",
            SASS_NVRTC.0, SASS_NVRTC.1
        );
    }
    Some((tool, enforce))
}

/// Prints each tensor-core conv kernel's main loop in SASS, what the GPU issues, for sm_80 and sm_90: NVRTC's
/// cubin disassembled by nvdisasm, the loop found by the rule of [`main_loop`] (static count: every instruction of
/// the loop body once). Fails above the kernel's ceiling in [`SASS_CEILINGS`] (with NVRTC [`SASS_NVRTC`]), and
/// when nvdisasm is wanted (GAN_ENGINE_NVDISASM or CI set, see [`find_nvdisasm`]; searched on PATH, then in
/// [`TOOLKIT_BIN`]) but missing or failing.
#[test]
fn tensor_core_sass_per_hmma() {
    if !nvrtc_or_skip() {
        return;
    }
    let Some((tool, enforce)) = sass_tool("tensor_core_sass_per_hmma") else {
        return;
    };
    let mut failures = Vec::new();
    for file in TENSOR_CORE_FILES {
        sass_per_hmma_of(file, &tool, enforce, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// SASS instructions per FFMA allowed in the main loop of each channels-last FP32 kernel (conv_nhwc.cu, the
/// `_f32` suffix taken off), [`SASS_ARCHS`] in order. About 3 % above the counts when they were set
/// (docs/perf-notes.md, "Channels-last FP32").
const FP32_SASS_CEILINGS: &[(&str, [f64; 2])] = &[
    ("conv2d_fwd_nhwc", [1.14, 1.14]),
    ("conv2d_fwd_nhwc_m128", [1.14, 1.14]),
    ("conv2d_bwd_data_nhwc", [1.14, 1.14]),
    ("conv2d_bwd_data_nhwc_m128", [1.14, 1.14]),
    ("conv2d_bwd_weight_nhwc", [1.25, 1.25]),
    ("conv2d_bwd_weight_nhwc_m128", [1.29, 1.29]),
];

/// [`tensor_core_sass_per_hmma`] for the channels-last FP32 kernels, whose work is FFMA: prints each main loop's
/// instructions, FFMAs and shared loads (LDS) per FFMA, and holds them under [`FP32_SASS_CEILINGS`]. A loop of
/// nothing but FFMAs would be 1.0.
#[test]
fn fp32_sass_per_ffma() {
    if !nvrtc_or_skip() {
        return;
    }
    let Some((tool, enforce)) = sass_tool("fp32_sass_per_ffma") else {
        return;
    };
    let file = "conv_nhwc.cu";
    let kernels: Vec<&str> = expected(file)
        .into_iter()
        .filter(|k| k.starts_with("conv2d") && k.ends_with("_f32"))
        .collect();
    assert_eq!(kernels.len(), FP32_SASS_CEILINGS.len(), "{kernels:?}");
    let is_ffma = |l: &str| l.contains(" FFMA ");
    let mut failures = Vec::new();
    for (a, arch) in SASS_ARCHS.into_iter().enumerate() {
        let sass = match &*compile_once(file, arch) {
            Ok(c) => disassemble(&tool, &c.image).unwrap_or_else(|e| panic!("{e}")),
            Err(e) => panic!("{e}"),
        };
        println!("{file} [{arch}] FP32 main loops in SASS");
        println!(
            "  {:<32} {:>11} {:>5} {:>5} {:>9} {:>8}",
            "kernel", "SASS instr", "FFMA", "LDS", "per FFMA", "ceiling"
        );
        for k in &kernels {
            let Some(body) = sass_loop(&sass, k, is_ffma) else {
                failures.push(format!("{k} [{arch}]: no loop with an FFMA in its SASS"));
                continue;
            };
            let ffma = body.iter().filter(|l| is_ffma(l)).count();
            let lds = body.iter().filter(|l| l.contains(" LDS")).count();
            let per = body.len() as f64 / ffma as f64;
            let stem = k.strip_suffix("_f32").unwrap();
            let ceiling = FP32_SASS_CEILINGS
                .iter()
                .find(|(s, _)| *s == stem)
                .map(|(_, c)| c[a]);
            println!(
                "  {k:<32} {:>11} {ffma:>5} {lds:>5} {per:>9.2} {:>8}",
                body.len(),
                ceiling.map_or("none".to_string(), |c| format!("{c:.2}"))
            );
            hold(
                &mut failures,
                &format!("{k} [{arch}]"),
                "FP32_SASS_CEILINGS",
                ceiling,
                per,
                "FFMA",
                enforce,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// [`tensor_core_sass_per_hmma`] for the kernels of one file: prints their rows, and adds to `failures` each
/// kernel without a loop, without a ceiling, or (when `enforce`) above it.
fn sass_per_hmma_of(file: &str, tool: &Path, enforce: bool, failures: &mut Vec<String>) {
    let kernels = tensor_core_kernels(file);
    // Both architectures at once: the two compiles of conv.cu are most of this test's time.
    let listings: Vec<Result<String, String>> = std::thread::scope(|s| {
        let jobs = SASS_ARCHS.map(|arch| {
            s.spawn(move || match &*compile_once(file, arch) {
                Ok(c) => disassemble(tool, &c.image),
                Err(e) => Err(e.clone()),
            })
        });
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (a, (arch, sass)) in SASS_ARCHS.into_iter().zip(listings).enumerate() {
        let sass = sass.unwrap_or_else(|e| panic!("{e}"));
        println!("{file} [{arch}] main loops in SASS");
        println!(
            "  {:<32} {:>11} {:>5} {:>9} {:>13} {:>8}",
            "kernel", "SASS instr", "HMMA", "per HMMA", "per m16n8k8", "ceiling"
        );
        for k in &kernels {
            let Some(m) = sass_main_loop(&sass, k) else {
                failures.push(format!("{k} [{arch}]: no loop with an HMMA in its SASS"));
                continue;
            };
            let per = m.instructions as f64 / m.hmma as f64;
            let (stem, precision) = k.rsplit_once('_').unwrap();
            let column = 2 * a + usize::from(precision != "tf32");
            let ceiling = SASS_CEILINGS
                .iter()
                .find(|(s, _)| *s == stem)
                .map(|(_, c)| c[column]);
            println!(
                "  {k:<32} {:>11} {:>5} {per:>9.1} {:>13.1} {:>8}",
                m.instructions,
                m.hmma,
                m.instructions as f64 / m.k8_units as f64,
                ceiling.map_or("none".to_string(), |c| format!("{c:.1}"))
            );
            hold(
                failures,
                &format!("{k} [{arch}]"),
                "SASS_CEILINGS",
                ceiling,
                per,
                "HMMA",
                enforce,
            );
        }
    }
}

/// Prints the narrow backward-data kernels' loop over output channels (conv_narrow.cu) and holds it under a
/// ceiling of 1 + 5/C PTX instructions per FMA: each dy load feeds C FMAs (one per channel), and the load, its
/// address and the loop around it may cost 5 more. The kernels when this test was written were at 1.9-5.3.
#[test]
fn narrow_bwd_data_loops_per_fma() {
    if !nvrtc_or_skip() {
        return;
    }
    let ptx = ptx_of("conv_narrow.cu");
    let kernels = expected("conv_narrow.cu");
    assert_eq!(kernels.len(), 8, "{kernels:?}");
    for k in kernels {
        let channels: f64 = k["conv2d_bwd_data_narrow_c".len()..][..1].parse().unwrap();
        let m = main_loop(&ptx, k, "fma.rn.f32")
            .unwrap_or_else(|| panic!("{k}: no loop with an FMA in its PTX"));
        let per = m.instructions as f64 / m.work as f64;
        let ceiling = 1.0 + 5.0 / channels;
        println!(
            "{k:34} loop: {:4} PTX instructions, {:3} fma, {per:4.2} per fma (ceiling {ceiling:4.2})",
            m.instructions, m.work
        );
        assert!(per <= ceiling, "{k}: {per:.2} instructions per FMA");
    }
}

/// Adds to `failures` a kernel (`what`) without a ceiling in `table`, or, when `enforce`, one whose SASS
/// instructions `per` unit of work lie above it.
fn hold(
    failures: &mut Vec<String>,
    what: &str,
    table: &str,
    ceiling: Option<f64>,
    per: f64,
    unit: &str,
    enforce: bool,
) {
    match ceiling {
        None => failures.push(format!("{what}: no entry in {table}")),
        Some(c) if enforce && per > c => failures.push(format!(
            "{what}: {per:.3} SASS instructions per {unit}, ceiling {c}"
        )),
        Some(_) => {}
    }
}
