//! add, mul, scale, sum, mean on the tape.

use anyhow::{ensure, Result};

use crate::autograd::{Tape, Var};
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
    Ok(tape.push_op(
        y,
        &[a, b],
        Box::new(move |dy, need| {
            Ok(vec![
                need[0].then(|| dy.clone()),
                need[1].then(|| dy.clone()),
            ])
        }),
    ))
}

pub fn mul(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    let (av, bv) = (tape.value(a).clone(), tape.value(b).clone());
    let y = av.backend().mul(&av, &bv)?;
    Ok(tape.push_op(
        y,
        &[a, b],
        Box::new(move |dy, need| {
            let be = dy.backend();
            let da = if need[0] {
                Some(be.mul(dy, &bv)?)
            } else {
                None
            };
            let db = if need[1] {
                Some(be.mul(dy, &av)?)
            } else {
                None
            };
            Ok(vec![da, db])
        }),
    ))
}

/// alpha * x
pub fn scale(tape: &mut Tape, x: Var, alpha: f32) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().affine(xv, alpha, 0.0)?;
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| Ok(vec![Some(dy.backend().affine(dy, alpha, 0.0)?)])),
    ))
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
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| {
            let w = filled_like(dy, &x_shape, weight)?;
            Ok(vec![Some(scalar_times(dy, &w)?)])
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
