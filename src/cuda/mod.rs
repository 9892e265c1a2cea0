//! The CUDA backend: kernels/*.cu compiled by NVRTC and launched through cudarc ([`real`]), or executed by
//! the CPU emulation of the CUDA execution model ([`emu`], feature `emulation`).
//!
//! - [`runtime`]: the `GpuRuntime` trait both runtimes implement, launch configs, kernel arguments, and the
//!   kernel signature table parsed from the sources at build time.
//! - [`backend`]: `CudaBackend`, the `Backend` implementation; op families live in their own files
//!   (elementwise, activation, loss, optim, random, shape, conv, batchnorm, linear, pool, resize), each one launch helper per op.
//! - [`alloc`]: the caching allocator behind every tensor.

pub mod activation;
pub mod alloc;
pub mod backend;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
#[cfg(feature = "emulation")]
pub mod emu;
pub mod linear;
pub mod loss;
pub mod nvrtc;
pub mod optim;
pub mod pool;
pub mod random;
pub mod real;
pub mod resize;
pub mod runtime;
pub mod shape;

use std::sync::Arc;

use anyhow::Result;

use crate::backend::Backend;
use crate::device::Device;

pub use alloc::{AllocStats, DeviceAlloc};
pub use backend::CudaBackend;
pub use conv::{set_default_precision, Precision};
pub use runtime::{GpuRuntime, KernelArg, LaunchCfg, TransferCounts};

/// A device allocation owned by a GPU backend. Clones share the allocation; it returns to the backend's
/// caching allocator when the last clone drops.
#[derive(Clone)]
pub struct GpuBuffer {
    pub backend: Arc<dyn Backend>,
    pub mem: Arc<DeviceAlloc>,
}

/// The CUDA backend on GPU `ordinal` (real hardware: needs libcuda and libnvrtc at run time).
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    Ok(Device::Cuda(cuda_backend(ordinal)?))
}

/// The CUDA backend on the CPU emulation runtime: the same kernels and launch code, executed on the host.
pub fn open_emulated() -> Result<Device> {
    Ok(Device::Cuda(emulated_backend()?))
}

/// Like [`open_cuda`], but the concrete backend (tests and benchmarks launch kernels and read allocator stats).
pub fn cuda_backend(ordinal: usize) -> Result<Arc<CudaBackend>> {
    let rt = real::RealRuntime::new(ordinal)?;
    let be = CudaBackend::new(Arc::new(rt));
    be.set_precision(conv::default_precision()?);
    Ok(be)
}

/// Like [`open_emulated`], but the concrete backend.
pub fn emulated_backend() -> Result<Arc<CudaBackend>> {
    #[cfg(feature = "emulation")]
    {
        let be = CudaBackend::new(Arc::new(emu::EmuRuntime::new()));
        be.set_precision(conv::default_precision()?);
        Ok(be)
    }
    #[cfg(not(feature = "emulation"))]
    {
        anyhow::bail!("--device emu: this binary was built without the `emulation` feature")
    }
}
