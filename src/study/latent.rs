//! Latent-space arithmetic behind the `interpolate`, `arith` and `sweep` commands: interpolation paths
//! (linear and spherical), Radford et al.'s vector arithmetic on concept means, and one-dimension sweeps.
//!
//! Everything here works on host vectors (`&[f32]`, one latent each). Latents are a few hundred floats, so
//! there is nothing to gain from a device round trip, and plain functions are easy to test with known answers.
//! The maths runs in f64 and is rounded once at the end, so paths are symmetric to the last bit that f32 keeps.

use anyhow::{ensure, Result};

use crate::limits;

/// How to move between two latents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Interp {
    /// Straight line: (1 − t)·a + t·b.
    #[value(alias = "linear")]
    Lerp,
    /// Great-circle arc (White, "Sampling Generative Networks", 2016). For Gaussian latents it keeps the
    /// norm near √nz, where the generator was trained; the straight line's midpoint is shorter by up to √2
    /// and its images look washed out.
    #[value(alias = "spherical")]
    Slerp,
}

impl std::fmt::Display for Interp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interp::Lerp => "lerp",
            Interp::Slerp => "slerp",
        })
    }
}

fn check_same_len(a: &[f32], b: &[f32], what: &str) -> Result<()> {
    ensure!(
        a.len() == b.len(),
        "{what}: latents of different sizes ({} and {})",
        a.len(),
        b.len()
    );
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// `wa·a + wb·b`, in f64 then rounded.
fn combine(a: &[f32], wa: f64, b: &[f32], wb: f64) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32)
        .collect()
}

/// The point at fraction `t` of the straight line from `a` to `b`.
pub fn lerp(a: &[f32], b: &[f32], t: f64) -> Result<Vec<f32>> {
    check_same_len(a, b, "lerp")?;
    Ok(combine(a, 1.0 - t, b, t))
}

/// Below this angle (radians) between the latents, slerp is replaced by lerp: sin(Ω) in the denominator loses
/// its digits, and over so short an arc the chord and the arc coincide to f32 precision anyway.
const PARALLEL_EPS: f64 = 1e-6;

/// The point at fraction `t` of the great-circle arc from `a` to `b`:
/// `sin((1 − t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b`, Ω the angle between them.
///
/// With `|a| = |b|` every point has that norm and the angle from `a` grows linearly with `t`; with different
/// norms both only move smoothly (not linearly) between their end values. Degenerate cases fall back to [`lerp`]: a zero vector (no direction), and (near-)parallel
/// vectors (see [`PARALLEL_EPS`]). Exactly opposite vectors have no unique arc; sin Ω vanishes there too, so
/// they also get the straight line (through the origin), which is at least well defined.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Result<Vec<f32>> {
    check_same_len(a, b, "slerp")?;
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let cos = (dot(a, b) / (na * nb)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let s = omega.sin();
    if omega < PARALLEL_EPS || s < PARALLEL_EPS {
        return lerp(a, b, t);
    }
    Ok(combine(
        a,
        ((1.0 - t) * omega).sin() / s,
        b,
        (t * omega).sin() / s,
    ))
}

/// One point between `a` and `b` by `mode`.
pub fn interpolate(a: &[f32], b: &[f32], t: f64, mode: Interp) -> Result<Vec<f32>> {
    match mode {
        Interp::Lerp => lerp(a, b, t),
        Interp::Slerp => slerp(a, b, t),
    }
}

/// `n` evenly spaced values from `lo` to `hi`, both included (`n ≥ 2`).
pub fn linspace(lo: f64, hi: f64, n: usize) -> Result<Vec<f64>> {
    ensure!(n >= 2, "linspace needs at least 2 points, got {n}");
    // lo + (hi - lo)·i/(n-1), with the last point pinned so rounding cannot miss the endpoint.
    Ok((0..n)
        .map(|i| {
            if i == n - 1 {
                hi
            } else {
                lo + (hi - lo) * i as f64 / (n - 1) as f64
            }
        })
        .collect())
}

