//! [`RmsProp`] (torch.optim.RMSprop's defaults: no momentum, not centered), the optimiser the WGAN paper trains
//! with, and [`Optimizer`], either of the two behind one interface for the training loop.

use anyhow::Result;

use super::{state, Adam};
use crate::backend::{RmsPropHyper, RmsPropSlot};
use crate::device::Device;
use crate::nn::params::ParamStore;
use crate::tensor::Tensor;

/// torch.optim.RMSprop hyper-parameters (momentum 0, centered False). The default is PyTorch's, with the
/// WGAN paper's learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f32,
    pub alpha: f64,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 5e-5,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl RmsPropConfig {
    fn hyper(&self) -> RmsPropHyper {
        RmsPropHyper {
            lr: self.lr,
            alpha: self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// RMSprop over the parameters of one [`ParamStore`]; its state is one running average of squared gradients
/// per parameter (`square_avg`, PyTorch's name), kept on the parameters' device.
pub struct RmsProp {
    pub cfg: RmsPropConfig,
    device: Device,
    /// Completed steps. The update does not use it (RMSprop has no bias correction); it is kept, as PyTorch
    /// does, so a checkpoint says how far the optimiser got.
    step: u64,
    square_avg: Vec<Tensor>,
}

impl RmsProp {
    pub fn new(store: &ParamStore, cfg: RmsPropConfig) -> Result<RmsProp> {
        cfg.hyper().check()?;
        let device = store.device.clone();
        let square_avg = state::zeros_like_params(store, &device)?;
        Ok(RmsProp {
            cfg,
            device,
            step: 0,
            square_avg,
        })
    }

    /// One update of every parameter that has a gradient (others, and their averages, are left alone, as in
    /// PyTorch). Does nothing, and counts no step, when no parameter has a gradient.
    pub fn step(&mut self, store: &mut ParamStore) -> Result<()> {
        state::check_matches("RMSprop", store, &self.square_avg)?;
        let device = store.device.clone();
        let mut slots: Vec<RmsPropSlot> = store
            .params_and_grads_mut()
            .zip(self.square_avg.iter_mut())
            .filter_map(|((_, param, grad), square_avg)| {
                grad.map(|grad| RmsPropSlot {
                    param,
                    grad,
                    square_avg,
                })
            })
            .collect();
        if slots.is_empty() {
            return Ok(());
        }
        device
            .backend()
            .rmsprop_step(&mut slots, self.cfg.hyper())?;
        self.step += 1;
        Ok(())
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// See [`crate::optim::Adam::set_host_step_count`].
    pub fn set_host_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// (steps taken, squared-gradient averages), for checkpoints.
    pub fn state(&self) -> (u64, &[Tensor]) {
        (self.step, &self.square_avg)
    }

    /// Restores a saved state (averages in the store's parameter order; shapes must match).
    pub fn load_state(&mut self, step: u64, square_avg: Vec<Tensor>) -> Result<()> {
        self.square_avg = state::restore(
            "RMSprop state, squared averages",
            &self.square_avg,
            square_avg,
            &self.device,
        )?;
        self.step = step;
        Ok(())
    }
}

/// The optimiser of one network in GAN training.
pub enum Optimizer {
    Adam(Adam),
    RmsProp(RmsProp),
}

impl Optimizer {
    pub fn step(&mut self, store: &mut ParamStore) -> Result<()> {
        match self {
            Optimizer::Adam(o) => o.step(store),
            Optimizer::RmsProp(o) => o.step(store),
        }
    }

    pub fn step_count(&self) -> u64 {
        match self {
            Optimizer::Adam(o) => o.step_count(),
            Optimizer::RmsProp(o) => o.step_count(),
        }
    }

    /// Makes a step's launch arguments the same from step to step, as a captured CUDA graph needs: Adam
    /// counts its steps on the device ([`Adam::count_on_device`]); RMSprop's update depends on no step count.
    pub fn count_on_device(&mut self) -> Result<()> {
        match self {
            Optimizer::Adam(o) => o.count_on_device(),
            Optimizer::RmsProp(_) => Ok(()),
        }
    }

    /// The optimizer's state tensors: Adam's first then second moments, or RMSprop's squared-gradient averages.
    pub fn state_tensors(&self) -> Vec<&Tensor> {
        match self {
            Optimizer::Adam(o) => {
                let (_, m, v) = o.state();
                m.iter().chain(v).collect()
            }
            Optimizer::RmsProp(o) => o.state().1.iter().collect(),
        }
    }

    /// The host's step count only (see [`Adam::set_host_step_count`]).
    pub fn set_host_step_count(&mut self, step: u64) {
        match self {
            Optimizer::Adam(o) => o.set_host_step_count(step),
            Optimizer::RmsProp(o) => o.set_host_step_count(step),
        }
    }

    /// "adam" or "rmsprop", as `--optimizer` spells it and checkpoints record it.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Adam(_) => "adam",
            Optimizer::RmsProp(_) => "rmsprop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same store and loss as the Adam tests.
    use crate::optim::tests::{backward, store};

    #[test]
    fn steps_against_f64_and_skips_params_without_grad() {
        let (mut s, w, b) = store();
        let b0 = s.value(b).to_vec().unwrap();
        let cfg = RmsPropConfig {
            lr: 0.01,
            ..RmsPropConfig::default()
        };
        let mut opt = Optimizer::RmsProp(RmsProp::new(&s, cfg).unwrap());
        let mut p: Vec<f64> = s
            .value(w)
            .to_vec()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let mut v = [0.0f64; 15];
        for _ in 0..3 {
            backward(&mut s, w);
            opt.step(&mut s).unwrap();
            for i in 0..15 {
                let g = 2.0 * p[i];
                v[i] = 0.99 * v[i] + 0.01 * g * g;
                p[i] -= 0.01 * g / (v[i].sqrt() + 1e-8);
            }
        }
        assert_eq!(opt.step_count(), 3);
        assert_eq!(opt.name(), "rmsprop");
        for (a, e) in s.value(w).to_vec().unwrap().iter().zip(&p) {
            assert!((*a as f64 - e).abs() < 1e-6, "{a} vs {e}");
        }
        assert_eq!(s.value(b).to_vec().unwrap(), b0);
        s.zero_grad();
        opt.step(&mut s).unwrap();
        assert_eq!(opt.step_count(), 3, "no gradients: no step");
    }

    #[test]
    fn state_roundtrip_resumes_identically_and_bad_state_is_an_error() {
        let (mut s1, w, _) = store();
        let mut a = RmsProp::new(&s1, RmsPropConfig::default()).unwrap();
        backward(&mut s1, w);
        a.step(&mut s1).unwrap();
        let (mut s2, _, _) = store();
        s2.set_by_name("w", s1.value(w).clone()).unwrap();
        let mut b = RmsProp::new(&s2, RmsPropConfig::default()).unwrap();
        let (step, v) = a.state();
        b.load_state(step, v.to_vec()).unwrap();
        for (s, o) in [(&mut s1, &mut a), (&mut s2, &mut b)] {
            backward(s, w);
            o.step(s).unwrap();
        }
        assert_eq!(s1.value(w).to_vec().unwrap(), s2.value(w).to_vec().unwrap());
        assert_eq!(b.step_count(), 2);
        let z = |shape: &[usize]| Tensor::zeros(shape, &Device::Cpu).unwrap();
        let e = b
            .load_state(1, vec![z(&[3, 5]), z(&[6])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[6]") && e.contains("[7]"), "{e}");
        assert!(b.load_state(1, vec![z(&[3, 5])]).is_err());
        assert!(RmsProp::new(
            &s1,
            RmsPropConfig {
                alpha: 2.0,
                ..RmsPropConfig::default()
            }
        )
        .is_err());
    }
}
