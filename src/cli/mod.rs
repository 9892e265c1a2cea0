//! The `gan-engine` command line: `train`, `sample`, `fid`, the latent and plot tools, `info`, `benchmark`.
//!
//! Every failure ends as one `error: ...` message on stderr and a non-zero exit status: 2 for usage errors
//! (reported by clap), 1 for everything else. Panics are caught and reported the same way (as internal
//! errors), so users never see a Rust backtrace.

mod bench;
mod fid;
mod plot;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};

mod latent;

use crate::checkpoint;
use crate::device::Device;
use crate::limits;
use crate::nn::models::dcgan::{Downsample, Nonlinearity, Upsample};
use crate::nn::models::{ModelConfig, ModelKind};
use crate::ops::random::RngStream;
use crate::train::config::{Duration, LossKind, OptimizerKind, TrainConfig};
use crate::train::gan::{stream_seed, STREAM_FIXED_Z};
use crate::train::run::{
    grid_columns, read_checkpoint, run_dir_of, Interrupted, Progress, SavedRun, Trainer,
};
use crate::train::rundir::Claim;

#[derive(Parser, Debug)]
#[command(
    name = "gan-engine",
    version,
    about = "Train GANs (DCGAN, MLP GAN) on the CPU or on hand-written CUDA kernels",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process, so the size of the `Train` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a GAN. With no flags: DCGAN on the built-in balls dataset, 32x32, on the CPU, into runs/balls.
    Train(TrainArgs),
    /// Generate images from a trained generator.
    Sample(SampleArgs),
    /// Fréchet Inception Distance: a generator's samples (--checkpoint) or a picture set (--fake) vs real images.
    Fid(fid::FidArgs),
    /// Walk the latent space between two or more latents (lerp or slerp): a grid PNG, optionally a GIF.
    Interpolate(latent::InterpolateArgs),
    /// Latent vector arithmetic, mean(A) - mean(B) + mean(C), shown beside its inputs (see --out's help).
    Arith(latent::ArithArgs),
    /// Hold a latent and vary one dimension at a time over a range: one grid row per dimension.
    Sweep(latent::SweepArgs),
    /// Show the devices, the build and the kernels.
    Info,
    /// Time one training iteration (D and G updates, the progress line's scalars read back) on a device.
    Benchmark(bench::BenchArgs),
    /// Draw a run's training curves (metrics.csv) as a PNG.
    Plot(plot::PlotArgs),
    /// Scatter D's features of real vs generated images (PCA per block; --tsne adds t-SNE) as a PNG.
    Dfeatures(plot::DfeaturesArgs),
}

