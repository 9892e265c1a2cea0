//! The CUDA backend on the CPU emulation runtime against the CPU backend, op by op, on random inputs of awkward
//! sizes (1, 3, 5, 127, 4099, ... — not multiples of 4 / 32, so the float4 paths' scalar tails and partial warps
//! run). Outputs come from the backend's allocator, which fills them with NaN in test builds, so an element a
//! kernel forgets to write fails the comparison. (Convolution, batch norm and linear are in emu_parity_conv.rs.)
//!
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation
//! (scripts/gpu_run.sh does this).
//!
//! Tolerances: ops that are one IEEE operation per element (add, mul, affine, relu, copies, uniform draws) must
//! match bit for bit; transcendental ones (tanh, sigmoid, normal draws, BCE) and reductions (whose summation order
//! differs from the CPU's f64 accumulation) get small relative tolerances.
#![cfg(feature = "emulation")]

use std::sync::Arc;

use gan_engine::backend::{Activation, AdamHyper, AdamSlot, Backend, RmsPropHyper, RmsPropSlot};
use gan_engine::cpu::CPU;
use gan_engine::cuda::runtime::kernels;
use gan_engine::cuda::{cuda_backend, emu, emulated_backend, CudaBackend};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::bits;

const SIZES: &[usize] = &[1, 3, 4, 5, 31, 127, 1000, 4099, 70_001];

fn be() -> Arc<CudaBackend> {
    match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            cuda_backend(0).expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open")
        }
        _ => emulated_backend().expect("the emulated CUDA backend must open"),
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// The same data on the CPU and on the emulated GPU.
fn pair(be: &Arc<CudaBackend>, v: &[f32], shape: &[usize]) -> (Tensor, Tensor) {
    (
        CPU.from_host(v, shape).unwrap(),
        be.from_host(v, shape).unwrap(),
    )
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec().unwrap()
}

fn assert_exact(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (host(got), host(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a == b),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

/// |got - want| <= atol + rtol |want| elementwise; NaN fails.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (host(got), host(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

/// A shape with `n` elements, 1-D or [n/k, k] alternately, to vary the shapes the ops see.
fn shape_for(n: usize, i: usize) -> Vec<usize> {
    if i % 2 == 1 && n.is_multiple_of(5) {
        vec![n / 5, 5]
    } else {
        vec![n]
    }
}

#[test]
fn binary_and_affine_ops_are_bit_exact() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (i, &n) in SIZES.iter().enumerate() {
        let shape = shape_for(n, i);
        let (a, b) = (random(&mut rng, n, 3.0), random(&mut rng, n, 3.0));
        let ((ac, ag), (bc, bg)) = (pair(&be, &a, &shape), pair(&be, &b, &shape));
        assert_exact(
            &format!("add n={n}"),
            &be.add(&ag, &bg).unwrap(),
            &CPU.add(&ac, &bc).unwrap(),
        );
        assert_exact(
            &format!("mul n={n}"),
            &be.mul(&ag, &bg).unwrap(),
            &CPU.mul(&ac, &bc).unwrap(),
        );
        assert_exact(
            &format!("affine n={n}"),
            &be.affine(&ag, -1.37, 0.25).unwrap(),
            &CPU.affine(&ac, -1.37, 0.25).unwrap(),
        );
        let (mut acc_c, mut acc_g) = (ac.clone(), ag.clone());
        CPU.add_assign(&mut acc_c, &bc).unwrap();
        be.add_assign(&mut acc_g, &bg).unwrap();
        assert_exact(&format!("add_assign n={n}"), &acc_g, &acc_c);
        // Copy-on-write: the clone `ag` shared storage with `acc_g` and must be unchanged.
        assert_exact(&format!("add_assign cow n={n}"), &ag, &ac);
        let (mut xc, mut xg) = (ac.clone(), ag.clone());
        CPU.affine_assign(&mut xc, -1.37, 0.25).unwrap();
        be.affine_assign(&mut xg, -1.37, 0.25).unwrap();
        assert_exact(&format!("affine_assign n={n}"), &xg, &xc);
        assert_exact(
            &format!("affine_assign = affine n={n}"),
            &xg,
            &CPU.affine(&ac, -1.37, 0.25).unwrap(),
        );
        assert_exact(&format!("affine_assign cow n={n}"), &ag, &ac);
    }
}

fn launches_of(be: &CudaBackend, kernel: &str) -> u64 {
    let counts = be.runtime().launch_counts();
    counts.iter().find(|(k, _)| *k == kernel).map_or(0, |c| c.1)
}

/// `count` tensors of the SIZES (an empty one among them), random in ±3, on the CPU and on the device.
fn tensor_pairs(
    be: &Arc<CudaBackend>,
    rng: &mut ChaCha8Rng,
    count: usize,
) -> Vec<(Tensor, Tensor)> {
    let mut sizes: Vec<usize> = SIZES.to_vec();
    sizes.insert(3, 0);
    sizes
        .iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(i, &n)| pair(be, &random(rng, n, 3.0), &shape_for(n, i)))
        .collect()
}

