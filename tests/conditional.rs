//! The class-conditional GAN: the label path through a training step (fake labels drawn from the seeded noise
//! stream, gradients reaching exactly the label weights of the classes present), and end to end through the
//! binary: `train --conditional` on balls, on a small synthetic labelled IDX set and (when present) on the real
//! MNIST files, bit-exact resume, `sample --class` / `--class-grid`, the errors, and old checkpoints.

use std::path::{Path, PathBuf};
use std::process::Output;

use gan_engine::checkpoint::TensorFile;
use gan_engine::nn::models::{ModelConfig, ModelKind};
use gan_engine::nn::ParamId;
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::gan::Batch;
use gan_engine::train::Gan;
use gan_engine::{Device, Tape, Tensor};

mod common;
use common::cli::{ok, stderr};
use common::idx::write_idx;

// ---- the training step ------------------------------------------------------------------------------------------

const CLASSES: usize = 10;
const NZ: usize = 5;

fn tiny_conditional_gan(kind: ModelKind, seed: u64) -> Gan {
    let cfg = ModelConfig {
        kind,
        image_size: 28,
        channels: 1,
        nz: NZ,
        ngf: 3,
        ndf: 3,
        hidden: 6,
        num_classes: CLASSES,
        tricks: Default::default(),
    };
    let a = AdamSettings::DCGAN;
    Gan::new(&cfg, &a, &a, LossKind::Ns, seed, &Device::Cpu).unwrap()
}

