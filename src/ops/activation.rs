//! ReLU, LeakyReLU, Tanh, Sigmoid. Backward uses the forward output (see [`Activation`]), and so does the
//! double-backward rule.

use anyhow::Result;

use crate::autograd::{rule, Tape, Var};
use crate::backend::Activation;
use crate::ops::elementwise::{affine, filled_like, mul};

pub fn activation(tape: &mut Tape, x: Var, act: Activation) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().activation(xv, act)?;
    let saved_y = y.clone();
    Ok(tape.push_op_with_rule(
        "activation",
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                saved_y.backend().activation_backward(&saved_y, dy, act)?,
            )])
        }),
        rule(move |t, a| Ok(vec![a.grad(0, || derivative_times(t, a.out, a.dy, act))?])),
    ))
}

/// dy · act'(x) as tape ops, from the output y = act(x). ReLU's and LeakyReLU's derivative is a constant mask
/// (their second derivative is zero almost everywhere); tanh' = 1 − y² and σ' = y(1 − y) are written in y, so
/// they differentiate through y again.
pub(crate) fn derivative_times(tape: &mut Tape, y: Var, dy: Var, act: Activation) -> Result<Var> {
    let d = match act {
        Activation::Relu | Activation::LeakyRelu(_) => {
            let yv = tape.value(y);
            let ones = filled_like(yv, yv.shape(), 1.0)?;
            let mask = yv.backend().activation_backward(yv, &ones, act)?;
            tape.constant(mask)
        }
        Activation::Tanh => {
            let y2 = mul(tape, y, y)?;
            affine(tape, y2, -1.0, 1.0)?
        }
        Activation::Sigmoid => {
            let one_minus = affine(tape, y, -1.0, 1.0)?;
            mul(tape, y, one_minus)?
        }
    };
    mul(tape, dy, d)
}

pub fn relu(tape: &mut Tape, x: Var) -> Result<Var> {
    activation(tape, x, Activation::Relu)
}

/// LeakyReLU with the given negative slope (DCGAN's discriminator uses 0.2).
pub fn leaky_relu(tape: &mut Tape, x: Var, slope: f32) -> Result<Var> {
    activation(tape, x, Activation::LeakyRelu(slope))
}

pub fn tanh(tape: &mut Tape, x: Var) -> Result<Var> {
    activation(tape, x, Activation::Tanh)
}

pub fn sigmoid(tape: &mut Tape, x: Var) -> Result<Var> {
    activation(tape, x, Activation::Sigmoid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_values, GradCheck};
    use crate::tensor::Tensor;

    /// Second-order gradients of each activation, squared (so that ReLU's and LeakyReLU's constant derivatives
    /// still give a second derivative), on inputs at least 0.1 from the kink at 0.
    fn second_order(dev: &crate::Device) {
        let v: Vec<f32> = test_values(15, 3)
            .iter()
            .map(|&x| if x < 0.0 { x - 0.1 } else { x + 0.1 })
            .collect();
        let x = Tensor::from_vec(v, &[3, 5], dev).unwrap();
        for act in [
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            GradCheck::default()
                .run_second_order(std::slice::from_ref(&x), |t, v| {
                    let y = activation(t, v[0], act)?;
                    mul(t, y, y)
                })
                .unwrap_or_else(|e| panic!("{act:?}: {e}"));
            GradCheck::default()
                .run_second_order(std::slice::from_ref(&x), |t, v| activation(t, v[0], act))
                .unwrap_or_else(|e| panic!("{act:?}: {e}"));
        }
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);
}
