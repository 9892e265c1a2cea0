//! Dynamic loss scaling for fp16 mixed-precision training, with the rules of PyTorch's
//! `torch.cuda.amp.GradScaler`:
//!
//! - the backward pass starts from `scale` instead of 1 (the loss times `scale`), so gradients that would
//!   underflow fp16's operand range (below 2^-24) survive the tensor-core products;
//! - before the optimiser step the gradients are multiplied by 1 / `scale` (back to the true gradient, in f32);
//!   if any of them is Inf or NaN the step is skipped (parameters and optimiser state untouched, the step not
//!   counted) and the scale is halved (`backoff`);
//! - after `growth_interval` consecutive clean steps the scale doubles (`growth`), unless that would overflow.
//!
//! bf16 has f32's exponent range and needs none of this. One scaler serves one loss / optimiser pair (a GAN has
//! two: D's and G's). Its state (scale and clean-step count) is saved in checkpoints by
//! [`crate::train::optstate`].

use anyhow::{ensure, Result};

use crate::autograd::{Gradients, Tape, Var};
use crate::backend::Precision;
use crate::nn::params::ParamStore;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// GradScaler's parameters; the default is PyTorch's (2^16, x2 after 2000 clean steps, x0.5 on overflow).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerConfig {
    pub init_scale: f32,
    pub growth: f32,
    pub backoff: f32,
    pub growth_interval: u32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            init_scale: 65536.0,
            growth: 2.0,
            backoff: 0.5,
            growth_interval: 2000,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    pub cfg: ScalerConfig,
    scale: f32,
    /// Consecutive clean steps since the scale last changed.
    growth_tracker: u32,
}

impl LossScaler {
    pub fn new(cfg: ScalerConfig) -> Result<LossScaler> {
        ensure!(
            cfg.init_scale.is_finite() && cfg.init_scale > 0.0,
            "loss scaler: invalid initial scale {}",
            cfg.init_scale
        );
        ensure!(
            cfg.growth > 1.0 && cfg.backoff > 0.0 && cfg.backoff < 1.0 && cfg.growth_interval > 0,
            "loss scaler: growth must exceed 1, backoff lie in (0, 1) and the interval be positive ({cfg:?})"
        );
        Ok(LossScaler {
            cfg,
            scale: cfg.init_scale,
            growth_tracker: 0,
        })
    }

