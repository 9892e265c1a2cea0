//! Differentiable ops on the [`Tape`](crate::autograd::Tape).
//!
//! One file per op family. Each file holds the op's public function (forward through `tensor.backend()`, then
//! the backward closure recorded on the tape, and, where the op has one, its double-backward rule: the same
//! gradients recorded as tape ops, see [`crate::autograd::Tape::grad_graph`]) and its tests (finite-difference
//! gradient checks, first and second order). The numerical work lives in the backends: `src/cpu/<family>.rs`
//! and `src/cuda/<family>.rs` + `kernels/<family>.cu`.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod gradcheck;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod random;
pub mod resize;
pub mod shape;

pub use activation::{activation, leaky_relu, relu, sigmoid, tanh};
pub use batchnorm::{batch_norm, batch_norm_act, batch_norm_act_from_parts};
pub use conv::{
    conv2d, conv2d_act, conv2d_with_stats, conv_transpose2d, conv_transpose2d_with_stats,
};
pub use elementwise::{add, mean, mul, scale, sum};
pub use linear::linear;
pub use loss::bce_with_logits;
pub use pool::{avg_pool2d, max_pool2d};
pub use resize::{resize_bilinear, resize_conv2d, upsample_nearest};
pub use shape::{concat_channels, flatten, reshape};
