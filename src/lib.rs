//! gan-engine: a GAN training engine with hand-written CUDA kernels and a CPU reference backend.
//!
//! Layers, from the bottom up:
//! - [`tensor`] / [`device`]: f32 NCHW tensors that live on a device.
//! - [`backend`]: the op interface (`Backend` trait) and the capabilities only some backends have. These three
//!   files are the core; they name no backend.
//! - [`cpu`] implements the trait on the host; [`cuda`] implements it with our kernels, on a real GPU (cudarc +
//!   NVRTC) or on the CPU emulation of the CUDA execution model.
//! - [`open`]: turns a device spec (`cpu`, `cuda:N`, `emu`, ...) into a device; the one module above both
//!   backends.
//! - [`autograd`]: the tape; [`ops`]: differentiable ops on the tape (forward + backward wiring per op).
//! - [`nn`], [`optim`]: parameters, layers, DCGAN / MLP models, Adam.
//! - [`data`], [`io`], [`checkpoint`], [`train`]: datasets, image grids / .npy, safetensors checkpoints, the GAN loop.

pub mod autograd;
pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod device;
pub mod fid;
pub mod io;
pub mod nn;
pub mod open;
pub mod ops;
pub mod optim;
pub mod study;
pub mod tensor;
pub mod train;

pub use anyhow::{Error, Result};
pub use autograd::{Tape, Var};
pub use backend::Backend;
pub use device::Device;
pub use tensor::Tensor;
