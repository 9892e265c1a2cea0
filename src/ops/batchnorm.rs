//! Batch norm (2-D over NCHW, 1-D over [N, C]) on the tape.

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::backend::{
    Activation, BatchNormAffine, BatchNormOut, BatchNormSaved, FusedOut, RunningStats,
    RunningStatsMut,
};
use crate::ops::elementwise::filled_like;
use crate::tensor::Tensor;

/// Training mode uses batch statistics and updates the running stats in place; eval mode uses the running stats.
///
/// In eval mode the running stats are constants, so the op is a per-channel affine map
/// y = (x - μ_r)·s·γ + β with s = 1/sqrt(σ²_r + eps), and its gradients are
///   dx = dy·γ·s,  dγ = Σ dy·(x - μ_r)·s,  dβ = Σ dy.
/// The backend has no op for these as such, but both are existing batch-norm ops with the right arguments:
/// dx is `batch_norm_eval(dy, γ, 0, 0, σ²_r)`, and dγ, dβ are what `batch_norm_backward` computes for
/// x̂ = (x - μ_r)·s when handed the running mean and s instead of the batch statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    tape: &mut Tape,
    x: Var,
    gamma: Var,
    beta: Var,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    train: bool,
    momentum: f32,
    eps: f32,
) -> Result<Var> {
    batch_norm_act(
        tape,
        x,
        [gamma, beta],
        RunningStatsMut::new(running_mean, running_var, momentum),
        train,
        eps,
        None,
    )
}

/// act(batch_norm(x)) as one op: the backends apply the activation in batch norm's own passes (forward and,
/// in training mode, backward), so the pre-activation tensor is never written and the activation costs no
/// pass or launch of its own. The same values as [`batch_norm`] followed by [`activation`](super::activation).
/// Training mode updates `running` in place (and counts the batch, if it has a counter); eval mode reads it.
pub fn batch_norm_act(
    tape: &mut Tape,
    x: Var,
    [gamma, beta]: [Var; 2],
    running: RunningStatsMut<'_>,
    train: bool,
    eps: f32,
    act: Option<Activation>,
) -> Result<Var> {
    if train {
        return train_op(tape, x, [gamma, beta], act, |x, gamma, beta| {
            let affine = BatchNormAffine::new(gamma, beta, eps);
            x.backend().batch_norm_train(x, affine, running, act)
        });
    }
    let (xv, gv) = (tape.value(x).clone(), tape.value(gamma).clone());
    let bv = tape.value(beta);
    let be = xv.backend();
    let y = be.batch_norm_eval(
        &xv,
        BatchNormAffine::new(&gv, bv, eps),
        running.frozen(),
        act,
    )?;
    // Snapshots: the caller may update its running stats (copy-on-write) before this backward runs.
    let (rm, rv) = (running.mean.clone(), running.var.clone());
    let saved_y = act.map(|_| y.clone());
    Ok(tape.push_op(
        "batch norm (eval mode)",
        y,
        &[x, gamma, beta],
        Box::new(move |dy, need| {
            let be = dy.backend();
            // Eval mode is for inference; its backward (tests, gradient probes) takes dy back through the
            // activation in a pass of its own.
            let dz;
            let dy = match (&saved_y, act) {
                (Some(y), Some(a)) => {
                    dz = be.activation_backward(y, dy, a)?;
                    &dz
                }
                _ => dy,
            };
            let c = rv.numel();
            let zeros = be.zeros(&[c])?;
            let dx = need[0]
                .then(|| {
                    be.batch_norm_eval(
                        dy,
                        BatchNormAffine::new(&gv, &zeros, eps),
                        RunningStats::new(&zeros, &rv),
                        None,
                    )
                })
                .transpose()?;
            let (mut dgamma, mut dbeta) = (None, None);
            if need[1] || need[2] {
                // s = 1/sqrt(σ²_r + eps): eval-normalise a row of ones with γ = 1, β = 0, μ = 0.
                let ones = filled_like(dy, &[c], 1.0)?;
                let s = be
                    .batch_norm_eval(
                        &ones.reshape(&[1, c])?,
                        BatchNormAffine::new(&ones, &zeros, eps),
                        RunningStats::new(&zeros, &rv),
                        None,
                    )?
                    .reshape(&[c])?;
                // Its dx (the batch-statistics one) is not wanted here and is dropped.
                let g = be.batch_norm_backward(
                    BatchNormSaved {
                        x: &xv,
                        gamma: &gv,
                        mean: &rm,
                        invstd: &s,
                        out_act: None,
                    },
                    dy,
                )?;
                dgamma = need[1].then_some(g.dgamma);
                dbeta = need[2].then_some(g.dbeta);
            }
            Ok(vec![dx, dgamma, dbeta])
        }),
    ))
}

