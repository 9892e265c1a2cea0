//! max_pool2d and avg_pool2d (PyTorch semantics, floor mode), the pooling layers of InceptionV3.
//!
//! Max pooling saves its input, not argmax indices: the backward recomputes each window's first maximum from x
//! (see src/cpu/pool.rs for why). Average pooling saves nothing but the input's shape.

use anyhow::{bail, ensure, Result};

use crate::autograd::{Tape, Var};
use crate::backend::Pool2d;

/// The sizes of one pooling, validated once so every backend gives the same errors. Planes = N·C (pooling never
/// mixes channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub ho: usize,
    pub wo: usize,
}

impl PoolGeom {
    pub fn new(what: &str, x: [usize; 4], p: Pool2d) -> Result<PoolGeom> {
        let [n, c, h, w] = x;
        let (kh, kw) = p.kernel;
        ensure!(
            c > 0 && h > 0 && w > 0,
            "{what}: empty dimension in input {x:?}"
        );
        ensure!(
            kh > 0 && kw > 0 && p.stride.0 > 0 && p.stride.1 > 0,
            "{what}: kernel {:?} and stride {:?} must be positive",
            p.kernel,
            p.stride
        );
        // PyTorch's rule. It also guarantees that every window holds at least one cell of the image, so a max
        // is always a real value and the count_include_pad=false divisor is never 0.
        ensure!(
            2 * p.padding.0 <= kh && 2 * p.padding.1 <= kw,
            "{what}: padding {:?} must be at most half the kernel {:?}",
            p.padding,
            p.kernel
        );
        let Some((ho, wo)) = p.output_size(h, w) else {
            bail!(
                "{what}: window {kh}x{kw} is larger than the padded input {}x{} (input {h}x{w}, padding {:?})",
                h + 2 * p.padding.0,
                w + 2 * p.padding.1,
                p.padding
            );
        };
        Ok(PoolGeom {
            n,
            c,
            h,
            w,
            kh,
            kw,
            sh: p.stride.0,
            sw: p.stride.1,
            ph: p.padding.0,
            pw: p.padding.1,
            ho,
            wo,
        })
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// dy must be exactly the output shape of this pooling.
    pub fn check_dy(&self, what: &str, dy: [usize; 4]) -> Result<()> {
        ensure!(
            dy == self.out_shape(),
            "{what}: dy has shape {dy:?}, but a {}x{} window with stride {:?} and padding {:?} over [{}, {}, {}, \
             {}] gives {:?}",
            self.kh,
            self.kw,
            (self.sh, self.sw),
            (self.ph, self.pw),
            self.n,
            self.c,
            self.h,
            self.w,
            self.out_shape()
        );
        Ok(())
    }

    /// Rows (or columns) [lo, hi) of the image under window `o` of an axis with kernel k, stride s, padding p
    /// and length len: the padded cells clipped away.
    pub fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
        let start = (o * s) as isize - p as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize) as usize).min(len);
        (lo, hi)
    }
}

/// x [N, C, H, W] → [N, C, Ho, Wo]. Padded cells never win; the gradient of each output goes to the first
/// maximum of its window in row-major order.
pub fn max_pool2d(tape: &mut Tape, x: Var, p: Pool2d) -> Result<Var> {
    let xv = tape.value(x);
    let y = xv.backend().max_pool2d(xv, p)?;
    let saved_x = xv.clone();
    Ok(tape.push_op(
        "max pooling",
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(
                dy.backend().max_pool2d_backward(&saved_x, dy, p)?,
            )])
        }),
    ))
}

