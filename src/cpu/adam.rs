//! Multi-tensor Adam step, following torch.optim.Adam (the default, non-AMSGrad, single-tensor path) operation
//! by operation, so the two agree to f32 rounding:
//!
//! ```text
//! g  ← grad + weight_decay · p                   (L2 penalty folded into the gradient)
//! m  ← lerp(m, g, 1 - β1)                        (= β1 m + (1 - β1) g)
//! v  ← β2 v + (1 - β2) g²
//! p  ← p - (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
//! ```
//!
//! The bias corrections are formed in f64 from the 1-based step t, as PyTorch does with Python floats.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::elementwise::PAR_CHUNK;
use super::{data, data_mut};
use crate::backend::{AdamHyper, AdamSlot};

/// a + w (b - a), evaluated the way PyTorch's lerp kernel does (from whichever end is nearer to w), which is
/// exact at both ends.
#[inline]
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

pub fn adam_step(slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()> {
    h.check()?;
    // Validate everything before touching anything, so an error leaves every parameter and moment unchanged.
    for (i, s) in slots.iter().enumerate() {
        let p = s.param.shape();
        ensure!(
            s.grad.shape() == p && s.m.shape() == p && s.v.shape() == p,
            "adam slot {i}: shapes differ: param {p:?}, grad {:?}, m {:?}, v {:?}",
            s.grad.shape(),
            s.m.shape(),
            s.v.shape()
        );
        data(s.param)?;
        data(s.grad)?;
        data(s.m)?;
        data(s.v)?;
    }
    let t = h.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2 = 1.0 - h.beta2.powi(t);
    let step_size = (h.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let (b1w, b2, b2w) = (
        (1.0 - h.beta1) as f32,
        h.beta2 as f32,
        (1.0 - h.beta2) as f32,
    );
    let (wd, eps) = (h.weight_decay, h.eps);
    for s in slots.iter_mut() {
        let g = data(s.grad)?;
        let p = data_mut(s.param)?;
        let m = data_mut(s.m)?;
        let v = data_mut(s.v)?;
        p.par_chunks_mut(PAR_CHUNK)
            .zip(m.par_chunks_mut(PAR_CHUNK))
            .zip(v.par_chunks_mut(PAR_CHUNK))
            .zip(g.par_chunks(PAR_CHUNK))
            .for_each(|(((p, m), v), g)| {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    *m = lerp(*m, g, b1w);
                    *v = *v * b2 + b2w * g * g;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *p += -step_size * (*m / denom);
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
    use crate::tensor::Tensor;

    /// The textbook formulation in f64, independent of the implementation's operation order.
    fn reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], h: AdamHyper) {
        let (b1, b2) = (h.beta1, h.beta2);
        for i in 0..p.len() {
            let g = g[i] + h.weight_decay as f64 * p[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let mhat = m[i] / (1.0 - b1.powi(h.step as i32));
            let vhat = v[i] / (1.0 - b2.powi(h.step as i32));
            p[i] -= h.lr as f64 * mhat / (vhat.sqrt() + h.eps as f64);
        }
    }

    fn run(
        params: &mut [Tensor],
        grads: &[Tensor],
        m: &mut [Tensor],
        v: &mut [Tensor],
        h: AdamHyper,
    ) -> Result<()> {
        let mut slots: Vec<AdamSlot> = params
            .iter_mut()
            .zip(grads)
            .zip(m.iter_mut().zip(v.iter_mut()))
            .map(|((param, grad), (m, v))| AdamSlot { param, grad, m, v })
            .collect();
        adam_step(&mut slots, h)
    }

    #[test]
    fn two_steps_match_f64_reference() {
        for wd in [0.0, 0.01] {
            let shapes = [[3usize, 5], [7, 1]];
            let mut params: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| tensor(test_values(s[0] * s[1], i as u64 + 1), s))
                .collect();
            let zeros = |s: &[usize; 2]| tensor(vec![0.0; s[0] * s[1]], s);
            let mut m: Vec<Tensor> = shapes.iter().map(zeros).collect();
            let mut v: Vec<Tensor> = shapes.iter().map(zeros).collect();
            let f64s = |t: &Tensor| -> Vec<f64> {
                t.to_vec().unwrap().iter().map(|&x| x as f64).collect()
            };
            let mut rp: Vec<Vec<f64>> = params.iter().map(f64s).collect();
            let mut rm: Vec<Vec<f64>> = m.iter().map(f64s).collect();
            let mut rv: Vec<Vec<f64>> = v.iter().map(f64s).collect();
            for t in 1..=2u64 {
                let h = AdamHyper {
                    lr: 2e-4,
                    beta1: 0.5,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: wd,
                    step: t,
                };
                let grads: Vec<Tensor> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| tensor(test_values(s[0] * s[1], 10 * t + i as u64), s))
                    .collect();
                run(&mut params, &grads, &mut m, &mut v, h).unwrap();
                for i in 0..2 {
                    reference(&mut rp[i], &mut rm[i], &mut rv[i], &f64s(&grads[i]), h);
                }
            }
            for i in 0..2 {
                let p = params[i].to_vec().unwrap();
                for (a, b) in p.iter().zip(&rp[i]) {
                    assert!((*a as f64 - b).abs() < 1e-7, "{a} vs {b}");
                }
                for (a, b) in m[i].to_vec().unwrap().iter().zip(&rm[i]) {
                    assert!((*a as f64 - b).abs() < 1e-6);
                }
                for (a, b) in v[i].to_vec().unwrap().iter().zip(&rv[i]) {
                    assert!((*a as f64 - b).abs() < 1e-7);
                }
            }
        }
    }

    /// PyTorch's default betas, a large lr (so the moves are easy to see by hand), no weight decay.
    const FIRST_STEP: AdamHyper = AdamHyper {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };

    #[test]
    fn hand_computed_first_steps() {
        // Step 1 with zero moments: m̂ = g, v̂ = g², so p moves by lr·g/(|g| + eps) ≈ lr·sign(g).
        let mut p = [tensor(vec![1.0, -2.0, 0.5], &[3])];
        let g = [tensor(vec![0.5, -3.0, 0.0], &[3])];
        let mut m = [tensor(vec![0.0; 3], &[3])];
        let mut v = [tensor(vec![0.0; 3], &[3])];
        let h = FIRST_STEP;
        run(&mut p, &g, &mut m, &mut v, h).unwrap();
        let pv = p[0].to_vec().unwrap();
        assert!((pv[0] - 0.9).abs() < 1e-6 && (pv[1] + 1.9).abs() < 1e-6 && pv[2] == 0.5);
        assert!((m[0].to_vec().unwrap()[1] + 0.3).abs() < 1e-7);
        // (1 - β2) is formed in f32 (as in PyTorch): 0.999f32 is not 0.999.
        assert!((v[0].to_vec().unwrap()[1] - 0.001f32 * 9.0).abs() < 1e-9);
        // Step 2 with the same gradient: m = 0.19 g, v = 0.001999 g², m̂ = g, v̂ = g²: another lr·sign(g).
        run(&mut p, &g, &mut m, &mut v, AdamHyper { step: 2, ..h }).unwrap();
        let pv = p[0].to_vec().unwrap();
        assert!(
            (pv[0] - 0.8).abs() < 1e-6 && (pv[1] + 1.8).abs() < 1e-6,
            "{pv:?}"
        );
    }

    #[test]
    fn errors_leave_state_unchanged() {
        let mut p = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 2], &[2])];
        let g = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 3], &[3])];
        let mut m = [tensor(vec![0.0; 3], &[3]), tensor(vec![0.0; 2], &[2])];
        let mut v = [tensor(vec![0.0; 3], &[3]), tensor(vec![0.0; 2], &[2])];
        let h = FIRST_STEP;
        let msg = run(&mut p, &g, &mut m, &mut v, h).unwrap_err().to_string();
        assert!(
            msg.contains("slot 1") && msg.contains("[2]") && msg.contains("[3]"),
            "{msg}"
        );
        assert_eq!(p[0].to_vec().unwrap(), [1.0; 3]);
        let g = [tensor(vec![1.0; 3], &[3]), tensor(vec![1.0; 2], &[2])];
        assert!(run(&mut p, &g, &mut m, &mut v, AdamHyper { step: 0, ..h }).is_err());
        assert!(run(&mut p, &g, &mut m, &mut v, AdamHyper { beta1: 1.0, ..h }).is_err());
        run(&mut p, &g, &mut m, &mut v, h).unwrap();
    }
}
