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
    // Written as command lines (the temporary paths hold no spaces).
    let cases = [
        (
            format!("sample --checkpoint {r} --n 100000000 --out {png}"),
            1,
            "at most",
        ),
        (
            format!("train --out {o} --nz 1000000000"),
            1,
            "nz (latent size)",
        ),
        (format!("train --out {o} --ngf 100000000"), 1, "ngf"),
        (
            format!("train --out {o} --num-samples 100000000"),
            1,
            "--num-samples",
        ),
        (
            format!("train --out {o} --dataset balls:999999999"),
            1,
            "at most",
        ),
        (
            format!("train --out {o} --model mlp --hidden 1000000"),
            1,
            "hidden",
        ),
        (
            format!("interpolate --checkpoint {r} --steps 1000000000 --out {png}"),
            2,
            "--steps",
        ),
        (
            format!("interpolate --checkpoint {r} --gif-size 1000000 --out {png}"),
            2,
            "--gif-size",
        ),
        (
            format!("sweep --checkpoint {r} --dims 0..18446744073709551615 --out {png}"),
            1,
            "nz = 16",
        ),
        (
            format!("sweep --checkpoint {r} --dims 0..=18446744073709551615 --out {png}"),
            1,
            "nz = 16",
        ),
        (
            format!("sweep --checkpoint {r} --steps 100000000 --out {png}"),
            2,
            "--steps",
        ),
    ];
    for (line, code, needle) in &cases {
        let args: Vec<&str> = line.split_whitespace().collect();
        failed(&capped(CAP_MIB, &args), &args, *code, &[needle]);
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

/// The bytes of every file of a run directory (top level and samples/), by name, without the lock file.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for sub in ["", "samples"] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() && !p.ends_with(".lock") {
                out.push((
                    format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn step_of(file: &Path) -> u64 {
    let f = TensorFile::load(file).unwrap();
    match f.metadata.get("state") {
        Some(s) => serde_json::from_str::<serde_json::Value>(s).unwrap()["step"]
            .as_u64()
            .unwrap(),
        None => f.metadata["step"].parse().unwrap(),
    }
}

#[test]
fn a_run_is_never_replaced_without_overwrite_nor_cleared_by_a_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_run(dir.path(), "a", "2");
    let b = dir.path().join("b");
    tiny_train("balls", &b, &["--steps", "1", "--seed", "7"]);
    let before = snapshot(&b);
    // Continuing A into B, which holds another run, is refused like a fresh run into B.
    fails(
        &[
            "train",
            "--resume",
            s(&a),
            "--out",
            s(&b),
            "--steps",
            "3",
            "--quiet",
        ],
        1,
        &["already holds another run", "--overwrite"],
    );
    assert_eq!(snapshot(&b), before, "B untouched");
    // A new run that fails at its first step (every picture of its folder is truncated) leaves B whole, even
    // with --overwrite.
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for i in 0..6 {
        let img = image::RgbImage::from_fn(40, 40, |x, y| {
            image::Rgb([x as u8 * 6, y as u8 * 6, i * 40])
        });
        let mut png = vec![];
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(pics.join(format!("{i}.png")), &png[..png.len() / 2]).unwrap();
    }
    let spec = format!("folder:{}", s(&pics));
    fails(
        &common::cli::tiny_train_args(&spec, &b, &["--overwrite"]),
        1,
        &["decode"],
    );
    assert_eq!(
        snapshot(&b),
        before,
        "B untouched by a run that never started"
    );
    // With --overwrite, continuing A into B replaces B's run entirely: nothing of B's is mixed in.
    let o = common::cli::ok(&[
        "train",
        "--resume",
        s(&a),
        "--out",
        s(&b),
        "--steps",
        "3",
        "--overwrite",
        "--quiet",
    ]);
    drop(o);
    assert_eq!(common::cli::metric_steps(&b), [3]);
    assert!(
        !b.join("samples/step_000001.png").exists(),
        "B's old grids are gone"
    );
    assert_eq!(step_of(&b.join("checkpoint.safetensors")), 3);
    assert_eq!(step_of(&b.join("generator.safetensors")), 3);
    eprintln!("hostile run directories: 2 bad inputs, 2 clear errors, 0 runs lost data");
}

#[test]
fn a_diverging_run_keeps_a_checkpoint_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "run", "2");
    let r = s(&run);
    // G's weights reach ~1e30 at step 3 while the losses are still finite; step 4's loss is NaN.
    fails(
        &[
            "train",
            "--resume",
            r,
            "--steps",
            "8",
            "--lr-g",
            "1e30",
            "--checkpoint-every",
            "1",
            "--quiet",
        ],
        1,
        &["diverged"],
    );
    let ck = TensorFile::load(&run.join("checkpoint.safetensors")).unwrap();
    for (name, t) in &ck.tensors {
        assert!(
            t.data.iter().all(|v| v.abs() <= 1e18),
            "{name} was saved diverged"
        );
    }
    // The kept checkpoint trains on with a sane learning rate.
    common::cli::ok(&["train", "--resume", r, "--steps", "5", "--quiet"]);
    eprintln!("hostile divergence: 1 bad input, 1 clear error, 0 runs lost data");
}