    /// The scaler a training run at `precision` needs: PyTorch's default for fp16, none otherwise.
    pub fn for_precision(precision: Precision) -> Option<LossScaler> {
        precision
            .scales_loss()
            .then(|| LossScaler::new(ScalerConfig::default()).expect("the default is valid"))
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// (scale, consecutive clean steps), for checkpoints.
    pub fn state(&self) -> (f32, u32) {
        (self.scale, self.growth_tracker)
    }

    pub fn load_state(&mut self, scale: f32, growth_tracker: u32) -> Result<()> {
        ensure!(
            scale.is_finite() && scale > 0.0,
            "loss scaler: invalid saved scale {scale}"
        );
        self.scale = scale;
        self.growth_tracker = growth_tracker;
        Ok(())
    }

    /// GradScaler.update: halve on overflow, else count the clean step and grow after `growth_interval` of
    /// them (a growth that would overflow f32 is dropped, the count still restarts).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.cfg.backoff;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker == self.cfg.growth_interval {
            let grown = self.scale * self.cfg.growth;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    /// Multiplies every gradient of `store` by 1 / scale (a new tensor each, as autocast's unscale) and says
    /// whether any element of them is Inf or NaN ([`Backend::unscale_grads`](crate::backend::Backend::unscale_grads):
    /// one launch and one value read back on CUDA).
    pub fn unscale(&self, store: &mut ParamStore) -> Result<bool> {
        let inv = 1.0 / self.scale;
        let device = store.device.clone();
        let mut grads: Vec<&mut Tensor> = store.grads_mut().collect();
        let refs: Vec<&Tensor> = grads.iter().map(|g| &**g).collect();
        let (unscaled, found_inf) = device.backend().unscale_grads(&refs, inv)?;
        for (g, u) in grads.iter_mut().zip(unscaled) {
            **g = u;
        }
        Ok(found_inf)
    }
}

/// Back-propagates `loss`, scaled by the scaler's scale when there is one (the seed gradient is the scale
/// instead of 1: the same as backward of scale x loss).
pub fn backward(tape: &mut Tape, loss: Var, scaler: Option<&LossScaler>) -> Result<Gradients> {
    let Some(s) = scaler else {
        return tape.backward(loss);
    };
    let lv = tape.value(loss);
    let be = lv.backend();
    let seed = be.affine(&be.zeros(lv.shape())?, 0.0, s.scale())?;
    tape.backward_from(loss, seed)
}

/// The optimiser step of `store` after a [`backward`] with the same scaler: without one, `opt.step`; with
/// one, unscale, then step unless a gradient overflowed, then update the scale. Returns whether the step ran.
pub fn step(
    scaler: Option<&mut LossScaler>,
    opt: &mut Optimizer,
    store: &mut ParamStore,
) -> Result<bool> {
    let Some(s) = scaler else {
        opt.step(store)?;
        return Ok(true);
    };
    let found_inf = s.unscale(store)?;
    if !found_inf {
        opt.step(store)?;
    }
    s.update(found_inf);
    Ok(!found_inf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::optim::{Adam, AdamConfig};
    use crate::tensor::Tensor;

    fn small(interval: u32) -> LossScaler {
        LossScaler::new(ScalerConfig {
            init_scale: 1024.0,
            growth_interval: interval,
            ..ScalerConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn halves_on_overflow_and_grows_after_the_interval() {
        let mut s = small(3);
        s.update(false);
        s.update(false);
        assert_eq!(s.state(), (1024.0, 2));
        s.update(true); // overflow: halve, restart the count
        assert_eq!(s.state(), (512.0, 0));
        for _ in 0..2 {
            s.update(false);
        }
        assert_eq!(s.scale(), 512.0);
        s.update(false); // third clean step in a row: grow
        assert_eq!(s.state(), (1024.0, 0));
        // Growth past f32's range is dropped; the count restarts anyway.
        let mut s = small(1);
        s.load_state(f32::MAX, 0).unwrap();
        s.update(false);
        assert_eq!(s.state(), (f32::MAX, 0));
    }

    #[test]
    fn only_fp16_scales() {
        assert!(LossScaler::for_precision(Precision::Fp16).is_some());
        for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            assert!(LossScaler::for_precision(p).is_none(), "{p}");
        }
        let s = LossScaler::for_precision(Precision::Fp16).unwrap();
        assert_eq!(s.state(), (65536.0, 0));
        assert!(small(1).clone().load_state(f32::NAN, 0).is_err());
        assert!(LossScaler::new(ScalerConfig {
            backoff: 1.5,
            ..ScalerConfig::default()
        })
        .is_err());
    }

    /// A store with one parameter [2] and the gradient `g` (as a scaled backward left it).
    fn store_with_grad(g: [f32; 2]) -> ParamStore {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev);
        let id = store.add("w", Tensor::from_vec(vec![1.0, -1.0], &[2], &dev).unwrap());
        let mut tape = Tape::new();
        let w = store.var(&mut tape, id);
        let gt = Tensor::from_vec(g.to_vec(), &[2], &dev).unwrap();
        let grads = tape.backward_from(w, gt).unwrap();
        store.accumulate_grads(&grads).unwrap();
        store
    }

    #[test]
    fn steps_on_unscaled_gradients_and_skips_on_inf() {
        let mut s = small(2000);
        // A clean step: the optimiser sees g / scale, exactly what an unscaled run gives it.
        let mut scaled = store_with_grad([0.5 * 1024.0, -2.0 * 1024.0]);
        let mut plain = store_with_grad([0.5, -2.0]);
        let cfg = AdamConfig::default();
        let mut opt_s = Optimizer::Adam(Adam::new(&scaled, cfg).unwrap());
        let mut opt_p = Optimizer::Adam(Adam::new(&plain, cfg).unwrap());
        assert!(step(Some(&mut s), &mut opt_s, &mut scaled).unwrap());
        assert!(step(None, &mut opt_p, &mut plain).unwrap());
        let v = |st: &ParamStore| st.values()[0].to_vec().unwrap();
        assert_eq!(v(&scaled), v(&plain));
        assert_eq!(opt_s.step_count(), 1);
        assert_eq!(s.state(), (1024.0, 1));
        // An overflowed gradient: no update, the step not counted, the scale halved.
        for bad in [f32::INFINITY, f32::NAN] {
            let mut st = store_with_grad([bad, 1.0]);
            let before = v(&st);
            let scale = s.scale();
            assert!(!step(Some(&mut s), &mut opt_s, &mut st).unwrap());
            assert_eq!(v(&st), before);
            assert_eq!(opt_s.step_count(), 1);
            assert_eq!(s.state(), (scale / 2.0, 0));
        }
    }

    #[test]
    fn scaled_backward_seeds_with_the_scale() {
        // d(x^2)/dx at x = 3, through backward with and without a scaler.
        let grad = |scaler: Option<&LossScaler>| {
            let mut tape = Tape::new();
            let x = tape.leaf(Tensor::from_vec(vec![3.0], &[1], &Device::Cpu).unwrap());
            let loss = crate::ops::mul(&mut tape, x, x).unwrap();
            let g = backward(&mut tape, loss, scaler).unwrap();
            g.get(x).unwrap().to_vec().unwrap()
        };
        assert_eq!(grad(Some(&small(10))), vec![6.0 * 1024.0]);
        assert_eq!(grad(None), vec![6.0]);
    }
}
