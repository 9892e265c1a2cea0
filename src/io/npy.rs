//! NumPy `.npy` files: latent vectors in (so a run can render the exact `z` a PyTorch script used) and
//! tensors out (so results can be checked in NumPy).
//!
//! Reading accepts float32 or float64 (converted), either byte order, C or Fortran layout. The declared size is
//! checked against the file before anything is allocated, so a corrupt header cannot make us reserve
//! gigabytes.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::device::Device;
use crate::tensor::Tensor;

use super::atomic::write_atomic_with;

/// Reads a float32/float64 `.npy` file into a tensor of the same shape on `device` (a 0-d array becomes
/// shape `[]`, one element).
pub fn read_npy(path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
    let path = path.as_ref();
    let (shape, data) = read_f32(path)?;
    Tensor::from_vec(data, &shape, device).with_context(|| format!("loading {}", path.display()))
}

/// Reads latent vectors: a `.npy` of shape `[N, nz]` or `[N, nz, 1, 1]` (the layout DCGAN generators take in
/// PyTorch). Returns the tensor with the file's shape, so a `[N, nz, 1, 1]` file stays 4-D.
pub fn read_latents(path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
    let path = path.as_ref();
    let (shape, data) = read_f32(path)?;
    let ok = match shape[..] {
        [n, nz] => n > 0 && nz > 0,
        [n, nz, 1, 1] => n > 0 && nz > 0,
        _ => false,
    };
    ensure!(
        ok,
        "{}: latent vectors must have shape [N, nz] or [N, nz, 1, 1] with N, nz > 0, got {:?}",
        path.display(),
        shape
    );
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: latent {} holds {} (at element {i}); latents must be finite numbers",
            path.display(),
            i / (data.len() / shape[0]),
            data[i]
        );
    }
    Tensor::from_vec(data, &shape, device).with_context(|| format!("loading {}", path.display()))
}

/// Writes `t` as a little-endian float32 `.npy` (C order) with the tensor's shape, atomically.
pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let data = t
        .to_vec()
        .with_context(|| format!("writing {}", path.display()))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    write_atomic_with(path, |w| {
        let mut npy = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()?;
        npy.extend(data.iter().copied())?;
        npy.finish()?;
        Ok(())
    })
}

/// Writes class labels as a 1-D little-endian int64 `.npy` (NumPy's default integer), atomically.
pub fn write_labels_npy(path: impl AsRef<Path>, labels: &[u32]) -> Result<()> {
    let path = path.as_ref();
    write_atomic_with(path, |w| {
        let mut npy = npyz::WriteOptions::<i64>::new()
            .default_dtype()
            .shape(&[labels.len() as u64])
            .writer(w)
            .begin_nd()?;
        npy.extend(labels.iter().map(|&y| y as i64))?;
        npy.finish()?;
        Ok(())
    })
}

fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_f32(&bytes).with_context(|| format!("bad .npy file {}", path.display()))
}

/// Parses an in-memory `.npy`. Separate from the file reading so tests can feed hand-made byte strings.
fn parse_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    ensure!(
        bytes.starts_with(b"\x93NUMPY"),
        "not a NumPy .npy file (missing the \\x93NUMPY magic)"
    );
    let mut rest = bytes;
    let header = NpyHeader::from_reader(&mut rest).context("unreadable .npy header")?;
    let dtype = header.dtype();
    let itemsize = match &dtype {
        DType::Plain(ts)
            if ts.type_char() == TypeChar::Float && matches!(ts.size_field(), 4 | 8) =>
        {
            ts.size_field() as usize
        }
        other => bail!(
            "unsupported dtype '{}': expected float32 or float64",
            other.descr()
        ),
    };
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).context("dimension does not fit in memory"))
        .collect::<Result<_>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("shape overflows")?;
    let expected = count.checked_mul(itemsize).context("shape overflows")?;
    ensure!(
        rest.len() == expected,
        "data size mismatch: shape {:?} of {}-byte floats needs {} bytes, file has {} after the header{}",
        shape,
        itemsize,
        expected,
        rest.len(),
        if rest.len() < expected { " (truncated?)" } else { "" }
    );
    let order = header.order();
    let file = NpyFile::with_header(header, rest);
    let stored: Vec<f32> = if itemsize == 4 {
        file.into_vec::<f32>()?
    } else {
        // f64 -> f32 loses precision that a latent vector or an image never needed.
        file.into_vec::<f64>()?
            .into_iter()
            .map(|x| x as f32)
            .collect()
    };
    let data = match order {
        Order::C => stored,
        Order::Fortran => fortran_to_c(&stored, &shape),
    };
    Ok((shape, data))
}

