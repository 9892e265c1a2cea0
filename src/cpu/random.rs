//! Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy
//! as 1, 2, 3", SC 2011; the Random123 library).
//!
//! Philox is a keyed bijection on 128-bit counters, so the numbers for element `i` of a draw are a pure
//! function of (seed, offset, i). Any thread (or any CUDA thread) can compute its own elements with no shared
//! state, and the CUDA kernel reproduces these integers exactly. The layout every backend must follow:
//!
//! - element `i` of a draw reads counter block `c = offset + i / 4` (u64, wrapping), fed to Philox as the
//!   counter words `[c lo32, c hi32, 0, 0]` with key words `[seed lo32, seed hi32]`;
//! - it takes lane `i % 4` of the four output words;
//! - a draw of `n` elements therefore consumes `ceil(n / 4)` counter blocks (callers advance `offset` by that).
//!
//! Integer → float: the top 24 bits, centred in their bucket, `u = ((x >> 8) as f32 + 0.5) · 2⁻²⁴`, computed in
//! f32 with round-to-nearest-even (the CUDA kernel does the same). u is never 0, so `ln u` below is always
//! finite. Above 2²³ an f32 cannot hold the `+ 0.5`, so the sum rounds to an even integer; for the top bucket
//! that is 2²⁴, i.e. u = 1 exactly (probability 2⁻²⁴). Then Box–Muller gives r = 0 (harmless) and a uniform
//! draw gives `hi`; the range of u is (0, 1]. Normals come from Box–Muller on the lane pairs
//! (0, 1) and (2, 3) of a block: `r = sqrt(-2 ln u_even)`, `θ = 2π u_odd`, giving `r cos θ` (even lane) and
//! `r sin θ` (odd lane).

use rayon::prelude::*;

use super::output_buffer;

// Multipliers and Weyl key increments from the paper (Philox4x32 constants).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// High and low 32-bit halves of the 64-bit product a·b.
#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 round: two multiplies, a swap of the word pairs, and the key folded in.
#[inline]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(M0, c[0]);
    let (hi1, lo1) = mulhilo(M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32-10: ten rounds, the key bumped by the Weyl constants between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c = round(c, k);
    }
    c
}

