//! What a warmed-up DCGAN training step asks of the device, on the emulated CUDA backend: no driver allocations
//! (the caching allocator serves all), the same kernel launches every step, no host-to-device copies (Adam's
//! tensor lists travel as kernel parameters), no device-to-device copies (parameters are updated in place, never
//! copied first), and device-to-host copies only for the logged scalars. The training state (weights, Adam's
//! moments, batch-norm statistics) stays at the same device addresses from step to step. benches/train.rs
//! prints the same counts for the benchmarked models; a CUDA graph capture (`train --cuda-graph`) needs all of these.
#![cfg(feature = "emulation")]

use gan_engine::cuda::{emulated_backend, CudaBackend, TransferCounts};
mod common;
use common::model::tiny_dcgan;
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::Gan;
use gan_engine::Tape;

/// Device addresses of everything a step updates in place: G's and D's parameters and buffers (batch norm's
/// running statistics and step counter) and both optimizers' moments.
fn state_addresses(be: &CudaBackend, gan: &Gan) -> Vec<u64> {
    let tensors = gan.state_tensors();
    tensors.iter().map(|t| be.ptr(t).unwrap()).collect()
}

/// Kernel launches of a warmed-up step of `tiny_dcgan` at batch 3, poison fills left out. Batch norm and its
/// activation, batch norm's finalize kernels and its batch counter all run inside other kernels, and so do the
/// statistics of a batch norm after a convolution and the activation of D's first layer; D's gradient sums are
/// one launch. (That activation's backward runs in D's second layer at full width, but not here: with 3 channels
/// the second layer's input gradient runs on the narrow kernels.) A change that adds launches to the step fails
/// here and must raise this with a reason.
const LAUNCH_BUDGET: u64 = 73;

/// (launches, transfers, driver allocations) so far. Launches leave out `fill_f32`: debug builds fill every new
/// output with NaN first (the poison), release builds do not.
fn counts(be: &CudaBackend) -> (u64, TransferCounts, u64) {
    let launches = be
        .runtime()
        .launch_counts()
        .iter()
        .filter(|(k, _)| *k != "fill_f32")
        .map(|(_, n)| n)
        .sum();
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
    let cfg = tiny_dcgan();
    let a = AdamSettings::DCGAN;
    let mut gan = Gan::new(&cfg, &a, &a, LossKind::Ns, 1, &dev).unwrap();
    let real = RngStream::new(2)
        .uniform(&[3, 1, 28, 28], -1.0, 1.0, &dev)
        .unwrap();
    let mut tape = Tape::new();
    let mut per_step = Vec::new();
    let mut addresses = Vec::new();
    for step in 1..=6 {
        let before = counts(&be);
        gan.train_step(&mut tape, 1, step, || Ok(real.clone().into()))
            .unwrap();
        let after = counts(&be);
        per_step.push((
            after.0 - before.0,
            after.1.htod - before.1.htod,
            after.1.dtoh - before.1.dtoh,
            after.2 - before.2,
            after.1.dtod - before.1.dtod,
        ));
        addresses.push(state_addresses(&be, &gan));
    }
    eprintln!("(launches, htod, dtoh, driver allocations, dtod) per step: {per_step:?}");
    // The first steps fill the allocator's cache and the optimizers' tables; from the third on, steady state.
    let warm = &per_step[2..];
    let (launches, _, dtoh, _, _) = warm[0];
    assert!(launches > 50, "a DCGAN step is dozens of launches");
    assert!(
        launches <= LAUNCH_BUDGET,
        "{launches} launches in a step, more than the budget of {LAUNCH_BUDGET}"
    );
    for &(l, htod, d, allocs, dtod) in warm {
        assert_eq!(l, launches, "the same launches every step");
        assert_eq!(allocs, 0, "no driver allocations after warm-up");
        assert_eq!(htod, 0, "no host-to-device copy in a warmed-up step");
        assert_eq!(d, dtoh, "the same read-backs every step");
        assert_eq!(
            dtod, 0,
            "no device-to-device copy (copy-on-write of a parameter) in a step"
        );
    }
    // From the very first step: nothing of the training state moves (the optimizers update in place).
    assert!(addresses[0].len() > 20);
    for (i, a) in addresses.iter().enumerate() {
        assert_eq!(
            a,
            &addresses[0],
            "the training state moved in step {}",
            i + 1
        );
    }
    // The logged scalars only: D's and G's losses and D's mean outputs, a handful of 4-byte values each.
    assert!(dtoh <= 6, "{dtoh} device-to-host copies in a step");
}
