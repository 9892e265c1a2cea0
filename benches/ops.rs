//! Side-by-side op benchmarks, ours vs libtorch (feature `libtorch`), on the shapes of DCGAN-64 at batch 64:
//! - every conv / conv-transpose layer: forward, input gradient (`bwd_data`), weight gradient (`bwd_weight`);
//! - batch norm, training mode, forward + backward, at the four G widths (D's BN layers have the same shapes);
//! - each batch-normed layer's training forward, convolution + batch norm + activation, with and without the
//!   convolution gathering batch norm's statistics;
//! - LeakyReLU(0.2) forward and backward on D1's output, the largest activation;
//! - fused BCE-with-logits (loss and its gradient) on D's logits;
//! - Adam (lr 2e-4, β 0.5 / 0.999) over all of G's parameters;
//! - a 1024³ GEMM (`linear`), the attainable matrix-multiply rate of the device, for reading the others.
//!
//! Groups are `"<device> <op> <shape> b<batch>"`, functions `ours` / `libtorch`; conv and GEMM groups carry
//! their FLOPs as criterion throughput (Gelem/s reads as GFLOP/s). CUDA groups run only when a GPU opens.
//! GAN_BENCH_BATCH overrides the batch (the ids say which was used).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use gan_engine::backend::{
    Activation, AdamHyper, AdamSlot, BatchNormAffine, BatchNormSaved, FusedOut, RunningStatsMut,
};
use gan_engine::ops::gradcheck::test_tensor;
use gan_engine::Tensor;

use common::dcgan::{ConvLayer, Dcgan};
use common::Ours;

fn batch() -> usize {
    std::env::var("GAN_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// A deterministic test tensor on `ours`'s device.
fn input(ours: &Ours, shape: &[usize], seed: u64) -> Tensor {
    test_tensor(shape, seed).to_device(&ours.device).unwrap()
}

#[derive(Clone, Copy)]
enum Pass {
    Fwd,
    BwdData,
    BwdWeight,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::BwdData => "bwd_data",
            Pass::BwdWeight => "bwd_weight",
        }
    }
}

/// One pass of one layer on our backend. A transposed conv with weight [Cin, Cout, k, k] is the adjoint of the
/// conv with that weight read as [O = Cin, C = Cout, k, k]: its forward is that conv's input gradient, its input
/// gradient that conv's forward, and its weight gradient that conv's weight gradient with x and dy swapped.
fn ours_pass(l: &ConvLayer, pass: Pass, x: &Tensor, w: &Tensor, dy: &Tensor) -> Tensor {
    let be = x.backend();
    let p = l.params();
    match (l.transposed, pass) {
        (false, Pass::Fwd) => be.conv2d(x, w, p),
        (false, Pass::BwdData) => be.conv2d_backward_data(dy, w, l.x, p),
        (false, Pass::BwdWeight) => be.conv2d_backward_weight(x, dy, l.w, p),
        (true, Pass::Fwd) => be.conv2d_backward_data(x, w, l.y, p),
        (true, Pass::BwdData) => be.conv2d(dy, w, p),
        (true, Pass::BwdWeight) => be.conv2d_backward_weight(dy, x, l.w, p),
    }
    .unwrap()
}

fn conv_layers(c: &mut Criterion, ours: &Ours) {
    let n = batch();
    let arch = Dcgan::new(64, 3, n);
    for l in arch.g.iter().chain(&arch.d) {
        let x = input(ours, &l.x, 1);
        let w = input(ours, &l.w, 2);
        let dy = input(ours, &l.y, 3);
        #[cfg(feature = "libtorch")]
        let torch = common::torch::device_for(ours).map(|dev| {
            use common::torch::from_ours;
            (
                dev,
                from_ours(&x, dev),
                from_ours(&w, dev),
                from_ours(&dy, dev),
            )
        });
        for pass in [Pass::Fwd, Pass::BwdData, Pass::BwdWeight] {
            let id = format!("{} conv {} {} b{n}", ours.label(), l.label(), pass.name());
            let mut g = c.benchmark_group(id);
            g.sampling_mode(SamplingMode::Flat);
            g.throughput(Throughput::Elements(l.flops()));
            g.bench_function("ours", |b| ours.time(b, || ours_pass(l, pass, &x, &w, &dy)));
            #[cfg(feature = "libtorch")]
            if let Some((dev, tx, tw, tdy)) = &torch {
                use common::torch::{conv_backward, time};
                let (s, p, t) = (l.stride as i64, l.pad as i64, l.transposed);
                g.bench_function("libtorch", |b| {
                    time(*dev, b, || match (t, pass) {
                        (false, Pass::Fwd) => tx.conv2d::<tch::Tensor>(tw, None, s, p, 1, 1),
                        (true, Pass::Fwd) => {
                            tx.conv_transpose2d::<tch::Tensor>(tw, None, s, p, 0, 1, 1)
                        }
                        (_, Pass::BwdData) => conv_backward(tdy, tx, tw, l.stride, l.pad, t, 0),
                        (_, Pass::BwdWeight) => conv_backward(tdy, tx, tw, l.stride, l.pad, t, 1),
                    })
                });
            }
            g.finish();
        }
    }
}

