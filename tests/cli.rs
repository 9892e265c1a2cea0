//! End-to-end tests of the `gan-engine` binary on tiny settings: outputs of a run, sampling, resume, and that
//! every failure is one clear `error:` line with the right exit status (2 usage, 1 otherwise), never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;

use gan_engine::checkpoint::TensorFile;

mod common;
use common::cli::{fails, ok, stderr, tiny_train};

fn train(out: &Path, extra: &[&str]) -> Output {
    tiny_train("balls", out, extra)
}

fn tensors(path: &Path) -> TensorFile {
    TensorFile::load(path).unwrap()
}

#[test]
fn train_writes_grids_metrics_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train(
        &out,
        &[
            "--steps",
            "3",
            "--sample-every",
            "2",
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
        ],
    );
    for f in ["samples/step_000002.png", "samples/step_000003.png"] {
        let img = image::open(out.join(f)).unwrap();
        // 64 samples in an 8×8 grid of 32-pixel images with 2-pixel padding.
        assert_eq!((img.width(), img.height()), (8 * 34 + 2, 8 * 34 + 2), "{f}");
    }
    // Beside them, the training images: cell k of real.png is the dataset's image k (seed 0).
    let real = image::open(out.join("samples/real.png")).unwrap().to_rgb8();
    assert_eq!((real.width(), real.height()), (8 * 34 + 2, 8 * 34 + 2));
    let balls =
        gan_engine::data::BallsDataset::new(0, gan_engine::data::DEFAULT_BALLS_LEN, 32, 3).unwrap();
    for k in [0usize, 9, 63] {
        let (px, _) = balls.render(k);
        let (x0, y0) = (2 + (k % 8) * 34, 2 + (k / 8) * 34);
        for (y, x) in [(0usize, 0usize), (16, 16), (31, 5), (7, 30)] {
            for c in 0..3 {
                let want = ((px[c * 1024 + y * 32 + x] + 1.0) * 0.5 * 255.0 + 0.5).floor() as u8;
                assert_eq!(
                    real.get_pixel((x0 + x) as u32, (y0 + y) as u32)[c],
                    want,
                    "image {k} ({y}, {x}) c{c}"
                );
            }
        }
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    for (i, l) in lines[1..].iter().enumerate() {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 8, "{l}");
        assert_eq!(v[0], (i + 1) as f64);
        assert!(v[1..].iter().all(|x| x.is_finite()), "{l}");
        assert!((0.0..=1.0).contains(&v[3]), "D(x) is a probability: {l}");
    }
    let ck = tensors(&out.join("checkpoint.safetensors"));
    assert!(ck.tensors.contains_key("G.main.0.weight"));
    assert!(ck.tensors.contains_key("D.main.8.weight"));
    assert!(ck.tensors.keys().any(|k| k.starts_with("opt_G.")));
    assert!(ck.tensors.keys().any(|k| k.starts_with("opt_D.")));
    let g = tensors(&out.join("generator.safetensors"));
    assert_eq!(g.tensors["main.0.weight"].shape, [16, 32, 4, 4]);
    assert_eq!(g.tensors["main.1.num_batches_tracked"].data, [3.0]);
    assert!(g.tensors.keys().all(|k| k.starts_with("main.")));

    // `sample` with the run's seed draws the run's fixed z: it reproduces the last sample grid exactly.
    let again = dir.path().join("again.png");
    ok(&[
        "sample",
        "--checkpoint",
        out.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&again).unwrap()
            == std::fs::read(out.join("samples/step_000003.png")).unwrap(),
        "sample --seed 0 reproduces the training grid"
    );

    // Sampling from the run directory, as a grid and as .npy, from drawn and from given latents.
    let grid = dir.path().join("grid.png");
    ok(&[
        "sample",
        "--checkpoint",
        out.to_str().unwrap(),
        "--n",
        "9",
        "--out",
        grid.to_str().unwrap(),
    ]);
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 34 + 2, 3 * 34 + 2));

    let zpath = dir.path().join("z.npy");
    let z = gan_engine::Tensor::from_vec(
        (0..5 * 16).map(|i| ((i as f32) * 0.37).sin()).collect(),
        &[5, 16, 1, 1],
        &gan_engine::Device::Cpu,
    )
    .unwrap();
    gan_engine::io::write_npy(&zpath, &z).unwrap();
    let npy = dir.path().join("imgs.npy");
    for src in ["checkpoint.safetensors", "generator.safetensors"] {
        ok(&[
            "sample",
            "--checkpoint",
            out.join(src).to_str().unwrap(),
            "--z-npy",
            zpath.to_str().unwrap(),
            "--out-npy",
            npy.to_str().unwrap(),
        ]);
        let imgs = gan_engine::io::read_npy(&npy, &gan_engine::Device::Cpu).unwrap();
        assert_eq!(imgs.shape(), [5, 3, 32, 32]);
        assert!(imgs.to_vec().unwrap().iter().all(|x| x.abs() <= 1.0));
        // An unconditional generator has no labels to write.
        assert!(!dir.path().join("imgs.labels.npy").exists());
    }
    // Latents of the wrong size.
    let z7 = gan_engine::Tensor::zeros(&[2, 7], &gan_engine::Device::Cpu).unwrap();
    gan_engine::io::write_npy(&zpath, &z7).unwrap();
    fails(
        &[
            "sample",
            "--checkpoint",
            out.to_str().unwrap(),
            "--z-npy",
            zpath.to_str().unwrap(),
            "--out-npy",
            npy.to_str().unwrap(),
        ],
        1,
        &["nz = 16"],
    );
}

