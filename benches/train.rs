//! Whole-model benchmarks, ours vs libtorch (feature `libtorch`):
//! - one DCGAN-64 training iteration (D step on a real and a fake batch, G step, both Adam updates) at batch 64,
//!   and at batch 128;
//! - one DCGAN-28 (MNIST architecture, 1 channel) training iteration at batch 64;
//! - DCGAN-64 G inference (eval mode, no gradients) at batch 64 and 1024.
//!
//! Ours is `gan_engine::train::Gan::train_step` (k = 1) and `Generator::generate`, and on CUDA also the
//! iteration replayed from a captured CUDA graph (`ours_graph`, `train::graph::StepGraph`); libtorch is the same
//! computation in tch (`common::torch::TorchGan`). The real batch is fixed random data: the data loader is not
//! what this measures. Throughput is the iteration's conv FLOPs (`Dcgan::iteration_flops`), so Gelem/s reads as
//! GFLOP/s. GAN_BENCH_BATCH overrides the batch of the CPU/64 cases (the ids say which was used).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use gan_engine::nn::models::{Generator, ModelConfig, ModelKind};
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::graph::StepGraph;
use gan_engine::train::Gan;
use gan_engine::Tape;

use common::dcgan::{Dcgan, NDF, NGF, NZ};
use common::Ours;

fn batch() -> usize {
    std::env::var("GAN_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn model(image_size: usize, channels: usize) -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Dcgan,
        image_size,
        channels,
        nz: NZ,
        ngf: NGF,
        ndf: NDF,
        hidden: 256,
        ..ModelConfig::default()
    }
}

/// DCGAN's optimiser settings, as in PyTorch's example; the libtorch side uses the same.
const ADAM: AdamSettings = AdamSettings::DCGAN;

fn iteration(c: &mut Criterion, ours: &Ours, image_size: usize, channels: usize, n: usize) {
    let arch = Dcgan::new(image_size, channels, n);
    let cfg = model(image_size, channels);
    let real = RngStream::new(1)
        .uniform(
            &[n, channels, image_size, image_size],
            -1.0,
            1.0,
            &ours.device,
        )
        .unwrap();
    let mut g = c.benchmark_group(format!(
        "{} train_iter dcgan{image_size} b{n}",
        ours.label()
    ));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(arch.iteration_flops()));
    let mut gan = Gan::new(&cfg, &ADAM, &ADAM, LossKind::Ns, 0, &ours.device).unwrap();
    let mut tape = Tape::new();
    let mut step = 0;
    // One eager training step of ours: what criterion times, the counts count and the alternating pairs time.
    let mut ours_step = || {
        step += 1;
        gan.train_step(&mut tape, 1, step, || Ok(real.clone().into()))
            .unwrap()
    };
    // Set when criterion's filter lets the function run: the alternating pairs below need both sides.
    let mut ran_ours = false;
    g.bench_function("ours", |b| {
        ran_ours = true;
        ours.time(b, &mut ours_step)
    });
    if let (Some(be), true) = (&ours.cuda, ran_ours) {
        // The counts are of a warmed-up step: the allocator's cache and the optimizers' tables are filled.
        for _ in 0..5 {
            ours_step();
        }
        let counts = common::StepCounts::of(be, || {
            ours_step();
        });
        eprintln!(
            "gan-engine bench: {} train_iter dcgan{image_size} b{n}: {counts}",
            ours.label()
        );
    }
    // The same iteration captured once as a CUDA graph and replayed (`train --cuda-graph`).
    if let Some(be) = &ours.cuda {
        let mut gan = Gan::new(&cfg, &ADAM, &ADAM, LossKind::Ns, 0, &ours.device).unwrap();
        let mut tape = Tape::new();
        let (mut graph, _) = StepGraph::capture(&mut gan, &mut tape, &real, 1).unwrap();
        let mut step = 1;
        g.bench_function("ours_graph", |b| {
            ours.time(b, || {
                step += 1;
                graph.step(&mut gan, &real, step).unwrap()
            })
        });
        let counts = common::StepCounts::of(be, || {
            step += 1;
            graph.step(&mut gan, &real, step).unwrap();
        });
        eprintln!(
            "gan-engine bench: {} train_iter dcgan{image_size} b{n} as a CUDA graph: one replay of {} kernels, \
             besides it {counts}",
            ours.label(),
            graph.launches()
        );
    }
    #[cfg(feature = "libtorch")]
    if let Some(dev) = common::torch::device_for(ours) {
        let mut tg = common::torch::TorchGan::new(&arch, common::torch::from_ours(&real, dev));
        let mut ran_torch = false;
        g.bench_function("libtorch", |b| {
            ran_torch = true;
            common::torch::time(dev, b, || tg.step())
        });
        if ours.cuda.is_none() {
            let group = format!("cpu train_iter dcgan{image_size} b{n}");
            common::paired::measure(&group, ran_ours && ran_torch, &mut ours_step, || tg.step());
        }
    }
    g.finish();
}

fn g_inference(c: &mut Criterion, ours: &Ours, n: usize) {
    let arch = Dcgan::new(64, 3, n);
    let z = RngStream::new(2)
        .normal(&[n, NZ], 0.0, 1.0, &ours.device)
        .unwrap();
    let mut g = c.benchmark_group(format!("{} g_inference dcgan64 b{n}", ours.label()));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(arch.g_forward_flops()));
    {
        let mut init = RngStream::new(3);
        let mut gen = Generator::new(&model(64, 3), &ours.device, &mut init).unwrap();
        g.bench_function("ours", |b| ours.time(b, || gen.generate(&z).unwrap()));
    }
    #[cfg(feature = "libtorch")]
    if let Some(dev) = common::torch::device_for(ours) {
        use tch::nn::ModuleT;
        let net = common::torch::TorchDcgan::new(&arch, dev);
        let tz = common::torch::from_ours(&z, dev).reshape([n as i64, NZ as i64, 1, 1]);
        g.bench_function("libtorch", |b| {
            common::torch::time(dev, b, || tch::no_grad(|| net.g.forward_t(&tz, false)))
        });
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    let n = batch();
    for ours in common::devices() {
        g_inference(c, &ours, n);
        // The large-batch rows: G inference at 16x the batch (1024 by default), the iteration at 2x.
        g_inference(c, &ours, 16 * n);
        iteration(c, &ours, 28, 1, n);
        iteration(c, &ours, 64, 3, n);
        iteration(c, &ours, 64, 3, 2 * n);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = all
}
criterion_main!(benches);
