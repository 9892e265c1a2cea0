//! `gan-engine benchmark`: the time of one training iteration, measured the way a user's loop runs it.
//!
//! One iteration is what `train` does per step with `--k 1`: a D update on a real and a fake batch, a G update,
//! both optimiser steps, and the five scalars of the progress line (D loss, G loss, D(x), D(G(z)) before and
//! after the D update) read back to the host, as PyTorch's DCGAN example reads them with `.item()`. The real
//! batch is fixed random data, so the data loader is not part of it. `scripts/torch_dcgan_step.py` times the
//! same iteration in PyTorch, so the two can be compared line by line. `--g-inference` times G alone instead, as
//! `sample` runs it (eval mode, nothing recorded, one fixed batch of latents), against the script's twin flag.
//!
//! Timing: after `--warmup` iterations (kernel caches, allocator, cuDNN-style first-call costs on either side),
//! `--repeat` samples of `--steps` back-to-back iterations each. On a GPU a sample is timed with two CUDA events
//! recorded on the stream around it, starting from an idle device; elsewhere with the host clock between two
//! synchronisations. The median sample is the result; min and max show the spread.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::cuda::tuning::GemmTuning;
use crate::device::Device;
use crate::nn::models::{ModelConfig, ModelKind};
use crate::ops::random::RngStream;
use crate::train::config::{AdamSettings, LossKind};
use crate::train::graph::StepGraph;
use crate::train::{Gan, StepMetrics};
use crate::Tape;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Architecture
    #[arg(long, value_enum, default_value = "dcgan")]
    pub model: ModelKind,
    /// Image height = width (DCGAN: 64, 32 or 28)
    #[arg(long, default_value_t = 64, value_parser = super::positive_usize)]
    pub image_size: usize,
    /// Image channels
    #[arg(long, default_value_t = 3, value_parser = super::positive_usize)]
    pub channels: usize,
    /// Batch size
    #[arg(long, default_value_t = 128, value_parser = super::positive_usize)]
    pub batch_size: usize,
    /// Latent size
    #[arg(long, default_value_t = 100, value_parser = super::positive_usize)]
    pub nz: usize,
    /// G's base width (the DCGAN paper's 64)
    #[arg(long, default_value_t = 64, value_parser = super::positive_usize)]
    pub ngf: usize,
    /// D's base width (the DCGAN paper's 64)
    #[arg(long, default_value_t = 64, value_parser = super::positive_usize)]
    pub ndf: usize,
    /// MLP hidden width
    #[arg(long, default_value_t = 256, value_parser = super::positive_usize)]
    pub hidden: usize,
    /// cpu | cuda | cuda:N | auto | emu
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Convolutions and linear layers on CUDA: fp32, tf32, bf16 or fp16
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::backend::Precision,
    /// Replay each iteration from a captured CUDA graph (as `train --cuda-graph`)
    #[arg(long)]
    pub cuda_graph: bool,
    /// Time G inference instead of the training iteration: eval mode, nothing recorded, a fixed batch of
    /// latents (what `sample` runs)
    #[arg(long, conflicts_with = "cuda_graph")]
    pub g_inference: bool,
    /// Iterations run before timing
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Iterations per timed sample
    #[arg(long, default_value_t = 10, value_parser = super::positive_usize)]
    pub steps: usize,
    /// Timed samples; the median is reported
    #[arg(long, default_value_t = 5, value_parser = super::positive_usize)]
    pub repeat: usize,
    /// Also write the result as JSON here
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Sizes past which a benchmark is a typo, not a measurement.
const MAX_BATCH: usize = 1 << 16;
const MAX_ITERATIONS: usize = 1 << 20;

