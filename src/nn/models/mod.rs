//! The GAN models: DCGAN ([`dcgan`]) and a fully connected GAN ([`mlp`]).
//!
//! [`Generator`] and [`Discriminator`] each own a [`ParamStore`] whose names are those of the matching PyTorch
//! module's `state_dict` (`main.<index>.weight`, ...), so a saved generator loads into the PyTorch DCGAN
//! example's `Generator` with `load_state_dict`. D returns raw logits (PyTorch's final Sigmoid is folded into
//! the BCE-with-logits loss, which is both faster and numerically safer).

pub mod dcgan;
pub mod mlp;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::autograd::{Tape, Var};
use crate::device::Device;
use crate::nn::layers::Sequential;
use crate::nn::params::ParamStore;
use crate::ops;
use crate::ops::random::RngStream;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Convolutional DCGAN (image sizes 64, 32, 28).
    Dcgan,
    /// Fully connected GAN (any image size).
    Mlp,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Dcgan => "dcgan",
            ModelKind::Mlp => "mlp",
        })
    }
}

/// Everything that determines the models' architecture (and so the names and shapes of their tensors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Height = width of the images.
    pub image_size: usize,
    /// Image channels (nc): 3 for RGB, 1 for grayscale.
    pub channels: usize,
    /// Latent size.
    pub nz: usize,
    /// DCGAN: G's base width.
    pub ngf: usize,
    /// DCGAN: D's base width.
    pub ndf: usize,
    /// MLP: the hidden width h (layers of h, 2h, 4h).
    pub hidden: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Dcgan,
            image_size: 64,
            channels: 3,
            nz: 100,
            ngf: 64,
            ndf: 64,
            hidden: 256,
        }
    }
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.image_size > 0, "the image size must be positive");
        ensure!(self.channels > 0, "the number of channels must be positive");
        ensure!(self.nz > 0, "nz (latent size) must be positive");
        match self.kind {
            ModelKind::Dcgan => {
                ensure!(
                    matches!(self.image_size, 64 | 32 | 28),
                    "the DCGAN model supports image sizes 64, 32 and 28, not {} (the MLP model takes any size)",
                    self.image_size
                );
                ensure!(self.ngf > 0 && self.ndf > 0, "ngf and ndf must be positive");
            }
            ModelKind::Mlp => ensure!(self.hidden > 0, "the MLP hidden width must be positive"),
        }
        Ok(())
    }

    /// Elements of one image, C·H·W.
    pub fn image_numel(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// The image shape [C, H, W].
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    /// e.g. "dcgan 64x64x3 nz=100 ngf=64 ndf=64".
    pub fn describe(&self) -> String {
        let s = self.image_size;
        let widths = match self.kind {
            ModelKind::Dcgan => format!("ngf={} ndf={}", self.ngf, self.ndf),
            ModelKind::Mlp => format!("hidden={}", self.hidden),
        };
        format!(
            "{} {s}x{s}x{} nz={} {widths}",
            self.kind, self.channels, self.nz
        )
    }

    /// The command-line flags on which `other` differs from `self` (the fields that matter for the kind), as
    /// "--flag VALUE" of `other`; empty when the two build the same models.
    pub fn differences(&self, other: &ModelConfig) -> Vec<String> {
        let mut d = vec![];
        if self.kind != other.kind {
            d.push(format!("--model {}", other.kind));
        }
        if self.image_size != other.image_size {
            d.push(format!("--image-size {}", other.image_size));
        }
        if self.channels != other.channels {
            d.push(format!("--channels {}", other.channels));
        }
        if self.nz != other.nz {
            d.push(format!("--nz {}", other.nz));
        }
        let dcgan = self.kind == ModelKind::Dcgan && other.kind == ModelKind::Dcgan;
        let mlp = self.kind == ModelKind::Mlp && other.kind == ModelKind::Mlp;
        if dcgan && self.ngf != other.ngf {
            d.push(format!("--ngf {}", other.ngf));
        }
        if dcgan && self.ndf != other.ndf {
            d.push(format!("--ndf {}", other.ndf));
        }
        if mlp && self.hidden != other.hidden {
            d.push(format!("--hidden {}", other.hidden));
        }
        d
    }
}

