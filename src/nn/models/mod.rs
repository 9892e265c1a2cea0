//! The GAN models: DCGAN ([`dcgan`]) and a fully connected GAN ([`mlp`]).
//!
//! [`Generator`] and [`Discriminator`] each own a [`ParamStore`] whose names are those of the matching PyTorch
//! module's `state_dict` (`main.<index>.weight`, ...), so a saved generator loads into the PyTorch DCGAN
//! example's `Generator` with `load_state_dict`. D returns raw logits (PyTorch's final Sigmoid is folded into
//! the BCE-with-logits loss, which is both faster and numerically safer).
//!
//! A class-conditional model (`num_classes > 0`, in the manner of Mirza & Osindero's conditional GAN) feeds the
//! label to both networks as a one-hot code: G reads z followed by the one-hot label, D reads the image plus
//! one constant plane per class (DCGAN) or the flattened image followed by the one-hot label (MLP). The code
//! is built on the host and uploaded, so it runs unchanged on every backend.

pub mod dcgan;
pub mod mlp;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::autograd::{Tape, Var};
use crate::device::Device;
use crate::limits;
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
    /// Label classes of a class-conditional model; 0 for an unconditional one. Checkpoints written before
    /// conditioning existed lack the field, and they are unconditional: hence the default.
    #[serde(default)]
    pub num_classes: usize,
    /// DCGAN: the paper's architecture guidelines, each switchable (the paper's by default, and in checkpoints
    /// written before they existed).
    #[serde(default)]
    pub tricks: dcgan::Tricks,
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
            num_classes: 0,
            tricks: dcgan::Tricks::default(),
        }
    }
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.image_size > 0, "the image size must be positive");
        ensure!(self.channels > 0, "the number of channels must be positive");
        ensure!(self.nz > 0, "nz (latent size) must be positive");
        let bounds = [
            ("the image size", self.image_size, limits::MAX_IMAGE_SIZE),
            (
                "the number of channels",
                self.channels,
                limits::MAX_CHANNELS,
            ),
            ("nz (latent size)", self.nz, limits::MAX_NZ),
            ("ngf", self.ngf, limits::MAX_WIDTH),
            ("ndf", self.ndf, limits::MAX_WIDTH),
            ("the MLP hidden width", self.hidden, limits::MAX_WIDTH),
            (
                "the number of classes",
                self.num_classes,
                limits::MAX_CLASSES,
            ),
        ];
        for (what, v, max) in bounds {
            ensure!(v <= max, "{what} is {v}, more than the limit of {max}");
        }
        match self.kind {
            ModelKind::Dcgan => {
                ensure!(
                    matches!(self.image_size, 64 | 32 | 28),
                    "the DCGAN model supports image sizes 64, 32 and 28, not {} (the MLP model takes any size)",
                    self.image_size
                );
                ensure!(self.ngf > 0 && self.ndf > 0, "ngf and ndf must be positive");
            }
            ModelKind::Mlp => {
                ensure!(self.hidden > 0, "the MLP hidden width must be positive");
                ensure!(
                    self.tricks == dcgan::Tricks::default(),
                    "{} switch the DCGAN model's layers; the MLP model has none of them",
                    self.tricks.flags().join(" ")
                );
            }
        }
        let (g, d) = self.sizes()?;
        for (net, n) in [("generator", g), ("discriminator", d)] {
            ensure!(
                n <= limits::MAX_PARAMS,
                "the {net} of {} would have {n} parameters, more than the limit of {}",
                self.describe(),
                limits::MAX_PARAMS
            );
        }
        Ok(())
    }

    /// Values (parameters and buffers) of G and of D, counted without building them. The fields must be
    /// within their limits (as [`validate`](ModelConfig::validate) checks first) for the count not to overflow.
    pub fn sizes(&self) -> Result<(u128, u128)> {
        match self.kind {
            ModelKind::Dcgan => dcgan::sizes(self),
            ModelKind::Mlp => Ok(mlp::sizes(self)),
        }
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
        let cond = match self.num_classes {
            0 => String::new(),
            c => format!(" conditional on {c} classes"),
        };
        let tricks: String = self
            .tricks
            .flags()
            .iter()
            .map(|f| format!(" {f}"))
            .collect();
        format!(
            "{} {s}x{s}x{} nz={} {widths}{cond}{tricks}",
            self.kind, self.channels, self.nz
        )
    }

    /// Whether the networks take a class label with every image.
    pub fn is_conditional(&self) -> bool {
        self.num_classes > 0
    }

    /// Checks the labels given for a batch of `n` against the model: a conditional model needs one label in
    /// `0..num_classes` per image, an unconditional one takes none.
    pub fn check_labels<'a>(
        &self,
        labels: Option<&'a [u32]>,
        n: usize,
        what: &str,
    ) -> Result<Option<&'a [u32]>> {
        match (self.num_classes, labels) {
            (0, None) => Ok(None),
            (0, Some(_)) => bail!("{what}: class labels were given to an unconditional model"),
            (c, None) => bail!(
                "{what}: the model is class-conditional ({c} classes) and needs a class label for every image"
            ),
            (c, Some(l)) => {
                ensure!(
                    l.len() == n,
                    "{what}: {} class labels for a batch of {n}",
                    l.len()
                );
                if let Some(bad) = l.iter().find(|&&y| y as usize >= c) {
                    bail!("{what}: class label {bad} is out of range for a model of {c} classes (0..{c})");
                }
                Ok(Some(l))
            }
        }
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
        if self.num_classes != other.num_classes {
            d.push(match other.num_classes {
                0 => "no --conditional".to_string(),
                c => format!("--conditional ({c} classes)"),
            });
        }
        if self.tricks != other.tricks {
            let flags = other.tricks.flags();
            d.push(match flags.is_empty() {
                true => "the DCGAN paper's layers".to_string(),
                false => flags.join(" "),
            });
        }
        d
    }
}

