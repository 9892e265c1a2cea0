//! Optimizers. [`Adam`] keeps its moments on the parameters' device and updates every parameter in one
//! multi-tensor backend call per step. [`RmsProp`] (for WGAN critics) and the [`Optimizer`] enum over both are in
//! [`rmsprop`]; fp16's dynamic loss scaling, which wraps a step, in [`scaler`].

use anyhow::{ensure, Result};

pub mod rmsprop;
pub mod scaler;
mod state;
pub use rmsprop::{Optimizer, RmsProp, RmsPropConfig};

use crate::backend::{AdamCounter, AdamHyper, AdamSlot};
use crate::device::Device;
use crate::nn::params::ParamStore;
use crate::tensor::Tensor;

/// torch.optim.Adam hyper-parameters. The default is DCGAN's setting (lr 2e-4, β1 0.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f32,
    /// L2 penalty added to the gradient (torch.optim.Adam's `weight_decay`, not AdamW's decoupled decay).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.lr.is_finite() && self.lr >= 0.0,
            "Adam: invalid lr {}",
            self.lr
        );
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            ensure!(
                (0.0..1.0).contains(&b),
                "Adam: {name} must be in [0, 1), got {b}"
            );
        }
        ensure!(
            self.eps.is_finite() && self.eps >= 0.0,
            "Adam: invalid eps {}",
            self.eps
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "Adam: invalid weight_decay {}",
            self.weight_decay
        );
        Ok(())
    }
}

/// Adam over the parameters of one [`ParamStore`] (one optimizer per model, as in a GAN's G and D).
pub struct Adam {
    pub cfg: AdamConfig,
    device: Device,
    /// Completed steps; the next step uses t = step + 1 in the bias corrections.
    step: u64,
    /// First and second moments, one per parameter of the store, in the store's order.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// For a training step captured as a graph: the step counter and bias corrections in device memory,
    /// advanced by the device (see [`Adam::count_on_device`]).
    schedule: Option<AdamCounter>,
}

impl Adam {
    /// Zeroed moments for every parameter of `store`, on the store's device.
    pub fn new(store: &ParamStore, cfg: AdamConfig) -> Result<Adam> {
        cfg.validate()?;
        let device = store.device.clone();
        let m = state::zeros_like_params(store, &device)?;
        let v = state::zeros_like_params(store, &device)?;
        Ok(Adam {
            cfg,
            device,
            step: 0,
            m,
            v,
            schedule: None,
        })
    }

    /// From now on the device counts the steps and computes the bias corrections (CUDA only): a step's launch
    /// arguments are then the same every step, as a captured CUDA graph needs. The numbers are the same bit
    /// for bit. The host keeps counting as well, for checkpoints.
    pub fn count_on_device(&mut self) -> Result<()> {
        let Some(counter) = self.device.backend().adam_counter(self.step)? else {
            anyhow::bail!("Adam: counting steps on the device needs a CUDA device");
        };
        self.schedule = Some(counter);
        Ok(())
    }

