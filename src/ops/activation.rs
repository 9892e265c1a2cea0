//! ReLU, LeakyReLU, Tanh, Sigmoid. Backward uses the forward output (see [`Activation`]).

use anyhow::Result;

use crate::autograd::{Tape, Var};
use crate::backend::Activation;

pub fn activation(tape: &mut Tape, x: Var, act: Activation) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().activation(xv, act)?;
    let saved_y = y.clone();
    Ok(tape.push_op(
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                saved_y.backend().activation_backward(&saved_y, dy, act)?,
            )])
        }),
    ))
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
