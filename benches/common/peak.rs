//! The machine's f32 multiply-add peak, measured: what "% of peak" in BENCHMARKS.md divides by.
//!
//! Every thread of the rayon pool runs chains of fused multiply-adds on 8-lane AVX2 registers, `CHAINS` of them
//! independent so that both FMA pipes stay busy through the instruction's latency (Zen 3: 2 pipes × 4 cycles
//! needs 8 chains in flight; 10 leave a margin). Nothing is loaded or stored inside the loop, so this is the
//! arithmetic ceiling no convolution can pass, not an attainable GEMM rate (the `gemm` rows give that).

use rayon::prelude::*;

const CHAINS: usize = 10;
const LANES: usize = 8;

/// FLOPs of `iters` loop trips on every thread of the pool (an FMA counts 2).
pub fn flops(iters: u64) -> u64 {
    iters * (CHAINS * LANES * 2) as u64 * rayon::current_num_threads() as u64
}

/// Runs `iters` trips on every thread; returns a value that depends on all of them (so none is optimised away).
pub fn run(iters: u64) -> f32 {
    (0..rayon::current_num_threads())
        .into_par_iter()
        .map(|t| chains(iters, t as f32))
        .sum()
}

fn chains(iters: u64, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked just above).
        return unsafe { chains_avx2(iters, seed) };
    }
    // Other CPUs: scalar chains, which the compiler may vectorise or not; the row then says what it measured.
    let mut acc = [seed; CHAINS * LANES];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    // x ← x·a + b stays near b / (1 − a) and never overflows or goes subnormal.
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut lanes = [0f32; LANES];
    let mut sum = 0.0;
    for x in acc {
        _mm256_storeu_ps(lanes.as_mut_ptr(), x);
        sum += lanes.iter().sum::<f32>();
    }
    sum
}
