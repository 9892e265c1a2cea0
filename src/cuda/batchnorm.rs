//! Batch-norm launch code for `kernels/batchnorm.cu`: training forward (statistics, running-stat update,
//! normalisation), eval forward, backward. Works on [N, C, H, W] and on [N, C] (H·W = 1).
//!
//! A channel's M = N·H·W elements are covered by S blocks of `chunk` elements each (grid = (C, S)). In training,
//! the forward's statistics come in parts: one per chunk from `bn_train_parts_f32`, or one per output tile from
//! the convolution that wrote x ([`batch_norm_train_from_parts`]); every block of the normalising pass merges
//! its channel's parts itself. The backward's last block of a channel merges its S partials in order (one
//! arrival counter per channel, from [`CudaBackend::arrival_counters`]). S and the parts depend only on the
//! shape, so the reduction order, and every bit of the result, is the same on every run, GPU or emulation. Two
//! launches each way, forward and backward, and one forward from a convolution's parts.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::conv::reduce_cfg;
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::backend::{
    check_batch_counter, Activation, BatchNormAffine, BatchNormGrads, BatchNormOut, BatchNormSaved,
    RunningStats, RunningStatsMut,
};
use crate::tensor::Tensor;

const THREADS: u32 = 256;
/// Blocks the reduction pass should reach (about four per SM of a 132-SM GPU).
const TARGET_BLOCKS: usize = 512;
/// Fewest elements per chunk (8 per thread): smaller chunks would spend more on partials than on data.
const MIN_CHUNK: usize = 2048;

/// A batch-norm input seen as [N, C, HW].
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    hw: usize,
}

impl Geom {
    fn new(what: &str, x: &Tensor) -> Result<Geom> {
        let (n, c, hw) = match *x.shape() {
            [n, c] => (n, c, 1),
            [n, c, h, w] => (n, c, h * w),
            _ => anyhow::bail!(
                "{what}: expected x of shape [N, C] or [N, C, H, W], got {:?}",
                x.shape()
            ),
        };
        ensure!(c > 0, "{what}: x {:?} has no channels", x.shape());
        n_i32(x.numel(), what)?;
        Ok(Geom { n, c, hw })
    }

    /// Elements per channel.
    fn m(&self) -> usize {
        self.n * self.hw
    }

