//! End-to-end tests of `interpolate`, `arith` and `sweep` on tiny checkpoints: every picture decodes with
//! the layout's size (and the GIF with the path's frame count), the latents written as .npy are the ones the
//! maths says, seeds mean what they mean in `sample`, and bad input is one clear error (exit 2 usage, 1 else).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gan_engine::ops::random::RngStream;
use gan_engine::study::latent::slerp;
use gan_engine::train::gan::{stream_seed, STREAM_FIXED_Z};
use gan_engine::{Device, Tensor};
use image::{AnimationDecoder, RgbImage};

mod common;
use common::cli::{fails, ok, tiny_train};

/// The tiny run the tests decode with: DCGAN 32×32 RGB, nz 16, two steps (the pictures' content does not
/// matter here, only that a real checkpoint goes through the real loading path).
const NZ: usize = 16;

fn train_tiny(out: &Path, extra: &[&str]) {
    let mut args = vec!["--steps", "2", "--num-samples", "4"];
    args.extend_from_slice(extra);
    tiny_train("balls", out, &args);
}

/// Trained once per test binary and shared (the directory lives until the process ends).
fn dcgan() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("dcgan");
        train_tiny(&out, &[]);
        out
    })
}

/// An MLP at an awkward size (13×13), so the GIF upscaling does not divide evenly.
fn mlp13() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("mlp");
        train_tiny(
            &out,
            &["--model", "mlp", "--image-size", "13", "--hidden", "8"],
        );
        out
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn png(p: &Path) -> RgbImage {
    image::open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_rgb8()
}

/// Grid size for `cols × rows` cells of `px` pixels with torchvision's 2-pixel padding.
fn grid_dims(cols: u32, rows: u32, px: u32) -> (u32, u32) {
    (cols * (px + 2) + 2, rows * (px + 2) + 2)
}

/// Cell (col, row) of a grid of `px`-pixel images.
fn cell(img: &RgbImage, col: u32, row: u32, px: u32) -> RgbImage {
    image::imageops::crop_imm(img, 2 + col * (px + 2), 2 + row * (px + 2), px, px).to_image()
}

fn is_black(img: &RgbImage) -> bool {
    img.pixels().all(|p| p.0 == [0, 0, 0])
}

fn npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let t = gan_engine::io::read_npy(p, &Device::Cpu).unwrap();
    (t.shape().to_vec(), t.to_vec().unwrap())
}

fn seed_z(seed: u64) -> Vec<f32> {
    RngStream::new(stream_seed(seed, STREAM_FIXED_Z))
        .normal(&[1, NZ], 0.0, 1.0, &Device::Cpu)
        .unwrap()
        .to_vec()
        .unwrap()
}

fn write_z(p: &Path, rows: &[Vec<f32>]) {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let n = rows.len();
    let t = Tensor::from_vec(flat, &[n, rows[0].len()], &Device::Cpu).unwrap();
    gan_engine::io::write_npy(p, &t).unwrap();
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

/// Paths of files named `names` in `dir`.
fn files<const N: usize>(dir: &tempfile::TempDir, names: [&str; N]) -> [PathBuf; N] {
    names.map(|n| dir.path().join(n))
}

fn gif_frames(p: &Path) -> Vec<image::Frame> {
    let f = std::io::BufReader::new(std::fs::File::open(p).unwrap());
    image::codecs::gif::GifDecoder::new(f)
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap()
}

#[test]
fn interpolate_by_seeds_writes_grid_gif_and_path() {
    let ck = dcgan();
    let dir = tempfile::tempdir().unwrap();
    let [out, gif, z] = files(&dir, ["i.png", "i.gif", "z.npy"]);
    ok(&[
        "interpolate",
        "--checkpoint",
        s(ck),
        "--seeds",
        "1,2,3",
        "--steps",
        "5",
        "--mode",
        "slerp",
        "--out",
        s(&out),
        "--gif",
        s(&gif),
        "--frame-ms",
        "70",
        "--z-out",
        s(&z),
    ]);
    // One row per segment (2), five images per row.
    let grid = png(&out);
    assert_eq!(grid.dimensions(), grid_dims(5, 2, 32));
    // The shared key closes row 0 and opens row 1.
    assert_eq!(cell(&grid, 4, 0, 32), cell(&grid, 0, 1, 32));
    assert_ne!(cell(&grid, 0, 0, 32), cell(&grid, 4, 0, 32));

    // Seed 1 means what it means to `sample`: the first image of `sample --seed 1`.
    let one = dir.path().join("one.png");
    ok(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--seed",
        "1",
        "--n",
        "1",
        "--out",
        s(&one),
    ]);
    assert_eq!(png(&one), padded(&cell(&grid, 0, 0, 32)));

    // The GIF walks the path once: (3 − 1)(5 − 1) + 1 frames, enlarged ×4 to 128 px, 70 ms each.
    let frames = gif_frames(&gif);
    assert_eq!(frames.len(), 9);
    for f in &frames {
        assert_eq!(f.buffer().dimensions(), (128, 128));
        assert_eq!(f.delay().numer_denom_ms(), (70, 1));
    }

    // The latents: keys at frames 0, 4, 8; the points between on the arc.
    let (shape, zs) = npy(&z);
    assert_eq!(shape, [9, NZ]);
    let row = |i: usize| &zs[i * NZ..(i + 1) * NZ];
    let (k1, k2, k3) = (seed_z(1), seed_z(2), seed_z(3));
    assert_eq!(row(0), &k1[..]);
    assert_eq!(row(4), &k2[..]);
    assert_eq!(row(8), &k3[..]);
    assert!(close(row(2), &slerp(&k1, &k2, 0.5).unwrap(), 1e-6));
    assert!(close(row(5), &slerp(&k2, &k3, 0.25).unwrap(), 1e-6));
}