fn batch_norm(c: &mut Criterion, ours: &Ours) {
    let n = batch();
    let arch = Dcgan::new(64, 3, n);
    // The outputs of G1..G4, each followed by BN (D2..D4's outputs repeat three of these shapes).
    for l in &arch.g[..arch.g.len() - 1] {
        let shape = l.y;
        let ch = shape[1];
        let x = input(ours, &shape, 4);
        let dy = input(ours, &shape, 5);
        let gamma = Tensor::full(&[ch], 1.0, &ours.device).unwrap();
        let beta = Tensor::zeros(&[ch], &ours.device).unwrap();
        let mut rm = Tensor::zeros(&[ch], &ours.device).unwrap();
        let mut rv = Tensor::full(&[ch], 1.0, &ours.device).unwrap();
        let [_, c1, h, w] = shape;
        // Plain, then with D's LeakyReLU(0.2) after it: ours fused into batch norm's passes, libtorch's two
        // ops (what autograd runs for nn.BatchNorm2d then nn.LeakyReLU(0.2)).
        for act in [None, Some(Activation::LeakyRelu(0.2))] {
            let what = if act.is_some() {
                "batchnorm+leaky_relu"
            } else {
                "batchnorm"
            };
            let mut g = c.benchmark_group(format!(
                "{} {what} train fwd+bwd {c1}x{h}x{w} b{n}",
                ours.label()
            ));
            g.bench_function("ours", |b| {
                ours.time(b, || {
                    let be = x.backend();
                    let o = be
                        .batch_norm_train(
                            &x,
                            BatchNormAffine::new(&gamma, &beta, 1e-5),
                            RunningStatsMut::new(&mut rm, &mut rv, 0.1),
                            act,
                        )
                        .unwrap();
                    let out_act = act.map(|act| FusedOut {
                        y: &o.y,
                        beta: &beta,
                        act,
                    });
                    be.batch_norm_backward(
                        BatchNormSaved {
                            out_act,
                            ..BatchNormSaved::new(&x, &gamma, &o)
                        },
                        &dy,
                    )
                    .unwrap()
                })
            });
            #[cfg(feature = "libtorch")]
            if let Some(dev) = common::torch::device_for(ours) {
                use common::torch::{batch_norm_backward, batch_norm_train, from_ours, time};
                let (tx, tdy) = (from_ours(&x, dev), from_ours(&dy, dev));
                let (tgamma, tbeta) = (from_ours(&gamma, dev), from_ours(&beta, dev));
                let (mut trm, mut trv) = (from_ours(&rm, dev), from_ours(&rv, dev));
                g.bench_function("libtorch", |b| {
                    time(dev, b, || {
                        let saved =
                            batch_norm_train(&tx, &tgamma, &tbeta, &mut trm, &mut trv, 0.1, 1e-5);
                        if act.is_none() {
                            return batch_norm_backward(
                                &tdy,
                                &tx,
                                &tgamma,
                                (&trm, &trv),
                                &saved,
                                1e-5,
                            );
                        }
                        let _z = common::torch::leaky_relu(&saved[0], 0.2);
                        // Autograd's backward for the out-of-place LeakyReLU reads its saved input.
                        let dz = saved[0].leaky_relu_backward(&tdy, 0.2, false);
                        batch_norm_backward(&dz, &tx, &tgamma, (&trm, &trv), &saved, 1e-5)
                    })
                });
            }
            g.finish();
        }
    }
}

