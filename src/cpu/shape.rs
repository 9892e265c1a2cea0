//! Concatenation and slicing along dim 1 (channels of NCHW, features of [N, F]).
//!
//! In row-major layout, one sample of a tensor is a contiguous run of C·inner values (inner = H·W, or 1 for
//! 2-D), so both ops are a sequence of contiguous block copies, one per (sample, input).

use anyhow::{bail, ensure, Result};

use super::{data, output_buffer, tensor};
use crate::tensor::Tensor;

/// Splits a 2-D or 4-D shape into (N, C, inner).
fn split(what: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.shape() {
        &[n, c] => Ok((n, c, 1)),
        &[n, c, h, w] => Ok((n, c, h * w)),
        s => bail!("{what}: expected a 2-D [N, F] or 4-D NCHW tensor, got shape {s:?}"),
    }
}

pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    ensure!(!xs.is_empty(), "concat_channels: no tensors given");
    let first = xs[0];
    let (n, _, inner) = split("concat_channels", first)?;
    let mut total_c = 0;
    for x in xs {
        split("concat_channels", x)?;
        let (a, b) = (first.shape(), x.shape());
        ensure!(
            a.len() == b.len() && a[0] == b[0] && a[2..] == b[2..],
            "concat_channels: shapes {a:?} and {b:?} differ outside dim 1"
        );
        total_c += b[1];
    }
    let mut out = output_buffer(n * total_c * inner);
    let mut dst = 0;
    for s in 0..n {
        for x in xs {
            let block = x.shape()[1] * inner;
            out[dst..dst + block].copy_from_slice(&data(x)?[s * block..(s + 1) * block]);
            dst += block;
        }
    }
    let mut shape = first.shape().to_vec();
    shape[1] = total_c;
    Ok(tensor(out, &shape))
}

pub fn slice_channels(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let (n, c, inner) = split("slice_channels", x)?;
    ensure!(
        start.checked_add(len).is_some_and(|e| e <= c),
        "slice_channels: channels [{start}, {start}+{len}) out of range for shape {:?}",
        x.shape()
    );
    let xd = data(x)?;
    let mut out = output_buffer(n * len * inner);
    for (s, o) in out
        .chunks_exact_mut((len * inner).max(1))
        .take(n)
        .enumerate()
    {
        let src = (s * c + start) * inner;
        o.copy_from_slice(&xd[src..src + len * inner]);
    }
    let mut shape = x.shape().to_vec();
    shape[1] = len;
    Ok(tensor(out, &shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_tensor;

    #[test]
    fn concat_then_slice_roundtrip_4d() {
        let a = test_tensor(&[3, 2, 3, 7], 1);
        let b = test_tensor(&[3, 5, 3, 7], 2);
        let c = test_tensor(&[3, 1, 3, 7], 3);
        let y = concat_channels(&[&a, &b, &c]).unwrap();
        assert_eq!(y.shape(), &[3, 8, 3, 7]);
        assert_eq!(
            slice_channels(&y, 0, 2).unwrap().to_vec().unwrap(),
            a.to_vec().unwrap()
        );
        assert_eq!(
            slice_channels(&y, 2, 5).unwrap().to_vec().unwrap(),
            b.to_vec().unwrap()
        );
        assert_eq!(
            slice_channels(&y, 7, 1).unwrap().to_vec().unwrap(),
            c.to_vec().unwrap()
        );
        // One element by index: y[n=2, c=3, h=1, w=4] is b[2, 1, 1, 4].
        let yv = y.to_vec().unwrap();
        let bv = b.to_vec().unwrap();
        assert_eq!(
            yv[((2 * 8 + 3) * 3 + 1) * 7 + 4],
            bv[((2 * 5 + 1) * 3 + 1) * 7 + 4]
        );
    }

    #[test]
    fn concat_2d() {
        let a = tensor(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = tensor(vec![5.0, 6.0], &[2, 1]);
        let y = concat_channels(&[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.to_vec().unwrap(), [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        assert_eq!(
            slice_channels(&y, 1, 2).unwrap().to_vec().unwrap(),
            [2.0, 5.0, 4.0, 6.0]
        );
    }

    #[test]
    fn errors_name_the_shapes() {
        let a = test_tensor(&[3, 2, 3, 7], 1);
        let b = test_tensor(&[3, 2, 3, 6], 1);
        let msg = concat_channels(&[&a, &b]).unwrap_err().to_string();
        assert!(
            msg.contains("[3, 2, 3, 7]") && msg.contains("[3, 2, 3, 6]"),
            "{msg}"
        );
        let b = test_tensor(&[4, 2, 3, 7], 1);
        assert!(concat_channels(&[&a, &b]).is_err());
        assert!(concat_channels(&[&a, &test_tensor(&[3, 2], 1)]).is_err());
        assert!(concat_channels(&[]).is_err());
        let msg = slice_channels(&a, 1, 2).unwrap_err().to_string();
        assert!(msg.contains("[3, 2, 3, 7]"), "{msg}");
        assert!(slice_channels(&a, usize::MAX, 2).is_err());
        assert!(slice_channels(&test_tensor(&[3, 2, 3], 1), 0, 1).is_err());
    }
}