/// Train flags. All are optional so that, with `--resume`, only the flags actually given override the
/// checkpoint's settings.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// balls[:N] | mnist[:DIR] | fashion[:DIR] | folder:DIR [default: balls]
    #[arg(long, value_name = "SPEC")]
    pub dataset: Option<String>,
    /// Image height = width; DCGAN supports 64, 32, 28 [default: 28 for mnist/fashion, else 32]
    #[arg(long, value_parser = positive_usize, value_name = "N")]
    pub image_size: Option<usize>,
    /// Image channels: 1 (grayscale) or 3 (RGB) [default: the dataset's]
    #[arg(long, value_parser = positive_usize, value_name = "C")]
    pub channels: Option<usize>,
    /// Architecture [default: dcgan]
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Batch size [default: 64]
    #[arg(long, value_parser = positive_usize, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Number of iterations (G updates) of the whole run, counting steps done before a --resume
    /// [default: 2000]
    #[arg(long, value_parser = positive_u64, value_name = "N", conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Train for this many passes over the dataset instead of --steps
    #[arg(long, value_parser = positive_u64, value_name = "N")]
    pub epochs: Option<u64>,
    /// Learning rate of D (Adam or RMSprop) [default: 0.0001; the DCGAN paper's is 0.0002]
    #[arg(long, value_name = "LR")]
    pub lr_d: Option<f32>,
    /// Learning rate of G (Adam or RMSprop) [default: 0.0004; the DCGAN paper's is 0.0002]
    #[arg(long, value_name = "LR")]
    pub lr_g: Option<f32>,
    /// Adam beta1, both networks (unused by rmsprop) [default: 0.5]
    #[arg(long)]
    pub beta1: Option<f64>,
    /// Adam beta2, both networks (unused by rmsprop) [default: 0.999]
    #[arg(long)]
    pub beta2: Option<f64>,
    /// GAN objective [default: ns]
    ///
    /// ns: non-saturating, G minimises -log D(G(z)). minimax: G minimises log(1 - D(G(z))). ls: least squares
    /// (LSGAN). hinge: hinge loss for D, -D(G(z)) for G. wgan: Wasserstein critic with weight clipping (--clip).
    /// wgan-gp: Wasserstein critic with a gradient penalty on real/fake interpolates (--gp-lambda), no clipping.
    /// ls, hinge, wgan and wgan-gp use D's raw output (no sigmoid), and the D(x) / D(G(z)) numbers in the
    /// progress line and metrics.csv are then mean raw outputs instead of probabilities. The flag defaults do not
    /// change with the loss; for wgan the WGAN paper's settings are
    /// `--loss wgan --optimizer rmsprop --lr-d 5e-5 --lr-g 5e-5 --k 5 --clip 0.01`,
    /// for wgan-gp the WGAN-GP paper's are
    /// `--loss wgan-gp --lr-d 1e-4 --lr-g 1e-4 --beta1 0 --beta2 0.9 --k 5 --gp-lambda 10`.
    /// With wgan-gp (or --r1, --dragan) a new run's critic has no batch norm, as in the WGAN-GP paper (batch
    /// norm has no double backward here, so a penalised critic cannot keep it); --d-downsample maxpool is
    /// refused likewise.
    #[arg(long, value_enum, verbatim_doc_comment)]
    pub loss: Option<LossKind>,
    /// Optimiser of both networks: adam, or rmsprop (alpha 0.99, no momentum; use it with --loss wgan)
    /// [default: adam]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// WGAN weight clipping: after every critic update each D parameter is clamped to [-C, C] (only with
    /// --loss wgan) [default: 0.01]
    #[arg(long, value_name = "C")]
    pub clip: Option<f32>,
    /// WGAN-GP penalty weight lambda: the critic's loss gains lambda * E[(|grad D(x_hat)| - 1)^2] on random
    /// interpolates x_hat of real and fake images (only with --loss wgan-gp) [default: 10, the paper's]
    #[arg(long, value_name = "LAMBDA")]
    pub gp_lambda: Option<f32>,
    /// R1 penalty (Mescheder et al. 2018), with any loss: D's loss gains (GAMMA/2) * E[|grad D(x)|^2] on the
    /// real images; the critic is built without batch norm, as for wgan-gp [default: off]
    #[arg(long, value_name = "GAMMA")]
    pub r1: Option<f32>,
    /// DRAGAN penalty (Kodali et al. 2017), with any loss: D's loss gains LAMBDA * E[(|grad D(x_hat)| - 1)^2] at
    /// x_hat = x + a * 0.5 * std(x) * u, u ~ U(0, 1) per pixel and a ~ U(0, 1) per image, around the real
    /// images; the critic is built without batch norm, as for wgan-gp (the paper's lambda: 10) [default: off]
    #[arg(long, value_name = "LAMBDA")]
    pub dragan: Option<f32>,
    /// D steps per G step [default: 1]
    #[arg(long, value_parser = positive_usize)]
    pub k: Option<usize>,
    /// Latent size [default: 100]
    #[arg(long, value_parser = positive_usize)]
    pub nz: Option<usize>,
    /// DCGAN generator width [default: 32]
    #[arg(long, value_parser = positive_usize)]
    pub ngf: Option<usize>,
    /// DCGAN discriminator width [default: 32]
    #[arg(long, value_parser = positive_usize)]
    pub ndf: Option<usize>,
    /// MLP hidden width h (layers h, 2h, 4h) [default: 256]
    #[arg(long, value_parser = positive_usize)]
    pub hidden: Option<usize>,
    /// DCGAN ablation: no batch norm in G (the paper has it after every G layer but the output); kept on
    /// --resume, like the four options below
    #[arg(long)]
    pub no_g_batch_norm: bool,
    /// DCGAN ablation: no batch norm in D (the paper has it after every D layer but the input)
    #[arg(long)]
    pub no_d_batch_norm: bool,
    /// DCGAN: G's hidden activation, relu or leaky (LeakyReLU 0.2) [default: relu, the paper's]
    #[arg(long, value_enum)]
    pub g_act: Option<Nonlinearity>,
    /// DCGAN: D's activation, leaky (LeakyReLU 0.2) or relu [default: leaky, the paper's]
    #[arg(long, value_enum)]
    pub d_act: Option<Nonlinearity>,
    /// DCGAN: how D halves the resolution: stride (4x4 convolutions with stride 2) or maxpool (3x3
    /// convolutions, then 2x2 max pooling) [default: stride, the paper's]
    #[arg(long, value_enum)]
    pub d_downsample: Option<Downsample>,
    /// DCGAN: how G doubles the resolution: convt (4x4 transposed convolutions with stride 2, the paper's) or
    /// nearest (2x nearest-neighbour resize, then a 3x3 convolution: no checkerboard texture; run as one
    /// transposed convolution with summed weights, as fast as convt) [default: nearest]
    #[arg(long, value_enum)]
    pub g_upsample: Option<Upsample>,
    /// Class-conditional GAN: G and D both get each image's class label (one-hot). Needs a dataset with
    /// labels: mnist, fashion (the digit / garment class) or balls (number of balls); kept on --resume
    #[arg(long)]
    pub conditional: bool,
    /// Seed of the initialisation, the noise, the data order and the balls images [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu | cuda | cuda:N | auto | emu [default: cpu]
    #[arg(long)]
    pub device: Option<String>,
    /// Convolutions and linear layers on CUDA: fp32; tf32 (tensor cores: TF32 operands, f32 accumulation);
    /// bf16 or fp16 (mixed precision: 16-bit operands, f32 accumulation, f32 weights and optimiser state; fp16
    /// with dynamic loss scaling). The CPU backend computes in f32: it ignores tf32 and refuses bf16 / fp16
    /// [default: fp32]
    #[arg(long, value_enum)]
    pub precision: Option<crate::backend::Precision>,
    /// Capture one training iteration as a CUDA graph after a first eager one, and replay it for every later
    /// iteration (one launch instead of ~200); the same numbers as without. CUDA only, --k 1, unconditional
    /// models
    #[arg(long)]
    pub cuda_graph: bool,
    /// Run directory [default: runs/<dataset>, or the --resume directory]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Save a sample grid every N steps [default: 100]
    #[arg(long, value_parser = positive_u64, value_name = "N")]
    pub sample_every: Option<u64>,
    /// Append a metrics.csv row every N steps [default: 10]
    #[arg(long, value_parser = positive_u64, value_name = "N")]
    pub log_every: Option<u64>,
    /// Save a checkpoint every N steps (and always at the end) [default: 500]
    #[arg(long, value_parser = positive_u64, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Redraw the training curves (metrics.png) every N steps, and at the end; 0 = never [default: 500]
    #[arg(long, value_name = "N")]
    pub plot_every: Option<u64>,
    /// Images per sample grid [default: 64]
    #[arg(long, value_parser = positive_usize, value_name = "N")]
    pub num_samples: Option<usize>,
    /// Compute FID every N steps into metrics.csv's `fid` column (needs scripts/fetch_fid_weights.sh) [default: never]
    #[arg(long, value_parser = positive_u64, value_name = "N")]
    pub fid_every: Option<u64>,
    /// Images per FID measurement (real and generated) [default: 1000]
    #[arg(long, value_parser = positive_usize, value_name = "N")]
    pub fid_n: Option<usize>,
    /// Keep an exponential moving average of G's weights with this decay (e.g. 0.999): after every G update,
    /// avg = decay·avg + (1 − decay)·weights; BN running statistics are copied from G. Written to
    /// generator_ema.safetensors; with it, the sample grids, the `fid` column and the commands given the run
    /// directory (sample, fid, interpolate, ...) use the average (pass generator.safetensors for G itself).
    /// Given on --resume of a run without one, the average starts from the resumed weights [default: none]
    #[arg(long, value_name = "DECAY")]
    pub g_ema: Option<f32>,
    /// Continue the run saved in DIR (or a checkpoint.safetensors file)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start a new run even if --out already holds one (its files are replaced)
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A run directory (its generator_ema.safetensors if the run kept a --g-ema average, else
    /// generator.safetensors), a generator file or checkpoint.safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Number of images (ignored with --z-npy)
    #[arg(long, default_value_t = 64, value_parser = positive_usize)]
    pub n: usize,
    /// Seed of the latents (the training seed reproduces the run's sample grids)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latents from a .npy file, [N, nz] or [N, nz, 1, 1] float32, instead of drawing them
    #[arg(long, value_name = "FILE")]
    pub z_npy: Option<PathBuf>,
    /// Grid PNG to write [default: samples.png unless --out-npy is given]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the images as .npy, [N, C, H, W] float32 in [-1, 1] (a conditional generator's class labels go
    /// beside it, as int64 [N] in FILE-stem.labels.npy)
    #[arg(long, value_name = "FILE")]
    pub out_npy: Option<PathBuf>,
    /// Images per grid row [default: sqrt(N); 8 with --class-grid]
    #[arg(long, value_parser = positive_usize)]
    pub nrow: Option<usize>,
    /// Conditional generators: make every image of class K. Without --class or --class-grid, a conditional
    /// generator's grid follows the rows: row r shows class r (mod the number of classes), as in training
    #[arg(long, value_name = "K", conflicts_with = "class_grid")]
    pub class: Option<u32>,
    /// Conditional generators: one row per class (row r = class r), --nrow columns, each column one latent
    /// shared by all rows (--n is ignored; with --z-npy, one column per latent in the file)
    #[arg(long)]
    pub class_grid: bool,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Convolutions and linear layers on CUDA: fp32, tf32, bf16 or fp16 (see `train --precision`); the CPU
    /// backend ignores tf32 and refuses bf16 / fp16
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::backend::Precision,
}

fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The process entry point: parse, run, report.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and --version exit 0 on stdout; usage errors print clap's "error: ..." and exit 2.
        Err(e) => e.exit(),
    };
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error: {msg}{loc} (this is a bug in gan-engine)");
    }));
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // Stopped by SIGINT / SIGTERM with everything saved: said as such, with the shell's status for it.
        Ok(Err(e)) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(_) => ExitCode::from(1),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Fid(a) => fid::run(a),
        Command::Interpolate(a) => latent::interpolate(a),
        Command::Arith(a) => latent::arith(a),
        Command::Sweep(a) => latent::sweep(a),
        Command::Info => info(),
        Command::Benchmark(a) => bench::run(a),
        Command::Plot(a) => plot::run_plot(a),
        Command::Dfeatures(a) => plot::run_dfeatures(a),
    }
}

/// `kind` of a dataset spec (`mnist:DIR` → `mnist`).
fn dataset_kind(spec: &str) -> &str {
    spec.split(':').next().unwrap_or(spec)
}

/// The run directory a dataset spec trains into by default.
fn default_out(spec: &str) -> PathBuf {
    PathBuf::from("runs").join(dataset_kind(spec))
}

/// Builds the training config: the defaults (new run) or the checkpoint's (resume), then the given flags.
pub fn train_config(a: &TrainArgs) -> Result<(TrainConfig, Option<PathBuf>)> {
    let (cfg, saved) = train_config_read(a)?;
    Ok((cfg, saved.map(|_| a.resume.clone().unwrap_or_default())))
}

