//! What a convolution does beside its sums as it writes its output: the batch-norm statistics it gathers
//! (kernels/tile_stats.cuh, the `stats` argument of conv.cu's forward and backward-data kernels), with batch norm
//! from those parts (`bn_train_fwd_f32`); the activation it applies (`act`, act.cuh's `epilogue_act`); and the
//! activation whose backward a backward-data convolution takes over (act.cuh's `epilogue_act_bwd`).
//!
//! For every precision's kernels (the f32 64x64 and 16x128 tiles, the tensor-core 64x128 and 128x128 tiles) and
//! for forward and backward-data (conv_transpose2d) shapes with partial tiles, stride phases of unequal size and
//! phases the grid covers without pixels, the parts must:
//! - count every output value of a channel exactly once;
//! - merge (in f64 here) to the mean and variance of the output the kernel wrote;
//! - give, through `batch_norm_train_from_parts`, the batch norm that `batch_norm_train` computes from the
//!   output itself: the same normalised values, saved statistics, running statistics and batch count.
//!
//! Outputs are poisoned with NaN before the kernels run, so a part a kernel forgets fails.
//! With `GAN_ENGINE_TEST_DEVICE=cuda` the same tests run on the real GPU (cuda:0) instead of the emulation.
#![cfg(feature = "emulation")]

use gan_engine::backend::{
    Activation, Backend, BatchNormAffine, BatchNormOut, Conv2dParams, RunningStatsMut,
};
use gan_engine::cuda::{CudaBackend, Precision};
use gan_engine::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::backend::{launches, under_test as backend};

const PRECISIONS: [Precision; 4] = [
    Precision::F32,
    Precision::Tf32,
    Precision::Bf16,
    Precision::Fp16,
];

/// Values in [lo, hi): an offset keeps the channel means away from zero, so a mean taken about the wrong
/// centre or a lost part shows in the variance.
fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

fn tensor(be: &CudaBackend, v: &[f32], shape: &[usize]) -> Tensor {
    be.from_host(v, shape).unwrap()
}

/// Per channel of y [N, C, H, W]: (mean, biased variance) in f64, two passes.
fn channel_stats(y: &[f32], shape: &[usize]) -> Vec<(f64, f64)> {
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    let m = (n * hw) as f64;
    (0..c)
        .map(|ch| {
            let vals = (0..n).flat_map(|i| y[(i * c + ch) * hw..][..hw].iter().map(|&v| v as f64));
            let mean = vals.clone().sum::<f64>() / m;
            let var = vals.map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
            (mean, var)
        })
        .collect()
}

/// Checks the parts [C, T, 3] against the output y they describe: counts add up to N*H*W, and the merged
/// mean and variance match y's within f32 rounding of sums over a tile.
fn check_parts(what: &str, y: &Tensor, parts: &Tensor) {
    let shape = y.shape().to_vec();
    let (c, m) = (shape[1], shape[0] * shape[2] * shape[3]);
    let t = parts.shape()[1];
    assert_eq!(parts.shape(), [c, t, 3], "{what}: parts shape");
    let p = parts.to_vec().unwrap();
    let want = channel_stats(&y.to_vec().unwrap(), &shape);
    for (ch, &(mean, var)) in want.iter().enumerate() {
        let part = |i: usize| &p[(ch * t + i) * 3..][..3];
        let count: f64 = (0..t).map(|i| part(i)[0] as f64).sum();
        assert_eq!(
            count, m as f64,
            "{what}: channel {ch} counts {count} values of {m}"
        );
        let got_mean = (0..t)
            .map(|i| part(i)[0] as f64 * part(i)[1] as f64)
            .sum::<f64>()
            / m as f64;
        let got_m2: f64 = (0..t)
            .map(|i| {
                let [n, mu, m2] = [0, 1, 2].map(|k| part(i)[k] as f64);
                m2 + n * (mu - got_mean) * (mu - got_mean)
            })
            .sum();
        let got_var = got_m2 / m as f64;
        let scale = mean.abs() + var.sqrt();
        assert!(
            (got_mean - mean).abs() <= 1e-5 * scale,
            "{what}: channel {ch}: mean {got_mean}, want {mean}"
        );
        assert!(
            (got_var - var).abs() <= 1e-4 * var + 1e-12,
            "{what}: channel {ch}: variance {got_var}, want {var}"
        );
    }
}

