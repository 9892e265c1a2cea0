//! The convolution layers of DCGAN (nz 100, ngf = ndf = 64) as data: the per-layer benchmarks iterate over
//! them, the libtorch models are built from them, and the FLOP counts of a training iteration are summed
//! from them. Same architecture as `gan_engine::nn::models::dcgan` and PyTorch's DCGAN example.

use gan_engine::backend::Conv2dParams;

pub const NZ: usize = 100;
pub const NGF: usize = 64;
pub const NDF: usize = 64;

#[derive(Clone, Debug)]
pub struct ConvLayer {
    /// "G1".."G5" (ConvTranspose2d) or "D1".."D5" (Conv2d), in execution order.
    pub name: String,
    pub transposed: bool,
    /// Input and output [N, C, H, W] of the layer.
    pub x: [usize; 4],
    pub y: [usize; 4],
    /// Weight in PyTorch's layout: [O, C, k, k] for Conv2d, [Cin, Cout, k, k] for ConvTranspose2d.
    pub w: [usize; 4],
    pub stride: usize,
    pub pad: usize,
}

impl ConvLayer {
    pub fn params(&self) -> Conv2dParams {
        Conv2dParams::new(self.stride, self.pad)
    }

    /// Floating-point operations of one pass (forward, input gradient or weight gradient all cost the same),
    /// two per multiply-add. A conv does one multiply-add per output pixel and weight element of its output
    /// channel; a transposed conv one per *input* pixel and weight element of its input channel.
    pub fn flops(&self) -> u64 {
        let [n, _, h, w] = if self.transposed { self.x } else { self.y };
        (2 * n * h * w * self.w.iter().product::<usize>()) as u64
    }

    /// e.g. "D2 64x32x32->128x16x16".
    pub fn label(&self) -> String {
        let [_, c, h, w] = self.x;
        let [_, o, ho, wo] = self.y;
        format!("{} {c}x{h}x{w}->{o}x{ho}x{wo}", self.name)
    }
}

/// A DCGAN's two conv stacks at batch `n`.
pub struct Dcgan {
    pub image_size: usize,
    pub channels: usize,
    pub g: Vec<ConvLayer>,
    pub d: Vec<ConvLayer>,
}

impl Dcgan {
    /// DCGAN for 64×64 RGB (the PyTorch example) or 28×28 grayscale (the MNIST variant: G starts 4·ngf wide
    /// from a 7×7 kernel, D stops at 2·ndf and ends with a 7×7 kernel).
    pub fn new(image_size: usize, channels: usize, n: usize) -> Dcgan {
        let (g_mults, d_mults, k0): (&[usize], &[usize], usize) = match image_size {
            64 => (&[8, 4, 2, 1], &[1, 2, 4, 8], 4),
            28 => (&[4, 2], &[1, 2], 7),
            s => panic!("benchmarks cover DCGAN-64 and DCGAN-28, not {s}"),
        };
        // One layer from its input channels and size; a transposed layer upsamples, a conv downsamples.
        let layer = |name: String, transposed: bool, c, o, h: usize, (k, s, p)| {
            let ho = if transposed {
                (h - 1) * s + k - 2 * p
            } else {
                (h + 2 * p - k) / s + 1
            };
            let w = if transposed {
                [c, o, k, k]
            } else {
                [o, c, k, k]
            };
            let (x, y) = ([n, c, h, h], [n, o, ho, ho]);
            (
                ConvLayer {
                    name,
                    transposed,
                    x,
                    y,
                    w,
                    stride: s,
                    pad: p,
                },
                (o, ho),
            )
        };
        let mut g = Vec::new();
        let (mut c, mut h) = (NZ, 1);
        let outs = g_mults.iter().map(|m| m * NGF).chain([channels]);
        for (i, o) in outs.enumerate() {
            let ksp = if i == 0 { (k0, 1, 0) } else { (4, 2, 1) };
            let (l, next) = layer(format!("G{}", i + 1), true, c, o, h, ksp);
            g.push(l);
            (c, h) = next;
        }
        let mut d = Vec::new();
        let (mut c, mut h) = (channels, image_size);
        let outs = d_mults.iter().map(|m| m * NDF).chain([1]);
        let last = d_mults.len();
        for (i, o) in outs.enumerate() {
            let ksp = if i == last { (k0, 1, 0) } else { (4, 2, 1) };
            let (l, next) = layer(format!("D{}", i + 1), false, c, o, h, ksp);
            d.push(l);
            (c, h) = next;
        }
        assert_eq!(g.last().unwrap().y[2], image_size);
        assert_eq!(d.last().unwrap().y[1..], [1, 1, 1]);
        Dcgan {
            image_size,
            channels,
            g,
            d,
        }
    }

    /// Conv FLOPs of one training iteration as gan-engine (and the libtorch baseline) run it:
    /// - D step: D forward on the real and on the fake batch, each with every weight gradient and every input
    ///   gradient except the first layer's (neither the images nor the detached fake need one);
    /// - G forward once (its output is reused by the G step);
    /// - G step: D forward on the fake with D frozen (input gradients only, down to the image), then G's
    ///   weight gradients and input gradients except the first layer's (z needs none).
    ///
    /// Batch norm, activations, the loss and Adam are left out: they are memory-bound and add well under 1%.
    pub fn iteration_flops(&self) -> u64 {
        let sum = |ls: &[ConvLayer]| ls.iter().map(ConvLayer::flops).sum::<u64>();
        let (fd, fg) = (sum(&self.d), sum(&self.g));
        let (fd1, fg1) = (self.d[0].flops(), self.g[0].flops());
        let d_step = 2 * (fd + fd + (fd - fd1));
        let g_step = (fd + fd) + (fg + fg + (fg - fg1));
        d_step + fg + g_step
    }

    /// Conv FLOPs of a generator forward pass.
    pub fn g_forward_flops(&self) -> u64 {
        self.g.iter().map(ConvLayer::flops).sum()
    }
}
