//! What a warmed-up DCGAN training step asks of the device, on the emulated CUDA backend: no driver allocations
//! (the caching allocator serves all), the same kernel launches every step, no host-to-device copies (Adam's
//! tensor lists travel as kernel parameters), and device-to-host copies only for the logged scalars. benches/train.rs
//! prints the same counts for the benchmarked models; a CUDA graph capture (issue 4) needs these at zero.
#![cfg(feature = "emulation")]

use gan_engine::cuda::{emulated_backend, CudaBackend, TransferCounts};
use gan_engine::nn::models::{ModelConfig, ModelKind};
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::Gan;
use gan_engine::Tape;

/// (launches, transfers, driver allocations) so far.
fn counts(be: &CudaBackend) -> (u64, TransferCounts, u64) {
    let launches = be.runtime().launch_counts().iter().map(|(_, n)| n).sum();
    (
        launches,
        be.runtime().transfer_counts(),
        be.alloc_stats().misses,
    )
}

#[test]
fn a_warm_training_step_allocates_nothing_and_copies_only_what_it_logs() {
    let be = emulated_backend().unwrap();
    let dev = be.device();
    let cfg = ModelConfig {
        kind: ModelKind::Dcgan,
        image_size: 28,
        channels: 1,
        nz: 10,
        ngf: 3,
        ndf: 3,
        hidden: 6,
        num_classes: 0,
    };
    let a = AdamSettings::DCGAN;
    let mut gan = Gan::new(&cfg, &a, &a, LossKind::Ns, 1, &dev).unwrap();
    let real = RngStream::new(2)
        .uniform(&[3, 1, 28, 28], -1.0, 1.0, &dev)
        .unwrap();
    let mut tape = Tape::new();
    let mut per_step = Vec::new();
    for step in 1..=6 {
        let before = counts(&be);
        gan.train_step(&mut tape, 1, step, || Ok(real.clone()))
            .unwrap();
        let after = counts(&be);
        per_step.push((
            after.0 - before.0,
            after.1.htod - before.1.htod,
            after.1.dtoh - before.1.dtoh,
            after.2 - before.2,
        ));
    }
    eprintln!("(launches, htod, dtoh, driver allocations) per step: {per_step:?}");
    // The first steps fill the allocator's cache and the optimizers' tables; from the third on, steady state.
    let warm = &per_step[2..];
    let (launches, _, dtoh, _) = warm[0];
    assert!(launches > 50, "a DCGAN step is dozens of launches");
    for &(l, htod, d, allocs) in warm {
        assert_eq!(l, launches, "the same launches every step");
        assert_eq!(allocs, 0, "no driver allocations after warm-up");
        assert_eq!(htod, 0, "no host-to-device copy in a warmed-up step");
        assert_eq!(d, dtoh, "the same read-backs every step");
    }
    // The logged scalars only: D's and G's losses and D's mean outputs, a handful of 4-byte values each.
    assert!(dtoh <= 6, "{dtoh} device-to-host copies in a step");
}
