//! Convolution, batch-norm and linear kernels (kernels/{conv,batchnorm,linear}.cu) run through their launch
//! code on the emulated CUDA backend, against a direct-loop f64 reference written here and against the CPU
//! backend. Sizes are awkward on purpose (not multiples of the 64/16/128 tiles or 16-deep K slices) and chosen
//! so that every kernel variant runs: the 64x64 and the narrow 16x128 tiles, split-K with one and with several
//! splits, stride phases without taps, multi-chunk batch-norm reductions. Outputs come from the backend's
//! allocator, which poisons them with NaN in test builds, so an element a kernel forgets fails the comparison.
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation
//! (scripts/gpu_run.sh does this).
#![cfg(feature = "emulation")]

use gan_engine::backend::{
    Activation, BatchNormAffine, BatchNormSaved, Conv2dParams, FusedOut, LinearNeed, RunningStats,
    RunningStatsMut,
};
use gan_engine::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::conv::ConvCase;

/// The device under test: the emulated CUDA backend, or the real GPU when GAN_ENGINE_TEST_DEVICE=cuda.
fn emu() -> Device {
    match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            Device::parse("cuda").expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open")
        }
        _ => Device::parse("emu").expect("the emulated CUDA backend must open"),
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// What a batch norm of `x` saved, with `c` (one value per channel) as gamma and both statistics: for the
/// argument checks, which look at shapes only.
fn one_per_channel<'a>(x: &'a Tensor, c: &'a Tensor) -> BatchNormSaved<'a> {
    BatchNormSaved {
        x,
        gamma: c,
        mean: c,
        invstd: c,
        out_act: None,
    }
}

/// Asserts |got - want| <= 1e-4 * max(1, |want|) elementwise (NaN fails), naming the case and the index.
fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * w.abs().max(1.0);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---- convolution -------------------------------------------------------------------------------------------

/// The three directions by direct summation in f64.
fn conv_reference(case: &ConvCase, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let mut y = vec![0f64; numel(case.y_shape())];
    let mut dx = vec![0f64; numel(case.x_shape())];
    let mut dw = vec![0f64; numel(case.w_shape())];
    case.for_each_tap(|[n, o, c, oh, ow, ih, iw, r, s]| {
        let (xi, wi, yi) = (
            case.xi(n, c, ih, iw),
            case.wi(o, c, r, s),
            case.yi(n, o, oh, ow),
        );
        y[yi] += x[xi] as f64 * w[wi] as f64;
        dx[xi] += dy[yi] as f64 * w[wi] as f64;
        dw[wi] += dy[yi] as f64 * x[xi] as f64;
    });
    [y, dx, dw]
}

fn conv_cases() -> Vec<(&'static str, ConvCase)> {
    let p = |s: (usize, usize), pad: (usize, usize)| Conv2dParams {
        stride: s,
        padding: pad,
    };
    let case = |n, c, h, w, o, k, p| ConvCase {
        n,
        c,
        h,
        w,
        o,
        k,
        p,
    };
    vec![
        // DCGAN's layer shape: 4x4 stride 2 pad 1 (4 stride phases in backward data).
        ("4x4 s2 p1", case(3, 5, 9, 11, 6, (4, 4), p((2, 2), (1, 1)))),
        (
            "4x4 s2 p1 even",
            case(2, 7, 8, 8, 9, (4, 4), p((2, 2), (1, 1))),
        ),
        ("3x3 s1 p1", case(3, 5, 7, 10, 6, (3, 3), p((1, 1), (1, 1)))),
        (
            "1x7 p(0,3)",
            case(3, 5, 8, 13, 6, (1, 7), p((1, 1), (0, 3))),
        ),
        (
            "7x1 p(3,0)",
            case(3, 5, 12, 7, 6, (7, 1), p((1, 1), (3, 0))),
        ),
        ("1x1", case(3, 5, 7, 9, 6, (1, 1), p((1, 1), (0, 0)))),
        // The discriminator's last layer: the 4x4 kernel covers the whole image, one output channel
        // (narrow tile, split-K over 24*16 = 384 taps).
        (
            "4x4 s1 p0 -> 1x1",
            case(3, 24, 4, 4, 1, (4, 4), p((1, 1), (0, 0))),
        ),
        (
            "3x3 s2 p0",
            case(3, 5, 13, 11, 6, (3, 3), p((2, 2), (0, 0))),
        ),
        // Stride larger than the kernel: half the stride phases of backward data have no taps (zeros).
        ("1x1 s2", case(3, 5, 7, 8, 6, (1, 1), p((2, 2), (0, 0)))),
        // Asymmetric everything.
        (
            "3x5 s(2,1) p(1,2)",
            case(2, 5, 9, 7, 6, (3, 5), p((2, 1), (1, 2))),
        ),
        // Three input channels (the generator's output layer in backward data): narrow tile.
        (
            "C=3 4x4 s2 p1",
            case(2, 3, 10, 9, 5, (4, 4), p((2, 2), (1, 1))),
        ),
        // A DCGAN-sized stride-2 layer: two 64-row tiles in backward data (C = 67) and in forward (O = 65).
        (
            "DCGAN-like 4x4 s2 p1",
            case(2, 67, 8, 8, 65, (4, 4), p((2, 2), (1, 1))),
        ),
        // More than one 64-row tile and more than one K split in the forward pass.
        ("O=70 3x3", case(2, 20, 5, 6, 70, (3, 3), p((1, 1), (1, 1)))),
    ]
}

