//! Training data: the [`Dataset`] trait, the datasets behind it (procedural [`balls`], MNIST-format [`idx`]
//! files, a [`folder`] of pictures), the shuffling, prefetching batch [`loader`], and [`open_dataset`], which
//! turns a command-line string into a dataset.
//!
//! Every dataset hands out single images as CHW `f32` in `[-1, 1]` (the range a tanh generator produces),
//! already at the model's resolution and channel count, so the loader only has to stack them.

pub mod balls;
pub mod folder;
pub mod idx;
pub mod loader;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

pub use balls::{BallsDataset, DEFAULT_BALLS_LEN};
pub use folder::FolderDataset;
pub use idx::{read_idx_images, read_idx_labels, IdxDataset, IdxImages, Split};
pub use loader::{Batch, Loader, LoaderConfig, LoaderState};

/// A random-access collection of images. `Send + Sync` because the loader decodes in worker threads.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(channels, height, width)` of every image [`get`](Dataset::get) returns.
    fn image_shape(&self) -> (usize, usize, usize);

    /// Number of label classes, or `None` for an unlabelled dataset.
    fn num_classes(&self) -> Option<usize>;

    /// Image `i` as CHW `f32` in `[-1, 1]`, with its label if the dataset has labels.
    fn get(&self, i: usize) -> Result<(Vec<f32>, Option<u32>)>;

    /// One line for logs, e.g. `mnist train (/data/mnist, 60000 images, 1x28x28)`.
    fn describe(&self) -> String {
        let (c, h, w) = self.image_shape();
        format!("dataset of {} images, {c}x{h}x{w}", self.len())
    }

    /// A summary of what went wrong while reading (pictures that failed to decode and were replaced), to be
    /// shown at the end of a training; `None` when all went well.
    fn problems(&self) -> Option<String> {
        None
    }
}

/// Settings [`open_dataset`] needs beyond the image geometry.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// Seed of the procedural `balls` images (the loader's shuffle has its own seed).
    pub seed: u64,
    /// Which MNIST split to read.
    pub split: Split,
    /// Length of the `balls` dataset when the spec does not give one (`balls:N`).
    pub balls_len: usize,
    /// Threads used to scan a folder dataset's files when it is opened.
    pub scan_threads: usize,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            seed: 0,
            split: Split::Train,
            balls_len: DEFAULT_BALLS_LEN,
            scan_threads: default_threads(),
        }
    }
}

/// Images `ids` of `ds` decoded in parallel and stacked as one NCHW tensor on `device`, with their labels (for
/// the tools that show or probe a handful of real images; training batches come from the [`Loader`]).
pub fn stack_images(
    ds: &dyn Dataset,
    ids: &[usize],
    device: &crate::device::Device,
) -> Result<(crate::tensor::Tensor, Vec<Option<u32>>)> {
    use rayon::prelude::*;
    let (c, h, w) = ds.image_shape();
    let items: Vec<(Vec<f32>, Option<u32>)> =
        ids.par_iter().map(|&i| ds.get(i)).collect::<Result<_>>()?;
    ensure!(
        items.iter().all(|(x, _)| x.len() == c * h * w),
        "the images of {} are not all {c}x{h}x{w}",
        ds.describe()
    );
    let (pixels, labels): (Vec<Vec<f32>>, Vec<Option<u32>>) = items.into_iter().unzip();
    let images = crate::tensor::Tensor::from_vec(pixels.concat(), &[ids.len(), c, h, w], device)?;
    Ok((images, labels))
}

/// Worker threads to use for data work: all cores but one (the training loop's), at least one, at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .clamp(1, 8)
}

/// The spec syntax, for error messages and `--help`.
pub const DATASET_SPECS: &str = "balls[:N] (default), mnist[:DIR] (default DIR ./data/mnist), \
fashion[:DIR] (default DIR ./data/fashion), folder:DIR, or a path to a directory of images";

/// Where `mnist` and `fashion` are read from without a `:DIR` (`scripts/fetch_mnist.sh` puts them there).
fn default_dir(name: &str) -> &'static str {
    if name == "mnist" {
        "data/mnist"
    } else {
        "data/fashion"
    }
}

/// Says which directory a relative dataset path was taken in, for the error of a dataset that cannot be opened.
fn relative_note(dir: &Path) -> String {
    match std::env::current_dir() {
        Ok(cwd) if dir.is_relative() => format!(
            "dataset directory {} was looked for as {}",
            dir.display(),
            cwd.join(dir).display()
        ),
        _ => format!("dataset directory {}", dir.display()),
    }
}

/// `spec` with its directory made absolute (`mnist` → `mnist:/home/me/data/mnist`), so a run's record names
/// its data wherever it is resumed from. Specs without a directory, or whose directory does not exist, are
/// returned as they are (opening them reports the problem).
pub fn absolute_spec(spec: &str) -> String {
    let spec = spec.trim();
    let (name, dir) = match spec.split_once(':') {
        Some((n @ ("mnist" | "fashion" | "folder"), d)) if !d.is_empty() => (n, PathBuf::from(d)),
        None if matches!(spec, "mnist" | "fashion") => (spec, PathBuf::from(default_dir(spec))),
        None if Path::new(spec).is_dir() => ("folder", PathBuf::from(spec)),
        _ => return spec.to_string(),
    };
    match std::path::absolute(&dir) {
        Ok(abs) if dir.is_dir() => format!("{name}:{}", abs.display()),
        _ => spec.to_string(),
    }
}

