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

// The discriminator's inside view, for `dfeatures` (kept apart from `forward` so that code stays as it is).
impl Discriminator {
    /// The output of each hidden block of D (every activation layer: conv [+ BN] + LeakyReLU for DCGAN,
    /// linear + LeakyReLU for the MLP) for the images `x` [N, C, H, W], in eval mode (BN running stats, no
    /// tape, no state change), with the block's name (`main.<index of its activation>`). The final logit layer
    /// is not a block and is not included.
    pub fn forward_features(&mut self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let mut tape = Tape::no_grad();
        let x = tape.constant(x.to_device(&self.store.device)?);
        let [n, c, h, w] = tape.value(x).dims4("discriminator input")?;
        ensure!(
            [c, h, w] == self.cfg.image_shape(),
            "discriminator input: expected images [N, {}, {}, {}], got [{n}, {c}, {h}, {w}]",
            self.cfg.channels,
            self.cfg.image_size,
            self.cfg.image_size
        );
        let mut y = match self.cfg.kind {
            ModelKind::Dcgan => x,
            ModelKind::Mlp => ops::flatten(&mut tape, x)?,
        };
        let mut out = vec![];
        for (i, layer) in self.net.layers.iter().enumerate() {
            y = layer.forward(&mut tape, &mut self.store, y, false)?;
            if matches!(layer, crate::nn::layers::Layer::Act(_)) {
                out.push((format!("{}.{i}", self.net.prefix), tape.value(y).clone()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ModelKind, size: usize, nc: usize) -> ModelConfig {
        ModelConfig {
            kind,
            image_size: size,
            channels: nc,
            ..ModelConfig::default()
        }
    }

    fn shapes(store: &ParamStore) -> Vec<(String, Vec<usize>)> {
        store
            .named_tensors()
            .iter()
            .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
            .collect()
    }

    fn shape_of(store: &ParamStore, name: &str) -> Vec<usize> {
        shapes(store)
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    #[test]
    fn dcgan64_matches_pytorch_example() {
        let c = cfg(ModelKind::Dcgan, 64, 3);
        let mut rng = RngStream::new(1);
        let g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        // Parameter counts of the PyTorch DCGAN example's netG / netD (nz 100, ngf = ndf = 64, nc 3).
        assert_eq!(g.store.num_elements(), 3_576_704);
        assert_eq!(d.store.num_elements(), 2_765_568);
        assert_eq!(shape_of(&g.store, "main.0.weight"), [100, 512, 4, 4]);
        assert_eq!(shape_of(&g.store, "main.3.weight"), [512, 256, 4, 4]);
        assert_eq!(shape_of(&g.store, "main.10.running_var"), [64]);
        assert_eq!(
            shape_of(&g.store, "main.10.num_batches_tracked"),
            Vec::<usize>::new()
        );
        assert_eq!(shape_of(&g.store, "main.12.weight"), [64, 3, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.0.weight"), [64, 3, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.3.bias"), [128]);
        assert_eq!(shape_of(&d.store, "main.8.weight"), [512, 256, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.11.weight"), [1, 512, 4, 4]);
        // Exactly PyTorch's state_dict keys: params and the three BN buffers per BN layer.
        let g_names: Vec<String> = shapes(&g.store).into_iter().map(|(n, _)| n).collect();
        assert_eq!(g_names.len(), 5 + 4 * 5);
        let d_names: Vec<String> = shapes(&d.store).into_iter().map(|(n, _)| n).collect();
        assert_eq!(d_names.len(), 5 + 3 * 5);
    }

    #[test]
    fn small_dcgans_have_the_documented_layers() {
        let mut rng = RngStream::new(2);
        let c32 = ModelConfig {
            ngf: 8,
            ndf: 8,
            nz: 16,
            ..cfg(ModelKind::Dcgan, 32, 3)
        };
        let g = Generator::new(&c32, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c32, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&g.store, "main.0.weight"), [16, 32, 4, 4]);
        assert_eq!(shape_of(&g.store, "main.9.weight"), [8, 3, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.6.weight"), [32]);
        assert_eq!(shape_of(&d.store, "main.8.weight"), [1, 32, 4, 4]);

        let c28 = ModelConfig {
            ngf: 8,
            ndf: 8,
            nz: 16,
            ..cfg(ModelKind::Dcgan, 28, 1)
        };
        let g = Generator::new(&c28, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c28, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&g.store, "main.0.weight"), [16, 32, 7, 7]);
        assert_eq!(shape_of(&g.store, "main.3.weight"), [32, 16, 4, 4]);
        assert_eq!(shape_of(&g.store, "main.6.weight"), [16, 1, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.0.weight"), [8, 1, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.2.weight"), [16, 8, 4, 4]);
        assert_eq!(shape_of(&d.store, "main.5.weight"), [1, 16, 7, 7]);
    }

    #[test]
    fn mlp_has_the_documented_layers() {
        let c = ModelConfig {
            hidden: 8,
            nz: 5,
            ..cfg(ModelKind::Mlp, 7, 1)
        };
        let mut rng = RngStream::new(3);
        let g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&g.store, "main.0.weight"), [8, 5]);
        assert_eq!(shape_of(&g.store, "main.4.running_mean"), [16]);
        assert_eq!(shape_of(&g.store, "main.9.weight"), [49, 32]);
        assert_eq!(shape_of(&g.store, "main.9.bias"), [49]);
        assert_eq!(shape_of(&d.store, "main.0.weight"), [32, 49]);
        assert_eq!(shape_of(&d.store, "main.4.weight"), [1, 16]);
    }

    #[test]
    fn forward_shapes_for_every_variant() {
        let variants = [
            cfg(ModelKind::Dcgan, 64, 3),
            cfg(ModelKind::Dcgan, 32, 3),
            cfg(ModelKind::Dcgan, 28, 1),
            ModelConfig {
                hidden: 8,
                ..cfg(ModelKind::Mlp, 13, 3)
            },
        ];
        for c in variants {
            let c = ModelConfig {
                nz: 6,
                ngf: 4,
                ndf: 4,
                ..c
            };
            let mut rng = RngStream::new(4);
            let mut g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
            let mut d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
            let mut tape = Tape::new();
            let z = rng.normal(&[3, 6], 0.0, 1.0, &Device::Cpu).unwrap();
            let z = tape.constant(z);
            let x = g.forward(&mut tape, z, true).unwrap();
            let s = c.image_size;
            assert_eq!(
                tape.value(x).shape(),
                [3, c.channels, s, s],
                "{}",
                c.describe()
            );
            let v = tape.value(x).to_vec().unwrap();
            assert!(v.iter().all(|x| x.abs() <= 1.0), "tanh output in [-1, 1]");
            let y = d.forward(&mut tape, x, true).unwrap();
            assert_eq!(tape.value(y).shape(), [3], "{}", c.describe());
            // Training-mode forwards count their batch.
            let nbt = g
                .store
                .named_tensors()
                .iter()
                .find(|(n, _)| n.ends_with("num_batches_tracked"))
                .map(|(_, t)| t.scalar().unwrap())
                .unwrap();
            assert_eq!(nbt, 1.0);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = ModelConfig {
            nz: 6,
            ngf: 4,
            ndf: 4,
            ..cfg(ModelKind::Dcgan, 32, 3)
        };
        let mut rng = RngStream::new(5);
        let mut g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let mut d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let mut tape = Tape::new();
        let z = tape.constant(Tensor::zeros(&[2, 7], &Device::Cpu).unwrap());
        let e = g.forward(&mut tape, z, true).unwrap_err().to_string();
        assert!(e.contains("expected [N, 6]"), "{e}");
        let x = tape.constant(Tensor::zeros(&[2, 3, 28, 28], &Device::Cpu).unwrap());
        let e = d.forward(&mut tape, x, true).unwrap_err().to_string();
        assert!(e.contains("expected images [N, 3, 32, 32]"), "{e}");
        let bad = ModelConfig {
            image_size: 48,
            ..c
        };
        let e = Generator::new(&bad, &Device::Cpu, &mut rng)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("64, 32 and 28"), "{e}");
    }

    #[test]
    fn init_is_seeded_and_dcgan_distributed() {
        let c = ModelConfig {
            ngf: 16,
            ..cfg(ModelKind::Dcgan, 32, 3)
        };
        let a = Generator::new(&c, &Device::Cpu, &mut RngStream::new(9)).unwrap();
        let b = Generator::new(&c, &Device::Cpu, &mut RngStream::new(9)).unwrap();
        let other = Generator::new(&c, &Device::Cpu, &mut RngStream::new(10)).unwrap();
        let w = |g: &Generator, name: &str| {
            g.store
                .named_tensors()
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1
                .to_vec()
                .unwrap()
        };
        assert_eq!(w(&a, "main.0.weight"), w(&b, "main.0.weight"));
        assert_ne!(w(&a, "main.0.weight"), w(&other, "main.0.weight"));
        let conv = w(&a, "main.0.weight");
        let mean = conv.iter().sum::<f32>() / conv.len() as f32;
        let std = (conv.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / conv.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.002 && (std - 0.02).abs() < 0.002,
            "{mean} {std}"
        );
        let gamma = w(&a, "main.1.weight");
        let gm = gamma.iter().sum::<f32>() / gamma.len() as f32;
        assert!((gm - 1.0).abs() < 0.01, "{gm}");
        assert!(w(&a, "main.1.bias").iter().all(|&x| x == 0.0));
        assert!(w(&a, "main.1.running_var").iter().all(|&x| x == 1.0));
    }
}
