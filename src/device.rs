//! Where tensors live and which backend runs the ops.

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::backend::Backend;
use crate::cpu::CPU;

#[derive(Clone)]
pub enum Device {
    Cpu,
    /// Our CUDA kernels, on a real GPU or on the CPU emulation runtime (see [`crate::cuda`]).
    Cuda(Arc<dyn Backend>),
}

impl Device {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Device::Cpu => &CPU,
            Device::Cuda(b) => b.as_ref(),
        }
    }

    pub fn name(&self) -> String {
        self.backend().name()
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Same device: CPU == CPU, or the same GPU backend instance.
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Parses `cpu`, `cuda`, `cuda:N`, `auto` (CUDA when a GPU and NVRTC are usable, else CPU) and `emu`
    /// (the CUDA backend on the CPU emulation runtime, for testing the kernels without a GPU).
    pub fn parse(spec: &str) -> Result<Device> {
        match spec {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(crate::cuda::open_cuda(0).unwrap_or(Device::Cpu)),
            "cuda" => crate::cuda::open_cuda(0),
            "emu" => crate::cuda::open_emulated(),
            s if s.starts_with("cuda:") => match s[5..].parse::<usize>() {
                Ok(i) => crate::cuda::open_cuda(i),
                Err(_) => bail!("invalid device '{spec}': expected cpu, cuda, cuda:N, auto or emu"),
            },
            _ => bail!("invalid device '{spec}': expected cpu, cuda, cuda:N, auto or emu"),
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}
