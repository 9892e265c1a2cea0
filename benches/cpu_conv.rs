//! CPU convolution throughput on the layer shapes of DCGAN-64 at batch 64.
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
    let down = Conv2dParams::new(2, 1);
    let valid = Conv2dParams::new(1, 0);
    vec![
        Layer {
            name: "D1,G5 3x64x64->64x32x32",
            x: [N, 3, 64, 64],
            w: [64, 3, 4, 4],
            p: down,
        },
        Layer {
            name: "D2,G4 64x32x32->128x16x16",
            x: [N, 64, 32, 32],
            w: [128, 64, 4, 4],
            p: down,
        },
        Layer {
            name: "D3,G3 128x16x16->256x8x8",
            x: [N, 128, 16, 16],
            w: [256, 128, 4, 4],
            p: down,
        },
        Layer {
            name: "D4,G2 256x8x8->512x4x4",
            x: [N, 256, 8, 8],
            w: [512, 256, 4, 4],
            p: down,
        },
        Layer {
            name: "D5 512x4x4->1x1x1",
            x: [N, 512, 4, 4],
            w: [1, 512, 4, 4],
            p: valid,
        },
        Layer {
            name: "G1 512x4x4->100x1x1",
            x: [N, 512, 4, 4],
            w: [100, 512, 4, 4],
            p: valid,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_conv");
    for l in layers() {
        let x = test_tensor(&l.x, 1);
        let w = test_tensor(&l.w, 2);
        let y = conv::forward(&x, &w, l.p).unwrap();
        let dy = test_tensor(y.shape(), 3);
        let [_, o, ho, wo] = [y.shape()[0], y.shape()[1], y.shape()[2], y.shape()[3]];
        let flops = 2 * N * o * ho * wo * l.w[1] * l.w[2] * l.w[3];
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("forward", l.name), |b| {
            b.iter(|| conv::forward(&x, &w, l.p).unwrap())
        });
        group.bench_function(BenchmarkId::new("backward_data", l.name), |b| {
            b.iter(|| conv::backward_data(&dy, &w, l.x, l.p).unwrap())
        });
        group.bench_function(BenchmarkId::new("backward_weight", l.name), |b| {
            b.iter(|| conv::backward_weight(&x, &dy, l.w, l.p).unwrap())
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