/// Starts a training into `out` that would run for long, and waits until it has written its first checkpoint.
// The child is handed to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
fn start_long_run(out: &Path, resume: bool) -> std::process::Child {
    let long = ["--steps", "100000", "--checkpoint-every", "1"];
    let args = if resume {
        let mut a = vec!["train", "--quiet", "--resume", s(out)];
        a.extend(long);
        a
    } else {
        common::cli::tiny_train_args("balls", out, &long)
    };
    let before = std::fs::metadata(out.join("checkpoint.safetensors"))
        .and_then(|m| m.modified())
        .ok();
    let mut child = common::cli::bin()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let now = std::fs::metadata(out.join("checkpoint.safetensors"))
            .and_then(|m| m.modified())
            .ok();
        if now.is_some() && now != before {
            return child;
        }
        if t0.elapsed().as_secs() > 60 {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("no checkpoint after 60 s: {}", common::cli::stderr(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_second_writer_is_refused_and_sigint_saves_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = start_long_run(&run, false);
    for extra in [
        &["--resume", s(&run)][..],
        &["--overwrite", "--out", s(&run)][..],
    ] {
        // Bounded, so that without the lock the second writer would finish (and the test fail) quickly.
        let mut args = vec!["train", "--steps", "30", "--quiet"];
        args.extend(extra);
        fails(&args, 1, &["in use by another training"]);
    }
    signal(&first, "-INT");
    let o = first.wait_with_output().unwrap();
    let err = common::cli::stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: the run is saved at step") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("error:"), "{err}");
    let step = step_of(&run.join("checkpoint.safetensors"));
    assert_eq!(step_of(&run.join("generator.safetensors")), step);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        csv.lines().last().unwrap().starts_with(&format!("{step},")),
        "{csv}"
    );
    common::cli::ok(&[
        "train",
        "--resume",
        s(&run),
        "--steps",
        &(step + 2).to_string(),
        "--quiet",
    ]);

    // A second Ctrl-C while the first is being handled ends the process at once, still with status 130.
    let again = start_long_run(&run, true);
    signal(&again, "-INT");
    signal(&again, "-INT");
    let o = again.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", common::cli::stderr(&o));
    TensorFile::load(&run.join("checkpoint.safetensors")).unwrap();
    eprintln!("hostile writers and signals: 2 bad inputs, 2 clear errors, 0 runs lost data");
}

#[test]
fn kill_9_at_random_points_always_leaves_a_consistent_resumable_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A fixed-seed LCG picks the kill delays, so a failure reproduces.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut last_step = 0;
    let kills = 10;
    for k in 0..kills {
        let child = start_long_run(&run, k > 0);
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(20 + (x >> 33) % 300));
        signal(&child, "-KILL");
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), None, "killed by the signal");
        let step = step_of(&run.join("checkpoint.safetensors"));
        assert!(
            step >= last_step.max(1),
            "kill {k}: checkpoint went back from {last_step} to {step}"
        );
        // A save is one unit: the generator is always at the checkpoint's step.
        let g = step_of(&run.join("generator.safetensors"));
        assert_eq!(g, step, "kill {k}: generator at {g}, checkpoint at {step}");
        last_step = step;
    }
    common::cli::ok(&[
        "train",
        "--resume",
        s(&run),
        "--steps",
        &(last_step + 2).to_string(),
        "--quiet",
    ]);
    let step = step_of(&run.join("checkpoint.safetensors"));
    assert_eq!(step, last_step + 2);
    assert_eq!(step_of(&run.join("generator.safetensors")), step);
    let steps = common::cli::metric_steps(&run);
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "one row per step: {steps:?}"
    );
    let tmp: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".tmp").then_some(n)
        })
        .collect();
    assert!(tmp.is_empty(), "stale temporaries: {tmp:?}");
    eprintln!("hostile kill -9: {kills} kills, 0 runs lost data");
}