/// x [N, C, H, W] → [N, C, Ho, Wo]. `count_include_pad`: divide every window by kh·kw (PyTorch's default), or
/// only by its cells inside the image (what InceptionV3's FID graph uses).
pub fn avg_pool2d(tape: &mut Tape, x: Var, p: Pool2d, count_include_pad: bool) -> Result<Var> {
    let xv = tape.value(x);
    let x_shape = xv.dims4("avg_pool2d x")?;
    let y = xv.backend().avg_pool2d(xv, p, count_include_pad)?;
    Ok(tape.push_op(
        "average pooling",
        y,
        &[x],
        Box::new(move |dy, _need| {
            Ok(vec![Some(dy.backend().avg_pool2d_backward(
                dy,
                x_shape,
                p,
                count_include_pad,
            )?)])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::ops::gradcheck::{test_tensor, test_values, GradCheck};
    use crate::tensor::Tensor;

    fn pool(k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> Pool2d {
        Pool2d {
            kernel: k,
            stride: s,
            padding: p,
        }
    }

    /// (input shape, pooling): odd and unequal H/W, padding, stride 2 that drops a last row/column, an
    /// asymmetric 1×3 window, InceptionV3's 3×3/1/1 and 3×3/2/0, and a global pool.
    fn cases() -> Vec<([usize; 4], Pool2d)> {
        vec![
            ([2, 3, 7, 5], pool((3, 3), (2, 2), (1, 1))),
            ([1, 2, 6, 7], pool((1, 3), (1, 2), (0, 1))),
            ([2, 2, 7, 5], pool((2, 2), (2, 2), (0, 0))),
            ([1, 3, 5, 6], Pool2d::new(3, 1, 1)),
            ([2, 2, 9, 7], Pool2d::new(3, 2, 0)),
            ([2, 3, 4, 3], pool((4, 3), (1, 1), (0, 0))),
            ([1, 2, 5, 4], pool((3, 2), (2, 3), (1, 1))),
        ]
    }

    /// Values that are all different by at least 0.05, so the ±1e-2 probes of the gradient check never change
    /// which cell of a window is the maximum (a random input would have near-ties that make max non-smooth).
    fn separated(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let r = test_values(n, seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
        let mut v = vec![0.0f32; n];
        for (rank, &i) in order.iter().enumerate() {
            v[i] = rank as f32 * 0.05 - 2.0;
        }
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_pool2d_gradcheck(dev: &Device) {
        for (ci, (xs, p)) in cases().into_iter().enumerate() {
            let x = separated(&xs, 10 + ci as u64).to_device(dev).unwrap();
            GradCheck::default()
                .run(&[x], |t, v| max_pool2d(t, v[0], p))
                .unwrap_or_else(|e| panic!("case {ci} {xs:?} {p:?}: {e:#}"));
        }
    }

    fn avg_pool2d_gradcheck(dev: &Device) {
        for (ci, (xs, p)) in cases().into_iter().enumerate() {
            for include in [true, false] {
                let x = test_tensor(&xs, 20 + ci as u64).to_device(dev).unwrap();
                GradCheck::default()
                    .run(&[x], |t, v| avg_pool2d(t, v[0], p, include))
                    .unwrap_or_else(|e| panic!("case {ci} {xs:?} {p:?} include {include}: {e:#}"));
            }
        }
    }

    test_devices!(max_pool2d_gradients_match_finite_differences => super::max_pool2d_gradcheck);
    test_devices!(
        /// Both divisors: padding counted (`count_include_pad`) or not.
        avg_pool2d_gradients_match_finite_differences => super::avg_pool2d_gradcheck
    );

    /// Direct definitions on a small hand-checkable input.
    #[test]
    fn forward_values_by_hand() {
        // One 3×3 plane 1..9 (row-major).
        let x = Tensor::from_vec(
            (1..=9).map(|v| v as f32).collect(),
            &[1, 1, 3, 3],
            &Device::Cpu,
        )
        .unwrap();
        let mut tape = Tape::no_grad();
        let xv = tape.constant(x);
        let p = Pool2d::new(2, 2, 1); // windows {1}, {2,3}, {4,7}, {5,6,8,9}
        let y = max_pool2d(&mut tape, xv, p).unwrap();
        assert_eq!(tape.value(y).shape(), &[1, 1, 2, 2]);
        assert_eq!(tape.value(y).to_vec().unwrap(), [1.0, 3.0, 7.0, 9.0]);
        let y = avg_pool2d(&mut tape, xv, p, true).unwrap();
        assert_eq!(tape.value(y).to_vec().unwrap(), [0.25, 1.25, 2.75, 7.0]);
        let y = avg_pool2d(&mut tape, xv, p, false).unwrap();
        assert_eq!(tape.value(y).to_vec().unwrap(), [1.0, 2.5, 5.5, 7.0]);
    }

    /// Ties: the first maximum in row-major order gets the whole gradient; padding never wins even when every
    /// image value is negative.
    #[test]
    fn max_pool2d_ties_and_negative_values() {
        let x = Tensor::from_vec(
            vec![-3.0, -1.0, -1.0, -2.0, -1.0, -5.0],
            &[1, 1, 2, 3],
            &Device::Cpu,
        )
        .unwrap();
        let mut tape = Tape::new();
        let xv = tape.leaf(x);
        let y = max_pool2d(&mut tape, xv, Pool2d::new(3, 3, 1)).unwrap();
        assert_eq!(tape.value(y).to_vec().unwrap(), [-1.0]);
        let dy = Tensor::from_vec(vec![2.0], &[1, 1, 1, 1], &Device::Cpu).unwrap();
        let g = tape.backward_from(y, dy).unwrap();
        assert_eq!(
            g.get(xv).unwrap().to_vec().unwrap(),
            [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(test_tensor(&[1, 2, 4, 3], 1));
        let err = |r: Result<Var>| format!("{:#}", r.expect_err("expected an error"));
        let e = err(max_pool2d(&mut tape, x, Pool2d::new(5, 1, 0)));
        assert!(e.contains("larger than the padded input"), "{e}");
        let e = err(avg_pool2d(
            &mut tape,
            x,
            pool((3, 3), (1, 1), (2, 1)),
            false,
        ));
        assert!(e.contains("at most half the kernel"), "{e}");
        let e = err(max_pool2d(&mut tape, x, Pool2d::new(2, 0, 0)));
        assert!(e.contains("must be positive"), "{e}");
        let e = err(avg_pool2d(&mut tape, x, Pool2d::new(0, 1, 0), true));
        assert!(e.contains("must be positive"), "{e}");
        let flat = tape.leaf(test_tensor(&[2, 3], 2));
        let e = err(max_pool2d(&mut tape, flat, Pool2d::new(1, 1, 0)));
        assert!(e.contains("4-D"), "{e}");
        let empty = tape.leaf(Tensor::zeros(&[1, 0, 4, 4], &Device::Cpu).unwrap());
        let e = err(avg_pool2d(&mut tape, empty, Pool2d::new(2, 2, 0), true));
        assert!(e.contains("empty dimension"), "{e}");
        // Backend-level backward with a dy of the wrong shape.
        let xt = test_tensor(&[1, 2, 4, 3], 1);
        let dy = test_tensor(&[1, 2, 3, 3], 3);
        let b = xt.backend();
        let e = format!(
            "{:#}",
            b.max_pool2d_backward(&xt, &dy, Pool2d::new(2, 2, 0))
                .unwrap_err()
        );
        assert!(e.contains("dy has shape"), "{e}");
        let e = format!(
            "{:#}",
            b.avg_pool2d_backward(&dy, [1, 2, 4, 3], Pool2d::new(2, 2, 0), true)
                .unwrap_err()
        );
        assert!(e.contains("dy has shape"), "{e}");
    }

    #[test]
    fn output_size_floor_mode() {
        assert_eq!(Pool2d::new(3, 2, 0).output_size(35, 35), Some((17, 17)));
        assert_eq!(Pool2d::new(3, 1, 1).output_size(8, 8), Some((8, 8)));
        assert_eq!(Pool2d::new(8, 1, 0).output_size(8, 8), Some((1, 1)));
        assert_eq!(Pool2d::new(2, 2, 0).output_size(7, 5), Some((3, 2)));
        assert_eq!(Pool2d::new(9, 1, 0).output_size(8, 8), None);
        assert_eq!(Pool2d::new(3, 0, 0).output_size(8, 8), None);
    }
}
