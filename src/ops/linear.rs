//! Fully connected layer on the tape.
//!
//! Its gradients are two more products, dx = dy·w and dw = dyᵀ·x, recorded for double backward as the ops
//! [`linear_dx`] and [`linear_dw`]; the three products' gradients are each other, so the set is closed under
//! differentiation. Both run through [`crate::backend::Backend::linear_backward`], which takes the shape of the
//! operand it does not read from a tensor of that shape (a "shape witness", shared, not copied).

use anyhow::Result;

use crate::autograd::{rule, Tape, Var};
use crate::backend::LinearNeed;
use crate::ops::elementwise::filled_like;
use crate::ops::shape::reshape;
use crate::tensor::Tensor;

/// x [N, in], w [out, in] (PyTorch Linear layout), b [out].
pub fn linear(tape: &mut Tape, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
    let (xv, wv) = (tape.value(x).clone(), tape.value(w).clone());
    let y = xv.backend().linear(&xv, &wv, b.map(|b| tape.value(b)))?;
    let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
    let has_bias = b.is_some();
    let (x_like, w_like) = (xv.clone(), wv.clone());
    Ok(tape.push_op_with_rule(
        "linear",
        y,
        &inputs,
        Box::new(move |dy, need| {
            let g = dy.backend().linear_backward(
                &xv,
                &wv,
                dy,
                LinearNeed {
                    dx: need[0],
                    dw: need[1],
                    db: has_bias && need[2],
                },
            )?;
            let mut out = vec![g.dx, g.dw];
            if has_bias {
                out.push(g.db);
            }
            Ok(out)
        }),
        rule(move |t, a| {
            let (x, w) = (a.inputs[0], a.inputs[1]);
            let mut out = vec![
                a.grad(0, || linear_dx(t, a.dy, w, &x_like))?,
                a.grad(1, || linear_dw(t, a.dy, x, &w_like))?,
            ];
            if has_bias {
                out.push(a.grad(2, || column_sums(t, a.dy))?);
            }
            Ok(out)
        }),
    ))
}

/// dy [N, out] · w [out, in] -> [N, in] (linear's input gradient); `x_like` has the shape [N, in].
pub fn linear_dx(tape: &mut Tape, dy: Var, w: Var, x_like: &Tensor) -> Result<Var> {
    linear_grad(tape, Operand::X, dy, w, x_like)
}

/// dyᵀ [out, N] · x [N, in] -> [out, in] (linear's weight gradient); `w_like` has the shape [out, in].
pub fn linear_dw(tape: &mut Tape, dy: Var, x: Var, w_like: &Tensor) -> Result<Var> {
    linear_grad(tape, Operand::W, dy, x, w_like)
}

/// Which of linear's two operands a gradient op computes the gradient of.
#[derive(Clone, Copy)]
enum Operand {
    X,
    W,
}

/// The gradient of operand `of` from dy and the other operand `other`. Its own gradient for dy is the forward
/// product again, and for `other` the gradient of the other operand, taken with the incoming gradient in its
/// place.
fn linear_grad(tape: &mut Tape, of: Operand, dy: Var, other: Var, like: &Tensor) -> Result<Var> {
    let (dyv, ov) = (tape.value(dy), tape.value(other));
    let g = match of {
        Operand::X => {
            dyv.backend()
                .linear_backward(like, ov, dyv, LinearNeed::DX)?
                .dx
        }
        Operand::W => {
            dyv.backend()
                .linear_backward(ov, like, dyv, LinearNeed::DW)?
                .dw
        }
    };
    let g = g.ok_or_else(|| anyhow::anyhow!("internal: linear_backward gave no gradient"))?;
    let name = match of {
        Operand::X => "linear_dx",
        Operand::W => "linear_dw",
    };
    Ok(tape.push_rule_op(
        name,
        g,
        &[dy, other],
        rule(move |t, a| {
            let (dy, other) = (a.inputs[0], a.inputs[1]);
            let other_like = t.value(other).clone();
            let flipped = match of {
                Operand::X => Operand::W,
                Operand::W => Operand::X,
            };
            Ok(vec![
                a.grad(0, || match of {
                    Operand::X => linear(t, a.dy, other, None),
                    Operand::W => linear(t, other, a.dy, None),
                })?,
                a.grad(1, || linear_grad(t, flipped, dy, a.dy, &other_like))?,
            ])
        }),
    ))
}

