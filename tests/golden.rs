//! Golden tests: our ops against PyTorch, through the public API.
//!
//! The references are `tests/fixtures/*.safetensors`, written by `scripts/gen_golden.py` (which documents how to
//! regenerate them; `tests/fixtures/README.md` lists every tensor). The op-level references were computed by
//! PyTorch in float64 from float32 inputs, then rounded to float32 once, so they are the exact answer to within
//! half an f32 ulp and every tolerance below only has to cover *our* float32 rounding.
//!
//! Each test runs on every device that can be opened here: always the CPU backend, plus the CUDA backend on the
//! CPU emulation (`emu`) and on a real GPU (`cuda`) when those are available (each is skipped with a message
//! otherwise). `GAN_GOLDEN_DEVICES=cpu,emu` restricts the list.
//!
//! The end-to-end DCGAN-iteration fixture (`dcgan32_iteration.safetensors`) is compared against the training
//! code in its own test; here we only check that the fixture holds what its README promises.

use gan_engine::backend::{
    AdamHyper, AdamSlot, BatchNormAffine, BatchNormSaved, Conv2dParams, RunningStats,
    RunningStatsMut,
};
use gan_engine::nn::params::{ParamId, ParamStore};
use gan_engine::ops;
use gan_engine::optim::{Adam, AdamConfig, RmsProp, RmsPropConfig};
use gan_engine::{Device, Tape, Tensor};

mod common;
use common::fixture::{devices, Fixture, Ref};

// ---- fixtures: tests/common/fixture.rs ---------------------------------------------------------------------

// ---- comparison -----------------------------------------------------------------------------------------------

fn rms(v: &[f32]) -> f64 {
    (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Checks `got` against `want` elementwise: |got − want| ≤ rel · (|want| + floor · rms(want)).
///
/// Why the rms floor: sums of products (conv, BN backward) cancel, so an output can be near zero while its
/// rounding error is set by the size of the terms that cancelled, which the tensor's rms stands for. A pure
/// relative test would fail on such elements for no fault; `floor = 1` accepts errors up to `rel` times the
/// typical magnitude. `floor = 0` is a pure relative test, for values that are never the result of cancellation.
fn assert_close(what: &str, got: &Tensor, want: &Ref, rel: f64, floor: f64) {
    assert_eq!(got.shape(), &want.shape[..], "{what}: shape");
    let g = got.to_vec().unwrap();
    let scale = floor * rms(&want.data);
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &b)) in g.iter().zip(&want.data).enumerate() {
        assert!(a.is_finite(), "{what}[{i}] = {a} (want {b})");
        let ratio = (a as f64 - b as f64).abs() / (b.abs() as f64 + scale);
        if ratio > worst.0 {
            worst = (ratio, i);
        }
    }
    let i = worst.1;
    // Visible with --nocapture: how much of each tolerance is used.
    eprintln!(
        "golden: {what}: worst error {:.2e} of limit {rel:.1e}",
        worst.0
    );
    assert!(
        worst.0 <= rel,
        "{what}: element {i} is {} but PyTorch has {} (error {:.3e} of the allowed scale, limit {rel:.1e})",
        g[i],
        want.data[i],
        worst.0
    );
}

fn host(r: &Ref) -> Tensor {
    Tensor::from_vec(r.data.clone(), &r.shape, &Device::Cpu).unwrap()
}

// ---- convolution ----------------------------------------------------------------------------------------------

/// f32 dot products of ≤ 100 normal terms: the accumulated rounding is ~√K · 2⁻²⁴ · |partial sums|, well under
/// 1e-6 of the output rms (PyTorch's own f32 convolutions land within 3.5e-7 of these references). 1e-5 leaves
/// a margin for any summation order (GEMM blocking, tree reductions on the GPU) while a wrong tap or a misplaced
/// pad (errors of order 1e-1 of the rms) fails by four orders of magnitude.
const CONV_TOL: f64 = 1e-5;

