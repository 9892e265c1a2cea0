//! Opening devices: the one module that knows every backend. The core ([`crate::tensor`], [`crate::device`],
//! [`crate::backend`]) names none of them; this module sits above the core and the backends ([`crate::cpu`],
//! [`crate::cuda`]) and turns a device spec into a [`Device`].
//!
//! Specs: `cpu`, `cuda` (GPU 0), `cuda:N`, `auto` (CUDA when a GPU and NVRTC are usable, else the CPU) and
//! `emu` (the CUDA backend on the CPU emulation runtime, for testing the kernels without a GPU).

use anyhow::{bail, Result};

use crate::backend::Precision;
use crate::cuda;
use crate::device::Device;

impl Device {
    /// Opens the device `spec` names; a CUDA backend's convolutions run at the default precision
    /// ([`Precision::from_env`]).
    pub fn parse(spec: &str) -> Result<Device> {
        open(spec, None)
    }

    /// Opens the device `spec` names, a CUDA backend's convolutions at `precision`. The CPU computes in f32:
    /// it ignores TF32 and refuses the 16-bit formats (see [`Precision`]).
    pub fn open(spec: &str, precision: Precision) -> Result<Device> {
        open(spec, Some(precision))
    }
}

fn open(spec: &str, precision: Option<Precision>) -> Result<Device> {
    let precision = || precision.map_or_else(Precision::from_env, Ok);
    let gpu = |ordinal: usize| -> Result<Device> {
        Ok(Device::Cuda(cuda::open_cuda(ordinal, precision()?)?))
    };
    let cpu = || -> Result<Device> {
        let p = precision()?;
        if p.is_half() {
            bail!(
                "precision {p} needs the CUDA backend (--device cuda or emu); the CPU backend computes in f32"
            );
        }
        Ok(Device::Cpu)
    };
    match spec {
        "cpu" => cpu(),
        "auto" => gpu(0).or_else(|_| cpu()),
        "cuda" => gpu(0),
        "emu" => Ok(Device::Cuda(cuda::open_emulated(precision()?)?)),
        s if s.starts_with("cuda:") => match s[5..].parse::<usize>() {
            Ok(i) => gpu(i),
            Err(_) => bail!("invalid device '{spec}': expected cpu, cuda, cuda:N, auto or emu"),
        },
        _ => bail!("invalid device '{spec}': expected cpu, cuda, cuda:N, auto or emu"),
    }
}

/// The NVRTC library's version (`info`).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    cuda::nvrtc::version()
}

/// Where the NVRTC library was loaded from (`info`).
pub fn nvrtc_library_path() -> Result<&'static str> {
    cuda::nvrtc::library_path()
}

/// The kernel sources built into the binary, as (file name, source) (`info`).
pub fn kernel_sources() -> Vec<(&'static str, &'static str)> {
    cuda::nvrtc::kernel_files()
        .into_iter()
        .map(|f| (f, cuda::nvrtc::source(f).unwrap_or("")))
        .collect()
}
