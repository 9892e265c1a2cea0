//! conv2d and conv_transpose2d (being written).
use crate::autograd::{Tape, Var};
use crate::backend::Conv2dParams;
use anyhow::{bail, Result};

/// x [N, C, H, W], w [O, C, kh, kw] (PyTorch Conv2d layout), no bias.
pub fn conv2d(_tape: &mut Tape, _x: Var, _w: Var, _p: Conv2dParams) -> Result<Var> {
    bail!("not yet implemented")
}

/// x [N, Cin, H, W], w [Cin, Cout, kh, kw] (PyTorch ConvTranspose2d layout), no bias. `output_size` picks the
/// output height/width when the stride makes it ambiguous; default (H-1)*s - 2p + k.
pub fn conv_transpose2d(
    _tape: &mut Tape,
    _x: Var,
    _w: Var,
    _p: Conv2dParams,
    _output_size: Option<(usize, usize)>,
) -> Result<Var> {
    bail!("not yet implemented")
}
