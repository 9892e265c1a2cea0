//! CUDA graph capture on the emulated CUDA backend: the runtime records without executing and replays what it
//! recorded; the allocator's private pool keeps a graph's memory to itself; and a training run whose steps are
//! replays of one captured step (`train --cuda-graph`) is the eager run, bit for bit.
//! GAN_ENGINE_TEST_DEVICE=cuda runs them on GPU 0 instead (scripts/gpu_run.sh sets it).
#![cfg(feature = "emulation")]

use gan_engine::backend::Backend;
use gan_engine::cuda::{cuda_backend, emulated_backend, CudaBackend};
mod common;
use common::model::tiny_dcgan;
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::gan::StepMetrics;
use gan_engine::train::graph::StepGraph;
use gan_engine::train::Gan;
use gan_engine::{Device, Tape, Tensor};

fn be() -> std::sync::Arc<CudaBackend> {
    match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            cuda_backend(0).expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open")
        }
        _ => emulated_backend().expect("the emulated CUDA backend must open"),
    }
}

#[test]
fn a_capture_records_without_running_and_each_replay_runs_it_again() {
    let be = be();
    let x = be.from_host(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]).unwrap();
    let mut y = be.from_host(&[0.0; 5], &[5]).unwrap();
    let rt = be.runtime();
    rt.begin_capture().unwrap();
    // y = 2·y + 1, then y += x: recorded, not run.
    be.affine_assign(&mut y, 2.0, 1.0).unwrap();
    be.add_assign(&mut y, &x).unwrap();
    // What a graph cannot hold is refused, and the capture goes on.
    let mut host = [0u8; 4];
    assert!(rt.dtoh(be.ptr(&y).unwrap(), &mut host).is_err());
    assert!(rt.htod(be.ptr(&y).unwrap(), &host).is_err());
    assert!(rt.synchronize().is_err());
    assert!(rt.begin_capture().is_err(), "no nested capture");
    let graph = rt.end_capture().unwrap();
    assert_eq!(graph.launches(), 2);
    assert_eq!(
        y.to_vec().unwrap(),
        vec![0.0; 5],
        "nothing ran while capturing"
    );
    graph.replay().unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![2.0, 3.0, 4.0, 5.0, 6.0]);
    graph.replay().unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![6.0, 9.0, 12.0, 15.0, 18.0]);
    assert!(rt.end_capture().is_err(), "no capture in progress");
}

#[test]
fn a_private_pool_keeps_its_blocks_until_retired() {
    let be = be();
    let alloc = be.allocator();
    let pool = alloc.open_pool().unwrap();
    assert!(alloc.open_pool().is_err(), "one pool at a time");
    let a = be.zeros(&[1000]).unwrap();
    let pa = be.ptr(&a).unwrap();
    drop(a);
    // Freed inside the pool, reused inside it.
    let b = be.zeros(&[1000]).unwrap();
    assert_eq!(be.ptr(&b).unwrap(), pa);
    drop(b);
    alloc.close_pool();
    assert_eq!(pool.free_blocks(), 1);
    // Outside the pool the block is not handed out...
    let c = be.zeros(&[1000]).unwrap();
    assert_ne!(be.ptr(&c).unwrap(), pa);
    drop(c);
    // ... until the pool is retired.
    alloc.retire_pool(&pool);
    assert_eq!(pool.free_blocks(), 0);
    let misses = be.alloc_stats().misses;
    let d = be.zeros(&[1000]).unwrap();
    let e = be.zeros(&[1000]).unwrap();
    assert_eq!(
        be.alloc_stats().misses,
        misses,
        "both served from the cache"
    );
    assert!([be.ptr(&d).unwrap(), be.ptr(&e).unwrap()].contains(&pa));
}

fn gan_on(be: &std::sync::Arc<CudaBackend>, loss: LossKind) -> Gan {
    let a = AdamSettings::DCGAN;
    Gan::new(&tiny_dcgan(), &a, &a, loss, 1, &be.device()).unwrap()
}

