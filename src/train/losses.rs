//! The six GAN objectives of `train --loss`, as terms on the tape of D's raw outputs ("logits"), the gradient
//! penalties, and what the metrics report for each.
//!
//! | loss      | D (or critic) minimises                         | G minimises                  |
//! |-----------|-------------------------------------------------|------------------------------|
//! | `ns`      | BCE(D(x), 1) + BCE(D(G(z)), 0)                  | BCE(D(G(z)), 1) = −log σ     |
//! | `minimax` | same                                            | −BCE(D(G(z)), 0) = log(1 − σ)|
//! | `ls`      | ½E[(D(x) − 1)²] + ½E[D(G(z))²]                  | ½E[(D(G(z)) − 1)²]           |
//! | `hinge`   | E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]        | −E[D(G(z))]                  |
//! | `wgan`    | E[D(G(z))] − E[D(x)], then clip D's weights     | −E[D(G(z))]                  |
//! | `wgan-gp` | E[D(G(z))] − E[D(x)] + λE[(‖∇D(x̂)‖₂ − 1)²]      | −E[D(G(z))]                  |
//!
//! The penalties take a gradient of D's output with respect to its input ([`Tape::grad_graph`]); D's update
//! then differentiates that gradient again. WGAN-GP's x̂ = εx + (1 − ε)G(z), ε ~ U(0, 1) per sample; R1
//! (`--r1 γ`, with any loss) adds (γ/2)·E[‖∇D(x)‖²] on the real batch; DRAGAN (`--dragan λ`, with any loss)
//! adds WGAN-GP's penalty at x̂ = x + ε·½σ(x)·u around the real batch, u ~ U(0, 1) per pixel.
//!
//! Every term is built from differentiable tape ops, so each loss runs (forward and backward) on every backend.
//! The D loss is split into its real and fake terms because the D step evaluates them on separate forwards.

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::ops;
use crate::tensor::Tensor;

use super::config::LossKind;

impl LossKind {
    /// Whether D's output is read as a logit, so that the metrics report it as a probability σ(D).
    pub fn reports_probabilities(self) -> bool {
        matches!(self, LossKind::Ns | LossKind::Minimax)
    }

    /// Whether D's weights are clipped after every D update (WGAN's Lipschitz constraint).
    pub fn clips_weights(self) -> bool {
        self == LossKind::Wgan
    }
}

/// D's loss term on a real batch.
pub fn d_loss_real(tape: &mut Tape, kind: LossKind, out_real: Var) -> Result<Var> {
    match kind {
        LossKind::Ns | LossKind::Minimax => ops::bce_with_logits(tape, out_real, 1.0),
        LossKind::Ls => ops::loss::least_squares(tape, out_real, 1.0),
        LossKind::Hinge => ops::loss::hinge(tape, out_real, 1.0),
        LossKind::Wgan | LossKind::WganGp => {
            let m = ops::mean(tape, out_real)?;
            ops::scale(tape, m, -1.0)
        }
    }
}

/// D's loss term on a (detached) fake batch.
pub fn d_loss_fake(tape: &mut Tape, kind: LossKind, out_fake: Var) -> Result<Var> {
    match kind {
        LossKind::Ns | LossKind::Minimax => ops::bce_with_logits(tape, out_fake, 0.0),
        LossKind::Ls => ops::loss::least_squares(tape, out_fake, 0.0),
        LossKind::Hinge => ops::loss::hinge(tape, out_fake, -1.0),
        LossKind::Wgan | LossKind::WganGp => ops::mean(tape, out_fake),
    }
}

/// G's loss on D's outputs for its fakes.
pub fn g_loss(tape: &mut Tape, kind: LossKind, out_fake: Var) -> Result<Var> {
    match kind {
        LossKind::Ns => ops::bce_with_logits(tape, out_fake, 1.0),
        LossKind::Minimax => {
            let e = ops::bce_with_logits(tape, out_fake, 0.0)?;
            ops::scale(tape, e, -1.0)
        }
        LossKind::Ls => ops::loss::least_squares(tape, out_fake, 1.0),
        LossKind::Hinge | LossKind::Wgan | LossKind::WganGp => {
            let m = ops::mean(tape, out_fake)?;
            ops::scale(tape, m, -1.0)
        }
    }
}

