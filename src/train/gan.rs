//! One GAN iteration, step for step as in PyTorch's DCGAN example (`examples/dcgan/main.py`):
//!
//! 1. D step (k times): D(x) on a real batch → BCE(·, 1); z ~ N(0, 1); fake = G(z); D(fake.detach()) →
//!    BCE(·, 0); backward through their sum; Adam on D.
//! 2. G step: D(fake) with D's parameters frozen (no weight gradients computed for them) → BCE(·, 1) for the
//!    non-saturating loss, or −BCE(·, 0) for minimax; backward into G; Adam on G.
//!
//! The other objectives (`ls`, `hinge`, `wgan`, `wgan-gp`, see [`super::losses`]) replace the two BCE terms of
//! the D step and G's term, and `wgan` clips D's weights after each D update; the optimiser may be RMSprop
//! instead of Adam. A gradient penalty (`wgan-gp`'s on real–fake interpolates, R1's on the real batch, DRAGAN's
//! on interpolates of real images and their noisy copies) adds a term to the D loss that holds D's input
//! gradient, recorded on the tape, so D's backward pass is a double backward.
//!
//! Both networks stay in training mode throughout, so their BN layers normalise with batch statistics and
//! update their running stats on every forward, exactly as PyTorch does in that script.

use anyhow::{bail, Result};

use crate::autograd::{Gradients, Tape, Var};
use crate::device::Device;
use crate::nn::models::{Discriminator, Generator, ModelConfig};
use crate::ops;
use crate::ops::elementwise::scalar_times;
use crate::ops::random::RngStream;
use crate::optim::scaler::{self, LossScaler};
use crate::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig};
use crate::tensor::Tensor;

use super::config::{
    AdamSettings, LossKind, OptimizerKind, TrainConfig, DEFAULT_CLIP, DEFAULT_GP_LAMBDA,
    RMSPROP_ALPHA,
};
use super::losses;

/// What one iteration measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepMetrics {
    /// The iteration number, 1-based (the number of G updates done when it finished).
    pub step: u64,
    /// errD = errD_real + errD_fake of the last D step.
    pub loss_d: f32,
    pub loss_g: f32,
    /// Mean D(x) on the last real batch: a probability σ(D(x)) for the BCE losses (ns, minimax), the mean raw
    /// D output for ls / hinge / wgan (see [`LossKind::reports_probabilities`]).
    pub d_x: f32,
    /// Mean D(G(z)) before the last D update (same convention as `d_x`).
    pub d_g_z1: f32,
    /// Mean D(G(z)) after it (in the G step).
    pub d_g_z2: f32,
    /// Real images consumed.
    pub images: usize,
}

impl StepMetrics {
    /// The metrics of iteration `step` from its last D step and its G step.
    pub fn of(step: u64, d: &DStep, g: &GStep, images: usize) -> StepMetrics {
        StepMetrics {
            step,
            loss_d: d.loss_d,
            loss_g: g.loss_g,
            d_x: d.d_x,
            d_g_z1: d.d_g_z1,
            d_g_z2: g.d_g_z2,
            images,
        }
    }
}

/// A real batch for a D step: images [N, C, H, W] and, for a conditional model, their class labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Option<Vec<u32>>,
}

impl From<Tensor> for Batch {
    /// An unlabelled batch.
    fn from(images: Tensor) -> Batch {
        Batch {
            images,
            labels: None,
        }
    }
}

/// What G generates a fake batch from: latents z [N, nz] and, for a conditional model, the class labels.
pub struct Latents {
    pub z: Tensor,
    pub labels: Option<Vec<u32>>,
}

/// G(z) on the tape, still connected to G's parameters, and the class labels it was generated for
/// (conditional models), which the G step shows D again.
pub struct Fake {
    pub x: Var,
    pub labels: Option<Vec<u32>>,
}

/// Result of one D step. The gradients are returned for inspection (tests check which parameters got one).
pub struct DStep {
    pub loss_d: f32,
    pub d_x: f32,
    pub d_g_z1: f32,
    /// The fake of this step, for the G step.
    pub fake: Fake,
    pub grads: Gradients,
}

pub struct GStep {
    pub loss_g: f32,
    pub d_g_z2: f32,
    pub grads: Gradients,
}

/// Both networks, their optimisers and the latent-noise stream: the whole mutable state of training except
/// the data position.
pub struct Gan {
    pub g: Generator,
    pub d: Discriminator,
    pub opt_g: Optimizer,
    pub opt_d: Optimizer,
    /// Source of the training z (never of the fixed sample z).
    pub noise: RngStream,
    pub loss: LossKind,
    /// WGAN weight-clipping bound (used only when the loss clips, see [`LossKind::clips_weights`]).
    pub clip: f32,
    /// WGAN-GP's penalty weight λ (used only by [`LossKind::WganGp`]).
    pub gp_lambda: f32,
    /// R1's penalty weight γ; None: no R1 penalty.
    pub r1: Option<f32>,
    /// DRAGAN's penalty weight λ; None: no DRAGAN penalty.
    pub dragan: Option<f32>,
    /// fp16's dynamic loss scaling of G's and D's steps ([`crate::optim::scaler`]); None at other precisions.
    pub scaler_g: Option<LossScaler>,
    pub scaler_d: Option<LossScaler>,
    pub device: Device,
    /// While a step is captured as a CUDA graph ([`super::graph`]): the logged values are kept here as device
    /// tensors (errD, D(x), D(G(z)) before and after D's update, errG) instead of being read back, which a
    /// graph cannot do; the steps return NaN metrics meanwhile.
    pub(crate) deferred: Option<Vec<Tensor>>,
}