/// Every tensor (bit pattern) and the loop state of two checkpoints agree.
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    let names_a: Vec<&String> = ta.tensors.keys().collect();
    let names_b: Vec<&String> = tb.tensors.keys().collect();
    assert_eq!(names_a, names_b);
    for (name, x) in &ta.tensors {
        let y = &tb.tensors[name];
        assert_eq!(x.shape, y.shape, "{name}");
        let bx: Vec<u32> = x.data.iter().map(|v| v.to_bits()).collect();
        let by: Vec<u32> = y.data.iter().map(|v| v.to_bits()).collect();
        assert!(bx == by, "{name} differs");
    }
    let state = |t: &TensorFile| {
        let mut s: serde_json::Value = serde_json::from_str(&t.metadata["state"]).unwrap();
        s.as_object_mut().unwrap().remove("elapsed_s");
        s
    };
    assert_eq!(state(&ta), state(&tb));
}

#[test]
fn resumed_training_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&a, &["--steps", "4", "--k", "2"]);
    train(&b, &["--steps", "2", "--k", "2"]);
    let o = ok(&[
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--steps",
        "4",
        "--quiet",
    ]);
    assert!(stderr(&o).contains("resuming at step 2"), "{}", stderr(&o));
    assert_same_checkpoint(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
    );
    assert_eq!(
        common::cli::metric_steps(&b),
        [2, 4],
        "one row per logged step across the resume"
    );

    // Nothing left to do.
    fails(
        &["train", "--resume", b.to_str().unwrap(), "--steps", "4"],
        1,
        &["already at step 4"],
    );
}