fn check_conv2d_case(f: &Fixture, case: &str, p: Conv2dParams, dev: &Device) {
    let what = |t: &str| format!("conv2d {case} {t} on {}", dev.name());
    let x = f.tensor(&format!("{case}.x"), dev);
    let w = f.tensor(&format!("{case}.w"), dev);
    let dy = f.tensor(&format!("{case}.dy"), dev);
    let (ry, rdx, rdw) = (
        f.get(&format!("{case}.y")),
        f.get(&format!("{case}.dx")),
        f.get(&format!("{case}.dw")),
    );

    // The Backend methods directly (what each backend implements) ...
    let be = dev.backend();
    let xs = x.dims4("x").unwrap();
    let ws = w.dims4("w").unwrap();
    assert_close(
        &what("Backend y"),
        &be.conv2d(&x, &w, p).unwrap(),
        ry,
        CONV_TOL,
        1.0,
    );
    let dx = be.conv2d_backward_data(&dy, &w, xs, p).unwrap();
    assert_close(&what("Backend dx"), &dx, rdx, CONV_TOL, 1.0);
    let dw = be.conv2d_backward_weight(&x, &dy, ws, p).unwrap();
    assert_close(&what("Backend dw"), &dw, rdw, CONV_TOL, 1.0);

    // ... and the differentiable op on the tape, back-propagating PyTorch's upstream gradient.
    let mut tape = Tape::new();
    let xv = tape.leaf(x);
    let wv = tape.leaf(w);
    let y = ops::conv2d(&mut tape, xv, wv, p).unwrap();
    assert_close(&what("op y"), tape.value(y), ry, CONV_TOL, 1.0);
    let g = tape.backward_from(y, dy).unwrap();
    assert_close(&what("op dx"), g.get(xv).unwrap(), rdx, CONV_TOL, 1.0);
    assert_close(&what("op dw"), g.get(wv).unwrap(), rdw, CONV_TOL, 1.0);
}

#[test]
fn conv2d_matches_torch() {
    let f = Fixture::load("conv2d.safetensors");
    for dev in devices() {
        check_conv2d_case(&f, "k4s2p1", Conv2dParams::new(2, 1), &dev);
        check_conv2d_case(&f, "k3s1p1", Conv2dParams::new(1, 1), &dev);
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (0, 3),
        };
        check_conv2d_case(&f, "k1x7p03", p, &dev);
    }
}

#[test]
fn conv_transpose2d_matches_torch() {
    let f = Fixture::load("conv_transpose2d.safetensors");
    for dev in devices() {
        let what = |t: &str| format!("conv_transpose2d k4s2p1 {t} on {}", dev.name());
        let mut tape = Tape::new();
        let x = tape.leaf(f.tensor("k4s2p1.x", &dev));
        let w = tape.leaf(f.tensor("k4s2p1.w", &dev));
        let y = ops::conv_transpose2d(&mut tape, x, w, Conv2dParams::new(2, 1), None).unwrap();
        assert_close(&what("y"), tape.value(y), f.get("k4s2p1.y"), CONV_TOL, 1.0);
        let g = tape.backward_from(y, f.tensor("k4s2p1.dy", &dev)).unwrap();
        assert_close(
            &what("dx"),
            g.get(x).unwrap(),
            f.get("k4s2p1.dx"),
            CONV_TOL,
            1.0,
        );
        assert_close(
            &what("dw"),
            g.get(w).unwrap(),
            f.get("k4s2p1.dw"),
            CONV_TOL,
            1.0,
        );
    }
}

// ---- batch norm -----------------------------------------------------------------------------------------------

/// Batch norm is a few short f32 reductions (≤ 36 elements per channel) and an affine map: errors are a few
/// ulps of the inputs' magnitude (PyTorch's own f32 path lands within 1e-6 of these references; 1e-7 for most
/// tensors). 1e-5 (with the rms floor for dx, a difference of sums) leaves a 10× margin and still catches the
/// biased variance in the running-var update (off by 1.2% / 3% on these two fixtures), a wrong eps placement or
/// a missing backward term by orders of magnitude.
const BN_TOL: f64 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;
const BN_EPS: f32 = 1e-5;

