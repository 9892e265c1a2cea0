//! Hostile and careless input, end to end: files whose headers or metadata claim absurd sizes, user-given sizes
//! far beyond the limits (`src/limits.rs`), mutated files of every format the engine reads, runs killed or
//! interrupted mid-training, and two trainings into one directory. Every case must end in one clear `error:`
//! line (exit 1 or 2) or in success, never a panic or an abort, and a run directory must never lose data.
//!
//! Memory-hungry cases run under an address-space cap ([`capped`]), so a missing limit fails the test with
//! an abort instead of thrashing the machine. Each test prints how many bad inputs it tried (`--nocapture`).

use std::path::{Path, PathBuf};

use gan_engine::checkpoint::TensorFile;

mod common;
use common::cli::{capped, failed, fails, tiny_train};

/// Address-space cap of the capped runs: a tiny training needs well under this.
const CAP_MIB: u64 = 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A tiny finished run (DCGAN 32x32 on balls) in `dir/name`.
fn tiny_run(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let out = dir.join(name);
    tiny_train("balls", &out, &["--steps", steps]);
    out
}

/// Rewrites one metadata entry of a safetensors file: `edit` gets the JSON value and changes it.
fn edit_json(file: &Path, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut f = TensorFile::load(file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&f.metadata[key]).unwrap();
    edit(&mut v);
    f.metadata.insert(key.into(), v.to_string());
    f.save(file).unwrap();
}

/// Runs `args` under the memory cap and requires one clear error with exit 1 holding `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    failed(&capped(CAP_MIB, args), args, 1, needles);
}

#[test]
fn metadata_claiming_a_huge_model_or_dataset_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "run", "1");
    let mut tried = 0;
    for (key, field, value) in [
        ("ngf", "ngf", 10_000_000u64),
        ("nz", "nz", 1 << 40),
        ("num_classes", "classes", 100_000_000),
        ("ngf", "values", 500),
    ] {
        for file in ["generator.safetensors", "checkpoint.safetensors"] {
            let bad = dir.path().join(format!("bad-{key}-{value}"));
            std::fs::create_dir_all(&bad).unwrap();
            let p = bad.join(file);
            std::fs::copy(run.join(file), &p).unwrap();
            edit_json(&p, "model", |m| m[key] = value.into());
            refused(
                &[
                    "sample",
                    "--checkpoint",
                    s(&p),
                    "--out",
                    s(&bad.join("x.png")),
                ],
                &[field],
            );
            tried += 1;
            if file == "checkpoint.safetensors" {
                edit_json(&p, "train", |t| t["model"][key] = value.into());
                refused(&["train", "--resume", s(&bad), "--quiet"], &[field]);
                tried += 1;
            }
        }
    }
    // A checkpoint whose dataset is 10^12 procedural images.
    let bad = dir.path().join("bad-dataset");
    std::fs::create_dir_all(&bad).unwrap();
    let p = bad.join("checkpoint.safetensors");
    std::fs::copy(run.join("checkpoint.safetensors"), &p).unwrap();
    edit_json(&p, "train", |t| t["dataset"] = "balls:1000000000000".into());
    refused(
        &["train", "--resume", s(&bad), "--quiet"],
        &["balls:1000000000000", "at most"],
    );
    tried += 1;
    eprintln!("hostile metadata: {tried} bad inputs, {tried} clear errors");
}

/// A gzip stream of `head` followed by `zeros` zero bytes.
fn gz_bomb(head: &[u8], zeros: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(head).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        e.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

#[test]
fn a_gzip_bomb_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    // One 28x28 image in the header, then 1.5 GB of zeros (a 1.5 MB file): more than the cap if inflated.
    let mut head = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
    head.extend([7u8; 784]);
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        gz_bomb(&head, 1536 << 20),
    )
    .unwrap();
    let out = dir.path().join("run");
    let spec = format!("mnist:{}", s(&data));
    let args = common::cli::tiny_train_args(&spec, &out, &[]);
    refused(&args, &["does not match its header", "1 images of 28x28"]);
    eprintln!("hostile gzip: 1 bad input, 1 clear error");
}

#[test]
fn user_given_sizes_beyond_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "run", "1");
    let r = s(&run);
    let png = dir.path().join("x.png");
    let png = s(&png);
    let out = dir.path().join("new");
    let o = s(&out);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "sample",
                "--checkpoint",
                r,
                "--n",
                "100000000",
                "--out",
                png,
            ],
            1,
            "at most",
        ),
        (
            vec!["train", "--out", o, "--nz", "1000000000"],
            1,
            "nz (latent size)",
        ),
        (vec!["train", "--out", o, "--ngf", "100000000"], 1, "ngf"),
        (
            vec!["train", "--out", o, "--num-samples", "100000000"],
            1,
            "--num-samples",
        ),
        (
            vec!["train", "--out", o, "--dataset", "balls:999999999"],
            1,
            "at most",
        ),
        (
            vec!["train", "--out", o, "--model", "mlp", "--hidden", "1000000"],
            1,
            "hidden",
        ),
        (
            vec![
                "interpolate",
                "--checkpoint",
                r,
                "--steps",
                "1000000000",
                "--out",
                png,
            ],
            2,
            "--steps",
        ),
        (
            vec![
                "interpolate",
                "--checkpoint",
                r,
                "--gif-size",
                "1000000",
                "--out",
                png,
            ],
            2,
            "--gif-size",
        ),
        (
            vec![
                "sweep",
                "--checkpoint",
                r,
                "--dims",
                "0..18446744073709551615",
                "--out",
                png,
            ],
            1,
            "nz = 16",
        ),
        (
            vec![
                "sweep",
                "--checkpoint",
                r,
                "--dims",
                "0..=18446744073709551615",
                "--out",
                png,
            ],
            1,
            "nz = 16",
        ),
        (
            vec![
                "sweep",
                "--checkpoint",
                r,
                "--steps",
                "100000000",
                "--out",
                png,
            ],
            2,
            "--steps",
        ),
    ];
    for (args, code, needle) in &cases {
        failed(&capped(CAP_MIB, args), args, *code, &[needle]);
    }
    eprintln!(
        "hostile sizes: {} bad inputs, {0} clear errors",
        cases.len()
    );
}

#[test]
fn nan_latents_and_clip_without_wgan_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "run", "1");
    let z = dir.path().join("z.npy");
    let mut rows = vec![0.5f32; 2 * 16];
    rows[20] = f32::NAN;
    let t = gan_engine::Tensor::from_vec(rows, &[2, 16], &gan_engine::Device::Cpu).unwrap();
    gan_engine::io::write_npy(&z, &t).unwrap();
    fails(
        &[
            "sample",
            "--checkpoint",
            s(&run),
            "--z-npy",
            s(&z),
            "--out",
            s(&dir.path().join("x.png")),
        ],
        1,
        &["z.npy", "latent 1", "NaN"],
    );
    fails(
        &["train", "--out", s(&dir.path().join("c")), "--clip", "0.1"],
        1,
        &["--clip", "--loss wgan"],
    );
    eprintln!("hostile flags: 2 bad inputs, 2 clear errors");
}