/// The interpolation through `keys` in order: one segment per consecutive pair, `steps` points per segment
/// with both ends included (so key k is the last point of segment k − 1 and the first of segment k).
/// Returns the segments; `path[s][j]` is point j of segment s. The endpoints are the keys exactly.
pub fn interpolation_path(
    keys: &[Vec<f32>],
    steps: usize,
    mode: Interp,
) -> Result<Vec<Vec<Vec<f32>>>> {
    ensure!(
        keys.len() >= 2,
        "interpolation needs at least 2 latents, got {}",
        keys.len()
    );
    ensure!(
        steps >= 2,
        "interpolation needs at least 2 steps per segment (the two ends), got {steps}"
    );
    let ts = linspace(0.0, 1.0, steps)?;
    keys.windows(2)
        .map(|w| {
            ts.iter()
                .enumerate()
                .map(|(j, &t)| {
                    // The ends are the keys themselves, not a recomputation that might round differently.
                    if j == 0 {
                        Ok(w[0].clone())
                    } else if j == steps - 1 {
                        Ok(w[1].clone())
                    } else {
                        interpolate(&w[0], &w[1], t, mode)
                    }
                })
                .collect()
        })
        .collect()
}

/// The segments of [`interpolation_path`] joined into one sequence without repeating the shared keys:
/// `(K − 1)(steps − 1) + 1` points. These are the frames of the animation.
pub fn flatten_path(segments: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let mut out = vec![];
    for (s, seg) in segments.iter().enumerate() {
        let skip = usize::from(s > 0);
        out.extend(seg.iter().skip(skip).cloned());
    }
    out
}

/// The element-wise mean of a non-empty set of latents.
pub fn mean(zs: &[Vec<f32>]) -> Result<Vec<f32>> {
    ensure!(!zs.is_empty(), "the mean of no latents is undefined");
    let n = zs[0].len();
    for z in zs {
        check_same_len(&zs[0], z, "mean")?;
    }
    let mut acc = vec![0f64; n];
    for z in zs {
        for (a, &x) in acc.iter_mut().zip(z) {
            *a += x as f64;
        }
    }
    let k = zs.len() as f64;
    Ok(acc.into_iter().map(|a| (a / k) as f32).collect())
}

/// The latents of a vector-arithmetic query, for display and for saving.
#[derive(Clone, Debug, PartialEq)]
pub struct Arith {
    pub mean_a: Vec<f32>,
    pub mean_b: Vec<f32>,
    pub mean_c: Vec<f32>,
    /// mean(A) − mean(B) + mean(C).
    pub result: Vec<f32>,
}

/// Radford et al. (2015), section 6.3: averaging the latents of several samples of one concept gives a
/// stable representative of it (single samples are too noisy), and mean(A) − mean(B) + mean(C) answers
/// "A is to B as ? is to C" (smiling woman − neutral woman + neutral man = smiling man).
pub fn vector_arith(a: &[Vec<f32>], b: &[Vec<f32>], c: &[Vec<f32>]) -> Result<Arith> {
    let named = [("A", a), ("B", b), ("C", c)];
    for (name, set) in named {
        ensure!(!set.is_empty(), "concept {name} has no latents");
    }
    let (mean_a, mean_b, mean_c) = (mean(a)?, mean(b)?, mean(c)?);
    check_same_len(&mean_a, &mean_b, "arith (A and B)")?;
    check_same_len(&mean_a, &mean_c, "arith (A and C)")?;
    let result = mean_a
        .iter()
        .zip(&mean_b)
        .zip(&mean_c)
        .map(|((&x, &y), &w)| (x as f64 - y as f64 + w as f64) as f32)
        .collect();
    Ok(Arith {
        mean_a,
        mean_b,
        mean_c,
        result,
    })
}

