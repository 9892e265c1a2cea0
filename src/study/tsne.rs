//! t-SNE of a few hundred high-dimensional points (the discriminator features of `dfeatures --tsne`), through
//! the `bhtsne` crate's Barnes-Hut fit.
//!
//! PCA keeps the directions of largest spread; t-SNE keeps neighbourhoods, so it shows clusters (real images
//! among themselves, generated ones elsewhere, or modes G collapsed onto) that a linear projection can fold on top
//! of each other. Two choices follow the usual practice (van der Maaten's reference code, scikit-learn, openTSNE):
//! - the points are first reduced to their top [`INPUT_DIMS`] principal components: a feature map of 16384
//!   dimensions makes the neighbour search slow and its distances noisy, and the leading components keep the
//!   neighbourhoods;
//! - the embedding starts from the top two components scaled to a standard deviation of 1e-4, not from random
//!   draws. The crate's random start draws from an unseeded generator, so the picture would change from run to
//!   run; a PCA start is deterministic and keeps the global layout that t-SNE alone does not preserve.
//!
//! Distances between t-SNE clusters and cluster sizes mean little; which points sit together is what it shows.

use anyhow::{ensure, Result};
use bhtsne::tSNE;

use super::pca::pca;

/// Principal components fed to t-SNE.
pub const INPUT_DIMS: usize = 50;

/// The perplexity used unless the caller asks for another (scikit-learn's default), lowered for small sets.
pub const DEFAULT_PERPLEXITY: f64 = 30.0;

/// Barnes-Hut accuracy: 0.5 is the reference code's default.
const THETA: f64 = 0.5;

/// Gradient-descent iterations (the reference code's 1000).
const EPOCHS: usize = 1000;

/// The largest perplexity `n` points allow: each point's neighbour list holds 3 × perplexity others.
fn max_perplexity(n: usize) -> f64 {
    (n.saturating_sub(1) / 3) as f64
}

/// A t-SNE fit: one 2-D point per input row, and the perplexity it used.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub points: Vec<[f64; 2]>,
    /// The requested perplexity, lowered to what the point count allows.
    pub perplexity: f64,
}

/// A 2-D t-SNE embedding of `n` points of dimension `d` (`rows`, row-major). The perplexity is lowered to what
/// `n` points allow.
///
/// The fit runs on one thread. The crate adds its forces in parallel, and 1000 iterations of gradient descent
/// amplify the last-bit differences of another summation order into a visibly different picture; the same
/// points must give the same figure every time (a few hundred points take about a second).
pub fn tsne(rows: &[f32], n: usize, d: usize, perplexity: f64) -> Result<Embedding> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()?
        .install(|| tsne_here(rows, n, d, perplexity))
}

fn tsne_here(rows: &[f32], n: usize, d: usize, perplexity: f64) -> Result<Embedding> {
    ensure!(
        perplexity.is_finite() && perplexity >= 1.0,
        "t-SNE: the perplexity must be at least 1, got {perplexity}"
    );
    ensure!(
        n >= 4,
        "t-SNE needs at least 4 points (3 neighbours each), got {n}"
    );
    let perplexity = perplexity.min(max_perplexity(n));
    let p = pca(rows, n, d, INPUT_DIMS.min(d).min(n))?;
    let points: Vec<Vec<f64>> = p.scores.clone();
    let refs: Vec<&[f64]> = points.iter().map(|r| r.as_slice()).collect();
    // The PCA start, scaled so that its first axis has standard deviation 1e-4. Points that are all the same
    // have no neighbourhoods to keep (and would start the tree with an empty extent).
    let sd = p.variances.first().copied().unwrap_or(0.0).sqrt();
    ensure!(
        sd > 0.0 && sd.is_finite(),
        "t-SNE: the {n} points are all the same (no spread to embed)"
    );
    let scale = 1e-4 / sd;
    let init: Vec<f64> = points
        .iter()
        .flat_map(|r| [0, 1].map(|k| r.get(k).copied().unwrap_or(0.0) * scale))
        .collect();
    let mut fit: tSNE<f64, &[f64]> = tSNE::new(&refs);
    fit.perplexity(perplexity)
        .epochs(EPOCHS)
        .initial_embedding(init)
        .barnes_hut(THETA, |a, b| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt()
        });
    let y = fit.embedding();
    ensure!(
        y.len() == 2 * n && y.iter().all(|v| v.is_finite()),
        "t-SNE did not reach finite coordinates"
    );
    Ok(Embedding {
        points: y.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        perplexity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_values;

    /// Two tight, well-separated blobs in 100 dimensions: t-SNE keeps every point's nearest embedded neighbour
    /// in its own blob, and two fits of the same points give the same picture.
    #[test]
    fn separates_two_blobs_and_is_deterministic() {
        let (n, d) = (60, 100);
        let noise = test_values(n * d, 3);
        let rows: Vec<f32> = (0..n * d)
            .map(|i| {
                let centre = if i / d < n / 2 { 0.0 } else { 4.0 };
                let dir = if i % d < 10 { centre } else { 0.0 };
                dir + 0.2 * noise[i]
            })
            .collect();
        let fit = tsne(&rows, n, d, DEFAULT_PERPLEXITY).unwrap();
        assert_eq!(
            fit.perplexity, 19.0,
            "60 points: 59 others, 3 per unit of perplexity"
        );
        let y = &fit.points;
        assert_eq!(y.len(), n);
        let d2 = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2);
        for i in 0..n {
            let nearest = (0..n)
                .filter(|&j| j != i)
                .min_by(|&a, &b| d2(y[i], y[a]).total_cmp(&d2(y[i], y[b])))
                .unwrap();
            assert_eq!(
                i < n / 2,
                nearest < n / 2,
                "point {i}'s neighbour {nearest}"
            );
        }
        // Run beside other work on a busy pool: the same bits.
        let again = rayon::join(
            || tsne(&rows, n, d, DEFAULT_PERPLEXITY).unwrap(),
            || tsne(&rows, n, d, 5.0).unwrap(),
        );
        assert_eq!(fit, again.0);
    }

    #[test]
    fn small_sets_lower_the_perplexity_and_tiny_ones_are_errors() {
        let rows = test_values(8 * 5, 1);
        let fit = tsne(&rows, 8, 5, DEFAULT_PERPLEXITY).unwrap();
        assert_eq!(fit.points.len(), 8);
        assert_eq!(
            fit.perplexity, 2.0,
            "8 points: 7 others, 3 per unit of perplexity"
        );
        let e = format!("{:#}", tsne(&rows[..15], 3, 5, 30.0).unwrap_err());
        assert!(e.contains("at least 4 points"), "{e}");
        let e = format!("{:#}", tsne(&rows, 8, 5, 0.5).unwrap_err());
        assert!(e.contains("perplexity"), "{e}");
    }

    #[test]
    fn identical_points_are_an_error_not_a_panic() {
        let rows = vec![1.0f32; 10 * 4];
        let e = format!("{:#}", tsne(&rows, 10, 4, 3.0).unwrap_err());
        assert!(e.contains("all the same"), "{e}");
    }
}