/// `--loss wgan --optimizer rmsprop` on the tiny model: the critic's parameters stay inside the clip bound, the
/// checkpoint holds RMSprop state, and a resumed run is bit-exact; the optimiser cannot change on resume.
#[test]
fn wgan_with_rmsprop_trains_and_resumes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let wgan = [
        "--loss",
        "wgan",
        "--optimizer",
        "rmsprop",
        "--lr-d",
        "5e-5",
        "--lr-g",
        "1e-4",
        "--k",
        "2",
        "--clip",
        "0.02",
    ];
    let with = |steps: &'static str| {
        let mut v = wgan.to_vec();
        v.extend(["--steps", steps, "--log-every", "1"]);
        v
    };
    train(&a, &with("3"));
    let (rows, csv) = common::cli::metrics(&a);
    assert_eq!(rows.len(), 3, "{csv}");
    let finite = |v: &String| v.parse::<f64>().unwrap().is_finite();
    assert!(rows.iter().flatten().all(finite), "{csv}");
    let t = tensors(&a.join("checkpoint.safetensors"));
    let cfg: serde_json::Value = serde_json::from_str(&t.metadata["train"]).unwrap();
    assert_eq!(
        (cfg["loss"].as_str(), cfg["optimizer"].as_str()),
        (Some("wgan"), Some("rmsprop"))
    );
    assert_eq!(t.metadata["opt_D.optimizer"], "rmsprop");
    let mut d_params = 0;
    for (name, x) in &t.tensors {
        assert!(
            !name.contains("exp_avg"),
            "Adam state in an RMSprop run: {name}"
        );
        let Some(p) = name.strip_prefix("D.") else {
            continue;
        };
        // D's BN running statistics are buffers: not clipped.
        if p.contains("running_") || p.contains("num_batches") {
            continue;
        }
        d_params += 1;
        assert!(
            t.tensors.contains_key(&format!("opt_D.square_avg.{p}")),
            "{name}"
        );
        let m = x.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(m <= 0.02, "{name}: |w| reaches {m}, beyond --clip 0.02");
    }
    assert!(d_params > 0);

    train(&b, &with("2"));
    let b_str = b.to_str().unwrap();
    fails(
        &[
            "train",
            "--resume",
            b_str,
            "--steps",
            "3",
            "--optimizer",
            "adam",
        ],
        1,
        &["rmsprop", "--optimizer adam"],
    );
    ok(&["train", "--resume", b_str, "--steps", "3", "--quiet"]);
    assert_same_checkpoint(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
    );
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    // Loading a checkpoint into a trainer and saving it again reproduces the file's content exactly.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    train(&a, &["--steps", "2", "--model", "mlp", "--hidden", "8"]);
    let (_, mut cfg) = gan_engine::train::run::read_checkpoint_config(&a).unwrap();
    cfg.duration = gan_engine::train::Duration::Steps(3);
    let t = gan_engine::train::Trainer::resume(&a, cfg).unwrap();
    let again = dir.path().join("again.safetensors");
    t.checkpoint_file(0.0).unwrap().save(&again).unwrap();
    assert_same_checkpoint(&a.join("checkpoint.safetensors"), &again);
}