/// The seed of each of the run's independent Philox streams (distinct keys give independent streams).
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    // SplitMix64 finaliser: nearby (seed, stream) pairs map to unrelated keys.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const STREAM_INIT: u64 = 1;
pub const STREAM_NOISE: u64 = 2;
pub const STREAM_FIXED_Z: u64 = 3;
pub const STREAM_DATA: u64 = 4;

pub fn adam(a: &AdamSettings, store: &crate::nn::ParamStore) -> Result<Adam> {
    Adam::new(
        store,
        AdamConfig {
            lr: a.lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: 0.0,
        },
    )
}

/// The optimiser `kind` for `store`, with the learning rate (and eps) of `a`.
pub fn optimizer(
    kind: OptimizerKind,
    a: &AdamSettings,
    store: &crate::nn::ParamStore,
) -> Result<Optimizer> {
    Ok(match kind {
        OptimizerKind::Adam => Optimizer::Adam(adam(a, store)?),
        OptimizerKind::Rmsprop => Optimizer::RmsProp(RmsProp::new(
            store,
            RmsPropConfig {
                lr: a.lr,
                alpha: RMSPROP_ALPHA,
                eps: a.eps,
                weight_decay: 0.0,
            },
        )?),
    })
}

impl Gan {
    /// The Gan of a training config: fresh models from its seed, its loss, optimiser and clip bound.
    pub fn from_config(cfg: &TrainConfig, device: &Device) -> Result<Gan> {
        let mut gan = Gan::build(
            &cfg.model,
            cfg.optimizer,
            [&cfg.adam_g, &cfg.adam_d],
            cfg.loss,
            cfg.clip,
            cfg.seed,
            device,
        )?;
        gan.gp_lambda = cfg.gp_lambda;
        gan.r1 = cfg.r1;
        gan.dragan = cfg.dragan;
        Ok(gan)
    }

    /// Fresh models initialised from `seed` (G first, then D, from one stream), with Adam and the default clip.
    pub fn new(
        model: &ModelConfig,
        adam_g: &AdamSettings,
        adam_d: &AdamSettings,
        loss: LossKind,
        seed: u64,
        device: &Device,
    ) -> Result<Gan> {
        Gan::build(
            model,
            OptimizerKind::Adam,
            [adam_g, adam_d],
            loss,
            DEFAULT_CLIP,
            seed,
            device,
        )
    }

