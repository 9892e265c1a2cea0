//! DCGAN (Radford et al. 2016) generator and discriminator, layer for layer as in PyTorch's DCGAN example
//! (`examples/dcgan/main.py`), with variants for 32×32 and 28×28 images.
//!
//! Every stride-2 layer doubles (G) or halves (D) the spatial size; the first G layer turns the 1×1 latent
//! into a 4×4 (7×7 for 28) map, and the last D layer turns that map into one logit. The width doubles at
//! each step down the resolution ladder, so the number of stages is what changes between image sizes.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Activation, Pool2d};
use crate::nn::layers::{ConvShape, Sequential};
use crate::nn::params::ParamStore;
use crate::ops::random::RngStream;

use super::ModelConfig;

/// The architecture guidelines of the DCGAN paper (Radford et al. 2016, section 3), each a switch so that an
/// ablation can show what it is for. The defaults are the paper's; checkpoints record the choices (a checkpoint
/// written before they existed has the defaults), so `sample`, `fid` and a resume rebuild the same networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tricks {
    /// Batch norm after every G layer but the output one.
    pub g_batch_norm: bool,
    /// Batch norm after every D layer but the input one.
    pub d_batch_norm: bool,
    /// G's hidden activation (the paper: ReLU).
    pub g_act: Nonlinearity,
    /// D's activation (the paper: LeakyReLU 0.2).
    pub d_act: Nonlinearity,
    /// How D halves the resolution (the paper: strided convolutions instead of pooling).
    pub d_downsample: Downsample,
    /// How G doubles the resolution (the paper: transposed convolutions).
    pub g_upsample: Upsample,
}

impl Default for Tricks {
    fn default() -> Self {
        Tricks {
            g_batch_norm: true,
            d_batch_norm: true,
            g_act: Nonlinearity::Relu,
            d_act: Nonlinearity::Leaky,
            d_downsample: Downsample::Stride,
            g_upsample: Upsample::Convt,
        }
    }
}