fn real(n: usize, seed: u64) -> Tensor {
    RngStream::new(seed)
        .uniform(&[n, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
        .unwrap()
}

/// The gradient of the parameter `name` after routing `grads` into a cleared store.
fn grad_of(
    store: &mut gan_engine::nn::ParamStore,
    grads: &gan_engine::autograd::Gradients,
    name: &str,
) -> (Vec<usize>, Vec<f32>) {
    store.zero_grad();
    store.accumulate_grads(grads).unwrap();
    let id = (0..store.len())
        .map(ParamId)
        .find(|&id| store.name(id) == name)
        .unwrap();
    let g = store.grad(id).unwrap();
    (g.shape().to_vec(), g.to_vec().unwrap())
}

#[test]
fn fake_labels_are_seeded_uniform_and_leave_unconditional_runs_alone() {
    let mut a = tiny_conditional_gan(ModelKind::Dcgan, 3);
    let mut b = tiny_conditional_gan(ModelKind::Dcgan, 3);
    let mut other = tiny_conditional_gan(ModelKind::Dcgan, 4);
    let la = a.draw_labels(2000).unwrap().unwrap();
    assert_eq!(la, b.draw_labels(2000).unwrap().unwrap(), "seeded");
    assert_ne!(la, other.draw_labels(2000).unwrap().unwrap());
    // The draw advanced the noise stream, so the next labels are new ones (and a resumed stream continues).
    assert_ne!(la[..50], a.draw_labels(50).unwrap().unwrap()[..]);
    let mut counts = [0usize; CLASSES];
    for &y in &la {
        counts[y as usize] += 1;
    }
    // 200 expected per class; 4.5 standard deviations either side.
    assert!(
        counts.iter().all(|&c| (137..=263).contains(&c)),
        "{counts:?}"
    );

    // An unconditional model draws no labels, so its runs consume exactly the random numbers they always did.
    let cfg = ModelConfig {
        num_classes: 0,
        ..a.g.cfg.clone()
    };
    let s = AdamSettings::DCGAN;
    let mut u = Gan::new(&cfg, &s, &s, LossKind::Ns, 3, &Device::Cpu).unwrap();
    let before = u.noise;
    assert!(u.draw_labels(8).unwrap().is_none());
    assert_eq!(u.noise, before);
}

#[test]
fn a_conditional_step_trains_exactly_the_label_weights_of_the_classes_present() {
    for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
        let mut gan = tiny_conditional_gan(kind, 5);
        let mut tape = Tape::new();
        let n = 4;
        let real_labels = [1u32, 1, 4, 7];
        let batch = Batch {
            images: real(n, 1),
            labels: Some(real_labels.to_vec()),
        };
        let latents = gan.latents(n).unwrap();
        let d = gan.d_step(&mut tape, batch, latents, 1).unwrap();
        let fake_labels = d
            .fake
            .labels
            .clone()
            .expect("a conditional D step draws fake labels");
        assert_eq!(fake_labels.len(), n);
        assert!(fake_labels.iter().all(|&y| (y as usize) < CLASSES));
        assert!(d.loss_d.is_finite());

        // D's first layer: the input slots of class c (a one-hot plane for DCGAN, one input feature for the
        // MLP) get a gradient exactly when c labels a real or a fake image of the step.
        let (shape, gw) = grad_of(&mut gan.d.store, &d.grads, "main.0.weight");
        let image_inputs = match kind {
            ModelKind::Dcgan => 1,
            ModelKind::Mlp => 28 * 28,
        };
        assert_eq!(shape[1], image_inputs + CLASSES, "{kind}: D input width");
        let per_in: usize = shape[2..].iter().product();
        let d_slot_grad = |c: usize| -> f32 {
            let i = image_inputs + c;
            (0..shape[0])
                .flat_map(|o| {
                    let start = (o * shape[1] + i) * per_in;
                    gw[start..start + per_in].to_vec()
                })
                .map(f32::abs)
                .sum()
        };
        for c in 0..CLASSES {
            let present = real_labels.contains(&(c as u32)) || fake_labels.contains(&(c as u32));
            let g = d_slot_grad(c);
            if present {
                assert!(
                    g > 0.0,
                    "{kind}: class {c} is in the batch but its D weights got no gradient"
                );
            } else {
                assert_eq!(
                    g, 0.0,
                    "{kind}: class {c} is absent but its D weights got a gradient"
                );
            }
        }

        // The G step judges the fake under its own labels: G's label inputs of exactly those classes learn.
        let g = gan.g_step(&mut tape, &d.fake, 1).unwrap();
        assert!(g.loss_g.is_finite());
        let (shape, gw) = grad_of(&mut gan.g.store, &g.grads, "main.0.weight");
        let g_slot_grad = |c: usize| -> f32 {
            let i = NZ + c;
            match kind {
                // ConvTranspose weight [in, out, k, k]: input channel i is one contiguous block.
                ModelKind::Dcgan => {
                    assert_eq!(shape[0], NZ + CLASSES);
                    let block: usize = shape[1..].iter().product();
                    gw[i * block..(i + 1) * block].iter().map(|x| x.abs()).sum()
                }
                // Linear weight [out, in]: input i is column i.
                ModelKind::Mlp => {
                    assert_eq!(shape[1], NZ + CLASSES);
                    (0..shape[0]).map(|o| gw[o * shape[1] + i].abs()).sum()
                }
            }
        };
        for c in 0..CLASSES {
            let gc = g_slot_grad(c);
            if fake_labels.contains(&(c as u32)) {
                assert!(gc > 0.0, "{kind}: G's class {c} input got no gradient");
            } else {
                assert_eq!(gc, 0.0, "{kind}: G's absent class {c} got a gradient");
            }
        }
    }
}

#[test]
fn a_conditional_model_refuses_a_step_without_labels() {
    let mut gan = tiny_conditional_gan(ModelKind::Dcgan, 6);
    let mut tape = Tape::new();
    let latents = gan.latents(2).unwrap();
    let e = gan
        .d_step(&mut tape, real(2, 1).into(), latents, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs a class label"), "{e}");
    let batch = Batch {
        images: real(2, 1),
        labels: Some(vec![1, 10]),
    };
    let latents = gan.latents(2).unwrap();
    let e = gan
        .d_step(&mut tape, batch, latents, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("class label 10 is out of range"), "{e}");
}

// ---- the binary ---------------------------------------------------------------------------------------------------

/// Fails with exit status 1 and one `error:` line containing every needle.
fn fails(args: &[&str], needles: &[&str]) {
    common::cli::fails(args, 1, needles);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny conditional DCGAN on `dataset` into `out`.
fn train(dataset: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--dataset",
        dataset,
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--nz",
        "8",
        "--batch-size",
        "4",
        "--num-samples",
        "6",
        "--quiet",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

fn tensors(p: &Path) -> TensorFile {
    TensorFile::load(p).unwrap()
}

fn model_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&tensors(p).metadata["model"]).unwrap()
}

fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.tensors.keys().collect::<Vec<_>>(),
        tb.tensors.keys().collect::<Vec<_>>()
    );
    for (name, x) in &ta.tensors {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&x.data) == bits(&tb.tensors[name].data),
            "{name} differs"
        );
    }
    let state = |t: &TensorFile| {
        let mut v: serde_json::Value = serde_json::from_str(&t.metadata["state"]).unwrap();
        v.as_object_mut().unwrap().remove("elapsed_s");
        v
    };
    assert_eq!(state(&ta), state(&tb));
}