/// The gradient sums of a step in one launch per 64 pairs: the same bits as `add` pair by pair, for sizes that
/// end inside a chunk and on a vector boundary or not, an empty tensor in the list, and more pairs than one launch
/// takes.
#[test]
fn add_each_matches_add_pair_by_pair_in_one_launch_per_64() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut sizes: Vec<usize> = SIZES.to_vec();
    sizes.insert(3, 0);
    let sizes: Vec<usize> = sizes.iter().cycle().take(70).copied().collect();
    let data: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let shape = shape_for(n, i);
            let (a, b) = (random(&mut rng, n, 3.0), random(&mut rng, n, 3.0));
            (pair(&be, &a, &shape), pair(&be, &b, &shape))
        })
        .collect();
    for count in [1, 9, 64, 70] {
        let cpu: Vec<_> = data[..count]
            .iter()
            .map(|((ac, _), (bc, _))| (ac, bc))
            .collect();
        let dev: Vec<_> = data[..count]
            .iter()
            .map(|((_, ag), (_, bg))| (ag, bg))
            .collect();
        let before = launches_of(&be, "add_list_f32");
        let got = be.add_each(&dev).unwrap();
        let launched = launches_of(&be, "add_list_f32") - before;
        assert_eq!(launched, count.div_ceil(64) as u64, "{count} pairs");
        let want = CPU.add_each(&cpu).unwrap();
        assert_eq!(got.len(), count);
        for (i, ((g, w), (a, b))) in got.iter().zip(&want).zip(&cpu).enumerate() {
            assert_exact(&format!("add_each of {count}, pair {i}"), g, w);
            assert_exact(&format!("add of pair {i}"), w, &CPU.add(a, b).unwrap());
        }
    }
    let (x, y) = (be.zeros(&[3]).unwrap(), be.zeros(&[4]).unwrap());
    let err = be.add_each(&[(&x, &x), (&x, &y)]).unwrap_err();
    assert!(format!("{err}").contains("add_each"), "{err}");
}

/// fp16's unscale of every gradient in one launch per 64 tensors: the same bits as the CPU's affine(g, 1/scale,
/// 0), and the overflow flag raised by any Inf or NaN result (an Inf planted, a NaN planted, a product that
/// overflows) and by nothing else.
#[test]
fn unscale_grads_matches_the_cpu_and_flags_any_non_finite_result() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let data = tensor_pairs(&be, &mut rng, 70);
    let inv = 1.0 / 1024.0;
    for count in [0, 1, 10, 64, 70] {
        let cpu: Vec<&Tensor> = data[..count].iter().map(|(c, _)| c).collect();
        let dev: Vec<&Tensor> = data[..count].iter().map(|(_, g)| g).collect();
        let before = launches_of(&be, "unscale_list_f32");
        let (got, found) = be.unscale_grads(&dev, inv).unwrap();
        let launched = launches_of(&be, "unscale_list_f32") - before;
        assert_eq!(launched, count.div_ceil(64) as u64, "{count} tensors");
        let (want, want_found) = CPU.unscale_grads(&cpu, inv).unwrap();
        assert!(!found && !want_found, "{count} finite tensors flagged");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_exact(&format!("unscale of {count}, tensor {i}"), g, w);
            assert_exact(
                &format!("cpu unscale {i}"),
                w,
                &CPU.affine(cpu[i], inv, 0.0).unwrap(),
            );
        }
    }
    // Rounded as affine rounds inv·g + 0: a −0 gradient comes out +0 on both backends (assert_exact takes ±0
    // as equal, so the bits are compared here).
    let z = [-0.0f32, 0.0, -1.0];
    let (zc, zg) = pair(&be, &z, &[3]);
    let got = bits(&be.unscale_grads(&[&zg], inv).unwrap().0[0]);
    assert_eq!(got, bits(&CPU.unscale_grads(&[&zc], inv).unwrap().0[0]));
    assert_eq!(got[0], 0.0f32.to_bits(), "-0 unscaled");
    // One bad value in the 40th tensor (4099 elements, the last of its chunks) flags the whole list.
    let n = data[40].0.numel();
    for (bad, scale) in [(f32::INFINITY, inv), (f32::NAN, inv), (3.0e38, 16.0)] {
        let mut v = data[40].0.to_vec().unwrap();
        v[n - 1] = bad;
        let planted = be.from_host(&v, data[40].1.shape()).unwrap();
        let mut dev: Vec<&Tensor> = data.iter().map(|(_, g)| g).collect();
        dev[40] = &planted;
        let (_, found) = be.unscale_grads(&dev, scale).unwrap();
        assert!(found, "{bad} times {scale} not flagged");
        let cpu_planted = CPU.from_host(&v, data[40].0.shape()).unwrap();
        let mut cpu: Vec<&Tensor> = data.iter().map(|(c, _)| c).collect();
        cpu[40] = &cpu_planted;
        assert!(
            CPU.unscale_grads(&cpu, scale).unwrap().1,
            "cpu: {bad} times {scale}"
        );
    }
}

