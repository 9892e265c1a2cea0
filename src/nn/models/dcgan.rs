//! DCGAN (Radford et al. 2016) generator and discriminator, layer for layer as in PyTorch's DCGAN example
//! (`examples/dcgan/main.py`), with variants for 32×32 and 28×28 images.
//!
//! Every stride-2 layer doubles (G) or halves (D) the spatial size; the first G layer turns the 1×1 latent
//! into a 4×4 (7×7 for 28) map, and the last D layer turns that map into one logit. The width doubles at
//! each step down the resolution ladder, so the number of stages is what changes between image sizes.

use anyhow::{bail, Result};

use crate::backend::Activation;
use crate::nn::layers::Sequential;
use crate::nn::params::ParamStore;
use crate::ops::random::RngStream;

use super::ModelConfig;

/// Width multipliers (of ngf for G, coarse to fine; of ndf for D, fine to coarse) and the kernel of the layer
/// at the coarse end (= the coarsest spatial size). G and D mirror each other except at 28×28, where the
/// usual MNIST variant keeps G's wider 4·ngf start but D stops at 2·ndf.
struct Ladder {
    g: &'static [usize],
    d: &'static [usize],
    k0: usize,
}

fn ladder(image_size: usize) -> Result<Ladder> {
    Ok(match image_size {
        64 => Ladder { g: &[8, 4, 2, 1], d: &[1, 2, 4, 8], k0: 4 },
        32 => Ladder { g: &[4, 2, 1], d: &[1, 2, 4], k0: 4 },
        28 => Ladder { g: &[4, 2], d: &[1, 2], k0: 7 },
        s => bail!("the DCGAN model supports image sizes 64, 32 and 28, not {s} (the MLP model takes any size)"),
    })
}

/// Values (parameters and buffers) of G and of D for `cfg`, counted without building them: convolutions have no
/// bias, a BatchNorm holds weight, bias, running mean and variance (4 per channel) and one batch counter.
pub fn sizes(cfg: &ModelConfig) -> Result<(u128, u128)> {
    let Ladder { g, d, k0 } = ladder(cfg.image_size)?;
    let u = |x: usize| x as u128;
    let bn = |c: u128| 4 * c + 1;
    let mut gs = 0;
    let mut cin = u(cfg.nz + cfg.num_classes);
    for (i, &m) in g.iter().enumerate() {
        let cout = u(m * cfg.ngf);
        let k = u(if i == 0 { k0 } else { 4 });
        gs += cin * cout * k * k + bn(cout);
        cin = cout;
    }
    gs += cin * u(cfg.channels) * 16;
    let mut ds = 0;
    let mut cin = u(cfg.channels + cfg.num_classes);
    for (i, &m) in d.iter().enumerate() {
        let cout = u(m * cfg.ndf);
        ds += cin * cout * 16 + if i > 0 { bn(cout) } else { 0 };
        cin = cout;
    }
    ds += cin * u(k0 * k0);
    Ok((gs, ds))
}

/// G: ConvT(nz, m0·ngf, k0, 1, 0) BN ReLU, then ConvT(m·ngf, m'·ngf, 4, 2, 1) BN ReLU per stage, then
/// ConvT(→ nc, 4, 2, 1) Tanh. A class-conditional G takes nz + num_classes input channels: the one-hot label
/// joins z as extra 1×1 channels, so the first layer's weights are a learned per-class embedding.
pub fn generator(
    cfg: &ModelConfig,
    store: &mut ParamStore,
    rng: &mut RngStream,
) -> Result<Sequential> {
    let Ladder { g: mults, k0, .. } = ladder(cfg.image_size)?;
    let mut s = Sequential::new("main");
    let mut cin = cfg.nz + cfg.num_classes;
    for (i, &m) in mults.iter().enumerate() {
        let cout = m * cfg.ngf;
        if i == 0 {
            s.conv_t(store, rng, cin, cout, k0, 1, 0)?;
        } else {
            s.conv_t(store, rng, cin, cout, 4, 2, 1)?;
        }
        s.batch_norm(store, rng, cout)?;
        s.act(Activation::Relu);
        cin = cout;
    }
    s.conv_t(store, rng, cin, cfg.channels, 4, 2, 1)?;
    s.act(Activation::Tanh);
    Ok(s)
}

/// D: Conv(nc, ndf, 4, 2, 1) LReLU, then Conv(m·ndf, 2m·ndf, 4, 2, 1) BN LReLU per stage, then
/// Conv(→ 1, k0, 1, 0) giving one logit per image (PyTorch's final Sigmoid is fused into the loss). A
/// class-conditional D sees nc + num_classes input channels: the image plus one constant plane per class,
/// all zero except the plane of the image's label.
pub fn discriminator(
    cfg: &ModelConfig,
    store: &mut ParamStore,
    rng: &mut RngStream,
) -> Result<Sequential> {
    let Ladder { d: mults, k0, .. } = ladder(cfg.image_size)?;
    let mut s = Sequential::new("main");
    let lrelu = Activation::LeakyRelu(0.2);
    let mut cin = cfg.channels + cfg.num_classes;
    for (i, &m) in mults.iter().enumerate() {
        let cout = m * cfg.ndf;
        s.conv(store, rng, cin, cout, 4, 2, 1)?;
        if i > 0 {
            s.batch_norm(store, rng, cout)?;
        }
        s.act(lrelu);
        cin = cout;
    }
    s.conv(store, rng, cin, 1, k0, 1, 0)?;
    Ok(s)
}
