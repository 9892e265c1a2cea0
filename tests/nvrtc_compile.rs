//! Compiles every kernels/*.cu with NVRTC — PTX for compute_80, CUBIN for sm_80 and sm_90 with
//! `--ptxas-options=-v` — prints the per-kernel register / shared memory / spill report, and fails on a compile
//! error, a kernel missing from the output, or any register spill.
//!
//! NVRTC comes from `pip install nvidia-cuda-nvrtc-cu12` (its lib dir on LD_LIBRARY_PATH). Without it the test
//! prints a loud SKIPPED line, unless the environment variable CI is set, in which case it fails.

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
        match nvrtc::compile(file, "compute_80", &[]) {
            Ok(c) => {
                let ptx = String::from_utf8_lossy(&c.image);
                for k in &want {
                    if !ptx.contains(&format!(".entry {k}(")) {
                        failures.push(format!("{file} compute_80: entry {k} missing from the PTX"));
                    }
                }
            }
            Err(e) => failures.push(format!("{e:#}")),
        }

        for arch in ["sm_80", "sm_90"] {
            let c = match nvrtc::compile(file, arch, &["--ptxas-options=-v"]) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{e:#}"));
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
    let mut labels = std::collections::HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_suffix(':') {
            labels.insert(name, i);
        }
    }
    let is_instruction = |l: &str| l.ends_with(';') && !l.starts_with('.') && !l.starts_with("//");
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let target = l.split("bra").nth(1)?.split_whitespace().last()?;
            let from = *labels.get(target.trim_end_matches(';'))?;
            (from < i).then_some((from, i))
        })
        .filter_map(|(from, to)| {
            let body: Vec<&str> = lines[from..=to]
                .iter()
                .copied()
                .filter(|l| is_instruction(l))
                .collect();
            let work = body.iter().filter(|l| l.contains(op)).count();
            (work > 0).then_some(MainLoop {
                instructions: body.len(),
                work,
            })
        })
        .min_by_key(|m| m.instructions)
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

/// Prints each tensor-core conv kernel's main-loop instructions per MMA (docs/perf-notes.md records them), and
/// holds them under a ceiling so that a change that bloats the loop fails here before it reaches a GPU. The
/// bf16 / fp16 kernels' m16n8k16 does twice the work of TF32's m16n8k8: their ceiling per MMA is twice as high
/// (the same instructions per multiply-add).
#[test]
fn tensor_core_main_loops_per_mma() {
    if !nvrtc_or_skip() {
        return;
    }
    let c = nvrtc::compile("conv.cu", "compute_80", &[]).unwrap();
    let ptx = String::from_utf8_lossy(&c.image);
    let kernels: Vec<&str> = expected("conv.cu")
        .into_iter()
        .filter(|k| {
            k.starts_with("conv2d") && ["_tf32", "_bf16", "_fp16"].iter().any(|s| k.ends_with(s))
        })
        .collect();
    assert!(!kernels.is_empty(), "no tensor-core conv kernels found");
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

/// Prints the narrow backward-data kernels' loop over output channels (conv_narrow.cu) and holds it under a
/// ceiling of 1 + 5/C PTX instructions per FMA: each dy load feeds C FMAs (one per channel), and the load, its
/// address and the loop around it may cost 5 more. The kernels when this test was written were at 1.9-5.3.
#[test]
fn narrow_bwd_data_loops_per_fma() {
    if !nvrtc_or_skip() {
        return;
    }
    let c = nvrtc::compile("conv_narrow.cu", "compute_80", &[]).unwrap();
    let ptx = String::from_utf8_lossy(&c.image);
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