#[test]
fn sum_matches_f64_reference() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &n in SIZES.iter().chain(&[1_000_003]) {
        let a = random(&mut rng, n, 2.0);
        let (ac, ag) = pair(&be, &a, &[n]);
        let got = be.sum(&ag).unwrap();
        let want = CPU.sum(&ac).unwrap();
        assert_eq!(got.shape(), &[1]);
        let abs_sum: f32 = a.iter().map(|x| x.abs()).sum();
        assert_close(&format!("sum n={n}"), &got, &want, 0.0, 2e-6 * abs_sum);
        // Deterministic: the same input gives the same bits.
        assert_exact(&format!("sum repeat n={n}"), &be.sum(&ag).unwrap(), &got);
    }
}

#[test]
fn powf_matches_the_cpu_within_an_ulp_or_two() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &n in SIZES {
        // Positive bases (the gradient penalty's sums of squares), zero included.
        let mut a: Vec<f32> = random(&mut rng, n, 3.0).iter().map(|x| x.abs()).collect();
        a[0] = 0.0;
        let (ac, ag) = pair(&be, &a, &[n]);
        for p in [0.5, -0.5, 2.0, -1.5] {
            let got = be.powf(&ag, p).unwrap();
            let want = CPU.powf(&ac, p).unwrap();
            let (g, w) = (host(&got), host(&want));
            assert_eq!(w[0], 0f32.powf(p), "powf(0, {p})");
            for (i, (x, y)) in g.iter().zip(&w).enumerate() {
                let same = x == y || (x - y).abs() <= 2.5e-7 * y.abs();
                assert!(same, "powf n={n} p={p} [{i}] = powf({}): {x} vs {y}", a[i]);
            }
        }
    }
}

#[test]
fn activations_forward_and_backward() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let acts = [
        (Activation::Relu, 0.0),
        (Activation::LeakyRelu(0.2), 0.0),
        (Activation::LeakyRelu(0.0), 0.0),
        (Activation::Tanh, 2e-6),
        (Activation::Sigmoid, 2e-6),
    ];
    for (i, &n) in SIZES.iter().enumerate() {
        let shape = shape_for(n, i);
        let mut x = random(&mut rng, n, 6.0);
        x[0] = 0.0; // the kink of relu / leaky relu
        let dy = random(&mut rng, n, 1.0);
        let ((xc, xg), (dyc, dyg)) = (pair(&be, &x, &shape), pair(&be, &dy, &shape));
        for (act, tol) in acts {
            let (yc, yg) = (
                CPU.activation(&xc, act).unwrap(),
                be.activation(&xg, act).unwrap(),
            );
            let (dxc, dxg) = (
                CPU.activation_backward(&yc, &dyc, act).unwrap(),
                // Backward from the *CPU's* y, so only the backward kernel is compared.
                be.activation_backward(&be.from_host(&host(&yc), &shape).unwrap(), &dyg, act)
                    .unwrap(),
            );
            let what = format!("{act:?} n={n}");
            if tol == 0.0 {
                assert_exact(&format!("{what} fwd"), &yg, &yc);
                assert_exact(&format!("{what} bwd"), &dxg, &dxc);
            } else {
                assert_close(&format!("{what} fwd"), &yg, &yc, tol, tol);
                assert_close(&format!("{what} bwd"), &dxg, &dxc, tol, tol);
            }
        }
    }
}