/// Reorders column-major (first index fastest) data to row-major.
fn fortran_to_c(src: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![f32::NAN; src.len()];
    let mut idx = vec![0usize; shape.len()];
    // Fortran strides: the first axis has stride 1.
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    for o in out.iter_mut() {
        let f: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        *o = src[f];
        // Advance the row-major multi-index (last axis fastest).
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_tensor(data: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// A `.npy` built by hand (format 1.0), so we test against the format, not against npyz's writer alone.
    fn handmade(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let mut h = dict.into_bytes();
        // Header is padded with spaces so that magic(6)+version(2)+len(2)+header ends on a 64-byte boundary.
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(b' ');
        }
        h.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trip_preserves_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [vec![7usize, 13], vec![3, 5, 1, 1], vec![2, 3, 5, 7]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let t = cpu_tensor(data.clone(), &shape);
            let p = dir.path().join("t.npy");
            write_npy(&p, &t).unwrap();
            let back = read_npy(&p, &Device::Cpu).unwrap();
            assert_eq!(back.shape(), &shape[..]);
            assert_eq!(back.to_vec().unwrap(), data);
        }
    }

    #[test]
    fn reads_f64_big_endian_and_fortran_order() {
        let vals = [1.5f64, -2.25, 3.0, 4.125, -5.5, 6.0];
        let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (shape, data) = parse_f32(&handmade("<f8", false, "(2, 3)", &le)).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vals.iter().map(|&v| v as f32).collect::<Vec<_>>());

        let be: Vec<u8> = vals
            .iter()
            .flat_map(|v| (*v as f32).to_be_bytes())
            .collect();
        let (_, data) = parse_f32(&handmade(">f4", false, "(2, 3)", &be)).unwrap();
        assert_eq!(data, vals.iter().map(|&v| v as f32).collect::<Vec<_>>());

        // Fortran layout of the 2x3 matrix [[0,1,2],[3,4,5]] is column by column: 0,3,1,4,2,5.
        let f: Vec<u8> = [0f32, 3., 1., 4., 2., 5.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (shape, data) = parse_f32(&handmade("<f4", true, "(2, 3)", &f)).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![0., 1., 2., 3., 4., 5.]);
    }

    #[test]
    fn fortran_reorder_3d() {
        // shape (2,3,4): C element (i,j,k) = 100i+10j+k; Fortran offset = i + 2j + 6k.
        let shape = [2usize, 3, 4];
        let mut src = vec![0f32; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    src[i + 2 * j + 6 * k] = (100 * i + 10 * j + k) as f32;
                }
            }
        }
        let c = fortran_to_c(&src, &shape);
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    assert_eq!(c[i * 12 + j * 4 + k], (100 * i + 10 * j + k) as f32);
                }
            }
        }
    }

    #[test]
    fn latents_accept_2d_and_4d_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.npy");
        write_npy(&p, &cpu_tensor(vec![0.5; 6 * 11], &[6, 11, 1, 1])).unwrap();
        assert_eq!(
            read_latents(&p, &Device::Cpu).unwrap().shape(),
            &[6, 11, 1, 1]
        );
        write_npy(&p, &cpu_tensor(vec![0.5; 6 * 11], &[6, 11])).unwrap();
        assert_eq!(read_latents(&p, &Device::Cpu).unwrap().shape(), &[6, 11]);
        for bad in [
            vec![66usize],
            vec![6, 11, 1],
            vec![6, 11, 2, 1],
            vec![0, 11],
        ] {
            let n = bad.iter().product();
            write_npy(&p, &cpu_tensor(vec![0.5; n], &bad)).unwrap();
            let err = format!("{:#}", read_latents(&p, &Device::Cpu).unwrap_err());
            assert!(err.contains("[N, nz]") && err.contains("z.npy"), "{err}");
        }
    }

    #[test]
    fn clear_errors_for_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let read_err = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            format!("{:#}", read_npy(&p, &Device::Cpu).unwrap_err())
        };

        let e = read_err(&handmade("<i8", false, "(2,)", &[0u8; 16]));
        assert!(
            e.contains("unsupported dtype") && e.contains("bad.npy"),
            "{e}"
        );
        let e = read_err(&handmade("<f2", false, "(2,)", &[0u8; 4]));
        assert!(e.contains("unsupported dtype"), "{e}");

        let e = read_err(&handmade("<f4", false, "(4, 5)", &[0u8; 40]));
        assert!(e.contains("truncated") && e.contains("80 bytes"), "{e}");
        let e = read_err(&handmade("<f4", false, "(2,)", &[0u8; 12]));
        assert!(e.contains("size mismatch"), "{e}");

        // A header that declares an absurd shape must be rejected before any allocation.
        let e = read_err(&handmade(
            "<f4",
            false,
            "(1000000000000, 1000000)",
            &[0u8; 8],
        ));
        assert!(e.contains("mismatch") || e.contains("overflow"), "{e}");

        let e = read_err(b"PK\x03\x04 this is a zip, not an npy");
        assert!(e.contains("not a NumPy"), "{e}");
        let e = read_err(b"\x93NUMPY\x01\x00\xff");
        assert!(e.contains("header"), "{e}");

        let e = format!(
            "{:#}",
            read_npy(dir.path().join("missing.npy"), &Device::Cpu).unwrap_err()
        );
        assert!(e.contains("missing.npy"), "{e}");
    }
}
