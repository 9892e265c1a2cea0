//! What a training run is configured by. Serialised into every checkpoint so a run resumes as it was started.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::nn::models::ModelConfig;

/// The generator's objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Non-saturating: G minimises −log D(G(z)) (what the DCGAN example and most GANs use).
    Ns,
    /// The original minimax game: G minimises log(1 − D(G(z))). Its gradient vanishes while D wins easily,
    /// which is why `ns` is the default.
    Minimax,
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::Ns => "ns",
            LossKind::Minimax => "minimax",
        })
    }
}

/// Optimiser settings of one network (PyTorch's `torch.optim.Adam` arguments).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    pub lr: f32,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f32,
}

/// The length of a run: a number of iterations (G steps), or whole passes over the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duration {
    Steps(u64),
    Epochs(u64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset spec as given on the command line (`balls`, `mnist:DIR`, `folder:DIR`, ...).
    pub dataset: String,
    pub model: ModelConfig,
    pub batch_size: usize,
    pub duration: Duration,
    pub adam_d: AdamSettings,
    pub adam_g: AdamSettings,
    pub loss: LossKind,
    /// D steps per G step.
    pub k: usize,
    pub seed: u64,
    /// Device spec (`cpu`, `cuda`, `cuda:N`, `auto`, `emu`).
    pub device: String,
    pub out: PathBuf,
    pub sample_every: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Images in each sample grid (drawn from one fixed z for the whole run).
    pub num_samples: usize,
    /// FID every N steps (0: never), logged as the `fid` column of metrics.csv. Defaults keep checkpoints
    /// written before FID existed loadable.
    #[serde(default)]
    pub fid_every: u64,
    /// Real images and generator samples per FID measurement.
    #[serde(default = "default_fid_n")]
    pub fid_n: usize,
}

fn default_fid_n() -> usize {
    1000
}

impl Default for TrainConfig {
    /// The run of `gan-engine train` with no flags: DCGAN on the embedded balls dataset, 32×32 RGB,
    /// ngf = ndf = 32, batch 64, 2000 steps, Adam(lr 2e-4, β1 0.5, β2 0.999) as in the DCGAN paper.
    /// Measured on balls (docs/README.md): with 2e-4 step 2000 still shows dark blobs, while
    /// `--lr-d 5e-4 --lr-g 5e-4` shows shaded coloured balls by step 1000; the paper's rate stays the default.
    fn default() -> Self {
        let adam = AdamSettings {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        };
        TrainConfig {
            dataset: "balls".into(),
            model: ModelConfig {
                image_size: 32,
                ngf: 32,
                ndf: 32,
                ..ModelConfig::default()
            },
            batch_size: 64,
            duration: Duration::Steps(2000),
            adam_d: adam,
            adam_g: adam,
            loss: LossKind::Ns,
            k: 1,
            seed: 0,
            device: "cpu".into(),
            out: PathBuf::from("runs/balls"),
            sample_every: 100,
            log_every: 10,
            checkpoint_every: 500,
            num_samples: 64,
            fid_every: 0,
            fid_n: default_fid_n(),
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        ensure!(self.batch_size > 0, "--batch-size must be positive");
        ensure!(self.k > 0, "--k (D steps per G step) must be positive");
        match self.duration {
            Duration::Steps(n) => ensure!(n > 0, "--steps must be positive"),
            Duration::Epochs(n) => ensure!(n > 0, "--epochs must be positive"),
        }
        for (what, a) in [("D", &self.adam_d), ("G", &self.adam_g)] {
            ensure!(
                a.lr.is_finite() && a.lr > 0.0,
                "the learning rate of {what} must be a positive number, got {}",
                a.lr
            );
            ensure!(
                (0.0..1.0).contains(&a.beta1) && (0.0..1.0).contains(&a.beta2),
                "Adam betas must be in [0, 1), got beta1 = {}, beta2 = {}",
                a.beta1,
                a.beta2
            );
        }
        ensure!(self.sample_every > 0, "--sample-every must be positive");
        ensure!(self.log_every > 0, "--log-every must be positive");
        ensure!(
            self.checkpoint_every > 0,
            "--checkpoint-every must be positive"
        );
        ensure!(self.num_samples > 0, "--num-samples must be positive");
        ensure!(
            self.fid_n >= 2,
            "--fid-n must be at least 2 (a covariance needs two images)"
        );
        Ok(())
    }
}