#[test]
fn conv2d_all_directions_match_reference_and_cpu() {
    let dev = emu();
    let gpu = dev.backend();
    let cpu = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (name, case) in conv_cases() {
        let numel = |s: [usize; 4]| s.iter().product::<usize>();
        let x = random(&mut rng, numel(case.x_shape()));
        let w = random(&mut rng, numel(case.w_shape()));
        let dy = random(&mut rng, numel(case.y_shape()));
        let [y_ref, dx_ref, dw_ref] = conv_reference(&case, &x, &w, &dy);

        let on =
            |d: &Device, v: &[f32], s: [usize; 4]| Tensor::from_vec(v.to_vec(), &s, d).unwrap();
        let (xg, wg, dyg) = (
            on(&dev, &x, case.x_shape()),
            on(&dev, &w, case.w_shape()),
            on(&dev, &dy, case.y_shape()),
        );
        let [y, dx, dw] = case.run_all(gpu, &xg, &wg, &dyg);
        assert_close(&format!("{name}: conv2d"), &y, &y_ref);
        assert_close(&format!("{name}: conv2d_backward_data"), &dx, &dx_ref);
        assert_close(&format!("{name}: conv2d_backward_weight"), &dw, &dw_ref);

        // The CPU backend computes the same three (its own tests check it against PyTorch).
        let (xc, wc, dyc) = (
            on(&cpu, &x, case.x_shape()),
            on(&cpu, &w, case.w_shape()),
            on(&cpu, &dy, case.y_shape()),
        );
        let [y_cpu, dx_cpu, dw_cpu] = case.run_all(cpu.backend(), &xc, &wc, &dyc);
        assert_close(&format!("{name}: conv2d vs cpu"), &y, &to_f64(&y_cpu));
        assert_close(&format!("{name}: bwd data vs cpu"), &dx, &to_f64(&dx_cpu));
        assert_close(&format!("{name}: bwd weight vs cpu"), &dw, &to_f64(&dw_cpu));
    }
}

