//! The real-GPU runtime (cudarc driver API + NVRTC). (being written)

use anyhow::{bail, Result};

use super::runtime::{GpuRuntime, KernelArg, LaunchCfg};

pub struct RealRuntime;

impl RealRuntime {
    pub fn new(_ordinal: usize) -> Result<RealRuntime> {
        bail!("--device cuda: the real CUDA runtime is not built yet")
    }
}

impl GpuRuntime for RealRuntime {
    fn name(&self) -> String {
        "cuda".into()
    }
    fn alloc(&self, _bytes: usize) -> Result<u64> {
        bail!("not built yet")
    }
    fn free(&self, _ptr: u64) {}
    fn htod(&self, _dst: u64, _src: &[u8]) -> Result<()> {
        bail!("not built yet")
    }
    fn dtoh(&self, _src: u64, _dst: &mut [u8]) -> Result<()> {
        bail!("not built yet")
    }
    fn dtod(&self, _dst: u64, _src: u64, _bytes: usize) -> Result<()> {
        bail!("not built yet")
    }
    fn memset_zero(&self, _dst: u64, _bytes: usize) -> Result<()> {
        bail!("not built yet")
    }
    fn launch(&self, _kernel: &str, _cfg: LaunchCfg, _args: &[KernelArg]) -> Result<()> {
        bail!("not built yet")
    }
    fn synchronize(&self) -> Result<()> {
        bail!("not built yet")
    }
    fn is_emulated(&self) -> bool {
        false
    }
}