/// The gradient of D's outputs `out` (summed over the batch) with respect to D's input `x`, recorded on the
/// tape so that a penalty on it trains D: per sample, ∇ₓD(x) of that sample.
pub fn input_gradient(tape: &mut Tape, out: Var, x: Var) -> Result<Var> {
    let ones = {
        let o = tape.value(out);
        let b = o.backend();
        b.affine(&b.zeros(o.shape())?, 0.0, 1.0)?
    };
    let ones = tape.constant(ones);
    tape.grad_graph(out, ones, &[x])?[0]
        .ok_or_else(|| anyhow::anyhow!("internal: D's output does not depend on its input"))
}

/// Per-sample squared norms ‖g_i‖² of a gradient g [N, ...] -> [N, 1].
fn squared_norms(tape: &mut Tape, grad: Var) -> Result<Var> {
    let sq = ops::mul(tape, grad, grad)?;
    ops::elementwise::row_sums(tape, sq)
}

/// Below this a per-sample squared norm is lifted before its square root, whose derivative is infinite at 0.
const NORM_EPS: f32 = 1e-12;

/// WGAN-GP's penalty λ·E[(‖g_i‖₂ − 1)²] of the critic's input gradients `grad` [N, ...].
pub fn gradient_penalty(tape: &mut Tape, grad: Var, lambda: f32) -> Result<Var> {
    let s = squared_norms(tape, grad)?;
    let s = ops::elementwise::affine(tape, s, 1.0, NORM_EPS)?;
    let norm = ops::elementwise::powf(tape, s, 0.5)?;
    let d = ops::elementwise::affine(tape, norm, 1.0, -1.0)?;
    let d2 = ops::mul(tape, d, d)?;
    let m = ops::mean(tape, d2)?;
    ops::scale(tape, m, lambda)
}

/// R1's penalty (γ/2)·E[‖g_i‖²] of D's input gradients on real images `grad` [N, ...].
pub fn r1_penalty(tape: &mut Tape, grad: Var, gamma: f32) -> Result<Var> {
    let s = squared_norms(tape, grad)?;
    let m = ops::mean(tape, s)?;
    ops::scale(tape, m, 0.5 * gamma)
}