#[test]
fn bce_with_logits_loss_and_grad() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for &n in SIZES {
        let mut x = random(&mut rng, n, 8.0);
        if n > 3 {
            x[1] = 60.0;
            x[2] = -60.0; // exp would overflow in a naive formula
        }
        let (xc, xg) = pair(&be, &x, &[n, 1]);
        for target in [0.0, 1.0, 0.9] {
            let (lc, gc) = CPU.bce_with_logits(&xc, target).unwrap();
            let (lg, gg) = be.bce_with_logits(&xg, target).unwrap();
            assert_close(&format!("bce loss n={n} t={target}"), &lg, &lc, 2e-6, 1e-7);
            // Gradients are (σ - t)/n: compare on the scale of 1/n.
            assert_close(
                &format!("bce grad n={n} t={target}"),
                &gg,
                &gc,
                1e-6,
                1e-7 / n as f32,
            );
        }
    }
    assert!(be
        .bce_with_logits(&be.from_host(&[0.0], &[1]).unwrap(), 1.5)
        .is_err());
}

#[test]
fn philox_draws_match_the_cpu_stream() {
    let be = be();
    for (i, &n) in SIZES.iter().enumerate() {
        let shape = shape_for(n, i);
        for (seed, offset) in [
            (0u64, 0u64),
            (42, 7),
            (0x1234_5678_9abc_def0, u32::MAX as u64 - 3),
        ] {
            let what = format!("n={n} seed={seed:#x} offset={offset}");
            assert_exact(
                &format!("uniform {what}"),
                &be.rand_uniform(&shape, -2.0, 3.0, seed, offset).unwrap(),
                &CPU.rand_uniform(&shape, -2.0, 3.0, seed, offset).unwrap(),
            );
            assert_close(
                &format!("normal {what}"),
                &be.randn(&shape, 0.5, 2.0, seed, offset).unwrap(),
                &CPU.randn(&shape, 0.5, 2.0, seed, offset).unwrap(),
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn concat_and_slice_channels() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for shape_tail in [vec![], vec![3, 5], vec![1, 7]] {
        let n = 3;
        let chans = [1usize, 4, 3];
        let mut cpu_in = Vec::new();
        let mut gpu_in = Vec::new();
        for &c in &chans {
            let mut shape = vec![n, c];
            shape.extend(&shape_tail);
            let v = random(&mut rng, shape.iter().product(), 1.0);
            let (tc, tg) = pair(&be, &v, &shape);
            cpu_in.push(tc);
            gpu_in.push(tg);
        }
        let yc = CPU
            .concat_channels(&cpu_in.iter().collect::<Vec<_>>())
            .unwrap();
        let yg = be
            .concat_channels(&gpu_in.iter().collect::<Vec<_>>())
            .unwrap();
        assert_exact(&format!("concat tail={shape_tail:?}"), &yg, &yc);
        for (start, len) in [(0, 8), (1, 4), (5, 3), (7, 1), (2, 0)] {
            assert_exact(
                &format!("slice {start}+{len} tail={shape_tail:?}"),
                &be.slice_channels(&yg, start, len).unwrap(),
                &CPU.slice_channels(&yc, start, len).unwrap(),
            );
        }
        assert!(be.slice_channels(&yg, 6, 3).is_err());
    }
    let a = be.zeros(&[2, 3, 4]).unwrap();
    let b = be.zeros(&[3, 3, 4]).unwrap();
    assert!(be.concat_channels(&[&a, &b]).is_err());
}

/// One Adam slot per tensor of parallel lists.
fn adam_slots<'a>(
    p: &'a mut [Tensor],
    g: &'a [Tensor],
    m: &'a mut [Tensor],
    v: &'a mut [Tensor],
) -> Vec<AdamSlot<'a>> {
    p.iter_mut()
        .zip(g)
        .zip(m.iter_mut().zip(v.iter_mut()))
        .map(|((param, grad), (m, v))| AdamSlot { param, grad, m, v })
        .collect()
}

/// Adam with its step counter and bias corrections on the device (what a captured training step uses) against
/// the host's corrections, bit for bit, at small and large step counts (β2^t underflows its way to 1 − β2^t = 1).
#[test]
fn adam_counting_on_the_device_matches_the_host_corrections_exactly() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let shapes = [vec![7], vec![4099], vec![0], vec![3, 5]];
    let numel = |s: &Vec<usize>| s.iter().product::<usize>();
    for (done, lr, beta1, beta2) in [
        (0u64, 2e-4f32, 0.5, 0.999),
        (997, 1e-3, 0.9, 0.999),
        (99_995, 2e-4, 0.5, 0.999),
        (3, 0.1, 0.0, 0.0),
    ] {
        let init: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| random(&mut rng, numel(s), 1.0))
            .collect();
        let mk = |init: &[Vec<f32>]| -> Vec<Tensor> {
            init.iter()
                .zip(&shapes)
                .map(|(v, s)| be.from_host(v, s).unwrap())
                .collect()
        };
        let zeros = || -> Vec<Tensor> { shapes.iter().map(|s| be.zeros(s).unwrap()).collect() };
        let (mut ph, mut mh, mut vh) = (mk(&init), zeros(), zeros());
        let (mut pd, mut md, mut vd) = (mk(&init), zeros(), zeros());
        let schedule = gan_engine::cuda::optim::AdamSchedule::new(&be, done).unwrap();
        for step in done + 1..=done + 5 {
            let h = AdamHyper {
                lr,
                beta1,
                beta2,
                eps: 1e-8,
                weight_decay: 0.0,
                step,
            };
            let grads: Vec<Vec<f32>> = shapes
                .iter()
                .map(|s| random(&mut rng, numel(s), 0.3))
                .collect();
            let g = mk(&grads);
            be.adam_step(&mut adam_slots(&mut ph, &g, &mut mh, &mut vh), h)
                .unwrap();
            // The device counts on its own: a wrong host step here must not matter.
            let h_ignored = AdamHyper { step: 1, ..h };
            gan_engine::cuda::optim::adam_step_scheduled(
                &be,
                &mut adam_slots(&mut pd, &g, &mut md, &mut vd),
                h_ignored,
                &schedule,
            )
            .unwrap();
            for i in 0..shapes.len() {
                let what = format!("t={step} lr={lr} β=({beta1}, {beta2}) tensor {i}");
                assert_exact(&format!("{what} param"), &pd[i], &ph[i]);
                assert_exact(&format!("{what} m"), &md[i], &mh[i]);
                assert_exact(&format!("{what} v"), &vd[i], &vh[i]);
            }
        }
    }
}