/// [`train_config`], with the checkpoint it read for a --resume (read once, checked once).
fn train_config_read(a: &TrainArgs) -> Result<(TrainConfig, Option<SavedRun>)> {
    let resume = a.resume.clone();
    let mut saved = None;
    let mut cfg = match &resume {
        None => {
            let mut c = TrainConfig::default();
            if let Some(d) = &a.dataset {
                c.dataset = d.clone();
            }
            let natural = crate::train::data::natural_format(&c.dataset);
            c.model.image_size = natural.image_size;
            c.model.channels = natural.channels;
            c.out = default_out(&c.dataset);
            c
        }
        Some(path) => {
            let ck = read_checkpoint(path)?;
            let file = ck.file.clone();
            check_unchanged(&ck.cfg, a, &file)?;
            let mut c = ck.cfg.clone();
            saved = Some(ck);
            // By default a resumed run keeps writing into its own directory.
            c.out = if path.is_dir() {
                path.clone()
            } else {
                run_dir_of(&file)
            };
            c
        }
    };
    apply_model_args(&mut cfg.model, a);
    if resume.is_none() && cfg.model.kind == ModelKind::Mlp && a.g_upsample.is_none() {
        // A new run's G resizes by default, a DCGAN choice; the MLP keeps the paper's value, which it ignores.
        cfg.model.tricks.g_upsample = crate::nn::models::dcgan::Tricks::default().g_upsample;
    }
    macro_rules! set {
        ($dst:expr, $src:expr) => {
            if let Some(v) = $src.clone() {
                $dst = v;
            }
        };
    }
    set!(cfg.dataset, a.dataset);
    // Recorded with an absolute directory, so the run resumes from any working directory.
    if resume.is_none() || a.dataset.is_some() {
        cfg.dataset = crate::data::absolute_spec(&cfg.dataset);
    }
    set!(cfg.batch_size, a.batch_size);
    if let Some(s) = a.steps {
        cfg.duration = Duration::Steps(s);
    }
    if let Some(e) = a.epochs {
        cfg.duration = Duration::Epochs(e);
    }
    set!(cfg.adam_d.lr, a.lr_d);
    set!(cfg.adam_g.lr, a.lr_g);
    if let Some(b) = a.beta1 {
        cfg.adam_d.beta1 = b;
        cfg.adam_g.beta1 = b;
    }
    if let Some(b) = a.beta2 {
        cfg.adam_d.beta2 = b;
        cfg.adam_g.beta2 = b;
    }
    set!(cfg.loss, a.loss);
    set!(cfg.optimizer, a.optimizer);
    set!(cfg.clip, a.clip);
    set!(cfg.gp_lambda, a.gp_lambda);
    if a.r1.is_some() {
        cfg.r1 = a.r1;
    }
    if a.dragan.is_some() {
        cfg.dragan = a.dragan;
    }
    set!(cfg.k, a.k);
    set!(cfg.seed, a.seed);
    set!(cfg.device, a.device);
    set!(cfg.precision, a.precision);
    cfg.cuda_graph = a.cuda_graph;
    set!(cfg.out, a.out);
    set!(cfg.sample_every, a.sample_every);
    set!(cfg.log_every, a.log_every);
    set!(cfg.checkpoint_every, a.checkpoint_every);
    set!(cfg.num_samples, a.num_samples);
    set!(cfg.fid_every, a.fid_every);
    set!(cfg.fid_n, a.fid_n);
    if a.g_ema.is_some() {
        cfg.g_ema = a.g_ema;
    }
    // A new conditional model has as many classes as its dataset; a resumed one keeps its own.
    if a.conditional && resume.is_none() {
        cfg.model.num_classes = crate::train::data::dataset_num_classes(&cfg)?;
    }
    set!(cfg.plot_every, a.plot_every);
    // A penalised critic is differentiated twice, which batch norm cannot be: new runs leave it out (a resumed
    // run keeps its network, and validation refuses one that has it).
    if resume.is_none() && cfg.penalises_gradients() && cfg.model.kind == ModelKind::Dcgan {
        cfg.model.tricks.d_batch_norm = false;
    }
    if a.gp_lambda.is_some() && cfg.loss != LossKind::WganGp {
        bail!(
            "--gp-lambda only applies to --loss wgan-gp (the gradient penalty), but the run uses --loss {}",
            cfg.loss
        );
    }
    if a.clip.is_some() && !cfg.loss.clips_weights() {
        bail!(
            "--clip only applies to --loss wgan (weight clipping), but the run uses --loss {}",
            cfg.loss
        );
    }
    cfg.validate()?;
    Ok((cfg, saved))
}

