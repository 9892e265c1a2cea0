//! End-to-end tests of `plot`, `train --plot-every` and `dfeatures` on tiny runs: each writes a PNG that decodes
//! at the expected size, and bad inputs fail with one clear `error:` line and exit status 1.

use std::path::Path;
use std::process::Output;

mod common;
use common::cli::{fails, ok, tiny_train};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A 4-step DCGAN 32×32 run with 8-wide networks, logging every step, plus `extra` flags.
fn tiny_run(out: &Path, extra: &[&str]) {
    let mut args = vec!["--steps", "4", "--log-every", "1"];
    args.extend_from_slice(extra);
    tiny_train("balls:64", out, &args);
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_draws_its_curves_and_plot_redraws_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    tiny_run(&out, &["--plot-every", "2"]);
    assert_eq!(png_size(&out.join("metrics.png")), (1200, 1000));

    let png = dir.path().join("curves.png");
    let o = ok(&[
        "plot",
        "--run",
        s(&out),
        "--out",
        s(&png),
        "--width",
        "800",
        "--height",
        "600",
    ]);
    assert_eq!(png_size(&png), (800, 600));
    assert!(text(&o.stdout).contains("curves.png"));
    // The loss kind came from the run's checkpoint.
    assert!(
        !text(&o.stderr).contains("loss kind is unknown"),
        "{}",
        text(&o.stderr)
    );

    // A CSV given alone: default output beside it, raw curves only.
    std::fs::remove_file(out.join("metrics.png")).unwrap();
    ok(&[
        "plot",
        "--csv",
        s(&out.join("metrics.csv")),
        "--smooth",
        "0",
        "--loss",
        "minimax",
    ]);
    assert_eq!(png_size(&out.join("metrics.png")), (1200, 1000));

    // --plot-every 0 draws nothing.
    let quiet = dir.path().join("noplot");
    tiny_run(&quiet, &["--plot-every", "0"]);
    assert!(quiet.join("metrics.csv").is_file());
    assert!(!quiet.join("metrics.png").exists());
}

#[test]
fn plot_reads_columns_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m.csv");
    // Reordered, an unknown non-numeric column, a sparse fid column, no D(x) columns, a short last row.
    std::fs::write(
        &csv,
        "loss_g,step,extra,loss_d,fid,img_per_s\n0.9,10,a1,1.2,,100\n0.8,20,,1.3,55.5,110\n0.7,30,,1.4\n",
    )
    .unwrap();
    let png = dir.path().join("m.png");
    let o = ok(&[
        "plot",
        "--csv",
        s(&csv),
        "--out",
        s(&png),
        "--width",
        "640",
        "--height",
        "480",
    ]);
    assert_eq!(png_size(&png), (640, 480));
    assert!(
        text(&o.stderr).contains("loss kind is unknown"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn plot_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        &["plot", "--csv", s(&d.join("missing.csv"))],
        1,
        &["cannot read metrics file", "missing.csv"],
    );
    std::fs::write(d.join("empty.csv"), "").unwrap();
    fails(
        &["plot", "--csv", s(&d.join("empty.csv"))],
        1,
        &["empty.csv is empty"],
    );
    std::fs::write(
        d.join("header.csv"),
        "step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s\n",
    )
    .unwrap();
    fails(
        &["plot", "--csv", s(&d.join("header.csv"))],
        1,
        &["no rows yet"],
    );
    std::fs::write(d.join("bad.csv"), "step,loss_d\n1,0.5\n2,oops\n3,0.4\n").unwrap();
    fails(
        &["plot", "--csv", s(&d.join("bad.csv"))],
        1,
        &["line 3", "'oops' is not a number"],
    );
    fails(
        &["plot", "--run", s(&d.join("nope"))],
        1,
        &["does not exist"],
    );
    fails(
        &["plot", "--csv", s(&d.join("bad.csv")), "--smooth", "1"],
        1,
        &["--smooth"],
    );
    // Neither source: a usage error.
    fails(&["plot"], 2, &["--run"]);
}

/// A run directory holding only a metrics.csv of `rows` rows whose D loss is `level` plus a wiggle.
fn csv_run(dir: &Path, name: &str, rows: usize, level: f64) -> std::path::PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let mut t = String::from("step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s\n");
    for i in 1..=rows {
        let w = (i as f64 * 0.5).sin() * 0.1;
        t.push_str(&format!(
            "{},{},{},0.6,0.4,0.45,100,{i}\n",
            i * 10,
            level + w,
            0.7 - w
        ));
    }
    std::fs::write(run.join("metrics.csv"), t).unwrap();
    run
}

