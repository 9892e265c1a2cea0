//! What a training run is configured by. Serialised into every checkpoint so a run resumes as it was started.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::backend::Precision;
use crate::nn::models::dcgan::{Tricks, Upsample};
use crate::nn::models::ModelConfig;

/// The GAN objective (D's and G's losses), `train --loss`. The serde names are what checkpoints store.
///
/// D's last layer is a raw score (the DCGAN D's final conv / the MLP D's final linear, no sigmoid). `ns` and
/// `minimax` read it as a logit (fused BCE-with-logits); `ls`, `hinge` and `wgan` use the raw value itself, as
/// their papers' linear-output critics do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Non-saturating: G minimises −log D(G(z)) (what the DCGAN example and most GANs use).
    Ns,
    /// The original minimax game: G minimises log(1 − D(G(z))). Its gradient vanishes while D wins easily,
    /// which is why `ns` is the default.
    Minimax,
    /// Least squares (LSGAN, a = 0, b = c = 1): D minimises ½E[(D(x) − 1)²] + ½E[D(G(z))²], G minimises
    /// ½E[(D(G(z)) − 1)²].
    Ls,
    /// Hinge: D minimises E[relu(1 − D(x))] + E[relu(1 + D(G(z)))], G minimises −E[D(G(z))].
    Hinge,
    /// Wasserstein with weight clipping: the critic minimises E[D(G(z))] − E[D(x)] and every D parameter is
    /// clipped to [−clip, clip] after each critic update; G minimises −E[D(G(z))].
    Wgan,
    /// Wasserstein with a gradient penalty (Gulrajani et al. 2017): the critic minimises
    /// E[D(G(z))] − E[D(x)] + λ·E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates x̂ of real and fake images; no
    /// clipping. G minimises −E[D(G(z))].
    #[serde(rename = "wgan-gp")]
    #[value(name = "wgan-gp")]
    WganGp,
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::Ns => "ns",
            LossKind::Minimax => "minimax",
            LossKind::Ls => "ls",
            LossKind::Hinge => "hinge",
            LossKind::Wgan => "wgan",
            LossKind::WganGp => "wgan-gp",
        })
    }
}

/// The optimiser of both networks, `train --optimizer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.Adam with the run's lr, betas and eps.
    #[default]
    Adam,
    /// torch.optim.RMSprop (alpha 0.99, no momentum, not centered) with the run's lr and eps; the betas are
    /// unused. The WGAN paper's choice.
    Rmsprop,
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::Rmsprop => "rmsprop",
        })
    }
}

/// RMSprop's smoothing constant (PyTorch's default; not a flag).
pub const RMSPROP_ALPHA: f64 = 0.99;

/// The WGAN paper's weight-clipping bound c.
pub const DEFAULT_CLIP: f32 = 0.01;

fn default_clip() -> f32 {
    DEFAULT_CLIP
}

/// The WGAN-GP paper's penalty weight λ.
pub const DEFAULT_GP_LAMBDA: f32 = 10.0;

fn default_gp_lambda() -> f32 {
    DEFAULT_GP_LAMBDA
}

/// Optimiser settings of one network (PyTorch's `torch.optim.Adam` arguments; RMSprop uses `lr` and `eps`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    pub lr: f32,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f32,
}

impl AdamSettings {
    /// Radford et al.'s DCGAN settings (lr 2e-4, β1 0.5) with PyTorch's β2 and eps. A new run's defaults keep
    /// the betas and eps but give D and G their own rates (see [`TrainConfig::default`]).
    pub const DCGAN: AdamSettings = AdamSettings {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
    };
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
    /// Adam or RMSprop, for both networks. (Absent from checkpoints written before it existed: Adam.)
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// WGAN weight-clipping bound: D's parameters stay in [−clip, clip] (only `--loss wgan` clips).
    #[serde(default = "default_clip")]
    pub clip: f32,
    /// WGAN-GP's penalty weight λ (only `--loss wgan-gp` uses it).
    #[serde(default = "default_gp_lambda")]
    pub gp_lambda: f32,
    /// R1 penalty weight γ (`--r1`): D's loss gains (γ/2)·E[‖∇D(x)‖²] on real images; None: no R1.
    #[serde(default)]
    pub r1: Option<f32>,
    /// DRAGAN penalty weight λ (`--dragan`): D's loss gains λ·E[(‖∇D(x̂)‖₂ − 1)²] around the real images;
    /// None: no DRAGAN penalty.
    #[serde(default)]
    pub dragan: Option<f32>,
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
    /// Redraw metrics.png every this many steps (and at the end); 0 = never. Checkpoints written before
    /// this setting existed load with the default.
    #[serde(default = "default_plot_every")]
    pub plot_every: u64,
    /// Convolution arithmetic on the CUDA backend (`--precision`); checkpoints from before it default to fp32.
    #[serde(default)]
    pub precision: Precision,
    /// FID every N steps (0: never), logged as the `fid` column of metrics.csv. Defaults keep checkpoints
    /// written before FID existed loadable.
    #[serde(default)]
    pub fid_every: u64,
    /// Real images and generator samples per FID measurement.
    #[serde(default = "default_fid_n")]
    pub fid_n: usize,
    /// Decay of the generator's exponential moving average (`--g-ema`); None: no average kept.
    #[serde(default)]
    pub g_ema: Option<f32>,
    /// Capture the training iteration as a CUDA graph and replay it (`--cuda-graph`). How this invocation runs,
    /// not part of the run: never saved, so a resume decides again.
    #[serde(skip)]
    pub cuda_graph: bool,
}