fn check_bn_train(f: &Fixture, case: &str, dev: &Device) {
    let k = |t: &str| format!("{case}.{t}");
    let what = |t: &str| format!("{case} {t} on {}", dev.name());
    let mut rm = f.tensor(&k("running_mean0"), dev);
    let mut rv = f.tensor(&k("running_var0"), dev);

    let mut tape = Tape::new();
    let x = tape.leaf(f.tensor(&k("x"), dev));
    let gamma = tape.leaf(f.tensor(&k("gamma"), dev));
    let beta = tape.leaf(f.tensor(&k("beta"), dev));
    let y = ops::batch_norm(
        &mut tape,
        x,
        gamma,
        beta,
        &mut rm,
        &mut rv,
        true,
        BN_MOMENTUM,
        BN_EPS,
    )
    .unwrap();
    assert_close(&what("y"), tape.value(y), f.get(&k("y")), BN_TOL, 1.0);
    // The running mean is a mix that can cancel (rms floor); the running var mixes positive values (pure
    // relative).
    assert_close(
        &what("running_mean"),
        &rm,
        f.get(&k("running_mean1")),
        BN_TOL,
        1.0,
    );
    assert_close(
        &what("running_var"),
        &rv,
        f.get(&k("running_var1")),
        BN_TOL,
        0.0,
    );
    let g = tape.backward_from(y, f.tensor(&k("dy"), dev)).unwrap();
    assert_close(&what("dx"), g.get(x).unwrap(), f.get(&k("dx")), BN_TOL, 1.0);
    assert_close(
        &what("dgamma"),
        g.get(gamma).unwrap(),
        f.get(&k("dgamma")),
        BN_TOL,
        1.0,
    );
    assert_close(
        &what("dbeta"),
        g.get(beta).unwrap(),
        f.get(&k("dbeta")),
        BN_TOL,
        1.0,
    );

    // The Backend methods directly: train forward, then backward from the saved mean / invstd.
    let be = dev.backend();
    let (xt, gt) = (f.tensor(&k("x"), dev), f.tensor(&k("gamma"), dev));
    let mut rm = f.tensor(&k("running_mean0"), dev);
    let mut rv = f.tensor(&k("running_var0"), dev);
    let out = be
        .batch_norm_train(
            &xt,
            BatchNormAffine {
                gamma: &gt,
                beta: &f.tensor(&k("beta"), dev),
                eps: BN_EPS,
            },
            RunningStatsMut::new(&mut rm, &mut rv, BN_MOMENTUM),
            None,
        )
        .unwrap();
    assert_close(&what("Backend y"), &out.y, f.get(&k("y")), BN_TOL, 1.0);
    assert_close(
        &what("Backend running_var"),
        &rv,
        f.get(&k("running_var1")),
        BN_TOL,
        0.0,
    );
    let grads = be
        .batch_norm_backward(
            BatchNormSaved::new(&xt, &gt, &out),
            &f.tensor(&k("dy"), dev),
        )
        .unwrap();
    assert_close(&what("Backend dx"), &grads.dx, f.get(&k("dx")), BN_TOL, 1.0);
    assert_close(
        &what("Backend dgamma"),
        &grads.dgamma,
        f.get(&k("dgamma")),
        BN_TOL,
        1.0,
    );
    assert_close(
        &what("Backend dbeta"),
        &grads.dbeta,
        f.get(&k("dbeta")),
        BN_TOL,
        1.0,
    );
}

#[test]
fn batch_norm2d_train_matches_torch() {
    let f = Fixture::load("batchnorm.safetensors");
    for dev in devices() {
        check_bn_train(&f, "bn2d_train", &dev);
    }
}

#[test]
fn batch_norm1d_train_matches_torch() {
    let f = Fixture::load("batchnorm.safetensors");
    for dev in devices() {
        check_bn_train(&f, "bn1d_train", &dev);
    }
}

