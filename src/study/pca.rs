//! Principal component analysis of a few hundred high-dimensional points (the discriminator features of
//! `dfeatures`).
//!
//! The points are centred and the top components come from the eigen-decomposition of whichever of the two
//! small symmetric matrices is smaller: the d×d scatter matrix XᵀX when there are fewer dimensions than points,
//! otherwise the n×n Gram matrix XXᵀ (a 32·16·16 = 8192-wide feature map of 512 images gives a 512×512 problem
//! instead of an 8192×8192 one). Both have the same non-zero eigenvalues; a Gram eigenvector u with eigenvalue
//! λ maps to the unit component v = Xᵀu/√λ.
//!
//! The eigen-decomposition itself is nalgebra's `SymmetricEigen` (Householder tridiagonalisation + implicit
//! QR): a well-tested solver that handles a 512×512 matrix in milliseconds, where a hand-written Jacobi or power
//! iteration would be slower, less accurate on close eigenvalues and one more thing to get wrong.

use anyhow::{ensure, Result};
use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

/// The top-k principal components of a point set.
#[derive(Clone, Debug)]
pub struct Pca {
    /// The mean point (length d).
    pub mean: Vec<f64>,
    /// k unit vectors of length d, by decreasing variance. A component whose variance is zero (fewer distinct
    /// directions than k) is all zeros. The sign of each is fixed by making its largest entry positive.
    pub components: Vec<Vec<f64>>,
    /// The variance along each component (sample variance, divisor n − 1).
    pub variances: Vec<f64>,
    /// The total variance of the points (the sum over all d dimensions).
    pub total_variance: f64,
    /// The coordinates of each point on the components (n rows of k).
    pub scores: Vec<Vec<f64>>,
}

impl Pca {
    /// The fraction of the total variance that component `i` explains (0 when there is no variance at all).
    pub fn explained(&self, i: usize) -> f64 {
        if self.total_variance > 0.0 {
            self.variances[i] / self.total_variance
        } else {
            0.0
        }
    }
}

/// PCA of `n` points of dimension `d`, stored row by row in `rows`, keeping `k` components.
pub fn pca(rows: &[f32], n: usize, d: usize, k: usize) -> Result<Pca> {
    // The smaller matrix: equal sizes could go either way.
    pca_via(rows, n, d, k, d > n)
}

