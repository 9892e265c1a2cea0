//! The CPU backend gives the same bits whatever the size of rayon's pool, so a run resumed with another
//! RAYON_NUM_THREADS (or on a machine with another core count) continues exactly as it would have.
//!
//! Every op that reduces (convolutions in all three directions, batch norm, linear, the loss, the sum) runs at
//! DCGAN-like and awkward shapes inside pools of 1, 2, 3, 5 and 8 threads, and each result must equal the
//! 1-thread result bit for bit.

use gan_engine::backend::{
    Activation, BatchNormAffine, BatchNormSaved, Conv2dParams, LinearNeed, RunningStatsMut,
};
use gan_engine::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::bits;

const POOLS: [usize; 4] = [2, 3, 5, 8];

fn cpu() -> Device {
    Device::parse("cpu").unwrap()
}

fn tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    cpu().backend().from_host(&v, shape).unwrap()
}

/// Runs `f` in a pool of each size; adds to `differ` each result that differs from the 1-thread one.
fn same_in_every_pool(differ: &mut Vec<String>, what: &str, f: impl Fn() -> Vec<Vec<u32>> + Sync) {
    let in_pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(&f)
    };
    let want = in_pool(1);
    for n in POOLS {
        let got = in_pool(n);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if let Some(e) = g.iter().zip(w).position(|(a, b)| a != b) {
                differ.push(format!("{what}: output {i} with {n} threads (element {e})"));
            }
        }
    }
}

fn assert_none(differ: Vec<String>) {
    assert!(
        differ.is_empty(),
        "differ from the 1-thread result:\n{}",
        differ.join("\n")
    );
}

/// (x shape, weight shape, stride, padding): DCGAN-64's layers at batch 16, and awkward ones.
const CONVS: &[([usize; 4], [usize; 4], usize, usize)] = &[
    ([16, 3, 64, 64], [64, 3, 4, 4], 2, 1),
    ([16, 64, 32, 32], [128, 64, 4, 4], 2, 1),
    ([16, 256, 8, 8], [512, 256, 4, 4], 2, 1),
    ([16, 512, 4, 4], [1, 512, 4, 4], 1, 0),
    ([16, 100, 1, 1], [100, 512, 4, 4], 1, 0),
    ([7, 5, 13, 11], [6, 5, 3, 3], 1, 1),
    ([33, 3, 9, 9], [4, 3, 4, 4], 2, 2),
    ([1, 8, 147, 147], [16, 8, 3, 3], 1, 0),
];

#[test]
fn convolutions_do_not_depend_on_the_thread_count() {
    let mut differ = vec![];
    for &(xs, ws, s, p) in CONVS {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = Conv2dParams::new(s, p);
        let (x, w) = (tensor(&mut rng, &xs), tensor(&mut rng, &ws));
        let cpu = cpu();
        let b = cpu.backend();
        // The 1x1-input case is a transposed conv's forward: w is [in, out, k, k] read as a conv's weight.
        if xs[2] == 1 {
            let y_shape = [xs[0], ws[1], ws[2], ws[3]];
            let dy = x.clone();
            same_in_every_pool(
                &mut differ,
                &format!("conv_transpose {xs:?} {ws:?}"),
                || vec![bits(&b.conv2d_backward_data(&dy, &w, y_shape, p).unwrap())],
            );
            continue;
        }
        let y = b.conv2d(&x, &w, p).unwrap();
        let dy = tensor(&mut rng, y.shape());
        same_in_every_pool(&mut differ, &format!("conv {xs:?} {ws:?} s{s}"), || {
            vec![
                bits(&b.conv2d(&x, &w, p).unwrap()),
                bits(&b.conv2d_backward_data(&dy, &w, xs, p).unwrap()),
                bits(&b.conv2d_backward_weight(&x, &dy, ws, p).unwrap()),
            ]
        });
    }
    assert_none(differ);
}

#[test]
fn batch_norm_linear_and_losses_do_not_depend_on_the_thread_count() {
    let mut differ = vec![];
    let cpu = cpu();
    let b = cpu.backend();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for shape in [
        [64usize, 128, 16, 16],
        [16, 512, 4, 4],
        [5, 3, 7, 9],
        [300, 1000, 1, 1],
    ] {
        let c = shape[1];
        let x = tensor(&mut rng, &shape);
        let dy = tensor(&mut rng, &shape);
        let (gamma, beta) = (tensor(&mut rng, &[c]), tensor(&mut rng, &[c]));
        same_in_every_pool(&mut differ, &format!("batch norm {shape:?}"), || {
            let (mut rm, mut rv) = (b.zeros(&[c]).unwrap(), b.zeros(&[c]).unwrap());
            let out = b
                .batch_norm_train(
                    &x,
                    BatchNormAffine::new(&gamma, &beta, 1e-5),
                    RunningStatsMut::new(&mut rm, &mut rv, 0.1),
                    Some(Activation::LeakyRelu(0.2)),
                )
                .unwrap();
            let g = b
                .batch_norm_backward(
                    BatchNormSaved::new(&x, &gamma, &out).fused(
                        &out.y,
                        &beta,
                        Activation::LeakyRelu(0.2),
                    ),
                    &dy,
                )
                .unwrap();
            [
                &out.y,
                &out.mean,
                &out.invstd,
                &rm,
                &rv,
                &g.dx,
                &g.dgamma,
                &g.dbeta,
            ]
            .iter()
            .map(|t| bits(t))
            .collect()
        });
    }
    for (n, i, o) in [(64usize, 784, 1024), (300, 100, 7), (3, 4097, 33)] {
        let (x, w, bias) = (
            tensor(&mut rng, &[n, i]),
            tensor(&mut rng, &[o, i]),
            tensor(&mut rng, &[o]),
        );
        let dy = tensor(&mut rng, &[n, o]);
        same_in_every_pool(&mut differ, &format!("linear {n}x{i}->{o}"), || {
            let g = b.linear_backward(&x, &w, &dy, LinearNeed::ALL).unwrap();
            vec![
                bits(&b.linear(&x, &w, Some(&bias)).unwrap()),
                bits(g.dx.as_ref().unwrap()),
                bits(g.dw.as_ref().unwrap()),
                bits(g.db.as_ref().unwrap()),
            ]
        });
    }
    for n in [1usize, 64, 1000, 100_003] {
        let x = tensor(&mut rng, &[n]);
        same_in_every_pool(&mut differ, &format!("bce and sum n={n}"), || {
            let (loss, grad) = b.bce_with_logits(&x, 1.0).unwrap();
            vec![bits(&loss), bits(&grad), bits(&b.sum(&x).unwrap())]
        });
    }
    assert_none(differ);
}