/// [`batch_norm_act`] in training mode, of an x whose per-channel statistics came with it in parts (from
/// [`conv2d_with_stats`](super::conv::conv2d_with_stats) or
/// [`conv_transpose2d_with_stats`](super::conv::conv_transpose2d_with_stats)): the backend merges them instead
/// of reading x for its statistics. The same values as `batch_norm_act` up to rounding, and the same gradients.
pub fn batch_norm_act_from_parts(
    tape: &mut Tape,
    x: Var,
    [gamma, beta]: [Var; 2],
    running: RunningStatsMut<'_>,
    eps: f32,
    act: Option<Activation>,
    parts: &Tensor,
) -> Result<Var> {
    train_op(tape, x, [gamma, beta], act, |x, gamma, beta| {
        let affine = BatchNormAffine::new(gamma, beta, eps);
        x.backend()
            .batch_norm_train_from_parts(x, parts, affine, running, act)
    })
}

/// Puts a training-mode batch norm on the tape: `forward(x, gamma, beta)` computes it, the backward is
/// [`Backend::batch_norm_backward`](crate::backend::Backend::batch_norm_backward) from the saved statistics.
fn train_op(
    tape: &mut Tape,
    x: Var,
    [gamma, beta]: [Var; 2],
    act: Option<Activation>,
    forward: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<BatchNormOut>,
) -> Result<Var> {
    let (xv, gv, bv) = (
        tape.value(x).clone(),
        tape.value(gamma).clone(),
        tape.value(beta).clone(),
    );
    let out = forward(&xv, &gv, &bv)?;
    let (mean, invstd) = (out.mean, out.invstd);
    // The backward of a fused op takes dy back through the activation: from its output, or from the
    // pre-activation recomputed with beta (FusedOut).
    let saved_y = act.map(|_| out.y.clone());
    Ok(tape.push_op(
        "batch norm",
        out.y,
        &[x, gamma, beta],
        Box::new(move |dy, need| {
            let out_act = saved_y
                .as_ref()
                .zip(act)
                .map(|(y, act)| FusedOut { y, beta: &bv, act });
            let g = dy.backend().batch_norm_backward(
                BatchNormSaved {
                    x: &xv,
                    gamma: &gv,
                    mean: &mean,
                    invstd: &invstd,
                    out_act,
                },
                dy,
            )?;
            Ok(vec![
                need[0].then_some(g.dx),
                need[1].then_some(g.dgamma),
                need[2].then_some(g.dbeta),
            ])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::ops::gradcheck::{test_tensor, GradCheck};

    fn cpu(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Inputs for a batch norm over `shape` with channels on dim 1: x with some per-channel offset and
    /// spread, γ away from zero, β.
    fn inputs(shape: &[usize]) -> [Tensor; 3] {
        let c = shape[1];
        let x = test_tensor(shape, 11);
        let x = x.backend().affine(&x, 2.0, 0.3).unwrap();
        let g = test_tensor(&[c], 12).to_vec().unwrap();
        let g = cpu(g.iter().map(|v| 1.0 + 0.5 * v).collect(), &[c]);
        [x, g, test_tensor(&[c], 13)]
    }

    fn gradcheck_act(dev: &Device, shape: &[usize], train: bool, act: Option<Activation>) {
        let c = shape[1];
        let rv0: Vec<f32> = (0..c).map(|i| 0.5 + 0.3 * i as f32).collect();
        let rm0: Vec<f32> = (0..c).map(|i| 0.1 * i as f32 - 0.2).collect();
        // Batch norm divides by a data-dependent std, so f32 central differences are noisier than for the
        // other ops; h = 1e-2 balances truncation against rounding.
        let gc = GradCheck {
            h: 1e-2,
            atol: 5e-3,
            rtol: 3e-2,
            ..GradCheck::default()
        };
        let on_dev = |t: Tensor| t.to_device(dev).unwrap();
        let worst = gc
            .run(&inputs(shape).map(on_dev), |t, v| {
                // Fresh running stats per evaluation: the check's repeated forwards must not drift them.
                let mut rm = on_dev(cpu(rm0.clone(), &[c]));
                let mut rv = on_dev(cpu(rv0.clone(), &[c]));
                batch_norm_act(
                    t,
                    v[0],
                    [v[1], v[2]],
                    RunningStatsMut::new(&mut rm, &mut rv, 0.1),
                    train,
                    1e-5,
                    act,
                )
            })
            .unwrap();
        assert!(worst < 5e-3, "{worst}");
    }

    /// Training and eval mode, on 2-D (N, C, H, W) and 1-D (N, C) inputs; then the fused op's gradients through
    /// the smooth activations (a finite difference across ReLU's kink would be wrong, not the op; its values
    /// against the composition are tested in emu_parity_conv.rs).
    fn gradchecks(dev: &Device) {
        for train in [true, false] {
            gradcheck_act(dev, &[3, 5, 3, 7], train, None);
            gradcheck_act(dev, &[7, 5], train, None);
        }
        for act in [Activation::Tanh, Activation::Sigmoid] {
            gradcheck_act(dev, &[3, 5, 3, 7], true, Some(act));
            gradcheck_act(dev, &[7, 5], false, Some(act));
        }
    }

    test_devices!(gradients_match_finite_differences => super::gradchecks);

    /// A convolution then a training-mode batch norm with tanh, as the layers run them: on a backend that gathers
    /// statistics parts (emu), `batch_norm_act_from_parts` with the backward that recomputes the activation from
    /// x and beta; on the CPU the plain ops. Gradients of x, w, gamma and beta against finite differences, for a
    /// convolution gathering in its epilogue, one gathering in its split-K reduction, and a transposed one.
    fn conv_then_batch_norm(dev: &Device) {
        use crate::backend::Conv2dParams;
        use crate::ops::conv::{conv2d_with_stats, conv_transpose2d_with_stats};
        let gc = GradCheck {
            h: 1e-2,
            atol: 5e-3,
            rtol: 3e-2,
            ..GradCheck::default()
        };
        // (transposed, x, w, stride, pad); every output has 4..=6 channels.
        let cases = [
            (false, [2, 3, 6, 6], [4, 3, 3, 3], 1, 1),
            (false, [2, 8, 6, 6], [5, 8, 4, 4], 2, 1),
            (true, [2, 4, 3, 3], [4, 6, 4, 4], 2, 1),
        ];
        let on_dev = |t: Tensor| t.to_device(dev).unwrap();
        for (transposed, xs, ws, s, p) in cases {
            let c = if transposed { ws[1] } else { ws[0] };
            let g = test_tensor(&[c], 12).to_vec().unwrap();
            let inputs = [
                test_tensor(&xs, 11),
                test_tensor(&ws, 14),
                cpu(g.iter().map(|v| 1.0 + 0.5 * v).collect(), &[c]),
                test_tensor(&[c], 13),
            ]
            .map(on_dev);
            let params = Conv2dParams::new(s, p);
            let worst = gc
                .run(&inputs, |t, v| {
                    let (z, parts) = match transposed {
                        false => conv2d_with_stats(t, v[0], v[1], params)?,
                        true => conv_transpose2d_with_stats(t, v[0], v[1], params, None)?,
                    };
                    assert_eq!(
                        parts.is_some(),
                        !dev.is_cpu(),
                        "statistics parts on {}",
                        dev.name()
                    );
                    let mut rm = on_dev(Tensor::zeros(&[c], &Device::Cpu).unwrap());
                    let mut rv = on_dev(Tensor::full(&[c], 1.0, &Device::Cpu).unwrap());
                    let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1);
                    let act = Some(Activation::Tanh);
                    match &parts {
                        Some(parts) => {
                            batch_norm_act_from_parts(t, z, [v[2], v[3]], running, 1e-5, act, parts)
                        }
                        None => batch_norm_act(t, z, [v[2], v[3]], running, true, 1e-5, act),
                    }
                })
                .unwrap();
            assert!(worst < 5e-3, "transposed {transposed}, x {xs:?}: {worst}");
        }
    }

    test_devices!(conv_then_batch_norm_matches_finite_differences => super::conv_then_batch_norm);

    /// Training forwards count their batch in the counter they are given, once per call whatever the channel
    /// count and however many reduction blocks a channel has; eval forwards leave it; a counter of more than one
    /// value is refused before anything is updated.
    fn counts_batches(dev: &Device) {
        let on_dev = |t: &Tensor| t.to_device(dev).unwrap();
        for (shape, nbt0) in [
            (&[3usize, 5, 3, 7][..], 0.0),
            (&[2, 3, 40, 60][..], 41.0),
            (&[4, 6][..], 7.0),
        ] {
            let c = shape[1];
            let ins = inputs(shape).map(|t| on_dev(&t));
            let mut rm = on_dev(&cpu(vec![0.0; c], &[c]));
            let mut rv = on_dev(&cpu(vec![1.0; c], &[c]));
            let mut nbt = on_dev(&cpu(vec![nbt0], &[]));
            for (train, want) in [(true, 1.0), (true, 2.0), (false, 2.0)] {
                let mut tape = Tape::new();
                let v: Vec<Var> = ins.iter().map(|t| tape.leaf(t.clone())).collect();
                let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1).counting(&mut nbt);
                batch_norm_act(&mut tape, v[0], [v[1], v[2]], running, train, 1e-5, None).unwrap();
                assert_eq!(
                    nbt.scalar().unwrap(),
                    nbt0 + want,
                    "{shape:?}, train {train}"
                );
            }
            let rm_before = rm.to_vec().unwrap();
            let mut bad = on_dev(&cpu(vec![0.0; 2], &[2]));
            let mut tape = Tape::new();
            let v: Vec<Var> = ins.iter().map(|t| tape.leaf(t.clone())).collect();
            let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1).counting(&mut bad);
            let e = batch_norm_act(&mut tape, v[0], [v[1], v[2]], running, true, 1e-5, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("batch counter has shape [2]"), "{e}");
            assert_eq!(
                rm.to_vec().unwrap(),
                rm_before,
                "nothing updated by a refused call"
            );
        }
    }
    test_devices!(training_forwards_count_their_batch => super::counts_batches);

    #[test]
    fn running_stats_update_and_eval_snapshot() {
        let ins = inputs(&[3, 5, 3, 7]);
        let mut rm = cpu(vec![0.0; 5], &[5]);
        let mut rv = cpu(vec![1.0; 5], &[5]);
        let mut tape = Tape::new();
        let v: Vec<Var> = ins.iter().map(|t| tape.leaf(t.clone())).collect();
        batch_norm(
            &mut tape, v[0], v[1], v[2], &mut rm, &mut rv, true, 0.1, 1e-5,
        )
        .unwrap();
        assert!(rm.to_vec().unwrap().iter().any(|&m| m != 0.0));
        assert!(rv.to_vec().unwrap().iter().all(|&s| s != 1.0));
        // Eval: no update. The backward uses the stats as they were at the forward even if they change later.
        let (rm1, rv1) = (rm.to_vec().unwrap(), rv.to_vec().unwrap());
        let mut tape = Tape::new();
        let v: Vec<Var> = ins.iter().map(|t| tape.leaf(t.clone())).collect();
        let y = batch_norm(
            &mut tape, v[0], v[1], v[2], &mut rm, &mut rv, false, 0.1, 1e-5,
        )
        .unwrap();
        assert_eq!(rm.to_vec().unwrap(), rm1);
        assert_eq!(rv.to_vec().unwrap(), rv1);
        crate::cpu::data_mut(&mut rv).unwrap().fill(100.0);
        let dy = cpu(vec![1.0; 315], &[3, 5, 3, 7]);
        let g = tape.backward_from(y, dy).unwrap();
        let dx = g.get(v[0]).unwrap().to_vec().unwrap();
        let gam = ins[1].to_vec().unwrap();
        // dx = γ / sqrt(σ²_r + eps) for dy = 1; element 0 is channel 0.
        let want = gam[0] as f64 / (rv1[0] as f64 + 1e-5).sqrt();
        assert!((dx[0] as f64 - want).abs() < 1e-5, "{} vs {want}", dx[0]);
        assert_eq!(g.get(v[2]).unwrap().to_vec().unwrap(), vec![63.0; 5]);
    }

    #[test]
    fn shape_error_is_reported() {
        let mut tape = Tape::new();
        let x = tape.leaf(test_tensor(&[3, 5, 3, 7], 1));
        let g = tape.leaf(test_tensor(&[4], 1));
        let b = tape.leaf(test_tensor(&[5], 1));
        let mut rm = cpu(vec![0.0; 5], &[5]);
        let mut rv = cpu(vec![1.0; 5], &[5]);
        let msg = batch_norm(&mut tape, x, g, b, &mut rm, &mut rv, true, 0.1, 1e-5)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("[4]") && msg.contains("[3, 5, 3, 7]"), "{msg}");
    }
}