/// A batch-normed layer's training forward as the models run it: the convolution, then batch norm with the
/// layer's activation (G: ReLU, D: LeakyReLU(0.2)). `ours`: the convolution gathers batch norm's statistics as
/// it writes its output (`*_with_stats`, `batch_norm_train_from_parts`); `ours_unfused`: batch norm reads them
/// off the output; libtorch: conv, BatchNorm2d, activation. Groups "<device> layer conv+bn+act <layer> b<n>".
fn conv_bn_act(c: &mut Criterion, ours: &Ours) {
    let n = batch();
    let arch = Dcgan::new(64, 3, n);
    let (g, d) = (&arch.g[..arch.g.len() - 1], &arch.d[1..arch.d.len() - 1]);
    for (l, act) in g
        .iter()
        .map(|l| (l, Activation::Relu))
        .chain(d.iter().map(|l| (l, Activation::LeakyRelu(0.2))))
    {
        let (x, w) = (input(ours, &l.x, 8), input(ours, &l.w, 9));
        let ch = l.y[1];
        let gamma = Tensor::full(&[ch], 1.0, &ours.device).unwrap();
        let beta = Tensor::zeros(&[ch], &ours.device).unwrap();
        let mut rm = Tensor::zeros(&[ch], &ours.device).unwrap();
        let mut rv = Tensor::full(&[ch], 1.0, &ours.device).unwrap();
        let be = x.backend();
        let p = l.params();
        let mut g = c.benchmark_group(format!(
            "{} layer conv+bn+act {} b{n}",
            ours.label(),
            l.label()
        ));
        g.sampling_mode(SamplingMode::Flat);
        for gather in [true, false] {
            let name = if gather { "ours" } else { "ours_unfused" };
            g.bench_function(name, |b| {
                ours.time(b, || {
                    let (y, parts) = match (l.transposed, gather) {
                        (false, true) => be.conv2d_with_stats(&x, &w, p).unwrap(),
                        (true, true) => be.conv2d_backward_data_with_stats(&x, &w, l.y, p).unwrap(),
                        (false, false) => (be.conv2d(&x, &w, p).unwrap(), None),
                        (true, false) => (be.conv2d_backward_data(&x, &w, l.y, p).unwrap(), None),
                    };
                    let affine = BatchNormAffine::new(&gamma, &beta, 1e-5);
                    let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1);
                    match &parts {
                        Some(parts) => {
                            be.batch_norm_train_from_parts(&y, parts, affine, running, Some(act))
                        }
                        None => be.batch_norm_train(&y, affine, running, Some(act)),
                    }
                    .unwrap()
                })
            });
        }
        #[cfg(feature = "libtorch")]
        if let Some(dev) = common::torch::device_for(ours) {
            use common::torch::{batch_norm_train, from_ours, leaky_relu, time};
            let (tx, tw) = (from_ours(&x, dev), from_ours(&w, dev));
            let (tgamma, tbeta) = (from_ours(&gamma, dev), from_ours(&beta, dev));
            let (mut trm, mut trv) = (from_ours(&rm, dev), from_ours(&rv, dev));
            let (s, pad) = (l.stride as i64, l.pad as i64);
            g.bench_function("libtorch", |b| {
                time(dev, b, || {
                    let y = match l.transposed {
                        false => tx.conv2d::<tch::Tensor>(&tw, None, s, pad, 1, 1),
                        true => tx.conv_transpose2d::<tch::Tensor>(&tw, None, s, pad, 0, 1, 1),
                    };
                    let saved =
                        batch_norm_train(&y, &tgamma, &tbeta, &mut trm, &mut trv, 0.1, 1e-5);
                    match act {
                        Activation::LeakyRelu(a) => leaky_relu(&saved[0], a as f64),
                        _ => saved[0].relu(),
                    }
                })
            });
        }
        g.finish();
    }
}