#[test]
fn batch_norm2d_eval_matches_torch() {
    let f = Fixture::load("batchnorm.safetensors");
    for dev in devices() {
        let what = |t: &str| format!("bn2d_eval {t} on {}", dev.name());
        let k = |t: &str| format!("bn2d_eval.{t}");
        let mut rm = f.tensor(&k("running_mean"), &dev);
        let mut rv = f.tensor(&k("running_var"), &dev);
        let mut tape = Tape::new();
        let x = tape.leaf(f.tensor(&k("x"), &dev));
        let gamma = tape.leaf(f.tensor(&k("gamma"), &dev));
        let beta = tape.leaf(f.tensor(&k("beta"), &dev));
        let y = ops::batch_norm(
            &mut tape,
            x,
            gamma,
            beta,
            &mut rm,
            &mut rv,
            false,
            BN_MOMENTUM,
            BN_EPS,
        )
        .unwrap();
        assert_close(&what("y"), tape.value(y), f.get(&k("y")), BN_TOL, 1.0);
        // Eval mode must leave the running statistics exactly as they were.
        assert_eq!(rm.to_vec().unwrap(), f.get(&k("running_mean")).data);
        assert_eq!(rv.to_vec().unwrap(), f.get(&k("running_var")).data);

        let be = dev.backend();
        let y = be
            .batch_norm_eval(
                &f.tensor(&k("x"), &dev),
                BatchNormAffine {
                    gamma: &f.tensor(&k("gamma"), &dev),
                    beta: &f.tensor(&k("beta"), &dev),
                    eps: BN_EPS,
                },
                RunningStats::new(&rm, &rv),
                None,
            )
            .unwrap();
        assert_close(&what("Backend y"), &y, f.get(&k("y")), BN_TOL, 1.0);
    }
}

// ---- BCE with logits ------------------------------------------------------------------------------------------

/// The loss is a mean of 19 terms each computed to a few ulps (log1p / exp in f32): 2e-6 relative. Gradients
/// are (σ(x) − t)/N; where a ±30 / ±50 logit is on the right side the exact value is ~1e-14 or less and f32
/// may legitimately return 0 for it, so gradients are held to 2e-6 of their rms rather than relative — while
/// a naive formula that overflows gives inf/NaN (the finiteness check) and a wrong sign fails outright.
const BCE_TOL: f64 = 2e-6;

#[test]
fn bce_with_logits_matches_torch() {
    let f = Fixture::load("bce_with_logits.safetensors");
    for dev in devices() {
        for (case, target) in [("target1", 1.0f32), ("target0", 0.0)] {
            let what = |t: &str| format!("bce {case} {t} on {}", dev.name());
            let mut tape = Tape::new();
            let logits = tape.leaf(f.tensor("logits", &dev));
            let loss = ops::bce_with_logits(&mut tape, logits, target).unwrap();
            assert_close(
                &what("loss"),
                tape.value(loss),
                f.get(&format!("{case}.loss")),
                BCE_TOL,
                0.0,
            );
            let g = tape.backward(loss).unwrap();
            let rgrad = f.get(&format!("{case}.grad"));
            assert_close(&what("grad"), g.get(logits).unwrap(), rgrad, BCE_TOL, 1.0);

            let (l, gr) = dev
                .backend()
                .bce_with_logits(&f.tensor("logits", &dev), target)
                .unwrap();
            let rloss = f.get(&format!("{case}.loss"));
            assert_close(&what("Backend loss"), &l, rloss, BCE_TOL, 0.0);
            assert_close(&what("Backend grad"), &gr, rgrad, BCE_TOL, 1.0);
        }
    }
}

// ---- Adam -----------------------------------------------------------------------------------------------------

/// Parameters are O(1) and move by ~lr = 2e-4 a step, so the f32 result carries ~6e-8 of rounding: 1e-6 of the
/// rms (floor 1) is tight. The step itself (p_after − p_before) is then checked separately to 2e-3 relative to
/// the step's rms: that is what catches a wrong bias correction, β, or eps placement (which change the step by
/// ≥ 1%), and the 2e-3 is what the f32 rounding of p (6e-8 over a 2e-4 step, 3e-4) allows with margin.
/// exp_avg is a mix of gradients that may cancel (floor 1); exp_avg_sq is a sum of squares, never cancels (pure
/// relative). Both 1e-6: PyTorch forms 1 − β from the Python double and rounds it once to f32, and so must we —
/// computing 1 − 0.999f32 in f32 instead gives 0.00099998713, a 1.29e-5 relative error in v that this catches
/// (the parameters barely see it: the same β2 enters the bias correction and cancels in v̂).
const ADAM_P_TOL: f64 = 1e-6;
const ADAM_STEP_TOL: f64 = 2e-3;
const ADAM_MV_TOL: f64 = 1e-6;

/// The parameter names of the optimizer fixtures (adam.safetensors, rmsprop.safetensors).
const OPTIM_PARAMS: [&str; 2] = ["a", "b"];

