//! What the CLI prints: the progress line `train` writes without a terminal (one line per sample grid, with the
//! losses, D's outputs and who is winning, see src/train/balance.rs), and nothing at all when its reader goes
//! away.

mod common;

use std::process::Stdio;

use common::cli::{bin, ok, stderr, tiny_train_args};

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    // `gan-engine info | true`: the reader is gone before the first line is written (the process takes
    // milliseconds to start), so the first print meets a closed pipe.
    let mut child = bin()
        .arg("info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("error"), "{err}");
    assert_ne!(o.status.code(), Some(1), "{err}");
}

/// The stderr of the tiny run (`tiny_train_args`) with its progress lines: without --quiet, a line every 2 steps.
fn progress(out: &std::path::Path, extra: &[&str]) -> String {
    let mut args: Vec<&str> = tiny_train_args("balls:64", out, &["--sample-every", "2"])
        .into_iter()
        .filter(|a| *a != "--quiet")
        .collect();
    args.extend_from_slice(extra);
    stderr(&ok(&args))
}

#[test]
fn progress_lines_say_who_is_winning() {
    let dir = tempfile::tempdir().unwrap();
    let err = progress(&dir.path().join("run"), &["--steps", "4"]);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    for l in lines {
        assert!(
            ["D winning", "D ahead", "balanced", "G ahead"]
                .iter()
                .any(|v| l.contains(&format!("{v}, "))),
            "no verdict in: {l}"
        );
    }
    // Raw-output losses have no probabilities to compare: no verdict.
    let err = progress(
        &dir.path().join("hinge"),
        &["--steps", "2", "--loss", "hinge"],
    );
    assert!(
        err.contains("raw D(x)") && !err.contains("balanced"),
        "{err}"
    );
}