/// On resume, the flags that define the run's identity must agree with the checkpoint.
/// The model options given on the command line, over `m`.
fn apply_model_args(m: &mut ModelConfig, a: &TrainArgs) {
    m.image_size = a.image_size.unwrap_or(m.image_size);
    m.channels = a.channels.unwrap_or(m.channels);
    m.kind = a.model.unwrap_or(m.kind);
    m.nz = a.nz.unwrap_or(m.nz);
    m.ngf = a.ngf.unwrap_or(m.ngf);
    m.ndf = a.ndf.unwrap_or(m.ndf);
    m.hidden = a.hidden.unwrap_or(m.hidden);
    let t = &mut m.tricks;
    t.g_batch_norm &= !a.no_g_batch_norm;
    t.d_batch_norm &= !a.no_d_batch_norm;
    t.g_act = a.g_act.unwrap_or(t.g_act);
    t.d_act = a.d_act.unwrap_or(t.d_act);
    t.d_downsample = a.d_downsample.unwrap_or(t.d_downsample);
    t.g_upsample = a.g_upsample.unwrap_or(t.g_upsample);
}

fn check_unchanged(saved: &TrainConfig, a: &TrainArgs, file: &Path) -> Result<()> {
    let mut given = saved.model.clone();
    apply_model_args(&mut given, a);
    if a.conditional && !saved.model.is_conditional() {
        bail!(
            "checkpoint {} holds an unconditional model; --conditional cannot be added on resume",
            file.display()
        );
    }
    let diff = saved.model.differences(&given);
    if !diff.is_empty() {
        bail!(
            "checkpoint {} is for {} but {} was given",
            file.display(),
            saved.model.describe(),
            diff.join(" ")
        );
    }
    if let Some(d) = &a.dataset {
        if dataset_kind(d) != dataset_kind(&saved.dataset) {
            bail!(
                "checkpoint {} was trained on {} but --dataset {d} was given",
                file.display(),
                saved.dataset
            );
        }
    }
    if let Some(s) = a.seed {
        if s != saved.seed {
            bail!(
                "checkpoint {} was trained with --seed {}; a resumed run continues its own random streams, so --seed {s} cannot apply",
                file.display(),
                saved.seed
            );
        }
    }
    Ok(())
}