    fn build(
        model: &ModelConfig,
        kind: OptimizerKind,
        [settings_g, settings_d]: [&AdamSettings; 2],
        loss: LossKind,
        clip: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Gan> {
        let mut init = RngStream::new(stream_seed(seed, STREAM_INIT));
        let g = Generator::new(model, device, &mut init)?;
        let d = Discriminator::new(model, device, &mut init)?;
        let opt_g = optimizer(kind, settings_g, &g.store)?;
        let opt_d = optimizer(kind, settings_d, &d.store)?;
        Ok(Gan {
            g,
            d,
            opt_g,
            opt_d,
            noise: RngStream::new(stream_seed(seed, STREAM_NOISE)),
            loss,
            clip,
            gp_lambda: DEFAULT_GP_LAMBDA,
            r1: None,
            dragan: None,
            scaler_g: LossScaler::for_precision(device.backend().precision()),
            scaler_d: LossScaler::for_precision(device.backend().precision()),
            device: device.clone(),
            deferred: None,
        })
    }

    /// Latents for a batch of `n` from the noise stream: z ~ N(0, 1), then, for a conditional model, the fake
    /// labels drawn right after z, so they are reproducible and resume exactly like z.
    pub fn latents(&mut self, n: usize) -> Result<Latents> {
        let z = self
            .noise
            .normal(&[n, self.g.cfg.nz], 0.0, 1.0, &self.device)?;
        let labels = self.draw_labels(n)?;
        Ok(Latents { z, labels })
    }

    /// `n` class labels uniform over the model's classes from the noise stream; `None` (and no draw) for an
    /// unconditional model, so unconditional runs draw exactly the numbers they always did.
    pub fn draw_labels(&mut self, n: usize) -> Result<Option<Vec<u32>>> {
        let c = self.g.cfg.num_classes;
        if c == 0 {
            return Ok(None);
        }
        // Drawn by the CPU backend whatever the device: the labels are needed on the host to build the one-hot
        // codes, and Philox gives the same numbers on every backend anyway.
        let u = self.noise.uniform(&[n], 0.0, 1.0, &Device::Cpu)?.to_vec()?;
        // min: guards a uniform that rounds up to exactly 1.0.
        Ok(Some(
            u.iter()
                .map(|&x| ((x * c as f32) as u32).min(c as u32 - 1))
                .collect(),
        ))
    }

    /// One D update on the real batch `real`, against the fake G makes from `latents`. Clears the tape first:
    /// the fake it leaves on the tape is the only thing the G step needs.
    pub fn d_step(
        &mut self,
        tape: &mut Tape,
        real: Batch,
        latents: Latents,
        step: u64,
    ) -> Result<DStep> {
        let real_labels = real.labels.as_deref();
        let fake_labels = latents.labels;
        tape.clear();
        self.d.store.zero_grad();
        let images = real.images.to_device(&self.device)?;
        // R1 differentiates D's output with respect to the real images.
        let x = match self.r1 {
            Some(_) => tape.leaf(images),
            None => tape.constant(images),
        };
        let logits_real = self.d.forward_labelled(tape, x, real_labels, true)?;
        let err_real = losses::d_loss_real(tape, self.loss, logits_real)?;

        let z = tape.constant(latents.z.to_device(&self.device)?);
        let fake = self
            .g
            .forward_labelled(tape, z, fake_labels.as_deref(), true)?;
        // D's update must not push gradients into G.
        let fake_const = tape.detach(fake);
        let logits_fake =
            self.d
                .forward_labelled(tape, fake_const, fake_labels.as_deref(), true)?;
        let err_fake = losses::d_loss_fake(tape, self.loss, logits_fake)?;
        let mut err_d = ops::add(tape, err_real, err_fake)?;
        if let Some(gamma) = self.r1 {
            let grad = losses::input_gradient(tape, logits_real, x)?;
            let p = losses::r1_penalty(tape, grad, gamma)?;
            err_d = ops::add(tape, err_d, p)?;
        }
        if self.loss == LossKind::WganGp {
            let x_hat = self.interpolate(tape.value(x), tape.value(fake_const))?;
            let p = self.gradient_penalty_at(tape, x_hat, real_labels, self.gp_lambda)?;
            err_d = ops::add(tape, err_d, p)?;
        }
        if let Some(lambda) = self.dragan {
            let real = tape.value(x).clone();
            let noisy = self.perturb(&real)?;
            let x_hat = self.interpolate(&noisy, &real)?;
            let p = self.gradient_penalty_at(tape, x_hat, real_labels, lambda)?;
            err_d = ops::add(tape, err_d, p)?;
        }

        let logged = [err_d, logits_real, logits_fake].map(|v| tape.value(v));
        let [loss_d, d_x, d_g_z1] =
            self.keep_or_read(logged, |gan| gan.read_d_metrics(logged, step))?;
        let grads = scaler::backward(tape, err_d, self.scaler_d.as_ref())?;
        self.d.store.accumulate_grads(&grads)?;
        // The tape's copies of D's weights are dead now; dropping them lets Adam update in place.
        tape.release_params(self.d.store.id());
        scaler::step(self.scaler_d.as_mut(), &mut self.opt_d, &mut self.d.store)?;
        if self.loss.clips_weights() {
            self.clip_d()?;
        }
        Ok(DStep {
            loss_d,
            d_x,
            d_g_z1,
            fake: Fake {
                x: fake,
                labels: fake_labels,
            },
            grads,
        })
    }

    /// λ·E[(‖∇D(x̂)‖₂ − 1)²] at the images `x_hat`. A conditional critic judges each with its real image's label.
    fn gradient_penalty_at(
        &mut self,
        tape: &mut Tape,
        x_hat: Tensor,
        labels: Option<&[u32]>,
        lambda: f32,
    ) -> Result<Var> {
        let x_hat = tape.leaf(x_hat);
        let out = self.d.forward_labelled(tape, x_hat, labels, true)?;
        let grad = losses::input_gradient(tape, out, x_hat)?;
        losses::gradient_penalty(tape, grad, lambda)
    }

    /// DRAGAN's perturbed real images x + ½σ·u, u ~ U(0, 1) elementwise from the noise stream, σ the standard
    /// deviation of the whole batch (population form, as numpy's `x.std()` in the DRAGAN authors' code), made
    /// on the device.
    fn perturb(&mut self, x: &Tensor) -> Result<Tensor> {
        let be = x.backend();
        let n = x.numel().max(1) as f32;
        let ones = be.affine(&be.zeros(x.shape())?, 0.0, 1.0)?;
        let minus_mean = be.affine(&be.sum(x)?, -1.0 / n, 0.0)?;
        let centred = be.add(x, &scalar_times(&minus_mean, &ones)?)?;
        let var = be.affine(&be.sum(&be.mul(&centred, &centred)?)?, 1.0 / n, 0.0)?;
        let half_std = be.affine(&be.powf(&var, 0.5)?, 0.5, 0.0)?;
        let u = self.noise.uniform(x.shape(), 0.0, 1.0, &self.device)?;
        be.add(x, &scalar_times(&half_std, &u)?)
    }

    /// WGAN-GP's interpolates x̂ = f + ε·(x − f) of real images x and fakes f, with ε ~ U(0, 1) per sample
    /// from the noise stream, made on the device (ε is broadcast over each sample by a product with a column of
    /// ones).
    fn interpolate(&mut self, x: &Tensor, f: &Tensor) -> Result<Tensor> {
        let n = x.shape()[0];
        let features = x.numel() / n.max(1);
        let eps = self.noise.uniform(&[n, 1], 0.0, 1.0, &self.device)?;
        let be = x.backend();
        let ones = be.affine(&be.zeros(&[features, 1])?, 0.0, 1.0)?;
        let eps = be.linear(&eps, &ones, None)?.reshape(x.shape())?;
        let d = be.add(x, &be.affine(f, -1.0, 0.0)?)?;
        be.add(f, &be.mul(&eps, &d)?)
    }

    /// One G update through the (just updated) D, on the fake of the last D step.
    pub fn g_step(&mut self, tape: &mut Tape, fake: &Fake, step: u64) -> Result<GStep> {
        self.g.store.zero_grad();
        // Frozen D: its parameters enter the tape as constants, so backward computes only the gradient
        // flowing through D's activations into the fake, never D's weight gradients.
        self.d.store.requires_grad = false;
        let out = self
            .d
            .forward_labelled(tape, fake.x, fake.labels.as_deref(), true);
        self.d.store.requires_grad = true;
        let logits = out?;
        let err_g = losses::g_loss(tape, self.loss, logits)?;
        let logged = [err_g, logits].map(|v| tape.value(v));
        let [loss_g, d_g_z2] = self.keep_or_read(logged, |gan| gan.read_g_metrics(logged, step))?;
        let grads = scaler::backward(tape, err_g, self.scaler_g.as_ref())?;
        self.g.store.accumulate_grads(&grads)?;
        tape.release_params(self.g.store.id());
        scaler::step(self.scaler_g.as_mut(), &mut self.opt_g, &mut self.g.store)?;
        Ok(GStep {
            loss_g,
            d_g_z2,
            grads,
        })
    }

    /// The logged values of a step: kept as device tensors while a graph is captured (NaN metrics returned),
    /// otherwise read back by `read`.
    fn keep_or_read<const N: usize>(
        &mut self,
        logged: [&Tensor; N],
        read: impl FnOnce(&Gan) -> Result<[f32; N]>,
    ) -> Result<[f32; N]> {
        match &mut self.deferred {
            Some(keep) => {
                keep.extend(logged.iter().map(|&t| t.clone()));
                Ok([f32::NAN; N])
            }
            None => read(self),
        }
    }

    /// Every tensor a training step updates in place: G's and D's parameters and buffers (in their stores'
    /// order), then G's and D's optimizer state.
    pub fn state_tensors(&self) -> Vec<&Tensor> {
        let mut ts: Vec<&Tensor> = Vec::new();
        for store in [&self.g.store, &self.d.store] {
            ts.extend(store.named_tensors().into_iter().map(|(_, t)| t));
        }
        ts.extend(self.opt_g.state_tensors());
        ts.extend(self.opt_d.state_tensors());
        ts
    }

    /// errD, mean D(x) and mean D(G(z)) from the D step's loss and logits; a non-finite loss is an error.
    pub(crate) fn read_d_metrics(
        &self,
        [err_d, real, fake]: [&Tensor; 3],
        step: u64,
    ) -> Result<[f32; 3]> {
        let loss_d = err_d.scalar()?;
        if !loss_d.is_finite() {
            bail!("step {step}: the discriminator loss is {loss_d}; training diverged (try a lower learning rate)");
        }
        Ok([
            loss_d,
            losses::d_output_metric(self.loss, real)?,
            losses::d_output_metric(self.loss, fake)?,
        ])
    }

    /// errG and mean D(G(z)) from the G step's loss and logits; a non-finite loss is an error.
    pub(crate) fn read_g_metrics(
        &self,
        [err_g, logits]: [&Tensor; 2],
        step: u64,
    ) -> Result<[f32; 2]> {
        let loss_g = err_g.scalar()?;
        if !loss_g.is_finite() {
            bail!("step {step}: the generator loss is {loss_g}; training diverged (try a lower learning rate)");
        }
        Ok([loss_g, losses::d_output_metric(self.loss, logits)?])
    }

    /// WGAN's weight clipping: every D parameter (conv / linear weights and biases, and BN's γ, β, as in the
    /// WGAN reference code) clamped to [−clip, clip] in place. BN's running statistics are buffers, not
    /// parameters, and stay as they are.
    pub fn clip_d(&mut self) -> Result<()> {
        let c = self.clip;
        let backend = self.device.backend();
        let mut params: Vec<&mut Tensor> = self
            .d
            .store
            .params_and_grads_mut()
            .map(|(_, p, _)| p)
            .collect();
        backend.clamp_(&mut params, -c, c)
    }

    /// A full iteration: `k` D steps, each on a fresh batch from `next_real` against fresh latents, then one
    /// G step.
    pub fn train_step(
        &mut self,
        tape: &mut Tape,
        k: usize,
        step: u64,
        mut next_real: impl FnMut() -> Result<Batch>,
    ) -> Result<StepMetrics> {
        let mut images = 0;
        let mut last = None;
        for _ in 0..k.max(1) {
            let real = next_real()?;
            let n = real.images.dims4("real batch")?[0];
            images += n;
            let latents = self.latents(n)?;
            last = Some(self.d_step(tape, real, latents, step)?);
        }
        let d = last.expect("k >= 1");
        let g = self.g_step(tape, &d.fake, step)?;
        tape.clear();
        Ok(StepMetrics::of(step, &d, &g, images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::ModelKind;

    fn tiny_gan(kind: ModelKind, loss: LossKind) -> Gan {
        let cfg = ModelConfig {
            kind,
            image_size: 28,
            channels: 1,
            nz: 5,
            ngf: 3,
            ndf: 3,
            hidden: 6,
            ..ModelConfig::default()
        };
        let a = AdamSettings::DCGAN;
        Gan::new(&cfg, &a, &a, loss, 7, &Device::Cpu).unwrap()
    }

    /// A D step on an unlabelled batch against latents drawn from the noise stream.
    fn step_d(gan: &mut Gan, tape: &mut Tape, real: Tensor, step: u64) -> Result<DStep> {
        let latents = gan.latents(real.shape()[0])?;
        gan.d_step(tape, real.into(), latents, step)
    }

    fn real(n: usize, seed: u64) -> Tensor {
        RngStream::new(seed)
            .uniform(&[n, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
            .unwrap()
    }

    fn snapshot(store: &crate::nn::ParamStore) -> Vec<Vec<f32>> {
        store
            .named_tensors()
            .iter()
            .map(|(_, t)| t.to_vec().unwrap())
            .collect()
    }

    fn has_any_grad(store: &crate::nn::ParamStore) -> bool {
        (0..store.len()).any(|i| store.grad(crate::nn::ParamId(i)).is_some())
    }

    fn all_grads(store: &crate::nn::ParamStore) -> bool {
        (0..store.len()).all(|i| store.grad(crate::nn::ParamId(i)).is_some())
    }

    #[test]
    fn each_step_computes_gradients_only_for_its_own_network() {
        for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
            let mut gan = tiny_gan(kind, LossKind::Ns);
            let mut tape = Tape::new();
            let d = step_d(&mut gan, &mut tape, real(4, 1), 1).unwrap();
            // The D step's backward reached every D parameter and no G parameter (fake was detached):
            // route its gradients into a cleared G store and into D's, and see which fill.
            gan.g.store.zero_grad();
            gan.g.store.accumulate_grads(&d.grads).unwrap();
            assert!(
                !has_any_grad(&gan.g.store),
                "{kind}: G got a gradient in the D step"
            );
            assert!(
                all_grads(&gan.d.store),
                "{kind}: some D parameter got no gradient"
            );

            let g_params_before = snapshot(&gan.g.store);
            let g = gan.g_step(&mut tape, &d.fake, 1).unwrap();
            gan.d.store.zero_grad();
            gan.d.store.accumulate_grads(&g.grads).unwrap();
            assert!(
                !has_any_grad(&gan.d.store),
                "{kind}: D got a gradient in the G step"
            );
            assert!(
                gan.d.store.requires_grad,
                "D must be trainable again after the G step"
            );
            gan.g.store.zero_grad();
            gan.g.store.accumulate_grads(&g.grads).unwrap();
            assert!(
                all_grads(&gan.g.store),
                "{kind}: some G parameter got no gradient"
            );
            assert_ne!(snapshot(&gan.g.store), g_params_before, "Adam moved G");
        }
    }

    #[test]
    fn d_step_updates_only_d_parameters_and_g_step_only_g_parameters() {
        let mut gan = tiny_gan(ModelKind::Dcgan, LossKind::Minimax);
        let mut tape = Tape::new();
        let params = |s: &crate::nn::ParamStore| {
            (0..s.len())
                .map(|i| s.value(crate::nn::ParamId(i)).to_vec().unwrap())
                .collect::<Vec<_>>()
        };
        let (g0, d0) = (params(&gan.g.store), params(&gan.d.store));
        let d = step_d(&mut gan, &mut tape, real(3, 2), 1).unwrap();
        assert_eq!(params(&gan.g.store), g0);
        let d1 = params(&gan.d.store);
        assert_ne!(d1, d0);
        let g = gan.g_step(&mut tape, &d.fake, 1).unwrap();
        assert_eq!(params(&gan.d.store), d1);
        assert_ne!(params(&gan.g.store), g0);
        // Minimax: errG = -BCE(D(G(z)), 0) = mean log(1 - D(G(z))) < 0.
        assert!(g.loss_g < 0.0, "{}", g.loss_g);
    }

    #[test]
    fn metrics_are_consistent_probabilities() {
        let mut gan = tiny_gan(ModelKind::Dcgan, LossKind::Ns);
        let mut tape = Tape::new();
        let mut seed = 10;
        let m = gan
            .train_step(&mut tape, 2, 1, || {
                seed += 1;
                Ok(real(4, seed).into())
            })
            .unwrap();
        assert_eq!(m.images, 8);
        for p in [m.d_x, m.d_g_z1, m.d_g_z2] {
            assert!((0.0..=1.0).contains(&p), "{m:?}");
        }
        // With fresh weights D is near chance: errD ≈ 2 ln 2, errG ≈ ln 2.
        assert!((m.loss_d - 2.0 * 2f32.ln()).abs() < 0.3, "{m:?}");
        assert!((m.loss_g - 2f32.ln()).abs() < 0.3, "{m:?}");
        assert!(tape.is_empty(), "the tape is cleared after the iteration");
    }

    test_devices! {
        /// One iteration against PyTorch's DCGAN example step (tests/fixtures/dcgan32_iteration.safetensors,
        /// written by scripts/gen_golden.py): same initial weights, x and z; every loss, probability, gradient,
        /// updated weight and BN buffer must agree to float32 rounding. On emu: the whole DCGAN step (convs,
        /// transposed convs, batch norm, activations, fused BCE, multi-tensor Adam) on the GPU path, held to the
        /// same PyTorch reference as the CPU backend.
        one_iteration_matches_pytorch_dcgan_example => super::check_iteration_against_pytorch
    }

    fn check_iteration_against_pytorch(dev: &Device) {
        use crate::checkpoint::TensorFile;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dcgan32_iteration.safetensors");
        let f = TensorFile::load(&path).unwrap();
        let dev = dev.clone();
        let cfg = ModelConfig {
            kind: ModelKind::Dcgan,
            image_size: 32,
            channels: 3,
            nz: 8,
            ngf: 4,
            ndf: 4,
            hidden: 1,
            ..ModelConfig::default()
        };
        let a = AdamSettings::DCGAN;
        let mut gan = Gan::new(&cfg, &a, &a, LossKind::Ns, 0, &dev).unwrap();
        f.load_store("g0.", &mut gan.g.store, "generator", &path)
            .unwrap();
        f.load_store("d0.", &mut gan.d.store, "discriminator", &path)
            .unwrap();
        let t = |k: &str| f.tensors[k].to_tensor(&dev).unwrap();
        let scalar = |k: &str| f.tensors[k].data[0];

        // Relative to the reference's RMS, with an absolute floor for all-but-zero tensors.
        let close = |what: &str, got: &Tensor, want: &crate::checkpoint::HostTensor, rel: f64| {
            assert_eq!(got.shape(), &want.shape[..], "{what}: shape");
            let g = got.to_vec().unwrap();
            let rms = (want.data.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()
                / want.data.len() as f64)
                .sqrt();
            let tol = rel * rms.max(1e-6);
            for (i, (x, y)) in g.iter().zip(&want.data).enumerate() {
                assert!(
                    ((*x as f64) - (*y as f64)).abs() <= tol,
                    "{what}[{i}]: got {x}, want {y} (tol {tol:e})"
                );
            }
        };
        let close_scalar = |what: &str, got: f32, want: f32| {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{what}: got {got}, want {want}"
            );
        };

        let mut tape = Tape::new();
        let latents = Latents {
            z: t("z"),
            labels: None,
        };
        let d = gan.d_step(&mut tape, t("x").into(), latents, 1).unwrap();
        assert!(
            tape.value(d.fake.x).device().same(&dev),
            "the step ran on {}",
            dev.name()
        );
        close("fake", tape.value(d.fake.x), &f.tensors["fake"], 1e-5);
        close_scalar("errD", d.loss_d, scalar("errD_real") + scalar("errD_fake"));
        close_scalar("D_x", d.d_x, scalar("D_x"));
        close_scalar("D_G_z1", d.d_g_z1, scalar("D_G_z1"));
        for i in 0..gan.d.store.len() {
            let id = crate::nn::ParamId(i);
            let name = gan.d.store.name(id).to_string();
            close(
                &format!("gradD.{name}"),
                gan.d.store.grad(id).unwrap(),
                &f.tensors[&format!("gradD.{name}")],
                1e-4,
            );
        }
        let g = gan.g_step(&mut tape, &d.fake, 1).unwrap();
        close_scalar("errG", g.loss_g, scalar("errG"));
        close_scalar("D_G_z2", g.d_g_z2, scalar("D_G_z2"));
        for i in 0..gan.g.store.len() {
            let id = crate::nn::ParamId(i);
            let name = gan.g.store.name(id).to_string();
            close(
                &format!("gradG.{name}"),
                gan.g.store.grad(id).unwrap(),
                &f.tensors[&format!("gradG.{name}")],
                1e-4,
            );
        }
        // After both Adam steps and all the BN running-stat updates (D saw three batches, G one).
        for (prefix, store) in [("g1.", &gan.g.store), ("d1.", &gan.d.store)] {
            for (name, v) in store.named_tensors() {
                close(
                    &format!("{prefix}{name}"),
                    v,
                    &f.tensors[&format!("{prefix}{name}")],
                    1e-5,
                );
            }
        }
    }

    fn max_abs_param(store: &crate::nn::ParamStore) -> f32 {
        (0..store.len())
            .flat_map(|i| store.value(crate::nn::ParamId(i)).to_vec().unwrap())
            .fold(0.0, |m, x| m.max(x.abs()))
    }

    /// One iteration with k = 2 on fresh batches of three (seeds after `seed`) on `dev`; every metric finite.
    fn finite_step(
        gan: &mut Gan,
        tape: &mut Tape,
        dev: &Device,
        step: u64,
        seed: &mut u64,
        what: &str,
    ) -> StepMetrics {
        let m = gan
            .train_step(tape, 2, step, || {
                *seed += 1;
                real(3, *seed).to_device(dev).map(Batch::from)
            })
            .unwrap();
        for v in [m.loss_d, m.loss_g, m.d_x, m.d_g_z1, m.d_g_z2] {
            assert!(v.is_finite(), "{what}: {m:?}");
        }
        m
    }

    /// A few iterations of every loss with both optimisers, k = 2 and different learning rates for D and G:
    /// the losses stay finite, both networks move, and the WGAN critic stays inside its clip bound (while its
    /// BN buffers, which are not parameters, are left alone).
    fn train_a_few_steps(dev: &Device) {
        use crate::train::config::TrainConfig;
        for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
            for loss in [
                LossKind::Ns,
                LossKind::Minimax,
                LossKind::Ls,
                LossKind::Hinge,
                LossKind::Wgan,
            ] {
                for optimizer in [OptimizerKind::Adam, OptimizerKind::Rmsprop] {
                    let what = format!("{kind} {loss} {optimizer} on {}", dev.name());
                    let mut cfg = TrainConfig {
                        loss,
                        optimizer,
                        clip: 0.02,
                        ..TrainConfig::default()
                    };
                    cfg.model = tiny_gan(kind, loss).g.cfg.clone();
                    cfg.adam_d.lr = 1e-3;
                    cfg.adam_g.lr = 5e-4;
                    let mut gan = Gan::from_config(&cfg, dev).unwrap();
                    assert_eq!(gan.opt_d.name(), optimizer.to_string());
                    let (g0, d0) = (snapshot(&gan.g.store), snapshot(&gan.d.store));
                    let mut tape = Tape::new();
                    let mut seed = 100;
                    for step in 1..=3 {
                        let m = finite_step(&mut gan, &mut tape, dev, step, &mut seed, &what);
                        if loss.reports_probabilities() {
                            assert!((0.0..=1.0).contains(&m.d_x), "{what}: {m:?}");
                        }
                        if loss == LossKind::Wgan {
                            let c = max_abs_param(&gan.d.store);
                            assert!(c <= 0.02, "{what}: a D parameter is at {c}");
                        }
                    }
                    assert_eq!(
                        gan.opt_d.step_count(),
                        6,
                        "{what}: k = 2 D steps per G step"
                    );
                    assert_eq!(gan.opt_g.step_count(), 3, "{what}");
                    let (g1, d1) = (snapshot(&gan.g.store), snapshot(&gan.d.store));
                    for (i, (a, b)) in g0.iter().zip(&g1).enumerate().take(gan.g.store.len()) {
                        assert_ne!(a, b, "{what}: G parameter {i} did not move");
                    }
                    for (i, (a, b)) in d0.iter().zip(&d1).enumerate().take(gan.d.store.len()) {
                        // hinge and wgan's critic losses are invariant to a constant shift of D's output while
                        // every output is inside the hinge margin (always, for wgan): the real and fake terms
                        // give the final bias (the MLP D's one-element bias) gradients −1 and +1, which cancel
                        // exactly.
                        let shift_invariant = matches!(loss, LossKind::Hinge | LossKind::Wgan);
                        if shift_invariant && a.len() == 1 {
                            continue;
                        }
                        assert_ne!(a, b, "{what}: D parameter {i} did not move");
                    }
                    if loss != LossKind::Wgan {
                        // Only wgan clips: fresh weights are N(0, 0.02) (and BN γ ~ N(1, 0.02)), far outside ±0.02.
                        assert!(max_abs_param(&gan.d.store) > 0.02, "{what}");
                    }
                }
            }
        }
    }

    test_devices!(every_loss_and_optimizer_trains_a_few_steps => super::train_a_few_steps);

    /// WGAN-GP, and R1 and DRAGAN on the non-saturating loss, with a critic without batch norm: a few iterations train
    /// both networks with finite losses, and the penalty is in D's loss (WGAN-GP's starts near λ, since a fresh
    /// critic's input gradients are nearly zero).
    fn penalised_critics_train_a_few_steps(dev: &Device) {
        use crate::train::config::TrainConfig;
        for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
            for (loss, r1, dragan) in [
                (LossKind::WganGp, None, None),
                (LossKind::Ns, Some(5.0), None),
                (LossKind::Ns, None, Some(10.0)),
            ] {
                let what = format!(
                    "{kind} {loss} r1 {r1:?} dragan {dragan:?} on {}",
                    dev.name()
                );
                let mut cfg = TrainConfig {
                    loss,
                    r1,
                    dragan,
                    gp_lambda: 10.0,
                    ..TrainConfig::default()
                };
                cfg.model = tiny_gan(kind, loss).g.cfg.clone();
                cfg.model.tricks.d_batch_norm = kind == ModelKind::Mlp;
                cfg.adam_d.lr = 1e-3;
                cfg.validate().unwrap();
                let mut gan = Gan::from_config(&cfg, dev).unwrap();
                let (g0, d0) = (snapshot(&gan.g.store), snapshot(&gan.d.store));
                let mut tape = Tape::new();
                let mut seed = 200;
                for step in 1..=2 {
                    let m = finite_step(&mut gan, &mut tape, dev, step, &mut seed, &what);
                    if step == 1 && loss == LossKind::WganGp {
                        assert!((m.loss_d - 10.0).abs() < 1.0, "{what}: {m:?}");
                    }
                }
                assert_ne!(snapshot(&gan.g.store), g0, "{what}: G did not move");
                for (i, (a, b)) in d0.iter().zip(&snapshot(&gan.d.store)).enumerate() {
                    // The WGAN critic's final bias: its loss and penalty are invariant to a shift of D's output.
                    if loss == LossKind::WganGp && a.len() == 1 {
                        continue;
                    }
                    assert_ne!(a, b, "{what}: D parameter {i} did not move");
                }
            }
        }
    }

    test_devices!(penalised_critics_train_a_few_steps_on => super::penalised_critics_train_a_few_steps);

    /// The penalty's contribution to D's gradients: R1's D gradient differs from the unpenalised one by exactly
    /// the gradient of (γ/2)·E[‖∇D(x)‖²], which is not zero.
    #[test]
    fn r1_changes_the_d_gradient() {
        let grads_with = |r1: Option<f32>| {
            let mut gan = tiny_gan(ModelKind::Mlp, LossKind::Ns);
            gan.r1 = r1;
            let mut tape = Tape::new();
            let d = step_d(&mut gan, &mut tape, real(3, 9), 1).unwrap();
            gan.d.store.zero_grad();
            gan.d.store.accumulate_grads(&d.grads).unwrap();
            (0..gan.d.store.len())
                .map(|i| {
                    gan.d
                        .store
                        .grad(crate::nn::ParamId(i))
                        .unwrap()
                        .to_vec()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let (plain, penalised) = (grads_with(None), grads_with(Some(100.0)));
        assert_ne!(plain[0], penalised[0], "the first layer's weight gradient");
    }

    /// DRAGAN's noise: x + ½σ·u with σ the batch's population standard deviation and u the stream's next
    /// uniform draw, checked against the host.
    #[test]
    fn dragan_perturbs_by_half_the_batch_std_times_uniform_noise() {
        let mut gan = tiny_gan(ModelKind::Mlp, LossKind::Ns);
        let x = real(3, 4);
        let mut stream = gan.noise;
        let u = stream.uniform(x.shape(), 0.0, 1.0, &Device::Cpu).unwrap();
        let p = gan.perturb(&x).unwrap().to_vec().unwrap();
        assert_eq!(gan.noise, stream, "one draw of x's size");
        let xs = x.to_vec().unwrap();
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        for ((p, x), u) in p.iter().zip(&xs).zip(u.to_vec().unwrap()) {
            let want = *x as f64 + 0.5 * sd * u as f64;
            assert!((*p as f64 - want).abs() < 1e-5, "{p} vs {want}");
        }
    }

    #[test]
    fn a_penalised_critic_with_batch_norm_is_refused_by_name() {
        let mut tape = Tape::new();
        let mut gan = tiny_gan(ModelKind::Dcgan, LossKind::WganGp);
        let e = step_d(&mut gan, &mut tape, real(3, 1), 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("batch norm has no double backward"), "{e}");
    }

    #[test]
    fn non_finite_loss_stops_with_the_step() {
        let mut gan = tiny_gan(ModelKind::Mlp, LossKind::Ns);
        let mut tape = Tape::new();
        let bad = Tensor::full(&[2, 1, 28, 28], f32::NAN, &Device::Cpu).unwrap();
        let e = step_d(&mut gan, &mut tape, bad, 17)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("step 17") && e.contains("NaN"), "{e}");
    }
}
