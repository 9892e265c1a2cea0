//! add, mul, scale, affine, powf, sum, mean, per-sample sums on the tape, each with a double-backward rule.

use anyhow::{ensure, Result};

use crate::autograd::{rule, Tape, Var};
use crate::ops::linear::linear;
use crate::ops::shape::{flatten, reshape};
use crate::tensor::Tensor;

/// `s · t` for a one-element tensor `s`, computed on `t`'s device.
///
/// The backward passes of reductions and of the loss need "scalar gradient times a tensor", and the scalar is
/// a device tensor (reading it back to the host would stall a GPU every step). The [`crate::backend::Backend`]
/// has no broadcast op, but a GEMM with an inner dimension of one is exactly an outer product: t as an [n, 1]
/// column times s as a [1, 1] weight gives the column s·t.
pub(crate) fn scalar_times(s: &Tensor, t: &Tensor) -> Result<Tensor> {
    ensure!(
        s.numel() == 1,
        "scalar_times: expected a one-element tensor, got shape {:?}",
        s.shape()
    );
    let n = t.numel();
    let col = t.reshape(&[n, 1])?;
    let y = t.backend().linear(&col, &s.reshape(&[1, 1])?, None)?;
    y.reshape(t.shape())
}

/// A tensor of `shape` filled with `value`, made on `like`'s device.
pub(crate) fn filled_like(like: &Tensor, shape: &[usize], value: f32) -> Result<Tensor> {
    let b = like.backend();
    b.affine(&b.zeros(shape)?, 0.0, value)
}

pub fn add(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    let (av, bv) = (tape.value(a), tape.value(b));
    let y = av.backend().add(av, bv)?;
    Ok(tape.push_op_with_rule(
        "add",
        y,
        &[a, b],
        Box::new(move |dy, need| {
            Ok(vec![
                need[0].then(|| dy.clone()),
                need[1].then(|| dy.clone()),
            ])
        }),
        rule(|_, a| Ok(vec![a.need[0].then_some(a.dy), a.need[1].then_some(a.dy)])),
    ))
}

pub fn mul(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    let (av, bv) = (tape.value(a).clone(), tape.value(b).clone());
    let y = av.backend().mul(&av, &bv)?;
    Ok(tape.push_op_with_rule(
        "mul",
        y,
        &[a, b],
        Box::new(move |dy, need| {
            let be = dy.backend();
            let da = need[0].then(|| be.mul(dy, &bv)).transpose()?;
            let db = need[1].then(|| be.mul(dy, &av)).transpose()?;
            Ok(vec![da, db])
        }),
        rule(|t, a| {
            let (x, y) = (a.inputs[0], a.inputs[1]);
            Ok(vec![
                a.grad(0, || mul(t, a.dy, y))?,
                a.grad(1, || mul(t, a.dy, x))?,
            ])
        }),
    ))
}

/// alpha * x
pub fn scale(tape: &mut Tape, x: Var, alpha: f32) -> Result<Var> {
    affine(tape, x, alpha, 0.0)
}

/// alpha · x + beta; the backward only scales (the shift has no gradient).
pub fn affine(tape: &mut Tape, x: Var, alpha: f32, beta: f32) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().affine(xv, alpha, beta)?;
    Ok(tape.push_op_with_rule(
        "affine",
        y,
        &[x],
        Box::new(move |dy, _need| Ok(vec![Some(dy.backend().affine(dy, alpha, 0.0)?)])),
        rule(move |t, a| Ok(vec![a.grad(0, || scale(t, a.dy, alpha))?])),
    ))
}

/// x^p elementwise (NaN for a negative x and a non-integer p, as C's `powf`). Its gradient p·x^(p−1)·dy is
/// itself made of `powf`, so it differentiates any number of times.
pub fn powf(tape: &mut Tape, x: Var, p: f32) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().powf(xv, p)?;
    Ok(tape.push_rule_op(
        "powf",
        y,
        &[x],
        rule(move |t, a| {
            Ok(vec![a.grad(0, || {
                let d = powf(t, a.inputs[0], p - 1.0)?;
                let d = scale(t, d, p)?;
                mul(t, a.dy, d)
            })?])
        }),
    ))
}

/// `s · t` on the tape for a one-element `s`: [`scalar_times`] as an op (a linear layer with an inner
/// dimension of one), differentiable in both arguments.
pub fn scalar_times_op(tape: &mut Tape, s: Var, t: Var) -> Result<Var> {
    let shape = tape.value(t).shape().to_vec();
    let n = tape.value(t).numel();
    let col = reshape(tape, t, &[n, 1])?;
    let s = reshape(tape, s, &[1, 1])?;
    let y = linear(tape, col, s, None)?;
    reshape(tape, y, &shape)
}

/// Sum (`weight` 1) or mean (`weight` 1/n) of all elements; the backward broadcasts `weight · dy`.
fn reduce(tape: &mut Tape, x: Var, mean: bool) -> Result<Var> {
    let xv = tape.value(x);
    let n = xv.numel();
    ensure!(
        !(mean && n == 0),
        "mean of an empty tensor (shape {:?})",
        xv.shape()
    );
    let weight = if mean { 1.0 / n as f32 } else { 1.0 };
    let s = xv.backend().sum(xv)?;
    let y = if mean {
        s.backend().affine(&s, weight, 0.0)?
    } else {
        s
    };
    let x_shape = xv.shape().to_vec();
    let shape = x_shape.clone();
    Ok(tape.push_op_with_rule(
        if mean { "mean" } else { "sum" },
        y,
        &[x],
        Box::new(move |dy, _need| {
            let w = filled_like(dy, &x_shape, weight)?;
            Ok(vec![Some(scalar_times(dy, &w)?)])
        }),
        rule(move |t, a| {
            Ok(vec![a.grad(0, || {
                let w = filled_like(t.value(a.dy), &shape, weight)?;
                let w = t.constant(w);
                scalar_times_op(t, a.dy, w)
            })?])
        }),
    ))
}