/// The latents of a sweep: for each dimension in `dims` (a row), `z` with that one coordinate set to each
/// of `values` in turn (the columns); every other coordinate is held. Row-major: `out[r * values.len() + j]`.
pub fn sweep_latents(z: &[f32], dims: &[usize], values: &[f64]) -> Result<Vec<Vec<f32>>> {
    ensure!(!dims.is_empty(), "a sweep needs at least one dimension");
    ensure!(!values.is_empty(), "a sweep needs at least one value");
    for &d in dims {
        ensure!(
            d < z.len(),
            "dimension {d} is out of range: the latent has {} dimensions (0..{})",
            z.len(),
            z.len()
        );
    }
    let mut out = Vec::with_capacity(dims.len() * values.len());
    for &d in dims {
        for &v in values {
            let mut zz = z.to_vec();
            zz[d] = v as f32;
            out.push(zz);
        }
    }
    Ok(out)
}

/// Parses a dimension list: `3`, `0,4,7`, a half-open range `0..8`, an inclusive one `2..=5`, or a mix
/// (`0..3,10`). Duplicates are kept: the user asked for those rows.
pub fn parse_dims(spec: &str, nz: usize) -> Result<Vec<usize>> {
    let mut out = vec![];
    for part in spec.split(',').map(str::trim) {
        ensure!(!part.is_empty(), "empty item in dimension list '{spec}'");
        let num = |s: &str| -> Result<usize> {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!(
                    "'{s}' in dimension list '{spec}' is not a dimension index (expected e.g. 3, 0,4,7 or 0..8)"
                )
            })
        };
        if let Some((lo, hi)) = part.split_once("..") {
            let lo = num(lo)?;
            let hi = match hi.strip_prefix('=') {
                Some(h) => num(h)?.saturating_add(1),
                None => num(hi)?,
            };
            ensure!(hi > lo, "empty range '{part}' in dimension list '{spec}'");
            // Checked before the range is expanded: a huge one would fill memory.
            ensure!(
                hi <= nz,
                "dimension range '{part}' goes past the latent's last dimension {} (nz = {nz})",
                nz - 1
            );
            out.extend(lo..hi);
        } else {
            out.push(num(part)?);
        }
        ensure!(
            out.len() <= limits::MAX_STEPS,
            "dimension list '{spec}' has more than {} entries",
            limits::MAX_STEPS
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    fn nrm(a: &[f32]) -> f64 {
        norm(a)
    }

    /// A deterministic "random" latent with awkward size.
    fn pseudo(n: usize, k: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 1.618 + k as f32 * 2.71).sin() * 1.7)
            .collect()
    }

    #[test]
    fn lerp_known_values() {
        let (a, b) = (vec![1.0, -2.0, 0.5], vec![3.0, 2.0, -0.5]);
        assert_eq!(lerp(&a, &b, 0.0).unwrap(), a);
        assert_eq!(lerp(&a, &b, 1.0).unwrap(), b);
        assert_eq!(lerp(&a, &b, 0.25).unwrap(), vec![1.5, -1.0, 0.25]);
        assert!(lerp(&a, &[1.0], 0.5).is_err());
    }

    #[test]
    fn slerp_endpoints_are_the_inputs() {
        let (a, b) = (pseudo(37, 1), pseudo(37, 2));
        assert!(close(&slerp(&a, &b, 0.0).unwrap(), &a, 1e-6));
        assert!(close(&slerp(&a, &b, 1.0).unwrap(), &b, 1e-6));
    }

    #[test]
    fn slerp_midpoint_of_orthogonal_unit_vectors() {
        // The arc from x to y passes through (x + y)/√2 at its middle and (cos 30°, sin 30°) at a third.
        let (x, y) = (vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!(close(&slerp(&x, &y, 0.5).unwrap(), &[h, h, 0.0], 1e-7));
        let third = slerp(&x, &y, 1.0 / 3.0).unwrap();
        assert!(
            close(&third, &[0.75f32.sqrt(), 0.5, 0.0], 1e-7),
            "{third:?}"
        );
        // lerp's midpoint is the chord's: shorter by √2.
        assert!(close(&lerp(&x, &y, 0.5).unwrap(), &[0.5, 0.5, 0.0], 0.0));
    }

    #[test]
    fn slerp_preserves_equal_norms() {
        let a = pseudo(101, 3);
        let mut b = pseudo(101, 4);
        let scale = (nrm(&a) / nrm(&b)) as f32;
        b.iter_mut().for_each(|x| *x *= scale);
        for t in [0.1, 0.37, 0.5, 0.9] {
            let p = slerp(&a, &b, t).unwrap();
            let rel = (nrm(&p) - nrm(&a)).abs() / nrm(&a);
            assert!(rel < 1e-6, "t = {t}: |p| = {}, |a| = {}", nrm(&p), nrm(&a));
            // ... while the chord sags inside the sphere.
            assert!(nrm(&lerp(&a, &b, t).unwrap()) < nrm(&a) * (1.0 - 1e-4));
        }
    }

    #[test]
    fn slerp_moves_the_angle_linearly() {
        // b at a known, well-conditioned angle to a (acos loses digits near 0 and π): atan(1 / 0.6).
        let a = pseudo(23, 5);
        let raw = pseudo(23, 6);
        let k = (dot(&raw, &a) / dot(&a, &a)) as f32;
        let orth: Vec<f32> = raw.iter().zip(&a).map(|(r, x)| r - k * x).collect();
        let ratio = (norm(&orth) / norm(&a)) as f32;
        let b: Vec<f32> = orth
            .iter()
            .zip(&a)
            .map(|(o, x)| o + 0.6 * ratio * x)
            .collect();
        // Equal norms: only then is the angle linear in t (with unequal norms the formula weights the
        // longer vector more, and the direction runs ahead or behind).
        let scale = (norm(&a) / norm(&b)) as f32;
        let b: Vec<f32> = b.iter().map(|x| x * scale).collect();
        let angle =
            |u: &[f32], v: &[f32]| (dot(u, v) / (norm(u) * norm(v))).clamp(-1.0, 1.0).acos();
        let omega = angle(&a, &b);
        assert!((omega - (1.0f64 / 0.6).atan()).abs() < 1e-5, "{omega}");
        let p = slerp(&a, &b, 0.3).unwrap();
        assert!((angle(&a, &p) - 0.3 * omega).abs() < 1e-5);
        assert!((angle(&p, &b) - 0.7 * omega).abs() < 1e-5);
    }

    #[test]
    fn slerp_degenerate_inputs_fall_back_to_lerp() {
        let a = vec![1.0f32, 2.0, 3.0];
        // Parallel (same direction, different length): sin Ω = 0, the formula would divide by zero.
        let b: Vec<f32> = a.iter().map(|x| 2.0 * x).collect();
        let p = slerp(&a, &b, 0.5).unwrap();
        assert!(p.iter().all(|x| x.is_finite()));
        assert!(close(&p, &lerp(&a, &b, 0.5).unwrap(), 1e-6));
        // Nearly parallel: still finite and on the chord.
        let c = vec![1.0f32, 2.0, 3.000_000_5];
        let p = slerp(&a, &c, 0.5).unwrap();
        assert!(close(&p, &lerp(&a, &c, 0.5).unwrap(), 1e-6), "{p:?}");
        // Identical.
        assert_eq!(slerp(&a, &a, 0.3).unwrap(), a);
        // A zero vector has no direction.
        let z = vec![0.0f32; 3];
        assert!(close(&slerp(&z, &a, 0.5).unwrap(), &[0.5, 1.0, 1.5], 1e-7));
        // Opposite vectors: finite (the straight line through the origin).
        let m: Vec<f32> = a.iter().map(|x| -x).collect();
        let p = slerp(&a, &m, 0.5).unwrap();
        assert!(close(&p, &[0.0; 3], 1e-6), "{p:?}");
    }

    #[test]
    fn linspace_includes_both_ends() {
        assert_eq!(
            linspace(-2.0, 2.0, 5).unwrap(),
            vec![-2.0, -1.0, 0.0, 1.0, 2.0]
        );
        let v = linspace(0.0, 1.0, 7).unwrap();
        assert_eq!((v[0], v[6]), (0.0, 1.0));
        assert!(linspace(0.0, 1.0, 1).is_err());
    }

    #[test]
    fn path_segments_and_frames() {
        let keys = vec![vec![0.0f32, 0.0], vec![4.0, 0.0], vec![4.0, 8.0]];
        let segs = interpolation_path(&keys, 5, Interp::Lerp).unwrap();
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|s| s.len() == 5));
        assert_eq!(segs[0][1], vec![1.0, 0.0]);
        assert_eq!(segs[0][4], keys[1]);
        assert_eq!(segs[1][0], keys[1]);
        assert_eq!(segs[1][2], vec![4.0, 4.0]);
        let frames = flatten_path(&segs);
        // (K − 1)(steps − 1) + 1: the shared key appears once.
        assert_eq!(frames.len(), 9);
        assert_eq!(frames[4], keys[1]);
        assert_eq!(frames[8], keys[2]);
        // Slerp path ends exactly on the keys too.
        let (a, b) = (pseudo(19, 7), pseudo(19, 8));
        let segs = interpolation_path(&[a.clone(), b.clone()], 3, Interp::Slerp).unwrap();
        assert_eq!((segs[0][0].clone(), segs[0][2].clone()), (a, b));
        assert!(interpolation_path(&keys[..1], 5, Interp::Lerp).is_err());
        assert!(interpolation_path(&keys, 1, Interp::Lerp).is_err());
    }

    #[test]
    fn arith_on_hand_made_vectors() {
        let a = vec![vec![1.0f32, 2.0, 3.0], vec![3.0, 4.0, 5.0]]; // mean 2, 3, 4
        let b = vec![vec![1.0f32, 1.0, 1.0]]; // mean 1, 1, 1
        let c = vec![
            vec![0.0f32, 0.0, 9.0],
            vec![3.0, 0.0, 0.0],
            vec![0.0, 6.0, 0.0],
        ]; // mean 1, 2, 3
        let r = vector_arith(&a, &b, &c).unwrap();
        assert_eq!(r.mean_a, vec![2.0, 3.0, 4.0]);
        assert_eq!(r.mean_b, vec![1.0, 1.0, 1.0]);
        assert_eq!(r.mean_c, vec![1.0, 2.0, 3.0]);
        assert_eq!(r.result, vec![2.0, 4.0, 6.0]);
        assert!(vector_arith(&a, &[], &c).is_err());
        assert!(vector_arith(&a, &[vec![1.0]], &c).is_err());
        assert!(mean(&[vec![1.0, 2.0], vec![1.0]]).is_err());
    }

    #[test]
    fn sweep_sets_one_coordinate_per_row() {
        let z = vec![0.5f32, -0.25, 0.75, 1.0];
        let out = sweep_latents(&z, &[2, 0], &[-2.0, 0.0, 2.0]).unwrap();
        assert_eq!(out.len(), 6);
        assert_eq!(out[0], vec![0.5, -0.25, -2.0, 1.0]);
        assert_eq!(out[2], vec![0.5, -0.25, 2.0, 1.0]);
        assert_eq!(out[3], vec![-2.0, -0.25, 0.75, 1.0]);
        assert_eq!(out[4], vec![0.0, -0.25, 0.75, 1.0]);
        let e = sweep_latents(&z, &[4], &[0.0]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        assert!(sweep_latents(&z, &[], &[0.0]).is_err());
    }

    #[test]
    fn dimension_lists() {
        assert_eq!(parse_dims("3", 8).unwrap(), vec![3]);
        assert_eq!(parse_dims("0..4", 8).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_dims("2..=4", 8).unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_dims("0..2, 7,5", 8).unwrap(), vec![0, 1, 7, 5]);
        for bad in ["", "a", "3..3", "5..2", "1,,2", "-1"] {
            assert!(parse_dims(bad, 8).is_err(), "{bad}");
        }
        // A range is checked against nz before it is expanded, and the end may be the largest integer.
        for huge in [
            "0..18446744073709551615",
            "0..=18446744073709551615",
            "5..9",
        ] {
            let e = parse_dims(huge, 8).unwrap_err().to_string();
            assert!(e.contains("nz = 8"), "{huge}: {e}");
        }
    }
}