fn default_plot_every() -> u64 {
    500
}

fn default_fid_n() -> usize {
    1000
}

impl Default for TrainConfig {
    /// The run of `gan-engine train` with no flags: DCGAN on the embedded balls dataset, 32×32 RGB,
    /// ngf = ndf = 32, batch 64, 2000 steps, Adam(β1 0.5, β2 0.999) as in the DCGAN paper.
    ///
    /// Two departures from the paper make that first run end with balls drawn in one colour each
    /// (docs/README.md has the grids of each choice):
    /// - G doubles its resolution by nearest-neighbour resizing and a 3×3 convolution (Odena et al. 2016)
    ///   rather than by transposed convolutions, whose checkerboard still covers every colour picture with a
    ///   speckled texture after 2000 steps. `--g-upsample convt` gives the paper's G; checkpoints that
    ///   predate the switch load as the paper's model, which is what they were trained as.
    /// - D learns at 1e-4 and G at 4e-4 instead of 2e-4 for both: with the paper's rate D wins from the first
    ///   hundred steps (D(x) ≈ 0.95, D(G(z)) ≈ 0.03) and the game lurches, so the last grid is a matter of
    ///   luck. `--lr-d 2e-4 --lr-g 2e-4` gives the paper's rate.
    fn default() -> Self {
        let adam = AdamSettings::DCGAN;
        TrainConfig {
            dataset: "balls".into(),
            model: ModelConfig {
                image_size: 32,
                ngf: 32,
                ndf: 32,
                tricks: Tricks {
                    g_upsample: Upsample::Nearest,
                    ..Tricks::default()
                },
                ..ModelConfig::default()
            },
            batch_size: 64,
            duration: Duration::Steps(2000),
            adam_d: AdamSettings { lr: 1e-4, ..adam },
            adam_g: AdamSettings { lr: 4e-4, ..adam },
            loss: LossKind::Ns,
            optimizer: OptimizerKind::Adam,
            clip: DEFAULT_CLIP,
            gp_lambda: DEFAULT_GP_LAMBDA,
            r1: None,
            dragan: None,
            k: 1,
            seed: 0,
            device: "cpu".into(),
            out: PathBuf::from("runs/balls"),
            sample_every: 100,
            log_every: 10,
            checkpoint_every: 500,
            num_samples: 64,
            plot_every: default_plot_every(),
            precision: Precision::F32,
            fid_every: 0,
            fid_n: default_fid_n(),
            g_ema: None,
            cuda_graph: false,
        }
    }
}

impl TrainConfig {
    /// Whether D's loss holds a gradient penalty (WGAN-GP's, R1 or DRAGAN), which the D step differentiates
    /// twice.
    pub fn penalises_gradients(&self) -> bool {
        self.loss == LossKind::WganGp || self.r1.is_some() || self.dragan.is_some()
    }