#[test]
fn conv2d_is_bitwise_deterministic() {
    // Split-K partials are summed in a fixed order: two runs give the same bits.
    let dev = emu();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let p = Conv2dParams::new(2, 1);
    let x = Tensor::from_vec(random(&mut rng, 2 * 9 * 10 * 10), &[2, 9, 10, 10], &dev).unwrap();
    let dy = Tensor::from_vec(random(&mut rng, 2 * 4 * 5 * 5), &[2, 4, 5, 5], &dev).unwrap();
    let b = dev.backend();
    let a1 = b.conv2d_backward_weight(&x, &dy, [4, 9, 4, 4], p).unwrap();
    let a2 = b.conv2d_backward_weight(&x, &dy, [4, 9, 4, 4], p).unwrap();
    assert_eq!(common::bits(&a1), common::bits(&a2));
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let dev = emu();
    let b = dev.backend();
    let x = Tensor::zeros(&[2, 3, 8, 8], &dev).unwrap();
    let w = Tensor::zeros(&[4, 5, 3, 3], &dev).unwrap();
    let err = b
        .conv2d(&x, &w, Conv2dParams::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels"), "{err}");
    let w = Tensor::zeros(&[4, 3, 11, 11], &dev).unwrap();
    let err = b
        .conv2d(&x, &w, Conv2dParams::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than the padded input"), "{err}");
    let w = Tensor::zeros(&[4, 3, 3, 3], &dev).unwrap();
    let err = b
        .conv2d(&x, &w, Conv2dParams::new(0, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stride"), "{err}");
    let dy = Tensor::zeros(&[2, 4, 7, 8], &dev).unwrap();
    let err = b
        .conv2d_backward_data(&dy, &w, [2, 3, 8, 8], Conv2dParams::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dy has shape"), "{err}");
    let err = b
        .conv2d_backward_weight(&x, &dy, [4, 3, 3, 3], Conv2dParams::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dy has shape"), "{err}");
}

// ---- batch norm --------------------------------------------------------------------------------------------

struct BnRef {
    y: Vec<f64>,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    eval_y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// Batch norm in f64 from its definition. `x` is [N, C, HW].
#[allow(clippy::too_many_arguments)]
fn bn_reference(
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rm: &[f32],
    rv: &[f32],
    momentum: f64,
    eps: f64,
) -> BnRef {
    let m = (n * hw) as f64;
    let idx = |i: usize, ch: usize, j: usize| (i * c + ch) * hw + j;
    let mut r = BnRef {
        y: vec![0.0; x.len()],
        mean: vec![0.0; c],
        invstd: vec![0.0; c],
        running_mean: vec![0.0; c],
        running_var: vec![0.0; c],
        eval_y: vec![0.0; x.len()],
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for ch in 0..c {
        let vals = || (0..n).flat_map(move |i| (0..hw).map(move |j| idx(i, ch, j)));
        let mean = vals().map(|k| x[k] as f64).sum::<f64>() / m;
        let var = vals().map(|k| (x[k] as f64 - mean).powi(2)).sum::<f64>() / m;
        let invstd = 1.0 / (var + eps).sqrt();
        let g = gamma[ch] as f64;
        r.mean[ch] = mean;
        r.invstd[ch] = invstd;
        r.running_mean[ch] = (1.0 - momentum) * rm[ch] as f64 + momentum * mean;
        r.running_var[ch] = (1.0 - momentum) * rv[ch] as f64 + momentum * var * m / (m - 1.0);
        let eval_scale = g / (rv[ch] as f64 + eps).sqrt();
        let (mut sdy, mut sdyx) = (0.0, 0.0);
        for k in vals() {
            let xhat = (x[k] as f64 - mean) * invstd;
            r.y[k] = xhat * g + beta[ch] as f64;
            r.eval_y[k] = (x[k] as f64 - rm[ch] as f64) * eval_scale + beta[ch] as f64;
            sdy += dy[k] as f64;
            sdyx += dy[k] as f64 * xhat;
        }
        r.dbeta[ch] = sdy;
        r.dgamma[ch] = sdyx;
        for k in vals() {
            let xhat = (x[k] as f64 - mean) * invstd;
            r.dx[k] = g * invstd * (dy[k] as f64 - sdy / m - xhat * sdyx / m);
        }
    }
    r
}

#[test]
fn batch_norm_matches_reference() {
    let dev = emu();
    let b = dev.backend();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // [N, C, H, W] and [N, C]; the larger ones have several reduction chunks per channel (M > 2048). One
    // backend runs them in order: 1500 features need more arrival counters than the first set holds, so the set
    // grows there, and the shape after it uses the grown set.
    let shapes: [&[usize]; 7] = [
        &[3, 5, 7, 9],
        &[4, 6],
        &[2, 3, 1, 1],
        &[5, 3, 23, 29],
        &[7, 2, 31, 37],
        &[3, 1500],
        &[2, 4, 3, 5],
    ];
    for shape in shapes {
        let (n, c) = (shape[0], shape[1]);
        let hw: usize = shape[2..].iter().product();
        let total = n * c * hw;
        // An offset mean makes the variance computation sensitive to cancellation.
        let x: Vec<f32> = random(&mut rng, total)
            .iter()
            .map(|v| 3.0 + 2.0 * v)
            .collect();
        let dy = random(&mut rng, total);
        let gamma: Vec<f32> = random(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = random(&mut rng, c);
        let rm = random(&mut rng, c);
        let rv: Vec<f32> = random(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let (momentum, eps) = (0.1f32, 1e-5f32);
        let want = bn_reference(
            (n, c, hw),
            &x,
            &dy,
            &gamma,
            &beta,
            &rm,
            &rv,
            momentum as f64,
            eps as f64,
        );

        let t = |v: &[f32], s: &[usize]| Tensor::from_vec(v.to_vec(), s, &dev).unwrap();
        let (xg, dyg, gg, bg) = (t(&x, shape), t(&dy, shape), t(&gamma, &[c]), t(&beta, &[c]));
        let (mut rmg, mut rvg) = (t(&rm, &[c]), t(&rv, &[c]));
        let name = format!("{shape:?}");

        let eval_y = b
            .batch_norm_eval(
                &xg,
                BatchNormAffine::new(&gg, &bg, eps),
                RunningStats::new(&rmg, &rvg),
                None,
            )
            .unwrap();
        assert_close(
            &format!("{name} eval y"),
            &eval_y.to_vec().unwrap(),
            &want.eval_y,
        );

        let out = b
            .batch_norm_train(
                &xg,
                BatchNormAffine::new(&gg, &bg, eps),
                RunningStatsMut::new(&mut rmg, &mut rvg, momentum),
                None,
            )
            .unwrap();
        assert_close(&format!("{name} y"), &out.y.to_vec().unwrap(), &want.y);
        assert_close(
            &format!("{name} mean"),
            &out.mean.to_vec().unwrap(),
            &want.mean,
        );
        assert_close(
            &format!("{name} invstd"),
            &out.invstd.to_vec().unwrap(),
            &want.invstd,
        );
        assert_close(
            &format!("{name} running_mean"),
            &rmg.to_vec().unwrap(),
            &want.running_mean,
        );
        assert_close(
            &format!("{name} running_var"),
            &rvg.to_vec().unwrap(),
            &want.running_var,
        );

        let grads = b
            .batch_norm_backward(BatchNormSaved::new(&xg, &gg, &out), &dyg)
            .unwrap();
        assert_close(&format!("{name} dx"), &grads.dx.to_vec().unwrap(), &want.dx);
        assert_close(
            &format!("{name} dgamma"),
            &grads.dgamma.to_vec().unwrap(),
            &want.dgamma,
        );
        assert_close(
            &format!("{name} dbeta"),
            &grads.dbeta.to_vec().unwrap(),
            &want.dbeta,
        );
    }
}

/// Batch norm with an activation fused into its passes, on the device under test, against the CPU backend's
/// plain batch norm followed by its separate activation op (the composition the fused op replaces): forward
/// in training and eval mode, and the training backward taken from the activation's output gradient. Awkward
/// shapes, every activation; fresh outputs are poisoned in test builds, so a skipped element fails.
#[test]
fn batch_norm_with_fused_activation_matches_the_composition() {
    let dev = emu();
    let (b, cpu) = (dev.backend(), Device::Cpu);
    let c_be = cpu.backend();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let acts = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
    ];
    for (shape, act) in [&[3usize, 5, 7, 9][..], &[7, 6], &[2, 3, 31, 37]]
        .iter()
        .flat_map(|s| acts.iter().map(move |a| (*s, *a)))
    {
        let c = shape[1];
        let total: usize = shape.iter().product();
        let x: Vec<f32> = random(&mut rng, total)
            .iter()
            .map(|v| 0.5 + 2.0 * v)
            .collect();
        let dy = random(&mut rng, total);
        let gamma: Vec<f32> = random(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let (beta, rm) = (random(&mut rng, c), random(&mut rng, c));
        let rv: Vec<f32> = random(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let on = |d: &Device| {
            let t = |v: &[f32], s: &[usize]| Tensor::from_vec(v.to_vec(), s, d).unwrap();
            [
                t(&x, shape),
                t(&dy, shape),
                t(&gamma, &[c]),
                t(&beta, &[c]),
                t(&rm, &[c]),
                t(&rv, &[c]),
            ]
        };
        let [xc, dyc, gc, bc, mut rmc, mut rvc] = on(&cpu);
        let [xg, dyg, gg, bg, mut rmg, mut rvg] = on(&dev);
        let name = format!("{shape:?} {act:?}");
        let close = |what: &str, got: &Tensor, want: &Tensor| {
            let w = to_f64(&want.to_vec().unwrap());
            assert_close(&format!("{name} {what}"), &got.to_vec().unwrap(), &w)
        };

        let want = c_be
            .batch_norm_eval(
                &xc,
                BatchNormAffine::new(&gc, &bc, 1e-5),
                RunningStats::new(&rmc, &rvc),
                None,
            )
            .unwrap();
        let want = c_be.activation(&want, act).unwrap();
        close(
            "eval y",
            &b.batch_norm_eval(
                &xg,
                BatchNormAffine::new(&gg, &bg, 1e-5),
                RunningStats::new(&rmg, &rvg),
                Some(act),
            )
            .unwrap(),
            &want,
        );

        let plain = c_be
            .batch_norm_train(
                &xc,
                BatchNormAffine::new(&gc, &bc, 1e-5),
                RunningStatsMut::new(&mut rmc, &mut rvc, 0.1),
                None,
            )
            .unwrap();
        let want_y = c_be.activation(&plain.y, act).unwrap();
        let dz = c_be.activation_backward(&want_y, &dyc, act).unwrap();
        let want = c_be
            .batch_norm_backward(BatchNormSaved::new(&xc, &gc, &plain), &dz)
            .unwrap();

        let out = b
            .batch_norm_train(
                &xg,
                BatchNormAffine::new(&gg, &bg, 1e-5),
                RunningStatsMut::new(&mut rmg, &mut rvg, 0.1),
                Some(act),
            )
            .unwrap();
        close("y", &out.y, &want_y);
        close("running_var", &rvg, &rvc);
        let got = b
            .batch_norm_backward(
                BatchNormSaved::new(&xg, &gg, &out).fused(&out.y, &bg, act),
                &dyg,
            )
            .unwrap();
        close("dx", &got.dx, &want.dx);
        close("dgamma", &got.dgamma, &want.dgamma);
        close("dbeta", &got.dbeta, &want.dbeta);
        // The fused backward recomputes the activation's input from x, gamma and beta instead of reading y: bit
        // for bit what taking dy back through the saved y first, then a plain backward, gives on the device.
        let dz_dev = b.activation_backward(&out.y, &dyg, act).unwrap();
        let composed = b
            .batch_norm_backward(BatchNormSaved::new(&xg, &gg, &out), &dz_dev)
            .unwrap();
        for (what, g, w) in [
            ("dx", &got.dx, &composed.dx),
            ("dgamma", &got.dgamma, &composed.dgamma),
            ("dbeta", &got.dbeta, &composed.dbeta),
        ] {
            assert_eq!(
                g.to_vec().unwrap(),
                w.to_vec().unwrap(),
                "{name}: fused {what} against the composition on the device"
            );
        }

        // The CPU backend's own fused op gives the composition's values exactly.
        let (mut rm2, mut rv2) = (on(&cpu)[4].clone(), on(&cpu)[5].clone());
        let fused = c_be
            .batch_norm_train(
                &xc,
                BatchNormAffine::new(&gc, &bc, 1e-5),
                RunningStatsMut::new(&mut rm2, &mut rv2, 0.1),
                Some(act),
            )
            .unwrap();
        assert_eq!(
            fused.y.to_vec().unwrap(),
            want_y.to_vec().unwrap(),
            "{name}: CPU fused y"
        );
        let g2 = c_be
            .batch_norm_backward(
                BatchNormSaved::new(&xc, &gc, &fused).fused(&fused.y, &bc, act),
                &dyc,
            )
            .unwrap();
        assert_eq!(
            g2.dx.to_vec().unwrap(),
            want.dx.to_vec().unwrap(),
            "{name}: CPU fused dx"
        );
    }
    // The fused backward needs the output it differentiates through at x's shape.
    let z = |s: &[usize]| Tensor::zeros(s, &dev).unwrap();
    let (x, c4) = (z(&[2, 4, 3, 3]), z(&[4]));
    let err = b
        .batch_norm_backward(
            BatchNormSaved {
                out_act: Some(FusedOut {
                    y: &z(&[2, 4, 3, 2]),
                    beta: &c4,
                    act: Activation::Relu,
                }),
                ..one_per_channel(&x, &c4)
            },
            &x,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fused output"), "{err}");
}

#[test]
fn batch_norm_running_stats_do_not_leak_into_clones() {
    // The running stats are updated in place; a clone taken before must keep the old values.
    let dev = emu();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
    let x = t((0..12).map(|i| i as f32).collect(), &[4, 3]);
    let (g, bt) = (t(vec![1.0; 3], &[3]), t(vec![0.0; 3], &[3]));
    let mut rm = t(vec![0.0; 3], &[3]);
    let mut rv = t(vec![1.0; 3], &[3]);
    let before = rm.clone();
    dev.backend()
        .batch_norm_train(
            &x,
            BatchNormAffine::new(&g, &bt, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.5),
            None,
        )
        .unwrap();
    assert_eq!(before.to_vec().unwrap(), vec![0.0; 3]);
    assert_eq!(rm.to_vec().unwrap(), vec![2.25, 2.75, 3.25]);
}

#[test]
fn batch_norm_rejects_bad_shapes() {
    let dev = emu();
    let b = dev.backend();
    let z = |s: &[usize]| Tensor::zeros(s, &dev).unwrap();
    let (x, c4, c3) = (z(&[2, 4, 3, 3]), z(&[4]), z(&[3]));
    let (mut rm, mut rv) = (z(&[4]), z(&[4]));
    let err = b
        .batch_norm_train(
            &x,
            BatchNormAffine::new(&c3, &c4, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("gamma"), "{err}");
    let one = z(&[1, 4]);
    let err = b
        .batch_norm_train(
            &one,
            BatchNormAffine::new(&c4, &c4, 1e-5),
            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
            None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
    let err = b
        .batch_norm_backward(one_per_channel(&x, &c4), &z(&[2, 4, 3, 2]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dy"), "{err}");
}

// ---- linear ------------------------------------------------------------------------------------------------

#[test]
fn linear_matches_reference() {
    let dev = emu();
    let b = dev.backend();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // (N, in, out): tiny; one tile with split-K in forward (in = 300) and backward data (out = 200); more than
    // one tile in every direction.
    for (n, inp, out) in [(3, 5, 6), (5, 300, 200), (70, 67, 66), (1, 1, 1)] {
        let x = random(&mut rng, n * inp);
        let w = random(&mut rng, out * inp);
        let bias = random(&mut rng, out);
        let dy = random(&mut rng, n * out);
        let mut y_ref = vec![0f64; n * out];
        let mut dx_ref = vec![0f64; n * inp];
        let mut dw_ref = vec![0f64; out * inp];
        let mut db_ref = vec![0f64; out];
        for i in 0..n {
            for o in 0..out {
                db_ref[o] += dy[i * out + o] as f64;
                for k in 0..inp {
                    y_ref[i * out + o] += x[i * inp + k] as f64 * w[o * inp + k] as f64;
                    dx_ref[i * inp + k] += dy[i * out + o] as f64 * w[o * inp + k] as f64;
                    dw_ref[o * inp + k] += dy[i * out + o] as f64 * x[i * inp + k] as f64;
                }
            }
        }
        let y_nobias = y_ref.clone();
        for i in 0..n {
            for o in 0..out {
                y_ref[i * out + o] += bias[o] as f64;
            }
        }

        let t = |v: &[f32], s: &[usize]| Tensor::from_vec(v.to_vec(), s, &dev).unwrap();
        let (xg, wg, bg, dyg) = (
            t(&x, &[n, inp]),
            t(&w, &[out, inp]),
            t(&bias, &[out]),
            t(&dy, &[n, out]),
        );
        let name = format!("linear {n}x{inp}->{out}");
        let y = b.linear(&xg, &wg, Some(&bg)).unwrap();
        assert_close(&format!("{name} y"), &y.to_vec().unwrap(), &y_ref);
        let y = b.linear(&xg, &wg, None).unwrap();
        assert_close(
            &format!("{name} y (no bias)"),
            &y.to_vec().unwrap(),
            &y_nobias,
        );

        let g = b.linear_backward(&xg, &wg, &dyg, LinearNeed::ALL).unwrap();
        assert_close(
            &format!("{name} dx"),
            &g.dx.unwrap().to_vec().unwrap(),
            &dx_ref,
        );
        assert_close(
            &format!("{name} dw"),
            &g.dw.unwrap().to_vec().unwrap(),
            &dw_ref,
        );
        assert_close(
            &format!("{name} db"),
            &g.db.unwrap().to_vec().unwrap(),
            &db_ref,
        );

        // Against the CPU backend too.
        let cpu = Device::Cpu;
        let c = |v: &[f32], s: &[usize]| Tensor::from_vec(v.to_vec(), s, &cpu).unwrap();
        let (xc, wc, bc, dyc) = (
            c(&x, &[n, inp]),
            c(&w, &[out, inp]),
            c(&bias, &[out]),
            c(&dy, &[n, out]),
        );
        let y_cpu = cpu
            .backend()
            .linear(&xc, &wc, Some(&bc))
            .unwrap()
            .to_vec()
            .unwrap();
        let gc = cpu
            .backend()
            .linear_backward(&xc, &wc, &dyc, LinearNeed::ALL)
            .unwrap();
        let host = |t: Option<Tensor>| to_f64(&t.unwrap().to_vec().unwrap());
        let y = b.linear(&xg, &wg, Some(&bg)).unwrap().to_vec().unwrap();
        assert_close(&format!("{name} y vs cpu"), &y, &to_f64(&y_cpu));
        let g = b.linear_backward(&xg, &wg, &dyg, LinearNeed::ALL).unwrap();
        assert_close(
            &format!("{name} dx vs cpu"),
            &g.dx.unwrap().to_vec().unwrap(),
            &host(gc.dx),
        );
        assert_close(
            &format!("{name} dw vs cpu"),
            &g.dw.unwrap().to_vec().unwrap(),
            &host(gc.dw),
        );
        assert_close(
            &format!("{name} db vs cpu"),
            &g.db.unwrap().to_vec().unwrap(),
            &host(gc.db),
        );

        let g = b
            .linear_backward(
                &xg,
                &wg,
                &dyg,
                LinearNeed {
                    dx: false,
                    dw: true,
                    db: false,
                },
            )
            .unwrap();
        assert!(g.dx.is_none() && g.db.is_none() && g.dw.is_some());
    }
}

#[test]
fn linear_rejects_bad_shapes() {
    let dev = emu();
    let b = dev.backend();
    let z = |s: &[usize]| Tensor::zeros(s, &dev).unwrap();
    let err = b
        .linear(&z(&[2, 5]), &z(&[3, 4]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("features"), "{err}");
    let err = b
        .linear(&z(&[2, 4]), &z(&[3, 4]), Some(&z(&[4])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias"), "{err}");
    let err = b
        .linear_backward(&z(&[2, 4]), &z(&[3, 4]), &z(&[2, 4]), LinearNeed::ALL)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dy"), "{err}");
}

#[test]
fn empty_batch_gives_empty_outputs() {
    let dev = emu();
    let b = dev.backend();
    let z = |s: &[usize]| Tensor::zeros(s, &dev).unwrap();
    let p = Conv2dParams::new(2, 1);
    let x = z(&[0, 3, 8, 8]);
    let w = z(&[4, 3, 4, 4]);
    let dy = z(&[0, 4, 4, 4]);
    assert_eq!(b.conv2d(&x, &w, p).unwrap().shape(), [0, 4, 4, 4]);
    assert_eq!(
        b.conv2d_backward_data(&dy, &w, [0, 3, 8, 8], p)
            .unwrap()
            .shape(),
        [0, 3, 8, 8]
    );
    // No pixels: the weight gradient is an empty sum, i.e. zeros.
    let dw = b.conv2d_backward_weight(&x, &dy, [4, 3, 4, 4], p).unwrap();
    assert_eq!(dw.to_vec().unwrap(), vec![0.0; 4 * 3 * 16]);

    let g = b
        .linear_backward(&z(&[0, 5]), &z(&[6, 5]), &z(&[0, 6]), LinearNeed::ALL)
        .unwrap();
    assert_eq!(g.dx.unwrap().shape(), [0, 5]);
    assert_eq!(g.dw.unwrap().to_vec().unwrap(), vec![0.0; 30]);
    assert_eq!(g.db.unwrap().to_vec().unwrap(), vec![0.0; 6]);
    assert_eq!(
        b.linear(&z(&[0, 5]), &z(&[6, 5]), None).unwrap().shape(),
        [0, 6]
    );
}