fn check_adam(f: &Fixture, case: &str, weight_decay: f32, dev: &Device) {
    let mut params: Vec<Tensor> = OPTIM_PARAMS
        .iter()
        .map(|n| f.tensor(&format!("param0.{n}"), dev))
        .collect();
    let mut ms: Vec<Tensor> = params
        .iter()
        .map(|p| Tensor::zeros(p.shape(), dev).unwrap())
        .collect();
    let mut vs = ms.clone();
    let be = dev.backend();
    for step in 1..=2u64 {
        let grads: Vec<Tensor> = OPTIM_PARAMS
            .iter()
            .map(|n| f.tensor(&format!("grad{step}.{n}"), dev))
            .collect();
        let before: Vec<Vec<f32>> = params.iter().map(|p| p.to_vec().unwrap()).collect();
        let mut slots: Vec<AdamSlot> = params
            .iter_mut()
            .zip(&grads)
            .zip(ms.iter_mut().zip(vs.iter_mut()))
            .map(|((param, grad), (m, v))| AdamSlot { param, grad, m, v })
            .collect();
        let h = AdamHyper {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step,
        };
        be.adam_step(&mut slots, h).unwrap();
        for (i, n) in OPTIM_PARAMS.iter().enumerate() {
            let key = |t: &str| format!("{case}.step{step}.{n}.{t}");
            let what = |t: &str| format!("{case} step {step} '{n}' {t} on {}", dev.name());
            let want = f.get(&key("param"));
            assert_close(&what("param"), &params[i], want, ADAM_P_TOL, 1.0);
            let delta = |p: &[f32]| p.iter().zip(&before[i]).map(|(a, b)| a - b).collect();
            let got_step = host(&Ref {
                shape: want.shape.clone(),
                data: delta(&params[i].to_vec().unwrap()),
            });
            let want_step = Ref {
                shape: want.shape.clone(),
                data: delta(&want.data),
            };
            assert_close(&what("step"), &got_step, &want_step, ADAM_STEP_TOL, 1.0);
            assert_close(
                &what("exp_avg"),
                &ms[i],
                f.get(&key("exp_avg")),
                ADAM_MV_TOL,
                1.0,
            );
            assert_close(
                &what("exp_avg_sq"),
                &vs[i],
                f.get(&key("exp_avg_sq")),
                ADAM_MV_TOL,
                0.0,
            );
        }
    }
}

#[test]
fn adam_step_matches_torch() {
    let f = Fixture::load("adam.safetensors");
    for dev in devices() {
        check_adam(&f, "adam", 0.0, &dev);
        check_adam(&f, "adam_wd", 0.01, &dev);
    }
}

/// The fixture's two parameters ("a", "b") as they were before the first step, in a fresh store.
fn optim_fixture_store(f: &Fixture, dev: &Device) -> (ParamStore, Vec<ParamId>) {
    let mut store = ParamStore::new(dev);
    let ids = OPTIM_PARAMS
        .iter()
        .map(|n| store.add(n, f.tensor(&format!("param0.{n}"), dev)))
        .collect();
    (store, ids)
}

/// Puts step `step`'s gradients into the store the way training does (a tape backward, then
/// `accumulate_grads`). The loss Σ p·g (g a constant) has gradient exactly g, so the fixture's gradients reach
/// the store unrounded.
fn feed_fixture_grads(
    f: &Fixture,
    dev: &Device,
    store: &mut ParamStore,
    ids: &[ParamId],
    step: u64,
) {
    store.zero_grad();
    let mut tape = Tape::new();
    let mut terms = Vec::new();
    for (n, &id) in OPTIM_PARAMS.iter().zip(ids) {
        let p = store.var(&mut tape, id);
        let g = tape.constant(f.tensor(&format!("grad{step}.{n}"), dev));
        let pg = ops::mul(&mut tape, p, g).unwrap();
        terms.push(ops::sum(&mut tape, pg).unwrap());
    }
    let loss = ops::add(&mut tape, terms[0], terms[1]).unwrap();
    let grads = tape.backward(loss).unwrap();
    store.accumulate_grads(&grads).unwrap();
}

