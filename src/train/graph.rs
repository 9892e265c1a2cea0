//! One training iteration captured as a CUDA graph and replayed (`train --cuda-graph`).
//!
//! A DCGAN step is ~200 small kernel launches; on a GPU each costs a few microseconds of host time, which at
//! these sizes is a large part of the step. A graph records the step's launches once and replays them with one
//! call. A replay repeats everything exactly, so the step must look the same each time:
//!
//! - **Inputs at fixed addresses.** The real batch and z are copied into two buffers the graph reads; z is drawn
//!   from the same noise stream as an eager step, so a graphed run is the same run, bit for bit.
//! - **No per-step arguments.** Adam's bias corrections depend on the step; the optimizers count on the device
//!   ([`crate::optim::Adam::count_on_device`]).
//! - **Training state updated in place.** Weights, moments and batch-norm buffers keep their addresses (the
//!   tape releases its copies of the weights before the optimizer step). Checked before every replay.
//! - **Memory reserved.** Everything the captured step allocates comes from a private pool of the backend's
//!   allocator ([`GraphCapture::open_pool`]) that nothing else can use while the graph lives. An eager warm-up step
//!   (a real training step) fills the pool before the capture.
//! - **No reads inside.** The logged losses and D outputs stay on the device ([`Gan::deferred`]) and are
//!   read after each replay.
//!
//! The backend is reached through its [`GraphCapture`] capability, so this file names no backend. The emulation
//! runtime records and replays the same way (it executes nothing while capturing), so CI checks
//! that graphed training equals eager training bit for bit (tests/emu_graph.rs).

use anyhow::{bail, ensure, Context, Result};

use super::gan::{Gan, Latents, StepMetrics};
use crate::autograd::Tape;
use crate::backend::{DeviceGraph, GraphCapture, PoolHandle};
use crate::device::Device;
use crate::tensor::Tensor;

/// A captured training iteration (one D step, one G step) and what it reads and writes.
pub struct StepGraph {
    /// The private pool holding the step's temporaries; handed back to the allocator when the graph goes. First,
    /// so it drops first.
    _pool: PoolHandle,
    graph: Box<dyn DeviceGraph>,
    device: Device,
    real: Tensor,
    z: Tensor,
    /// errD, D(x) logits, D(G(z)) logits before D's update, errG, D(G(z)) logits after: written by each replay.
    logged: Vec<Tensor>,
    /// Device addresses of the training state at capture, in [`Gan::state_tensors`] order.
    state: Vec<u64>,
}

fn addresses(be: &dyn GraphCapture, gan: &Gan) -> Result<Vec<u64>> {
    gan.state_tensors()
        .into_iter()
        .map(|t| be.address(t))
        .collect()
}

/// Copies `src` (on the host or this device) into the device tensor `dst` of the same shape, in place whatever
/// shares `dst`: the graph reads that address.
fn copy_into(be: &dyn GraphCapture, dst: &Tensor, src: &Tensor, what: &str) -> Result<()> {
    ensure!(
        dst.shape() == src.shape(),
        "--cuda-graph: the {what} has shape {:?}, the captured step {:?} (every batch must have the captured size)",
        src.shape(),
        dst.shape()
    );
    be.copy_into(dst, src)
}

