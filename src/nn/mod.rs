//! Parameters, layers and the GAN models.

pub mod layers;
pub mod models;
pub mod params;

pub use params::{ParamId, ParamStore};