/// [`pca`] with the route chosen by the caller (`gram`: eigenvectors of XXᵀ, else of XᵀX), so tests can check
/// that the two agree.
fn pca_via(rows: &[f32], n: usize, d: usize, k: usize, gram: bool) -> Result<Pca> {
    ensure!(
        rows.len() == n * d,
        "PCA: {} values given for {n} points of dimension {d}",
        rows.len()
    );
    ensure!(n >= 2, "PCA needs at least 2 points, got {n}");
    ensure!(
        k >= 1 && k <= n.min(d),
        "PCA: cannot keep {k} components of {n} points of dimension {d}"
    );
    ensure!(
        rows.iter().all(|v| v.is_finite()),
        "PCA: the points contain NaN or infinite values"
    );
    let mut mean = vec![0f64; d];
    for r in rows.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Centred in f64: the features are f32, but sums over hundreds of squared values want the extra precision.
    let x: Vec<f64> = rows
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m))
        .collect();

    let (m, vectors) = if gram {
        (gram_matrix(&x, n, d), n)
    } else {
        // XᵀX as the Gram matrix of the columns.
        let mut xt = vec![0f64; d * n];
        for i in 0..n {
            for j in 0..d {
                xt[j * n + i] = x[i * d + j];
            }
        }
        (gram_matrix(&xt, d, n), d)
    };
    let trace: f64 = (0..vectors).map(|i| m[(i, i)]).sum();
    let eig = SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..vectors).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));

    // Eigenvalues below this are rounding noise of a zero-variance direction (their eigenvectors arbitrary).
    let tiny = trace.abs() * 1e-12 + f64::MIN_POSITIVE;
    let mut components = Vec::with_capacity(k);
    let mut variances = Vec::with_capacity(k);
    for &idx in order.iter().take(k) {
        let lambda = eig.eigenvalues[idx];
        let e = eig.eigenvectors.column(idx);
        let mut v = if lambda <= tiny {
            vec![0f64; d]
        } else if gram {
            let s = lambda.sqrt();
            let mut v = vec![0f64; d];
            for (i, r) in x.chunks_exact(d).enumerate() {
                let w = e[i] / s;
                for (vj, &xj) in v.iter_mut().zip(r) {
                    *vj += w * xj;
                }
            }
            v
        } else {
            e.iter().copied().collect()
        };
        // Eigenvectors are defined up to sign; a fixed rule keeps plots from flipping between runs.
        let big = v
            .iter()
            .copied()
            .fold(0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if big < 0.0 {
            v.iter_mut().for_each(|c| *c = -*c);
        }
        variances.push(lambda.max(0.0) / (n - 1) as f64);
        components.push(v);
    }
    let scores = x
        .chunks_exact(d)
        .map(|r| {
            components
                .iter()
                .map(|c| c.iter().zip(r).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    Ok(Pca {
        mean,
        components,
        variances,
        total_variance: trace / (n - 1) as f64,
        scores,
    })
}

/// The m×m matrix of dot products of the `m` rows (length `len`) of `a`, upper triangle computed in parallel.
fn gram_matrix(a: &[f64], m: usize, len: usize) -> DMatrix<f64> {
    let upper: Vec<Vec<f64>> = (0..m)
        .into_par_iter()
        .map(|i| {
            let ri = &a[i * len..(i + 1) * len];
            (i..m)
                .map(|j| {
                    let rj = &a[j * len..(j + 1) * len];
                    ri.iter().zip(rj).map(|(p, q)| p * q).sum()
                })
                .collect()
        })
        .collect();
    let mut g = DMatrix::zeros(m, m);
    for (i, row) in upper.iter().enumerate() {
        for (off, &v) in row.iter().enumerate() {
            g[(i, i + off)] = v;
            g[(i + off, i)] = v;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// `a` equals `b` or `-b` (a principal axis has no sign).
    fn assert_axis(a: &[f64], b: &[f64], tol: f64) {
        let same = a.iter().zip(b).all(|(x, y)| close(*x, *y, tol));
        let flip = a.iter().zip(b).all(|(x, y)| close(*x, -*y, tol));
        assert!(same || flip, "{a:?} is not ±{b:?}");
    }

    #[test]
    fn points_on_a_line_have_one_component() {
        // Seven points at parameters t along the unit direction (1, 2, 2)/3, offset from the origin.
        let dir = [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0];
        let offset = [5.0, -1.0, 2.5];
        let t = [-3.0, -1.0, 0.0, 0.5, 2.0, 4.0, 5.5];
        let rows: Vec<f32> = t
            .iter()
            .flat_map(|&t| (0..3).map(move |j| (offset[j] + t * dir[j]) as f32))
            .collect();
        let tm = t.iter().sum::<f64>() / 7.0;
        let var_t = t.iter().map(|x| (x - tm).powi(2)).sum::<f64>() / 6.0;
        for gram in [false, true] {
            let p = pca_via(&rows, 7, 3, 2, gram).unwrap();
            assert_axis(&p.components[0], &dir, 1e-5);
            assert!(close(p.variances[0], var_t, 1e-5), "{:?}", p.variances);
            assert!(p.variances[1] < 1e-9 * var_t, "{:?}", p.variances);
            assert!(close(p.explained(0), 1.0, 1e-6));
            // Scores are the centred parameters, all with the same sign convention.
            let s = if p.scores[0][0] * (t[0] - tm) > 0.0 {
                1.0
            } else {
                -1.0
            };
            for (row, &ti) in p.scores.iter().zip(&t) {
                assert!(close(row[0], s * (ti - tm), 1e-5), "{row:?} vs {ti}");
                assert!(row[1].abs() < 1e-4, "{row:?}");
            }
            assert!(close(p.mean[0], offset[0] + tm * dir[0], 1e-6));
        }
    }

    /// Twelve points evenly spaced on an ellipse with semi-axes 3 and 1, rotated by 0.4 rad in the plane of two
    /// coordinate axes (`ax`, `ay`) of a `d`-dimensional space and shifted: the components are the rotated
    /// axes, the variances a²·n/(2(n−1)) and b²·n/(2(n−1)), and the scores (±a cos θ, ±b sin θ).
    fn ellipse(d: usize, ax: usize, ay: usize) {
        let (n, a, b, phi) = (12usize, 3.0f64, 1.0f64, 0.4f64);
        let (c, s) = (phi.cos(), phi.sin());
        let theta: Vec<f64> = (0..n)
            .map(|j| 2.0 * std::f64::consts::PI * j as f64 / n as f64)
            .collect();
        let mut rows = vec![0f32; n * d];
        for (j, th) in theta.iter().enumerate() {
            let (u, v) = (a * th.cos(), b * th.sin());
            let r = &mut rows[j * d..(j + 1) * d];
            for (k, x) in r.iter_mut().enumerate() {
                *x = 0.25 * k as f32; // the shift
            }
            r[ax] += (c * u - s * v) as f32;
            r[ay] += (s * u + c * v) as f32;
        }
        let mut major = vec![0f64; d];
        let mut minor = vec![0f64; d];
        (major[ax], major[ay]) = (c, s);
        (minor[ax], minor[ay]) = (-s, c);
        let p = pca(&rows, n, d, 2).unwrap();
        assert_axis(&p.components[0], &major, 1e-5);
        assert_axis(&p.components[1], &minor, 1e-5);
        let scale = n as f64 / (2.0 * (n - 1) as f64);
        assert!(
            close(p.variances[0], a * a * scale, 1e-5),
            "{:?}",
            p.variances
        );
        assert!(
            close(p.variances[1], b * b * scale, 1e-5),
            "{:?}",
            p.variances
        );
        assert!(close(p.total_variance, (a * a + b * b) * scale, 1e-5));
        let (s0, s1) = (p.scores[0][0].signum(), p.scores[3][1].signum());
        for (row, th) in p.scores.iter().zip(&theta) {
            assert!(close(row[0], s0 * a * th.cos(), 1e-5), "{row:?}");
            assert!(close(row[1], s1 * b * th.sin(), 1e-5), "{row:?}");
        }
    }

    #[test]
    fn ellipse_axes_through_the_scatter_matrix() {
        // d < n: the d×d route.
        ellipse(5, 1, 3);
    }

    #[test]
    fn ellipse_axes_through_the_gram_matrix() {
        // d > n: the n×n route.
        ellipse(31, 7, 22);
    }

    #[test]
    fn both_routes_agree_on_random_points() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (n, d) = (13, 9);
        // Anisotropic, so the top two variances are well separated.
        let rows: Vec<f32> = (0..n * d)
            .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i % d) as f32))
            .collect();
        let a = pca_via(&rows, n, d, 3, false).unwrap();
        let b = pca_via(&rows, n, d, 3, true).unwrap();
        for i in 0..3 {
            assert!(close(a.variances[i], b.variances[i], 1e-9));
            assert_axis(&a.components[i], &b.components[i], 1e-6);
            let norm: f64 = a.components[i].iter().map(|x| x * x).sum();
            assert!(close(norm, 1.0, 1e-9));
        }
        // Same sign rule on both routes, so identical scores.
        for (ra, rb) in a.scores.iter().zip(&b.scores) {
            for (x, y) in ra.iter().zip(rb) {
                assert!(close(*x, *y, 1e-6), "{ra:?} {rb:?}");
            }
        }
        assert!(a.variances[0] >= a.variances[1] && a.variances[1] >= a.variances[2]);
    }

    #[test]
    fn identical_points_have_no_variance() {
        let rows = vec![1.5f32; 4 * 6];
        let p = pca(&rows, 4, 6, 2).unwrap();
        assert_eq!(p.total_variance, 0.0);
        assert_eq!(p.explained(0), 0.0);
        assert!(p.scores.iter().flatten().all(|&s| s == 0.0));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = pca(&[1.0, 2.0], 1, 2, 1).unwrap_err().to_string();
        assert!(e.contains("at least 2 points"), "{e}");
        let e = pca(&[1.0; 6], 2, 3, 3).unwrap_err().to_string();
        assert!(e.contains("cannot keep 3 components"), "{e}");
        let e = pca(&[1.0; 5], 2, 3, 1).unwrap_err().to_string();
        assert!(e.contains("5 values"), "{e}");
        let e = pca(&[1.0, f32::NAN, 0.0, 2.0], 2, 2, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN"), "{e}");
    }
}