/// The four words of counter block `block` under `seed`.
#[inline]
pub fn block_words(seed: u64, block: u64) -> [u32; 4] {
    philox4x32_10(
        [block as u32, (block >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// u32 → uniform float in (0, 1] from the top 24 bits (an f32 mantissa holds exactly 24); see the module doc
/// for why 1 itself is reachable.
#[inline]
pub fn u32_to_unit(x: u32) -> f32 {
    ((x >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Blocks handed to one rayon task.
const BLOCKS_PER_TASK: usize = 2048;

/// Fills `n` values where each block of four comes from `f(words of its counter block)`.
fn fill(n: usize, seed: u64, offset: u64, f: impl Fn([u32; 4]) -> [f32; 4] + Sync) -> Vec<f32> {
    let mut out = output_buffer(n);
    out.par_chunks_mut(4 * BLOCKS_PER_TASK)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (j, quad) in chunk.chunks_mut(4).enumerate() {
                let block = offset.wrapping_add((t * BLOCKS_PER_TASK + j) as u64);
                let v = f(block_words(seed, block));
                // The last quad of the draw may be short: its unused lanes are simply dropped.
                quad.copy_from_slice(&v[..quad.len()]);
            }
        });
    out
}

/// Normal(mean, std) samples; see the module doc for the exact layout.
pub fn normal(n: usize, mean: f32, std: f32, seed: u64, offset: u64) -> Vec<f32> {
    fill(n, seed, offset, |w| {
        let u = w.map(u32_to_unit);
        let tau = 2.0 * std::f32::consts::PI;
        let r01 = (-2.0 * u[0].ln()).sqrt();
        let r23 = (-2.0 * u[2].ln()).sqrt();
        let (s01, c01) = (tau * u[1]).sin_cos();
        let (s23, c23) = (tau * u[3]).sin_cos();
        [r01 * c01, r01 * s01, r23 * c23, r23 * s23].map(|z| mean + std * z)
    })
}

/// Uniform [lo, hi) samples (lo + (hi - lo)·u); see the module doc for the exact layout. (f32 rounding can
/// land the very top of the range on `hi` itself; no clamp, so every backend computes the same formula.)
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64, offset: u64) -> Vec<f32> {
    fill(n, seed, offset, |w| {
        w.map(|x| lo + (hi - lo) * u32_to_unit(x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::blocks_for;

    /// Known-answer vectors for Philox4x32-10 from Random123's `tests/kat_vectors` (counter words, key words,
    /// expected output words).
    #[test]
    fn philox_known_answers() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [0xffffffff; 4],
                [0xffffffff; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (c, k, want) in kat {
            assert_eq!(philox4x32_10(c, k), want);
        }
    }

    #[test]
    fn layout_counter_key_and_lanes() {
        // seed 0, offset 0: element i is lane i % 4 of block i / 4; block 0 is the all-zero KAT.
        let u = uniform(9, 0.0, 1.0, 0, 0);
        let w0 = [0x6627e8d5u32, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8];
        for l in 0..4 {
            assert_eq!(u[l], u32_to_unit(w0[l]));
        }
        let w1 = philox4x32_10([1, 0, 0, 0], [0, 0]);
        let w2 = philox4x32_10([2, 0, 0, 0], [0, 0]);
        assert_eq!(u[4..8], w1.map(u32_to_unit));
        assert_eq!(u[8], u32_to_unit(w2[0]));
        // The offset shifts whole blocks; the seed's halves are the key words; high counter bits are used.
        let seed = 0x0123_4567_89ab_cdef_u64;
        let off = (7u64 << 32) | 5;
        let v = uniform(6, 0.0, 1.0, seed, off);
        let k = [0x89ab_cdef, 0x0123_4567];
        assert_eq!(v[0..4], philox4x32_10([5, 7, 0, 0], k).map(u32_to_unit));
        assert_eq!(
            v[4..6],
            philox4x32_10([6, 7, 0, 0], k).map(u32_to_unit)[..2]
        );
        // Drawing in two parts with the offset advanced by ceil(n/4) equals one draw when n is a multiple of 4.
        let whole = normal(4 * 5000 + 8, 0.0, 1.0, 3, 11);
        let a = normal(4 * 5000, 0.0, 1.0, 3, 11);
        let b = normal(8, 0.0, 1.0, 3, 11 + blocks_for(4 * 5000));
        assert_eq!(whole[..20000], a[..]);
        assert_eq!(whole[20000..], b[..]);
    }

    #[test]
    fn unit_interval_bounds() {
        assert!(u32_to_unit(0) > 0.0);
        assert_eq!(u32_to_unit(0), 0.5 / 16_777_216.0);
        // The top bucket rounds to exactly 1 in f32 (documented); the one below stays under 1.
        assert_eq!(u32_to_unit(u32::MAX), 1.0);
        assert!(u32_to_unit(u32::MAX - 256) < 1.0);
        assert!(u32_to_unit(0).ln().is_finite());
    }

    #[test]
    fn box_muller_pairs() {
        let z = normal(4, 0.0, 1.0, 42, 9);
        let u = block_words(42, 9).map(u32_to_unit);
        let tau = 2.0 * std::f64::consts::PI;
        let r01 = (-2.0 * (u[0] as f64).ln()).sqrt();
        let r23 = (-2.0 * (u[2] as f64).ln()).sqrt();
        let want = [
            r01 * (tau * u[1] as f64).cos(),
            r01 * (tau * u[1] as f64).sin(),
            r23 * (tau * u[3] as f64).cos(),
            r23 * (tau * u[3] as f64).sin(),
        ];
        for l in 0..4 {
            assert!(
                (z[l] as f64 - want[l]).abs() < 1e-5,
                "{l}: {} {}",
                z[l],
                want[l]
            );
        }
        // mean + std * z
        let s = normal(4, 2.0, 0.5, 42, 9);
        for l in 0..4 {
            assert!((s[l] - (2.0 + 0.5 * z[l])).abs() < 1e-6);
        }
    }

    #[test]
    fn normal_moments() {
        let n = 100_003;
        let z = normal(n, 0.0, 1.0, 1234, 0);
        assert!(z.iter().all(|v| v.is_finite()));
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: mean ~0.0032, std ~0.0022; allow about 4 sigma.
        assert!(mean.abs() < 0.013, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.01, "std {}", var.sqrt());
        // Scaled draw.
        let y = normal(n, 3.0, 0.02, 1234, 0);
        let m = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((m - 3.0).abs() < 0.001, "{m}");
    }

    #[test]
    fn uniform_range_and_moments() {
        let n = 100_001;
        let u = uniform(n, -1.0, 3.0, 99, 1);
        // u < 1 always, but lo + (hi - lo)·u may round up to hi in f32 (as in PyTorch), hence the closed range.
        assert!(u.iter().all(|&v| (-1.0..=3.0).contains(&v)));
        let mean = u.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        // Different seeds and offsets give different streams.
        assert_ne!(uniform(8, 0.0, 1.0, 1, 0), uniform(8, 0.0, 1.0, 2, 0));
        assert_ne!(uniform(8, 0.0, 1.0, 1, 0), uniform(8, 0.0, 1.0, 1, 2));
    }
}
