//! The GAN training loop (being written).
