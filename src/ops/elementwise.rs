//! add, mul, scale, sum, mean (being written).
use crate::autograd::{Tape, Var};
use anyhow::{bail, Result};
pub fn add(_tape: &mut Tape, _a: Var, _b: Var) -> Result<Var> {
    bail!("not yet implemented")
}
pub fn mul(_tape: &mut Tape, _a: Var, _b: Var) -> Result<Var> {
    bail!("not yet implemented")
}
/// alpha * x
pub fn scale(_tape: &mut Tape, _x: Var, _alpha: f32) -> Result<Var> {
    bail!("not yet implemented")
}
/// sum of all elements -> [1]
pub fn sum(_tape: &mut Tape, _x: Var) -> Result<Var> {
    bail!("not yet implemented")
}
/// mean of all elements -> [1]
pub fn mean(_tape: &mut Tape, _x: Var) -> Result<Var> {
    bail!("not yet implemented")
}