/// The same two steps through the optimizer the training loop uses: `optim::Adam` over a `ParamStore`, with the
/// gradients arriving by a tape backward.
fn check_optim_adam(f: &Fixture, case: &str, weight_decay: f32, dev: &Device) {
    let (mut store, ids) = optim_fixture_store(f, dev);
    let cfg = AdamConfig {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay,
    };
    let mut adam = Adam::new(&store, cfg).unwrap();
    for step in 1..=2u64 {
        feed_fixture_grads(f, dev, &mut store, &ids, step);
        adam.step(&mut store).unwrap();
        assert_eq!(adam.step_count(), step);
        let (_, ms, vs) = adam.state();
        for (i, n) in OPTIM_PARAMS.iter().enumerate() {
            let key = |t: &str| format!("{case}.step{step}.{n}.{t}");
            let what =
                |t: &str| format!("optim::Adam {case} step {step} '{n}' {t} on {}", dev.name());
            let p = store.value(ids[i]);
            assert_close(&what("param"), p, f.get(&key("param")), ADAM_P_TOL, 1.0);
            let rm = f.get(&key("exp_avg"));
            assert_close(&what("exp_avg"), &ms[i], rm, ADAM_MV_TOL, 1.0);
            let rv = f.get(&key("exp_avg_sq"));
            assert_close(&what("exp_avg_sq"), &vs[i], rv, ADAM_MV_TOL, 0.0);
        }
    }
}

#[test]
fn optim_adam_matches_torch() {
    let f = Fixture::load("adam.safetensors");
    for dev in devices() {
        check_optim_adam(&f, "adam", 0.0, &dev);
        check_optim_adam(&f, "adam_wd", 0.01, &dev);
    }
}

// ---- RMSprop ---------------------------------------------------------------------------------------------------

/// Three RMSprop steps through `optim::RmsProp` over a `ParamStore` (gradients arriving by a tape backward, as in
/// training) against torch.optim.RMSprop, with Adam's tolerances: parameters (which move by up to 10·lr = 1e-2
/// per step) to 1e-6 of their typical size, square_avg to 1e-6 relative, which also catches 1 − α formed in f32.
fn check_optim_rmsprop(f: &Fixture, case: &str, weight_decay: f32, dev: &Device) {
    let (mut store, ids) = optim_fixture_store(f, dev);
    let cfg = RmsPropConfig {
        lr: 1e-3,
        alpha: 0.99,
        eps: 1e-8,
        weight_decay,
    };
    let mut opt = RmsProp::new(&store, cfg).unwrap();
    for step in 1..=3u64 {
        feed_fixture_grads(f, dev, &mut store, &ids, step);
        opt.step(&mut store).unwrap();
        assert_eq!(opt.step_count(), step);
        let (_, vs) = opt.state();
        for (i, n) in OPTIM_PARAMS.iter().enumerate() {
            let key = |t: &str| format!("{case}.step{step}.{n}.{t}");
            let what = |t: &str| {
                format!(
                    "optim::RmsProp {case} step {step} '{n}' {t} on {}",
                    dev.name()
                )
            };
            let p = store.value(ids[i]);
            assert_close(&what("param"), p, f.get(&key("param")), ADAM_P_TOL, 1.0);
            let rv = f.get(&key("square_avg"));
            assert_close(&what("square_avg"), &vs[i], rv, ADAM_MV_TOL, 0.0);
        }
    }
}

#[test]
fn optim_rmsprop_matches_torch() {
    let f = Fixture::load("rmsprop.safetensors");
    for dev in devices() {
        check_optim_rmsprop(&f, "rmsprop", 0.0, &dev);
        check_optim_rmsprop(&f, "rmsprop_wd", 0.01, &dev);
    }
}

// ---- the DCGAN-iteration fixture ------------------------------------------------------------------------------