/// `--g-ema`: the average moves by exactly avg ← d·avg + (1 − d)·G from G's initial weights, is written to
/// generator_ema.safetensors and the checkpoint, resumes bit-exactly, can start on a resume, is what a run
/// directory samples from, and a replaced run without it leaves no stale average behind.
#[test]
fn generator_average_is_kept_saved_and_resumed_bit_exactly() {
    use gan_engine::train::Trainer;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    // The update rule, checked on the library's trainer for one step from the initial weights.
    train(&a, &["--steps", "1", "--g-ema", "0.75"]);
    let (_, mut cfg) = gan_engine::train::run::read_checkpoint_config(&a).unwrap();
    cfg.out = dir.path().join("lib");
    let mut t = Trainer::new(cfg).unwrap();
    let host = |g: &gan_engine::nn::models::Generator| -> Vec<Vec<f32>> {
        g.store
            .values()
            .iter()
            .map(|v| v.to_vec().unwrap())
            .collect()
    };
    let g0 = host(&t.gan.g);
    assert_eq!(
        host(&t.g_ema.as_ref().unwrap().g),
        g0,
        "the average starts at G"
    );
    t.train_step().unwrap();
    let (g1, avg1) = (host(&t.gan.g), host(&t.g_ema.as_ref().unwrap().g));
    let mut moved = 0;
    for ((p0, p1), av) in g0.iter().zip(&g1).zip(&avg1) {
        for ((x0, x1), v) in p0.iter().zip(p1).zip(av) {
            assert_eq!(v.to_bits(), (0.75 * x0 + 0.25 * x1).to_bits());
            moved += (x0 != x1) as usize;
        }
    }
    assert!(moved > 0, "G did not move");

    // Saved, resumed bit-exactly (the checkpoint holds G_ema.*), and the run directory samples from it.
    let ga = tensors(&a.join("checkpoint.safetensors"));
    assert!(ga.tensors.keys().any(|k| k.starts_with("G_ema.")));
    train(&a, &["--steps", "4", "--g-ema", "0.75", "--overwrite"]);
    train(&b, &["--steps", "2", "--g-ema", "0.75"]);
    let b_str = b.to_str().unwrap();
    ok(&["train", "--resume", b_str, "--steps", "4", "--quiet"]);
    assert_same_checkpoint(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
    );
    let (ema, g) = (
        tensors(&b.join("generator_ema.safetensors")),
        tensors(&b.join("generator.safetensors")),
    );
    let differ = ema.tensors.iter().any(|(n, x)| x.data != g.tensors[n].data);
    assert!(differ, "the average equals G");
    let sample = |from: &Path, to: &str| {
        let npy = dir.path().join(to);
        let (from, npy_s) = (from.to_str().unwrap(), npy.to_str().unwrap());
        ok(&[
            "sample",
            "--checkpoint",
            from,
            "--n",
            "2",
            "--out-npy",
            npy_s,
        ]);
        std::fs::read(npy).unwrap()
    };
    assert_eq!(
        sample(&b, "dir.npy"),
        sample(&b.join("generator_ema.safetensors"), "ema.npy")
    );
    assert_ne!(
        sample(&b, "dir.npy"),
        sample(&b.join("generator.safetensors"), "g.npy")
    );

    // Started on the resume of a run without one; a decay outside (0, 1) is refused.
    let c = dir.path().join("c");
    train(&c, &["--steps", "2"]);
    let c_str = c.to_str().unwrap();
    assert!(!c.join("generator_ema.safetensors").exists());
    fails(
        &["train", "--resume", c_str, "--steps", "3", "--g-ema", "1"],
        1,
        &["--g-ema", "(0, 1)"],
    );
    ok(&[
        "train", "--resume", c_str, "--steps", "3", "--g-ema", "0.9", "--quiet",
    ]);
    assert!(c.join("generator_ema.safetensors").exists());

    // A run replaced by one without an average: the old average is removed, not sampled from.
    train(&b, &["--steps", "1", "--overwrite"]);
    assert!(!b.join("generator_ema.safetensors").exists());
}

fn cuda_available() -> bool {
    let o = ok(&["info"]);
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.lines()
        .any(|l| l.trim_start().starts_with("cuda:") && !l.contains("unavailable"))
}

#[test]
fn errors_are_clear_with_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| -> PathBuf { dir.path().join(s) };

    // Usage errors, from clap: exit 2.
    fails(
        &["train", "--loss", "wgan-gpx"],
        2,
        &["invalid value 'wgan-gpx'", "--loss"],
    );
    fails(&["train", "--optimizer", "sgd"], 2, &["--optimizer"]);
    fails(&["train", "--loss", "wgan", "--clip", "0"], 1, &["--clip"]);
    fails(&["train", "--batch-size", "many"], 2, &["--batch-size"]);
    fails(&["train", "--steps", "0"], 2, &["--steps"]);
    fails(
        &["train", "--steps", "3", "--epochs", "1"],
        2,
        &["--epochs"],
    );
    fails(&["frobnicate"], 2, &["frobnicate"]);
    fails(&["sample"], 2, &["--checkpoint"]);

    // Everything else: exit 1.
    let missing = d("no-such-folder");
    let spec = format!("folder:{}", missing.display());
    fails(
        &[
            "train",
            "--dataset",
            &spec,
            "--out",
            d("x").to_str().unwrap(),
        ],
        1,
        &[missing.to_str().unwrap()],
    );
    fails(
        &[
            "train",
            "--image-size",
            "48",
            "--out",
            d("x").to_str().unwrap(),
        ],
        1,
        &["64, 32 and 28"],
    );

    let garbage = d("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    fails(
        &["sample", "--checkpoint", garbage.to_str().unwrap()],
        1,
        &["not a safetensors file", "garbage.safetensors"],
    );
    fails(
        &["train", "--resume", garbage.to_str().unwrap()],
        1,
        &["not a safetensors file"],
    );
    fails(
        &[
            "sample",
            "--checkpoint",
            d("nothing-here").to_str().unwrap(),
        ],
        1,
        &["does not exist"],
    );

    // A checkpoint of another model / size.
    let run = d("run");
    train(&run, &["--steps", "1"]);
    let r = run.to_str().unwrap();
    fails(
        &["train", "--resume", r, "--image-size", "64", "--steps", "5"],
        1,
        &["is for dcgan 32x32x3 nz=16 ngf=8 ndf=8 --g-upsample nearest but --image-size 64 was given"],
    );
    fails(
        &["train", "--resume", r, "--model", "mlp", "--steps", "5"],
        1,
        &["but --model mlp was given"],
    );
    fails(
        &["train", "--resume", r, "--dataset", "mnist"],
        1,
        &["trained on balls"],
    );
    // A new run into a directory that already holds one.
    fails(
        &["train", "--out", r, "--steps", "1"],
        1,
        &["already holds a run", "--resume"],
    );
    // Resuming from the generator alone is not enough.
    fails(
        &[
            "train",
            "--resume",
            run.join("generator.safetensors").to_str().unwrap(),
            "--steps",
            "5",
        ],
        1,
        &["holds only a generator"],
    );

    if !cuda_available() {
        let e = fails(
            &[
                "train",
                "--device",
                "cuda",
                "--out",
                d("y").to_str().unwrap(),
            ],
            1,
            &["cuda"],
        );
        assert!(e.lines().count() <= 3, "one clear message: {e}");
        fails(
            &["sample", "--checkpoint", r, "--device", "cuda"],
            1,
            &["cuda"],
        );
    }
    fails(
        &[
            "train",
            "--device",
            "tpu",
            "--out",
            d("z").to_str().unwrap(),
        ],
        1,
        &["invalid device 'tpu'"],
    );
}