/// sum of all elements -> [1]
pub fn sum(tape: &mut Tape, x: Var) -> Result<Var> {
    reduce(tape, x, false)
}

/// mean of all elements -> [1]
pub fn mean(tape: &mut Tape, x: Var) -> Result<Var> {
    reduce(tape, x, true)
}

/// Per-sample sums of x [N, ...] -> [N, 1]: a product with a constant column of ones.
pub fn row_sums(tape: &mut Tape, x: Var) -> Result<Var> {
    let f = flatten(tape, x)?;
    let cols = tape.value(f).shape()[1];
    let ones = filled_like(tape.value(f), &[1, cols], 1.0)?;
    let ones = tape.constant(ones);
    linear(tape, f, ones, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};

    #[test]
    fn gradcheck_add_mul_scale() {
        let a = test_tensor(&[3, 5, 7], 1);
        let b = test_tensor(&[3, 5, 7], 2);
        let gc = GradCheck::default();
        gc.run(&[a.clone(), b.clone()], |t, v| add(t, v[0], v[1]))
            .unwrap();
        gc.run(&[a.clone(), b.clone()], |t, v| mul(t, v[0], v[1]))
            .unwrap();
        gc.run(std::slice::from_ref(&a), |t, v| scale(t, v[0], -2.5))
            .unwrap();
        // The same var on both sides: gradients from both uses must accumulate.
        gc.run(&[a], |t, v| mul(t, v[0], v[0])).unwrap();
    }

    #[test]
    fn gradcheck_sum_mean() {
        let x = test_tensor(&[3, 5, 3, 7], 3);
        let gc = GradCheck::default();
        gc.run(std::slice::from_ref(&x), |t, v| sum(t, v[0]))
            .unwrap();
        gc.run(std::slice::from_ref(&x), |t, v| mean(t, v[0]))
            .unwrap();
        // Reduction of a product, then a scale: a small chain.
        gc.run(&[x.clone(), test_tensor(&[3, 5, 3, 7], 4)], |t, v| {
            let p = mul(t, v[0], v[1])?;
            let m = mean(t, p)?;
            scale(t, m, 3.0)
        })
        .unwrap();
    }

    /// Second-order gradients of every elementwise op and reduction, on `dev`.
    fn second_order(dev: &crate::Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let (a, b) = (t(&[3, 5], 1), t(&[3, 5], 2));
        let gc = GradCheck::default();
        gc.run_second_order(&[a.clone(), b.clone()], |t, v| mul(t, v[0], v[1]))
            .unwrap();
        gc.run_second_order(std::slice::from_ref(&a), |t, v| {
            let s = mul(t, v[0], v[0])?;
            let s = mul(t, s, v[0])?;
            affine(t, s, -1.5, 0.5)
        })
        .unwrap();
        gc.run_second_order(&[a.clone(), b.clone()], |t, v| {
            let s = add(t, v[0], v[1])?;
            let m = mul(t, s, s)?;
            let m = mean(t, m)?;
            let q = sum(t, v[1])?;
            let q = mul(t, q, q)?;
            let q = scale(t, q, 0.25)?;
            let p = mul(t, m, q)?;
            scalar_times_op(t, p, v[0])
        })
        .unwrap();
        // Positive bases: the square root of a per-sample sum, as the gradient penalty takes it.
        let pos = dev.backend().affine(&a, 0.5, 1.0).unwrap();
        for p in [0.5, -0.5, 2.0] {
            gc.run_second_order(std::slice::from_ref(&pos), |t, v| {
                let r = row_sums(t, v[0])?;
                let y = powf(t, r, p)?;
                mul(t, y, y)
            })
            .unwrap();
        }
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);

    #[test]
    fn values_and_backward_from_loss() {
        let x = test_tensor(&[3, 5], 5);
        let xv = x.to_vec().unwrap();
        let mut tape = Tape::new();
        let v = tape.leaf(x);
        let s = sum(&mut tape, v).unwrap();
        let m = mean(&mut tape, v).unwrap();
        let total: f64 = xv.iter().map(|&a| a as f64).sum();
        assert!((tape.value(s).scalar().unwrap() as f64 - total).abs() < 1e-5);
        assert!((tape.value(m).scalar().unwrap() as f64 - total / 15.0).abs() < 1e-6);
        // loss = 2 * mean(x) + sum(x): d/dx = 2/15 + 1 everywhere.
        let m2 = scale(&mut tape, m, 2.0).unwrap();
        let loss = add(&mut tape, m2, s).unwrap();
        let g = tape.backward(loss).unwrap();
        for d in g.get(v).unwrap().to_vec().unwrap() {
            assert!((d - (2.0 / 15.0 + 1.0)).abs() < 1e-6, "{d}");
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut tape = Tape::new();
        let a = tape.leaf(test_tensor(&[3, 5], 1));
        let b = tape.leaf(test_tensor(&[5, 3], 1));
        let msg = add(&mut tape, a, b).unwrap_err().to_string();
        assert!(msg.contains("[3, 5]") && msg.contains("[5, 3]"), "{msg}");
        assert!(mul(&mut tape, a, b).is_err());
    }
}