fn read_npy(p: &Path) -> Tensor {
    gan_engine::io::read_npy(p, &Device::Cpu).unwrap()
}

/// Writes `n` latents of size `nz` to `path`.
fn write_z(path: &Path, n: usize, nz: usize, seed: u64) {
    let z = RngStream::new(seed)
        .normal(&[n, nz], 0.0, 1.0, &Device::Cpu)
        .unwrap();
    gan_engine::io::write_npy(path, &z).unwrap();
}

/// `--class-grid` row r equals `--class r` on the same latents, and the rows differ from each other.
fn check_class_grid(run: &Path, classes: usize, nz: usize, dir: &Path) {
    let z = dir.join("z.npy");
    let cols = 3;
    write_z(&z, cols, nz, 9);
    let grid = dir.join("grid.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(run),
        "--class-grid",
        "--z-npy",
        s(&z),
        "--out-npy",
        s(&grid),
    ]);
    // The labels go beside the images: row r is class r.
    let want: Vec<i64> = (0..classes as i64).flat_map(|r| [r; 3]).collect();
    assert_eq!(read_labels(&dir.join("grid.labels.npy")), want);
    let grid = read_npy(&grid);
    let numel: usize = grid.shape()[1..].iter().product();
    assert_eq!(grid.shape()[0], classes * cols);
    let grid = grid.to_vec().unwrap();
    let row_len = cols * numel;
    for r in 0..classes {
        let one = dir.join(format!("class{r}.npy"));
        ok(&[
            "sample",
            "--checkpoint",
            s(run),
            "--class",
            &r.to_string(),
            "--z-npy",
            s(&z),
            "--out-npy",
            s(&one),
        ]);
        let one = read_npy(&one).to_vec().unwrap();
        let row = &grid[r * row_len..(r + 1) * row_len];
        let worst = row
            .iter()
            .zip(&one)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "row {r} of the class grid is not class {r}: {worst}"
        );
    }
    assert_ne!(
        grid[..row_len],
        grid[row_len..2 * row_len],
        "rows 0 and 1 are the same"
    );

    // The PNG: one row per class, --nrow columns.
    let png = dir.join("grid.png");
    ok(&[
        "sample",
        "--checkpoint",
        s(run),
        "--class-grid",
        "--nrow",
        "5",
        "--out",
        s(&png),
    ]);
    let img = image::open(&png).unwrap();
    let side = 28 + gan_engine::io::GRID_PADDING;
    assert_eq!(
        (img.width() as usize, img.height() as usize),
        (
            5 * side + gan_engine::io::GRID_PADDING,
            classes * side + gan_engine::io::GRID_PADDING
        )
    );
}

