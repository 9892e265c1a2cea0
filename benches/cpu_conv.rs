//! CPU convolution throughput on the layer shapes of DCGAN-64 at batch 64, and the forward pass of the
//! largest or most distinct layers of the FID InceptionV3 at a batch of 10 images.
//!
//! Every layer of DCGAN's discriminator (Conv2d) and generator (ConvTranspose2d) is one of the conv
//! geometries below: a generator layer Cin→Cout upsampling H→2H is the conv [Cout, 2H] → [Cin, H] run
//! backwards (its forward is `backward_data`, its input gradient `forward`, its weight gradient
//! `backward_weight`). So timing the three passes of each geometry covers a whole training step.
//! Throughput is reported in elements/s where one element is one floating-point operation (2 per
//! multiply-add), i.e. Gelem/s reads as GFLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gan_engine::backend::Conv2dParams;
use gan_engine::cpu::conv;
use gan_engine::ops::gradcheck::test_tensor;

struct Layer {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    p: Conv2dParams,
}

const N: usize = 64;

fn layers() -> Vec<Layer> {
    let layer = |name, x, w, p| Layer { name, x, w, p };
    let (down, valid) = (Conv2dParams::new(2, 1), Conv2dParams::new(1, 0));
    #[rustfmt::skip]
    let table = vec![
        layer("D1,G5 3x64x64->64x32x32", [N, 3, 64, 64], [64, 3, 4, 4], down),
        layer("D2,G4 64x32x32->128x16x16", [N, 64, 32, 32], [128, 64, 4, 4], down),
        layer("D3,G3 128x16x16->256x8x8", [N, 128, 16, 16], [256, 128, 4, 4], down),
        layer("D4,G2 256x8x8->512x4x4", [N, 256, 8, 8], [512, 256, 4, 4], down),
        layer("D5 512x4x4->1x1x1", [N, 512, 4, 4], [1, 512, 4, 4], valid),
        layer("G1 512x4x4->100x1x1", [N, 512, 4, 4], [100, 512, 4, 4], valid),
    ];
    table
}

/// InceptionV3 layers (names as in `fid::inception`, then input C×H×W, kernel, /stride): the stem's large
/// images, the 5×5, the 35 → 17 reduction, a factorised 7×1 and the 8×8 block's 3×3.
fn inception_layers() -> Vec<Layer> {
    let n = 10;
    let layer = |name, (c, h, w), (o, kh, kw), s, (ph, pw)| Layer {
        name,
        x: [n, c, h, w],
        w: [o, c, kh, kw],
        p: Conv2dParams {
            stride: (s, s),
            padding: (ph, pw),
        },
    };
    #[rustfmt::skip]
    let table = vec![
        layer("conv 3x299x299 3x3/2", (3, 299, 299), (32, 3, 3), 2, (0, 0)),
        layer("conv_1 32x149x149 3x3", (32, 149, 149), (32, 3, 3), 1, (0, 0)),
        layer("conv_2 32x147x147 3x3", (32, 147, 147), (64, 3, 3), 1, (1, 1)),
        layer("conv_4 80x73x73 3x3", (80, 73, 73), (192, 3, 3), 1, (0, 0)),
        layer("mixed.tower.conv_1 48x35x35 5x5", (48, 35, 35), (64, 5, 5), 1, (2, 2)),
        layer("mixed_3.conv 288x35x35 3x3/2", (288, 35, 35), (384, 3, 3), 2, (0, 0)),
        layer("mixed_7.tower.conv_2 192x17x17 7x1", (192, 17, 17), (192, 7, 1), 1, (3, 0)),
        layer("mixed_9.tower_1_conv_1 448x8x8 3x3", (448, 8, 8), (384, 3, 3), 1, (1, 1)),
    ];
    table
}

fn flops(l: &Layer, y: &[usize]) -> u64 {
    (2 * y.iter().product::<usize>() * l.w[1] * l.w[2] * l.w[3]) as u64
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_conv");
    for l in layers() {
        let x = test_tensor(&l.x, 1);
        let w = test_tensor(&l.w, 2);
        let y = conv::conv2d(&x, &w, l.p).unwrap();
        let dy = test_tensor(y.shape(), 3);
        group.throughput(Throughput::Elements(flops(&l, y.shape())));
        group.bench_function(BenchmarkId::new("forward", l.name), |b| {
            b.iter(|| conv::conv2d(&x, &w, l.p).unwrap())
        });
        group.bench_function(BenchmarkId::new("backward_data", l.name), |b| {
            b.iter(|| conv::conv2d_backward_data(&dy, &w, l.x, l.p).unwrap())
        });
        group.bench_function(BenchmarkId::new("backward_weight", l.name), |b| {
            b.iter(|| conv::conv2d_backward_weight(&x, &dy, l.w, l.p).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("cpu_conv_inception");
    for l in inception_layers() {
        let x = test_tensor(&l.x, 1);
        let w = test_tensor(&l.w, 2);
        let y = conv::conv2d(&x, &w, l.p).unwrap();
        group.throughput(Throughput::Elements(flops(&l, y.shape())));
        group.bench_function(BenchmarkId::new("forward", l.name), |b| {
            b.iter(|| conv::conv2d(&x, &w, l.p).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