#[test]
fn help_and_info_work() {
    let o = ok(&["--help"]);
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    for c in ["train", "sample", "info"] {
        assert!(s.contains(c), "{s}");
    }
    let o = ok(&["train", "--help"]);
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    for f in [
        "--dataset",
        "--image-size",
        "--lr-d",
        "--loss",
        "--resume",
        "--checkpoint-every",
        "--optimizer",
        "--clip",
        "--optimizer rmsprop --lr-d 5e-5 --lr-g 5e-5 --k 5",
    ] {
        assert!(s.contains(f), "{s}");
    }
    let o = ok(&["info"]);
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(s.contains("cpu"), "{s}");
}

fn emu_available() -> bool {
    let o = ok(&["info"]);
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.lines()
        .any(|l| l.trim_start().starts_with("emu:") && !l.contains("unavailable"))
}

#[test]
fn training_on_the_emulated_cuda_backend_agrees_with_the_cpu() {
    if !emu_available() {
        eprintln!("skipped: the CUDA emulation is not built in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cpu, emu) = (dir.path().join("cpu"), dir.path().join("emu"));
    let args = ["--steps", "2"];
    train(&cpu, &args);
    let mut with_dev = args.to_vec();
    with_dev.extend_from_slice(&["--device", "emu"]);
    train(&emu, &with_dev);
    common::cli::assert_cpu_and_emu_runs_agree(&cpu, &emu);
    // A checkpoint trained on one device samples on another.
    let npy = dir.path().join("x.npy");
    ok(&[
        "sample",
        "--checkpoint",
        emu.to_str().unwrap(),
        "--n",
        "3",
        "--out-npy",
        npy.to_str().unwrap(),
    ]);
}

/// `--cuda-graph` (one captured iteration replayed for every later one) trains the same run as eager
/// execution, bit for bit, with a generator average and a resume in between; the emulated CUDA backend records
/// and replays the graph as a GPU would.
#[test]
fn a_cuda_graph_run_is_the_eager_run_bit_for_bit() {
    if !emu_available() {
        eprintln!("skipped: the CUDA emulation is not built in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (eager, graphed) = (dir.path().join("eager"), dir.path().join("graphed"));
    let args = ["--steps", "3", "--device", "emu", "--g-ema", "0.9"];
    train(&eager, &args);
    let mut with_graph = args.to_vec();
    with_graph.push("--cuda-graph");
    train(&graphed, &with_graph);
    for run in [&eager, &graphed] {
        ok(&[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--steps",
            "5",
            "--quiet",
            "--cuda-graph",
        ]);
    }
    let (a, b) = (
        tensors(&eager.join("checkpoint.safetensors")),
        tensors(&graphed.join("checkpoint.safetensors")),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, x) in &a.tensors {
        let y = &b.tensors[name];
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(&x.data) == bits(&y.data), "{name} differs");
    }
    let cpu = dir.path().join("cpu");
    let out = cpu.to_str().unwrap();
    fails(
        &["train", "--dataset", "balls", "--out", out, "--cuda-graph"],
        1,
        &["--cuda-graph", "--device cuda"],
    );
    fails(
        &[
            "train",
            "--dataset",
            "balls",
            "--out",
            out,
            "--device",
            "emu",
            "--cuda-graph",
            "--k",
            "2",
        ],
        1,
        &["--cuda-graph", "--k 1"],
    );
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&run, &["--steps", "2"]);
    let ck = run.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    // An absurd learning rate: one Adam step moves every D weight by ~1e30, so D's logits overflow and the
    // next loss is not finite.
    let r = run.to_str().unwrap();
    fails(
        &[
            "train",
            "--resume",
            r,
            "--steps",
            "6",
            "--lr-d",
            "1e30",
            "--checkpoint-every",
            "1",
        ],
        1,
        &["step 3", "loss is", "diverged"],
    );
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the checkpoint is untouched"
    );
}

#[test]
fn epochs_count_passes_over_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // 42 images in batches of 4 (the last partial batch dropped): 10 batches per epoch; with k = 2 D steps
    // per iteration, 2 epochs are 10 iterations.
    let o = ok(&[
        "train",
        "--dataset",
        "balls:42",
        "--image-size",
        "28",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--nz",
        "8",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--k",
        "2",
        "--log-every",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("(10 steps, batch 4)"), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 10, "{csv}");
}

#[test]
fn dcgan_switches_build_train_sample_and_resume_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ablation");
    let switches = [
        "--no-g-batch-norm",
        "--no-d-batch-norm",
        "--g-act",
        "leaky",
        "--d-act",
        "relu",
        "--d-downsample",
        "maxpool",
        "--g-upsample",
        "nearest",
    ];
    let mut args = switches.to_vec();
    args.extend(["--steps", "2", "--image-size", "32"]);
    train(&out, &args);
    // No batch-norm tensors in either network; D's halving convolutions are 3x3 (a max pool follows each).
    let ck = tensors(&out.join("checkpoint.safetensors"));
    assert!(
        !ck.tensors.keys().any(|k| k.contains("running_mean")),
        "no BN"
    );
    assert_eq!(ck.tensors["D.main.0.weight"].shape, [8, 3, 3, 3]);
    // G doubles by resizing then convolving: after ConvT (0) and LeakyReLU (1, no BN), layer 2 is the Upsample
    // and layer 3 a 3x3 Conv2d from 4·ngf to 2·ngf channels.
    assert_eq!(ck.tensors["G.main.3.weight"].shape, [16, 32, 3, 3]);
    // `sample` rebuilds the same generator from the file alone.
    let grid = dir.path().join("grid.png");
    let (o, g) = (out.to_str().unwrap(), grid.to_str().unwrap());
    ok(&["sample", "--checkpoint", o, "--n", "4", "--out", g]);
    // The resume keeps the switches without being told; contradicting one is refused.
    ok(&["train", "--resume", o, "--steps", "3", "--quiet"]);
    fails(
        &["train", "--resume", o, "--steps", "4", "--d-act", "leaky"],
        1,
        &["--no-g-batch-norm --no-d-batch-norm --g-act leaky --d-downsample maxpool --g-upsample nearest"],
    );
    // The MLP model has none of these layers.
    fails(
        &[
            "train",
            "--model",
            "mlp",
            "--no-g-batch-norm",
            "--steps",
            "1",
        ],
        1,
        &["--no-g-batch-norm", "MLP"],
    );
}
