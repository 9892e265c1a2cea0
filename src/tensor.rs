//! Dense f32 tensors, row-major (NCHW for images), on one device.
//!
//! A `Tensor` is a shape plus a storage handle. Cloning is cheap (the data is reference counted); the CPU
//! storage is copy-on-write through [`Tensor::cpu_data_mut`]. Device storage is memory a backend allocated,
//! seen here only as an address: the backend that made it is the one that reads it.

use std::sync::Arc;

use anyhow::{bail, ensure, Result};

use crate::backend::Backend;
use crate::device::{Device, CPU};

/// Memory a device backend allocated for a tensor; it goes back to that backend when dropped.
pub trait DeviceMemory: Send + Sync {
    /// Device address of the first byte.
    fn ptr(&self) -> u64;
}

/// A device allocation owned by a GPU backend. Clones share the allocation; it returns to the backend's
/// allocator when the last clone drops.
#[derive(Clone)]
pub struct GpuBuffer {
    pub backend: Arc<dyn Backend>,
    pub mem: Arc<dyn DeviceMemory>,
}

#[derive(Clone)]
pub enum Storage {
    Cpu(Arc<Vec<f32>>),
    Gpu(GpuBuffer),
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.device().name())
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Wraps a storage; backends use this to build their outputs.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage,
        }
    }

    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        ensure!(
            data.len() == numel(shape),
            "tensor data has {} elements but shape {:?} needs {}",
            data.len(),
            shape,
            numel(shape)
        );
        match device {
            Device::Cpu => Ok(Tensor::from_storage(Storage::Cpu(Arc::new(data)), shape)),
            Device::Cuda(b) => b.from_host(&data, shape),
        }
    }

    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        device.backend().zeros(shape)
    }

    pub fn full(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(vec![value; numel(shape)], shape, device)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The shape as `[N, C, H, W]`, or an error naming `what` if the tensor is not 4-D.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        match self.shape[..] {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => bail!(
                "{what}: expected a 4-D NCHW tensor, got shape {:?}",
                self.shape
            ),
        }
    }

    /// The shape as `[N, F]`, or an error naming `what` if the tensor is not 2-D.
    pub fn dims2(&self, what: &str) -> Result<[usize; 2]> {
        match self.shape[..] {
            [n, f] => Ok([n, f]),
            _ => bail!(
                "{what}: expected a 2-D [N, F] tensor, got shape {:?}",
                self.shape
            ),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(b) => Device::Cuda(b.backend.clone()),
        }
    }

    /// The backend that owns this tensor's storage; ops dispatch through it.
    pub fn backend(&self) -> &dyn Backend {
        match &self.storage {
            Storage::Cpu(_) => &CPU,
            Storage::Gpu(b) => b.backend.as_ref(),
        }
    }

    /// Host slice of a CPU tensor (None for a GPU tensor).
    pub fn cpu_data(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Cpu(v) => Some(v.as_slice()),
            Storage::Gpu(_) => None,
        }
    }

    /// Mutable host data of a CPU tensor; copies first if the buffer is shared.
    pub fn cpu_data_mut(&mut self) -> Option<&mut Vec<f32>> {
        match &mut self.storage {
            Storage::Cpu(v) => Some(Arc::make_mut(v)),
            Storage::Gpu(_) => None,
        }
    }

    /// Copies the data to the host.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(v) => Ok(v.as_ref().clone()),
            Storage::Gpu(_) => self.backend().to_host(self),
        }
    }

    /// The single value of a one-element tensor.
    pub fn scalar(&self) -> Result<f32> {
        ensure!(
            self.numel() == 1,
            "expected a one-element tensor, got shape {:?}",
            self.shape
        );
        Ok(self.to_vec()?[0])
    }

    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device().same(device) {
            return Ok(self.clone());
        }
        Tensor::from_vec(self.to_vec()?, &self.shape, device)
    }

    /// Same data, new shape (row-major, so only the element count must agree).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        ensure!(
            numel(shape) == self.numel(),
            "cannot reshape {:?} ({} elements) to {:?}",
            self.shape,
            self.numel(),
            shape
        );
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }
}