#[test]
fn conditional_balls_trains_resumes_bit_exactly_and_samples_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ds = "balls:40";
    let size = ["--image-size", "28", "--channels", "1"];
    let mut full = size.to_vec();
    full.extend_from_slice(&["--conditional", "--steps", "4", "--k", "2"]);
    train(ds, &a, &full);
    let mut half = size.to_vec();
    half.extend_from_slice(&["--conditional", "--steps", "2", "--k", "2"]);
    train(ds, &b, &half);
    // The flag is kept on resume without being given again.
    let o = ok(&["train", "--resume", s(&b), "--steps", "4", "--quiet"]);
    assert!(
        stderr(&o).contains("conditional on 3 classes"),
        "{}",
        stderr(&o)
    );
    assert_same_checkpoint(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
    );
    assert_eq!(
        model_json(&a.join("generator.safetensors"))["num_classes"],
        3
    );
    // The first layers carry the one-hot inputs of the 3 ball counts.
    let t = tensors(&a.join("checkpoint.safetensors"));
    assert_eq!(t.tensors["G.main.0.weight"].shape[0], 8 + 3);
    assert_eq!(t.tensors["D.main.0.weight"].shape[1], 1 + 3);

    check_class_grid(&a, 3, 8, dir.path());

    fails(
        &["sample", "--checkpoint", s(&a), "--class", "3"],
        &["--class 3", "classes 0 to 2"],
    );
    fails(
        &[
            "train",
            "--resume",
            s(&a),
            "--steps",
            "6",
            "--dataset",
            "folder:/nowhere",
        ],
        &["trained on balls:40"],
    );
}

#[test]
fn conditional_mlp_trains_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mlp");
    train(
        "balls:12",
        &run,
        &[
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--image-size",
            "9",
            "--conditional",
            "--steps",
            "2",
        ],
    );
    let t = tensors(&run.join("checkpoint.safetensors"));
    assert_eq!(t.tensors["G.main.0.weight"].shape, [8, 8 + 3]);
    assert_eq!(t.tensors["D.main.0.weight"].shape, [32, 9 * 9 * 3 + 3]);
    let npy = dir.path().join("x.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(&run),
        "--class",
        "2",
        "--n",
        "5",
        "--out-npy",
        s(&npy),
    ]);
    assert_eq!(read_npy(&npy).shape(), [5, 3, 9, 9]);
    assert_eq!(read_labels(&dir.path().join("x.labels.npy")), [2; 5]);
}

/// A 1-D int64 .npy, as `sample --out-npy` writes a conditional generator's labels.
fn read_labels(p: &Path) -> Vec<i64> {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.shape(), [npy.shape()[0]]);
    npy.into_vec::<i64>().unwrap()
}

#[test]
fn conditional_training_on_labelled_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("idx");
    write_idx(&data, 21, 5, true);
    let spec = format!("mnist:{}", data.display());
    let run = dir.path().join("run");
    train(
        &spec,
        &run,
        &["--conditional", "--steps", "3", "--sample-every", "3"],
    );
    assert_eq!(
        model_json(&run.join("generator.safetensors"))["num_classes"],
        5
    );
    // The run's own grid (6 samples, 3 per row) is labelled by row.
    let img = image::open(run.join("samples/step_000003.png")).unwrap();
    let side = 28 + gan_engine::io::GRID_PADDING;
    assert_eq!(
        img.width() as usize,
        3 * side + gan_engine::io::GRID_PADDING
    );
    check_class_grid(&run, 5, 8, dir.path());

    // The same images without their label file cannot train a conditional model.
    let unlabelled = dir.path().join("nolabels");
    write_idx(&unlabelled, 8, 5, false);
    fails(
        &[
            "train",
            "--dataset",
            &format!("mnist:{}", unlabelled.display()),
            "--conditional",
            "--steps",
            "1",
            "--out",
            s(&dir.path().join("x")),
        ],
        &[
            "--conditional needs a dataset with class labels",
            "labels-idx1-ubyte",
        ],
    );
}

