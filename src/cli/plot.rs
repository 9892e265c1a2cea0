//! `plot` (a run's training curves) and `dfeatures` (D's features of real vs generated images).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::device::Device;
use crate::study::dfeatures::{compute, default_size, render_dfeatures, DFeaturesOptions};
use crate::study::plot::{
    plot_metrics_file, render_overlay, render_overlay_split, Metrics, NamedRun, PlotOptions,
};
use crate::train::config::LossKind;
use crate::train::run::{read_checkpoint_config, METRICS_FILE, METRICS_PLOT_FILE};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A run directory: plots its metrics.csv, with the loss kind read from its checkpoint. Given more than
    /// once, overlays the runs: one panel per metric, one colour per run
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "csv",
        required_unless_present = "csv"
    )]
    pub run: Vec<PathBuf>,
    /// Legend name of each --run, in order [default: the run directory's name]
    #[arg(long, value_name = "NAME")]
    pub label: Vec<String>,
    /// With several --run: one PNG per metric (OUT_loss_d.png, OUT_loss_g.png, ...) instead of one figure
    #[arg(long)]
    pub split: bool,
    /// A metrics CSV file (columns by header name: step, loss_d, loss_g, d_x, d_g_z1, d_g_z2, img_per_s, fid)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// PNG to write [default: metrics.png next to the CSV; compare.png for several runs]
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
    if a.run.len() > 1 {
        return run_overlay(&a);
    }
    if a.split || !a.label.is_empty() {
        bail!("--split and --label are for overlays: give --run two or more times");
    }
    let (csv, dir) = match (a.run.first(), &a.csv) {
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
        None => dir.as_deref().and_then(run_loss),
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

/// The loss kind recorded in a run directory's checkpoint, if it has one.
fn run_loss(dir: &Path) -> Option<String> {
    dir.join(crate::checkpoint::CHECKPOINT_FILE)
        .is_file()
        .then(|| read_checkpoint_config(dir).ok())
        .flatten()
        .map(|(_, cfg)| cfg.loss.to_string())
}

/// `plot --run A --run B ...`: the runs overlaid.
fn run_overlay(a: &PlotArgs) -> Result<()> {
    if !a.label.is_empty() && a.label.len() != a.run.len() {
        bail!(
            "{} --label for {} --run: give one per run, in the same order",
            a.label.len(),
            a.run.len()
        );
    }
    let mut runs = Vec::new();
    let mut losses = Vec::new();
    for (i, dir) in a.run.iter().enumerate() {
        if !dir.is_dir() {
            bail!("run directory {} does not exist", dir.display());
        }
        let name = a.label.get(i).cloned().unwrap_or_else(|| {
            dir.file_name().map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        runs.push(NamedRun {
            name,
            metrics: Metrics::read(&dir.join(METRICS_FILE))?,
        });
        losses.push(a.loss.map(|l| l.to_string()).or_else(|| run_loss(dir)));
    }
    // The equilibrium lines need one loss for all: the flag, or the one every checkpoint records.
    let loss = match losses.first() {
        Some(Some(l)) if losses.iter().all(|x| x.as_deref() == Some(l)) => Some(l.clone()),
        _ => {
            eprintln!("note: the runs do not share one known loss kind; no equilibrium lines (pass --loss to draw them)");
            None
        }
    };
    let o = PlotOptions {
        smooth: a.smooth,
        loss,
        width: a.width,
        height: a.height,
        title: runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" vs "),
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("compare.png"));
    if a.split {
        let stem = out.with_extension("");
        for (col, img) in render_overlay_split(&runs, &o)? {
            let path = PathBuf::from(format!("{}_{col}.png", stem.display()));
            crate::io::save_png(&img, &path)?;
            println!("wrote {}", path.display());
        }
    } else {
        crate::io::save_png(&render_overlay(&runs, &o)?, &out)?;
        println!("wrote {}", out.display());
    }
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
    /// Image height in pixels [default: 500, or 940 with --tsne]
    #[arg(long)]
    pub height: Option<u32>,
    /// Also embed each block's features with t-SNE (a second row of panels under the PCA ones)
    #[arg(long)]
    pub tsne: bool,
    /// t-SNE perplexity (lowered automatically to a third of the point count)
    #[arg(long, default_value_t = crate::study::tsne::DEFAULT_PERPLEXITY, requires = "tsne", value_name = "P")]
    pub perplexity: f64,
}

pub fn run_dfeatures(a: DfeaturesArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let o = DFeaturesOptions {
        n: a.n,
        seed: a.seed,
        dataset: a.dataset.clone(),
        device,
        tsne: a.tsne.then_some(a.perplexity),
    };
    let df = compute(&a.checkpoint, &o)?;
    let (w, h) = default_size(df.layers.len(), a.tsne);
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
        if let Some(t) = &l.tsne {
            println!(
                "  t-SNE of {} (perplexity {:.0}): {:.1}% of points have a nearest neighbour of their own kind",
                l.name,
                t.perplexity,
                100.0 * t.neighbour_agreement
            );
        }
    }
    println!(
        "wrote {} ({} real and {} generated images)",
        a.out.display(),
        df.n,
        df.n
    );
    Ok(())
}
