//! The channels-last operand copies the CUDA backend keeps for reuse (src/cuda/operand_cache.rs): a copy serves
//! every later GEMM that reads its source under the same view, until the source is written in place, replaced by
//! `copy_into` or dropped, and a graph's capture and replays start afresh. Reuse changes which conversions run,
//! never a value: results, training runs (eager and graphed) and samples drawn between graph replays are those of
//! a backend that keeps nothing (`GAN_ENGINE_CONV_REUSE=off`), bit for bit.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::backend::{Backend, Conv2dParams, GraphCapture};
use gan_engine::cuda::tuning::GemmTuning;
use gan_engine::cuda::{CudaBackend, Precision};
use gan_engine::nn::models::ModelConfig;
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::gan::StepMetrics;
use gan_engine::train::graph::StepGraph;
use gan_engine::train::Gan;
use gan_engine::{Device, Tape, Tensor};

mod common;
use common::backend::{launches, under_test};
use common::bits;

/// A backend at `p` that keeps copies (the rule) or not.
fn backend(p: Precision, reuse: bool) -> Arc<CudaBackend> {
    let be = under_test();
    be.set_precision(p);
    be.set_gemm_tuning(GemmTuning {
        reuse: (!reuse).then_some(false),
        ..GemmTuning::default()
    });
    be
}

/// Conversion launches so far (pairs and triples) at format `f`.
fn conversions(be: &CudaBackend, f: &str) -> u64 {
    launches(be, &format!("to_nhwc_pair_{f}")) + launches(be, &format!("to_nhwc_triple_{f}"))
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = RngStream::new(seed);
    rng.uniform(&[n], -1.0, 1.0, &Device::Cpu)
        .unwrap()
        .to_vec()
        .unwrap()
}

/// What the backend that keeps nothing computes for the same inputs: forward, and both gradients.
fn reference(p: Precision, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<u32>; 3] {
    let be = backend(p, false);
    let (x, w, dy) = (
        be.from_host(x, &X).unwrap(),
        be.from_host(w, &W).unwrap(),
        be.from_host(dy, &Y).unwrap(),
    );
    let y = be.conv2d(&x, &w, P).unwrap();
    let (dx, dw) = be.conv2d_backward(&dy, &x, &w, P, None).unwrap();
    assert_eq!(be.kept_operands(), 0, "reuse off keeps nothing");
    [bits(&y), bits(&dx), bits(&dw)]
}

/// A convolution whose three GEMMs all run channels-last: 32 input channels (one K slice per tap), 64 outputs.
const X: [usize; 4] = [2, 32, 8, 8];
const W: [usize; 4] = [64, 32, 4, 4];
const Y: [usize; 4] = [2, 64, 4, 4];
const P: Conv2dParams = Conv2dParams {
    stride: (2, 2),
    padding: (1, 1),
};