#[test]
fn a_run_resumes_from_any_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let data = work.join("m");
    std::fs::create_dir_all(&data).unwrap();
    // A tiny MNIST-format set: 8 images of 28x28.
    let mut imgs = vec![0, 0, 8, 3, 0, 0, 0, 8, 0, 0, 0, 28, 0, 0, 0, 28];
    imgs.extend((0..8 * 784).map(|i| (i * 7 % 256) as u8));
    std::fs::write(data.join("train-images-idx3-ubyte"), imgs).unwrap();
    let run = dir.path().join("run");
    let train = |cwd: &Path, args: &[&str]| {
        let o = common::cli::bin()
            .current_dir(cwd)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", common::cli::stderr(&o));
    };
    train(
        &work,
        &common::cli::tiny_train_args("mnist:m", &run, &["--steps", "1"]),
    );
    // Resumed from elsewhere, the relative path given at the start still finds the data.
    train(
        dir.path(),
        &["train", "--resume", s(&run), "--steps", "2", "--quiet"],
    );
    // A dataset that is gone is named with the path that was tried.
    std::fs::remove_dir_all(&data).unwrap();
    fails(
        &["train", "--resume", s(&run), "--steps", "3", "--quiet"],
        1,
        &[s(&data)],
    );
    eprintln!("hostile resume elsewhere: 1 bad input, 1 clear error");
}

/// A seeded xorshift generator: the mutation loops below are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutant of `valid`: random byte flips, a truncation, an insertion, or a 4-byte field set to an extreme
/// value, biased towards the first `header` bytes where the sizes live.
fn mutate(rng: &mut Rng, valid: &[u8], header: usize) -> Vec<u8> {
    let mut b = valid.to_vec();
    let at = |rng: &mut Rng, len: usize| {
        if rng.below(2) == 0 {
            rng.below(header.min(len))
        } else {
            rng.below(len)
        }
    };
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = at(rng, b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(valid.len())),
        2 => {
            let i = at(rng, b.len());
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, extra);
        }
        3 => {
            let i = at(rng, b.len().saturating_sub(4));
            let v: [u8; 4] = match rng.below(3) {
                0 => [0xff; 4],
                1 => [0; 4],
                _ => (rng.next() as u32).to_le_bytes(),
            };
            let end = (i + 4).min(b.len());
            b[i..end].copy_from_slice(&v[..end - i]);
        }
        _ => {
            // A digit of a JSON header turned into many: sizes in metadata grow by orders of magnitude.
            let digits: Vec<usize> = b[..header.min(b.len())]
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            if !digits.is_empty() {
                let i = digits[rng.below(digits.len())];
                b.splice(i..i, std::iter::repeat_n(b'9', 1 + rng.below(12)));
            }
        }
    }
    b
}

/// Counts of one mutation loop.
#[derive(Default)]
struct Tally {
    tried: usize,
    errors: usize,
    accepted: usize,
    panics: usize,
}

impl Tally {
    /// Runs `read` on one mutant, counting its outcome; an error must name `what` (the file).
    fn run(&mut self, what: &str, read: impl FnOnce() -> gan_engine::Result<()>) {
        self.tried += 1;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
            Ok(Ok(())) => self.accepted += 1,
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains(what),
                    "an error that does not name {what}: {msg}"
                );
                self.errors += 1;
            }
            Err(_) => self.panics += 1,
        }
    }

    fn report(&self, format: &str) {
        eprintln!(
            "hostile {format}: {} mutants, {} clear errors, {} accepted, {} panics",
            self.tried, self.errors, self.accepted, self.panics
        );
        assert_eq!(self.panics, 0, "{format}: a reader panicked");
    }
}

const MUTANTS: usize = 400;

#[test]
fn mutated_idx_files_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut valid = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 5];
    valid.extend((0..75).map(|i| i as u8 * 3));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3];
    let gz = |b: &[u8]| gz_bomb(b, 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = Tally::default();
    let p = dir.path().join("train-images-idx3-ubyte");
    let lp = dir.path().join("train-labels-idx1-ubyte");
    for i in 0..MUTANTS {
        let (base, path) = if i % 4 == 3 {
            (&labels, &lp)
        } else {
            (&valid, &p)
        };
        let m = mutate(&mut rng, base, 16);
        // Every other mutant is gzipped (a valid stream of mutated content); some gzip streams are mutated.
        let bytes = match i % 3 {
            0 => m,
            1 => gz(&m),
            _ => mutate(&mut rng, &gz(base), 24),
        };
        std::fs::write(path, &bytes).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        if path == &p {
            t.run(name, || gan_engine::data::read_idx_images(path).map(drop));
        } else {
            t.run(name, || gan_engine::data::read_idx_labels(path).map(drop));
        }
    }
    t.report("IDX");
}