/// Opens the dataset a command-line string names, producing `channels` x `image_size` x `image_size` images:
///
/// - `balls` or `""`: the procedural demo set ([`BallsDataset`]); `balls:N` sets its length.
/// - `mnist`, `mnist:DIR`, `fashion`, `fashion:DIR`: IDX files ([`IdxDataset`]), resized if `image_size`
///   is not 28, replicated to RGB if `channels` is 3.
/// - `folder:DIR`, or any path that is an existing directory: pictures ([`FolderDataset`]).
pub fn open_dataset(
    spec: &str,
    image_size: usize,
    channels: usize,
    opts: &DatasetOptions,
) -> Result<Arc<dyn Dataset>> {
    ensure!(
        channels == 1 || channels == 3,
        "channels must be 1 (grey) or 3 (RGB), got {channels}"
    );
    let spec = spec.trim();
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (spec, None),
    };
    let dir_arg = |default: &str| -> Result<PathBuf> {
        match arg {
            Some("") => bail!("dataset '{spec}': empty directory after ':'"),
            Some(a) => Ok(PathBuf::from(a)),
            None => Ok(PathBuf::from(default)),
        }
    };
    match name {
        "" | "balls" => {
            let len = match arg {
                None => opts.balls_len,
                Some(a) => a.parse::<usize>().map_err(|_| {
                    anyhow::anyhow!("dataset '{spec}': expected balls:N with N a number of images")
                })?,
            };
            Ok(Arc::new(BallsDataset::new(
                opts.seed, len, image_size, channels,
            )?))
        }
        "mnist" | "fashion" => {
            let dir = dir_arg(default_dir(name))?;
            let ds = IdxDataset::open(&dir, name, opts.split, image_size, channels)
                .with_context(|| relative_note(&dir))?;
            Ok(Arc::new(ds))
        }
        "folder" => {
            let dir = dir_arg("")?;
            ensure!(
                arg.is_some(),
                "dataset 'folder' needs a directory: folder:DIR"
            );
            let ds = FolderDataset::open(&dir, image_size, channels, opts.scan_threads)
                .with_context(|| relative_note(&dir))?;
            Ok(Arc::new(ds))
        }
        _ if Path::new(spec).is_dir() => Ok(Arc::new(FolderDataset::open(
            Path::new(spec),
            image_size,
            channels,
            opts.scan_threads,
        )?)),
        _ if spec.contains('/') || spec.contains('\\') || Path::new(spec).exists() => {
            bail!("dataset '{spec}': no such directory (expected {DATASET_SPECS})")
        }
        _ => bail!("unknown dataset '{spec}': expected {DATASET_SPECS}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_map_to_datasets() {
        let o = DatasetOptions::default();
        let d = open_dataset("balls", 32, 3, &o).unwrap();
        assert_eq!((d.len(), d.image_shape()), (DEFAULT_BALLS_LEN, (3, 32, 32)));
        let d = open_dataset("", 28, 1, &o).unwrap();
        assert_eq!(d.image_shape(), (1, 28, 28));
        let d = open_dataset("balls:123", 64, 3, &o).unwrap();
        assert_eq!(d.len(), 123);
        assert!(d.describe().contains("balls"));
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let o = DatasetOptions::default();
        let err = |s: &str| format!("{:#}", open_dataset(s, 32, 3, &o).err().unwrap());
        let e = err("cifar");
        assert!(
            e.contains("unknown dataset 'cifar'") && e.contains("mnist"),
            "{e}"
        );
        let e = err("balls:many");
        assert!(e.contains("balls:N"), "{e}");
        let e = err("mnist:/no/such/dir");
        assert!(e.contains("/no/such/dir"), "{e}");
        let e = err("fashion:/no/such/fashion");
        assert!(e.contains("/no/such/fashion"), "{e}");
        let e = err("folder:/no/such/pics");
        assert!(e.contains("/no/such/pics"), "{e}");
        let e = err("folder");
        assert!(e.contains("folder:DIR"), "{e}");
        let e = err("./not/a/dir");
        assert!(
            e.contains("no such directory") && e.contains("./not/a/dir"),
            "{e}"
        );
        assert!(
            format!("{:#}", open_dataset("balls", 32, 2, &o).err().unwrap()).contains("channels")
        );
    }

    #[test]
    fn a_directory_path_is_a_folder_dataset() {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::from_pixel(20, 10, image::Rgb([200, 10, 10]))
            .save(dir.path().join("a.png"))
            .unwrap();
        let o = DatasetOptions::default();
        let d = open_dataset(dir.path().to_str().unwrap(), 16, 3, &o).unwrap();
        assert_eq!((d.len(), d.image_shape()), (1, (3, 16, 16)));
        let spec = format!("folder:{}", dir.path().display());
        assert_eq!(
            open_dataset(&spec, 16, 1, &o).unwrap().image_shape(),
            (1, 16, 16)
        );
    }
}