/// Batch norm (with LeakyReLU fused) of y from its parts against batch norm of y read off y, on the same
/// backend: outputs, saved statistics, running statistics and the batch counter.
fn check_batch_norm(
    what: &str,
    be: &CudaBackend,
    y: &Tensor,
    parts: &Tensor,
    rng: &mut ChaCha8Rng,
) {
    let c = y.shape()[1];
    let gamma = tensor(be, &uniform(rng, c, 0.5, 1.5), &[c]);
    let beta = tensor(be, &uniform(rng, c, -0.5, 0.5), &[c]);
    let rm0 = uniform(rng, c, -0.2, 0.2);
    let rv0 = uniform(rng, c, 0.5, 2.0);
    let act = Some(gan_engine::backend::Activation::LeakyRelu(0.2));
    let run = |from_parts: bool| -> (BatchNormOut, Vec<f32>, Vec<f32>, f32) {
        let (mut rm, mut rv) = (tensor(be, &rm0, &[c]), tensor(be, &rv0, &[c]));
        let mut batches = tensor(be, &[3.0], &[]);
        let affine = BatchNormAffine::new(&gamma, &beta, 1e-5);
        let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1).counting(&mut batches);
        let out = if from_parts {
            be.batch_norm_train_from_parts(y, parts, affine, running, act)
        } else {
            be.batch_norm_train(y, affine, running, act)
        }
        .unwrap();
        let b = batches.to_vec().unwrap()[0];
        (out, rm.to_vec().unwrap(), rv.to_vec().unwrap(), b)
    };
    let (want, want_rm, want_rv, want_b) = run(false);
    let (got, got_rm, got_rv, got_b) = run(true);
    let close = |name: &str, g: &[f32], w: &[f32], tol: f32| {
        assert_eq!(g.len(), w.len());
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{what}: {name}[{i}]: from parts {a}, from x {b}"
            );
        }
    };
    close(
        "y",
        &got.y.to_vec().unwrap(),
        &want.y.to_vec().unwrap(),
        1e-4,
    );
    close(
        "mean",
        &got.mean.to_vec().unwrap(),
        &want.mean.to_vec().unwrap(),
        1e-5,
    );
    close(
        "invstd",
        &got.invstd.to_vec().unwrap(),
        &want.invstd.to_vec().unwrap(),
        1e-4,
    );
    close("running_mean", &got_rm, &want_rm, 1e-5);
    close("running_var", &got_rv, &want_rv, 1e-5);
    assert_eq!((got_b, want_b), (4.0, 4.0), "{what}: batch counter");
}

/// What a convolution that gathers statistics returned, `(y, parts)`, against the same convolution run plain:
/// the same output bit for bit, parts present and true to y ([`check_parts`]), and batch norm from them
/// ([`check_batch_norm`]).
fn check_gathered(
    what: &str,
    be: &CudaBackend,
    (y, parts): (&Tensor, Option<Tensor>),
    plain: &Tensor,
    rng: &mut ChaCha8Rng,
) {
    assert_eq!(
        y.to_vec().unwrap(),
        plain.to_vec().unwrap(),
        "{what}: output"
    );
    let parts = parts.unwrap_or_else(|| panic!("{what}: no statistics"));
    check_parts(what, y, &parts);
    check_batch_norm(what, be, y, &parts, rng);
}

/// The reduction of split-K partial outputs that also gathers the statistics.
const SPLIT_REDUCE: &str = "conv2d_splitk_reduce_stats_f32";