#[test]
fn a_kept_copy_serves_until_its_source_is_written_replaced_or_dropped() {
    for (p, f) in [(Precision::Bf16, "bf16"), (Precision::F32, "f32")] {
        let be = backend(p, true);
        let (xv, wv, dyv) = (
            values(2 * 32 * 64, 1),
            values(64 * 32 * 16, 2),
            values(2 * 64 * 16, 3),
        );
        let x = be.from_host(&xv, &X).unwrap();
        let mut w = be.from_host(&wv, &W).unwrap();
        let dy = be.from_host(&dyv, &Y).unwrap();
        let want = reference(p, &xv, &wv, &dyv);
        let converted = |before: u64| conversions(&be, f) - before;

        // The first forward converts x and w in one launch and keeps both copies; the second converts nothing.
        let c = conversions(&be, f);
        let y = be.conv2d(&x, &w, P).unwrap();
        assert_eq!((converted(c), be.kept_operands()), (1, 2), "{f}");
        let c = conversions(&be, f);
        let again = be.conv2d(&x, &w, P).unwrap();
        assert_eq!(converted(c), 0, "{f}: the second forward converted");
        assert_eq!(bits(&y), want[0], "{f} forward");
        assert_eq!(bits(&again), want[0], "{f} forward from kept copies");

        // The backward reads x's forward copy: one launch for dy and w's other view, not the triple.
        let (c, triples) = (
            conversions(&be, f),
            launches(&be, &format!("to_nhwc_triple_{f}")),
        );
        let (dx, dw) = be.conv2d_backward(&dy, &x, &w, P, None).unwrap();
        assert_eq!(converted(c), 1, "{f}");
        assert_eq!(
            launches(&be, &format!("to_nhwc_triple_{f}")),
            triples,
            "{f}"
        );
        assert_eq!(
            [bits(&dx), bits(&dw)],
            [want[1].clone(), want[2].clone()],
            "{f} backward"
        );
        assert_eq!(be.kept_operands(), 4, "{f}: x, w twice, dy");
        let c = conversions(&be, f);
        let (dx, dw) = be.conv2d_backward(&dy, &x, &w, P, None).unwrap();
        assert_eq!(converted(c), 0, "{f}: the second backward converted");
        assert_eq!(
            [bits(&dx), bits(&dw)],
            [want[1].clone(), want[2].clone()],
            "{f}"
        );

        // An in-place update (an optimizer step, a gradient accumulation) forgets w's copies, not x's.
        let delta = be.from_host(&values(64 * 32 * 16, 4), &W).unwrap();
        be.add_assign(&mut w, &delta).unwrap();
        let updated: Vec<f32> = w.to_vec().unwrap();
        let c = conversions(&be, f);
        let y = be.conv2d(&x, &w, P).unwrap();
        assert_eq!(converted(c), 1, "{f}: w converted again");
        assert_eq!(
            bits(&y),
            reference(p, &xv, &updated, &dyv)[0],
            "{f} after the update"
        );

        // So does a copy into it (a graph's inputs and state are refilled that way).
        let other = values(64 * 32 * 16, 5);
        be.copy_into(
            &w,
            &Tensor::from_vec(other.clone(), &W, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = be.conv2d(&x, &w, P).unwrap();
        let want_other = reference(p, &xv, &other, &dyv);
        assert_eq!(bits(&y), want_other[0], "{f} after copy_into");
        let (dx, dw) = be.conv2d_backward(&dy, &x, &w, P, None).unwrap();
        assert_eq!(
            [bits(&dx), bits(&dw)],
            [want_other[1].clone(), want_other[2].clone()],
            "{f}"
        );

        // A dropped source releases its copies; a new tensor, even at the same address, is converted afresh.
        drop((x, dy));
        let x2 = be.from_host(&wv[..2 * 32 * 64], &X).unwrap();
        let c = conversions(&be, f);
        let y = be.conv2d(&x2, &w, P).unwrap();
        assert_eq!(converted(c), 1, "{f}: x2 converted");
        assert_eq!(
            be.kept_operands(),
            3,
            "{f}: w twice and x2; x and dy released"
        );
        assert_eq!(
            bits(&y),
            reference(p, &wv[..2 * 32 * 64], &other, &dyv)[0],
            "{f}"
        );
    }
}

/// Widths 32, 64, 128: the middle layers' channels suit the channels-last kernels in every direction.
fn model() -> ModelConfig {
    common::model::dcgan28(32, 16)
}

/// One run of `STEPS` iterations: metrics, a sample of fixed latents after each, the state after the last, and
/// the conversion launches and values the host issued (a graph's replays not counted).
struct Run {
    metrics: Vec<StepMetrics>,
    samples: Vec<Vec<u32>>,
    state: Vec<Vec<u32>>,
    conversions: u64,
    values: u64,
}

const STEPS: usize = 3;

/// STEPS training iterations at bf16, eager or as replays of one captured step, with a sample drawn eagerly
/// between iterations (after graph replays that changed the weights without the host seeing).
fn train(reuse: bool, graphed: bool) -> Run {
    let be = backend(Precision::Bf16, reuse);
    let a = AdamSettings::DCGAN;
    let mut gan = Gan::new(&model(), &a, &a, LossKind::Ns, 1, &be.device()).unwrap();
    let mut data = RngStream::new(2);
    let batches: Vec<Tensor> = (0..STEPS)
        .map(|_| {
            data.uniform(&[2, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
                .unwrap()
        })
        .collect();
    let z = be.from_host(&values(2 * 16, 9), &[2, 16]).unwrap();
    let mut tape = Tape::new();
    let before = (conversions(&be, "bf16"), be.relayout_values().unwrap());
    let mut metrics = Vec::new();
    let mut samples = Vec::new();
    let mut graph: Option<StepGraph> = None;
    for (i, real) in batches.iter().enumerate() {
        let step = i as u64 + 1;
        let m = if !graphed {
            gan.train_step(&mut tape, 1, step, || Ok(real.clone().into()))
                .unwrap()
        } else if let Some(g) = graph.as_mut() {
            g.step(&mut gan, real, step).unwrap()
        } else {
            let (g, m) = StepGraph::capture(&mut gan, &mut tape, real, step).unwrap();
            graph = Some(g);
            m
        };
        metrics.push(m);
        samples.push(bits(&gan.g.generate(&z).unwrap()));
    }
    Run {
        metrics,
        samples,
        state: gan.state_tensors().into_iter().map(bits).collect(),
        conversions: conversions(&be, "bf16") - before.0,
        values: be.relayout_values().unwrap() - before.1,
    }
}

fn assert_same(got: &Run, want: &Run, what: &str) {
    for (i, (g, w)) in got.metrics.iter().zip(&want.metrics).enumerate() {
        let (g, w) = (format!("{g:?}"), format!("{w:?}"));
        assert_eq!(g, w, "{what}: metrics of step {}", i + 1);
    }
    for (i, (g, w)) in got.samples.iter().zip(&want.samples).enumerate() {
        assert!(g == w, "{what}: the sample after step {} differs", i + 1);
    }
    assert_eq!(got.state.len(), want.state.len());
    for (i, (g, w)) in got.state.iter().zip(&want.state).enumerate() {
        assert!(g == w, "{what}: state tensor {i} differs");
    }
}

#[test]
fn training_with_kept_copies_is_training_without_bit_for_bit_eager_and_graphed() {
    let without = train(false, false);
    let with = train(true, false);
    assert_same(&with, &without, "eager, copies kept");
    println!(
        "over {STEPS} steps and their samples, copies kept / not: {} / {} conversion launches, {} / {} values",
        with.conversions, without.conversions, with.values, without.values
    );
    assert!(
        without.conversions > 0,
        "the model's convolutions ran channels-last"
    );
    assert!(
        with.conversions <= without.conversions && with.values < without.values,
        "kept copies saved no conversion"
    );
    let graphed = train(true, true);
    assert_same(&graphed, &without, "graphed, copies kept");
}