    /// Sets the host's step count only, e.g. after a graph capture that counted a step the device did not run.
    pub fn set_host_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// One update of every parameter that has a gradient. Parameters without one are skipped and their
    /// moments left alone, as in PyTorch. (PyTorch counts steps per parameter; here one counter serves the
    /// whole store, which is the same whenever every parameter gets a gradient each step, as in GAN training.)
    /// Does nothing, and does not count a step, if no parameter has a gradient.
    pub fn step(&mut self, store: &mut ParamStore) -> Result<()> {
        self.cfg.validate()?;
        state::check_matches("Adam", store, &self.m)?;
        let c = self.cfg;
        let h = AdamHyper {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            step: self.step + 1,
        };
        let device = store.device.clone();
        let mut slots: Vec<AdamSlot> = store
            .params_and_grads_mut()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .filter_map(|((_, param, grad), (m, v))| {
                grad.map(|grad| AdamSlot { param, grad, m, v })
            })
            .collect();
        if slots.is_empty() {
            return Ok(());
        }
        match &self.schedule {
            Some(counter) => device.backend().adam_step_counted(&mut slots, h, counter)?,
            None => device.backend().adam_step(&mut slots, h)?,
        }
        self.step += 1;
        Ok(())
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// (steps taken, first moments, second moments), for checkpoints.
    pub fn state(&self) -> (u64, &[Tensor], &[Tensor]) {
        (self.step, &self.m, &self.v)
    }

    /// Restores a saved state (moments in the store's parameter order); shapes must match the parameters.
    pub fn load_state(&mut self, step: u64, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        let m = state::restore("Adam state, first moments", &self.m, m, &self.device)?;
        let v = state::restore("Adam state, second moments", &self.v, v, &self.device)?;
        self.m = m;
        self.v = v;
        self.step = step;
        if self.schedule.is_some() {
            self.count_on_device()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Tape;
    use crate::nn::params::ParamId;
    use crate::ops::gradcheck::test_values;
    use crate::ops::{mul, sum};

    /// A store with w [3, 5] and b [7]; `b` frozen out of the loss so it gets no gradient. Shared with the
    /// RMSprop tests.
    pub(super) fn store() -> (ParamStore, ParamId, ParamId) {
        let mut s = ParamStore::new(&Device::Cpu);
        let w = s.add(
            "w",
            Tensor::from_vec(test_values(15, 1), &[3, 5], &Device::Cpu).unwrap(),
        );
        let b = s.add(
            "b",
            Tensor::from_vec(test_values(7, 2), &[7], &Device::Cpu).unwrap(),
        );
        (s, w, b)
    }

    /// loss = Σ w², so grad = 2w.
    pub(super) fn backward(s: &mut ParamStore, w: ParamId) {
        s.zero_grad();
        let mut tape = Tape::new();
        let wv = s.var(&mut tape, w);
        let sq = mul(&mut tape, wv, wv).unwrap();
        let l = sum(&mut tape, sq).unwrap();
        let g = tape.backward(l).unwrap();
        s.accumulate_grads(&g).unwrap();
    }

    #[test]
    fn two_steps_against_f64_and_skips_params_without_grad() {
        let (mut s, w, b) = store();
        let b0 = s.value(b).to_vec().unwrap();
        let cfg = AdamConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        let mut opt = Adam::new(&s, cfg).unwrap();
        let mut p: Vec<f64> = s
            .value(w)
            .to_vec()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let (mut m, mut v) = (vec![0.0f64; 15], vec![0.0f64; 15]);
        for t in 1..=2 {
            backward(&mut s, w);
            opt.step(&mut s).unwrap();
            let (b1, b2) = (0.5f64, 0.999f64);
            for i in 0..15 {
                let g = 2.0 * p[i] + 0.1 * p[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                p[i] -= 0.01 * mh / (vh.sqrt() + 1e-8);
            }
        }
        assert_eq!(opt.step_count(), 2);
        for (a, e) in s.value(w).to_vec().unwrap().iter().zip(&p) {
            assert!((*a as f64 - e).abs() < 1e-6, "{a} vs {e}");
        }
        assert_eq!(s.value(b).to_vec().unwrap(), b0);
        let (step, ms, vs) = opt.state();
        assert_eq!(step, 2);
        assert!(ms[1].to_vec().unwrap().iter().all(|&x| x == 0.0));
        assert!(vs[1].to_vec().unwrap().iter().all(|&x| x == 0.0));
        // No gradients at all: nothing happens, no step counted.
        s.zero_grad();
        opt.step(&mut s).unwrap();
        assert_eq!(opt.step_count(), 2);
    }

    #[test]
    fn state_roundtrip_resumes_identically() {
        let (mut s1, w, _) = store();
        let mut a = Adam::new(&s1, AdamConfig::default()).unwrap();
        backward(&mut s1, w);
        a.step(&mut s1).unwrap();
        // Resume a copy of the model with a fresh optimizer loaded from `a`'s state.
        let (mut s2, _, _) = store();
        s2.set_by_name("w", s1.value(w).clone()).unwrap();
        let mut b = Adam::new(&s2, AdamConfig::default()).unwrap();
        let (step, m, v) = a.state();
        b.load_state(step, m.to_vec(), v.to_vec()).unwrap();
        for (s, o) in [(&mut s1, &mut a), (&mut s2, &mut b)] {
            backward(s, w);
            o.step(s).unwrap();
        }
        assert_eq!(s1.value(w).to_vec().unwrap(), s2.value(w).to_vec().unwrap());
        assert_eq!(b.step_count(), 2);
    }

    #[test]
    fn errors() {
        let (s, _, _) = store();
        let mut a = Adam::new(&s, AdamConfig::default()).unwrap();
        let z = |shape: &[usize]| Tensor::zeros(shape, &Device::Cpu).unwrap();
        let msg = a
            .load_state(1, vec![z(&[3, 5]), z(&[6])], vec![z(&[3, 5]), z(&[7])])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("[6]") && msg.contains("[7]"), "{msg}");
        assert!(a.load_state(1, vec![z(&[3, 5])], vec![z(&[3, 5])]).is_err());
        assert_eq!(a.step_count(), 0);
        let bad = AdamConfig {
            beta2: 1.0,
            ..AdamConfig::default()
        };
        assert!(Adam::new(&s, bad).is_err());
        // The store changed under the optimizer.
        let (mut s2, _, _) = store();
        s2.add("extra", z(&[2]));
        assert!(a.step(&mut s2).is_err());
    }
}
