//! The training loop's side of the data: which dataset a config names, and its batch loader.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::data::{open_dataset, Dataset, DatasetOptions, Loader, LoaderConfig, LoaderState};
use crate::device::Device;

use super::config::TrainConfig;
use super::gan::{stream_seed, STREAM_DATA};

/// Image size and channels a dataset has natively (the defaults of `--image-size` / `--channels`).
pub struct NaturalFormat {
    pub image_size: usize,
    pub channels: usize,
}

/// MNIST-like sets are 28×28 grey; everything else (balls, folders of pictures) defaults to 32×32 RGB, the
/// size at which the demo trains in minutes on a CPU.
pub fn natural_format(spec: &str) -> NaturalFormat {
    let kind = spec.split(':').next().unwrap_or(spec);
    match kind {
        "mnist" | "fashion" => NaturalFormat {
            image_size: 28,
            channels: 1,
        },
        _ => NaturalFormat {
            image_size: 32,
            channels: 3,
        },
    }
}

/// The number of label classes of the dataset `cfg` names, for a new conditional model; a clear error when the
/// dataset has no labels.
pub fn dataset_num_classes(cfg: &TrainConfig) -> Result<usize> {
    let ds = run_dataset(cfg)?;
    match ds.num_classes() {
        Some(c) if c > 0 => Ok(c),
        _ => bail!(
            "--conditional needs a dataset with class labels (mnist, fashion, balls), but {} has none{}",
            ds.describe(),
            match spec_kind(&cfg.dataset) {
                "mnist" | "fashion" => " (its *-labels-idx1-ubyte file is missing)",
                _ => "",
            }
        ),
    }
}

/// The dataset `cfg` names, at the model's image format.
fn run_dataset(cfg: &TrainConfig) -> Result<Arc<dyn Dataset>> {
    let opts = DatasetOptions {
        // The procedural balls are part of the run's identity: the same seed draws the same pictures.
        seed: cfg.seed,
        ..DatasetOptions::default()
    };
    open_dataset(
        &cfg.dataset,
        cfg.model.image_size,
        cfg.model.channels,
        &opts,
    )
}

fn spec_kind(spec: &str) -> &str {
    spec.split(':').next().unwrap_or(spec)
}

/// The shuffled, drop-last loader of the run's dataset, at its start or at a saved position.
pub fn open_loader(
    cfg: &TrainConfig,
    device: &Device,
    state: Option<&LoaderState>,
) -> Result<Loader> {
    let ds = run_dataset(cfg)?;
    let lc = LoaderConfig::new(
        cfg.batch_size,
        stream_seed(cfg.seed, STREAM_DATA),
        device.clone(),
    );
    match state {
        None => Loader::new(ds, lc),
        Some(s) => Loader::resume(ds, lc, s).context("resuming the data loader"),
    }
}