impl StepGraph {
    /// Runs iteration `step` eagerly on `real` (a real training step, whose metrics are returned) with the
    /// allocator's private pool open, then captures the same iteration as a graph for the next ones.
    pub fn capture(
        gan: &mut Gan,
        tape: &mut Tape,
        real: &Tensor,
        step: u64,
    ) -> Result<(StepGraph, StepMetrics)> {
        let device = gan.device.clone();
        let Some(be) = device.backend().graph_capture() else {
            bail!("--cuda-graph needs a CUDA device (--device cuda or emu)");
        };
        ensure!(
            gan.g.cfg.num_classes == 0,
            "--cuda-graph: conditional models are not supported (their labels are drawn on the host)"
        );
        ensure!(
            gan.scaler_d.is_none() && gan.scaler_g.is_none(),
            "--cuda-graph: fp16's loss scaling is not supported (it reads every step on the host whether a \
             gradient overflowed, to skip the step); use bf16, which needs no scaling"
        );
        gan.opt_g.count_on_device()?;
        gan.opt_d.count_on_device()?;
        let n = real.dims4("real batch")?[0];
        let inputs = (
            be.alloc_uninit(real.shape())?,
            be.alloc_uninit(&[n, gan.g.cfg.nz])?,
        );
        let pool = be.open_pool()?;
        let captured = (|| -> Result<(Box<dyn DeviceGraph>, Vec<Tensor>, StepMetrics)> {
            fill_inputs(be, gan, &inputs, real)?;
            let metrics = run_step(gan, tape, &inputs, step)?;
            // The capture: the same step recorded, not executed. The host counted a step the device did not
            // run; its counts go back afterwards.
            let counts = (gan.opt_g.step_count(), gan.opt_d.step_count());
            let copies = be.device_copies();
            gan.deferred = Some(Vec::new());
            be.begin_capture()?;
            let recorded = run_step(gan, tape, &inputs, step);
            let graph = be.end_capture();
            let logged = gan.deferred.take().unwrap_or_default();
            gan.opt_g.set_host_step_count(counts.0);
            gan.opt_d.set_host_step_count(counts.1);
            recorded.context("--cuda-graph: capturing the training step")?;
            let graph = graph?;
            ensure!(
                be.device_copies() == copies,
                "--cuda-graph: the captured step copied a shared tensor of the training state (copy-on-write), \
                 so a replay would not update it in place"
            );
            ensure!(
                logged.len() == 5,
                "internal: {} logged values",
                logged.len()
            );
            Ok((graph, logged, metrics))
        })();
        be.close_pool();
        // On an error the pool handle drops here, which retires the pool.
        let (graph, logged, metrics) = captured?;
        let state = addresses(be, gan)?;
        let (real, z) = inputs;
        Ok((
            StepGraph {
                _pool: pool,
                graph,
                device: device.clone(),
                real,
                z,
                logged,
                state,
            },
            metrics,
        ))
    }

    /// Iteration `step` on `real` by replaying the graph.
    pub fn step(&mut self, gan: &mut Gan, real: &Tensor, step: u64) -> Result<StepMetrics> {
        let be = self
            .device
            .backend()
            .graph_capture()
            .context("internal: a StepGraph on a backend without graph capture")?;
        ensure!(
            addresses(be, gan)? == self.state,
            "--cuda-graph: a tensor of the training state was replaced since the step was captured"
        );
        fill_inputs(be, gan, &(self.real.clone(), self.z.clone()), real)?;
        self.graph.replay()?;
        for opt in [&mut gan.opt_g, &mut gan.opt_d] {
            let done = opt.step_count();
            opt.set_host_step_count(done + 1);
        }
        let l = &self.logged;
        let [loss_d, d_x, d_g_z1] = gan.read_d_metrics([&l[0], &l[1], &l[2]], step)?;
        let [loss_g, d_g_z2] = gan.read_g_metrics([&l[3], &l[4]], step)?;
        Ok(StepMetrics {
            step,
            loss_d,
            loss_g,
            d_x,
            d_g_z1,
            d_g_z2,
            images: real.shape()[0],
        })
    }

    /// Kernel launches one replay makes.
    pub fn launches(&self) -> usize {
        self.graph.launches()
    }
}

/// The real batch and a fresh z (drawn as an eager step draws it) into the graph's input buffers.
fn fill_inputs(
    be: &dyn GraphCapture,
    gan: &mut Gan,
    (real_in, z_in): &(Tensor, Tensor),
    real: &Tensor,
) -> Result<()> {
    copy_into(be, real_in, real, "real batch")?;
    let shape = z_in.shape().to_vec();
    let z = gan.noise.normal(&shape, 0.0, 1.0, &gan.device)?;
    copy_into(be, z_in, &z, "latent batch")
}

/// One D step and one G step on the input buffers, as [`Gan::train_step`] with k = 1.
fn run_step(
    gan: &mut Gan,
    tape: &mut Tape,
    (real, z): &(Tensor, Tensor),
    step: u64,
) -> Result<StepMetrics> {
    let latents = Latents {
        z: z.clone(),
        labels: None,
    };
    let d = gan.d_step(tape, real.clone().into(), latents, step)?;
    let g = gan.g_step(tape, &d.fake, step);
    tape.clear();
    Ok(StepMetrics::of(step, &d, &g?, real.shape()[0]))
}