/// (name, x [N, C, H, W], O, kernel, stride, padding) for conv2d.
type FwdCase = (&'static str, [usize; 4], usize, usize, usize, usize);

#[test]
fn conv2d_gathers_its_outputs_statistics() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    // The first five keep K = C*k*k short, so the reduction is not split and the GEMM kernels gather the
    // statistics in their epilogue; the output tiles are partial in both directions (the fifth, 32 input
    // channels, on the channels-last kernel at bf16 / fp16). The last two have few output tiles and a long K, so
    // the reduction is split and the reduction of the splits gathers them, one part per chunk of a channel
    // (several chunks in the last one).
    let cases: [FwdCase; 7] = [
        ("D1-like, 3 -> 24", [2, 3, 13, 11], 24, 4, 2, 1),
        ("8 rows (16x128 f32 tile)", [3, 2, 9, 9], 8, 3, 1, 1),
        ("100 rows (128-row tile)", [1, 3, 12, 12], 100, 4, 2, 1),
        ("wide: 3 column tiles", [5, 1, 17, 15], 70, 3, 1, 0),
        ("channels-last 32 -> 70, 1x1", [2, 32, 9, 9], 70, 1, 1, 0),
        ("split K, D2-like 16 -> 24", [2, 16, 10, 10], 24, 4, 2, 1),
        ("split K, 2 chunks a channel", [2, 40, 47, 45], 3, 3, 1, 0),
    ];
    for precision in PRECISIONS {
        be.set_precision(precision);
        for (name, xs, o, k, s, p) in cases {
            let what = format!("{name} at {precision:?}");
            let x = tensor(&be, &uniform(&mut rng, xs.iter().product(), 0.0, 1.0), &xs);
            let w = tensor(
                &be,
                &uniform(&mut rng, o * xs[1] * k * k, -0.3, 0.5),
                &[o, xs[1], k, k],
            );
            let params = Conv2dParams::new(s, p);
            let before = launches(&be, SPLIT_REDUCE);
            let (y, parts) = be.conv2d_with_stats(&x, &w, params).unwrap();
            let split = name.starts_with("split");
            assert_eq!(
                launches(&be, SPLIT_REDUCE) - before,
                u64::from(split),
                "{what}: {SPLIT_REDUCE} launches"
            );
            let plain = be.conv2d(&x, &w, params).unwrap();
            check_gathered(&what, &be, (&y, parts), &plain, &mut rng);
        }
    }
}

#[test]
fn conv_transpose2d_gathers_its_outputs_statistics() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    // (name, output x_shape [N, C, H, W] of the transposed conv, its input channels O, kernel, stride, pad).
    let cases: [FwdCase; 5] = [
        // G-like 4x4 stride 2: four phases of equal size.
        ("G-like 24 -> 20, 10x10", [2, 20, 10, 10], 24, 4, 2, 1),
        // Odd sizes: phases of unequal size (12x12 and 11x11 pixels per image), so the grid, sized for the
        // largest, has blocks past the smaller phases' pixels (empty parts) with the 64- and the 128-column tile.
        ("odd 23x23, 70 rows", [2, 70, 23, 23], 6, 4, 2, 1),
        // Stride 3 with a 2x2 kernel: phases without taps (zeros, still counted).
        ("stride 3 > kernel 2", [2, 17, 8, 7], 5, 2, 3, 0),
        // 12 channels: the 16x128 f32 tile; at the tensor-core precisions the f32 kernels too.
        ("12 rows", [2, 12, 7, 7], 9, 3, 1, 1),
        // 32 input channels: the channels-last kernel at bf16 / fp16, 3 column tiles, the last past two phases.
        (
            "channels-last 32 -> 24, 23x23",
            [2, 24, 23, 23],
            32,
            4,
            2,
            1,
        ),
    ];
    for precision in PRECISIONS {
        be.set_precision(precision);
        for (name, xs, o, k, s, p) in cases {
            let what = format!("{name} at {precision:?}");
            let params = Conv2dParams::new(s, p);
            let (ho, wo) = params.output_size(xs[2], xs[3], k, k).unwrap();
            let dy_shape = [xs[0], o, ho, wo];
            let dy = tensor(
                &be,
                &uniform(&mut rng, dy_shape.iter().product(), 0.0, 1.0),
                &dy_shape,
            );
            let w = tensor(
                &be,
                &uniform(&mut rng, o * xs[1] * k * k, -0.3, 0.5),
                &[o, xs[1], k, k],
            );
            let (dx, parts) = be
                .conv2d_backward_data_with_stats(&dy, &w, xs, params)
                .unwrap();
            let plain = be.conv2d_backward_data(&dy, &w, xs, params).unwrap();
            check_gathered(&what, &be, (&dx, parts), &plain, &mut rng);
        }
    }
}

/// Launches so far, the poison fills of test builds left out.
fn all_launches(be: &CudaBackend) -> u64 {
    let counts = be.runtime().launch_counts();
    counts
        .iter()
        .filter(|c| c.0 != "fill_f32")
        .map(|c| c.1)
        .sum()
}