pub fn run(a: BenchArgs) -> Result<()> {
    ensure!(
        a.batch_size <= MAX_BATCH,
        "--batch-size {} is larger than {MAX_BATCH}",
        a.batch_size
    );
    ensure!(
        a.steps.saturating_mul(a.repeat).saturating_add(a.warmup) <= MAX_ITERATIONS,
        "--warmup + --steps x --repeat is more than {MAX_ITERATIONS} iterations"
    );
    let device = Device::open(&a.device, a.precision)?;
    let be = device.backend();
    if a.cuda_graph && be.graph_capture().is_none() {
        bail!("--cuda-graph needs a CUDA device (--device cuda or emu)");
    }
    let model = ModelConfig {
        kind: a.model,
        image_size: a.image_size,
        channels: a.channels,
        nz: a.nz,
        ngf: a.ngf,
        ndf: a.ndf,
        hidden: a.hidden,
        ..ModelConfig::default()
    };
    let adam = AdamSettings::DCGAN;
    let mut gan = Gan::new(&model, &adam, &adam, LossKind::Ns, 0, &device)?;
    let real = RngStream::new(1).uniform(
        &[a.batch_size, a.channels, a.image_size, a.image_size],
        -1.0,
        1.0,
        &device,
    )?;
    let mut tape = Tape::new();
    let mut step = 0u64;
    let mut graph = None;
    let mut last: Option<StepMetrics> = None;
    let z = RngStream::new(2).normal(&[a.batch_size, a.nz], 0.0, 1.0, &device)?;
    let mut images = None;
    // One iteration; a training iteration reads its metrics back to the host, as the progress line needs them.
    let mut iteration = || -> Result<()> {
        if a.g_inference {
            images = Some(gan.g.generate(&z)?);
            return Ok(());
        }
        step += 1;
        let m = match &mut graph {
            Some(g) => StepGraph::step(g, &mut gan, &real, step)?,
            None if a.cuda_graph => {
                let (g, m) = StepGraph::capture(&mut gan, &mut tape, &real, step)?;
                graph = Some(g);
                m
            }
            None => gan.train_step(&mut tape, 1, step, || Ok(real.clone().into()))?,
        };
        last = Some(m);
        Ok(())
    };
    for _ in 0..a.warmup.max(usize::from(a.cuda_graph)) {
        iteration().context("warm-up iteration")?;
    }
    let mut samples_ms = Vec::with_capacity(a.repeat);
    let mut timer = "host clock";
    let launches_before = be.launch_counts();
    let converted_before = be.relayout_values();
    for _ in 0..a.repeat {
        let mut run = || -> Result<()> {
            for _ in 0..a.steps {
                iteration()?;
            }
            Ok(())
        };
        be.synchronize()?;
        let elapsed = match be.device_time(&mut run)? {
            Some(t) => {
                timer = "CUDA events";
                t
            }
            None => {
                let t = Instant::now();
                run()?;
                be.synchronize()?;
                t.elapsed()
            }
        };
        samples_ms.push(elapsed.as_secs_f64() * 1e3 / a.steps as f64);
    }
    let launches = launches_before
        .zip(be.launch_counts())
        .map(|(before, after)| Launches::per_iteration(&before, &after, a.repeat * a.steps));
    let graph_kernels = graph.as_ref().map(StepGraph::launches);
    // Values converted to channels-last per iteration, as the host issued them: eager runs only (a replay's
    // conversions are inside the graph).
    let converted = converted_before
        .zip(be.relayout_values())
        .filter(|_| graph.is_none())
        .map(|(before, after)| (after - before) as f64 / (a.repeat * a.steps) as f64);
    // What the last iteration computed, checked finite: a benchmark of a broken step measures nothing.
    let (last_text, last_json) = match (images, last) {
        (Some(y), _) => {
            let v = y.to_vec()?;
            let mean = v.iter().map(|&p| f64::from(p)).sum::<f64>() / v.len().max(1) as f64;
            ensure!(
                mean.is_finite(),
                "the benchmarked G inference produced non-finite pixels"
            );
            (
                format!("mean pixel {mean:.4}"),
                serde_json::json!({ "mean_pixel": mean }),
            )
        }
        (None, Some(m)) => {
            ensure!(
                m.loss_d.is_finite() && m.loss_g.is_finite(),
                "the benchmarked iteration produced a non-finite loss (D {}, G {})",
                m.loss_d,
                m.loss_g
            );
            (
                format!(
                    "loss_d {:.4} loss_g {:.4} D(x) {:.4} D(G(z)) {:.4} / {:.4}",
                    m.loss_d, m.loss_g, m.d_x, m.d_g_z1, m.d_g_z2
                ),
                serde_json::json!({"loss_d": m.loss_d, "loss_g": m.loss_g, "d_x": m.d_x, "d_g_z1": m.d_g_z1, "d_g_z2": m.d_g_z2}),
            )
        }
        (None, None) => bail!("no iteration was timed"),
    };
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    // A tuning run's GEMM overrides, as the CUDA backend read them when it opened.
    let tuning = match device.is_cpu() {
        true => GemmTuning::default(),
        false => GemmTuning::from_env()?,
    };
    let what = format!(
        "{:?}{} b{} ngf {} ndf {}{}{}{}{}{}",
        a.model,
        a.image_size,
        a.batch_size,
        a.ngf,
        a.ndf,
        if a.g_inference { " g inference" } else { "" },
        tuning
            .tc_rows
            .map_or(String::new(), |r| format!(" tile {r}")),
        tuning
            .split_k_blocks
            .map_or(String::new(), |b| format!(" split-k target {b}")),
        tuning.nhwc.map_or(String::new(), |n| format!(
            " layout {}",
            if n { "nhwc" } else { "nchw" }
        )),
        tuning.reuse.map_or(String::new(), |r| format!(
            " operand reuse {}",
            if r { "on" } else { "off" }
        )),
    )
    .to_lowercase();
    let mode = if a.cuda_graph { "graph" } else { "eager" };
    println!(
        "{what} on {}: {} {mode}: {median:.3} ms per iteration (median of {} samples of {} iterations; min {:.3}, max {:.3}; {timer}), {:.0} images/s; last iteration: {last_text}",
        device.name(),
        a.precision,
        a.repeat,
        a.steps,
        sorted[0],
        sorted[sorted.len() - 1],
        a.batch_size as f64 * 1e3 / median,
    );
    if let Some(l) = &launches {
        let replay = graph_kernels.map_or(String::new(), |n| {
            format!(" besides one graph replay of {n} kernels")
        });
        println!("kernel launches per iteration: {}{replay}", l.total);
    }
    if let Some(v) = converted {
        println!("values converted to channels-last per iteration: {v:.0}");
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "engine": "gan-engine",
            "version": env!("CARGO_PKG_VERSION"),
            "what": what,
            "device": device.name(),
            "precision": a.precision.to_string(),
            "mode": mode,
            "batch": a.batch_size,
            "warmup": a.warmup,
            "steps_per_sample": a.steps,
            "samples_ms_per_iteration": samples_ms,
            "median_ms": median,
            "min_ms": sorted[0],
            "max_ms": sorted[sorted.len() - 1],
            "timer": timer,
            "g_inference": a.g_inference,
            "last": last_json,
            "launches_per_iteration": launches.as_ref().map(|l| l.total),
            "launches_by_kernel": launches.as_ref().map(|l| l.by_kernel.clone()),
            "graph_kernels": graph_kernels,
            "converted_values_per_iteration": converted,
            "gemm_tuning": {
                "conv_tile": tuning.tc_rows,
                "split_k_blocks": tuning.split_k_blocks,
                "conv_layout": tuning.nhwc.map(|n| if n { "nhwc" } else { "nchw" }),
                "conv_reuse": tuning.reuse.map(|r| if r { "on" } else { "off" }),
            },
        });
        crate::io::atomic::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Kernel launches per timed iteration (graph replays not included: a replay's kernels are `graph_kernels`).
struct Launches {
    total: f64,
    by_kernel: serde_json::Map<String, serde_json::Value>,
}

impl Launches {
    fn per_iteration(
        before: &[(&'static str, u64)],
        after: &[(&'static str, u64)],
        iterations: usize,
    ) -> Launches {
        let n = iterations.max(1) as f64;
        let between = crate::cuda::launches_between(before, after);
        Launches {
            total: between.iter().map(|(_, c)| c).sum::<u64>() as f64 / n,
            by_kernel: between
                .into_iter()
                .map(|(k, c)| (k.to_string(), serde_json::json!(c as f64 / n)))
                .collect(),
        }
    }
}
