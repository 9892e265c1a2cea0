//! Fully connected layer, y = x wᵀ + b, on the packed SIMD GEMM of the `gemm` crate.
//!
//! All three products are expressed as one strided GEMM each: the transposes are just swapped row / column
//! strides, so nothing is copied.

use anyhow::{ensure, Result};

use super::{data, output_buffer, tensor};
use crate::backend::{LinearGrads, LinearNeed};
use crate::tensor::Tensor;

/// A row-major or transposed view of a matrix: element (i, j) lives at `data[i * rs + j * cs]`.
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// dst[m×n] (row-major, contiguous) = lhs[m×k] · rhs[k×n], plus the old dst when `accumulate` (used to start
/// from the broadcast bias).
fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: View, rhs: View, accumulate: bool) {
    debug_assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Empty inner dimension: the product is zero. (Kept out of gemm, whose k = 0 path we do not rely on.)
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // Threads only pay off once the product is big enough; below that the fork/join costs more than it saves.
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views address `data[i * rs + j * cs]` for i < rows, j < cols; the callers build them from
    // tensors whose shapes were checked to contain exactly those ranges, and dst is a distinct m×n buffer.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0, // dst := 1·dst + 1·lhs·rhs (the first factor only matters when accumulating)
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Checks x [N, in], w [out, in] and returns (N, in, out).
fn dims(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
    let [n, fin] = x.dims2("linear input x")?;
    let [fout, win] = w.dims2("linear weight w")?;
    ensure!(
        fin == win,
        "linear: input x {:?} has {fin} features but weight w {:?} expects {win}",
        x.shape(),
        w.shape()
    );
    Ok((n, fin, fout))
}

pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (n, fin, fout) = dims(x, w)?;
    let (xd, wd) = (data(x)?, data(w)?);
    let mut y = match b {
        Some(b) => {
            ensure!(
                b.shape() == [fout],
                "linear: bias shape {:?} does not match weight {:?} (expected [{fout}])",
                b.shape(),
                w.shape()
            );
            let bd = data(b)?;
            let mut y = Vec::with_capacity(n * fout);
            for _ in 0..n {
                y.extend_from_slice(bd);
            }
            y
        }
        None => output_buffer(n * fout),
    };
    // y [N, out] = x [N, in] · wᵀ [in, out]; wᵀ(k, j) = w[j * in + k].
    matmul(
        &mut y,
        n,
        fout,
        fin,
        View {
            data: xd,
            rs: fin,
            cs: 1,
        },
        View {
            data: wd,
            rs: 1,
            cs: fin,
        },
        b.is_some(),
    );
    Ok(tensor(y, &[n, fout]))
}

pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need: LinearNeed,
) -> Result<LinearGrads> {
    let (ndx, ndw, ndb) = (need.dx, need.dw, need.db);
    let (n, fin, fout) = dims(x, w)?;
    ensure!(
        dy.shape() == [n, fout],
        "linear backward: dy shape {:?} does not match output [{n}, {fout}] of x {:?} and w {:?}",
        dy.shape(),
        x.shape(),
        w.shape()
    );
    let (xd, wd, gd) = (data(x)?, data(w)?, data(dy)?);
    let dx = if ndx {
        // dx [N, in] = dy [N, out] · w [out, in]
        let mut dx = output_buffer(n * fin);
        matmul(
            &mut dx,
            n,
            fin,
            fout,
            View {
                data: gd,
                rs: fout,
                cs: 1,
            },
            View {
                data: wd,
                rs: fin,
                cs: 1,
            },
            false,
        );
        Some(tensor(dx, &[n, fin]))
    } else {
        None
    };
    let dw = if ndw {
        // dw [out, in] = dyᵀ [out, N] · x [N, in]; dyᵀ(o, r) = dy[r * out + o].
        let mut dw = output_buffer(fout * fin);
        matmul(
            &mut dw,
            fout,
            fin,
            n,
            View {
                data: gd,
                rs: 1,
                cs: fout,
            },
            View {
                data: xd,
                rs: fin,
                cs: 1,
            },
            false,
        );
        Some(tensor(dw, &[fout, fin]))
    } else {
        None
    };
    let db = if ndb {
        // Column sums of dy, in f64 so large batches do not lose precision.
        let mut acc = vec![0.0f64; fout];
        for row in gd.chunks_exact(fout.max(1)).take(n) {
            for (a, &g) in acc.iter_mut().zip(row) {
                *a += g as f64;
            }
        }
        Some(tensor(acc.iter().map(|&a| a as f32).collect(), &[fout]))
    } else {
        None
    };
    Ok(LinearGrads { dx, dw, db })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_tensor;

    /// Plain triple loop in f64, the reference for the GEMM paths.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        fin: usize,
        fout: usize,
    ) -> Vec<f64> {
        let mut y = vec![0.0; n * fout];
        for r in 0..n {
            for o in 0..fout {
                let mut s = b.map_or(0.0, |b| b[o] as f64);
                for k in 0..fin {
                    s += x[r * fin + k] as f64 * w[o * fin + k] as f64;
                }
                y[r * fout + o] = s;
            }
        }
        y
    }

    #[test]
    fn forward_matches_reference_small_and_large() {
        // The second size crosses the threading threshold.
        for (n, fin, fout) in [(3, 5, 7), (67, 131, 45)] {
            let x = test_tensor(&[n, fin], 1);
            let w = test_tensor(&[fout, fin], 2);
            let b = test_tensor(&[fout], 3);
            let (xv, wv, bv) = (
                x.to_vec().unwrap(),
                w.to_vec().unwrap(),
                b.to_vec().unwrap(),
            );
            for bias in [false, true] {
                let y = linear(&x, &w, bias.then_some(&b)).unwrap();
                assert_eq!(y.shape(), &[n, fout]);
                let want = reference(&xv, &wv, bias.then_some(&bv[..]), n, fin, fout);
                for (a, e) in y.to_vec().unwrap().iter().zip(&want) {
                    assert!((*a as f64 - e).abs() < 1e-4, "{a} vs {e}");
                }
            }
        }
    }

    #[test]
    fn backward_matches_reference_and_respects_flags() {
        let (n, fin, fout) = (3, 5, 7);
        let x = test_tensor(&[n, fin], 4);
        let w = test_tensor(&[fout, fin], 5);
        let dy = test_tensor(&[n, fout], 6);
        let (xv, wv, gv) = (
            x.to_vec().unwrap(),
            w.to_vec().unwrap(),
            dy.to_vec().unwrap(),
        );
        let g = linear_backward(&x, &w, &dy, LinearNeed::ALL).unwrap();
        let dx = g.dx.unwrap().to_vec().unwrap();
        let dw = g.dw.unwrap().to_vec().unwrap();
        let db = g.db.unwrap().to_vec().unwrap();
        for r in 0..n {
            for k in 0..fin {
                let e: f64 = (0..fout)
                    .map(|o| gv[r * fout + o] as f64 * wv[o * fin + k] as f64)
                    .sum();
                assert!((dx[r * fin + k] as f64 - e).abs() < 1e-5);
            }
        }
        for o in 0..fout {
            for k in 0..fin {
                let e: f64 = (0..n)
                    .map(|r| gv[r * fout + o] as f64 * xv[r * fin + k] as f64)
                    .sum();
                assert!((dw[o * fin + k] as f64 - e).abs() < 1e-5);
            }
            let e: f64 = (0..n).map(|r| gv[r * fout + o] as f64).sum();
            assert!((db[o] as f64 - e).abs() < 1e-6);
        }
        let g = linear_backward(
            &x,
            &w,
            &dy,
            LinearNeed {
                dx: false,
                dw: true,
                db: false,
            },
        )
        .unwrap();
        assert!(g.dx.is_none() && g.dw.is_some() && g.db.is_none());
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let x = test_tensor(&[3, 5], 1);
        let w = test_tensor(&[7, 4], 1);
        let msg = linear(&x, &w, None).unwrap_err().to_string();
        assert!(msg.contains("[3, 5]") && msg.contains("[7, 4]"), "{msg}");
        let w = test_tensor(&[7, 5], 1);
        let b = test_tensor(&[6], 1);
        let msg = linear(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(msg.contains("[6]"), "{msg}");
        let dy = test_tensor(&[3, 6], 1);
        let msg = linear_backward(&x, &w, &dy, LinearNeed::ALL)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("[3, 6]"), "{msg}");
        assert!(linear(&test_tensor(&[3, 5, 1], 1), &w, None).is_err());
    }
}
