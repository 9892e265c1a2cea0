//! One convolution test case (shapes, stride, padding) and the loop over its taps that the direct-summation
//! references of the parity tests are written with.

use gan_engine::backend::{Backend, Conv2dParams};
use gan_engine::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: (usize, usize),
    pub p: Conv2dParams,
}

impl ConvCase {
    /// The three directions on `b`, back on the host: y = conv(x, w), dx from dy, dw from x and dy.
    #[allow(dead_code)]
    pub fn run_all(&self, b: &dyn Backend, x: &Tensor, w: &Tensor, dy: &Tensor) -> [Vec<f32>; 3] {
        let y = b.conv2d(x, w, self.p).unwrap();
        assert_eq!(y.shape(), self.y_shape());
        let dx = b
            .conv2d_backward_data(dy, w, self.x_shape(), self.p)
            .unwrap();
        let dw = b
            .conv2d_backward_weight(x, dy, self.w_shape(), self.p)
            .unwrap();
        [y, dx, dw].map(|t| t.to_vec().unwrap())
    }

    pub fn out(&self) -> (usize, usize) {
        self.p
            .output_size(self.h, self.w, self.k.0, self.k.1)
            .expect("test case must be valid")
    }
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    pub fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c, self.k.0, self.k.1]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        let (ho, wo) = self.out();
        [self.n, self.o, ho, wo]
    }

    /// Calls f(n, o, c, oh, ow, ih, iw, r, s) for every tap that reads inside the image.
    pub fn for_each_tap(&self, mut f: impl FnMut([usize; 9])) {
        let (ho, wo) = self.out();
        let (sh, sw) = self.p.stride;
        let (ph, pw) = self.p.padding;
        for n in 0..self.n {
            for o in 0..self.o {
                for c in 0..self.c {
                    for oh in 0..ho {
                        for ow in 0..wo {
                            for r in 0..self.k.0 {
                                for s in 0..self.k.1 {
                                    let ih = (oh * sh + r) as isize - ph as isize;
                                    let iw = (ow * sw + s) as isize - pw as isize;
                                    if ih >= 0
                                        && iw >= 0
                                        && (ih as usize) < self.h
                                        && (iw as usize) < self.w
                                    {
                                        f([n, o, c, oh, ow, ih as usize, iw as usize, r, s]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// conv2d's dx (= conv_transpose2d's output) from `dy` and `w`, summed directly in f64.
    pub fn backward_data_reference(&self, dy: &[f32], w: &[f32]) -> Vec<f64> {
        let mut dx = vec![0f64; self.x_shape().iter().product()];
        self.for_each_tap(|[n, o, c, oh, ow, ih, iw, r, s]| {
            dx[self.xi(n, c, ih, iw)] +=
                dy[self.yi(n, o, oh, ow)] as f64 * w[self.wi(o, c, r, s)] as f64;
        });
        dx
    }

    /// Flat NCHW / OIHW indices of x, w and y.
    pub fn xi(&self, n: usize, c: usize, h: usize, w: usize) -> usize {
        ((n * self.c + c) * self.h + h) * self.w + w
    }
    pub fn wi(&self, o: usize, c: usize, r: usize, s: usize) -> usize {
        ((o * self.c + c) * self.k.0 + r) * self.k.1 + s
    }
    pub fn yi(&self, n: usize, o: usize, oh: usize, ow: usize) -> usize {
        let (ho, wo) = self.out();
        ((n * self.o + o) * ho + oh) * wo + ow
    }
}