/// Column sums of dy [N, out] -> [out] (the bias gradient): dyᵀ times a column of ones.
fn column_sums(tape: &mut Tape, dy: Var) -> Result<Var> {
    let dyv = tape.value(dy);
    let [n, out] = dyv.dims2("linear bias gradient dy")?;
    let ones = tape.constant(filled_like(dyv, &[n, 1], 1.0)?);
    let w_like = filled_like(tape.value(dy), &[out, 1], 0.0)?;
    let s = linear_dw(tape, dy, ones, &w_like)?;
    reshape(tape, s, &[out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

    /// Second-order gradients of the layer and of its two gradient products (whose own gradients are the
    /// third-order terms of the layer).
    fn second_order(dev: &crate::Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let (x, w, b, dy) = (t(&[3, 5], 1), t(&[4, 5], 2), t(&[4], 3), t(&[3, 4], 4));
        let gc = GradCheck::default();
        gc.run_second_order(&[x.clone(), w.clone(), b], |t, v| {
            let y = linear(t, v[0], v[1], Some(v[2]))?;
            crate::ops::mul(t, y, y)
        })
        .unwrap();
        gc.run_second_order(&[x.clone(), w.clone()], |t, v| {
            let y = linear(t, v[0], v[1], None)?;
            crate::ops::mul(t, y, y)
        })
        .unwrap();
        let (x_like, w_like) = (x.clone(), w.clone());
        gc.run_second_order(&[dy.clone(), w], |t, v| {
            let y = linear_dx(t, v[0], v[1], &x_like)?;
            crate::ops::mul(t, y, y)
        })
        .unwrap();
        gc.run_second_order(&[dy, x], |t, v| {
            let y = linear_dw(t, v[0], v[1], &w_like)?;
            crate::ops::mul(t, y, y)
        })
        .unwrap();
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);

    #[test]
    fn gradcheck_with_and_without_bias() {
        let x = test_tensor(&[3, 5], 1);
        let w = test_tensor(&[7, 5], 2);
        let b = test_tensor(&[7], 3);
        let gc = GradCheck::default();
        gc.run(&[x.clone(), w.clone(), b], |t, v| {
            linear(t, v[0], v[1], Some(v[2]))
        })
        .unwrap();
        gc.run(&[x, w], |t, v| linear(t, v[0], v[1], None)).unwrap();
    }

    #[test]
    fn only_requested_gradients() {
        // x a constant (e.g. data): only the weight and bias get gradients.
        let mut tape = Tape::new();
        let x = tape.constant(test_tensor(&[3, 5], 1));
        let w = tape.leaf(test_tensor(&[7, 5], 2));
        let b = tape.leaf(test_tensor(&[7], 3));
        let y = linear(&mut tape, x, w, Some(b)).unwrap();
        let dy = Tensor::full(&[3, 7], 1.0, &crate::device::Device::Cpu).unwrap();
        let g = tape.backward_from(y, dy).unwrap();
        assert!(g.get(x).is_none());
        assert_eq!(g.get(w).unwrap().shape(), &[7, 5]);
        assert_eq!(g.get(b).unwrap().to_vec().unwrap(), vec![3.0; 7]);
    }

    #[test]
    fn shape_error() {
        let mut tape = Tape::new();
        let x = tape.leaf(test_tensor(&[3, 5], 1));
        let w = tape.leaf(test_tensor(&[7, 6], 2));
        let msg = linear(&mut tape, x, w, None).unwrap_err().to_string();
        assert!(msg.contains("[3, 5]") && msg.contains("[7, 6]"), "{msg}");
    }
}