/// `sample`'s single-image grid: the image with 2 px of black on every side.
fn padded(img: &RgbImage) -> RgbImage {
    let mut out = RgbImage::new(img.width() + 4, img.height() + 4);
    image::imageops::replace(&mut out, img, 2, 2);
    out
}

#[test]
fn interpolate_from_npy_lerp_closed_on_an_awkward_mlp() {
    let ck = mlp13();
    let dir = tempfile::tempdir().unwrap();
    let [zin, out, gif, zout] = files(&dir, ["keys.npy", "i.png", "i.gif", "path.npy"]);
    let a: Vec<f32> = (0..NZ).map(|i| (i as f32 * 0.7).sin()).collect();
    let b: Vec<f32> = (0..NZ).map(|i| (i as f32 * 1.3).cos()).collect();
    write_z(&zin, &[a.clone(), b.clone()]);
    ok(&[
        "interpolate",
        "--checkpoint",
        s(ck),
        "--z-npy",
        s(&zin),
        "--steps",
        "4",
        "--mode",
        "linear",
        "--closed",
        "--out",
        s(&out),
        "--gif",
        s(&gif),
        "--z-out",
        s(&zout),
    ]);
    // Closed: a → b → a, two rows of four.
    assert_eq!(png(&out).dimensions(), grid_dims(4, 2, 13));
    // 2·3 + 1 frames, 13 px enlarged ×10 (the smallest whole factor reaching 128).
    let frames = gif_frames(&gif);
    assert_eq!(frames.len(), 7);
    assert!(frames.iter().all(|f| f.buffer().dimensions() == (130, 130)));
    let (shape, zs) = npy(&zout);
    assert_eq!(shape, [7, NZ]);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + (y - x) / 3.0).collect();
    assert!(close(&zs[NZ..2 * NZ], &want, 1e-6));
    assert_eq!(&zs[6 * NZ..], &a[..]);
}

