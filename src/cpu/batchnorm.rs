//! Batch normalisation over [N, C, H, W] (BatchNorm2d) or [N, C] (BatchNorm1d), PyTorch semantics.
//!
//! Channel c owns the N runs `x[n, c, ..]` of `inner` = H·W contiguous values (inner = 1 for 2-D). The
//! per-channel reductions run one rayon task per channel; the elementwise passes run one task per
//! (sample, channel) run, which is contiguous in memory. Reductions accumulate in f64 (two passes for the
//! variance) so the statistics of a 128×64×32×32 activation are exact to f32 precision.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

use super::activation;
use super::elementwise::{par_map_runs, par_zip_map_runs};
use super::{data, data_mut, tensor};
use crate::backend::{
    check_batch_counter, Activation, BatchNormAffine, BatchNormGrads, BatchNormOut, BatchNormSaved,
    RunningStats, RunningStatsMut,
};
use crate::tensor::Tensor;

/// Layout of a batch-norm input: (N, C, inner).
fn layout(x: &Tensor) -> Result<(usize, usize, usize)> {
    let (n, c, inner) = match x.shape() {
        &[n, c] => (n, c, 1),
        &[n, c, h, w] => (n, c, h * w),
        s => bail!("batch norm: expected [N, C, H, W] or [N, C] input, got shape {s:?}"),
    };
    ensure!(
        n * inner > 0,
        "batch norm: input {:?} has no values per channel",
        x.shape()
    );
    Ok((n, c, inner))
}

/// Every per-channel tensor must be [C].
fn check_channel(x: &Tensor, c: usize, what: &str, t: &Tensor) -> Result<()> {
    ensure!(
        t.shape() == [c],
        "batch norm: {what} has shape {:?}, expected [{c}] for input {:?}",
        t.shape(),
        x.shape()
    );
    Ok(())
}

/// Σ f(a[i], b[i]) over one contiguous run, accumulated in f64 overall but in 8 f32 lanes within blocks of
/// 64 values: the f32 lanes let the loop vectorise (a plain f64 running sum is one long dependency chain and
/// ran at a third of libtorch's speed), and each lane adds only 8 values before it is flushed into f64, so
/// the result stays within a few f32 ulps of the f64 sum.
fn run_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    const BLOCK: usize = 64;
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut lanes = [0.0f32; 8];
        let (a8, b8) = (ab.chunks_exact(8), bb.chunks_exact(8));
        let (ar, br) = (a8.remainder(), b8.remainder());
        for (x, y) in a8.zip(b8) {
            for l in 0..8 {
                lanes[l] += f(x[l], y[l]);
            }
        }
        for (&x, &y) in ar.iter().zip(br) {
            lanes[0] += f(x, y);
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

/// Σ f(a[i], b[i]) over channel `ch` of two same-shaped [N, C, inner] buffers.
fn channel_sum2(
    (n, c, inner): (usize, usize, usize),
    ch: usize,
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Copy,
) -> f64 {
    (0..n)
        .map(|s| {
            let r = (s * c + ch) * inner..(s * c + ch + 1) * inner;
            run_sum2(&a[r.clone()], &b[r], f)
        })
        .sum()
}

/// y = act((x - center[c])·scale[c] + shift[c]), one task per contiguous (sample, channel) run. Subtracting
/// the centre first (rather than folding it into the shift) keeps precision when |mean| ≫ std.
fn normalize_with(
    xd: &[f32],
    (_, c, inner): (usize, usize, usize),
    [center, scale, shift]: [&[f32]; 3],
    act: impl Fn(f32) -> f32 + Copy + Send + Sync,
) -> Vec<f32> {
    par_map_runs(xd, inner, |run| {
        let ch = run % c;
        let (m, s, t) = (center[ch], scale[ch], shift[ch]);
        move |x| act((x - m) * s + t)
    })
}

/// [`normalize_with`] the activation, if any, in the same pass: one monomorphised loop per kind (a `match`
/// per element would keep the loop from vectorising).
fn normalize(
    xd: &[f32],
    dims: (usize, usize, usize),
    coefs: [&[f32]; 3],
    act: Option<Activation>,
) -> Result<Vec<f32>> {
    if let Some(a) = act {
        a.check()?;
    }
    Ok(match act {
        None => normalize_with(xd, dims, coefs, |v| v),
        Some(Activation::Relu) => normalize_with(xd, dims, coefs, activation::relu),
        Some(Activation::LeakyRelu(s)) => {
            normalize_with(xd, dims, coefs, activation::leaky_relu(s))
        }
        Some(Activation::Tanh) => normalize_with(xd, dims, coefs, f32::tanh),
        Some(Activation::Sigmoid) => normalize_with(xd, dims, coefs, activation::sigmoid),
    })
}

pub fn batch_norm_train(
    x: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStatsMut<'_>,
    act: Option<Activation>,
) -> Result<BatchNormOut> {
    let (g, b, eps) = (affine.gamma, affine.beta, affine.eps);
    let RunningStatsMut {
        mean: rm,
        var: rv,
        momentum,
        batches,
    } = running;
    let dims @ (n, c, inner) = layout(x)?;
    if let Some(b) = &batches {
        check_batch_counter("batch norm (training)", b)?;
    }
    for (what, t) in [
        ("gamma", g),
        ("beta", b),
        ("running_mean", &*rm),
        ("running_var", &*rv),
    ] {
        check_channel(x, c, what, t)?;
    }
    let m = n * inner;
    // The running variance uses the unbiased estimate m/(m-1), undefined for a single value (PyTorch refuses
    // this too).
    ensure!(
        m > 1,
        "batch norm (training): need more than one value per channel, got input {:?}",
        x.shape()
    );
    let (xd, gd, bd) = (data(x)?, data(g)?, data(b)?);
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mean = channel_sum2(dims, ch, xd, xd, |x, _| x) / m as f64;
            // Two passes: Σ(x - mean)² does not cancel catastrophically the way Σx² - m·mean² would.
            let mf = mean as f32;
            let var = channel_sum2(dims, ch, xd, xd, |x, _| (x - mf) * (x - mf)) / m as f64;
            (mean, var)
        })
        .collect();
    let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
    let invstd: Vec<f32> = stats
        .iter()
        .map(|s| (1.0 / (s.1 + eps as f64).sqrt()) as f32)
        .collect();
    // y = act((x - mean)·(invstd·γ) + β)
    let scale: Vec<f32> = (0..c).map(|ch| gd[ch] * invstd[ch]).collect();
    let y = normalize(xd, dims, [&mean, &scale, bd], act)?;

    let unbias = m as f64 / (m - 1) as f64;
    let mo = momentum as f64;
    for (r, s) in data_mut(rm)?.iter_mut().zip(&stats) {
        *r = ((1.0 - mo) * *r as f64 + mo * s.0) as f32;
    }
    for (r, s) in data_mut(rv)?.iter_mut().zip(&stats) {
        *r = ((1.0 - mo) * *r as f64 + mo * s.1 * unbias) as f32;
    }
    if let Some(b) = batches {
        data_mut(b)?[0] += 1.0;
    }
    Ok(BatchNormOut {
        y: tensor(y, x.shape()),
        mean: tensor(mean, &[c]),
        invstd: tensor(invstd, &[c]),
    })
}