#[test]
fn conditional_training_on_the_real_mnist_files_if_present() {
    let dir = std::env::var_os("GAN_ENGINE_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    if !dir.join("train-labels-idx1-ubyte").exists()
        && !dir.join("train-labels-idx1-ubyte.gz").exists()
    {
        eprintln!(
            "skipped: no MNIST in {} (scripts/fetch_mnist.sh, or set GAN_ENGINE_MNIST_DIR)",
            dir.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = train(
        &format!("mnist:{}", dir.display()),
        &run,
        &["--conditional", "--steps", "2"],
    );
    let _ = o;
    assert_eq!(
        model_json(&run.join("generator.safetensors"))["num_classes"],
        10
    );
    let png = tmp.path().join("seven.png");
    ok(&[
        "sample",
        "--checkpoint",
        s(&run),
        "--class",
        "7",
        "--n",
        "4",
        "--out",
        s(&png),
    ]);
    assert!(png.exists());
}

#[test]
fn unlabelled_datasets_and_unconditional_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    image::RgbImage::from_pixel(9, 9, image::Rgb([9, 99, 199]))
        .save(pics.join("a.png"))
        .unwrap();
    fails(
        &[
            "train",
            "--dataset",
            &format!("folder:{}", pics.display()),
            "--conditional",
            "--out",
            s(&dir.path().join("f")),
        ],
        &[
            "--conditional needs a dataset with class labels",
            "has none",
        ],
    );

    let run = dir.path().join("plain");
    train("balls:8", &run, &["--steps", "1"]);
    for flag in [&["--class", "1"][..], &["--class-grid"][..]] {
        let mut args = vec!["sample", "--checkpoint", s(&run)];
        args.extend_from_slice(flag);
        fails(&args, &["unconditional generator", "--conditional"]);
    }
    fails(
        &[
            "train",
            "--resume",
            s(&run),
            "--conditional",
            "--steps",
            "2",
        ],
        &["unconditional model", "cannot be added on resume"],
    );
}

/// Removes `num_classes` from the model config JSON in `key` (at `path` within it) of a file's metadata.
fn strip_num_classes(file: &Path, key: &str, inner: Option<&str>) {
    let mut t = tensors(file);
    let mut v: serde_json::Value = serde_json::from_str(&t.metadata[key]).unwrap();
    let m = match inner {
        Some(k) => v.get_mut(k).unwrap(),
        None => &mut v,
    };
    assert!(m.as_object_mut().unwrap().remove("num_classes").is_some());
    t.metadata.insert(key.into(), v.to_string());
    t.save(file).unwrap();
}

#[test]
fn checkpoints_from_before_conditioning_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("old");
    train("balls:8", &run, &["--steps", "1"]);
    // Make the files what an older gan-engine wrote: no num_classes anywhere.
    strip_num_classes(&run.join("generator.safetensors"), "model", None);
    let ck = run.join("checkpoint.safetensors");
    strip_num_classes(&ck, "model", None);
    strip_num_classes(&ck, "train", Some("model"));
    assert!(!tensors(&ck).metadata["train"].contains("num_classes"));

    let npy = dir.path().join("x.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(&run.join("generator.safetensors")),
        "--n",
        "2",
        "--out-npy",
        s(&npy),
    ]);
    assert_eq!(read_npy(&npy).shape(), [2, 3, 32, 32]);
    ok(&[
        "sample",
        "--checkpoint",
        s(&ck),
        "--n",
        "2",
        "--out-npy",
        s(&npy),
    ]);
    let o = ok(&["train", "--resume", s(&run), "--steps", "2", "--quiet"]);
    assert!(stderr(&o).contains("resuming at step 1"), "{}", stderr(&o));
}

#[test]
fn conditional_training_on_the_emulated_cuda_backend_agrees_with_the_cpu() {
    let info = ok(&["info"]);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    if !info
        .lines()
        .any(|l| l.trim_start().starts_with("emu:") && !l.contains("unavailable"))
    {
        eprintln!("skipped: the CUDA emulation is not built in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cpu, emu) = (dir.path().join("cpu"), dir.path().join("emu"));
    let args = [
        "--conditional",
        "--steps",
        "2",
        "--image-size",
        "28",
        "--channels",
        "1",
    ];
    train("balls:16", &cpu, &args);
    let mut on_emu = args.to_vec();
    on_emu.extend_from_slice(&["--device", "emu"]);
    train("balls:16", &emu, &on_emu);
    common::cli::assert_cpu_and_emu_runs_agree(&cpu, &emu);
    let npy = dir.path().join("e.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(&emu),
        "--device",
        "emu",
        "--class",
        "1",
        "--n",
        "2",
        "--out-npy",
        s(&npy),
    ]);
    assert_eq!(read_npy(&npy).shape(), [2, 1, 28, 28]);
}