fn fmt_secs(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// A flag that SIGINT and SIGTERM set, for the training loop to stop after its current step with everything
/// saved. A second signal while it is set ends the process at once with status 130, as a second Ctrl-C should.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

fn train(a: TrainArgs) -> Result<()> {
    let (cfg, saved) = train_config_read(&a)?;
    let resumed = saved.is_some();
    // The directory of the run a --resume continues.
    let from = saved.as_ref().map(|ck| run_dir_of(&ck.file));
    let claim = Claim::acquire(&cfg.out, from.as_deref(), a.overwrite)?;
    let stop = stop_on_signals()?;
    // check_unchanged has compared the model with the checkpoint's.
    let mut t = match saved {
        None => Trainer::new(cfg)?,
        Some(ck) => Trainer::resume_from(ck, cfg)?,
    };
    t.claim = Some(claim);
    t.stop = Some(stop);
    let cfg = t.cfg.clone();
    let verb = if resumed {
        format!("resuming at step {} of", t.step)
    } else {
        "training".into()
    };
    let mut extras = cfg
        .g_ema
        .map(|d| format!(" --g-ema {d}"))
        .unwrap_or_default();
    if cfg.cuda_graph {
        extras.push_str(" --cuda-graph");
    }
    if cfg.loss == LossKind::WganGp {
        extras.push_str(&format!(" --gp-lambda {}", cfg.gp_lambda));
    }
    if let Some(g) = cfg.r1 {
        extras.push_str(&format!(" --r1 {g}"));
    }
    if let Some(l) = cfg.dragan {
        extras.push_str(&format!(" --dragan {l}"));
    }
    eprintln!(
        "{verb} {} on {} ({} steps, batch {}) with --loss {} --optimizer {}{extras} on {} -> {}",
        cfg.model.describe(),
        cfg.dataset,
        t.total_steps,
        cfg.batch_size,
        cfg.loss,
        cfg.optimizer,
        t.gan.device.name(),
        cfg.out.display()
    );
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let bar = if tty {
        let b = indicatif::ProgressBar::new(t.total_steps);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:28.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_position(t.step);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let quiet = a.quiet;
    let sample_every = cfg.sample_every;
    let started = std::time::Instant::now();
    let start_step = t.step;
    // ls / hinge / wgan report D's mean raw output rather than a probability: say so, with more digits.
    let raw = !cfg.loss.reports_probabilities();
    // Updated at every step the trainer reports, whether or not a line is printed.
    let mut balance = crate::train::balance::Balance::default();
    let status = |p: &Progress, verdict: &str| {
        let m = &p.metrics;
        if raw {
            format!(
                "D {:.3} G {:.3} raw D(x) {:.3} D(G(z)) {:.3}/{:.3} {:.0} img/s",
                m.loss_d, m.loss_g, m.d_x, m.d_g_z1, m.d_g_z2, p.img_per_s
            )
        } else {
            format!(
                "D {:.3} G {:.3} D(x) {:.2} D(G(z)) {:.2}/{:.2} {}, {:.0} img/s",
                m.loss_d, m.loss_g, m.d_x, m.d_g_z1, m.d_g_z2, verdict, p.img_per_s
            )
        }
    };
    let result = t.run(|p| {
        let verdict = balance.update(p.metrics.d_x, p.metrics.d_g_z1);
        if tty {
            bar.set_position(p.metrics.step);
            bar.set_message(status(p, verdict));
        } else if !quiet && (p.metrics.step % sample_every == 0 || p.metrics.step == p.total_steps)
        {
            // Without a terminal (logs, CI): a plain line whenever a sample grid is written.
            eprintln!(
                "step {}/{} {}",
                p.metrics.step,
                p.total_steps,
                status(p, verdict)
            );
        }
    });
    bar.finish_and_clear();
    result?;
    println!(
        "trained {} steps in {}; samples: {}; checkpoint: {}",
        t.step - start_step,
        fmt_secs(started.elapsed().as_secs_f64()),
        t.sample_path(t.step).display(),
        cfg.out.join(checkpoint::CHECKPOINT_FILE).display()
    );
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    let device = Device::open(&a.device, a.precision)?;
    let file = checkpoint::resolve(&a.checkpoint, false)?;
    let mut g = checkpoint::load_generator(&file, &device)?;
    let nz = g.cfg.nz;
    let classes = g.cfg.num_classes;
    if classes == 0 && (a.class.is_some() || a.class_grid) {
        bail!(
            "{} holds an unconditional generator; --class and --class-grid need one trained with --conditional",
            file.display()
        );
    }
    if let Some(k) = a.class {
        if k as usize >= classes {
            bail!(
                "--class {k}: the generator in {} knows classes 0 to {}",
                file.display(),
                classes - 1
            );
        }
    }
    // With --class-grid the latents are the grid's columns.
    let n_draw = if a.class_grid {
        a.nrow.unwrap_or(CLASS_GRID_COLUMNS)
    } else {
        a.n
    };
    let z = match &a.z_npy {
        Some(p) => {
            let z = crate::io::read_latents(p, &device)?;
            let n = z.shape()[0];
            let z = z.reshape(&[n, z.numel() / n.max(1)])?;
            if z.shape()[1] != nz {
                bail!(
                    "{}: latents have size {} but the generator in {} takes nz = {nz}",
                    p.display(),
                    z.shape()[1],
                    file.display()
                );
            }
            z
        }
        None => {
            if n_draw == 0 {
                bail!("--n must be positive");
            }
            ensure!(
                n_draw <= limits::MAX_SAMPLES,
                "--n {n_draw}: `sample` makes at most {} images per call",
                limits::MAX_SAMPLES
            );
            // The same stream as the training run's fixed z, so `--seed <training seed>` reproduces its grids.
            let mut rng = RngStream::new(stream_seed(a.seed, STREAM_FIXED_Z));
            rng.normal(&[n_draw, nz], 0.0, 1.0, &device)?
        }
    };
    let (z, labels, nrow) = sample_labels(z, &a, classes)?;
    ensure!(
        z.shape()[0] <= limits::MAX_SAMPLES,
        "{} images asked for; `sample` makes at most {} per call",
        z.shape()[0],
        limits::MAX_SAMPLES
    );
    let imgs = g
        .generate_with_labels(&z, labels.as_deref())
        .context("generating")?;
    let n = imgs.shape()[0];
    if let Some(p) = &a.out_npy {
        crate::io::write_npy(p, &imgs)?;
        println!("wrote {n} images to {}", p.display());
        if let Some(l) = &labels {
            let lp = labels_npy_path(p);
            crate::io::write_labels_npy(&lp, l)?;
            println!("wrote their {n} class labels to {}", lp.display());
        }
    }
    let png = match (&a.out, &a.out_npy) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from("samples.png")),
        (None, Some(_)) => None,
    };
    if let Some(p) = png {
        crate::io::save_grid(&imgs, &p, nrow)?;
        println!("wrote a grid of {n} images to {}", p.display());
    }
    Ok(())
}

