//! Running the `gan-engine` binary in end-to-end tests: success with its output shown otherwise, failure as
//! exactly one `error:` line and no panic, and the tiny training run most CLI tests start from.

use std::path::Path;
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gan-engine"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and requires success, printing the output otherwise.
pub fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "gan-engine {args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    o
}

/// Runs and requires failure with `code`, exactly one `error:` line (progress lines may come first) holding
/// every needle, and no panic or backtrace. Returns the message from `error:` on.
pub fn fails(args: &[&str], code: i32, needles: &[&str]) -> String {
    failed(&run(args), args, code, needles)
}

/// [`fails`] for a run already made (e.g. under a memory cap, see [`capped`]).
pub fn failed(o: &Output, args: &[&str], code: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "gan-engine {args:?}: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    let msg = &err[err.find("error:").unwrap()..];
    for n in needles {
        assert!(
            msg.contains(n),
            "gan-engine {args:?}: expected '{n}' in: {err}"
        );
    }
    msg.to_string()
}

/// Runs the binary with its address space capped at `mib` MiB (`ulimit -v`): an allocation beyond it fails, which
/// aborts the process, so a test sees an exit status 134 instead of a machine thrashing.
pub fn capped(mib: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {}; exec \"$0\" \"$@\"", mib * 1024))
        .arg(env!("CARGO_BIN_EXE_gan-engine"))
        .args(args)
        .output()
        .expect("sh runs")
}

/// The arguments of the tiny run the CLI tests build on: DCGAN on `dataset` at its default size (32×32 for
/// balls) with 8-wide networks, nz 16, batch 4, no progress output, into `out`, then `extra`.
/// The tiny model and batch of the CLI tests: widths 8, nz 16, batch 4.
pub const TINY_MODEL: [&str; 8] = [
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--nz",
    "16",
    "--batch-size",
    "4",
];

pub fn tiny_train_args<'a>(dataset: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--dataset", dataset];
    args.extend(TINY_MODEL);
    args.extend(["--quiet", "--out", out.to_str().expect("a UTF-8 path")]);
    args.extend_from_slice(extra);
    args
}

/// The tiny run, required to succeed.
pub fn tiny_train(dataset: &str, out: &Path, extra: &[&str]) -> Output {
    ok(&tiny_train_args(dataset, out, extra))
}

/// The rows of a run's metrics.csv (header left out), each split at its commas, and the whole text for
/// assertion messages.
pub fn metrics(run: &Path) -> (Vec<Vec<String>>, String) {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).expect("the run has a metrics.csv");
    let rows = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (rows, csv)
}

/// The step column of a run's metrics.csv.
pub fn metric_steps(run: &Path) -> Vec<u64> {
    metrics(run)
        .0
        .iter()
        .map(|r| r[0].parse().expect("a step number"))
        .collect()
}

/// Asserts that two runs of the same training on the CPU and on the emulated GPU hold the same tensors, equal
/// to within 4e-5. An Adam step moves a weight by ~lr (up to 4e-4, G's default) whatever the gradient's size,
/// so agreement at a tenth of that means both backends computed the same gradients (and a wrong or missing
/// gradient would show). Where a gradient is near Adam's eps, a last-bit difference in it moves the step by a
/// fraction of lr, which is why the bound follows the rate and is not much tighter.
pub fn assert_cpu_and_emu_runs_agree(cpu: &Path, emu: &Path) {
    let load = |run: &Path| {
        gan_engine::checkpoint::TensorFile::load(&run.join("checkpoint.safetensors"))
            .expect("the run has a checkpoint")
    };
    let (a, b) = (load(cpu), load(emu));
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, x) in &a.tensors {
        let worst = x
            .data
            .iter()
            .zip(&b.tensors[name].data)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 4e-5, "{name}: cpu and emu differ by {worst}");
    }
}