#[test]
fn mutated_npy_latents_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.npy");
    let z = gan_engine::Tensor::from_vec(
        (0..24).map(|i| i as f32 / 7.0).collect(),
        &[3, 8],
        &gan_engine::Device::Cpu,
    )
    .unwrap();
    gan_engine::io::write_npy(&p, &z).unwrap();
    let valid = std::fs::read(&p).unwrap();
    mutation_loop(0x1234_5678_9abc_def1, &valid, 128, &p, |p| {
        gan_engine::io::read_latents(p, &gan_engine::Device::Cpu).map(drop)
    })
    .report("npy");
}

/// [`MUTANTS`] mutants of `valid` written to `path` in turn, each read by `read`.
fn mutation_loop(
    seed: u64,
    valid: &[u8],
    header: usize,
    path: &Path,
    read: impl Fn(&Path) -> gan_engine::Result<()>,
) -> Tally {
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    let name = path.file_name().unwrap().to_str().unwrap();
    for _ in 0..MUTANTS {
        std::fs::write(path, mutate(&mut rng, valid, header)).unwrap();
        t.run(name, || read(path));
    }
    t
}

#[test]
fn mutated_safetensors_generators_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "run", "1");
    let valid = std::fs::read(run.join("generator.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let p = dir.path().join("g.safetensors");
    mutation_loop(0x0dd_b1a5_e5ca_1ab1, &valid, header, &p, |p| {
        gan_engine::checkpoint::load_generator(p, &gan_engine::Device::Cpu).map(drop)
    })
    .report("safetensors");
}

#[test]
fn mutated_pictures_in_a_folder_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(24, 20, |x, y| image::Rgb([x as u8 * 9, y as u8 * 11, 77]));
    let mut valid = vec![];
    for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let mut b = vec![];
        img.write_to(&mut std::io::Cursor::new(&mut b), fmt)
            .unwrap();
        valid.push((
            b,
            if fmt == image::ImageFormat::Png {
                "png"
            } else {
                "jpg"
            },
        ));
    }
    let mut rng = Rng(0xfeed_face_cafe_beef);
    let mut t = Tally::default();
    for i in 0..MUTANTS / 2 {
        let folder = dir.path().join(format!("f{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let (b, ext) = &valid[i % 2];
        std::fs::write(folder.join(format!("x.{ext}")), mutate(&mut rng, b, 64)).unwrap();
        let name = format!("f{i}");
        t.run(&name, || {
            let ds = gan_engine::data::FolderDataset::open(&folder, 16, 3, 1)?;
            gan_engine::data::Dataset::get(&ds, 0).map(drop)
        });
    }
    t.report("image folder");
}

#[test]
fn resuming_with_another_cpu_thread_count_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let go = |threads: &str, args: &[&str]| {
        let o = common::cli::bin()
            .env("RAYON_NUM_THREADS", threads)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::cli::stderr(&o));
    };
    // Uninterrupted with 2 threads; and 2 steps with 2 threads, resumed with 1 and then 3 threads.
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    let args = |out, steps| {
        common::cli::tiny_train_args("balls", out, &["--steps", steps, "--log-every", "1"])
    };
    go("2", &args(&whole, "6"));
    go("2", &args(&resumed, "2"));
    go(
        "1",
        &["train", "--resume", s(&resumed), "--steps", "4", "--quiet"],
    );
    go(
        "3",
        &["train", "--resume", s(&resumed), "--steps", "6", "--quiet"],
    );
    // Everything but the timing columns (img_per_s, elapsed_s).
    let losses = |run: &Path| -> Vec<Vec<String>> {
        common::cli::metrics(run)
            .0
            .into_iter()
            .map(|mut r| {
                r.truncate(6);
                r
            })
            .collect()
    };
    assert_eq!(losses(&resumed), losses(&whole));
    assert_eq!(losses(&whole).len(), 6, "6 steps");
    let weights = |run: &Path| {
        let f = TensorFile::load(&run.join("checkpoint.safetensors")).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        f.tensors
            .iter()
            .map(|(k, t)| (k.clone(), bits(&t.data)))
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(&resumed), weights(&whole));
}