/// Class labels that follow the rows of a grid of `n` images with `columns` per row: image i shows class
/// (i / columns) mod `classes`, so row r is class r (mod `classes`).
pub fn row_labels(n: usize, columns: usize, classes: usize) -> Vec<u32> {
    let columns = columns.max(1);
    let classes = classes.max(1);
    (0..n).map(|i| ((i / columns) % classes) as u32).collect()
}

/// The one-hot codes of `labels` [N], each row of `classes` values repeated over `plane` positions: [N, classes]
/// with `plane` 1, or the [N, classes, H, W] planes D sees with `plane` H·W.
fn one_hot(labels: &[u32], classes: usize, plane: usize) -> Vec<f32> {
    let mut v = vec![0.0; labels.len() * classes * plane];
    for (i, &y) in labels.iter().enumerate() {
        let start = (i * classes + y as usize) * plane;
        v[start..start + plane].fill(1.0);
    }
    v
}

/// `x` followed along dim 1 by the one-hot code of `labels` (a tape constant: labels get no gradient).
fn append_one_hot(tape: &mut Tape, x: Var, labels: &[u32], classes: usize) -> Result<Var> {
    let shape = tape.value(x).shape().to_vec();
    let plane: usize = shape[2..].iter().product();
    let mut code_shape = shape.clone();
    code_shape[1] = classes;
    let device = tape.value(x).device();
    let code = Tensor::from_vec(one_hot(labels, classes, plane), &code_shape, &device)?;
    let code = tape.constant(code);
    ops::concat_channels(tape, &[x, code])
}

/// Registers one network's tensors in the store and returns its layers (dcgan.rs and mlp.rs hold one per network).
type Builder = fn(&ModelConfig, &mut ParamStore, &mut RngStream) -> Result<Sequential>;

/// Validates `cfg` and builds one network into a fresh store with the builder of `cfg`'s kind: `builders` =
/// [DCGAN's, the MLP's].
fn build(
    cfg: &ModelConfig,
    device: &Device,
    rng: &mut RngStream,
    builders: [Builder; 2],
) -> Result<(ParamStore, Sequential)> {
    cfg.validate()?;
    let mut store = ParamStore::new(device);
    let net = match cfg.kind {
        ModelKind::Dcgan => builders[0](cfg, &mut store, rng)?,
        ModelKind::Mlp => builders[1](cfg, &mut store, rng)?,
    };
    Ok((store, net))
}

/// The generator: z [N, nz] (and, if conditional, labels [N]) → images [N, C, H, W] in [-1, 1].
pub struct Generator {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    pub net: Sequential,
}