#[test]
fn arith_lays_out_inputs_means_and_result() {
    let ck = dcgan();
    let dir = tempfile::tempdir().unwrap();
    let [cz, out, zout] = files(&dir, ["c.npy", "a.png", "r.npy"]);
    let c_rows: Vec<Vec<f32>> = (0..2)
        .map(|k| (0..NZ).map(|i| ((i + 5 * k) as f32 * 0.9).sin()).collect())
        .collect();
    write_z(&cz, &c_rows);
    ok(&[
        "arith",
        "--checkpoint",
        s(ck),
        "--a-seeds",
        "1,2,3",
        "--b-seeds",
        "4,5",
        "--c-npy",
        s(&cz),
        "--out",
        s(&out),
        "--z-out",
        s(&zout),
    ]);
    // 3 inputs at most → 4 columns; rows A, B, C, result.
    let grid = png(&out);
    assert_eq!(grid.dimensions(), grid_dims(4, 4, 32));
    // B has two inputs and C two: their third cells are blank; every other cell shows an image.
    for (col, row) in [(2, 1), (2, 2)] {
        assert!(is_black(&cell(&grid, col, row, 32)), "cell {col},{row}");
    }
    for (col, row) in [
        (0, 0),
        (2, 0),
        (3, 0),
        (1, 1),
        (3, 2),
        (0, 3),
        (2, 3),
        (3, 3),
    ] {
        assert!(!is_black(&cell(&grid, col, row, 32)), "cell {col},{row}");
    }
    let (shape, zs) = npy(&zout);
    assert_eq!(shape, [4, NZ]);
    let mean = |rows: &[Vec<f32>]| -> Vec<f32> {
        (0..NZ)
            .map(|i| rows.iter().map(|r| r[i]).sum::<f32>() / rows.len() as f32)
            .collect()
    };
    let ma = mean(&[seed_z(1), seed_z(2), seed_z(3)]);
    let mb = mean(&[seed_z(4), seed_z(5)]);
    let mc = mean(&c_rows);
    assert!(close(&zs[..NZ], &ma, 1e-6));
    assert!(close(&zs[NZ..2 * NZ], &mb, 1e-6));
    assert!(close(&zs[2 * NZ..3 * NZ], &mc, 1e-6));
    let r: Vec<f32> = (0..NZ).map(|i| ma[i] - mb[i] + mc[i]).collect();
    assert!(close(&zs[3 * NZ..], &r, 1e-5));

    // Without noise the result row shows the result alone.
    ok(&[
        "arith",
        "--checkpoint",
        s(ck),
        "--a-seeds",
        "1",
        "--b-seeds",
        "2",
        "--c-seeds",
        "3,4",
        "--noise",
        "0",
        "--out",
        s(&out),
    ]);
    let grid = png(&out);
    assert_eq!(grid.dimensions(), grid_dims(3, 4, 32));
    assert!(is_black(&cell(&grid, 0, 3, 32)) && is_black(&cell(&grid, 1, 3, 32)));
    assert!(!is_black(&cell(&grid, 2, 3, 32)));
}

#[test]
fn sweep_varies_one_dimension_per_row() {
    let ck = dcgan();
    let dir = tempfile::tempdir().unwrap();
    let (out, zout) = (dir.path().join("s.png"), dir.path().join("s.npy"));
    ok(&[
        "sweep",
        "--checkpoint",
        s(ck),
        "--seed",
        "3",
        "--dims",
        "0..3,7",
        "--steps",
        "5",
        "--range",
        "-3,3",
        "--out",
        s(&out),
        "--z-out",
        s(&zout),
    ]);
    assert_eq!(png(&out).dimensions(), grid_dims(5, 4, 32));
    let (shape, zs) = npy(&zout);
    assert_eq!(shape, [20, NZ]);
    let z = seed_z(3);
    for (r, d) in [0usize, 1, 2, 7].into_iter().enumerate() {
        for (j, v) in [-3.0f32, -1.5, 0.0, 1.5, 3.0].into_iter().enumerate() {
            let row = &zs[(r * 5 + j) * NZ..(r * 5 + j + 1) * NZ];
            let mut want = z.clone();
            want[d] = v;
            assert_eq!(row, &want[..], "dim {d} value {v}");
        }
    }
    // Defaults: the first 8 dimensions, 9 values over [-2, 2]; --first K; z from a file.
    ok(&["sweep", "--checkpoint", s(ck), "--out", s(&out)]);
    assert_eq!(png(&out).dimensions(), grid_dims(9, 8, 32));
    let zin = dir.path().join("z.npy");
    write_z(&zin, &[seed_z(0), seed_z(9)]);
    ok(&[
        "sweep",
        "--checkpoint",
        s(ck),
        "--z-npy",
        s(&zin),
        "--z-index",
        "1",
        "--first",
        "2",
        "--steps",
        "3",
        "--out",
        s(&out),
        "--z-out",
        s(&zout),
    ]);
    assert_eq!(png(&out).dimensions(), grid_dims(3, 2, 32));
    let (shape, zs) = npy(&zout);
    assert_eq!(shape, [6, NZ]);
    assert_eq!(&zs[1..NZ], &seed_z(9)[1..]);
    assert_eq!(zs[0], -2.0);
}