    /// A penalised critic may use only ops with a double backward: batch norm and max pooling have none.
    fn check_penalised_critic(&self) -> Result<()> {
        let what = if self.loss == LossKind::WganGp {
            "--loss wgan-gp"
        } else if self.r1.is_some() {
            "--r1"
        } else {
            "--dragan"
        };
        let t = self.model.tricks;
        let dcgan = self.model.kind == crate::nn::models::ModelKind::Dcgan;
        ensure!(
            !(dcgan && t.d_batch_norm),
            "{what} needs a critic without batch norm (its gradient penalty differentiates D twice, and batch norm \
             has no double backward here); new runs leave it out, but this run's D has it"
        );
        ensure!(
            !(dcgan && t.d_downsample == crate::nn::models::dcgan::Downsample::Maxpool),
            "{what} needs --d-downsample stride: max pooling has no double backward here"
        );
        ensure!(
            !self.cuda_graph,
            "--cuda-graph does not capture a gradient penalty's step yet; leave it out with {what}"
        );
        Ok(())
    }

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
        ensure!(
            self.clip.is_finite() && self.clip > 0.0,
            "--clip must be a positive number, got {}",
            self.clip
        );
        ensure!(
            self.gp_lambda.is_finite() && self.gp_lambda > 0.0,
            "--gp-lambda must be a positive number, got {}",
            self.gp_lambda
        );
        for (flag, w) in [("--r1", self.r1), ("--dragan", self.dragan)] {
            if let Some(w) = w {
                ensure!(
                    w.is_finite() && w > 0.0,
                    "{flag} must be a positive number, got {w}"
                );
            }
        }
        if self.penalises_gradients() {
            ensure!(
                !self.precision.scales_loss(),
                "gradient penalties cannot be combined with --precision fp16: the penalty's own gradient would \
                 run through fp16 products without loss scaling and could underflow; use bf16 or fp32"
            );
            self.check_penalised_critic()?;
        }
        ensure!(
            !(self.cuda_graph && self.precision.scales_loss()),
            "--cuda-graph cannot be combined with --precision fp16: its loss scaling decides on the host each \
             step whether to skip the update, which a captured graph cannot; use bf16, which needs no scaling"
        );
        ensure!(self.sample_every > 0, "--sample-every must be positive");
        ensure!(self.log_every > 0, "--log-every must be positive");
        ensure!(
            self.checkpoint_every > 0,
            "--checkpoint-every must be positive"
        );
        ensure!(self.num_samples > 0, "--num-samples must be positive");
        ensure!(
            self.num_samples <= crate::limits::MAX_SAMPLES,
            "--num-samples {} is more than the limit of {} images per sample grid",
            self.num_samples,
            crate::limits::MAX_SAMPLES
        );
        if let Some(d) = self.g_ema {
            ensure!(
                d > 0.0 && d < 1.0,
                "--g-ema must be in (0, 1) (e.g. 0.999), got {d}"
            );
        }
        if self.cuda_graph {
            ensure!(
                self.k == 1,
                "--cuda-graph captures one D step and one G step: it needs --k 1"
            );
            ensure!(
                !self.model.is_conditional(),
                "--cuda-graph does not support conditional models yet (their labels are drawn on the host)"
            );
            ensure!(
                self.device.starts_with("cuda") || self.device == "emu" || self.device == "auto",
                "--cuda-graph needs --device cuda (or emu), not {}",
                self.device
            );
        }
        ensure!(
            self.fid_n >= 2,
            "--fid-n must be at least 2 (a covariance needs two images)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_flag_and_config() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        match parse(&["gan-engine", "train", "--precision", "tf32"])
            .unwrap()
            .command
        {
            Command::Train(a) => {
                assert_eq!(a.precision, Some(Precision::Tf32));
                let (cfg, _) = crate::cli::train_config(&a).unwrap();
                assert_eq!(cfg.precision, Precision::Tf32);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["gan-engine", "sample", "--checkpoint", "x"])
            .unwrap()
            .command
        {
            Command::Sample(a) => assert_eq!(a.precision, Precision::F32),
            c => panic!("{c:?}"),
        }
        for (flag, p) in [("bf16", Precision::Bf16), ("fp16", Precision::Fp16)] {
            match parse(&["gan-engine", "train", "--precision", flag])
                .unwrap()
                .command
            {
                Command::Train(a) => assert_eq!(a.precision, Some(p)),
                c => panic!("{c:?}"),
            }
        }
        assert!(parse(&["gan-engine", "train", "--precision", "fp8"]).is_err());
        // Checkpoints written before the setting existed resume in fp32.
        let cfg = crate::train::config::TrainConfig::default();
        let mut json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["precision"], "fp32");
        json.as_object_mut().unwrap().remove("precision");
        let back: crate::train::config::TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.precision, Precision::F32);
    }

    #[test]
    fn fp16_refuses_graphs_and_gradient_penalties() {
        let fp16 = TrainConfig {
            precision: Precision::Fp16,
            ..TrainConfig::default()
        };
        fp16.validate().unwrap();
        let e = TrainConfig {
            cuda_graph: true,
            ..fp16.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cuda-graph cannot be combined"), "{e}");
        let e = TrainConfig {
            r1: Some(1.0),
            ..fp16.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("gradient penalties cannot be combined"), "{e}");
        TrainConfig {
            precision: Precision::Bf16,
            cuda_graph: true,
            device: "emu".into(),
            ..TrainConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn configs_saved_before_optimizer_and_clip_existed_still_load() {
        let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
        let o = v.as_object_mut().unwrap();
        assert_eq!(o["loss"], "ns");
        assert_eq!(o["optimizer"], "adam");
        o.remove("optimizer");
        o.remove("clip");
        o.insert("loss".into(), "minimax".into());
        let c: TrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.optimizer, OptimizerKind::Adam);
        assert_eq!(c.clip, DEFAULT_CLIP);
        assert_eq!(c.loss, LossKind::Minimax);
    }

    #[test]
    fn loss_names_round_trip() {
        for &k in <LossKind as clap::ValueEnum>::value_variants() {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<LossKind>(&s).unwrap(), k);
            assert_eq!(
                <LossKind as clap::ValueEnum>::from_str(&k.to_string(), false).unwrap(),
                k
            );
        }
    }

    #[test]
    fn clip_is_validated() {
        for bad in [0.0, -0.01, f32::NAN, f32::INFINITY] {
            let c = TrainConfig {
                clip: bad,
                ..TrainConfig::default()
            };
            assert!(c.validate().unwrap_err().to_string().contains("--clip"));
        }
    }
}