impl Tricks {
    /// The switches that differ from the paper, as the flags that set them (empty for the paper's model).
    pub fn flags(&self) -> Vec<String> {
        let paper = Tricks::default();
        // The value as the command line spells it (clap's name for the variant).
        fn arg(v: impl clap::ValueEnum) -> String {
            let v = v.to_possible_value().expect("every variant has a name");
            v.get_name().to_string()
        }
        let mut f = vec![];
        if !self.g_batch_norm {
            f.push("--no-g-batch-norm".to_string());
        }
        if !self.d_batch_norm {
            f.push("--no-d-batch-norm".to_string());
        }
        if self.g_act != paper.g_act {
            f.push(format!("--g-act {}", arg(self.g_act)));
        }
        if self.d_act != paper.d_act {
            f.push(format!("--d-act {}", arg(self.d_act)));
        }
        if self.d_downsample != paper.d_downsample {
            f.push(format!("--d-downsample {}", arg(self.d_downsample)));
        }
        if self.g_upsample != paper.g_upsample {
            f.push(format!("--g-upsample {}", arg(self.g_upsample)));
        }
        f
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// ReLU.
    Relu,
    /// LeakyReLU with slope 0.2.
    Leaky,
}

impl Nonlinearity {
    fn activation(self) -> Activation {
        match self {
            Nonlinearity::Relu => Activation::Relu,
            Nonlinearity::Leaky => Activation::LeakyRelu(0.2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Downsample {
    /// Conv 4×4 with stride 2.
    Stride,
    /// Conv 3×3 with stride 1, then 2×2 max pooling with stride 2.
    Maxpool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// ConvTranspose 4×4 with stride 2.
    Convt,
    /// 2× nearest-neighbour resize, then Conv 3×3 with stride 1 (Odena et al. 2016: no checkerboard artifacts).
    Nearest,
}

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
    let t = cfg.tricks;
    let u = |x: usize| x as u128;
    let bn = |c: u128, on: bool| if on { 4 * c + 1 } else { 0 };
    let mut gs = 0;
    let mut cin = u(cfg.nz + cfg.num_classes);
    let up_taps = u(g_kernel(t).pow(2));
    for (i, &m) in g.iter().enumerate() {
        let cout = u(m * cfg.ngf);
        let taps = if i == 0 { u(k0 * k0) } else { up_taps };
        gs += cin * cout * taps + bn(cout, t.g_batch_norm);
        cin = cout;
    }
    gs += cin * u(cfg.channels) * up_taps;
    let mut ds = 0;
    let mut cin = u(cfg.channels + cfg.num_classes);
    let taps = u(d_kernel(t).pow(2));
    for (i, &m) in d.iter().enumerate() {
        let cout = u(m * cfg.ndf);
        ds += cin * cout * taps + bn(cout, i > 0 && t.d_batch_norm);
        cin = cout;
    }
    ds += cin * u(k0 * k0);
    Ok((gs, ds))
}

/// The kernel of G's doubling convolutions.
fn g_kernel(t: Tricks) -> usize {
    match t.g_upsample {
        Upsample::Convt => 4,
        Upsample::Nearest => 3,
    }
}

/// G's doubling stage from `cin` to `cout` channels.
fn g_double(
    s: &mut Sequential,
    store: &mut ParamStore,
    rng: &mut RngStream,
    t: Tricks,
    cin: usize,
    cout: usize,
) -> Result<()> {
    match t.g_upsample {
        Upsample::Convt => s.conv_t(store, rng, ConvShape::new(cin, cout, 4, 2, 1)),
        Upsample::Nearest => {
            s.upsample(2);
            s.conv(store, rng, ConvShape::new(cin, cout, 3, 1, 1))
        }
    }
}

/// The kernel of D's halving convolutions.
fn d_kernel(t: Tricks) -> usize {
    match t.d_downsample {
        Downsample::Stride => 4,
        Downsample::Maxpool => 3,
    }
}

/// G: ConvT(nz, m0·ngf, k0, 1, 0) BN ReLU, then ConvT(m·ngf, m'·ngf, 4, 2, 1) BN ReLU per stage, then
/// ConvT(→ nc, 4, 2, 1) Tanh (with `--g-upsample nearest` each doubling ConvT is Upsample(2) Conv(3, 1, 1); BN
/// and ReLU as `cfg.tricks` says). A class-conditional G takes nz + num_classes input channels: the one-hot label
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
            s.conv_t(store, rng, ConvShape::new(cin, cout, k0, 1, 0))?;
        } else {
            g_double(&mut s, store, rng, cfg.tricks, cin, cout)?;
        }
        if cfg.tricks.g_batch_norm {
            s.batch_norm(store, rng, cout)?;
        }
        s.act(cfg.tricks.g_act.activation());
        cin = cout;
    }
    g_double(&mut s, store, rng, cfg.tricks, cin, cfg.channels)?;
    s.act(Activation::Tanh);
    Ok(s)
}

/// D: Conv(nc, ndf, 4, 2, 1) LReLU, then Conv(m·ndf, 2m·ndf, 4, 2, 1) BN LReLU per stage, then
/// Conv(→ 1, k0, 1, 0) giving one logit per image (with `--d-downsample maxpool` each halving conv is
/// Conv(3, 1, 1) MaxPool(2, 2); BN and LReLU as `cfg.tricks` says) (PyTorch's final Sigmoid is fused into the loss). A
/// class-conditional D sees nc + num_classes input channels: the image plus one constant plane per class,
/// all zero except the plane of the image's label.
pub fn discriminator(
    cfg: &ModelConfig,
    store: &mut ParamStore,
    rng: &mut RngStream,
) -> Result<Sequential> {
    let Ladder { d: mults, k0, .. } = ladder(cfg.image_size)?;
    let mut s = Sequential::new("main");
    let t = cfg.tricks;
    let mut cin = cfg.channels + cfg.num_classes;
    for (i, &m) in mults.iter().enumerate() {
        let cout = m * cfg.ndf;
        match t.d_downsample {
            Downsample::Stride => s.conv(store, rng, ConvShape::new(cin, cout, 4, 2, 1))?,
            Downsample::Maxpool => {
                s.conv(store, rng, ConvShape::new(cin, cout, 3, 1, 1))?;
                s.max_pool(Pool2d::new(2, 2, 0));
            }
        }
        if i > 0 && t.d_batch_norm {
            s.batch_norm(store, rng, cout)?;
        }
        s.act(t.d_act.activation());
        cin = cout;
    }
    s.conv(store, rng, ConvShape::new(cin, 1, k0, 1, 0))?;
    Ok(s)
}
