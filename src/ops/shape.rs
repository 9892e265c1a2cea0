//! reshape, flatten, concat along channels (being written).
use crate::autograd::{Tape, Var};
use anyhow::{bail, Result};
pub fn reshape(_tape: &mut Tape, _x: Var, _shape: &[usize]) -> Result<Var> {
    bail!("not yet implemented")
}
/// [N, ...] -> [N, rest]
pub fn flatten(_tape: &mut Tape, _x: Var) -> Result<Var> {
    bail!("not yet implemented")
}
pub fn concat_channels(_tape: &mut Tape, _xs: &[Var]) -> Result<Var> {
    bail!("not yet implemented")
}