fn batches(n: usize) -> Vec<Tensor> {
    let mut rng = RngStream::new(2);
    (0..n)
        .map(|_| {
            rng.uniform(&[3, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
                .unwrap()
        })
        .collect()
}

/// Every tensor of the training state, as bits, named by its place in [`Gan::state_tensors`].
fn state(gan: &Gan) -> Vec<(String, Vec<u32>)> {
    gan.state_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("state tensor {i}"), common::bits(t)))
        .collect()
}

fn same_metrics(a: &StepMetrics, b: &StepMetrics) -> bool {
    [a.loss_d, a.loss_g, a.d_x, a.d_g_z1, a.d_g_z2]
        .iter()
        .zip([b.loss_d, b.loss_g, b.d_x, b.d_g_z1, b.d_g_z2])
        .all(|(x, y)| x.to_bits() == y.to_bits())
        && a.step == b.step
        && a.images == b.images
}

/// `steps` iterations eager and graphed (the first graphed one is the capture's eager warm-up), starting after
/// `done` earlier steps (the optimizers' bias corrections at that count); the runs must agree bit for bit.
fn graphed_equals_eager(loss: LossKind, done: u64, steps: usize) {
    let be = be();
    let data = batches(steps);
    let mut eager = gan_on(&be, loss);
    let mut graphed = gan_on(&be, loss);
    for gan in [&mut eager, &mut graphed] {
        gan.opt_g.set_host_step_count(done);
        gan.opt_d.set_host_step_count(done);
    }
    let mut tape = Tape::new();
    let mut want = Vec::new();
    for (i, real) in data.iter().enumerate() {
        let real = real.clone();
        want.push(
            eager
                .train_step(&mut tape, 1, i as u64 + 1, || Ok(real.clone().into()))
                .unwrap(),
        );
    }
    let (mut graph, first) = StepGraph::capture(&mut graphed, &mut tape, &data[0], 1).unwrap();
    assert!(graph.launches() > 50, "{} launches", graph.launches());
    let mut got = vec![first];
    for (i, real) in data.iter().enumerate().skip(1) {
        got.push(graph.step(&mut graphed, real, i as u64 + 1).unwrap());
    }
    for (g, w) in got.iter().zip(&want) {
        assert!(same_metrics(g, w), "{loss:?} from {done}: {g:?} vs {w:?}");
    }
    assert_eq!(graphed.opt_g.step_count(), done + steps as u64);
    assert_eq!(graphed.opt_d.step_count(), eager.opt_d.step_count());
    for ((name, g), (_, w)) in state(&graphed).iter().zip(state(&eager)) {
        assert!(
            *g == w,
            "{loss:?} from {done}: {name} differs after {steps} steps"
        );
    }
}

#[test]
fn graphed_training_is_eager_training_bit_for_bit() {
    graphed_equals_eager(LossKind::Ns, 0, 4);
}

#[test]
fn graphed_training_matches_at_a_large_step_count_and_with_another_loss() {
    graphed_equals_eager(LossKind::Hinge, 99_990, 3);
}

#[test]
fn a_capture_refuses_what_it_cannot_replay() {
    let be = be();
    let data = batches(2);
    let mut tape = Tape::new();
    // Not on the CPU.
    let a = AdamSettings::DCGAN;
    let mut cpu = Gan::new(&tiny_dcgan(), &a, &a, LossKind::Ns, 1, &Device::Cpu).unwrap();
    let err = StepGraph::capture(&mut cpu, &mut tape, &data[0], 1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("CUDA"), "{err}");
    // A batch of another size than the captured one.
    let mut gan = gan_on(&be, LossKind::Ns);
    let (mut graph, _) = StepGraph::capture(&mut gan, &mut tape, &data[0], 1).unwrap();
    let small = data[1].to_vec().unwrap()[..2 * 28 * 28].to_vec();
    let small = Tensor::from_vec(small, &[2, 1, 28, 28], &Device::Cpu).unwrap();
    let err = graph.step(&mut gan, &small, 2).err().unwrap();
    assert!(err.to_string().contains("captured size"), "{err}");
    // Training state replaced behind the graph's back.
    let w = gan.g.store.values()[0].clone();
    gan.g.store.values_mut()[0] = be.from_host(&w.to_vec().unwrap(), w.shape()).unwrap();
    let err = graph.step(&mut gan, &data[1], 2).err().unwrap();
    assert!(err.to_string().contains("replaced"), "{err}");
}
