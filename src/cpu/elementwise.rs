//! Elementwise arithmetic and the full sum.
//!
//! Large tensors are split into fixed-size chunks that rayon spreads over threads; small ones stay in one
//! chunk, so they never pay for more than one task. The pointwise maps ([`par_map`], [`par_zip_map`]) write
//! their outputs into fresh, uncleared memory: each output chunk is paired with the input chunk of the same
//! length and every element is written, so nothing is left to poison.

use std::mem::MaybeUninit;

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::{data, data_mut, tensor};
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

/// `f(x[i])` for every element, in parallel chunks. The output is not cleared or poisoned first: a 16 MB
/// output's clearing pass (a NaN fill, or calloc's memset of recycled heap memory) cost as much as the map
/// itself (docs/perf-notes.md). Generic over `f` so each caller gets its own monomorphised loop that LLVM
/// vectorises.
pub(crate) fn par_map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    par_map_runs(x, PAR_CHUNK, |_| &f)
}

/// `f(a[i], b[i])` for every element of two equally long slices; as [`par_map`].
pub(crate) fn par_zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    par_zip_map_runs(a, b, PAR_CHUNK, |_| &f)
}

/// [`par_map`] where the function depends on the run: `x` is cut into runs of `run` values (the last may be
/// shorter) and run r's values go through `make(r)` (batch norm: one run per (sample, channel) plane).
pub(crate) fn par_map_runs<F: Fn(f32) -> f32>(
    x: &[f32],
    run: usize,
    make: impl Fn(usize) -> F + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(run.max(1))
        .zip(x.par_chunks(run.max(1)))
        .enumerate()
        .for_each(|(r, (o, x))| {
            let f = make(r);
            for (o, &x) in o.iter_mut().zip(x) {
                o.write(f(x));
            }
        });
    // SAFETY: the first x.len() slots were cut into the same chunk lengths as `x` (both have x.len()
    // elements) and the loop wrote every slot of every chunk.
    unsafe { out.set_len(x.len()) };
    out
}

/// The two-input form of [`par_map_runs`].
pub(crate) fn par_zip_map_runs<F: Fn(f32, f32) -> f32>(
    a: &[f32],
    b: &[f32],
    run: usize,
    make: impl Fn(usize) -> F + Sync,
) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "par_zip_map: the callers check shapes");
    let mut out: Vec<f32> = Vec::with_capacity(a.len());
    let slots: &mut [MaybeUninit<f32>] = &mut out.spare_capacity_mut()[..a.len()];
    slots
        .par_chunks_mut(run.max(1))
        .zip(a.par_chunks(run.max(1)).zip(b.par_chunks(run.max(1))))
        .enumerate()
        .for_each(|(r, (o, (a, b)))| {
            let f = make(r);
            for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
                o.write(f(a, b));
            }
        });
    // SAFETY: as in `par_map_runs`: a, b and the slots have the same length, so every slot was written.
    unsafe { out.set_len(a.len()) };
    out
}

/// out[i] = f(a[i], b[i]) over two same-shaped tensors.
fn zip_map(op: &str, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let out = par_zip_map(data(a)?, data(b)?, f);
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

/// x = alpha·x + beta in place (copy-on-write if `x` is shared).
pub fn affine_assign(x: &mut Tensor, alpha: f32, beta: f32) -> Result<()> {
    data_mut(x)?
        .par_chunks_mut(PAR_CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = alpha * *v + beta));
    Ok(())
}

pub fn affine(a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    let out = par_map(data(a)?, |a| alpha * a + beta);
    Ok(tensor(out, a.shape()))
}

pub fn powf(a: &Tensor, p: f32) -> Result<Tensor> {
    let out = par_map(data(a)?, |a| a.powf(p));
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

    /// The uncleared-output maps write every element at every length: empty, shorter than a chunk, a chunk
    /// exactly, and several chunks with a ragged tail.
    #[test]
    fn par_maps_write_every_element() {
        for n in [0, 1, 7, PAR_CHUNK - 1, PAR_CHUNK, 2 * PAR_CHUNK + 3] {
            let a = test_values(n, 3);
            let b = test_values(n, 4);
            let want1: Vec<f32> = a.iter().map(|x| 2.0 * x - 1.0).collect();
            assert_eq!(par_map(&a, |x| 2.0 * x - 1.0), want1, "par_map, n = {n}");
            let want2: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y + 0.5).collect();
            let got2 = par_zip_map(&a, &b, |x, y| x * y + 0.5);
            assert_eq!(got2, want2, "par_zip_map, n = {n}");
        }
    }

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
