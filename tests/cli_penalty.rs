//! Gradient penalties from the command line: `--loss wgan-gp`, `--r1` and `--dragan` train on MNIST on the CPU and on the
//! emulated CUDA backend (the same run on both), record their settings in the checkpoint, resume bit-exactly,
//! and refuse what they cannot do with one clear `error:` line.
//!
//! MNIST comes from `data/mnist` (or GAN_ENGINE_MNIST_DIR) when it is there; otherwise from small MNIST-format
//! files written here, so the runs happen either way.

use std::path::{Path, PathBuf};

use gan_engine::checkpoint::TensorFile;

mod common;
use common::cli::{assert_cpu_and_emu_runs_agree, fails, metrics, ok, tiny_train};
use common::idx::write_idx;

/// An MNIST spec: the real files when present, else 40 generated images in `tmp`.
fn mnist(tmp: &Path) -> String {
    let real = std::env::var_os("GAN_ENGINE_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    let dir = if ["", ".gz"]
        .iter()
        .any(|ext| real.join(format!("train-images-idx3-ubyte{ext}")).exists())
    {
        real
    } else {
        let d = tmp.join("idx");
        write_idx(&d, 40, 10, true);
        d
    };
    format!("mnist:{}", dir.display())
}

fn train_config(run: &Path) -> serde_json::Value {
    let t = TensorFile::load(&run.join("checkpoint.safetensors")).unwrap();
    serde_json::from_str(&t.metadata["train"]).unwrap()
}

fn same_checkpoint(a: &Path, b: &Path) {
    let (a, b) = (
        TensorFile::load(&a.join("checkpoint.safetensors")).unwrap(),
        TensorFile::load(&b.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, x) in &a.tensors {
        assert!(x.data == b.tensors[name].data, "{name} differs");
    }
}

#[test]
fn wgan_gp_and_r1_train_on_mnist_on_cpu_and_emu() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist(tmp.path());
    let runs: [(&str, &[&str]); 4] = [
        (
            "gp",
            &[
                "--loss",
                "wgan-gp",
                "--gp-lambda",
                "5",
                "--lr-d",
                "1e-4",
                "--beta1",
                "0",
                "--beta2",
                "0.9",
                "--k",
                "2",
            ],
        ),
        ("r1", &["--r1", "10"]),
        ("dragan", &["--dragan", "10"]),
        // The conditional critic's label planes join its input by concatenation, which the penalty
        // differentiates through as well.
        (
            "r1-cond-mlp",
            &[
                "--r1",
                "1",
                "--conditional",
                "--model",
                "mlp",
                "--hidden",
                "8",
            ],
        ),
    ];
    for (name, flags) in runs {
        let dir = |d: &str| tmp.path().join(format!("{name}-{d}"));
        let mut args = flags.to_vec();
        args.extend(["--steps", "2", "--log-every", "1"]);
        tiny_train(&data, &dir("cpu"), &args);
        if cfg!(feature = "emulation") {
            let mut on_emu = args.clone();
            on_emu.extend(["--device", "emu"]);
            tiny_train(&data, &dir("emu"), &on_emu);
            assert_cpu_and_emu_runs_agree(&dir("cpu"), &dir("emu"));
        }

        let (rows, csv) = metrics(&dir("cpu"));
        assert_eq!(rows.len(), 2, "{name}: {csv}");
        let finite = |v: &String| v.parse::<f64>().unwrap().is_finite();
        assert!(rows.iter().flatten().all(finite), "{name}: {csv}");
        let cfg = train_config(&dir("cpu"));
        let keys = TensorFile::load(&dir("cpu").join("checkpoint.safetensors")).unwrap();
        assert!(
            !keys
                .tensors
                .keys()
                .any(|k| k.starts_with("D.") && k.contains("running_mean")),
            "{name}: a penalised critic has no batch norm"
        );
        if name == "gp" {
            assert_eq!(cfg["loss"], "wgan-gp");
            assert_eq!(cfg["gp_lambda"], 5.0);
            assert!(cfg["r1"].is_null());
            // The critic's loss starts near λ: a fresh critic's input gradients are almost zero.
            let d0: f64 = rows[0][1].parse().unwrap();
            assert!((d0 - 5.0).abs() < 1.0, "{csv}");
        } else {
            assert_eq!(cfg["loss"], "ns");
            let penalty = if name == "dragan" { "dragan" } else { "r1" };
            assert!(cfg[penalty].as_f64().unwrap() > 0.0, "{name}: {cfg}");
        }
    }

    // A resumed WGAN-GP run keeps its loss and penalty and continues exactly as an uninterrupted one.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let gp = ["--loss", "wgan-gp", "--gp-lambda", "3", "--k", "2"];
    let with = |steps: &'static str| {
        let mut v = gp.to_vec();
        v.extend(["--steps", steps]);
        v
    };
    tiny_train(&data, &a, &with("3"));
    tiny_train(&data, &b, &with("2"));
    ok(&[
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--steps",
        "3",
        "--quiet",
    ]);
    assert_eq!(train_config(&b)["gp_lambda"], 3.0);
    same_checkpoint(&a, &b);
}

/// A one-step training command into `out`, with `extra`.
fn train<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--steps", "1", "--quiet", "--out", out];
    a.extend_from_slice(extra);
    a
}

#[test]
fn what_a_penalty_cannot_do_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = out.to_str().unwrap();
    // (extra flags, what the error must say)
    let refused: [(&[&str], &[&str]); 7] = [
        (
            &["--gp-lambda", "5"],
            &["--gp-lambda only applies to --loss wgan-gp"],
        ),
        (
            &["--loss", "wgan-gp", "--gp-lambda", "0"],
            &["--gp-lambda must be a positive"],
        ),
        (&["--r1", "0"], &["--r1 must be a positive"]),
        (&["--dragan", "inf"], &["--dragan must be a positive"]),
        (
            &["--loss", "wgan-gp", "--clip", "0.1"],
            &["--clip only applies to --loss wgan"],
        ),
        (
            &["--loss", "wgan-gp", "--d-downsample", "maxpool"],
            &[
                "--loss wgan-gp needs --d-downsample stride",
                "max pooling has no double backward",
            ],
        ),
        (
            &["--r1", "1", "--cuda-graph", "--device", "cuda"],
            &["--cuda-graph", "--r1"],
        ),
    ];
    for (extra, needles) in refused {
        fails(&train(out, extra), 1, needles);
    }
    // A run whose critic has batch norm cannot take a penalty on resume.
    let bn = tmp.path().join("bn");
    tiny_train("balls", &bn, &["--steps", "1"]);
    fails(
        &[
            "train",
            "--resume",
            bn.to_str().unwrap(),
            "--steps",
            "2",
            "--r1",
            "1",
        ],
        1,
        &["--r1 needs a critic without batch norm"],
    );
}
