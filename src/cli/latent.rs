//! The latent-space tools: `interpolate`, `arith` and `sweep`. Each decodes a set of latents with a trained
//! generator and writes a grid PNG (plus, where useful, the latents as `.npy` and an animated GIF).
//!
//! A latent named by a seed is the first latent `sample --seed <seed>` draws (the same Philox stream), so the
//! picture of `--seeds 7,...` starts with the image `sample --seed 7 --n 1` shows. The maths lives in
//! [`crate::study::latent`]; this file reads the inputs, runs the generator and lays out the pictures.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use image::codecs::gif::{GifEncoder, Repeat};
use image::imageops::FilterType;
use image::{Delay, Frame, RgbImage};

use crate::checkpoint;
use crate::device::Device;
use crate::io::{make_grid, save_grid, write_atomic, write_npy};
use crate::limits;
use crate::nn::models::Generator;
use crate::ops::random::RngStream;
use crate::study::latent::{
    flatten_path, interpolation_path, linspace, parse_dims, sweep_latents, vector_arith, Interp,
};
use crate::tensor::Tensor;
use crate::train::gan::{stream_seed, STREAM_FIXED_Z};

/// The stream of `arith`'s noisy variants of the result; far from the training streams (1–4) so a new
/// training stream will not silently alias it.
const STREAM_ARITH_NOISE: u64 = 0x4152_4954; // "ARIT"

/// Images decoded per generator call: bounds memory for long paths. Eval-mode BN uses running statistics, so
/// the split does not change any image.
const GEN_CHUNK: usize = 256;

