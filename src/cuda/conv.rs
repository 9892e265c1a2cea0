//! Convolution launch code (kernels/conv.cu). (being written by the gpu-kernels helper)

use anyhow::{bail, Result};

use super::CudaBackend;
use crate::backend::Conv2dParams;
use crate::tensor::Tensor;

pub fn conv2d(_be: &CudaBackend, _x: &Tensor, _w: &Tensor, _p: Conv2dParams) -> Result<Tensor> {
    bail!("cuda conv2d: not implemented yet")
}

pub fn conv2d_backward_data(
    _be: &CudaBackend,
    _dy: &Tensor,
    _w: &Tensor,
    _x_shape: [usize; 4],
    _p: Conv2dParams,
) -> Result<Tensor> {
    bail!("cuda conv2d_backward_data: not implemented yet")
}

pub fn conv2d_backward_weight(
    _be: &CudaBackend,
    _x: &Tensor,
    _dy: &Tensor,
    _w_shape: [usize; 4],
    _p: Conv2dParams,
) -> Result<Tensor> {
    bail!("cuda conv2d_backward_weight: not implemented yet")
}