/// Where `sample --out-npy X.npy` puts a conditional generator's labels: `X.labels.npy`.
fn labels_npy_path(images: &std::path::Path) -> PathBuf {
    let stem = images
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "samples".into());
    images.with_file_name(format!("{stem}.labels.npy"))
}

/// Columns of a `--class-grid` without --nrow.
const CLASS_GRID_COLUMNS: usize = 8;

/// The latents, class labels and images per grid row of `sample`: `z` as drawn or read, labelled by --class,
/// --class-grid (z repeated once per class, row r = class r) or, for a conditional generator, by grid row.
fn sample_labels(
    z: crate::tensor::Tensor,
    a: &SampleArgs,
    classes: usize,
) -> Result<(crate::tensor::Tensor, Option<Vec<u32>>, usize)> {
    use crate::nn::models::row_labels;
    let n = z.shape()[0];
    if a.class_grid {
        ensure!(
            n.saturating_mul(classes) <= limits::MAX_SAMPLES,
            "--class-grid of {n} columns x {classes} classes is more than {} images",
            limits::MAX_SAMPLES
        );
        let tiled = z.to_vec()?.repeat(classes);
        let zs = crate::tensor::Tensor::from_vec(tiled, &[n * classes, z.shape()[1]], &z.device())?;
        return Ok((zs, Some(row_labels(n * classes, n, classes)), n));
    }
    let nrow = a.nrow.unwrap_or_else(|| grid_columns(n));
    let labels = match (a.class, classes) {
        (Some(k), _) => Some(vec![k; n]),
        (None, 0) => None,
        (None, c) => Some(row_labels(n, nrow, c)),
    };
    Ok((z, labels, nrow))
}

