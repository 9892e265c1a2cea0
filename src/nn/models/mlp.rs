//! A fully connected GAN (in the spirit of Goodfellow et al. 2014), with the widths doubling towards the
//! image side in both networks. BatchNorm1d in G keeps its hidden activations well scaled; D has none, so each
//! image is judged on its own.

use anyhow::Result;

use crate::backend::Activation;
use crate::nn::layers::Sequential;
use crate::nn::params::ParamStore;
use crate::ops::random::RngStream;

use super::ModelConfig;

/// Values (parameters and buffers) of G and of D for `cfg`, counted without building them: a Linear holds
/// weight and bias, a BatchNorm1d 4 values per feature and one batch counter.
pub fn sizes(cfg: &ModelConfig) -> (u128, u128) {
    let u = |x: usize| x as u128;
    let lin = |i: u128, o: u128| i * o + o;
    let h = u(cfg.hidden);
    let img = u(cfg.image_numel());
    let mut gs = 0;
    let mut fin = u(cfg.nz + cfg.num_classes);
    for m in [1, 2, 4] {
        gs += lin(fin, m * h) + 4 * m * h + 1;
        fin = m * h;
    }
    gs += lin(fin, img);
    let ds = lin(img + u(cfg.num_classes), 4 * h) + lin(4 * h, 2 * h) + lin(2 * h, 1);
    (gs, ds)
}

/// G: Linear(nz, h) BN ReLU, Linear(h, 2h) BN ReLU, Linear(2h, 4h) BN ReLU, Linear(4h, C·H·W) Tanh.
/// A class-conditional G's input is z followed by the one-hot label (nz + num_classes features).
pub fn generator(
    cfg: &ModelConfig,
    store: &mut ParamStore,
    rng: &mut RngStream,
) -> Result<Sequential> {
    let h = cfg.hidden;
    let mut s = Sequential::new("main");
    let mut fin = cfg.nz + cfg.num_classes;
    for m in [1, 2, 4] {
        s.linear(store, rng, fin, m * h)?;
        s.batch_norm(store, rng, m * h)?;
        s.act(Activation::Relu);
        fin = m * h;
    }
    s.linear(store, rng, fin, cfg.image_numel())?;
    s.act(Activation::Tanh);
    Ok(s)
}

/// D: Linear(C·H·W, 4h) LReLU, Linear(4h, 2h) LReLU, Linear(2h, 1). A class-conditional D's input is the
/// flattened image followed by the one-hot label (C·H·W + num_classes features).
pub fn discriminator(
    cfg: &ModelConfig,
    store: &mut ParamStore,
    rng: &mut RngStream,
) -> Result<Sequential> {
    let h = cfg.hidden;
    let mut s = Sequential::new("main");
    s.linear(store, rng, cfg.image_numel() + cfg.num_classes, 4 * h)?;
    s.act(Activation::LeakyRelu(0.2));
    s.linear(store, rng, 4 * h, 2 * h)?;
    s.act(Activation::LeakyRelu(0.2));
    s.linear(store, rng, 2 * h, 1)?;
    Ok(s)
}
