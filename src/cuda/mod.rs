//! The CUDA backend: kernels/*.cu compiled by NVRTC and launched through cudarc, or executed by the CPU
//! emulation of the CUDA execution model. (being written)

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::backend::Backend;
use crate::device::Device;

/// A device allocation owned by a GPU backend.
#[derive(Clone)]
pub struct GpuBuffer {
    pub backend: Arc<dyn Backend>,
}

pub fn open_cuda(_ordinal: usize) -> Result<Device> {
    bail!("--device cuda: the CUDA backend is not built yet")
}

pub fn open_emulated() -> Result<Device> {
    bail!("--device emu: the CUDA emulation runtime is not built yet")
}