#[test]
fn multi_tensor_adam_matches_cpu_over_several_steps() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // Awkward sizes, one larger than a 4096-element chunk (several blocks per tensor), empty ones; 70 tensors, so
    // that a second launch takes the ones past the 64 of a tensor list, a multi-chunk and an empty one among them.
    let mut shapes: Vec<Vec<usize>> = vec![vec![7], vec![5000], vec![3, 3, 3], vec![0], vec![1]];
    shapes.extend((0..60).map(|i| vec![(i * 37) % 50]));
    shapes.extend([vec![4097], vec![0], vec![2, 5], vec![4096], vec![3]]);
    let mk =
        |rng: &mut ChaCha8Rng, s: &Vec<usize>, scale: f32| random(rng, s.iter().product(), scale);
    let init: Vec<Vec<f32>> = shapes.iter().map(|s| mk(&mut rng, s, 1.0)).collect();
    let mut pc: Vec<Tensor> = init
        .iter()
        .zip(&shapes)
        .map(|(v, s)| CPU.from_host(v, s).unwrap())
        .collect();
    let mut pg: Vec<Tensor> = init
        .iter()
        .zip(&shapes)
        .map(|(v, s)| be.from_host(v, s).unwrap())
        .collect();
    let zeros =
        |b: &dyn Backend| -> Vec<Tensor> { shapes.iter().map(|s| b.zeros(s).unwrap()).collect() };
    let (mut mc, mut vc, mut mg, mut vg) = (
        zeros(&CPU),
        zeros(&CPU),
        zeros(be.as_ref()),
        zeros(be.as_ref()),
    );
    for step in 1..=5u64 {
        let h = AdamHyper {
            lr: 2e-3,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if step % 2 == 0 { 0.01 } else { 0.0 },
            step,
        };
        let grads: Vec<Vec<f32>> = shapes.iter().map(|s| mk(&mut rng, s, 0.3)).collect();
        let gc: Vec<Tensor> = grads
            .iter()
            .zip(&shapes)
            .map(|(v, s)| CPU.from_host(v, s).unwrap())
            .collect();
        let gg: Vec<Tensor> = grads
            .iter()
            .zip(&shapes)
            .map(|(v, s)| be.from_host(v, s).unwrap())
            .collect();
        let mut slots_c = adam_slots(&mut pc, &gc, &mut mc, &mut vc);
        CPU.adam_step(&mut slots_c, h).unwrap();
        let mut slots_g = adam_slots(&mut pg, &gg, &mut mg, &mut vg);
        be.adam_step(&mut slots_g, h).unwrap();
        for i in 0..shapes.len() {
            let what = format!("adam step {step} tensor {i}");
            assert_close(&format!("{what} param"), &pg[i], &pc[i], 1e-6, 1e-7);
            assert_close(&format!("{what} m"), &mg[i], &mc[i], 1e-6, 1e-9);
            assert_close(&format!("{what} v"), &vg[i], &vc[i], 1e-6, 1e-12);
        }
    }
    // Refused before any tensor is written: a bad hyper-parameter, and a gradient of the wrong shape in the
    // second tensor list.
    let before: Vec<Vec<f32>> = pg.iter().map(|t| t.to_vec().unwrap()).collect();
    let good = AdamHyper {
        lr: 2e-3,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 6,
    };
    let mut gg: Vec<Tensor> = shapes.iter().map(|s| be.zeros(s).unwrap()).collect();
    for (h, wrong) in [(AdamHyper { beta2: 1.0, ..good }, None), (good, Some(66))] {
        if let Some(i) = wrong {
            gg[i] = be.zeros(&[shapes[i][0] + 1]).unwrap();
        }
        let mut slots = adam_slots(&mut pg, &gg, &mut mg, &mut vg);
        assert!(be.adam_step(&mut slots, h).is_err());
    }
    for (t, b) in pg.iter().zip(&before) {
        assert_eq!(&t.to_vec().unwrap(), b);
    }
}

