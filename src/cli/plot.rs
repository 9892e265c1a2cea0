//! `plot` (a run's training curves) and `dfeatures` (D's features of real vs generated images).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::device::Device;
use crate::study::dfeatures::{compute, default_size, render_dfeatures, DFeaturesOptions};
use crate::study::plot::{plot_metrics_file, PlotOptions};
use crate::train::config::LossKind;
use crate::train::run::{read_checkpoint_config, METRICS_FILE, METRICS_PLOT_FILE};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A run directory: plots its metrics.csv, with the loss kind read from its checkpoint
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "csv",
        required_unless_present = "csv"
    )]
    pub run: Option<PathBuf>,
    /// A metrics CSV file (columns by header name: step, loss_d, loss_g, d_x, d_g_z1, d_g_z2, img_per_s, fid)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// PNG to write [default: metrics.png next to the CSV]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Weight of the exponential moving average drawn in bold, in [0, 1); 0 = raw curves only
    #[arg(long, default_value_t = 0.9, value_name = "W")]
    pub smooth: f64,
    /// The run's loss (decides the equilibrium lines) [default: the run's checkpoint's, else unknown]
    #[arg(long, value_enum)]
    pub loss: Option<LossKind>,
    /// Image width in pixels
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    /// Image height in pixels
    #[arg(long, default_value_t = 1000)]
    pub height: u32,
}

pub fn run_plot(a: PlotArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.smooth) {
        bail!("--smooth must be in [0, 1), got {}", a.smooth);
    }
    let (csv, dir) = match (&a.run, &a.csv) {
        (Some(dir), _) => {
            if !dir.is_dir() {
                bail!("run directory {} does not exist", dir.display());
            }
            (dir.join(METRICS_FILE), Some(dir.clone()))
        }
        (None, Some(csv)) => (csv.clone(), csv.parent().map(PathBuf::from)),
        (None, None) => bail!("give --run DIR or --csv FILE"),
    };
    // The loss kind: the flag, else the checkpoint beside the CSV (a CSV alone does not say).
    let loss = match a.loss {
        Some(l) => Some(l.to_string()),
        None => dir
            .as_ref()
            .filter(|d| d.join(crate::checkpoint::CHECKPOINT_FILE).is_file())
            .and_then(|d| read_checkpoint_config(d).ok())
            .map(|(_, cfg)| cfg.loss.to_string()),
    };
    if loss.is_none() {
        eprintln!("note: the loss kind is unknown (no checkpoint next to the CSV); pass --loss to draw the equilibrium lines");
    }
    let out = a.out.clone().unwrap_or_else(|| match &dir {
        Some(d) => d.join(METRICS_PLOT_FILE),
        None => PathBuf::from(METRICS_PLOT_FILE),
    });
    let o = PlotOptions {
        smooth: a.smooth,
        loss,
        width: a.width,
        height: a.height,
        title: dir
            .as_ref()
            .map_or_else(|| csv.display().to_string(), |d| d.display().to_string()),
    };
    plot_metrics_file(&csv, &out, &o)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct DfeaturesArgs {
    /// A run directory or its checkpoint.safetensors (the discriminator is needed, so not generator.safetensors)
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Real and generated images, each
    #[arg(long, default_value_t = 256)]
    pub n: usize,
    /// PNG to write
    #[arg(long, default_value = "dfeatures.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Dataset of the real images [default: the run's]
    #[arg(long, value_name = "SPEC")]
    pub dataset: Option<String>,
    /// Seed of the real-image choice and of the latents (the latents of `sample --seed`)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Image width in pixels [default: 440 per D block]
    #[arg(long)]
    pub width: Option<u32>,
    /// Image height in pixels [default: 500]
    #[arg(long)]
    pub height: Option<u32>,
}

pub fn run_dfeatures(a: DfeaturesArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let o = DFeaturesOptions {
        n: a.n,
        seed: a.seed,
        dataset: a.dataset.clone(),
        device,
    };
    let df = compute(&a.checkpoint, &o)?;
    let (w, h) = default_size(df.layers.len());
    let img = render_dfeatures(&df, a.width.unwrap_or(w), a.height.unwrap_or(h))?;
    crate::io::save_png(&img, &a.out)?;
    for l in &df.layers {
        println!(
            "{}: PC1 {:.1}%, PC2 {:.1}% of variance; centroid split {:.1}% in the plane, {:.1}% in all {} dims",
            l.name,
            100.0 * l.pca.explained(0),
            100.0 * l.pca.explained(1),
            100.0 * l.separation,
            100.0 * l.separation_full,
            l.shape.iter().product::<usize>()
        );
    }
    println!(
        "wrote {} ({} real and {} generated images)",
        a.out.display(),
        df.n,
        df.n
    );
    Ok(())
}
