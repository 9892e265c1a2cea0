//! reshape, flatten, concat along channels and its slices on the tape, each with a double-backward rule.

use anyhow::{ensure, Result};

use crate::autograd::{rule, Tape, Var};
use crate::ops::elementwise::filled_like;

/// Same data, new shape (element counts must agree); the gradient is reshaped back.
pub fn reshape(tape: &mut Tape, x: Var, shape: &[usize]) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.reshape(shape)?;
    let x_shape = xv.shape().to_vec();
    let shape = x_shape.clone();
    Ok(tape.push_op_with_rule(
        "reshape",
        y,
        &[x],
        Box::new(move |dy, _need| Ok(vec![Some(dy.reshape(&x_shape)?)])),
        rule(move |t, a| Ok(vec![a.grad(0, || reshape(t, a.dy, &shape))?])),
    ))
}

/// [N, ...] -> [N, rest]
pub fn flatten(tape: &mut Tape, x: Var) -> Result<Var> {
    let s = tape.value(x).shape();
    ensure!(
        !s.is_empty(),
        "flatten: expected a tensor with a batch dimension, got shape {s:?}"
    );
    let shape = [s[0], s[1..].iter().product()];
    reshape(tape, x, &shape)
}

/// Concatenates along dim 1; each input's gradient is its slice of the output gradient.
pub fn concat_channels(tape: &mut Tape, xs: &[Var]) -> Result<Var> {
    let vals: Vec<_> = xs.iter().map(|&v| tape.value(v)).collect();
    ensure!(!vals.is_empty(), "concat_channels: no tensors given");
    let y = vals[0].backend().concat_channels(&vals)?;
    let widths: Vec<usize> = vals.iter().map(|v| v.shape()[1]).collect();
    let starts: Vec<usize> = widths
        .iter()
        .scan(0, |s, &c| {
            *s += c;
            Some(*s - c)
        })
        .collect();
    let slices: Vec<(usize, usize)> = starts.into_iter().zip(widths).collect();
    let spans = slices.clone();
    Ok(tape.push_op_with_rule(
        "concat_channels",
        y,
        xs,
        Box::new(move |dy, need| {
            let be = dy.backend();
            spans
                .iter()
                .zip(need)
                .map(|(&(start, c), &n)| n.then(|| be.slice_channels(dy, start, c)).transpose())
                .collect()
        }),
        rule(move |t, a| {
            let mut out = Vec::with_capacity(slices.len());
            for (i, &(start, c)) in slices.iter().enumerate() {
                out.push(a.grad(i, || slice_channels(t, a.dy, start, c))?);
            }
            Ok(out)
        }),
    ))
}

/// Channels [start, start + len) of x along dim 1 (the gradients of a concatenation, as a differentiable op):
/// its own gradient is dy between zeros.
pub fn slice_channels(tape: &mut Tape, x: Var, start: usize, len: usize) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().slice_channels(xv, start, len)?;
    let x_shape = xv.shape().to_vec();
    Ok(tape.push_rule_op(
        "slice_channels",
        y,
        &[x],
        rule(move |t, a| {
            Ok(vec![a.grad(0, || {
                let zeros = |t: &mut Tape, c: usize| -> Result<Var> {
                    let mut s = x_shape.clone();
                    s[1] = c;
                    let z = filled_like(t.value(a.dy), &s, 0.0)?;
                    Ok(t.constant(z))
                };
                let after = x_shape[1] - start - len;
                let mut vars = vec![];
                if start > 0 {
                    vars.push(zeros(t, start)?);
                }
                vars.push(a.dy);
                if after > 0 {
                    vars.push(zeros(t, after)?);
                }
                concat_channels(t, &vars)
            })?])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};

    /// Second-order gradients through reshape, concatenation and slicing (squared, so that they are not zero).
    fn second_order(dev: &crate::Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let (a, b) = (t(&[2, 2, 3, 2], 1), t(&[2, 3, 3, 2], 2));
        let sq = |t: &mut Tape, y: Var| crate::ops::mul(t, y, y);
        let gc = GradCheck::default();
        gc.run_second_order(&[a.clone(), b.clone()], |t, v| {
            let c = concat_channels(t, &[v[0], v[1], v[0]])?;
            let s = slice_channels(t, c, 1, 3)?;
            let f = flatten(t, s)?;
            sq(t, f)
        })
        .unwrap();
        gc.run_second_order(&[b], |t, v| {
            let s = slice_channels(t, v[0], 0, 2)?;
            let r = reshape(t, s, &[6, 4])?;
            sq(t, r)
        })
        .unwrap();
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);

    #[test]
    fn gradcheck_reshape_flatten() {
        let x = test_tensor(&[3, 5, 3, 7], 1);
        let gc = GradCheck::default();
        gc.run(std::slice::from_ref(&x), |t, v| reshape(t, v[0], &[15, 21]))
            .unwrap();
        gc.run(&[x], |t, v| {
            let f = flatten(t, v[0])?;
            assert_eq!(t.value(f).shape(), &[3, 105]);
            Ok(f)
        })
        .unwrap();
    }

    #[test]
    fn gradcheck_concat() {
        let gc = GradCheck::default();
        let a = test_tensor(&[3, 2, 3, 7], 1);
        let b = test_tensor(&[3, 5, 3, 7], 2);
        gc.run(&[a.clone(), b.clone()], |t, v| {
            concat_channels(t, &[v[0], v[1]])
        })
        .unwrap();
        // The same input twice: both slices flow back into it.
        gc.run(&[a, b], |t, v| concat_channels(t, &[v[0], v[1], v[0]]))
            .unwrap();
        let p = test_tensor(&[3, 5], 3);
        let q = test_tensor(&[3, 4], 4);
        gc.run(&[p, q], |t, v| concat_channels(t, &[v[0], v[1]]))
            .unwrap();
    }

    #[test]
    fn only_requested_gradients_and_errors() {
        let mut tape = Tape::new();
        let a = tape.constant(test_tensor(&[3, 2], 1));
        let b = tape.leaf(test_tensor(&[3, 5], 2));
        let y = concat_channels(&mut tape, &[a, b]).unwrap();
        let dy = crate::tensor::Tensor::full(&[3, 7], 1.0, &crate::device::Device::Cpu).unwrap();
        let g = tape.backward_from(y, dy).unwrap();
        assert!(g.get(a).is_none());
        assert_eq!(g.get(b).unwrap().shape(), &[3, 5]);

        let msg = reshape(&mut tape, b, &[4, 4]).unwrap_err().to_string();
        assert!(msg.contains("[3, 5]") && msg.contains("[4, 4]"), "{msg}");
        let c = tape.leaf(test_tensor(&[2, 5], 2));
        assert!(concat_channels(&mut tape, &[b, c]).is_err());
        assert!(concat_channels(&mut tape, &[]).is_err());
    }
}
