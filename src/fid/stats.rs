//! Feature statistics and the Fréchet distance between two Gaussians, in f64.
//!
//! FID = |μ₁ − μ₂|² + tr C₁ + tr C₂ − 2 tr (C₁ C₂)^½.
//!
//! The reference implementations take `scipy.linalg.sqrtm(C₁ C₂)`, a Schur-based square root of a
//! non-symmetric matrix that goes complex (and is then cut to its real part) when the product is
//! ill-conditioned, which it always is with fewer samples than dimensions. Only the *trace* of the root is
//! needed. For any factor C₁ = L Lᵀ, C₁ C₂ has the non-zero eigenvalues of the symmetric positive
//! semi-definite M = Lᵀ C₂ L (the same holds for S = C₁^½ as L: M = S C₂ S is the usual stable form), so
//! tr (C₁ C₂)^½ = Σ √λᵢ(M). L comes from a pivoted Cholesky factorisation, which stops at C₁'s numerical rank
//! (r ≤ n − 1 for n samples), and M's eigenvalues from a symmetric eigen-solver: no eigenvectors are needed,
//! which matters because nalgebra's generic eigenvector accumulation is slow in unoptimised (dev) builds.
//! Negative eigenvalues left by rounding are clamped to zero (they are noise around a true zero).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use nalgebra::{DMatrix, DVector};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// Mean and (unbiased, like `numpy.cov`) covariance of `n` feature vectors of length `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    pub n: usize,
    pub mu: DVector<f64>,
    pub sigma: DMatrix<f64>,
}

/// The safetensors metadata key that says which images a cached statistics file describes.
const KEY_META: &str = "gan_engine_fid_key";
const FORMAT_META: &str = "format";
const FORMAT: &str = "gan-engine-fid-stats-v1";

impl FeatureStats {
    /// Statistics of `features`, row-major [n, dim]. Needs n ≥ 2 (the covariance divides by n − 1).
    pub fn from_features(features: &[f32], dim: usize) -> Result<FeatureStats> {
        ensure!(dim > 0, "feature dimension must be positive");
        ensure!(
            features.len().is_multiple_of(dim),
            "{} feature values are not a whole number of {dim}-vectors",
            features.len()
        );
        let n = features.len() / dim;
        ensure!(
            n >= 2,
            "FID needs at least 2 images per set for a covariance, got {n}"
        );
        ensure!(
            features.iter().all(|v| v.is_finite()),
            "the features contain NaN or infinite values"
        );
        let x = DMatrix::<f64>::from_row_iterator(n, dim, features.iter().map(|&v| v as f64));
        let mu = x.row_mean().transpose();
        // Centre before the product: Σ x xᵀ − n μ μᵀ loses every digit the mean has in common with the data.
        let mut xc = x;
        for mut row in xc.row_iter_mut() {
            row -= mu.transpose();
        }
        let sigma = xc.tr_mul(&xc) / (n as f64 - 1.0);
        Ok(FeatureStats { n, mu, sigma })
    }

    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Writes mean, covariance and `key` (what the statistics describe: data set, image count, preprocessing)
    /// as a safetensors file, atomically.
    pub fn save(&self, path: &Path, key: &str) -> Result<()> {
        let d = self.dim();
        let mu: Vec<u8> = self.mu.iter().flat_map(|v| v.to_le_bytes()).collect();
        // nalgebra is column-major; the covariance is symmetric, so its row-major bytes are the same.
        let sigma: Vec<u8> = self.sigma.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = (self.n as i64).to_le_bytes();
        let views = vec![
            ("mu", TensorView::new(Dtype::F64, vec![d], &mu)?),
            ("sigma", TensorView::new(Dtype::F64, vec![d, d], &sigma)?),
            ("n", TensorView::new(Dtype::I64, vec![1], &n)?),
        ];
        let meta = HashMap::from([
            (FORMAT_META.to_string(), FORMAT.to_string()),
            (KEY_META.to_string(), key.to_string()),
        ]);
        let bytes = safetensors::serialize(views, &Some(meta))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        crate::io::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write FID statistics {}", path.display()))
    }

