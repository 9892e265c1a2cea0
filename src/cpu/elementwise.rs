//! Elementwise arithmetic and the full sum.
//!
//! Large tensors are split into fixed-size chunks that rayon spreads over threads; small ones stay in one
//! chunk, so they never pay for more than one task. Every output starts as NaN so a chunk that is never
//! written shows up in the tests instead of passing as zeros.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::{data, data_mut, output_buffer, tensor};
use crate::tensor::Tensor;

/// Elements per parallel task: big enough that the task overhead (~µs) is noise next to the work.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// Errors unless `a` and `b` have the same shape; `op` names the caller in the message.
pub(crate) fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    ensure!(
        a.shape() == b.shape(),
        "{op}: shape mismatch: {:?} vs {:?}",
        a.shape(),
        b.shape()
    );
    Ok(())
}

/// out[i] = f(a[i], b[i]) over two same-shaped tensors.
fn zip_map(op: &str, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let (ad, bd) = (data(a)?, data(b)?);
    let mut out = output_buffer(ad.len());
    out.par_chunks_mut(PAR_CHUNK)
        .zip(ad.par_chunks(PAR_CHUNK))
        .zip(bd.par_chunks(PAR_CHUNK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    Ok(tensor(out, a.shape()))
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("add", a, b, |a, b| a + b)
}

pub fn add_assign(a: &mut Tensor, b: &Tensor) -> Result<()> {
    same_shape("add_assign", a, b)?;
    let bd = data(b)?;
    // Copy-on-write: if `a`'s buffer is shared (e.g. still held by a tape node) this copies it first, so the
    // other holders never see the accumulation.
    let ad = data_mut(a)?;
    ad.par_chunks_mut(PAR_CHUNK)
        .zip(bd.par_chunks(PAR_CHUNK))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        });
    Ok(())
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("mul", a, b, |a, b| a * b)
}

pub fn affine(a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    let ad = data(a)?;
    let mut out = output_buffer(ad.len());
    out.par_chunks_mut(PAR_CHUNK)
        .zip(ad.par_chunks(PAR_CHUNK))
        .for_each(|(o, a)| {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = alpha * a + beta;
            }
        });
    Ok(tensor(out, a.shape()))
}

/// Sum of `f(i)` over `0..n`, accumulated in f64. The per-chunk partials are collected in order and added
/// sequentially, so the result does not depend on how rayon scheduled the chunks (bit-reproducible runs).
pub(crate) fn sum_f64(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let chunks = n.div_ceil(PAR_CHUNK);
    let partials: Vec<f64> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let end = ((c + 1) * PAR_CHUNK).min(n);
            (c * PAR_CHUNK..end).map(&f).sum::<f64>()
        })
        .collect();
    partials.iter().sum()
}

/// Sum of all elements as a [1] tensor. f64 accumulation keeps a sum of millions of f32 values exact to
/// f32 precision (a plain f32 running sum loses digits once the total dwarfs each term).
pub fn sum(a: &Tensor) -> Result<Tensor> {
    let ad = data(a)?;
    let s = sum_f64(ad.len(), |i| ad[i] as f64);
    Ok(tensor(vec![s as f32], &[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, test_values};

    #[test]
    fn add_mul_affine_values() {
        let a = test_tensor(&[3, 5, 7], 1);
        let b = test_tensor(&[3, 5, 7], 2);
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        let s = add(&a, &b).unwrap().to_vec().unwrap();
        let p = mul(&a, &b).unwrap().to_vec().unwrap();
        let f = affine(&a, -1.5, 0.25).unwrap().to_vec().unwrap();
        for i in 0..av.len() {
            assert_eq!(s[i], av[i] + bv[i]);
            assert_eq!(p[i], av[i] * bv[i]);
            assert_eq!(f[i], -1.5 * av[i] + 0.25);
        }
    }

    #[test]
    fn add_assign_large_and_copy_on_write() {
        // Spans several parallel chunks, with a ragged tail.
        let n = 3 * PAR_CHUNK + 17;
        let mut a = tensor(test_values(n, 3), &[n]);
        let keep = a.clone(); // shares the buffer: must not see the update
        let b = tensor(test_values(n, 4), &[n]);
        add_assign(&mut a, &b).unwrap();
        let (av, kv, bv) = (
            a.to_vec().unwrap(),
            keep.to_vec().unwrap(),
            b.to_vec().unwrap(),
        );
        for i in 0..n {
            assert_eq!(av[i], kv[i] + bv[i]);
        }
    }

    #[test]
    fn sum_is_accurate_for_large_inputs() {
        // 0.1 is not representable; a naive f32 running sum of 3M of them drifts by a few percent.
        let n = 3_000_001;
        let a = tensor(vec![0.1; n], &[n]);
        let s = sum(&a).unwrap();
        assert_eq!(s.shape(), &[1]);
        let expect = 0.1f32 as f64 * n as f64;
        assert!((s.scalar().unwrap() as f64 - expect).abs() < 1e-6 * expect);
        // A small sum against a direct f64 sum.
        let b = test_tensor(&[3, 5, 7], 9);
        let direct: f64 = b.to_vec().unwrap().iter().map(|&x| x as f64).sum();
        assert!((sum(&b).unwrap().scalar().unwrap() as f64 - direct).abs() < 1e-6);
    }

    #[test]
    fn shape_mismatch_is_an_error_naming_the_shapes() {
        let a = test_tensor(&[2, 3], 1);
        let b = test_tensor(&[3, 2], 1);
        for e in [
            add(&a, &b).unwrap_err(),
            mul(&a, &b).unwrap_err(),
            add_assign(&mut a.clone(), &b).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
        }
    }
}
