//! Fused BCE-with-logits on the tape.

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::ops::elementwise::scalar_times;

/// Mean BCE of logits against a constant target -> [1]; the gradient comes from the forward pass.
pub fn bce_with_logits(tape: &mut Tape, logits: Var, target: f32) -> Result<Var> {
    let x = tape.value(logits);
    let (loss, grad) = x.backend().bce_with_logits(x, target)?;
    Ok(tape.push_op(
        loss,
        &[logits],
        // The saved grad is d(loss)/d(logits); chain it with the upstream scalar on the device.
        Box::new(move |dy, _need| Ok(vec![Some(scalar_times(dy, &grad)?)])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::{add, scale};
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

    #[test]
    fn gradcheck_for_several_targets() {
        let x = test_tensor(&[7, 1], 1);
        let x = x.backend().affine(&x, 3.0, 0.0).unwrap();
        for t in [0.0, 1.0, 0.9] {
            GradCheck::default()
                .run(std::slice::from_ref(&x), |tape, v| {
                    bce_with_logits(tape, v[0], t)
                })
                .unwrap();
        }
    }

    #[test]
    fn upstream_gradient_is_applied() {
        // loss = 3 * bce(x, 1) + bce(x, 0): d/dx = (3 (σ - 1) + σ) / n.
        let xs = [-1.0f32, 0.5, 2.0];
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(xs.to_vec(), &[3], &crate::Device::Cpu).unwrap());
        let a = bce_with_logits(&mut tape, x, 1.0).unwrap();
        let a = scale(&mut tape, a, 3.0).unwrap();
        let b = bce_with_logits(&mut tape, x, 0.0).unwrap();
        let l = add(&mut tape, a, b).unwrap();
        let g = tape.backward(l).unwrap().get(x).unwrap().to_vec().unwrap();
        for (i, &xi) in xs.iter().enumerate() {
            let s = 1.0 / (1.0 + (-xi as f64).exp());
            let want = (3.0 * (s - 1.0) + s) / 3.0;
            assert!((g[i] as f64 - want).abs() < 1e-6, "{} vs {want}", g[i]);
        }
    }
}
