//! GAN losses on the tape: fused BCE-with-logits, and the least-squares and hinge terms composed from the
//! differentiable elementwise ops (so they run, with their gradients, on every backend without new kernels: each
//! is a handful of pointwise passes over N logits, nothing a fused kernel would noticeably speed up).

use anyhow::{ensure, Result};

use crate::autograd::{rule, Tape, Var};
use crate::ops::activation::{relu, sigmoid};
use crate::ops::elementwise::{affine, mean, mul, scalar_times, scalar_times_op, scale};

/// Mean BCE of logits against a constant target -> [1]; the gradient comes from the forward pass. The
/// double-backward rule records that gradient, (σ(x) − target) / n, as tape ops.
pub fn bce_with_logits(tape: &mut Tape, logits: Var, target: f32) -> Result<Var> {
    let x = tape.value(logits);
    let n = x.numel() as f32;
    let (loss, grad) = x.backend().bce_with_logits(x, target)?;
    Ok(tape.push_op_with_rule(
        "bce_with_logits",
        loss,
        &[logits],
        // The saved grad is d(loss)/d(logits); chain it with the upstream scalar on the device.
        Box::new(move |dy, _need| Ok(vec![Some(scalar_times(dy, &grad)?)])),
        rule(move |t, a| {
            Ok(vec![a.grad(0, || {
                let s = sigmoid(t, a.inputs[0])?;
                let d = affine(t, s, 1.0 / n, -target / n)?;
                scalar_times_op(t, a.dy, d)
            })?])
        }),
    ))
}

/// ½ · mean((x − target)²) → [1]: the least-squares GAN term (LSGAN, Mao et al.) of raw D outputs `x`.
/// Its gradient is (x − target) / n.
pub fn least_squares(tape: &mut Tape, x: Var, target: f32) -> Result<Var> {
    ensure!(
        target.is_finite(),
        "least_squares: target must be finite, got {target}"
    );
    let d = affine(tape, x, 1.0, -target)?;
    let sq = mul(tape, d, d)?;
    let m = mean(tape, sq)?;
    scale(tape, m, 0.5)
}

