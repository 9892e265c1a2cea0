//! What the CLI prints: the progress line `train` writes without a terminal (one line per sample grid, with the
//! losses, D's outputs and who is winning, see src/train/balance.rs), and nothing at all when its reader goes
//! away.

mod common;

use std::process::Stdio;

use common::cli::{bin, ok, stderr};

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

#[test]
fn progress_lines_say_who_is_winning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = ok(&[
        "train",
        "--dataset",
        "balls:64",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--nz",
        "16",
        "--batch-size",
        "4",
        "--steps",
        "4",
        "--sample-every",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
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
    let o = ok(&[
        "train",
        "--dataset",
        "balls:64",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--nz",
        "16",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--sample-every",
        "2",
        "--loss",
        "hinge",
        "--out",
        dir.path().join("hinge").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(
        err.contains("raw D(x)") && !err.contains("balanced"),
        "{err}"
    );
}