/// The d_x / d_g_z metric of a batch of D outputs: the mean probability σ(D) for the BCE losses, the mean raw
/// output for the others (whose D is not a classifier: a probability would mean nothing there).
pub fn d_output_metric(kind: LossKind, out: &Tensor) -> Result<f32> {
    let l = out.to_vec()?;
    let n = l.len().max(1) as f64;
    let s: f64 = if kind.reports_probabilities() {
        l.iter().map(|&x| 1.0 / (1.0 + (-x as f64).exp())).sum()
    } else {
        l.iter().map(|&x| x as f64).sum()
    };
    Ok((s / n) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    /// Every loss the CLI offers.
    fn all() -> &'static [LossKind] {
        <LossKind as clap::ValueEnum>::value_variants()
    }

    // Raw D outputs on a real and a fake batch of three, away from the hinge kinks at ±1.
    const REAL: [f64; 3] = [0.5, -1.5, 2.0];
    const FAKE: [f64; 3] = [-0.5, 1.5, -2.0];

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn softplus(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    fn mean(v: impl Iterator<Item = f64>) -> f64 {
        let v: Vec<f64> = v.collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// (D loss, dD/dreal, dD/dfake, G loss, dG/dfake) worked out by hand from the formulas in the module doc.
    #[allow(clippy::type_complexity)]
    fn by_hand(kind: LossKind) -> (f64, Vec<f64>, Vec<f64>, f64, Vec<f64>) {
        let n = 3.0;
        match kind {
            LossKind::Ns | LossKind::Minimax => {
                // BCE(x, 1) = softplus(−x), BCE(x, 0) = softplus(x); d/dx = (σ(x) − t)/n.
                let d = mean(REAL.iter().map(|&x| softplus(-x)))
                    + mean(FAKE.iter().map(|&x| softplus(x)));
                let dr = REAL.iter().map(|&x| (sigmoid(x) - 1.0) / n).collect();
                let df = FAKE.iter().map(|&x| sigmoid(x) / n).collect();
                let (g, dg) = if kind == LossKind::Ns {
                    (
                        mean(FAKE.iter().map(|&x| softplus(-x))),
                        FAKE.iter().map(|&x| (sigmoid(x) - 1.0) / n).collect(),
                    )
                } else {
                    (
                        -mean(FAKE.iter().map(|&x| softplus(x))),
                        FAKE.iter().map(|&x| -sigmoid(x) / n).collect(),
                    )
                };
                (d, dr, df, g, dg)
            }
            // ½ mean((r − 1)²) = ½ (0.25 + 6.25 + 1)/3 = 1.25; ½ mean(f²) = ½ (0.25 + 2.25 + 4)/3 = 13/12.
            // G: ½ mean((f − 1)²) = ½ (2.25 + 0.25 + 9)/3 = 23/12.
            LossKind::Ls => (
                1.25 + 13.0 / 12.0,
                vec![-0.5 / n, -2.5 / n, 1.0 / n],
                vec![-0.5 / n, 1.5 / n, -2.0 / n],
                23.0 / 12.0,
                vec![-1.5 / n, 0.5 / n, -3.0 / n],
            ),
            // relu(1 − r) = [0.5, 2.5, 0], relu(1 + f) = [0.5, 2.5, 0]: 1 + 1. G: −mean(f) = 1/3.
            LossKind::Hinge => (
                2.0,
                vec![-1.0 / n, -1.0 / n, 0.0],
                vec![1.0 / n, 1.0 / n, 0.0],
                1.0 / 3.0,
                vec![-1.0 / n; 3],
            ),
            // mean(f) − mean(r) = −1/3 − 1/3 (the penalty is a term of its own). G: −mean(f) = 1/3.
            LossKind::Wgan | LossKind::WganGp => (
                -2.0 / 3.0,
                vec![-1.0 / n; 3],
                vec![1.0 / n; 3],
                1.0 / 3.0,
                vec![-1.0 / n; 3],
            ),
        }
    }

    fn check_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() < 2e-6 * w.abs().max(1.0),
                "{what}: got {got:?}, want {want:?}"
            );
        }
    }

    fn check_on(dev: &Device) {
        let t = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_vec(v, &[3, 1], dev).unwrap()
        };
        for &kind in all() {
            let (d, dr, df, g, dg) = by_hand(kind);
            let what = format!("{kind} on {}", dev.name());
            let mut tape = Tape::new();
            let (r, f) = (tape.leaf(t(&REAL)), tape.leaf(t(&FAKE)));
            let lr = d_loss_real(&mut tape, kind, r).unwrap();
            let lf = d_loss_fake(&mut tape, kind, f).unwrap();
            let ld = ops::add(&mut tape, lr, lf).unwrap();
            check_close(
                &format!("{what}: D loss"),
                &[tape.value(ld).scalar().unwrap()],
                &[d],
            );
            let grads = tape.backward(ld).unwrap();
            check_close(
                &format!("{what}: dD/dreal"),
                &grads.get(r).unwrap().to_vec().unwrap(),
                &dr,
            );
            check_close(
                &format!("{what}: dD/dfake"),
                &grads.get(f).unwrap().to_vec().unwrap(),
                &df,
            );

            let mut tape = Tape::new();
            let f = tape.leaf(t(&FAKE));
            let lg = g_loss(&mut tape, kind, f).unwrap();
            check_close(
                &format!("{what}: G loss"),
                &[tape.value(lg).scalar().unwrap()],
                &[g],
            );
            let grads = tape.backward(lg).unwrap();
            check_close(
                &format!("{what}: dG/dfake"),
                &grads.get(f).unwrap().to_vec().unwrap(),
                &dg,
            );
        }
    }

    test_devices!(every_loss_matches_hand_computed_values_and_gradients => super::check_on);

    #[test]
    fn metrics_are_probabilities_only_for_the_bce_losses() {
        let out = Tensor::from_vec(vec![0.0, 2.0, -4.0], &[3, 1], &Device::Cpu).unwrap();
        let p = (0.5 + sigmoid(2.0) + sigmoid(-4.0)) / 3.0;
        for &kind in all() {
            let m = d_output_metric(kind, &out).unwrap() as f64;
            let want = if kind.reports_probabilities() {
                p
            } else {
                -2.0 / 3.0
            };
            assert!((m - want).abs() < 1e-6, "{kind}: {m} vs {want}");
        }
        assert!(LossKind::Wgan.clips_weights() && !LossKind::Hinge.clips_weights());
    }
}
