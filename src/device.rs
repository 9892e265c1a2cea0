//! Where tensors live and which backend runs the ops.
//!
//! The core names no backend module: the host backend's type is declared here and implemented by the cpu
//! module, and GPU backends arrive as trait objects. Devices are opened from a spec by
//! [`crate::open`] (`Device::parse`, `Device::open`), the one module that knows every backend.

use std::sync::Arc;

use crate::backend::Backend;

/// The host backend. Declared in the core so host tensors can reach it; its [`Backend`] implementation is
/// the cpu module's.
pub struct CpuBackend;

/// The one CPU backend instance.
pub static CPU: CpuBackend = CpuBackend;

#[derive(Clone)]
pub enum Device {
    Cpu,
    /// A GPU backend: our CUDA kernels, on a real GPU or on the CPU emulation runtime.
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
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}