#[derive(Args, Debug)]
pub struct InterpolateArgs {
    /// A run directory (its generator_ema.safetensors if the run kept a --g-ema average, else
    /// generator.safetensors), a generator file or checkpoint.safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Key latents by seed, in order, comma-separated (at least 2): seed s is the first latent of
    /// `sample --seed s`
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "S,S,...",
        required_unless_present = "z_npy",
        conflicts_with = "z_npy"
    )]
    pub seeds: Vec<u64>,
    /// Key latents from .npy files, [K, nz] or [K, nz, 1, 1] float32; repeat the flag to chain files (rows
    /// are taken in order, at least 2 in all)
    #[arg(long, value_name = "FILE")]
    pub z_npy: Vec<PathBuf>,
    /// Images per segment between two keys, both keys included
    #[arg(long, default_value_t = 8, value_parser = at_least_2, value_name = "N")]
    pub steps: usize,
    /// slerp: along the great circle (keeps |z| near sqrt(nz), where G was trained); lerp: straight line
    #[arg(long, value_enum, default_value_t = Interp::Slerp)]
    pub mode: Interp,
    /// Also interpolate from the last key back to the first (a seamless loop for the GIF)
    #[arg(long)]
    pub closed: bool,
    /// Grid PNG: one row per segment (key k → key k+1), --steps images per row from left to right
    #[arg(long, default_value = "interpolate.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Also write an animated GIF walking the whole path (shared keys shown once), looping forever
    #[arg(long, value_name = "FILE")]
    pub gif: Option<PathBuf>,
    /// GIF frame delay in milliseconds (GIF stores hundredths of a second)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=60_000), value_name = "MS")]
    pub frame_ms: u32,
    /// GIF frames are enlarged by a whole factor (nearest neighbour) until their larger side is at least this
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=limits::MAX_GIF_SIZE as i64), value_name = "PX")]
    pub gif_size: u32,
    /// Write the path's latents (the GIF's frames, in order) as .npy, [F, nz] float32
    #[arg(long, value_name = "FILE")]
    pub z_out: Option<PathBuf>,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Class of every image, for a class-conditional generator (`train --conditional`)
    #[arg(long, value_name = "K")]
    pub class: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ArithArgs {
    /// A run directory (its generator_ema.safetensors if the run kept a --g-ema average, else
    /// generator.safetensors), a generator file or checkpoint.safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Concept A's latents by seed, comma-separated (several: their mean is what is used)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "S,S,...",
        required_unless_present = "a_npy",
        conflicts_with = "a_npy"
    )]
    pub a_seeds: Vec<u64>,
    /// Concept B's latents by seed (subtracted)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "S,S,...",
        required_unless_present = "b_npy",
        conflicts_with = "b_npy"
    )]
    pub b_seeds: Vec<u64>,
    /// Concept C's latents by seed (added)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "S,S,...",
        required_unless_present = "c_npy",
        conflicts_with = "c_npy"
    )]
    pub c_seeds: Vec<u64>,
    /// Concept A's latents from a .npy file ([K, nz] or [K, nz, 1, 1]) instead of seeds
    #[arg(long, value_name = "FILE")]
    pub a_npy: Option<PathBuf>,
    /// Concept B's latents from a .npy file
    #[arg(long, value_name = "FILE")]
    pub b_npy: Option<PathBuf>,
    /// Concept C's latents from a .npy file
    #[arg(long, value_name = "FILE")]
    pub c_npy: Option<PathBuf>,
    /// Std of the noise added to the result for its variants (the paper used 0.25); 0 shows the result alone
    #[arg(long, default_value_t = 0.25, value_name = "STD")]
    pub noise: f32,
    /// Seed of the variants' noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Grid PNG with M+1 columns, M the largest concept size. Rows 1-3: concept A, B, C: its M input
    /// images from the left (blank where a concept has fewer), then the image of its mean latent in the last
    /// column. Row 4: M variants (result + noise) from the left, then the result mean(A) - mean(B) + mean(C)
    /// in the last column, under the three means
    #[arg(long, default_value = "arith.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Write the latents as .npy, [4, nz] float32: rows mean(A), mean(B), mean(C), result
    #[arg(long, value_name = "FILE")]
    pub z_out: Option<PathBuf>,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Class of every image, for a class-conditional generator (`train --conditional`)
    #[arg(long, value_name = "K")]
    pub class: Option<u32>,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// A run directory (its generator_ema.safetensors if the run kept a --g-ema average, else
    /// generator.safetensors), a generator file or checkpoint.safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// The latent held fixed: the first latent of `sample --seed <seed>`
    #[arg(long, default_value_t = 0, conflicts_with = "z_npy")]
    pub seed: u64,
    /// Take the held latent from a .npy file ([K, nz] or [K, nz, 1, 1]) instead, row --z-index
    #[arg(long, value_name = "FILE")]
    pub z_npy: Option<PathBuf>,
    /// Row of --z-npy to use
    #[arg(long, default_value_t = 0, requires = "z_npy", value_name = "I")]
    pub z_index: usize,
    /// Dimensions to sweep, one grid row each: 3 | 0,4,7 | 0..8 | 2..=5 (mixable: 0..3,10)
    #[arg(long, value_name = "LIST", conflicts_with = "first")]
    pub dims: Option<String>,
    /// Sweep dimensions 0..K [default: the first 8, or all if nz < 8]
    #[arg(long, value_parser = positive_usize, value_name = "K")]
    pub first: Option<usize>,
    /// Values per dimension (grid columns), evenly spaced over --range, both ends included
    #[arg(long, default_value_t = 9, value_parser = at_least_2, value_name = "N")]
    pub steps: usize,
    /// The values a dimension takes, LO,HI (written --range=-3,3 or --range -3,3)
    #[arg(long, default_value = "-2,2", value_parser = parse_range, allow_hyphen_values = true, value_name = "LO,HI")]
    pub range: ValueRange,
    /// Grid PNG: one row per dimension, in the order given; column j sets that dimension to the j-th value
    #[arg(long, default_value = "sweep.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Write the swept latents as .npy, [rows * steps, nz] float32, in grid order
    #[arg(long, value_name = "FILE")]
    pub z_out: Option<PathBuf>,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Class of every image, for a class-conditional generator (`train --conditional`)
    #[arg(long, value_name = "K")]
    pub class: Option<u32>,
}

/// `--range LO,HI`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueRange {
    pub lo: f64,
    pub hi: f64,
}