/// mean(relu(1 − sign · x)) → [1]: the hinge term of raw D outputs `x`. `sign` is +1 for real images (D is
/// penalised while D(x) < 1) and −1 for fakes (penalised while D(G(z)) > −1). The gradient is −sign / n inside
/// the margin and 0 outside (and at the kink, as PyTorch's relu).
pub fn hinge(tape: &mut Tape, x: Var, sign: f32) -> Result<Var> {
    ensure!(
        sign == 1.0 || sign == -1.0,
        "hinge: sign must be +1 (real) or -1 (fake), got {sign}"
    );
    let margin = affine(tape, x, -sign, 1.0)?;
    let r = relu(tape, margin)?;
    mean(tape, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::{add, scale};
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

    /// Second-order gradients of the three fused or composed losses (away from the hinge's kinks).
    fn second_order(dev: &crate::Device) {
        let x = test_tensor(&[7, 1], 3);
        let x = x
            .backend()
            .affine(&x, 3.0, 0.0)
            .unwrap()
            .to_device(dev)
            .unwrap();
        let gc = GradCheck::default();
        for target in [0.0, 1.0, 0.9] {
            gc.run_second_order(std::slice::from_ref(&x), |t, v| {
                bce_with_logits(t, v[0], target)
            })
            .unwrap();
        }
        gc.run_second_order(std::slice::from_ref(&x), |t, v| least_squares(t, v[0], 0.5))
            .unwrap();
        gc.run_second_order(std::slice::from_ref(&x), |t, v| {
            let sq = crate::ops::mul(t, v[0], v[0])?;
            hinge(t, sq, -1.0)
        })
        .unwrap();
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);

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

    /// Value and gradient of `f` at `xs` (a [n, 1] leaf) on `dev`.
    fn value_and_grad(
        dev: &crate::Device,
        xs: &[f32],
        f: impl Fn(&mut Tape, Var) -> Result<Var>,
    ) -> (f64, Vec<f64>) {
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(xs.to_vec(), &[xs.len(), 1], dev).unwrap());
        let l = f(&mut tape, x).unwrap();
        let v = tape.value(l).scalar().unwrap() as f64;
        let g = tape.backward(l).unwrap().get(x).unwrap().to_vec().unwrap();
        (v, g.iter().map(|&a| a as f64).collect())
    }

    fn devices() -> Vec<crate::Device> {
        let mut d = vec![crate::Device::Cpu];
        if cfg!(feature = "emulation") {
            d.push(crate::Device::parse("emu").unwrap());
        }
        d
    }

    fn close(what: &str, got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "{what}: got {got}, want {want}");
    }

    #[test]
    fn least_squares_hand_computed() {
        for dev in devices() {
            // ½ mean((x − 1)²) at x = [0.5, −1.5, 2]: ½ (0.25 + 6.25 + 1) / 3 = 1.25; grad (x − 1)/3.
            let (v, g) = value_and_grad(&dev, &[0.5, -1.5, 2.0], |t, x| least_squares(t, x, 1.0));
            close("ls(x, 1)", v, 1.25);
            for (gi, want) in g.iter().zip([-0.5 / 3.0, -2.5 / 3.0, 1.0 / 3.0]) {
                close("d ls(x, 1)", *gi, want);
            }
            // ½ mean(x²) at x = [−0.5, 1.5, −2]: ½ (0.25 + 2.25 + 4) / 3 = 13/12; grad x/3.
            let (v, g) = value_and_grad(&dev, &[-0.5, 1.5, -2.0], |t, x| least_squares(t, x, 0.0));
            close("ls(x, 0)", v, 13.0 / 12.0);
            for (gi, want) in g.iter().zip([-0.5 / 3.0, 0.5, -2.0 / 3.0]) {
                close("d ls(x, 0)", *gi, want);
            }
        }
    }

    #[test]
    fn hinge_hand_computed() {
        for dev in devices() {
            // Real: relu(1 − x) at [0.5, −1.5, 2] = [0.5, 2.5, 0], mean 1; grad −1/4 inside the margin.
            let xs = [0.5, -1.5, 2.0, 0.9];
            let (v, g) = value_and_grad(&dev, &xs, |t, x| hinge(t, x, 1.0));
            close("hinge real", v, (0.5 + 2.5 + 0.0 + 0.1) / 4.0);
            for (gi, want) in g.iter().zip([-0.25, -0.25, 0.0, -0.25]) {
                close("d hinge real", *gi, want);
            }
            // Fake: relu(1 + x) at [−0.5, 1.5, −2] = [0.5, 2.5, 0], mean 1; grad +1/3 inside.
            let (v, g) = value_and_grad(&dev, &[-0.5, 1.5, -2.0], |t, x| hinge(t, x, -1.0));
            close("hinge fake", v, 1.0);
            for (gi, want) in g.iter().zip([1.0 / 3.0, 1.0 / 3.0, 0.0]) {
                close("d hinge fake", *gi, want);
            }
        }
    }

    #[test]
    fn gradcheck_least_squares_and_hinge() {
        // Values 3·[-1, 1): the margins' kinks at ±1 are hit by none of them closer than the FD step.
        let x = test_tensor(&[7, 1], 3);
        let x = x.backend().affine(&x, 3.0, 0.0).unwrap();
        let near_kink = x
            .to_vec()
            .unwrap()
            .iter()
            .any(|v| (v.abs() - 1.0).abs() < 0.05);
        assert!(!near_kink, "pick another seed: {:?}", x.to_vec().unwrap());
        let gc = GradCheck::default();
        for t in [0.0, 1.0, -0.5] {
            gc.run(std::slice::from_ref(&x), |tape, v| {
                least_squares(tape, v[0], t)
            })
            .unwrap();
        }
        for s in [1.0, -1.0] {
            gc.run(std::slice::from_ref(&x), |tape, v| hinge(tape, v[0], s))
                .unwrap();
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(vec![0.0], &[1], &crate::Device::Cpu).unwrap());
        assert!(hinge(&mut tape, x, 0.5).is_err());
        assert!(least_squares(&mut tape, x, f32::NAN).is_err());
    }
}
