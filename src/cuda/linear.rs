//! Linear layer launch code (kernels/linear.cu). (being written by the gpu-kernels helper)

use anyhow::{bail, Result};

use super::CudaBackend;
use crate::backend::LinearGrads;
use crate::tensor::Tensor;

pub fn linear(_be: &CudaBackend, _x: &Tensor, _w: &Tensor, _b: Option<&Tensor>) -> Result<Tensor> {
    bail!("cuda linear: not implemented yet")
}

pub fn linear_backward(
    _be: &CudaBackend,
    _x: &Tensor,
    _w: &Tensor,
    _dy: &Tensor,
    _need_dx: bool,
    _need_dw: bool,
    _need_db: bool,
) -> Result<LinearGrads> {
    bail!("cuda linear_backward: not implemented yet")
}