fn leaky_relu(c: &mut Criterion, ours: &Ours) {
    let n = batch();
    let shape = Dcgan::new(64, 3, n).d[0].y;
    let [_, ch, h, w] = shape;
    let act = Activation::LeakyRelu(0.2);
    let x = input(ours, &shape, 6);
    let dy = input(ours, &shape, 7);
    let y = x.backend().activation(&x, act).unwrap();
    #[cfg(feature = "libtorch")]
    let torch = common::torch::device_for(ours).map(|dev| {
        use common::torch::from_ours;
        (dev, from_ours(&x, dev), from_ours(&dy, dev))
    });

    let mut g = c.benchmark_group(format!("{} leaky_relu fwd {ch}x{h}x{w} b{n}", ours.label()));
    g.bench_function("ours", |b| {
        ours.time(b, || x.backend().activation(&x, act).unwrap())
    });
    #[cfg(feature = "libtorch")]
    if let Some((dev, tx, _)) = &torch {
        g.bench_function("libtorch", |b| {
            common::torch::time(*dev, b, || common::torch::leaky_relu(tx, 0.2))
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("{} leaky_relu bwd {ch}x{h}x{w} b{n}", ours.label()));
    g.bench_function("ours", |b| {
        ours.time(b, || x.backend().activation_backward(&y, &dy, act).unwrap())
    });
    #[cfg(feature = "libtorch")]
    if let Some((dev, tx, tdy)) = &torch {
        // What autograd runs for the out-of-place nn.LeakyReLU(0.2): the kernel reads the saved input.
        g.bench_function("libtorch", |b| {
            common::torch::time(*dev, b, || tx.leaky_relu_backward(tdy, 0.2, false))
        });
    }
    g.finish();
}

fn bce(c: &mut Criterion, ours: &Ours) {
    let n = batch();
    let logits = input(ours, &[n], 8);
    let mut g = c.benchmark_group(format!("{} bce_with_logits fwd+bwd b{n}", ours.label()));
    g.bench_function("ours", |b| {
        ours.time(b, || {
            logits.backend().bce_with_logits(&logits, 1.0).unwrap()
        })
    });
    #[cfg(feature = "libtorch")]
    if let Some(dev) = common::torch::device_for(ours) {
        // The loss and d(loss)/d(logits), as PyTorch gets them: BCEWithLogitsLoss forward, then autograd.
        let tl = common::torch::from_ours(&logits, dev).set_requires_grad(true);
        let target = tch::Tensor::ones([n as i64], (tch::Kind::Float, dev));
        g.bench_function("libtorch", |b| {
            common::torch::time(dev, b, || {
                let loss = tl.binary_cross_entropy_with_logits::<tch::Tensor>(
                    &target,
                    None,
                    None,
                    tch::Reduction::Mean,
                );
                let grad = tch::Tensor::run_backward(&[&loss], &[&tl], false, false);
                (loss, grad)
            })
        });
    }
    g.finish();
}

fn adam(c: &mut Criterion, ours: &Ours) {
    // G's parameters: every ConvT weight, then BN γ and β of the four BN layers.
    let arch = Dcgan::new(64, 3, 1);
    let mut shapes: Vec<Vec<usize>> = arch.g.iter().map(|l| l.w.to_vec()).collect();
    for l in &arch.g[..arch.g.len() - 1] {
        shapes.push(vec![l.y[1]]);
        shapes.push(vec![l.y[1]]);
    }
    let count: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let mut params: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| input(ours, s, 100 + i as u64))
        .collect();
    let grads: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| input(ours, s, 200 + i as u64))
        .collect();
    let zeros = |s: &Vec<usize>| Tensor::zeros(s, &ours.device).unwrap();
    let mut m: Vec<Tensor> = shapes.iter().map(zeros).collect();
    let mut v: Vec<Tensor> = shapes.iter().map(zeros).collect();
    let mut step = 0u64;
    let mut g = c.benchmark_group(format!(
        "{} adam G params ({:.2}M)",
        ours.label(),
        count as f64 / 1e6
    ));
    g.bench_function("ours", |b| {
        ours.time(b, || {
            step += 1;
            let mut slots: Vec<AdamSlot> = params
                .iter_mut()
                .zip(&grads)
                .zip(m.iter_mut().zip(v.iter_mut()))
                .map(|((param, grad), (m, v))| AdamSlot { param, grad, m, v })
                .collect();
            let h = AdamHyper {
                lr: 2e-4,
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                step,
            };
            ours.device.backend().adam_step(&mut slots, h).unwrap()
        })
    });
    #[cfg(feature = "libtorch")]
    if let Some(dev) = common::torch::device_for(ours) {
        let (_vs, mut opt) = common::torch::adam_over(&shapes, dev);
        g.bench_function("libtorch", |b| common::torch::time(dev, b, || opt.step()));
    }
    g.finish();
}

fn gemm(c: &mut Criterion, ours: &Ours) {
    let k = 1024;
    let x = input(ours, &[k, k], 9);
    let w = input(ours, &[k, k], 10);
    let mut g = c.benchmark_group(format!("{} gemm {k}x{k}x{k} (linear)", ours.label()));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(2 * (k * k * k) as u64));
    g.bench_function("ours", |b| {
        ours.time(b, || x.backend().linear(&x, &w, None).unwrap())
    });
    #[cfg(feature = "libtorch")]
    if let Some(dev) = common::torch::device_for(ours) {
        let (tx, tw) = (
            common::torch::from_ours(&x, dev),
            common::torch::from_ours(&w, dev),
        );
        g.bench_function("libtorch", |b| {
            common::torch::time(dev, b, || tx.linear::<tch::Tensor>(&tw, None))
        });
    }
    g.finish();
}

/// The CPU's measured f32 FMA peak (benches/common/peak.rs): the denominator of "% of peak".
fn cpu_peak(c: &mut Criterion) {
    let iters = 2_000_000;
    let mut g = c.benchmark_group("cpu peak fma f32");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(common::peak::flops(iters)));
    g.bench_function("ours", |b| b.iter(|| common::peak::run(iters)));
    g.finish();
}

fn all(c: &mut Criterion) {
    for ours in common::devices() {
        if ours.cuda.is_none() {
            cpu_peak(c);
        }
        gemm(c, &ours);
        conv_layers(c, &ours);
        batch_norm(c, &ours);
        conv_bn_act(c, &ours);
        leaky_relu(c, &ours);
        bce(c, &ours);
        adam(c, &ours);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = all
}
criterion_main!(benches);
