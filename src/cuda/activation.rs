//! Launch code for kernels/activation.cu.

use anyhow::{ensure, Result};

use super::backend::n_i32;
use super::elementwise::vec4_cfg;
use super::runtime::KernelArg as A;
use super::CudaBackend;
use crate::backend::Activation;
use crate::tensor::Tensor;

/// Kernel name stem and the slope argument (LeakyReLU only).
fn kernel(act: Activation) -> Result<(&'static str, Option<f32>)> {
    Ok(match act {
        Activation::Relu => ("relu", None),
        Activation::LeakyRelu(s) => {
            ensure!(
                s >= 0.0 && s.is_finite(),
                "LeakyReLU slope must be a finite value >= 0 (backward uses y > 0 <=> x > 0), got {s}"
            );
            ("leaky_relu", Some(s))
        }
        Activation::Tanh => ("tanh", None),
        Activation::Sigmoid => ("sigmoid", None),
    })
}

pub fn activation(be: &CudaBackend, x: &Tensor, act: Activation) -> Result<Tensor> {
    let (stem, slope) = kernel(act)?;
    let n = n_i32(x.numel(), stem)?;
    let y = be.alloc(x.shape())?;
    if n > 0 {
        let mut args = vec![A::Ptr(be.ptr(&y)?), A::Ptr(be.ptr(x)?)];
        args.extend(slope.map(A::F32));
        args.push(A::I32(n));
        be.launch(&format!("{stem}_fwd_f32"), vec4_cfg(n as usize), &args)?;
    }
    Ok(y)
}

pub fn activation_backward(
    be: &CudaBackend,
    y: &Tensor,
    dy: &Tensor,
    act: Activation,
) -> Result<Tensor> {
    let (stem, slope) = kernel(act)?;
    ensure!(
        y.shape() == dy.shape(),
        "{stem} backward: y {:?} and dy {:?} differ",
        y.shape(),
        dy.shape()
    );
    let n = n_i32(y.numel(), stem)?;
    let dx = be.alloc(y.shape())?;
    if n > 0 {
        let mut args = vec![
            A::Ptr(be.ptr(&dx)?),
            A::Ptr(be.ptr(y)?),
            A::Ptr(be.ptr(dy)?),
        ];
        args.extend(slope.map(A::F32));
        args.push(A::I32(n));
        be.launch(&format!("{stem}_bwd_f32"), vec4_cfg(n as usize), &args)?;
    }
    Ok(dx)
}
