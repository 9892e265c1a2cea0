//! One DCGAN-64 training iteration on the CPU (batch 64, nz 100, ngf = ndf = 64): the D step on a real and a
//! fake batch, then the G step, with both Adam updates. The real batch is random (the data loader is not what
//! this measures).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use gan_engine::nn::models::{ModelConfig, ModelKind};
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::Gan;
use gan_engine::{Device, Tape};

fn iteration(c: &mut Criterion) {
    let cfg = ModelConfig {
        kind: ModelKind::Dcgan,
        image_size: 64,
        channels: 3,
        nz: 100,
        ngf: 64,
        ndf: 64,
        hidden: 256,
        num_classes: 0,
    };
    let adam = AdamSettings {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut gan = Gan::new(&cfg, &adam, &adam, LossKind::Ns, 0, &Device::Cpu).unwrap();
    let real = RngStream::new(1)
        .uniform(&[64, 3, 64, 64], -1.0, 1.0, &Device::Cpu)
        .unwrap();
    let mut tape = Tape::new();
    let mut step = 0;
    let mut g = c.benchmark_group("train_cpu");
    // ~1 s per iteration on a desktop, several on a small shared machine: ten flat samples of one iteration.
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(std::time::Duration::from_secs(60));
    g.throughput(Throughput::Elements(64));
    g.bench_function("dcgan64_batch64_iteration", |b| {
        b.iter(|| {
            step += 1;
            gan.train_step(&mut tape, 1, step, || Ok(real.clone()))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, iteration);
criterion_main!(benches);