    fn total(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// Checks that each named per-channel tensor has shape [C].
    fn check_channels(&self, what: &str, ts: &[(&str, &Tensor)]) -> Result<()> {
        for (name, t) in ts {
            ensure!(
                t.shape() == [self.c],
                "{what}: {name} has shape {:?}, expected [{}] (one value per channel)",
                t.shape(),
                self.c
            );
        }
        Ok(())
    }

    fn chunks(&self) -> (usize, usize) {
        channel_chunks(self.c, self.m())
    }

    fn reduce_grid(&self, s: usize) -> LaunchCfg {
        channel_grid(self.c, s)
    }
}

/// (S, chunk) for a per-channel pass over `c` channels of `m` values each: S chunks of `chunk` values (the last
/// may be shorter, none empty) per channel.
pub(crate) fn channel_chunks(c: usize, m: usize) -> (usize, usize) {
    let m = m.max(1);
    let by_size = m.div_ceil(MIN_CHUNK);
    let by_fill = TARGET_BLOCKS.div_ceil(c.max(1));
    let s = by_size.min(by_fill).clamp(1, 65535);
    let chunk = m.div_ceil(s);
    (m.div_ceil(chunk), chunk)
}

/// The launch of a per-channel pass: grid = (C, S) blocks of 256 threads.
pub(crate) fn channel_grid(c: usize, s: usize) -> LaunchCfg {
    LaunchCfg {
        grid: (c as u32, s as u32, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

fn ptr(t: &Tensor, be: &CudaBackend) -> Result<KernelArg<'static>> {
    Ok(KernelArg::Ptr(be.ptr(t)?))
}

/// The fused activation as the kernels' (ActKind, slope) arguments (kernels/act.cuh).
pub(super) fn act_args(act: Option<Activation>) -> Result<[KernelArg<'static>; 2]> {
    if let Some(a) = act {
        a.check()?;
    }
    let (kind, slope) = match act {
        None => (0, 0.0),
        Some(Activation::Relu) => (1, 0.0),
        Some(Activation::LeakyRelu(s)) => (2, s),
        Some(Activation::Tanh) => (3, 0.0),
        Some(Activation::Sigmoid) => (4, 0.0),
    };
    Ok([KernelArg::I32(kind), KernelArg::F32(slope)])
}

pub fn batch_norm_train(
    be: &CudaBackend,
    x: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStatsMut<'_>,
    act: Option<Activation>,
) -> Result<BatchNormOut> {
    let (g, act) = check_train("batch_norm_train", x, &affine, &running, act)?;
    let (s, chunk) = g.chunks();
    let parts = be.alloc(&[g.c, s, 3])?;
    let i = |v: usize| KernelArg::I32(v as i32);
    be.launch(
        "bn_train_parts_f32",
        g.reduce_grid(s),
        &[
            ptr(x, be)?,
            ptr(&parts, be)?,
            i(g.n),
            i(g.c),
            i(g.hw),
            i(chunk),
        ],
    )?;
    normalise(be, x, &g, &parts, affine, running, act)
}

/// [`batch_norm_train`] of an x whose statistics the kernel that wrote it gathered in parts ([C, T, 3]:
/// count, mean and sum of squared deviations of each part; kernels/tile_stats.cuh): one launch, no pass over x
/// for its statistics.
pub fn batch_norm_train_from_parts(
    be: &CudaBackend,
    x: &Tensor,
    parts: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStatsMut<'_>,
    act: Option<Activation>,
) -> Result<BatchNormOut> {
    let what = "batch_norm_train_from_parts";
    let (g, act) = check_train(what, x, &affine, &running, act)?;
    ensure!(
        matches!(*parts.shape(), [c, t, 3] if c == g.c && t > 0),
        "{what}: statistics parts have shape {:?}, expected [{}, T, 3]",
        parts.shape(),
        g.c
    );
    normalise(be, x, &g, parts, affine, running, act)
}

/// The argument checks of a training-mode batch norm, before anything is allocated or updated; returns the
/// geometry and the activation's kernel arguments.
fn check_train(
    what: &str,
    x: &Tensor,
    affine: &BatchNormAffine<'_>,
    running: &RunningStatsMut<'_>,
    act: Option<Activation>,
) -> Result<(Geom, [KernelArg<'static>; 2])> {
    let act = act_args(act)?;
    let g = Geom::new(what, x)?;
    g.check_channels(
        what,
        &[
            ("gamma", affine.gamma),
            ("beta", affine.beta),
            ("running_mean", running.mean),
            ("running_var", running.var),
        ],
    )?;
    // The running variance is unbiased (divides by M - 1), as in PyTorch, which refuses M = 1 too.
    ensure!(
        g.m() >= 2,
        "{what}: x {:?} has {} value(s) per channel; training needs at least 2",
        x.shape(),
        g.m()
    );
    if let Some(b) = running.batches.as_deref() {
        check_batch_counter(what, b)?;
    }
    Ok((g, act))
}

/// bn_train_fwd_f32: merges the parts, saves mean and invstd, updates the running stats and writes y; `act` as
/// [`check_train`] returned it.
fn normalise(
    be: &CudaBackend,
    x: &Tensor,
    g: &Geom,
    parts: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStatsMut<'_>,
    [act_kind, slope]: [KernelArg<'static>; 2],
) -> Result<BatchNormOut> {
    let BatchNormAffine { gamma, beta, eps } = affine;
    let RunningStatsMut {
        mean: running_mean,
        var: running_var,
        momentum,
        batches,
    } = running;
    let (s, chunk) = g.chunks();
    let mean = be.alloc(&[g.c])?;
    let invstd = be.alloc(&[g.c])?;
    let y = be.alloc(x.shape())?;
    let i = |v: usize| KernelArg::I32(v as i32);
    let nb = batches.map(|b| be.ptr_mut(b)).transpose()?.unwrap_or(0);
    be.launch(
        "bn_train_fwd_f32",
        g.reduce_grid(s),
        &[
            ptr(x, be)?,
            ptr(parts, be)?,
            i(parts.shape()[1]),
            ptr(&mean, be)?,
            ptr(&invstd, be)?,
            KernelArg::Ptr(be.ptr_mut(running_mean)?),
            KernelArg::Ptr(be.ptr_mut(running_var)?),
            KernelArg::Ptr(nb),
            ptr(gamma, be)?,
            ptr(beta, be)?,
            ptr(&y, be)?,
            i(g.n),
            i(g.c),
            i(g.hw),
            i(chunk),
            KernelArg::F32(momentum),
            KernelArg::F32(eps),
            act_kind,
            slope,
        ],
    )?;
    Ok(BatchNormOut { y, mean, invstd })
}

pub fn batch_norm_eval(
    be: &CudaBackend,
    x: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStats<'_>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let BatchNormAffine { gamma, beta, eps } = affine;
    let RunningStats {
        mean: running_mean,
        var: running_var,
    } = running;
    let what = "batch_norm_eval";
    let [act_kind, slope] = act_args(act)?;
    let g = Geom::new(what, x)?;
    g.check_channels(
        what,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let y = be.alloc(x.shape())?;
    if g.total() == 0 {
        return Ok(y);
    }
    let i = |v: usize| KernelArg::I32(v as i32);
    be.launch(
        "bn_eval_fwd_f32",
        reduce_cfg(g.total()),
        &[
            ptr(x, be)?,
            ptr(gamma, be)?,
            ptr(beta, be)?,
            ptr(running_mean, be)?,
            ptr(running_var, be)?,
            ptr(&y, be)?,
            i(g.c),
            i(g.hw),
            i(g.total()),
            KernelArg::F32(eps),
            act_kind,
            slope,
        ],
    )?;
    Ok(y)
}

pub fn batch_norm_backward(
    be: &CudaBackend,
    saved: BatchNormSaved<'_>,
    dy: &Tensor,
) -> Result<BatchNormGrads> {
    let BatchNormSaved {
        x,
        gamma,
        mean,
        invstd,
        out_act,
    } = saved;
    let what = "batch_norm_backward";
    let g = Geom::new(what, x)?;
    ensure!(
        dy.shape() == x.shape(),
        "{what}: dy has shape {:?} but x has {:?}",
        dy.shape(),
        x.shape()
    );
    // With an activation, the kernels recompute its input from x and beta rather than read its output y (any
    // valid address stands in for beta without one). y is checked all the same: it is what the op saved.
    let beta = match out_act {
        Some(f) => {
            ensure!(
                f.y.shape() == x.shape(),
                "{what}: the fused output has shape {:?} but x has {:?}",
                f.y.shape(),
                x.shape()
            );
            g.check_channels(what, &[("beta", f.beta)])?;
            f.beta
        }
        None => gamma,
    };
    let [act_kind, slope] = act_args(out_act.map(|f| f.act))?;
    g.check_channels(
        what,
        &[("gamma", gamma), ("mean", mean), ("invstd", invstd)],
    )?;
    let dx = be.alloc(x.shape())?;
    if g.m() == 0 {
        // No elements: every sum is empty.
        return Ok(BatchNormGrads {
            dx,
            dgamma: be.alloc_zeros(&[g.c])?,
            dbeta: be.alloc_zeros(&[g.c])?,
        });
    }
    let (s, chunk) = g.chunks();
    let part = be.alloc(&[g.c, s, 2])?;
    let dgamma = be.alloc(&[g.c])?;
    let dbeta = be.alloc(&[g.c])?;
    let i = |v: usize| KernelArg::I32(v as i32);

    be.launch(
        "bn_bwd_reduce_f32",
        g.reduce_grid(s),
        &[
            ptr(x, be)?,
            ptr(dy, be)?,
            ptr(mean, be)?,
            ptr(invstd, be)?,
            ptr(gamma, be)?,
            ptr(beta, be)?,
            ptr(&part, be)?,
            ptr(&dgamma, be)?,
            ptr(&dbeta, be)?,
            KernelArg::Ptr(be.arrival_counters(g.c)?),
            i(g.n),
            i(g.c),
            i(g.hw),
            i(chunk),
            act_kind,
            slope,
        ],
    )?;
    be.launch(
        "bn_bwd_data_f32",
        reduce_cfg(g.total()),
        &[
            ptr(x, be)?,
            ptr(dy, be)?,
            ptr(mean, be)?,
            ptr(invstd, be)?,
            ptr(gamma, be)?,
            ptr(beta, be)?,
            ptr(&dgamma, be)?,
            ptr(&dbeta, be)?,
            ptr(&dx, be)?,
            i(g.c),
            i(g.hw),
            i(g.total()),
            KernelArg::F32(1.0 / g.m() as f32),
            act_kind,
            slope,
        ],
    )?;
    Ok(BatchNormGrads { dx, dgamma, dbeta })
}