/// WGAN weight clipping on tensors of awkward sizes, the values spread well beyond the bound so that most
/// elements change (an element the kernel skipped would keep its old, out-of-bound value). NaN passes through.
#[test]
fn clamp_in_place_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut vals: Vec<Vec<f32>> = SIZES.iter().map(|&n| random(&mut rng, n, 1.0)).collect();
    vals[2][1] = f32::NAN;
    vals[3][0] = 0.05; // exactly on the bound
    let mut cpu: Vec<Tensor> = vals
        .iter()
        .map(|v| CPU.from_host(v, &[v.len()]).unwrap())
        .collect();
    let mut gpu: Vec<Tensor> = vals
        .iter()
        .map(|v| be.from_host(v, &[v.len()]).unwrap())
        .collect();
    // A clone sharing storage with a clamped tensor: copy-on-write must leave it alone.
    let before = gpu[5].clone();
    CPU.clamp_(&mut cpu.iter_mut().collect::<Vec<_>>(), -0.05, 0.05)
        .unwrap();
    be.clamp_(&mut gpu.iter_mut().collect::<Vec<_>>(), -0.05, 0.05)
        .unwrap();
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        assert_exact(&format!("clamp tensor {i} (n = {})", SIZES[i]), g, c);
    }
    assert!(host(&gpu[2])[1].is_nan());
    assert_eq!(host(&before), vals[5]);
    assert!(be.clamp_(&mut [&mut gpu[0]], 1.0, -1.0).is_err());
    let mut cpu_t = CPU.from_host(&[1.0], &[1]).unwrap();
    assert!(be.clamp_(&mut [&mut cpu_t], -1.0, 1.0).is_err());
}

/// The generator average (`train --g-ema`) on tensors of awkward sizes: bit for bit the CPU's (an element the
/// kernel skipped would keep its old value), a shared clone left alone, bad arguments refused before anything
/// is written.
#[test]
fn ema_in_place_matches_cpu() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let avg: Vec<Vec<f32>> = SIZES.iter().map(|&n| random(&mut rng, n, 1.0)).collect();
    let x: Vec<Vec<f32>> = SIZES.iter().map(|&n| random(&mut rng, n, 1.0)).collect();
    let on = |b: &dyn Backend, v: &[Vec<f32>]| -> Vec<Tensor> {
        v.iter()
            .map(|v| b.from_host(v, &[v.len()]).unwrap())
            .collect()
    };
    let (mut cpu, mut gpu) = (on(&CPU, &avg), on(&*be, &avg));
    let (xc, xg) = (on(&CPU, &x), on(&*be, &x));
    let before = gpu[5].clone();
    // 0.9 rather than a training decay (0.999): every element moves by many ulps, so a skipped one shows.
    let decay = 0.9;
    CPU.ema_(
        &mut cpu.iter_mut().collect::<Vec<_>>(),
        &xc.iter().collect::<Vec<_>>(),
        decay,
    )
    .unwrap();
    be.ema_(
        &mut gpu.iter_mut().collect::<Vec<_>>(),
        &xg.iter().collect::<Vec<_>>(),
        decay,
    )
    .unwrap();
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        assert_exact(&format!("ema tensor {i} (n = {})", SIZES[i]), g, c);
    }
    assert_eq!(host(&before), avg[5]);
    let kept = host(&gpu[0]);
    assert!(be.ema_(&mut [&mut gpu[0]], &[&xg[0]], 1.5).is_err());
    assert!(be.ema_(&mut [&mut gpu[0]], &[&xg[1]], 0.5).is_err());
    // The second pair's tensor is on the CPU: refused, and the first pair not written either.
    let (g0, rest) = gpu.split_at_mut(1);
    assert!(be
        .ema_(&mut [&mut g0[0], &mut rest[0]], &[&xg[0], &xc[1]], 0.5)
        .is_err());
    assert_eq!(host(&gpu[0]), kept);
}

