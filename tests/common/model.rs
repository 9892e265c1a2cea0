//! Model configurations shared by the integration tests.

use gan_engine::nn::models::{ModelConfig, ModelKind};

/// The smallest DCGAN: 28×28 grayscale, widths of 3, nz 10. Every layer kind runs, in milliseconds even on
/// the emulated backend.
pub fn tiny_dcgan() -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Dcgan,
        image_size: 28,
        channels: 1,
        nz: 10,
        ngf: 3,
        ndf: 3,
        hidden: 6,
        ..ModelConfig::default()
    }
}

/// A 28×28 grayscale DCGAN with latent size `nz` and both widths `width` (its layers have `width`, 2·`width` and
/// 4·`width` channels).
pub fn dcgan28(width: usize, nz: usize) -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Dcgan,
        image_size: 28,
        channels: 1,
        nz,
        ngf: width,
        ndf: width,
        ..ModelConfig::default()
    }
}
