//! Multi-tensor RMSprop and in-place clamping: the two optimiser-side pieces of WGAN training (the WGAN paper
//! trains its critic with RMSprop and clips the critic's weights after every update).
//!
//! RMSprop follows torch.optim.RMSprop with its defaults (no momentum, not centered), operation by operation:
//!
//! ```text
//! g ← grad + weight_decay · p
//! v ← α v + (1 − α) g²               (square_avg.mul_(α).addcmul_(g, g, value = 1 − α))
//! p ← p + (−lr) · g / (sqrt(v) + eps)  (param.addcdiv_(g, sqrt(v) + eps, value = −lr))
//! ```
//!
//! Unlike Adam there is no bias correction, so the update does not depend on the step count.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::elementwise::PAR_CHUNK;
use super::{data, data_mut};
use crate::backend::{check_clamp, RmsPropHyper, RmsPropSlot};
use crate::tensor::Tensor;

/// One element of the clamp. Written with comparisons rather than `f32::clamp`/`fminf(fmaxf(..))` so that
/// every backend treats NaN the same way: it fails both comparisons and passes through.
#[inline]
pub fn clamp1(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

pub fn clamp_(xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()> {
    check_clamp(lo, hi)?;
    for x in xs.iter() {
        data(x)?;
    }
    for x in xs.iter_mut() {
        data_mut(x)?.par_chunks_mut(PAR_CHUNK).for_each(|c| {
            for v in c {
                *v = clamp1(*v, lo, hi);
            }
        });
    }
    Ok(())
}

pub fn rmsprop_step(slots: &mut [RmsPropSlot<'_>], h: RmsPropHyper) -> Result<()> {
    h.check()?;
    // Validate every slot before updating any, so an error leaves all parameters and averages unchanged.
    for (i, s) in slots.iter().enumerate() {
        let p = s.param.shape();
        ensure!(
            s.grad.shape() == p && s.square_avg.shape() == p,
            "rmsprop slot {i}: shapes differ: param {p:?}, grad {:?}, square_avg {:?}",
            s.grad.shape(),
            s.square_avg.shape()
        );
        data(s.param)?;
        data(s.grad)?;
        data(s.square_avg)?;
    }
    // 1 − α in f64, then rounded, as PyTorch forms it from Python floats.
    let (alpha, one_minus_alpha) = (h.alpha as f32, (1.0 - h.alpha) as f32);
    let (lr, eps, wd) = (h.lr, h.eps, h.weight_decay);
    for s in slots.iter_mut() {
        let g = data(s.grad)?;
        let p = data_mut(s.param)?;
        let v = data_mut(s.square_avg)?;
        p.par_chunks_mut(PAR_CHUNK)
            .zip(v.par_chunks_mut(PAR_CHUNK))
            .zip(g.par_chunks(PAR_CHUNK))
            .for_each(|((p, v), g)| {
                for ((p, v), &g) in p.iter_mut().zip(v).zip(g) {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    *v = *v * alpha + one_minus_alpha * g * g;
                    *p += -lr * (g / (v.sqrt() + eps));
                }
            });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tensor;
    use crate::ops::gradcheck::test_values;

    fn run(p: &mut [Tensor], g: &[Tensor], v: &mut [Tensor], h: RmsPropHyper) -> Result<()> {
        let mut slots: Vec<RmsPropSlot> = p
            .iter_mut()
            .zip(g)
            .zip(v.iter_mut())
            .map(|((param, grad), square_avg)| RmsPropSlot {
                param,
                grad,
                square_avg,
            })
            .collect();
        rmsprop_step(&mut slots, h)
    }

    const H: RmsPropHyper = RmsPropHyper {
        lr: 0.01,
        alpha: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };

    #[test]
    fn hand_computed_first_two_steps() {
        // Step 1 from v = 0: v = 0.01 g², so p moves by lr · g / (0.1 |g|) = 10 lr · sign(g).
        let mut p = [tensor(vec![1.0, -2.0, 0.5], &[3])];
        let g = [tensor(vec![0.5, -3.0, 0.0], &[3])];
        let mut v = [tensor(vec![0.0; 3], &[3])];
        run(&mut p, &g, &mut v, H).unwrap();
        let (pv, vv) = (p[0].to_vec().unwrap(), v[0].to_vec().unwrap());
        assert!((vv[0] - 0.0025).abs() < 1e-9 && (vv[1] - 0.09).abs() < 1e-8 && vv[2] == 0.0);
        assert!((pv[0] - 0.9).abs() < 1e-6, "{pv:?}");
        assert!((pv[1] + 1.9).abs() < 1e-6, "{pv:?}");
        // A zero gradient with zero average: 0 / (0 + eps) = 0, the parameter stays put.
        assert_eq!(pv[2], 0.5);
        // Step 2, same gradient: v = (0.99 · 0.01 + 0.01) g² = 0.0199 g², p moves by lr / sqrt(0.0199).
        run(&mut p, &g, &mut v, H).unwrap();
        let pv = p[0].to_vec().unwrap();
        let d = 0.01 / 0.0199f64.sqrt();
        assert!((pv[0] as f64 - (0.9 - d)).abs() < 1e-6, "{pv:?}");
        assert!((pv[1] as f64 - (-1.9 + d)).abs() < 1e-6, "{pv:?}");
    }

    #[test]
    fn several_steps_match_f64_reference_with_weight_decay() {
        let shapes = [[3usize, 5], [7, 1]];
        let mut p: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| tensor(test_values(s[0] * s[1], i as u64 + 1), s))
            .collect();
        let mut v: Vec<Tensor> = shapes
            .iter()
            .map(|s| tensor(vec![0.0; s[0] * s[1]], s))
            .collect();
        let f64s =
            |t: &Tensor| -> Vec<f64> { t.to_vec().unwrap().iter().map(|&x| x as f64).collect() };
        let mut rp: Vec<Vec<f64>> = p.iter().map(f64s).collect();
        let mut rv: Vec<Vec<f64>> = v.iter().map(f64s).collect();
        let h = RmsPropHyper {
            weight_decay: 0.05,
            ..H
        };
        for t in 1..=3u64 {
            let g: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| tensor(test_values(s[0] * s[1], 10 * t + i as u64), s))
                .collect();
            run(&mut p, &g, &mut v, h).unwrap();
            for i in 0..2 {
                let gi = f64s(&g[i]);
                for j in 0..gi.len() {
                    let gj = gi[j] + 0.05 * rp[i][j];
                    rv[i][j] = 0.99 * rv[i][j] + 0.01 * gj * gj;
                    rp[i][j] -= 0.01 * gj / (rv[i][j].sqrt() + 1e-8);
                }
            }
        }
        for i in 0..2 {
            for (a, b) in p[i].to_vec().unwrap().iter().zip(&rp[i]) {
                assert!((*a as f64 - b).abs() < 2e-6, "{a} vs {b}");
            }
            for (a, b) in v[i].to_vec().unwrap().iter().zip(&rv[i]) {
                assert!(
                    (*a as f64 - b).abs() < 1e-6 * b.abs().max(1e-3),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn errors_leave_state_unchanged() {
        let mut p = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 2], &[2])];
        let g = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 3], &[3])];
        let mut v = [tensor(vec![0.0; 3], &[3]), tensor(vec![0.0; 2], &[2])];
        let msg = run(&mut p, &g, &mut v, H).unwrap_err().to_string();
        assert!(msg.contains("slot 1") && msg.contains("[3]"), "{msg}");
        assert_eq!(p[0].to_vec().unwrap(), [1.0; 3]);
        let g = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 2], &[2])];
        for bad in [
            RmsPropHyper { alpha: 1.5, ..H },
            RmsPropHyper { lr: f32::NAN, ..H },
            RmsPropHyper { eps: -1.0, ..H },
        ] {
            assert!(run(&mut p, &g, &mut v, bad).is_err());
        }
        assert_eq!(p[0].to_vec().unwrap(), [1.0; 3]);
        run(&mut p, &g, &mut v, H).unwrap();
        assert!(p[0].to_vec().unwrap()[0] < 1.0);
    }

    #[test]
    fn clamp_bounds_every_tensor_and_keeps_nan() {
        let mut a = tensor(vec![-0.5, 0.005, 0.02, f32::NAN, -0.01], &[5]);
        let mut b = tensor(vec![3.0, -3.0], &[2, 1]);
        let shared = b.clone();
        clamp_(&mut [&mut a, &mut b], -0.01, 0.01).unwrap();
        let av = a.to_vec().unwrap();
        assert_eq!(av[0], -0.01);
        assert_eq!(av[1], 0.005);
        assert_eq!(av[2], 0.01);
        assert!(av[3].is_nan());
        assert_eq!(av[4], -0.01);
        assert_eq!(b.to_vec().unwrap(), [0.01, -0.01]);
        // Copy-on-write: a clone taken before the clamp keeps its values.
        assert_eq!(shared.to_vec().unwrap(), [3.0, -3.0]);
        assert!(clamp_(&mut [&mut a], 1.0, -1.0).is_err());
        assert!(clamp_(&mut [&mut a], f32::NAN, 1.0).is_err());
    }
}