/// What `f` returns, and the launches it took, from a backend that kept no channels-last operand copy of an
/// earlier call (src/cuda/operand_cache.rs), so that what is compared converts alike.
fn counted<T>(be: &CudaBackend, f: impl FnOnce() -> T) -> (T, u64) {
    be.forget_operands();
    let before = all_launches(be);
    let out = f();
    (out, all_launches(be) - before)
}

/// A fused op's result against the same computed apart on the same backend: the same bits, with `saved` launches
/// fewer. Returns the values.
fn check_fused(what: &str, fused: (Tensor, u64), apart: (Tensor, u64), saved: u64) -> Vec<f32> {
    let ((fused, fused_launches), (apart, apart_launches)) = (fused, apart);
    assert!(
        common::bits(&fused) == common::bits(&apart),
        "{what}: differs from the same ops apart"
    );
    assert_eq!(
        fused_launches + saved,
        apart_launches,
        "{what}: launches fused {fused_launches}, apart {apart_launches}"
    );
    fused.to_vec().unwrap()
}

/// The activations of the epilogue tests: the two the epilogues apply, and one they leave to its own kernel.
const EPILOGUE_ACTS: [Activation; 3] = [
    Activation::LeakyRelu(0.2),
    Activation::Relu,
    Activation::Tanh,
];

/// Runs `check` on every precision's kernels for each case and each of [`EPILOGUE_ACTS`], with a name for its
/// messages.
fn each_epilogue_case(
    be: &CudaBackend,
    cases: &[FwdCase],
    mut check: impl FnMut(String, FwdCase, Activation),
) {
    for precision in PRECISIONS {
        be.set_precision(precision);
        for (case, act) in cases.iter().flat_map(|&c| EPILOGUE_ACTS.map(|a| (c, a))) {
            check(format!("{} at {precision:?}, {act:?}", case.0), case, act);
        }
    }
}

/// A weight [O, C, k, k] of values in [-0.4, 0.4).
fn weight(be: &CudaBackend, rng: &mut ChaCha8Rng, [o, c, k]: [usize; 3]) -> Tensor {
    tensor(be, &uniform(rng, o * c * k * k, -0.4, 0.4), &[o, c, k, k])
}

/// A convolution that stores ReLU or LeakyReLU of its sums (`conv2d_act`), on every precision's kernels and
/// with the reduction split or not, against the convolution followed by the activation kernel on the same
/// backend: the same bits, with one launch fewer. Tanh and sigmoid stay two launches.
#[test]
fn conv2d_with_an_activation_stores_the_activation_of_its_sums() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    // Not split (short K; the f32 16x128 tile at 8 rows, the 128-row tile at 100), then split (long K, few tiles);
    // the last with 32 input channels, on the channels-last kernel at bf16 / fp16.
    let cases: [FwdCase; 5] = [
        ("D1-like, 3 -> 24", [2, 3, 13, 11], 24, 4, 2, 1),
        ("8 rows", [3, 2, 9, 9], 8, 3, 1, 1),
        ("100 rows", [1, 3, 12, 12], 100, 4, 2, 1),
        ("split K, D2-like 16 -> 24", [2, 16, 10, 10], 24, 4, 2, 1),
        (
            "split K, channels-last 32 -> 24",
            [2, 32, 6, 6],
            24,
            4,
            2,
            1,
        ),
    ];
    each_epilogue_case(&be, &cases, |what, (_, xs, o, k, s, p), act| {
        // Centred inputs: about half the sums are negative.
        let x = tensor(&be, &uniform(&mut rng, xs.iter().product(), -1.0, 1.0), &xs);
        let w = weight(&be, &mut rng, [o, xs[1], k]);
        let params = Conv2dParams::new(s, p);
        let fused = counted(&be, || be.conv2d_act(&x, &w, params, act).unwrap());
        let apart = counted(&be, || {
            let z = be.conv2d(&x, &w, params).unwrap();
            be.activation(&z, act).unwrap()
        });
        let saved = u64::from(!matches!(act, Activation::Tanh));
        let got = check_fused(&what, fused, apart, saved);
        assert!(
            got.iter().any(|&v| v < 0.0)
                == matches!(act, Activation::LeakyRelu(_) | Activation::Tanh)
        );
    });
}

