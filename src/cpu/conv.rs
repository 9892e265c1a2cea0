//! Convolution on the CPU: im2col / col2im around the packed GEMM. (being written)
use crate::backend::Conv2dParams;
use crate::tensor::Tensor;
use anyhow::Result;
pub fn forward(_x: &Tensor, _w: &Tensor, _p: Conv2dParams) -> Result<Tensor> {
    anyhow::bail!("not yet implemented")
}
pub fn backward_data(
    _dy: &Tensor,
    _w: &Tensor,
    _x_shape: [usize; 4],
    _p: Conv2dParams,
) -> Result<Tensor> {
    anyhow::bail!("not yet implemented")
}
pub fn backward_weight(
    _x: &Tensor,
    _dy: &Tensor,
    _w_shape: [usize; 4],
    _p: Conv2dParams,
) -> Result<Tensor> {
    anyhow::bail!("not yet implemented")
}
