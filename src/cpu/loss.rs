//! Fused binary cross-entropy with logits: loss and gradient in one pass.

use anyhow::{ensure, Result};

use super::{data, output_buffer, tensor};
use crate::tensor::Tensor;

/// Per element, with t the target:
///   ℓ(x) = -[t ln σ(x) + (1 - t) ln(1 - σ(x))] = max(x, 0) - x t + ln(1 + e^{-|x|})
/// The right-hand form never exponentiates a positive number, so ±50 (or ±1e4) logits stay finite, and it
/// keeps full precision where σ(x) rounds to 0 or 1. dℓ/dx = σ(x) - t, divided by n for the mean.
pub fn bce_with_logits(logits: &Tensor, target: f32) -> Result<(Tensor, Tensor)> {
    ensure!(
        (0.0..=1.0).contains(&target),
        "bce_with_logits: target must be in [0, 1], got {target}"
    );
    let x = data(logits)?;
    ensure!(
        !x.is_empty(),
        "bce_with_logits: empty logits (shape {:?})",
        logits.shape()
    );
    let n = x.len();
    let inv_n = 1.0 / n as f32;
    let t = target as f64;
    let mut grad = output_buffer(n);
    let mut total = 0.0f64;
    for (g, &xi) in grad.iter_mut().zip(x) {
        let xd = xi as f64;
        // e = e^{-|x|} ∈ (0, 1] serves both the loss and σ(x), computed in f64 for the reduction.
        let e = (-xd.abs()).exp();
        total += xd.max(0.0) - xd * t + e.ln_1p();
        let sig = if xd >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *g = ((sig - t) as f32) * inv_n;
    }
    Ok((
        tensor(vec![(total / n as f64) as f32], &[1]),
        tensor(grad, logits.shape()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values_including_extreme_logits() {
        let x = tensor(vec![0.0, 2.0, -1.0, 50.0, -50.0], &[5, 1]);
        // Per element for target 1: ln(1 + e^{-x}); for target 0: ln(1 + e^{x}).
        let l1 = [
            2f64.ln(),
            (1.0 + (-2f64).exp()).ln(),
            (1.0 + 1f64.exp()).ln(),
            (-50f64).exp(), // ln(1 + e^-50) ≈ e^-50
            50.0,           // + ln(1 + e^-50)
        ];
        let (loss, grad) = bce_with_logits(&x, 1.0).unwrap();
        let want = l1.iter().sum::<f64>() / 5.0;
        assert!(
            (loss.scalar().unwrap() as f64 - want).abs() < 1e-6,
            "{:?}",
            loss.to_vec()
        );
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let g = grad.to_vec().unwrap();
        assert_eq!(grad.shape(), &[5, 1]);
        for (i, &xi) in [0.0, 2.0, -1.0, 50.0, -50.0].iter().enumerate() {
            assert!((g[i] as f64 - (sig(xi) - 1.0) / 5.0).abs() < 1e-7, "{i}");
        }
        // Target 0 mirrors target 1 with the logits negated.
        let xn = tensor(vec![-0.0, -2.0, 1.0, -50.0, 50.0], &[5, 1]);
        let (loss0, _) = bce_with_logits(&xn, 0.0).unwrap();
        assert!((loss0.scalar().unwrap() - loss.scalar().unwrap()).abs() < 1e-6);
        // Smoothed target: the loss at x = 0 is ln 2 whatever the target.
        let (l, g) = bce_with_logits(&tensor(vec![0.0; 3], &[3]), 0.9).unwrap();
        assert!((l.scalar().unwrap() as f64 - 2f64.ln()).abs() < 1e-7);
        assert!(g
            .to_vec()
            .unwrap()
            .iter()
            .all(|&v| (v - (0.5 - 0.9) / 3.0).abs() < 1e-7));
        // Huge logits do not overflow.
        let (l, g) = bce_with_logits(&tensor(vec![1e4, -1e4], &[2]), 1.0).unwrap();
        assert!((l.scalar().unwrap() - 5e3).abs() < 1e-2);
        assert!(g.to_vec().unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_target_or_empty_is_an_error() {
        let x = tensor(vec![0.0; 2], &[2]);
        assert!(bce_with_logits(&x, 1.5).is_err());
        assert!(bce_with_logits(&x, f32::NAN).is_err());
        assert!(bce_with_logits(&tensor(vec![], &[0, 1]), 1.0).is_err());
    }
}
