//! `gan-engine fid`: the Fréchet Inception Distance between real images and a generator's samples
//! (`--checkpoint RUN --data mnist --n 10000`) or between two image sets (`--real A --fake B`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use clap::Args;

use crate::checkpoint;
use crate::data::{open_dataset, DatasetOptions, Split};
use crate::device::Device;
use crate::fid::{self, FeatureExtractor, FeatureStats, PixelSet, StatsCache};

#[derive(Args, Debug)]
pub struct FidArgs {
    /// Real images: a directory of pictures, a dataset (mnist[:DIR], fashion[:DIR], balls:N), or a statistics
    /// file written by --real-stats or train --fid-every (any file is read as one)
    #[arg(long, alias = "data", value_name = "SPEC")]
    pub real: String,
    /// Fake images: a directory of pictures or a dataset spec (or use --checkpoint)
    #[arg(long, value_name = "SPEC", conflicts_with = "checkpoint")]
    pub fake: Option<String>,
    /// Sample the fakes from this generator: a run directory (its --g-ema average if kept, else G), a generator
    /// file or checkpoint.safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Images per set [default: all real images; 10000 samples from a checkpoint]
    #[arg(long, value_name = "N")]
    pub n: Option<usize>,
    /// Split of an MNIST-format real dataset
    #[arg(long, default_value = "test", value_parser = ["test", "train"])]
    pub split: String,
    /// Images per Inception batch
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// cpu | cuda[:N] | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The converted Inception weights [default: $GAN_ENGINE_INCEPTION or ~/.cache/gan-engine/inception_fid.safetensors]
    #[arg(long, value_name = "PATH")]
    pub inception: Option<PathBuf>,
    /// Cache file for the real statistics: reused when it describes the same images, written when absent;
    /// a file for other images is an error, never overwritten [default for mnist/fashion/balls: next to the
    /// weights, in fid_stats/, one file per data set, split, size and count]
    #[arg(long, value_name = "PATH")]
    pub real_stats: Option<PathBuf>,
    /// Seed of the generator's latents
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Where the images of one side come from.
enum Source {
    Stats(PathBuf),
    Dir(PathBuf),
    Dataset(String),
}

/// A file can only be statistics (whatever its name: `--real-stats` takes any), a directory only pictures;
/// anything else is a dataset spec.
fn source(spec: &str) -> Source {
    let p = Path::new(spec);
    if p.is_file() {
        Source::Stats(p.to_path_buf())
    } else if p.is_dir() {
        Source::Dir(p.to_path_buf())
    } else {
        Source::Dataset(spec.to_string())
    }
}

/// Opens a dataset spec at the geometry the generator makes (or the MNIST-format 28×28 grey / balls 64×64).
fn dataset_pixels(
    spec: &str,
    split: Split,
    geometry: Option<(usize, usize)>,
    n: Option<usize>,
) -> Result<PixelSet> {
    let kind = spec.split(':').next().unwrap_or(spec);
    let (size, channels) = geometry.unwrap_or(match kind {
        "mnist" | "fashion" => (28, 1),
        _ => (64, 3),
    });
    let opts = DatasetOptions {
        split,
        ..DatasetOptions::default()
    };
    let ds = open_dataset(spec, size, channels, &opts)?;
    println!("  {}", ds.describe());
    PixelSet::from_dataset(ds.as_ref(), n)
}

fn default_cache(spec: &str, split: Split, chw: [usize; 3], n: usize) -> Option<PathBuf> {
    let kind = spec.split(':').next().unwrap_or(spec);
    if !matches!(kind, "mnist" | "fashion" | "balls") || spec.contains(':') && kind != "balls" {
        // A dataset in a user-given directory may change: no silent cache for it.
        return None;
    }
    let weights = fid::default_weights_path()?;
    let name = format!(
        "{}-{}-{}x{}x{}-n{n}.safetensors",
        spec.replace(':', "_"),
        split_name(split),
        chw[0],
        chw[1],
        chw[2]
    );
    Some(weights.parent()?.join("fid_stats").join(name))
}

pub fn run(a: FidArgs) -> Result<()> {
    ensure!(a.batch_size > 0, "--batch-size must be positive");
    ensure!(a.n != Some(0), "--n must be positive");
    if a.fake.is_none() && a.checkpoint.is_none() {
        bail!("give the fake images: --fake SPEC or --checkpoint RUN");
    }
    let weights = fid::resolve_weights(a.inception.as_deref())?;
    let device = Device::parse(&a.device)?;
    let split = if a.split == "train" {
        Split::Train
    } else {
        Split::Test
    };
    let t0 = Instant::now();
    let ex = FeatureExtractor::new(&weights, &device, a.batch_size)?;
    println!(
        "Inception weights {} on {}",
        weights.display(),
        device.name()
    );

    // Fakes first: their geometry decides the resolution real datasets are read at.
    let mut generator = match &a.checkpoint {
        Some(c) => {
            let file = checkpoint::resolve(c, false)?;
            Some(checkpoint::load_generator(&file, &device)?)
        }
        None => None,
    };
    let geometry = generator
        .as_ref()
        .map(|g| (g.cfg.image_shape()[1], g.cfg.image_shape()[0]));
    let fake = match (&mut generator, &a.fake) {
        (Some(g), _) => {
            let n = a.n.unwrap_or(10_000);
            println!(
                "fake: {n} samples of {} (seed {})",
                g.cfg.describe(),
                a.seed
            );
            fid::generator_pixels(g, n, a.batch_size, a.seed)?
        }
        (None, Some(spec)) => match source(spec) {
            Source::Dir(d) => PixelSet::from_dir(&d, a.n)?,
            Source::Dataset(s) => dataset_pixels(&s, split, geometry, a.n)?,
            Source::Stats(_) => {
                bail!("--fake must be images (a directory or a dataset), not a statistics file")
            }
        },
        (None, None) => unreachable!("checked above"),
    };
    println!(
        "fake: {} images of {}x{}x{}",
        fake.len(),
        fake.chw[0],
        fake.chw[1],
        fake.chw[2]
    );
    // Real statistics before the fakes' feature pass: a --real-stats file that cannot be reused fails here,
    // not after an hour of Inception passes over the samples.
    let real_stats = match source(&a.real) {
        Source::Stats(p) => {
            let (s, key) = FeatureStats::load(&p)?;
            println!("real: statistics file {} ({key})", p.display());
            s
        }
        src => {
            let pixels = match &src {
                Source::Dir(d) => PixelSet::from_dir(d, a.n)?,
                Source::Dataset(s) => dataset_pixels(s, split, geometry, a.n)?,
                Source::Stats(_) => unreachable!(),
            };
            println!(
                "real: {} images of {}x{}x{} from {}",
                pixels.len(),
                pixels.chw[0],
                pixels.chw[1],
                pixels.chw[2],
                a.real
            );
            let key = format!(
                "{}; real={} split={} chw={:?} n={}",
                fid::PROTOCOL,
                a.real,
                split_name(split),
                pixels.chw,
                pixels.len()
            );
            let managed = match &src {
                Source::Dataset(s) => default_cache(s, split, pixels.chw, pixels.len()),
                _ => None,
            };
            let cache = match (&a.real_stats, &managed) {
                (Some(p), _) => StatsCache::User(p),
                (None, Some(p)) => StatsCache::Managed(p),
                (None, None) => StatsCache::Off,
            };
            let (s, hit) = fid::cached_stats(cache, &key, || ex.stats(&pixels.pixels, pixels.chw))?;
            if let StatsCache::User(c) | StatsCache::Managed(c) = cache {
                println!(
                    "real statistics {} {}",
                    if hit { "cached in" } else { "written to" },
                    c.display()
                );
            }
            s
        }
    };
    let fake_stats = ex.stats(&fake.pixels, fake.chw)?;
    let d = fid::frechet_distance(&real_stats, &fake_stats)?;
    println!(
        "n real {} / fake {}; {:.1} s",
        real_stats.n,
        fake_stats.n,
        t0.elapsed().as_secs_f64()
    );
    println!("FID {d:.6}");
    Ok(())
}