/// The generator: z [N, nz] → images [N, C, H, W] in [-1, 1].
pub struct Generator {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    pub net: Sequential,
}

impl Generator {
    /// A freshly initialised generator; the init draws come from `rng`.
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut RngStream) -> Result<Generator> {
        cfg.validate()?;
        let mut store = ParamStore::new(device);
        let net = match cfg.kind {
            ModelKind::Dcgan => dcgan::generator(cfg, &mut store, rng)?,
            ModelKind::Mlp => mlp::generator(cfg, &mut store, rng)?,
        };
        Ok(Generator {
            cfg: cfg.clone(),
            store,
            net,
        })
    }

    pub fn forward(&mut self, tape: &mut Tape, z: Var, train: bool) -> Result<Var> {
        let [n, nz] = tape.value(z).dims2("generator input z")?;
        ensure!(
            nz == self.cfg.nz,
            "generator input z: expected [N, {}], got [{n}, {nz}]",
            self.cfg.nz
        );
        let [c, h, w] = self.cfg.image_shape();
        match self.cfg.kind {
            ModelKind::Dcgan => {
                // The latent is a 1×1 image with nz channels, as in PyTorch's DCGAN example.
                let x = ops::reshape(tape, z, &[n, nz, 1, 1])?;
                let y = self.net.forward(tape, &mut self.store, x, train)?;
                let got = tape.value(y).shape();
                if got != [n, c, h, w] {
                    bail!(
                        "internal: generator produced {got:?}, expected {:?}",
                        [n, c, h, w]
                    );
                }
                Ok(y)
            }
            ModelKind::Mlp => {
                let y = self.net.forward(tape, &mut self.store, z, train)?;
                ops::reshape(tape, y, &[n, c, h, w])
            }
        }
    }

    /// Images for the latents `z` [N, nz] in eval mode (BN running stats, nothing recorded, nothing updated).
    pub fn generate(&mut self, z: &Tensor) -> Result<Tensor> {
        let mut tape = Tape::no_grad();
        let z = tape.constant(z.to_device(&self.store.device)?);
        let y = self.forward(&mut tape, z, false)?;
        Ok(tape.value(y).clone())
    }
}

/// The discriminator: images [N, C, H, W] → logits [N].
pub struct Discriminator {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    pub net: Sequential,
}

impl Discriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut RngStream) -> Result<Discriminator> {
        cfg.validate()?;
        let mut store = ParamStore::new(device);
        let net = match cfg.kind {
            ModelKind::Dcgan => dcgan::discriminator(cfg, &mut store, rng)?,
            ModelKind::Mlp => mlp::discriminator(cfg, &mut store, rng)?,
        };
        Ok(Discriminator {
            cfg: cfg.clone(),
            store,
            net,
        })
    }

    pub fn forward(&mut self, tape: &mut Tape, x: Var, train: bool) -> Result<Var> {
        let [n, c, h, w] = tape.value(x).dims4("discriminator input")?;
        let want = self.cfg.image_shape();
        ensure!(
            [c, h, w] == want,
            "discriminator input: expected images [N, {}, {}, {}], got [{n}, {c}, {h}, {w}]",
            want[0],
            want[1],
            want[2]
        );
        let x = match self.cfg.kind {
            ModelKind::Dcgan => x,
            ModelKind::Mlp => ops::flatten(tape, x)?,
        };
        let y = self.net.forward(tape, &mut self.store, x, train)?;
        // [N, 1, 1, 1] (DCGAN) or [N, 1] (MLP): one logit per image.
        ops::reshape(tape, y, &[n])
    }
}
