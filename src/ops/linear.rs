//! Fully connected layer on the tape.

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::backend::LinearNeed;

/// x [N, in], w [out, in] (PyTorch Linear layout), b [out].
pub fn linear(tape: &mut Tape, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
    let (xv, wv) = (tape.value(x).clone(), tape.value(w).clone());
    let y = xv.backend().linear(&xv, &wv, b.map(|b| tape.value(b)))?;
    let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
    let has_bias = b.is_some();
    Ok(tape.push_op(
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
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

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
