//! reshape, flatten, concat along channels on the tape.

use anyhow::{ensure, Result};

use crate::autograd::{Tape, Var};

/// Same data, new shape (element counts must agree); the gradient is reshaped back.
pub fn reshape(tape: &mut Tape, x: Var, shape: &[usize]) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.reshape(shape)?;
    let x_shape = xv.shape().to_vec();
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| Ok(vec![Some(dy.reshape(&x_shape)?)])),
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
    Ok(tape.push_op(
        y,
        xs,
        Box::new(move |dy, need| {
            let mut start = 0;
            let mut out = Vec::with_capacity(widths.len());
            for (&c, &n) in widths.iter().zip(need) {
                out.push(if n {
                    Some(dy.backend().slice_channels(dy, start, c)?)
                } else {
                    None
                });
                start += c;
            }
            Ok(out)
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};

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
