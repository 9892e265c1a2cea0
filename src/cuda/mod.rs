//! The CUDA backend: kernels/*.cu compiled by NVRTC and launched through cudarc ([`real`]), or executed by
//! the CPU emulation of the CUDA execution model ([`emu`], feature `emulation`).
//!
//! - [`runtime`]: the `GpuRuntime` trait both runtimes implement, launch configs, kernel arguments, and the
//!   kernel signature table parsed from the sources at build time.
//! - [`backend`]: `CudaBackend`, the `Backend` implementation; op families live in their own files
//!   (elementwise, activation, loss, optim, random, shape, conv with conv_narrow and conv_nhwc, batchnorm,
//!   linear, pool, resize), each one launch helper per op; [`operand_cache`] keeps conv_nhwc's operand copies.
//! - [`alloc`]: the caching allocator behind every tensor.
//! - [`tuning`]: the GEMM launch choices a tuning run may override (tile, split-K) through the environment.

pub mod activation;
pub mod alloc;
pub mod backend;
pub mod batchnorm;
pub mod conv;
mod conv_narrow;
mod conv_nhwc;
pub mod elementwise;
#[cfg(feature = "emulation")]
pub mod emu;
pub mod linear;
pub mod loss;
pub mod nvrtc;
mod operand_cache;
pub mod optim;
pub mod pool;
pub mod random;
pub mod real;
pub mod resize;
pub mod runtime;
pub mod shape;
mod tensor_list;
pub mod tuning;

use std::sync::Arc;

use anyhow::Result;

pub use crate::backend::Precision;
pub use crate::tensor::GpuBuffer;
pub use alloc::{AllocStats, DeviceAlloc};
pub use backend::CudaBackend;
pub use runtime::{launches_between, GpuRuntime, KernelArg, LaunchCfg, TransferCounts};

/// The CUDA backend on GPU `ordinal` (real hardware: needs libcuda and libnvrtc at run time), its convolutions
/// at `precision`.
pub fn open_cuda(ordinal: usize, precision: Precision) -> Result<Arc<CudaBackend>> {
    let tuning = tuning::GemmTuning::from_env()?;
    let rt = real::RealRuntime::new(ordinal)?;
    let be = CudaBackend::new(Arc::new(rt));
    be.set_precision(precision);
    be.set_gemm_tuning(tuning);
    Ok(be)
}

/// The CUDA backend on the CPU emulation runtime: the same kernels and launch code, executed on the host.
pub fn open_emulated(precision: Precision) -> Result<Arc<CudaBackend>> {
    #[cfg(feature = "emulation")]
    {
        let tuning = tuning::GemmTuning::from_env()?;
        let be = CudaBackend::new(Arc::new(emu::EmuRuntime::new()));
        be.set_precision(precision);
        be.set_gemm_tuning(tuning);
        Ok(be)
    }
    #[cfg(not(feature = "emulation"))]
    {
        let _ = precision;
        anyhow::bail!("--device emu: this binary was built without the `emulation` feature")
    }
}

/// [`open_cuda`] at the default precision ([`Precision::from_env`]), for tests and benchmarks.
pub fn cuda_backend(ordinal: usize) -> Result<Arc<CudaBackend>> {
    open_cuda(ordinal, Precision::from_env()?)
}

/// [`open_emulated`] at the default precision ([`Precision::from_env`]), for tests and benchmarks.
pub fn emulated_backend() -> Result<Arc<CudaBackend>> {
    open_emulated(Precision::from_env()?)
}
