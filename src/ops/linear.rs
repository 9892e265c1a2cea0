//! Fully connected layer (being written).
use crate::autograd::{Tape, Var};
use anyhow::{bail, Result};
/// x [N, in], w [out, in] (PyTorch Linear layout), b [out].
pub fn linear(_tape: &mut Tape, _x: Var, _w: Var, _b: Option<Var>) -> Result<Var> {
    bail!("not yet implemented")
}