/// The fixture the end-to-end training test relies on holds what tests/fixtures/README.md says, with PyTorch's
/// state_dict names and shapes for G32 / D32 (nz 8, ngf = ndf = 4, nc 3, batch 4).
#[test]
fn dcgan_iteration_fixture_is_complete() {
    let f = Fixture::load("dcgan32_iteration.safetensors");
    let (nz, ngf, ndf, nc, b) = (8, 4, 4, 3, 4);
    let conv = |k: &str, s: [usize; 4]| (format!("{k}.weight"), s.to_vec());
    let mut g_params = vec![
        conv("main.0", [nz, 4 * ngf, 4, 4]),
        conv("main.3", [4 * ngf, 2 * ngf, 4, 4]),
        conv("main.6", [2 * ngf, ngf, 4, 4]),
        conv("main.9", [ngf, nc, 4, 4]),
    ];
    let mut d_params = vec![
        conv("main.0", [ndf, nc, 4, 4]),
        conv("main.2", [2 * ndf, ndf, 4, 4]),
        conv("main.5", [4 * ndf, 2 * ndf, 4, 4]),
        conv("main.8", [1, 4 * ndf, 4, 4]),
    ];
    let bn = |k: &str, c: usize| {
        ["weight", "bias"]
            .iter()
            .map(|t| (format!("{k}.{t}"), vec![c]))
            .collect::<Vec<_>>()
    };
    let bn_bufs = |k: &str, c: usize| {
        vec![
            (format!("{k}.running_mean"), vec![c]),
            (format!("{k}.running_var"), vec![c]),
            (format!("{k}.num_batches_tracked"), vec![]),
        ]
    };
    let g_bn = [("main.1", 4 * ngf), ("main.4", 2 * ngf), ("main.7", ngf)];
    let d_bn = [("main.3", 2 * ndf), ("main.6", 4 * ndf)];
    for (k, c) in g_bn {
        g_params.extend(bn(k, c));
    }
    for (k, c) in d_bn {
        d_params.extend(bn(k, c));
    }
    let mut g_state = g_params.clone();
    let mut d_state = d_params.clone();
    for (k, c) in g_bn {
        g_state.extend(bn_bufs(k, c));
    }
    for (k, c) in d_bn {
        d_state.extend(bn_bufs(k, c));
    }

    let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
    for (prefix, list) in [
        ("g0.", &g_state),
        ("g1.", &g_state),
        ("d0.", &d_state),
        ("d1.", &d_state),
        ("gradG.", &g_params),
        ("gradD.", &d_params),
    ] {
        expected.extend(
            list.iter()
                .map(|(k, s)| (format!("{prefix}{k}"), s.clone())),
        );
    }
    for (k, s) in [
        ("x", vec![b, nc, 32, 32]),
        ("z", vec![b, nz]),
        ("fake", vec![b, nc, 32, 32]),
        ("d_real_logits", vec![b]),
        ("d_fake_logits", vec![b]),
        ("g_logits", vec![b]),
        ("errD_real", vec![1]),
        ("errD_fake", vec![1]),
        ("errG", vec![1]),
        ("D_x", vec![1]),
        ("D_G_z1", vec![1]),
        ("D_G_z2", vec![1]),
    ] {
        expected.push((k.to_string(), s));
    }
    for (k, s) in &expected {
        assert_eq!(&f.get(k).shape, s, "dcgan fixture '{k}' shape");
    }
    assert_eq!(
        f.tensors.len(),
        expected.len(),
        "dcgan fixture has tensors the README does not list"
    );

    // G ran forward once in train mode; D three times (real, detached fake, fake in the G step).
    for (k, _) in g_bn {
        assert_eq!(f.get(&format!("g0.{k}.num_batches_tracked")).data, [0.0]);
        assert_eq!(f.get(&format!("g1.{k}.num_batches_tracked")).data, [1.0]);
    }
    for (k, _) in d_bn {
        assert_eq!(f.get(&format!("d0.{k}.num_batches_tracked")).data, [0.0]);
        assert_eq!(f.get(&format!("d1.{k}.num_batches_tracked")).data, [3.0]);
    }
    let x = &f.get("x").data;
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    // The stored losses agree with the stored logits (BCE with logits, mean), computed here in f64.
    let bce = |logits: &[f32], t: f64| {
        logits
            .iter()
            .map(|&l| {
                let l = l as f64;
                l.max(0.0) - l * t + (-l.abs()).exp().ln_1p()
            })
            .sum::<f64>()
            / logits.len() as f64
    };
    for (loss, logits, t) in [
        ("errD_real", "d_real_logits", 1.0),
        ("errD_fake", "d_fake_logits", 0.0),
        ("errG", "g_logits", 1.0),
    ] {
        let want = bce(&f.get(logits).data, t);
        let got = f.get(loss).data[0] as f64;
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{loss}: {got} vs {want}"
        );
    }
}