fn emu_available() -> bool {
    let o = ok(&["info"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("emu:") && !l.contains("unavailable"))
}

/// The tools run G on the chosen device: on the emulated CUDA backend the pictures match the CPU's.
#[test]
fn tools_on_the_emulated_cuda_backend_match_the_cpu() {
    if !emu_available() {
        eprintln!("skipped: the CUDA emulation is not built in");
        return;
    }
    let ck = dcgan();
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        &["interpolate", "--seeds", "4,5", "--steps", "3"][..],
        &[
            "arith",
            "--a-seeds",
            "1,2",
            "--b-seeds",
            "3",
            "--c-seeds",
            "4",
        ],
        &["sweep", "--first", "2", "--steps", "3"],
    ] {
        let mut pics = vec![];
        for dev in ["cpu", "emu"] {
            let out = dir.path().join(format!("{}_{dev}.png", cmd[0]));
            let mut args = cmd.to_vec();
            args.extend_from_slice(&["--checkpoint", s(ck), "--device", dev, "--out", s(&out)]);
            ok(&args);
            pics.push(png(&out));
        }
        assert_eq!(pics[0].dimensions(), pics[1].dimensions(), "{}", cmd[0]);
        // Different summation orders round differently; a pixel may move by one step.
        let worst = pics[0]
            .as_raw()
            .iter()
            .zip(pics[1].as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "{}: cpu and emu differ by {worst}", cmd[0]);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let ck = dcgan();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = s(&out);
    let missing = dir.path().join("nowhere");
    fails(
        &[
            "interpolate",
            "--checkpoint",
            s(&missing),
            "--seeds",
            "1,2",
            "--out",
            o,
        ],
        1,
        &["does not exist"],
    );
    fails(
        &[
            "interpolate",
            "--checkpoint",
            s(ck),
            "--seeds",
            "1,2",
            "--steps",
            "1",
        ],
        2,
        &["at least 2"],
    );
    fails(
        &[
            "interpolate",
            "--checkpoint",
            s(ck),
            "--seeds",
            "1",
            "--out",
            o,
        ],
        1,
        &["at least 2 key latents"],
    );
    fails(&["interpolate", "--checkpoint", s(ck)], 2, &["--seeds"]);
    let z7 = dir.path().join("z7.npy");
    write_z(&z7, &[vec![0.0; 7], vec![1.0; 7]]);
    fails(
        &[
            "interpolate",
            "--checkpoint",
            s(ck),
            "--z-npy",
            s(&z7),
            "--out",
            o,
        ],
        1,
        &["size 7", "nz = 16"],
    );
    fails(
        &[
            "arith",
            "--checkpoint",
            s(ck),
            "--a-seeds",
            "1",
            "--c-seeds",
            "2",
            "--out",
            o,
        ],
        2,
        &["--b-seeds"],
    );
    fails(
        &[
            "arith",
            "--checkpoint",
            s(ck),
            "--a-npy",
            s(&z7),
            "--b-seeds",
            "1",
            "--c-seeds",
            "2",
            "--out",
            o,
        ],
        1,
        &["nz = 16"],
    );
    fails(
        &[
            "arith",
            "--checkpoint",
            s(ck),
            "--a-seeds",
            "1",
            "--b-seeds",
            "1",
            "--c-seeds",
            "2",
            "--noise=-1",
            "--out",
            o,
        ],
        1,
        &["--noise"],
    );
    fails(
        &["sweep", "--checkpoint", s(ck), "--dims", "3,16", "--out", o],
        1,
        &["dimension 16 is out of range"],
    );
    fails(
        &["sweep", "--checkpoint", s(ck), "--dims", "x", "--out", o],
        1,
        &["not a dimension index"],
    );
    fails(
        &["sweep", "--checkpoint", s(ck), "--first", "17", "--out", o],
        1,
        &["nz = 16"],
    );
    fails(
        &[
            "sweep",
            "--checkpoint",
            s(ck),
            "--range",
            "2,-2",
            "--out",
            o,
        ],
        2,
        &["LO must be below HI"],
    );
    let z16 = dir.path().join("z16.npy");
    write_z(&z16, &[vec![0.0; 16]]);
    fails(
        &[
            "sweep",
            "--checkpoint",
            s(ck),
            "--z-npy",
            s(&z16),
            "--z-index",
            "1",
            "--out",
            o,
        ],
        1,
        &["--z-index 1 is out of range"],
    );
    assert!(!out.exists(), "no picture is written on failure");
}
