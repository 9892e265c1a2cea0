//! Double backward against PyTorch: the second-order gradients of each op a penalised critic uses, and the
//! parameter gradients of a whole WGAN-GP and R1 penalty on a small critic.
//!
//! Reference: `tests/fixtures/double_backward.safetensors`, written by `scripts/gen_double_backward_golden.py`
//! with `torch.autograd.grad(..., create_graph=True)` in float64 from float32 inputs (the script's docstring
//! names every tensor). Each test runs on the CPU backend and on the CUDA backend under emulation (and on a real
//! GPU when one opens); `GAN_GOLDEN_DEVICES=cpu,emu` restricts the list.

use gan_engine::autograd::Var;
use gan_engine::backend::{Activation, Conv2dParams};
use gan_engine::ops;
use gan_engine::train::losses;
use gan_engine::{Device, Tape, Tensor};

mod common;
use common::fixture::{assert_close_rms, devices, Fixture};

/// f32 sums of a few dozen products, twice over: rounding stays near 1e-6 of the values, while a wrong rule
/// (a missing term, a transposed product) is off by far more.
const TOL: f64 = 1e-4;

/// The first-order gradients g_i of <r, f(x)> and the second-order ones of F = Σ <r2_i, g_i>, for case `case`.
fn check_op(f: &Fixture, dev: &Device, case: &str, op: impl Fn(&mut Tape, &[Var]) -> Var) {
    let what = |t: &str| format!("{case} {t} on {}", dev.name());
    let n = (0..)
        .take_while(|i| f.tensors.contains_key(&format!("{case}.x{i}")))
        .count();
    let mut tape = Tape::new();
    let xs: Vec<Var> = (0..n)
        .map(|i| tape.leaf(f.tensor(&format!("{case}.x{i}"), dev)))
        .collect();
    let y = op(&mut tape, &xs);
    let r = tape.constant(f.tensor(&format!("{case}.r"), dev));
    let grads = tape.grad_graph(y, r, &xs).unwrap();
    let mut total = None;
    for (i, g) in grads.iter().enumerate() {
        let g = g.unwrap_or_else(|| panic!("{}: no gradient", what(&format!("x{i}"))));
        assert_close_rms(
            &what(&format!("g{i}")),
            tape.value(g),
            f.get(&format!("{case}.g{i}")),
            TOL,
        );
        let r2 = tape.constant(f.tensor(&format!("{case}.r2_{i}"), dev));
        let p = ops::mul(&mut tape, g, r2).unwrap();
        let p = ops::sum(&mut tape, p).unwrap();
        total = Some(match total {
            Some(t) => ops::add(&mut tape, t, p).unwrap(),
            None => p,
        });
    }
    let total = total.unwrap();
    // Zero second derivatives (ReLU's) leave F constant: then every h_i must be zero.
    let second = tape
        .requires_grad(total)
        .then(|| tape.backward(total).unwrap());
    for (i, &x) in xs.iter().enumerate() {
        let h = match second.as_ref().and_then(|s| s.get(x)) {
            Some(h) => h.clone(),
            None => Tensor::zeros(tape.value(x).shape(), dev).unwrap(),
        };
        assert_close_rms(
            &what(&format!("h{i}")),
            &h,
            f.get(&format!("{case}.h{i}")),
            TOL,
        );
    }
}

#[test]
fn second_order_gradients_of_each_op_match_torch() {
    let f = Fixture::load("double_backward.safetensors");
    let p = Conv2dParams::new(2, 1);
    for dev in devices() {
        check_op(&f, &dev, "conv2d", |t, v| {
            ops::conv2d(t, v[0], v[1], p).unwrap()
        });
        check_op(&f, &dev, "conv_transpose2d", |t, v| {
            ops::conv_transpose2d(t, v[0], v[1], p, None).unwrap()
        });
        check_op(&f, &dev, "linear", |t, v| {
            ops::linear(t, v[0], v[1], Some(v[2])).unwrap()
        });
        for (case, act) in [
            ("relu", Activation::Relu),
            ("leaky_relu", Activation::LeakyRelu(0.2)),
            ("tanh", Activation::Tanh),
            ("sigmoid", Activation::Sigmoid),
        ] {
            check_op(&f, &dev, &format!("{case}_times_x"), |t, v| {
                let y = ops::activation::activation(t, v[0], act).unwrap();
                ops::mul(t, y, v[0]).unwrap()
            });
        }
        for (case, target) in [("bce_t0", 0.0), ("bce_t1", 1.0)] {
            check_op(&f, &dev, case, |t, v| {
                ops::bce_with_logits(t, v[0], target).unwrap()
            });
        }
    }
}

/// The fixture's critic: conv 4×4/2 → LeakyReLU 0.2 → conv 4×4/2 → LeakyReLU 0.2 → linear → [N].
fn critic(t: &mut Tape, x: Var, w: &[Var; 4]) -> Var {
    let p = Conv2dParams::new(2, 1);
    let h = ops::conv2d(t, x, w[0], p).unwrap();
    let h = ops::leaky_relu(t, h, 0.2).unwrap();
    let h = ops::conv2d(t, h, w[1], p).unwrap();
    let h = ops::leaky_relu(t, h, 0.2).unwrap();
    let h = ops::flatten(t, h).unwrap();
    let y = ops::linear(t, h, w[2], Some(w[3])).unwrap();
    let n = t.value(y).shape()[0];
    ops::reshape(t, y, &[n]).unwrap()
}

#[test]
fn wgan_gp_and_r1_penalty_gradients_match_torch() {
    let f = Fixture::load("double_backward.safetensors");
    let names = ["w1", "w2", "w3", "b3"];
    for dev in devices() {
        for case in ["gp", "r1"] {
            let what = |t: &str| format!("{case} {t} on {}", dev.name());
            let mut tape = Tape::new();
            let w = names.map(|k| tape.leaf(f.tensor(&format!("critic.{k}"), &dev)));
            let x = tape.leaf(f.tensor(&format!("{case}.x"), &dev));
            let out = critic(&mut tape, x, &w);
            let grad = losses::input_gradient(&mut tape, out, x).unwrap();
            let penalty = match case {
                "gp" => losses::gradient_penalty(&mut tape, grad, 10.0),
                _ => losses::r1_penalty(&mut tape, grad, 1.0),
            }
            .unwrap();
            assert_close_rms(
                &what("penalty"),
                tape.value(penalty),
                f.get(&format!("{case}.penalty")),
                TOL,
            );
            let grads = tape.backward(penalty).unwrap();
            for (k, v) in names.iter().zip(w) {
                let g = match grads.get(v) {
                    Some(g) => g.clone(),
                    None => Tensor::zeros(tape.value(v).shape(), &dev).unwrap(),
                };
                assert_close_rms(
                    &what(&format!("d penalty / d {k}")),
                    &g,
                    f.get(&format!("{case}.grad_{k}")),
                    TOL,
                );
            }
        }
    }
}
