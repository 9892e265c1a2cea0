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