    /// Reads a file written by [`save`](FeatureStats::save); returns the statistics and their key.
    pub fn load(path: &Path) -> Result<(FeatureStats, String)> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read FID statistics {}", path.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            anyhow!(
                "{} is not a gan-engine FID statistics file ({e})",
                path.display()
            )
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get(FORMAT_META).map(String::as_str) != Some(FORMAT) {
            return Err(bad(&format!("metadata format is not {FORMAT}")));
        }
        let key = meta.get(KEY_META).cloned().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
        let f64s = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let v = st.tensor(name).map_err(|e| bad(&e))?;
            if v.dtype() != Dtype::F64 {
                return Err(bad(&format!("'{name}' is {:?}, expected F64", v.dtype())));
            }
            let data = v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Ok((v.shape().to_vec(), data))
        };
        let (ms, mu) = f64s("mu")?;
        let (ss, sigma) = f64s("sigma")?;
        let nv = st.tensor("n").map_err(|e| bad(&e))?;
        if nv.dtype() != Dtype::I64 || nv.data().len() != 8 {
            return Err(bad(&"'n' must be one I64"));
        }
        let n = i64::from_le_bytes(nv.data().try_into().unwrap());
        let d = mu.len();
        if ms != [d] || ss != [d, d] || n < 2 {
            return Err(bad(&format!(
                "shapes mu {ms:?}, sigma {ss:?}, n {n} do not fit together"
            )));
        }
        Ok((
            FeatureStats {
                n: n as usize,
                mu: DVector::from_vec(mu),
                sigma: DMatrix::from_vec(d, d, sigma),
            },
            key,
        ))
    }
}

/// A factor L [d, r] with A ≈ L Lᵀ of a symmetric positive semi-definite A, r its numerical rank: Cholesky
/// with diagonal pivoting (LAPACK's dpstrf, unblocked), stopped when every remaining pivot is below
/// d·ε·max diag(A) — what is left is rounding noise around the zero eigenvalues of a singular covariance.
/// Rows keep A's variable order. O(d² r): with fewer samples than dimensions the covariance's rank is small.
pub fn pivoted_cholesky(a: &DMatrix<f64>) -> DMatrix<f64> {
    let d = a.nrows();
    let mut diag: Vec<f64> = (0..d).map(|i| a[(i, i)]).collect();
    let max = diag.iter().cloned().fold(0.0, f64::max);
    let tol = d as f64 * f64::EPSILON * max;
    let mut done = vec![false; d];
    // Columns of L, each of length d (zero on the rows pivoted before it).
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < d {
        let Some((j, &pivot)) = diag
            .iter()
            .enumerate()
            .filter(|(i, _)| !done[*i])
            .max_by(|x, y| x.1.total_cmp(y.1))
        else {
            break;
        };
        if pivot <= tol {
            break;
        }
        let ljj = pivot.sqrt();
        // Column j of the Schur complement: A[:, j] − Σₘ L[:, m]·L[j, m].
        let mut col: Vec<f64> = a.column(j).iter().cloned().collect();
        for c in &cols {
            let f = c[j];
            if f != 0.0 {
                for (x, y) in col.iter_mut().zip(c) {
                    *x -= f * y;
                }
            }
        }
        for (i, x) in col.iter_mut().enumerate() {
            if done[i] {
                *x = 0.0;
            } else if i == j {
                *x = ljj;
            } else {
                *x /= ljj;
                diag[i] -= *x * *x;
            }
        }
        done[j] = true;
        cols.push(col);
    }
    let r = cols.len();
    DMatrix::from_fn(d, r, |i, k| cols[k][i])
}