fn rmsprop_slots<'a>(
    p: &'a mut [Tensor],
    g: &'a [Tensor],
    v: &'a mut [Tensor],
) -> Vec<RmsPropSlot<'a>> {
    p.iter_mut()
        .zip(g)
        .zip(v.iter_mut())
        .map(|((param, grad), square_avg)| RmsPropSlot {
            param,
            grad,
            square_avg,
        })
        .collect()
}

#[test]
fn rmsprop_matches_cpu_over_several_steps() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let shapes: Vec<Vec<usize>> = vec![
        vec![7],
        vec![5000],
        vec![3, 3, 3],
        vec![0],
        vec![1],
        vec![4099],
    ];
    let mk =
        |rng: &mut ChaCha8Rng, s: &Vec<usize>, scale: f32| random(rng, s.iter().product(), scale);
    let init: Vec<Vec<f32>> = shapes.iter().map(|s| mk(&mut rng, s, 1.0)).collect();
    let on = |b: &dyn Backend, vs: &[Vec<f32>]| -> Vec<Tensor> {
        vs.iter()
            .zip(&shapes)
            .map(|(v, s)| b.from_host(v, s).unwrap())
            .collect()
    };
    let (mut pc, mut pg) = (on(&CPU, &init), on(be.as_ref(), &init));
    let zeros =
        |b: &dyn Backend| -> Vec<Tensor> { shapes.iter().map(|s| b.zeros(s).unwrap()).collect() };
    let (mut vc, mut vg) = (zeros(&CPU), zeros(be.as_ref()));
    for step in 1..=5u64 {
        let h = RmsPropHyper {
            lr: 1e-3,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: if step % 2 == 0 { 0.01 } else { 0.0 },
        };
        let grads: Vec<Vec<f32>> = shapes.iter().map(|s| mk(&mut rng, s, 0.3)).collect();
        let (gc, gg) = (on(&CPU, &grads), on(be.as_ref(), &grads));
        CPU.rmsprop_step(&mut rmsprop_slots(&mut pc, &gc, &mut vc), h)
            .unwrap();
        be.rmsprop_step(&mut rmsprop_slots(&mut pg, &gg, &mut vg), h)
            .unwrap();
        for i in 0..shapes.len() {
            let what = format!("rmsprop step {step} tensor {i}");
            assert_close(&format!("{what} param"), &pg[i], &pc[i], 1e-6, 1e-7);
            assert_close(&format!("{what} square_avg"), &vg[i], &vc[i], 1e-6, 1e-12);
        }
    }
    // A shape mismatch is an error that changes nothing.
    let before = host(&pg[0]);
    let bad = be.zeros(&[8]).unwrap();
    let mut v0 = be.zeros(&[7]).unwrap();
    let h = RmsPropHyper {
        lr: 1e-3,
        alpha: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    assert!(be
        .rmsprop_step(
            &mut [RmsPropSlot {
                param: &mut pg[0],
                grad: &bad,
                square_avg: &mut v0
            }],
            h
        )
        .is_err());
    assert_eq!(host(&pg[0]), before);
}

#[test]
fn allocator_reuses_blocks_after_warm_up() {
    let be = be();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = be.from_host(&random(&mut rng, 4099, 1.0), &[4099]).unwrap();
    let step = |x: &Tensor| {
        let y = be.activation(x, Activation::LeakyRelu(0.2)).unwrap();
        let z = be.mul(&y, x).unwrap();
        let (l, g) = be.bce_with_logits(&z, 1.0).unwrap();
        be.sum(&g).unwrap().scalar().unwrap() + l.scalar().unwrap()
    };
    let first = step(&x);
    let warm = be.alloc_stats();
    for _ in 0..3 {
        assert_eq!(step(&x), first, "same inputs, same (deterministic) result");
    }
    let after = be.alloc_stats();
    assert_eq!(
        after.misses, warm.misses,
        "no driver allocations after warm-up"
    );
    assert!(after.hits > warm.hits);
}