/// A convolution's input gradient taken on through the activation that made its input
/// (`conv2d_backward_data_act`, act.cuh's `epilogue_act_bwd` in the backward-data kernels), on every precision's
/// kernels, against the input gradient followed by the activation's backward kernel on the same backend: the same
/// bits, with one launch fewer for ReLU and LeakyReLU where the GEMM kernels run. Tanh and the narrow kernels (3
/// channels) stay two launches.
#[test]
fn conv2d_backward_data_takes_its_gradient_through_the_folded_activation() {
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(45);
    // (name, x [N, C, H, W] = the activation's output, O, kernel, stride, padding).
    let cases: [FwdCase; 5] = [
        ("D2-like 20 <- 24, 10x10", [2, 20, 10, 10], 24, 4, 2, 1),
        ("odd 23x23, 70 rows", [2, 70, 23, 23], 6, 4, 2, 1),
        ("12 rows", [2, 12, 7, 7], 9, 3, 1, 1),
        ("narrow, 3 channels", [2, 3, 9, 9], 8, 4, 2, 1),
        // 32 output channels: the channels-last kernel at bf16 / fp16.
        ("channels-last 20 <- 32", [2, 20, 10, 10], 32, 4, 2, 1),
    ];
    each_epilogue_case(&be, &cases, |what, (_, xs, o, k, s, p), act| {
        let params = Conv2dParams::new(s, p);
        let (ho, wo) = params.output_size(xs[2], xs[3], k, k).unwrap();
        let dy_shape = [xs[0], o, ho, wo];
        let dy = tensor(
            &be,
            &uniform(&mut rng, dy_shape.iter().product(), -1.0, 1.0),
            &dy_shape,
        );
        let w = weight(&be, &mut rng, [o, xs[1], k]);
        // The activation's output, as the forward left it: about half of it at or below zero.
        let z = tensor(&be, &uniform(&mut rng, xs.iter().product(), -1.0, 1.0), &xs);
        let y = be.activation(&z, act).unwrap();
        let fused = counted(&be, || {
            be.conv2d_backward_data_act(&dy, &w, params, act, &y)
                .unwrap()
        });
        let dx = be.conv2d_backward_data(&dy, &w, xs, params).unwrap();
        let apart = counted(&be, || {
            let dx = be.conv2d_backward_data(&dy, &w, xs, params).unwrap();
            be.activation_backward(&y, &dx, act).unwrap()
        });
        let saved = u64::from(!matches!(act, Activation::Tanh) && xs[1] > 4);
        let got = check_fused(&what, fused, apart, saved);
        assert_ne!(
            got,
            dx.to_vec().unwrap(),
            "{what}: the activation changed nothing"
        );
    });
}

/// On the tape, D's first two layers (a convolution with its LeakyReLU, then a convolution): the second layer's
/// input gradient takes over the first's activation backward when it is the activation's only consumer, and
/// leaves it to the activation when another op also takes the activated output.
#[test]
fn the_tape_folds_an_activation_into_its_only_consumer() {
    use gan_engine::{autograd::Tape, ops};
    let be = backend();
    let mut rng = ChaCha8Rng::seed_from_u64(46);
    let p = Conv2dParams::new(2, 1);
    let x = tensor(
        &be,
        &uniform(&mut rng, 2 * 3 * 16 * 16, -1.0, 1.0),
        &[2, 3, 16, 16],
    );
    let w1 = tensor(
        &be,
        &uniform(&mut rng, 8 * 3 * 16, -0.4, 0.4),
        &[8, 3, 4, 4],
    );
    let w2 = tensor(
        &be,
        &uniform(&mut rng, 16 * 8 * 16, -0.4, 0.4),
        &[16, 8, 4, 4],
    );
    for second_consumer in [false, true] {
        let mut tape = Tape::new();
        let (xv, w1v, w2v) = (
            tape.constant(x.clone()),
            tape.leaf(w1.clone()),
            tape.leaf(w2.clone()),
        );
        let a = ops::conv2d_act(&mut tape, xv, w1v, p, Activation::LeakyRelu(0.2)).unwrap();
        let y = ops::conv2d(&mut tape, a, w2v, p).unwrap();
        let mut loss = ops::sum(&mut tape, y).unwrap();
        if second_consumer {
            let s = ops::sum(&mut tape, a).unwrap();
            loss = ops::add(&mut tape, loss, s).unwrap();
        }
        let before = launches(&be, "leaky_relu_bwd_f32");
        let g = tape.backward(loss).unwrap();
        assert!(g.get(w1v).is_some() && g.get(w2v).is_some());
        assert_eq!(
            launches(&be, "leaky_relu_bwd_f32") - before,
            u64::from(second_consumer),
            "LeakyReLU's own backward, second consumer {second_consumer}"
        );
    }
}