#[test]
fn plot_overlays_runs_and_splits_per_metric() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Runs of different lengths: each curve keeps its own steps.
    let (a, b) = (csv_run(d, "lr2e-4", 40, 1.3), csv_run(d, "lr5e-4", 25, 1.0));
    let png = d.join("cmp.png");
    let o = ok(&[
        "plot",
        "--run",
        s(&a),
        "--run",
        s(&b),
        "--loss",
        "ns",
        "--out",
        s(&png),
        "--width",
        "700",
        "--height",
        "900",
    ]);
    assert_eq!(png_size(&png), (700, 900), "{}", text(&o.stdout));
    // The two runs are drawn in different colours: the first run's blue and the second's orange both appear.
    let img = image::open(&png).unwrap().to_rgb8();
    let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
    assert!(
        has([31, 119, 180]) && has([255, 127, 14]),
        "both run colours drawn"
    );

    ok(&[
        "plot",
        "--run",
        s(&a),
        "--run",
        s(&b),
        "--label",
        "D 2e-4",
        "--label",
        "D 5e-4",
        "--split",
        "--out",
        s(&png),
    ]);
    for col in ["loss_d", "loss_g", "d_x", "d_g_z1", "img_per_s"] {
        let f = d.join(format!("cmp_{col}.png"));
        assert_eq!(png_size(&f), (1200, 1000), "{col}");
    }
    assert!(!d.join("cmp_fid.png").exists(), "no run has an fid column");

    fails(
        &[
            "plot",
            "--run",
            s(&a),
            "--run",
            s(&b),
            "--label",
            "only one",
        ],
        1,
        &["1 --label for 2 --run"],
    );
    fails(&["plot", "--run", s(&a), "--split"], 1, &["two or more"]);
    fails(
        &["plot", "--run", s(&a), "--run", s(&d.join("nope"))],
        1,
        &["does not exist"],
    );
}

/// (block name, [PC1 %, PC2 %, split % in the plane, split % in all dims]) per line of dfeatures' report.
fn report(o: &Output) -> Vec<(String, Vec<f64>)> {
    text(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("main."))
        .map(|l| {
            let (name, rest) = l.split_once(": ").unwrap();
            let nums: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|w| w.trim_end_matches(',').strip_suffix('%'))
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(nums.len(), 4, "{l}");
            (name.to_string(), nums)
        })
        .collect()
}

fn emu_available() -> bool {
    let o = ok(&["info"]);
    text(&o.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("emu:") && !l.contains("unavailable"))
}

#[test]
fn dfeatures_scatters_every_d_block() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    tiny_run(&out, &[]);
    let png = dir.path().join("df.png");
    let o = dfeatures(&out, 12, &png, &[]);
    // DCGAN-32's D has three conv blocks (LeakyReLU at main.1, main.4, main.7): one 440-pixel panel each.
    assert_eq!(png_size(&png), (3 * 440, 500));
    let cpu = report(&o);
    let names: Vec<&str> = cpu.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["main.1", "main.4", "main.7"]);
    for (name, v) in &cpu {
        let (pc1, pc2) = (v[0], v[1]);
        assert!(
            pc1 > 0.0 && pc1 >= pc2 && pc1 + pc2 <= 100.05,
            "{name}: {v:?}"
        );
        assert!(
            v[2..].iter().all(|s| (0.0..=100.0).contains(s)),
            "{name}: {v:?}"
        );
    }
    assert!(text(&o.stdout).contains("12 real and 12 generated"));

    // The explicit size and the checkpoint file itself.
    let png2 = dir.path().join("df2.png");
    let size = ["--width", "700", "--height", "300"];
    dfeatures(&out.join("checkpoint.safetensors"), 5, &png2, &size);
    assert_eq!(png_size(&png2), (700, 300));

    // The CUDA code path (the kernels on the CPU emulation) gives the same picture.
    if emu_available() {
        let png3 = dir.path().join("df_emu.png");
        let o = dfeatures(&out, 12, &png3, &["--device", "emu"]);
        assert_eq!(png_size(&png3), (3 * 440, 500));
        for (c, e) in cpu.iter().zip(report(&o)) {
            assert_eq!(c.0, e.0);
            for (a, b) in c.1.iter().zip(&e.1) {
                assert!((a - b).abs() <= 0.15, "{}: cpu {c:?} emu {e:?}", c.0);
            }
        }
    } else {
        eprintln!("skipped the emu part: the CUDA emulation is not built in");
    }

    // --tsne: a second row of panels, the t-SNE embedding of each block.
    let png = dir.path().join("tsne.png");
    let o = dfeatures(&out, 12, &png, &["--tsne", "--perplexity", "50"]);
    assert_eq!(png_size(&png), (3 * 440, 940));
    // One line per block; 24 points allow a perplexity of at most 7, so the 50 asked for is lowered.
    let stdout = text(&o.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("t-SNE of main."))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for l in lines {
        assert!(l.contains("(perplexity 7)"), "{l}");
        let pct: f64 = l
            .split_whitespace()
            .find_map(|w| w.strip_suffix('%'))
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=100.0).contains(&pct), "{l}");
    }
    // The PCA report is unchanged by the extra row.
    assert_eq!(report(&o), cpu);
    fails(
        &["dfeatures", "--checkpoint", s(&out), "--perplexity", "5"],
        2,
        &["--tsne"],
    );
}

