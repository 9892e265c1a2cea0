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

/// One test body, `fn(&Device)`, run as one `#[test]` per device the build can open: `<name>::cpu`, and
/// `<name>::emu` (the CUDA kernels on the CPU emulation) with the `emulation` feature. Real GPUs are covered by
/// the integration tests that GAN_ENGINE_TEST_DEVICE=cuda switches.
#[cfg(test)]
macro_rules! test_devices {
    ($(#[$meta:meta])* $name:ident => $body:path) => {
        $(#[$meta])*
        mod $name {
            #[test]
            fn cpu() {
                $body(&$crate::device::Device::Cpu);
            }

            #[cfg(feature = "emulation")]
            #[test]
            fn emu() {
                $body(&$crate::device::Device::parse("emu").expect("the emulated CUDA backend must open"));
            }
        }
    };
}

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
pub mod limits;
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