/// The ops the layers use in training (`ops::conv2d_with_stats` / `conv_transpose2d_with_stats`, then
/// `batch_norm_act_from_parts`), on the device, against the plain ops on the CPU (which gathers no parts):
/// output, running statistics and the gradients of x, w, gamma and beta.
#[test]
fn conv_then_batch_norm_on_the_tape_matches_cpu() {
    use gan_engine::{autograd::Tape, ops, Device};
    let dev = backend().device();
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    // (transposed, x shape, w shape, stride, pad): D's strided conv (split K at this size) and G's transposed one.
    let layers = [
        (false, [2, 16, 12, 12], [20, 16, 4, 4], 2, 1),
        (true, [2, 24, 5, 5], [24, 20, 4, 4], 2, 1),
    ];
    for (transposed, xs, ws, s, p) in layers {
        let c = if transposed { ws[1] } else { ws[0] };
        let x = uniform(&mut rng, xs.iter().product(), -1.0, 1.0);
        let w = uniform(&mut rng, ws.iter().product(), -0.3, 0.3);
        let gamma = uniform(&mut rng, c, 0.5, 1.5);
        let beta = uniform(&mut rng, c, -0.5, 0.5);
        let params = Conv2dParams::new(s, p);
        let run = |d: &Device| {
            let t = |v: &[f32], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape, d).unwrap();
            let mut tape = Tape::new();
            let (xv, wv) = (tape.leaf(t(&x, &xs)), tape.leaf(t(&w, &ws)));
            let (gv, bv) = (tape.leaf(t(&gamma, &[c])), tape.leaf(t(&beta, &[c])));
            let (z, parts) = match transposed {
                false => ops::conv2d_with_stats(&mut tape, xv, wv, params),
                true => ops::conv_transpose2d_with_stats(&mut tape, xv, wv, params, None),
            }
            .unwrap();
            assert_eq!(
                parts.is_some(),
                !d.is_cpu(),
                "statistics parts on {}",
                d.name()
            );
            let (mut rm, mut rv) = (t(&vec![0.0; c], &[c]), t(&vec![1.0; c], &[c]));
            let running = RunningStatsMut::new(&mut rm, &mut rv, 0.1);
            let act = Some(Activation::LeakyRelu(0.2));
            let y = match &parts {
                Some(parts) => ops::batch_norm_act_from_parts(
                    &mut tape,
                    z,
                    [gv, bv],
                    running,
                    1e-5,
                    act,
                    parts,
                ),
                None => ops::batch_norm_act(&mut tape, z, [gv, bv], running, true, 1e-5, act),
            }
            .unwrap();
            let yv = tape.value(y).clone();
            let r: Vec<f32> = (0..yv.numel())
                .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.4)
                .collect();
            let g = tape.backward_from(y, t(&r, yv.shape())).unwrap();
            let host = |t: &Tensor| t.to_vec().unwrap();
            [
                host(&yv),
                host(&rm),
                host(&rv),
                host(g.get(xv).unwrap()),
                host(g.get(wv).unwrap()),
                host(g.get(gv).unwrap()),
                host(g.get(bv).unwrap()),
            ]
        };
        let (want, got) = (run(&Device::Cpu), run(&dev));
        let names = [
            "y",
            "running_mean",
            "running_var",
            "dx",
            "dw",
            "dgamma",
            "dbeta",
        ];
        for (what, (g, w)) in names.iter().zip(got.iter().zip(&want)) {
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * scale,
                    "transposed {transposed}, x {xs:?}: {what}[{i}] = {a}, CPU {b}"
                );
            }
        }
    }
}