fn parse_range(s: &str) -> Result<ValueRange, String> {
    let (lo, hi) = s
        .split_once(',')
        .ok_or_else(|| format!("expected LO,HI (e.g. -2,2), got '{s}'"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("'{x}' is not a finite number"))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if lo >= hi {
        return Err(format!("LO must be below HI, got {lo},{hi}"));
    }
    Ok(ValueRange { lo, hi })
}

fn at_least_2(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > limits::MAX_STEPS => Err(format!(
            "at most {} images per row, got {n}",
            limits::MAX_STEPS
        )),
        Ok(n) if n >= 2 => Ok(n),
        Ok(n) => Err(format!(
            "must be at least 2 (the two ends are included), got {n}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The generator of a `--checkpoint` on `--device`.
fn load(checkpoint: &Path, device: &str) -> Result<(Generator, PathBuf)> {
    let device = Device::parse(device)?;
    let file = checkpoint::resolve(checkpoint, false)?;
    let g = checkpoint::load_generator(&file, &device)?;
    Ok((g, file))
}

/// The latent of seed `seed`: the first row of what `sample --seed <seed>` draws. Drawn on the CPU: the
/// Philox streams are identical on every backend, and the arithmetic happens on the host anyway.
pub fn seed_latent(seed: u64, nz: usize) -> Result<Vec<f32>> {
    RngStream::new(stream_seed(seed, STREAM_FIXED_Z))
        .normal(&[1, nz], 0.0, 1.0, &Device::Cpu)?
        .to_vec()
}

fn seed_latents(seeds: &[u64], nz: usize) -> Result<Vec<Vec<f32>>> {
    seeds.iter().map(|&s| seed_latent(s, nz)).collect()
}

/// The rows of a latent `.npy`, each checked to have the generator's `nz`.
fn npy_latents(path: &Path, nz: usize, ckpt: &Path) -> Result<Vec<Vec<f32>>> {
    let z = crate::io::read_latents(path, &Device::Cpu)?;
    let n = z.shape()[0];
    let width = z.numel() / n;
    if width != nz {
        bail!(
            "{}: latents have size {width} but the generator in {} takes nz = {nz}",
            path.display(),
            ckpt.display()
        );
    }
    Ok(z.to_vec()?.chunks_exact(nz).map(<[f32]>::to_vec).collect())
}

/// Writes latents as one `[N, nz]` .npy.
fn save_latents(path: &Path, zs: &[Vec<f32>]) -> Result<()> {
    let nz = zs.first().map_or(0, Vec::len);
    let flat: Vec<f32> = zs.iter().flatten().copied().collect();
    write_npy(
        path,
        &Tensor::from_vec(flat, &[zs.len(), nz], &Device::Cpu)?,
    )?;
    println!(
        "wrote {} latents [{}, {nz}] to {}",
        zs.len(),
        zs.len(),
        path.display()
    );
    Ok(())
}

/// Decoded images on the host, `[N, C, H, W]` flattened, with their shape.
struct Images {
    data: Vec<f32>,
    shape: [usize; 4],
}

impl Images {
    fn per_image(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    fn image(&self, i: usize) -> &[f32] {
        let k = self.per_image();
        &self.data[i * k..(i + 1) * k]
    }

    fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_vec(self.data.clone(), &self.shape, &Device::Cpu)
    }
}

/// Runs G (eval mode) on `zs`, in chunks, on G's device; brings the images to the host.
fn decode(g: &mut Generator, zs: &[Vec<f32>], class: Option<u32>) -> Result<Images> {
    let nz = g.cfg.nz;
    ensure!(!zs.is_empty(), "internal: nothing to decode");
    let classes = g.cfg.num_classes;
    match class {
        None if classes > 0 => bail!(
            "this generator is class-conditional ({classes} classes): pass --class K (0..{})",
            classes - 1
        ),
        Some(_) if classes == 0 => {
            bail!("--class needs a class-conditional generator (train --conditional); this one is not")
        }
        Some(k) if k as usize >= classes => {
            bail!(
                "--class {k} is out of range: this generator has classes 0..{}",
                classes - 1
            )
        }
        _ => {}
    }
    let device = g.store.device.clone();
    let mut data = vec![];
    let mut shape = [0usize; 4];
    for chunk in zs.chunks(GEN_CHUNK) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        ensure!(
            flat.len() == chunk.len() * nz,
            "internal: latent size is not nz = {nz}"
        );
        let z = Tensor::from_vec(flat, &[chunk.len(), nz], &device)?;
        let labels = class.map(|k| vec![k; chunk.len()]);
        let imgs = g
            .generate_with_labels(&z, labels.as_deref())
            .context("generating")?;
        shape = imgs.dims4("generated images")?;
        data.extend(imgs.to_vec()?);
    }
    shape[0] = zs.len();
    Ok(Images { data, shape })
}

/// A grid with blank (black) cells: `cells[i]` is the image index to show in cell i, or None.
fn grid_with_blanks(imgs: &Images, cells: &[Option<usize>]) -> Result<Tensor> {
    let k = imgs.per_image();
    // -1 maps to black, the colour of the padding, so blank cells read as gaps.
    let mut data = vec![-1.0f32; cells.len() * k];
    for (cell, src) in cells.iter().enumerate() {
        if let Some(i) = src {
            data[cell * k..(cell + 1) * k].copy_from_slice(imgs.image(*i));
        }
    }
    let [_, c, h, w] = imgs.shape;
    Tensor::from_vec(data, &[cells.len(), c, h, w], &Device::Cpu)
}

/// Enlarges by a whole factor (nearest neighbour, so pixels stay crisp) until the larger side is ≥ `min`.
pub fn upscale_nearest(img: &RgbImage, min: u32) -> RgbImage {
    let side = img.width().max(img.height()).max(1);
    let f = min.div_ceil(side).max(1);
    if f == 1 {
        return img.clone();
    }
    image::imageops::resize(img, img.width() * f, img.height() * f, FilterType::Nearest)
}

/// Writes `frames` as a GIF that loops forever, each frame shown `delay_ms`, atomically.
pub fn save_gif(frames: &[RgbImage], path: &Path, delay_ms: u32) -> Result<()> {
    ensure!(!frames.is_empty(), "a GIF needs at least one frame");
    let mut bytes = Vec::new();
    {
        // Speed 10 of 1..=30: the quantiser's default quality; 256 colours are plenty for GAN samples.
        let mut enc = GifEncoder::new_with_speed(Cursor::new(&mut bytes), 10);
        enc.set_repeat(Repeat::Infinite)
            .with_context(|| format!("encoding {}", path.display()))?;
        let delay = Delay::from_numer_denom_ms(delay_ms, 1);
        for f in frames {
            let rgba = image::DynamicImage::ImageRgb8(f.clone()).into_rgba8();
            enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .with_context(|| format!("encoding {}", path.display()))?;
        }
    }
    write_atomic(path, &bytes)
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    let (mut g, file) = load(&a.checkpoint, &a.device)?;
    let nz = g.cfg.nz;
    let mut keys = if a.z_npy.is_empty() {
        seed_latents(&a.seeds, nz)?
    } else {
        let mut k = vec![];
        for p in &a.z_npy {
            k.extend(npy_latents(p, nz, &file)?);
        }
        k
    };
    ensure!(
        keys.len() >= 2,
        "interpolate needs at least 2 key latents (--seeds 1,2 or a --z-npy with 2+ rows), got {}",
        keys.len()
    );
    if a.closed {
        keys.push(keys[0].clone());
    }
    let images = (keys.len() - 1) * a.steps;
    ensure!(
        images <= limits::MAX_SAMPLES,
        "{} segments of --steps {} are {images} images, more than the limit of {}",
        keys.len() - 1,
        a.steps,
        limits::MAX_SAMPLES
    );
    let segments = interpolation_path(&keys, a.steps, a.mode)?;
    let frames = flatten_path(&segments);
    let imgs = decode(&mut g, &frames, a.class)?;

    // Grid rows repeat the shared keys (the end of row k is the start of row k+1), so every row reads
    // alone; frame index of segment s, point j = s·(steps − 1) + j.
    let cells: Vec<Option<usize>> = (0..segments.len())
        .flat_map(|s| (0..a.steps).map(move |j| Some(s * (a.steps - 1) + j)))
        .collect();
    save_grid(&grid_with_blanks(&imgs, &cells)?, &a.out, a.steps)?;
    println!(
        "wrote {} {} segment(s) of {} images to {}",
        segments.len(),
        a.mode,
        a.steps,
        a.out.display()
    );
    if let Some(p) = &a.gif {
        let [n, c, h, w] = imgs.shape;
        let frames: Vec<RgbImage> = (0..n)
            .map(|i| {
                let one = Tensor::from_vec(imgs.image(i).to_vec(), &[1, c, h, w], &Device::Cpu)?;
                Ok(upscale_nearest(&make_grid(&one, 1, 0)?, a.gif_size))
            })
            .collect::<Result<_>>()?;
        save_gif(&frames, p, a.frame_ms)?;
        println!("wrote a {n}-frame GIF to {}", p.display());
    }
    if let Some(p) = &a.z_out {
        save_latents(p, &frames)?;
    }
    Ok(())
}

/// A concept's latents: from seeds or from a file.
fn concept(
    name: &str,
    seeds: &[u64],
    npy: &Option<PathBuf>,
    nz: usize,
    ckpt: &Path,
) -> Result<Vec<Vec<f32>>> {
    let zs = match npy {
        Some(p) => npy_latents(p, nz, ckpt)?,
        None => seed_latents(seeds, nz)?,
    };
    ensure!(!zs.is_empty(), "concept {name} has no latents");
    Ok(zs)
}

pub fn arith(a: ArithArgs) -> Result<()> {
    ensure!(
        a.noise.is_finite() && a.noise >= 0.0,
        "--noise must be a finite number >= 0, got {}",
        a.noise
    );
    let (mut g, file) = load(&a.checkpoint, &a.device)?;
    let nz = g.cfg.nz;
    let sets = [
        concept("A", &a.a_seeds, &a.a_npy, nz, &file)?,
        concept("B", &a.b_seeds, &a.b_npy, nz, &file)?,
        concept("C", &a.c_seeds, &a.c_npy, nz, &file)?,
    ];
    let r = vector_arith(&sets[0], &sets[1], &sets[2])?;
    let m = sets.iter().map(Vec::len).max().unwrap_or(1);

    // Everything to decode, in one list: each concept's inputs, the three means, the result, the variants.
    let mut zs: Vec<Vec<f32>> = sets.iter().flatten().cloned().collect();
    let means_at = zs.len();
    zs.extend([
        r.mean_a.clone(),
        r.mean_b.clone(),
        r.mean_c.clone(),
        r.result.clone(),
    ]);
    let variants_at = zs.len();
    if a.noise > 0.0 {
        let mut rng = RngStream::new(stream_seed(a.seed, STREAM_ARITH_NOISE));
        let noise = rng.normal(&[m, nz], 0.0, a.noise, &Device::Cpu)?.to_vec()?;
        for e in noise.chunks_exact(nz) {
            zs.push(r.result.iter().zip(e).map(|(x, n)| x + n).collect());
        }
    }
    let imgs = decode(&mut g, &zs, a.class)?;

    let cols = m + 1;
    let mut cells = vec![None; 4 * cols];
    let mut start = 0;
    for (row, set) in sets.iter().enumerate() {
        for j in 0..set.len() {
            cells[row * cols + j] = Some(start + j);
        }
        start += set.len();
        cells[row * cols + m] = Some(means_at + row);
    }
    cells[3 * cols + m] = Some(means_at + 3);
    if a.noise > 0.0 {
        for j in 0..m {
            cells[3 * cols + j] = Some(variants_at + j);
        }
    }
    save_grid(&grid_with_blanks(&imgs, &cells)?, &a.out, cols)?;
    println!(
        "wrote mean(A) - mean(B) + mean(C) (A: {}, B: {}, C: {} latents) to {}",
        sets[0].len(),
        sets[1].len(),
        sets[2].len(),
        a.out.display()
    );
    if let Some(p) = &a.z_out {
        save_latents(p, &[r.mean_a, r.mean_b, r.mean_c, r.result])?;
    }
    Ok(())
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    let (mut g, file) = load(&a.checkpoint, &a.device)?;
    let nz = g.cfg.nz;
    let z = match &a.z_npy {
        Some(p) => {
            let rows = npy_latents(p, nz, &file)?;
            let n = rows.len();
            rows.into_iter().nth(a.z_index).with_context(|| {
                format!(
                    "--z-index {} is out of range: {} has {n} latents",
                    a.z_index,
                    p.display()
                )
            })?
        }
        None => seed_latent(a.seed, nz)?,
    };
    let dims = match (&a.dims, a.first) {
        (Some(spec), _) => parse_dims(spec, nz).context("--dims")?,
        (None, Some(k)) => {
            ensure!(
                k <= nz,
                "--first {k} is more dimensions than the latent has (nz = {nz})"
            );
            (0..k).collect()
        }
        (None, None) => (0..nz.min(8)).collect(),
    };
    let values = linspace(a.range.lo, a.range.hi, a.steps)?;
    let zs = sweep_latents(&z, &dims, &values).with_context(|| format!("--dims for nz = {nz}"))?;
    let imgs = decode(&mut g, &zs, a.class)?;
    save_grid(&imgs.to_tensor()?, &a.out, a.steps)?;
    println!(
        "wrote a sweep of {} dimension(s) x {} values in [{}, {}] to {}",
        dims.len(),
        a.steps,
        a.range.lo,
        a.range.hi,
        a.out.display()
    );
    if let Some(p) = &a.z_out {
        save_latents(p, &zs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_latent_is_the_first_latent_sample_draws() {
        let nz = 13;
        let mut rng = RngStream::new(stream_seed(42, STREAM_FIXED_Z));
        let batch = rng
            .normal(&[5, nz], 0.0, 1.0, &Device::Cpu)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(seed_latent(42, nz).unwrap(), batch[..nz]);
        assert_ne!(seed_latent(43, nz).unwrap(), batch[..nz]);
    }

    #[test]
    fn ranges_parse_with_negatives() {
        assert_eq!(
            parse_range("-2,2").unwrap(),
            ValueRange { lo: -2.0, hi: 2.0 }
        );
        assert_eq!(
            parse_range(" -0.5 , 3").unwrap(),
            ValueRange { lo: -0.5, hi: 3.0 }
        );
        for bad in ["2", "2,-2", "1,1", "a,2", "-inf,0", "nan,1"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upscale_keeps_whole_pixels() {
        let mut img = RgbImage::new(7, 5);
        img.put_pixel(6, 4, image::Rgb([200, 10, 30]));
        let up = upscale_nearest(&img, 128);
        // ceil(128 / 7) = 19.
        assert_eq!((up.width(), up.height()), (133, 95));
        assert_eq!(up.get_pixel(132, 94), &image::Rgb([200, 10, 30]));
        assert_eq!(up.get_pixel(6 * 19, 4 * 19), &image::Rgb([200, 10, 30]));
        assert_eq!(up.get_pixel(6 * 19 - 1, 4 * 19), &image::Rgb([0, 0, 0]));
        let big = RgbImage::new(200, 100);
        assert_eq!(upscale_nearest(&big, 128).dimensions(), (200, 100));
    }

    #[test]
    fn gif_round_trips_frame_count_size_and_delay() {
        use image::AnimationDecoder;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gif");
        let frames: Vec<RgbImage> = (0..5u8)
            .map(|k| RgbImage::from_pixel(9, 6, image::Rgb([k * 50, 255 - k * 50, 0])))
            .collect();
        save_gif(&frames, &p, 120).unwrap();
        let dec = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
            std::fs::File::open(&p).unwrap(),
        ))
        .unwrap();
        let back = dec.into_frames().collect_frames().unwrap();
        assert_eq!(back.len(), 5);
        for (k, f) in back.iter().enumerate() {
            assert_eq!(f.buffer().dimensions(), (9, 6));
            assert_eq!(f.delay().numer_denom_ms(), (120, 1));
            let px = f.buffer().get_pixel(4, 3);
            let want = [k as u8 * 50, 255 - k as u8 * 50, 0];
            for ch in 0..3 {
                assert!(
                    (px[ch] as i32 - want[ch] as i32).abs() <= 8,
                    "frame {k}: {px:?} vs {want:?}"
                );
            }
        }
        assert!(save_gif(&[], &p, 100).is_err());
    }
}
