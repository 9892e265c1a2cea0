//! Seeded, counter-based random tensors.
//!
//! The numbers come from the backends' Philox4x32-10 generator (layout in [`crate::cpu::random`]), so a CPU
//! and a GPU stream with the same (seed, offset) draw identical integers.

use anyhow::Result;

use crate::backend::blocks_for;
use crate::device::Device;
use crate::tensor::{numel, Tensor};

/// A Philox stream: a seed and a counter offset. Each draw advances the offset, so (seed, offset) is the whole
/// state (saved in checkpoints for exact resume), and CPU and GPU draw identical numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngStream {
    pub seed: u64,
    pub offset: u64,
}

impl RngStream {
    pub fn new(seed: u64) -> Self {
        RngStream { seed, offset: 0 }
    }

    /// Normal(mean, std) samples on `device`; advances the offset past the counter blocks used.
    pub fn normal(
        &mut self,
        shape: &[usize],
        mean: f32,
        std: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let t = device
            .backend()
            .randn(shape, mean, std, self.seed, self.offset)?;
        self.advance(shape);
        Ok(t)
    }

    /// Uniform [lo, hi) samples on `device`; advances the offset past the counter blocks used.
    pub fn uniform(
        &mut self,
        shape: &[usize],
        lo: f32,
        hi: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let t = device
            .backend()
            .rand_uniform(shape, lo, hi, self.seed, self.offset)?;
        self.advance(shape);
        Ok(t)
    }

    /// Each block yields four numbers; a partly used block is not reused, so draws never overlap.
    fn advance(&mut self, shape: &[usize]) {
        self.offset = self.offset.wrapping_add(blocks_for(numel(shape)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_advance_and_match_the_backend() {
        let dev = Device::Cpu;
        let mut s = RngStream::new(77);
        let a = s.normal(&[3, 5], 0.0, 1.0, &dev).unwrap();
        assert_eq!(a.shape(), &[3, 5]);
        assert_eq!(s.offset, 4); // ceil(15 / 4)
        let b = s.uniform(&[2, 2], -1.0, 1.0, &dev).unwrap();
        assert_eq!(s.offset, 5);
        assert_eq!(
            a.to_vec().unwrap(),
            crate::cpu::random::normal(15, 0.0, 1.0, 77, 0)
        );
        assert_eq!(
            b.to_vec().unwrap(),
            crate::cpu::random::uniform(4, -1.0, 1.0, 77, 4)
        );
        // Replaying from a saved state reproduces the draw.
        let mut r = RngStream {
            seed: 77,
            offset: 4,
        };
        assert_eq!(
            r.uniform(&[2, 2], -1.0, 1.0, &dev)
                .unwrap()
                .to_vec()
                .unwrap(),
            b.to_vec().unwrap()
        );
        // Consecutive draws do not repeat numbers.
        let c = s.normal(&[3, 5], 0.0, 1.0, &dev).unwrap();
        assert_ne!(a.to_vec().unwrap(), c.to_vec().unwrap());
    }
}