/// Names of the `extern "C" __global__` entry points in a kernel source.
fn kernel_entries(src: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = src;
    while let Some(i) = rest.find("__global__") {
        rest = &rest[i + "__global__".len()..];
        // `__global__ void name(` or `__global__ void __launch_bounds__(...) name(`.
        let Some(v) = rest.find("void") else { break };
        let mut after = rest[v + 4..].trim_start();
        if let Some(bounds) = after.strip_prefix("__launch_bounds__") {
            after = bounds.split_once(')').map_or("", |(_, r)| r).trim_start();
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

fn info() -> Result<()> {
    println!("gan-engine {}", env!("CARGO_PKG_VERSION"));
    println!(
        "build: {} profile, features: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if cfg!(feature = "emulation") {
            "emulation"
        } else {
            "(none)"
        }
    );
    println!("devices:");
    println!("  cpu: {}", Device::Cpu.name());
    for spec in ["cuda", "emu"] {
        match Device::parse(spec) {
            Ok(d) => println!("  {spec}: {}", d.name()),
            Err(e) => println!("  {spec}: unavailable ({e:#})"),
        }
    }
    match crate::open::nvrtc_version() {
        Ok((a, b)) => println!(
            "nvrtc: {a}.{b} ({})",
            crate::open::nvrtc_library_path().unwrap_or("?")
        ),
        Err(e) => println!("nvrtc: unavailable ({e:#})"),
    }
    let files = crate::open::kernel_sources();
    let mut total = 0;
    let mut lines = vec![];
    for (f, src) in &files {
        let names = kernel_entries(src);
        total += names.len();
        lines.push(format!("  {f}: {}", names.join(" ")));
    }
    println!("kernels: {total} in {} files", files.len());
    for l in lines {
        println!("{l}");
    }
    println!("models: dcgan (64, 32, 28 px), mlp (any size)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_is_the_cpu_dcgan_balls_demo() {
        let (cfg, resume) = train_config(&TrainArgs::default()).unwrap();
        assert!(resume.is_none());
        assert_eq!(cfg.dataset, "balls");
        assert_eq!(cfg.device, "cpu");
        assert_eq!(cfg.out, PathBuf::from("runs/balls"));
        assert_eq!(cfg.model.kind, ModelKind::Dcgan);
        assert_eq!(
            (cfg.model.image_size, cfg.model.channels, cfg.model.nz),
            (32, 3, 100)
        );
        assert_eq!(cfg.duration, Duration::Steps(2000));
        assert_eq!((cfg.adam_g.beta1, cfg.adam_g.beta2), (0.5, 0.999));
    }

    #[test]
    fn mnist_defaults_to_its_native_format() {
        let a = TrainArgs {
            dataset: Some("mnist:/somewhere".into()),
            ..TrainArgs::default()
        };
        let (cfg, _) = train_config(&a).unwrap();
        assert_eq!((cfg.model.image_size, cfg.model.channels), (28, 1));
        assert_eq!(cfg.out, PathBuf::from("runs/mnist"));
        let a = TrainArgs {
            dataset: Some("mnist".into()),
            image_size: Some(64),
            channels: Some(3),
            ..TrainArgs::default()
        };
        let (cfg, _) = train_config(&a).unwrap();
        assert_eq!((cfg.model.image_size, cfg.model.channels), (64, 3));
    }

    #[test]
    fn kernel_entries_are_parsed() {
        let src = "extern \"C\" __global__ void add_f32(float* y) {}\n\
                   extern \"C\" __global__ void __launch_bounds__(256) mul_f32(int n) {}";
        assert_eq!(kernel_entries(src), ["add_f32", "mul_f32"]);
    }
}