pub fn batch_norm_eval(
    x: &Tensor,
    affine: BatchNormAffine<'_>,
    running: RunningStats<'_>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let (g, b, eps) = (affine.gamma, affine.beta, affine.eps);
    let RunningStats { mean: rm, var: rv } = running;
    let dims @ (_, c, _) = layout(x)?;
    for (what, t) in [
        ("gamma", g),
        ("beta", b),
        ("running_mean", rm),
        ("running_var", rv),
    ] {
        check_channel(x, c, what, t)?;
    }
    let (gd, bd, md, vd) = (data(g)?, data(b)?, data(rm)?, data(rv)?);
    let scale: Vec<f32> = (0..c)
        .map(|ch| (gd[ch] as f64 / (vd[ch] as f64 + eps as f64).sqrt()) as f32)
        .collect();
    let y = normalize(data(x)?, dims, [md, &scale, bd], act)?;
    Ok(tensor(y, x.shape()))
}

/// With x̂ = (x - mean)·invstd and m values per channel, the batch-statistics gradient is
///   dβ = Σ dy,  dγ = Σ dy·x̂,  dx = γ·invstd/m · (m·dy - dβ - x̂·dγ)
/// (the last two terms are the gradient flowing through the batch mean and variance).
///
/// With a fused activation (`out_act`: the op's output and its activation) dy is first taken back through the
/// activation, in a pass of its own: on the CPU that pass costs what the separate activation backward did.
pub fn batch_norm_backward(saved: BatchNormSaved<'_>, dy: &Tensor) -> Result<BatchNormGrads> {
    let BatchNormSaved {
        x,
        gamma: g,
        mean,
        invstd,
        out_act,
    } = saved;
    if let Some(f) = out_act {
        let dz = activation::activation_backward(f.y, dy, f.act)?;
        let plain = BatchNormSaved {
            out_act: None,
            ..saved
        };
        return batch_norm_backward(plain, &dz);
    }
    let dims @ (n, c, inner) = layout(x)?;
    ensure!(
        dy.shape() == x.shape(),
        "batch norm backward: dy shape {:?} does not match x {:?}",
        dy.shape(),
        x.shape()
    );
    for (what, t) in [("gamma", g), ("mean", mean), ("invstd", invstd)] {
        check_channel(x, c, what, t)?;
    }
    let (xd, gd, gam, md, sd) = (data(x)?, data(dy)?, data(g)?, data(mean)?, data(invstd)?);
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mu = md[ch];
            let dbeta = channel_sum2(dims, ch, gd, gd, |g, _| g);
            let dgamma = channel_sum2(dims, ch, gd, xd, |g, x| g * (x - mu)) * sd[ch] as f64;
            (dbeta, dgamma)
        })
        .collect();
    let m = (n * inner) as f32;
    let dx = par_zip_map_runs(xd, gd, inner, |run| {
        let ch = run % c;
        let (mu, is) = (md[ch], sd[ch]);
        let k = gam[ch] * is / m;
        let (db, dg) = (sums[ch].0 as f32, sums[ch].1 as f32);
        move |x, g| k * (m * g - db - (x - mu) * is * dg)
    });
    Ok(BatchNormGrads {
        dx: tensor(dx, x.shape()),
        dgamma: tensor(sums.iter().map(|s| s.1 as f32).collect(), &[c]),
        dbeta: tensor(sums.iter().map(|s| s.0 as f32).collect(), &[c]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_tensor;

    /// Channel `ch`'s values of an [N, C, inner] buffer.
    fn channel(v: &[f32], (n, c, inner): (usize, usize, usize), ch: usize) -> Vec<f64> {
        (0..n)
            .flat_map(|b| (0..inner).map(move |i| (b * c + ch) * inner + i))
            .map(|i| v[i] as f64)
            .collect()
    }

    #[test]
    fn train_forward_normalises_and_updates_running_stats() {
        let dims = (3, 5, 21);
        let x = test_tensor(&[3, 5, 3, 7], 1);
        let x = x.backend().affine(&x, 2.0, 0.5).unwrap();
        let g = test_tensor(&[5], 2);
        let b = test_tensor(&[5], 3);
        let mut rm = tensor(vec![0.1, -0.2, 0.3, 0.0, 1.0], &[5]);
        let mut rv = tensor(vec![1.0, 2.0, 0.5, 1.0, 3.0], &[5]);
        let (rm0, rv0) = (rm.to_vec().unwrap(), rv.to_vec().unwrap());
        let out = batch_norm_train(
            &x,
            BatchNormAffine::new(&g, &b, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .unwrap();
        let (xv, yv) = (x.to_vec().unwrap(), out.y.to_vec().unwrap());
        let (gv, bv) = (g.to_vec().unwrap(), b.to_vec().unwrap());
        let m = 63.0;
        for ch in 0..5 {
            let xs = channel(&xv, dims, ch);
            let mean = xs.iter().sum::<f64>() / m;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
            assert!((out.mean.to_vec().unwrap()[ch] as f64 - mean).abs() < 1e-6);
            let is = 1.0 / (var + 1e-5).sqrt();
            assert!((out.invstd.to_vec().unwrap()[ch] as f64 - is).abs() < 1e-5);
            for (xi, yi) in xs.iter().zip(channel(&yv, dims, ch)) {
                let want = (xi - mean) * is * gv[ch] as f64 + bv[ch] as f64;
                assert!((yi - want).abs() < 1e-5);
            }
            // PyTorch: running = 0.9 running + 0.1 batch, with the unbiased variance for running_var.
            let want_rm = 0.9 * rm0[ch] as f64 + 0.1 * mean;
            let want_rv = 0.9 * rv0[ch] as f64 + 0.1 * var * m / (m - 1.0);
            assert!((rm.to_vec().unwrap()[ch] as f64 - want_rm).abs() < 1e-6);
            assert!((rv.to_vec().unwrap()[ch] as f64 - want_rv).abs() < 1e-6);
        }
    }

    #[test]
    fn running_stats_hand_computed_1d() {
        // Channel 0 holds 1, 2, 3, 6: mean 3, biased var 3.5, unbiased var 14/3.
        let x = tensor(vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 6.0, 0.0], &[4, 2]);
        let ones = tensor(vec![1.0; 2], &[2]);
        let zeros = tensor(vec![0.0; 2], &[2]);
        let mut rm = zeros.clone();
        let mut rv = ones.clone();
        let out = batch_norm_train(
            &x,
            BatchNormAffine::new(&ones, &zeros, 0.0),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .unwrap();
        assert_eq!(out.mean.to_vec().unwrap(), [3.0, 0.0]);
        let rmv = rm.to_vec().unwrap();
        let rvv = rv.to_vec().unwrap();
        assert!((rmv[0] - 0.3).abs() < 1e-7 && rmv[1] == 0.0);
        assert!((rvv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
        assert!((rvv[1] - 0.9).abs() < 1e-7);
        let y = out.y.to_vec().unwrap();
        assert!((y[0] as f64 - (-2.0 / 3.5f64.sqrt())).abs() < 1e-6);
        // A constant channel with eps = 0 has infinite invstd; with the default eps it maps to zero.
        let out = batch_norm_train(
            &x,
            BatchNormAffine::new(&ones, &zeros, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .unwrap();
        assert_eq!(out.y.to_vec().unwrap()[1], 0.0);
    }

    #[test]
    fn eval_forward_uses_running_stats() {
        let dims = (3, 5, 21);
        let x = test_tensor(&[3, 5, 3, 7], 4);
        let g = test_tensor(&[5], 5);
        let b = test_tensor(&[5], 6);
        let rm = test_tensor(&[5], 7);
        let rv = tensor(vec![0.5, 1.0, 2.0, 0.1, 4.0], &[5]);
        let y = batch_norm_eval(
            &x,
            BatchNormAffine::new(&g, &b, 1e-5),
            RunningStats::new(&rm, &rv),
            None,
        )
        .unwrap()
        .to_vec()
        .unwrap();
        let (xv, gv, bv, mv, vv) = (
            x.to_vec().unwrap(),
            g.to_vec().unwrap(),
            b.to_vec().unwrap(),
            rm.to_vec().unwrap(),
            rv.to_vec().unwrap(),
        );
        for ch in 0..5 {
            for (xi, yi) in channel(&xv, dims, ch).iter().zip(channel(&y, dims, ch)) {
                let want = (xi - mv[ch] as f64) / (vv[ch] as f64 + 1e-5).sqrt() * gv[ch] as f64
                    + bv[ch] as f64;
                assert!((yi - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn backward_sums_and_dx_properties() {
        let x = test_tensor(&[3, 5, 3, 7], 8);
        let g = test_tensor(&[5], 9);
        let b = test_tensor(&[5], 10);
        let dy = test_tensor(&[3, 5, 3, 7], 11);
        let mut rm = tensor(vec![0.0; 5], &[5]);
        let mut rv = tensor(vec![1.0; 5], &[5]);
        let out = batch_norm_train(
            &x,
            BatchNormAffine::new(&g, &b, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .unwrap();
        let gr = batch_norm_backward(BatchNormSaved::new(&x, &g, &out), &dy).unwrap();
        let dims = (3, 5, 21);
        let dyv = dy.to_vec().unwrap();
        let dx = gr.dx.to_vec().unwrap();
        for ch in 0..5 {
            let s: f64 = channel(&dyv, dims, ch).iter().sum();
            assert!((gr.dbeta.to_vec().unwrap()[ch] as f64 - s).abs() < 1e-5);
            // dx is orthogonal to the constant direction (the mean is removed), for every channel.
            let sdx: f64 = channel(&dx, dims, ch).iter().sum();
            assert!(sdx.abs() < 1e-4, "{sdx}");
        }
    }

    #[test]
    fn shape_errors() {
        let x = test_tensor(&[3, 5, 3, 7], 1);
        let c5 = test_tensor(&[5], 1);
        let c4 = test_tensor(&[4], 1);
        let (mut rm, mut rv) = (c5.clone(), c5.clone());
        let msg = batch_norm_train(
            &x,
            BatchNormAffine::new(&c4, &c5, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(msg.contains("[4]") && msg.contains("[3, 5, 3, 7]"), "{msg}");
        assert!(batch_norm_eval(
            &x,
            BatchNormAffine::new(&c5, &c5, 1e-5),
            RunningStats::new(&c4, &c5),
            None
        )
        .is_err());
        assert!(batch_norm_eval(
            &test_tensor(&[3, 5, 7], 1),
            BatchNormAffine::new(&c5, &c5, 1e-5),
            RunningStats::new(&c5, &c5),
            None
        )
        .is_err());
        let dy = test_tensor(&[3, 5, 3, 6], 1);
        assert!(batch_norm_backward(
            BatchNormSaved {
                x: &x,
                gamma: &c5,
                mean: &c5,
                invstd: &c5,
                out_act: None
            },
            &dy
        )
        .is_err());
        // One value per channel cannot give an unbiased variance.
        let x1 = test_tensor(&[1, 5], 1);
        assert!(batch_norm_train(
            &x1,
            BatchNormAffine::new(&c5, &c5, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None
        )
        .is_err());
    }
}