/// `gan-engine dfeatures --checkpoint CKPT --n N --out PNG EXTRA...`, which must succeed.
fn dfeatures(ckpt: &Path, n: usize, png: &Path, extra: &[&str]) -> Output {
    let n = n.to_string();
    let args = [
        &[
            "dfeatures",
            "--checkpoint",
            s(ckpt),
            "--n",
            &n,
            "--out",
            s(png),
        ],
        extra,
    ]
    .concat();
    ok(&args)
}

/// `dfeatures` on `run` with `n` images of each kind: the PNG has one 440×500 panel per D block; returns the
/// blocks' names.
fn dfeatures_blocks(run: &Path, n: usize, png: &Path) -> Vec<String> {
    let o = dfeatures(run, n, png, &[]);
    let names: Vec<String> = report(&o).into_iter().map(|r| r.0).collect();
    assert_eq!(png_size(png), (names.len() as u32 * 440, 500));
    names
}

const MLP: &[&str] = &["--model", "mlp", "--image-size", "12", "--hidden", "6"];

#[test]
fn dfeatures_on_an_mlp_gan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp");
    tiny_run(&out, MLP);
    // Two hidden blocks (24 and 12 wide).
    let names = dfeatures_blocks(&out, 7, &dir.path().join("mlp.png"));
    assert_eq!(names, ["main.1", "main.3"]);
}

#[test]
fn dfeatures_on_conditional_runs() {
    // D sees each real image with its own label and each fake with the label G drew it for (balls: 3 classes).
    let dir = tempfile::tempdir().unwrap();
    let dcgan = dir.path().join("cdcgan");
    tiny_run(&dcgan, &["--conditional"]);
    let names = dfeatures_blocks(&dcgan, 9, &dir.path().join("c.png"));
    assert_eq!(names, ["main.1", "main.4", "main.7"]);

    let mlp = dir.path().join("cmlp");
    tiny_run(&mlp, &[MLP, &["--conditional"]].concat());
    let names = dfeatures_blocks(&mlp, 7, &dir.path().join("m.png"));
    assert_eq!(names, ["main.1", "main.3"]);
}

#[test]
fn dfeatures_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        &["dfeatures", "--checkpoint", s(&d.join("nope"))],
        1,
        &["does not exist"],
    );
    std::fs::create_dir(d.join("emptyrun")).unwrap();
    fails(
        &["dfeatures", "--checkpoint", s(&d.join("emptyrun"))],
        1,
        &["contains no checkpoint"],
    );
    let out = d.join("run");
    tiny_run(&out, &["--plot-every", "0"]);
    fails(
        &[
            "dfeatures",
            "--checkpoint",
            s(&out.join("generator.safetensors")),
        ],
        1,
        &["holds only a generator"],
    );
    fails(
        &["dfeatures", "--checkpoint", s(&out), "--n", "1"],
        1,
        &["--n must be at least 2"],
    );
    fails(
        &[
            "dfeatures",
            "--checkpoint",
            s(&out),
            "--dataset",
            "mnist:/no/such/dir",
        ],
        1,
        &["reading real images from mnist:/no/such/dir"],
    );
    fails(
        &["dfeatures", "--checkpoint", s(&out), "--device", "tpu"],
        1,
        &["tpu"],
    );
}
