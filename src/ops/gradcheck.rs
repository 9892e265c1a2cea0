//! Finite-difference gradient checks for the ops' backward passes.
//!
//! For an op f with inputs x₁..xₖ and a random projection r of its output, the analytic gradient of
//! L = Σ r·f(x) (from `Tape::backward_from(out, r)`) is compared with the central difference
//! (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h, accumulated in f64. Every element of every input is probed, so keep the
//! inputs small (a few hundred elements).
//!
//! [`GradCheck::run_second_order`] checks double backward the same way: F(x) = Σₖ ⟨r₂ₖ, ∂⟨r, f(x)⟩/∂xₖ⟩, a
//! first-order gradient recorded by [`Tape::grad_graph`], is itself checked as the op.

use anyhow::{ensure, Result};

use crate::autograd::{Tape, Var};
use crate::device::Device;
use crate::tensor::Tensor;

pub struct GradCheck {
    /// Finite-difference step.
    pub h: f32,
    /// Allowed |analytic − numeric| ≤ atol + rtol·|numeric|.
    pub atol: f64,
    pub rtol: f64,
    /// Seed for the output projection r.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            h: 1e-2,
            atol: 2e-3,
            rtol: 2e-2,
            seed: 7,
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1) for test inputs (no dependency on the backends' RNG).
pub fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A CPU tensor of `test_values`.
pub fn test_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(test_values(n, seed), shape, &Device::Cpu).unwrap()
}

impl GradCheck {
    /// Checks the gradients of every input of `f`. `f` builds the op on the tape from leaf vars (one per input)
    /// and returns its output. Returns the largest |analytic − numeric| seen.
    pub fn run<F>(&self, inputs: &[Tensor], f: F) -> Result<f64>
    where
        F: Fn(&mut Tape, &[Var]) -> Result<Var>,
    {
        self.check(inputs, f, false)
    }

    /// Checks the second-order gradients of `f` (every input's gradient of F above), on the inputs' device.
    pub fn run_second_order<F>(&self, inputs: &[Tensor], f: F) -> Result<f64>
    where
        F: Fn(&mut Tape, &[Var]) -> Result<Var>,
    {
        let seed = self.seed;
        let projected = |tape: &mut Tape, vars: &[Var]| -> Result<Var> {
            let out = f(tape, vars)?;
            let like = tape.value(out);
            let r = Tensor::from_vec(
                test_values(like.numel(), seed + 1),
                like.shape(),
                &like.device(),
            )?;
            let r = tape.constant(r);
            let grads = tape.grad_graph(out, r, vars)?;
            let mut total = None;
            for (k, g) in grads.into_iter().enumerate() {
                let Some(g) = g else { continue };
                let gv = tape.value(g);
                let r2 = test_values(gv.numel(), seed + 2 + k as u64);
                let r2 = tape.constant(Tensor::from_vec(r2, gv.shape(), &gv.device())?);
                let p = crate::ops::mul(tape, g, r2)?;
                let p = crate::ops::sum(tape, p)?;
                total = Some(match total {
                    Some(t) => crate::ops::add(tape, t, p)?,
                    None => p,
                });
            }
            total.ok_or_else(|| {
                anyhow::anyhow!("second-order check: f depends on none of its inputs")
            })
        };
        self.check(inputs, projected, true)
    }

    /// `leaves`: evaluate the finite differences on a recording tape with the inputs as leaves (F needs a
    /// gradient of its own), not on a no-grad tape.
    fn check<F>(&self, inputs: &[Tensor], f: F, leaves: bool) -> Result<f64>
    where
        F: Fn(&mut Tape, &[Var]) -> Result<Var>,
    {
        let eval = |xs: &[Tensor]| -> Result<Vec<f32>> {
            let mut tape = if leaves { Tape::new() } else { Tape::no_grad() };
            let vars: Vec<Var> = xs
                .iter()
                .map(|x| match leaves {
                    true => tape.leaf(x.clone()),
                    false => tape.constant(x.clone()),
                })
                .collect();
            let out = f(&mut tape, &vars)?;
            tape.value(out).to_vec()
        };
        // Analytic.
        let mut tape = Tape::new();
        let vars: Vec<Var> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
        let out = f(&mut tape, &vars)?;
        let out_shape = tape.value(out).shape().to_vec();
        let r = test_values(out_shape.iter().product(), self.seed);
        let dev = inputs[0].device();
        // An output that depends on no input (a ReLU's second derivative) has zero gradients everywhere.
        let grads = match tape.requires_grad(out) {
            true => Some(tape.backward_from(out, Tensor::from_vec(r.clone(), &out_shape, &dev)?)?),
            false => None,
        };
        let proj =
            |y: &[f32]| -> f64 { y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum() };

        let mut worst = 0.0f64;
        for (k, x) in inputs.iter().enumerate() {
            let analytic = match grads.as_ref().and_then(|g| g.get(vars[k])) {
                Some(g) => g.to_vec()?,
                None => vec![0.0; x.numel()],
            };
            let base = x.to_vec()?;
            for i in 0..base.len() {
                let mut xs: Vec<Tensor> = inputs.to_vec();
                let mut plus = base.clone();
                plus[i] += self.h;
                xs[k] = Tensor::from_vec(plus, x.shape(), &dev)?;
                let lp = proj(&eval(&xs)?);
                let mut minus = base.clone();
                minus[i] -= self.h;
                xs[k] = Tensor::from_vec(minus, x.shape(), &dev)?;
                let lm = proj(&eval(&xs)?);
                let numeric = (lp - lm) / (2.0 * self.h as f64);
                let err = (analytic[i] as f64 - numeric).abs();
                worst = worst.max(err);
                ensure!(
                    err <= self.atol + self.rtol * numeric.abs(),
                    "gradient mismatch for input {k} element {i}: analytic {} vs numeric {numeric} (|err| {err})",
                    analytic[i]
                );
            }
        }
        Ok(worst)
    }
}