impl Generator {
    /// A freshly initialised generator; the init draws come from `rng`.
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut RngStream) -> Result<Generator> {
        let (store, net) = build(cfg, device, rng, [dcgan::generator, mlp::generator])?;
        let cfg = cfg.clone();
        Ok(Generator { cfg, store, net })
    }

    /// The forward of an unconditional generator.
    pub fn forward(&mut self, tape: &mut Tape, z: Var, train: bool) -> Result<Var> {
        self.forward_labelled(tape, z, None, train)
    }

    /// The forward with one class label per latent (`None` for an unconditional generator).
    pub fn forward_labelled(
        &mut self,
        tape: &mut Tape,
        z: Var,
        labels: Option<&[u32]>,
        train: bool,
    ) -> Result<Var> {
        let [n, nz] = tape.value(z).dims2("generator input z")?;
        ensure!(
            nz == self.cfg.nz,
            "generator input z: expected [N, {}], got [{n}, {nz}]",
            self.cfg.nz
        );
        let z = match self.cfg.check_labels(labels, n, "generator")? {
            Some(l) => append_one_hot(tape, z, l, self.cfg.num_classes)?,
            None => z,
        };
        let zin = nz + self.cfg.num_classes;
        let [c, h, w] = self.cfg.image_shape();
        match self.cfg.kind {
            ModelKind::Dcgan => {
                // The latent is a 1×1 image with nz channels, as in PyTorch's DCGAN example.
                let x = ops::reshape(tape, z, &[n, zin, 1, 1])?;
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
    /// Unconditional generators only; see [`generate_with_labels`](Generator::generate_with_labels).
    pub fn generate(&mut self, z: &Tensor) -> Result<Tensor> {
        self.generate_with_labels(z, None)
    }

    /// [`generate`](Generator::generate) with a class label per latent (`None` for an unconditional model).
    /// Runs in chunks of [`limits::GENERATE_CHUNK`] latents, so memory for activations stays bounded
    /// whatever the number of images (eval mode treats every latent on its own).
    pub fn generate_with_labels(&mut self, z: &Tensor, labels: Option<&[u32]>) -> Result<Tensor> {
        let n = z.shape().first().copied().unwrap_or(0);
        if n <= limits::GENERATE_CHUNK {
            return self.generate_chunk(z, labels);
        }
        self.cfg.check_labels(labels, n, "generator")?;
        let nz = z.numel() / n;
        let host = z.to_vec()?;
        let mut data = vec![];
        let mut shape = vec![];
        for start in (0..n).step_by(limits::GENERATE_CHUNK) {
            let m = limits::GENERATE_CHUNK.min(n - start);
            let part = Tensor::from_vec(
                host[start * nz..(start + m) * nz].to_vec(),
                &[m, nz],
                &z.device(),
            )?;
            let l = labels.map(|l| &l[start..start + m]);
            let y = self.generate_chunk(&part, l)?;
            shape = y.shape().to_vec();
            data.extend(y.to_vec()?);
        }
        shape[0] = n;
        Tensor::from_vec(data, &shape, &self.store.device)
    }

    fn generate_chunk(&mut self, z: &Tensor, labels: Option<&[u32]>) -> Result<Tensor> {
        let mut tape = Tape::no_grad();
        let z = tape.constant(z.to_device(&self.store.device)?);
        let y = self.forward_labelled(&mut tape, z, labels, false)?;
        Ok(tape.value(y).clone())
    }
}

/// The discriminator: images [N, C, H, W] (and, if conditional, labels [N]) → logits [N].
pub struct Discriminator {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    pub net: Sequential,
}

impl Discriminator {
    /// A freshly initialised discriminator; the init draws come from `rng`.
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut RngStream) -> Result<Discriminator> {
        let (store, net) = build(cfg, device, rng, [dcgan::discriminator, mlp::discriminator])?;
        let cfg = cfg.clone();
        Ok(Discriminator { cfg, store, net })
    }

    /// The forward of an unconditional discriminator.
    pub fn forward(&mut self, tape: &mut Tape, x: Var, train: bool) -> Result<Var> {
        self.forward_labelled(tape, x, None, train)
    }

    /// The forward with the class label of each image (`None` for an unconditional discriminator).
    pub fn forward_labelled(
        &mut self,
        tape: &mut Tape,
        x: Var,
        labels: Option<&[u32]>,
        train: bool,
    ) -> Result<Var> {
        let [n, c, h, w] = tape.value(x).dims4("discriminator input")?;
        let want = self.cfg.image_shape();
        ensure!(
            [c, h, w] == want,
            "discriminator input: expected images [N, {}, {}, {}], got [{n}, {c}, {h}, {w}]",
            want[0],
            want[1],
            want[2]
        );
        let labels = self.cfg.check_labels(labels, n, "discriminator")?;
        let x = match self.cfg.kind {
            ModelKind::Dcgan => x,
            ModelKind::Mlp => ops::flatten(tape, x)?,
        };
        let x = match labels {
            Some(l) => append_one_hot(tape, x, l, self.cfg.num_classes)?,
            None => x,
        };
        let y = self.net.forward(tape, &mut self.store, x, train)?;
        // [N, 1, 1, 1] (DCGAN) or [N, 1] (MLP): one logit per image.
        ops::reshape(tape, y, &[n])
    }
}

// The discriminator's inside view, for `dfeatures` (kept apart from `forward` so that code stays as it is).
impl Discriminator {
    /// The output of each hidden block of D (every activation layer: conv [+ BN] + LeakyReLU for DCGAN,
    /// linear + LeakyReLU for the MLP) for the images `x` [N, C, H, W] with their class `labels` (`None` for an
    /// unconditional D), in eval mode (BN running stats, no tape, no state change), with the block's name
    /// (`main.<index of its activation>`). The final logit layer is not a block and is not included.
    pub fn forward_features(
        &mut self,
        x: &Tensor,
        labels: Option<&[u32]>,
    ) -> Result<Vec<(String, Tensor)>> {
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
        let labels = self.cfg.check_labels(labels, n, "discriminator")?;
        let mut y = match self.cfg.kind {
            ModelKind::Dcgan => x,
            ModelKind::Mlp => ops::flatten(&mut tape, x)?,
        };
        if let Some(l) = labels {
            y = append_one_hot(&mut tape, y, l, self.cfg.num_classes)?;
        }
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
    fn sizes_count_every_value_of_the_built_models() {
        let mut rng = RngStream::new(2);
        for (kind, size, nc, classes) in [
            (ModelKind::Dcgan, 64, 3, 0),
            (ModelKind::Dcgan, 32, 1, 10),
            (ModelKind::Dcgan, 28, 1, 3),
            (ModelKind::Mlp, 28, 1, 0),
            (ModelKind::Mlp, 16, 3, 5),
        ] {
            let c = ModelConfig {
                ngf: 8,
                ndf: 6,
                nz: 16,
                hidden: 12,
                num_classes: classes,
                ..cfg(kind, size, nc)
            };
            built_as_sized(&c, &mut rng);
        }
    }

    /// G and D of `c`, after checking that `sizes()` counts exactly the values they were built with.
    fn built_as_sized(c: &ModelConfig, rng: &mut RngStream) -> (Generator, Discriminator) {
        let count = |s: &ParamStore| -> u128 {
            s.named_tensors()
                .iter()
                .map(|(_, t)| t.numel() as u128)
                .sum()
        };
        let g = Generator::new(c, &Device::Cpu, rng).unwrap();
        let d = Discriminator::new(c, &Device::Cpu, rng).unwrap();
        assert_eq!(
            c.sizes().unwrap(),
            (count(&g.store), count(&d.store)),
            "{c:?}"
        );
        (g, d)
    }

    #[test]
    fn every_dcgan_switch_builds_what_it_says_and_sizes_count_it() {
        use crate::backend::Activation;
        use crate::nn::layers::Layer;
        use dcgan::{Downsample, Nonlinearity, Tricks, Upsample};
        let mut rng = RngStream::new(3);
        let paper = Tricks::default();
        let variants = [
            Tricks {
                g_batch_norm: false,
                ..paper
            },
            Tricks {
                d_batch_norm: false,
                ..paper
            },
            Tricks {
                g_act: Nonlinearity::Leaky,
                d_act: Nonlinearity::Relu,
                ..paper
            },
            Tricks {
                d_downsample: Downsample::Maxpool,
                ..paper
            },
            Tricks {
                g_upsample: Upsample::Nearest,
                ..paper
            },
        ];
        for (size, t) in [64, 32, 28]
            .into_iter()
            .flat_map(|s| variants.map(|t| (s, t)))
        {
            let c = ModelConfig {
                ngf: 8,
                ndf: 6,
                nz: 16,
                tricks: t,
                ..cfg(ModelKind::Dcgan, size, 1)
            };
            let (g, d) = built_as_sized(&c, &mut rng);
            let has = |s: &Sequential, f: &dyn Fn(&Layer) -> bool| s.layers.iter().any(f);
            let bn = |l: &Layer| matches!(l, Layer::BatchNorm(_));
            assert_eq!(has(&g.net, &bn), t.g_batch_norm, "{c:?}");
            assert_eq!(has(&d.net, &bn), t.d_batch_norm, "{c:?}");
            let pool = |l: &Layer| matches!(l, Layer::MaxPool(_));
            assert_eq!(
                has(&d.net, &pool),
                t.d_downsample == Downsample::Maxpool,
                "{c:?}"
            );
            let up = |l: &Layer| matches!(l, Layer::Upsample(2));
            assert_eq!(has(&g.net, &up), t.g_upsample == Upsample::Nearest, "{c:?}");
            let act = |a: Activation| move |l: &Layer| matches!(l, Layer::Act(x) if *x == a);
            let leaky = Activation::LeakyRelu(0.2);
            assert_eq!(
                has(&g.net, &act(leaky)),
                t.g_act == Nonlinearity::Leaky,
                "{c:?}"
            );
            assert_eq!(
                has(&d.net, &act(Activation::Relu)),
                t.d_act == Nonlinearity::Relu,
                "{c:?}"
            );
            // Both networks still map a batch to the same shapes as the paper's.
            let z = Tensor::zeros(&[2, 16], &Device::Cpu).unwrap();
            let (mut g, mut d, mut tape) = (g, d, Tape::new());
            let zv = tape.constant(z);
            let x = g.forward(&mut tape, zv, true).unwrap();
            assert_eq!(tape.value(x).shape(), &[2, 1, size, size], "{c:?}");
            let y = d.forward(&mut tape, x, true).unwrap();
            assert_eq!(tape.value(y).shape().iter().product::<usize>(), 2, "{c:?}");
        }
    }

    #[test]
    fn dcgan_switches_are_refused_for_the_mlp_model() {
        let c = ModelConfig {
            tricks: dcgan::Tricks {
                d_batch_norm: false,
                ..Default::default()
            },
            ..cfg(ModelKind::Mlp, 28, 1)
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--no-d-batch-norm") && e.contains("MLP"), "{e}");
    }

    #[test]
    fn huge_models_are_refused_before_anything_is_built() {
        for (c, needle) in [
            (
                ModelConfig {
                    ngf: 10_000_000,
                    ..ModelConfig::default()
                },
                "ngf is 10000000",
            ),
            (
                ModelConfig {
                    nz: usize::MAX,
                    ..ModelConfig::default()
                },
                "nz (latent size)",
            ),
            (
                ModelConfig {
                    num_classes: 1 << 40,
                    ..ModelConfig::default()
                },
                "classes",
            ),
            (
                ModelConfig {
                    ngf: 8192,
                    ..ModelConfig::default()
                },
                "parameters, more than the limit",
            ),
        ] {
            let e = Generator::new(&c, &Device::Cpu, &mut RngStream::new(0))
                .err()
                .expect("refused")
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn generating_in_chunks_matches_one_pass() {
        let c = ModelConfig {
            ngf: 4,
            ndf: 4,
            nz: 5,
            num_classes: 3,
            ..cfg(ModelKind::Dcgan, 28, 1)
        };
        let mut g = Generator::new(&c, &Device::Cpu, &mut RngStream::new(4)).unwrap();
        let n = limits::GENERATE_CHUNK + 3;
        let z = RngStream::new(5)
            .normal(&[n, 5], 0.0, 1.0, &Device::Cpu)
            .unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let all = g.generate_with_labels(&z, Some(&labels)).unwrap();
        assert_eq!(all.shape(), [n, 1, 28, 28]);
        let tail = Tensor::from_vec(
            z.to_vec().unwrap()[(n - 3) * 5..].to_vec(),
            &[3, 5],
            &Device::Cpu,
        )
        .unwrap();
        let last = g
            .generate_with_labels(&tail, Some(&labels[n - 3..]))
            .unwrap();
        assert_eq!(
            all.to_vec().unwrap()[(n - 3) * 784..],
            last.to_vec().unwrap()[..]
        );
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

    fn conditional(kind: ModelKind, size: usize, nc: usize, classes: usize) -> ModelConfig {
        ModelConfig {
            nz: 7,
            ngf: 5,
            ndf: 3,
            hidden: 6,
            num_classes: classes,
            ..cfg(kind, size, nc)
        }
    }

    #[test]
    fn conditional_first_layers_take_the_one_hot_code() {
        let mut rng = RngStream::new(20);
        // DCGAN: G's 1×1 input has nz + classes channels, D's first conv sees nc + classes channels.
        let c = conditional(ModelKind::Dcgan, 28, 1, 10);
        let g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&g.store, "main.0.weight"), [7 + 10, 20, 7, 7]);
        assert_eq!(shape_of(&d.store, "main.0.weight"), [3, 1 + 10, 4, 4]);
        let c = conditional(ModelKind::Dcgan, 32, 3, 3);
        let d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&d.store, "main.0.weight"), [3, 3 + 3, 4, 4]);
        // The rest of the network is the unconditional one.
        let u = Discriminator::new(
            &ModelConfig {
                num_classes: 0,
                ..c
            },
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        assert_eq!(d.store.len(), u.store.len());
        // MLP: the one-hot label follows z / the flattened image.
        let c = conditional(ModelKind::Mlp, 9, 1, 4);
        let g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(shape_of(&g.store, "main.0.weight"), [6, 7 + 4]);
        assert_eq!(shape_of(&d.store, "main.0.weight"), [24, 81 + 4]);
    }

    /// Eval-mode G on latents `z` with `labels`, on a fresh tape.
    fn gen(g: &mut Generator, z: &Tensor, labels: &[u32]) -> Vec<f32> {
        g.generate_with_labels(z, Some(labels))
            .unwrap()
            .to_vec()
            .unwrap()
    }

    #[test]
    fn changing_the_label_changes_the_output_of_g_and_d() {
        for c in [
            conditional(ModelKind::Dcgan, 28, 1, 10),
            conditional(ModelKind::Dcgan, 32, 3, 3),
            conditional(ModelKind::Mlp, 11, 3, 5),
        ] {
            let what = c.describe();
            let mut rng = RngStream::new(21);
            let mut g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
            let mut d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
            let z = rng.normal(&[3, 7], 0.0, 1.0, &Device::Cpu).unwrap();
            let numel = c.image_numel();
            let a = gen(&mut g, &z, &[0, 1, 2]);
            assert_eq!(a, gen(&mut g, &z, &[0, 1, 2]), "{what}: deterministic");
            // Only image 1's label changes: image 1 changes, images 0 and 2 (same z, same label) do not.
            let b = gen(&mut g, &z, &[0, 2, 2]);
            assert_eq!(a[..numel], b[..numel], "{what}");
            assert_eq!(a[2 * numel..], b[2 * numel..], "{what}");
            let moved = a[numel..2 * numel]
                .iter()
                .zip(&b[numel..2 * numel])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            // Fresh DCGAN weights (N(0, 0.02)) make small images, so the change is judged relative to them.
            let scale = a[numel..2 * numel].iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                moved > 0.01 * scale && moved > 0.0,
                "{what}: the label did not change G(z): {moved} (images up to {scale})"
            );

            // D scores the same images differently under different labels.
            let x = g.generate_with_labels(&z, Some(&[0, 1, 2])).unwrap();
            let mut logits = |labels: &[u32]| {
                let mut tape = Tape::no_grad();
                let xv = tape.constant(x.clone());
                let y = d
                    .forward_labelled(&mut tape, xv, Some(labels), false)
                    .unwrap();
                tape.value(y).to_vec().unwrap()
            };
            let (p, q) = (logits(&[0, 1, 2]), logits(&[1, 1, 0]));
            assert_eq!(p[1], q[1], "{what}: same image, same label");
            assert_ne!(p[0], q[0], "{what}");
            assert_ne!(p[2], q[2], "{what}");

            // dfeatures' view takes the labels the same way: the first block moves with them, per image.
            let first = |d: &mut Discriminator, labels: &[u32]| {
                let f = d.forward_features(&x, Some(labels)).unwrap();
                f[0].1.to_vec().unwrap()
            };
            let (p, q) = (first(&mut d, &[0, 1, 2]), first(&mut d, &[0, 1, 0]));
            let per = p.len() / 3;
            assert_eq!(
                p[..2 * per],
                q[..2 * per],
                "{what}: same images, same labels"
            );
            assert_ne!(
                p[2 * per..],
                q[2 * per..],
                "{what}: the label reaches D's first block"
            );
            let e = d.forward_features(&x, None).unwrap_err();
            assert!(format!("{e}").contains("needs a class label"), "{e}");
        }
    }

    #[test]
    fn grid_rows_follow_the_labels() {
        let c = conditional(ModelKind::Dcgan, 28, 1, 4);
        let mut rng = RngStream::new(22);
        let mut g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let cols = 3;
        let z = rng.normal(&[cols, 7], 0.0, 1.0, &Device::Cpu).unwrap();
        // A class grid: the same latents in every row, labelled by row.
        let labels = row_labels(4 * cols, cols, 4);
        assert_eq!(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        let zs = z.to_vec().unwrap().repeat(4);
        let zs = Tensor::from_vec(zs, &[4 * cols, 7], &Device::Cpu).unwrap();
        let grid = gen(&mut g, &zs, &labels);
        let row_len = cols * c.image_numel();
        for r in 0..4u32 {
            let alone = gen(&mut g, &z, &[r; 3]);
            let row = &grid[r as usize * row_len..(r as usize + 1) * row_len];
            let worst = row
                .iter()
                .zip(&alone)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            // Eval-mode BN: each image depends only on its own (z, label), whatever else is in the batch.
            assert!(worst <= 1e-6, "row {r} differs from G(z, {r}) by {worst}");
        }
        // And the rows really are different classes.
        assert_ne!(grid[..row_len], grid[row_len..2 * row_len]);
        // Rows wrap around the classes when there are more rows than classes.
        assert_eq!(row_labels(7, 2, 3), [0, 0, 1, 1, 2, 2, 0]);
    }

    #[test]
    fn label_mistakes_are_clear_errors() {
        let c = conditional(ModelKind::Dcgan, 28, 1, 10);
        let mut rng = RngStream::new(23);
        let mut g = Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let mut d = Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let z = Tensor::zeros(&[2, 7], &Device::Cpu).unwrap();
        let err = |r: Result<Tensor>| r.err().unwrap().to_string();
        let e = err(g.generate(&z));
        assert!(e.contains("class-conditional (10 classes)"), "{e}");
        let e = err(g.generate_with_labels(&z, Some(&[1])));
        assert!(e.contains("1 class labels for a batch of 2"), "{e}");
        let e = err(g.generate_with_labels(&z, Some(&[1, 10])));
        assert!(e.contains("class label 10 is out of range"), "{e}");
        let mut tape = Tape::new();
        let x = tape.constant(Tensor::zeros(&[2, 1, 28, 28], &Device::Cpu).unwrap());
        let e = d.forward(&mut tape, x, true).unwrap_err().to_string();
        assert!(
            e.contains("discriminator") && e.contains("needs a class label"),
            "{e}"
        );

        let u = ModelConfig {
            num_classes: 0,
            ..c
        };
        let mut g = Generator::new(&u, &Device::Cpu, &mut rng).unwrap();
        let e = err(g.generate_with_labels(&z, Some(&[1, 2])));
        assert!(e.contains("unconditional"), "{e}");
        assert_eq!(g.generate(&z).unwrap().shape(), [2, 1, 28, 28]);
    }

    #[test]
    fn configs_without_num_classes_load_as_unconditional() {
        // The JSON of a checkpoint written before conditioning existed.
        let old = r#"{"kind":"dcgan","image_size":32,"channels":3,"nz":100,"ngf":32,"ndf":32,"hidden":256}"#;
        let c: ModelConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.num_classes, 0);
        assert!(!c.is_conditional());
        let cond = ModelConfig {
            num_classes: 10,
            ..c.clone()
        };
        let back: ModelConfig =
            serde_json::from_str(&serde_json::to_string(&cond).unwrap()).unwrap();
        assert_eq!(back, cond);
        assert_eq!(c.differences(&cond), ["--conditional (10 classes)"]);
        assert!(cond.describe().ends_with("conditional on 10 classes"));
    }
}