#[test]
fn tensors_from_another_device_are_errors() {
    let be = be();
    let other = emulated_backend().unwrap(); // a different backend instance, whichever `be` is
    let cpu = CPU.from_host(&[1.0, 2.0], &[2]).unwrap();
    let mine = be.from_host(&[1.0, 2.0], &[2]).unwrap();
    let theirs = other.from_host(&[1.0, 2.0], &[2]).unwrap();
    assert!(be.add(&mine, &cpu).is_err());
    let e = be.add(&mine, &theirs).unwrap_err();
    assert!(format!("{e}").contains("not on this backend"), "{e}");
    assert!(be.add(&mine, &be.zeros(&[3]).unwrap()).is_err());
}

/// Every Backend method of this file's families once on a fresh backend; then every kernel of
/// elementwise / activation / loss / optim / random / shape must have been launched, and every kernel in
/// kernels/*.cu must exist in the emulation build.
#[test]
fn kernel_coverage() {
    let be = be();
    let x = be
        .from_host(&[0.5, -1.0, 2.0, 3.0, -0.25], &[5, 1])
        .unwrap();
    let mut acc = be.zeros(&[5, 1]).unwrap();
    be.add_assign(&mut acc, &be.add(&x, &x).unwrap()).unwrap();
    be.add_each(&[(&x, &x)]).unwrap();
    be.unscale_grads(&[&x], 0.5).unwrap();
    be.mul(&x, &x).unwrap();
    be.affine(&x, 2.0, 1.0).unwrap();
    be.affine_assign(&mut acc, 2.0, 1.0).unwrap();
    be.sum(&x).unwrap();
    be.powf(&x, 0.5).unwrap();
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
    ] {
        let y = be.activation(&x, act).unwrap();
        be.activation_backward(&y, &x, act).unwrap();
    }
    be.bce_with_logits(&x, 1.0).unwrap();
    be.randn(&[5], 0.0, 1.0, 1, 0).unwrap();
    be.rand_uniform(&[5], 0.0, 1.0, 1, 0).unwrap();
    let c = be.concat_channels(&[&x, &x]).unwrap();
    be.slice_channels(&c, 1, 1).unwrap();
    let (mut p, g, mut m, mut v) = (
        x.clone(),
        x.clone(),
        be.zeros(&[5, 1]).unwrap(),
        be.zeros(&[5, 1]).unwrap(),
    );
    let h = AdamHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let mut slot = [AdamSlot {
        param: &mut p,
        grad: &g,
        m: &mut m,
        v: &mut v,
    }];
    be.adam_step(&mut slot, h).unwrap();
    let schedule = gan_engine::cuda::optim::AdamSchedule::new(&be, 0).unwrap();
    gan_engine::cuda::optim::adam_step_scheduled(&be, &mut slot, h, &schedule).unwrap();
    be.clamp_(&mut [&mut p], -0.1, 0.1).unwrap();
    be.ema_(&mut [&mut m], &[&g], 0.9).unwrap();
    be.rmsprop_step(
        &mut [RmsPropSlot {
            param: &mut p,
            grad: &g,
            square_avg: &mut m,
        }],
        RmsPropHyper {
            lr: 1e-3,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )
    .unwrap();

    let launched = be.runtime().launch_counts();
    let mine = [
        "elementwise",
        "activation",
        "loss",
        "optim",
        "random",
        "shape",
    ];
    let table: Vec<_> = kernels().iter().filter(|k| !k.emu_only).collect();
    let mut missing = Vec::new();
    for k in &table {
        assert!(
            emu::has_kernel(k.name),
            "{} is not in the emulation build",
            k.name
        );
        if mine.contains(&k.module) && !launched.iter().any(|(n, _)| *n == k.name) {
            missing.push(k.name);
        }
    }
    println!(
        "{} kernels compiled into the emulation build ({} in kernels/*.cu, {} emulation tests), {} emulated by this sweep",
        kernels().len(),
        table.len(),
        kernels().len() - table.len(),
        launched.len()
    );
    assert!(
        missing.is_empty(),
        "kernels never launched by their Backend methods: {missing:?}"
    );
}

/// The comparisons above only catch unwritten elements because fresh outputs start as NaN in test builds.
#[test]
fn fresh_outputs_are_poisoned() {
    let be = be();
    for n in [1usize, 5, 4099] {
        assert!(be
            .alloc(&[n])
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .all(|v| v.is_nan()));
        assert!(be
            .alloc_zeros(&[n])
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
    }
}