/// tr (A B)^½ for symmetric positive semi-definite A and B: with A = L Lᵀ, A B = L (Lᵀ B L) L⁻ on A's range,
/// so A B has the non-zero eigenvalues of the symmetric r×r matrix Lᵀ B L, and only eigen*values* are needed
/// (no eigenvectors, no square root of a matrix). Factor whichever of A and B has lower rank: the result is
/// the same, the eigenproblem smaller.
pub fn trace_sqrt_product(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let l = pivoted_cholesky(a);
    if l.ncols() == 0 {
        return 0.0;
    }
    let m = l.transpose() * (b * &l);
    // Symmetrise: the product is symmetric in exact arithmetic, and the eigen-solver reads one triangle.
    let m = (&m + m.transpose()) * 0.5;
    m.symmetric_eigenvalues()
        .iter()
        .map(|x| x.max(0.0).sqrt())
        .sum()
}

/// The Fréchet distance between N(μ₁, C₁) and N(μ₂, C₂): the FID of two feature sets.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        bail!(
            "cannot compare statistics of {}-d features with {}-d features",
            a.dim(),
            b.dim()
        );
    }
    let d = a.dim();
    ensure!(
        a.sigma.shape() == (d, d) && b.sigma.shape() == (d, d),
        "covariance shapes {:?} / {:?} do not match the {d}-d means",
        a.sigma.shape(),
        b.sigma.shape()
    );
    let mean_term = (&a.mu - &b.mu).norm_squared();
    // The smaller sample has the lower-rank covariance (rank ≤ n − 1): factor that one.
    let (x, y) = if b.n < a.n {
        (&b.sigma, &a.sigma)
    } else {
        (&a.sigma, &b.sigma)
    };
    let tr = a.sigma.trace() + b.sigma.trace() - 2.0 * trace_sqrt_product(x, y);
    let fid = mean_term + tr;
    ensure!(fid.is_finite(), "FID is not finite ({fid})");
    Ok(fid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(mu: Vec<f64>, sigma: DMatrix<f64>) -> FeatureStats {
        FeatureStats {
            n: 10,
            mu: DVector::from_vec(mu),
            sigma,
        }
    }

    /// A random symmetric PSD matrix of rank ≤ r: Aᵀ A / r with A [r, d] from a fixed LCG.
    fn random_psd(d: usize, r: usize, seed: u64) -> DMatrix<f64> {
        let mut s = seed;
        let a = DMatrix::<f64>::from_fn(r, d, |_, _| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        });
        a.tr_mul(&a) / r as f64
    }

    #[test]
    fn identical_statistics_are_at_distance_zero() {
        // Rank-deficient C (r < d) gives 0 too: tr C + tr C − 2 tr C, the factor stopping at C's rank.
        for (d, r, tol) in [(7, 20, 1e-12), (13, 5, 1e-12)] {
            let c = random_psd(d, r, 3);
            let s = stats((0..d).map(|i| i as f64 * 0.3).collect(), c);
            let f = frechet_distance(&s, &s).unwrap();
            assert!(f.abs() < tol * s.sigma.trace(), "d {d} r {r}: {f}");
        }
    }

    #[test]
    fn pivoted_cholesky_reconstructs_and_finds_the_rank() {
        for (d, r) in [(9, 30), (11, 4), (6, 1)] {
            let a = random_psd(d, r, 5);
            let l = pivoted_cholesky(&a);
            assert_eq!(l.ncols(), d.min(r), "d {d} r {r}");
            let err = (&l * l.transpose() - &a).abs().max();
            assert!(err < 1e-13 * a.abs().max(), "d {d} r {r}: {err}");
        }
        assert_eq!(pivoted_cholesky(&DMatrix::zeros(4, 4)).ncols(), 0);
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // Commuting diagonal covariances: tr (C1 C2)^½ = Σ √(a_i b_i), so FID = |Δμ|² + Σ (√a_i − √b_i)².
        let a = [0.5, 2.0, 3.25, 0.0, 9.0];
        let b = [4.0, 2.0, 0.75, 1.5, 1e-3];
        let ma = vec![1.0, -2.0, 0.5, 0.0, 3.0];
        let mb = vec![0.0, -2.5, 0.5, 1.0, 2.0];
        let expect: f64 = ma
            .iter()
            .zip(&mb)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            + a.iter()
                .zip(&b)
                .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let sa = stats(ma, DMatrix::from_diagonal(&DVector::from_row_slice(&a)));
        let sb = stats(mb, DMatrix::from_diagonal(&DVector::from_row_slice(&b)));
        let f = frechet_distance(&sa, &sb).unwrap();
        assert!((f - expect).abs() < 1e-12, "{f} vs {expect}");
        // Symmetric in its arguments.
        let g = frechet_distance(&sb, &sa).unwrap();
        assert!((f - g).abs() < 1e-12);
    }

    #[test]
    fn rotated_covariances_keep_the_distance() {
        // FID is invariant under a common orthogonal change of basis: rotate diagonal covariances by a Givens
        // rotation and the answer must stay the closed form.
        let (a, b) = ([1.0, 4.0, 0.25], [9.0, 1.0, 0.25]);
        let expect: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
            .sum();
        let (c, s) = (0.6f64, 0.8f64);
        let q = DMatrix::from_row_slice(3, 3, &[c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]);
        let rot =
            |d: &[f64; 3]| &q * DMatrix::from_diagonal(&DVector::from_row_slice(d)) * q.transpose();
        let f =
            frechet_distance(&stats(vec![0.0; 3], rot(&a)), &stats(vec![0.0; 3], rot(&b))).unwrap();
        assert!((f - expect).abs() < 1e-10, "{f} vs {expect}");
    }

    #[test]
    fn mean_and_covariance_follow_numpy() {
        // numpy: np.mean(x, 0) and np.cov(x, rowvar=False) of [[1,2],[3,5],[4,4],[0,1]].
        let x = [1.0f32, 2.0, 3.0, 5.0, 4.0, 4.0, 0.0, 1.0];
        let s = FeatureStats::from_features(&x, 2).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.mu.as_slice(), &[2.0, 3.0]);
        let want = [10.0 / 3.0, 3.0, 3.0, 10.0 / 3.0];
        for (g, w) in s.sigma.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{:?}", s.sigma);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = |r: Result<FeatureStats>| format!("{:#}", r.unwrap_err());
        assert!(e(FeatureStats::from_features(&[1.0, 2.0], 2)).contains("at least 2"));
        assert!(e(FeatureStats::from_features(&[1.0, 2.0, 3.0], 2)).contains("whole number"));
        assert!(e(FeatureStats::from_features(&[1.0, f32::NAN, 3.0, 4.0], 2)).contains("NaN"));
        let a = stats(vec![0.0; 2], DMatrix::identity(2, 2));
        let b = stats(vec![0.0; 3], DMatrix::identity(3, 3));
        assert!(format!("{:#}", frechet_distance(&a, &b).unwrap_err()).contains("3-d"));
    }

    #[test]
    fn statistics_files_round_trip_and_reject_others() {
        let dir = tempfile::tempdir().unwrap();
        let c = random_psd(5, 9, 1);
        let s = FeatureStats {
            n: 9,
            mu: DVector::from_vec(vec![0.1, -0.2, 0.3, 1e-9, 5.0]),
            sigma: c,
        };
        let p = dir.path().join("sub/real.safetensors");
        s.save(&p, "mnist test n=9").unwrap();
        let (t, key) = FeatureStats::load(&p).unwrap();
        assert_eq!((t, key.as_str()), (s, "mnist test n=9"));
        let other = dir.path().join("x.safetensors");
        std::fs::write(&other, b"not a safetensors file").unwrap();
        let e = format!("{:#}", FeatureStats::load(&other).unwrap_err());
        assert!(e.contains("not a gan-engine FID statistics file"), "{e}");
    }
}
