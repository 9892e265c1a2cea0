//! Studies of trained GANs: training curves, discriminator feature views, latent-space walks.

pub mod dfeatures;
pub mod latent;
pub mod pca;
pub mod plot;
pub mod tsne;
