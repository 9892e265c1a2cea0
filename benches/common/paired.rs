//! Ours and libtorch timed in alternation on the CPU, one call of each per pair (ours, libtorch, ours, ...),
//! so that each pair's ratio is taken while the machine runs at one speed.
//!
//! Why: criterion samples one function completely before the next (all of ours, then all of libtorch). On the
//! shared 2-core machine this project is measured on, the speed drifts by ±20 % over minutes (the measured FMA
//! peak was 178.6 GFLOP/s in one run and 142 GFLOP/s in another, the same 1024³ GEMM 54 and 75 GFLOP/s minutes
//! apart), and back-to-back sampling turns that drift into a ratio error of the same size. A median of pair
//! ratios is what survives it. CPU only: the host clock around a synchronous call is exact there; GPU timing
//! stays with CUDA events (`Ours::time`).
//!
//! The samples go to `<criterion dir>/gan-bench-paired/<group>.json`, where `scripts/benchmarks_md.py` reads
//! them for the "alternating" table of BENCHMARKS.md.

use std::time::Instant;

/// Pairs per group: GAN_BENCH_PAIRS, 9 by default (odd, so the median is one pair); 0 turns the measurement off.
fn pairs() -> usize {
    std::env::var("GAN_BENCH_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9)
}

/// Whether criterion is measuring, as it decides from its arguments: `cargo bench` passes `--bench`; `cargo test
/// --benches` does not (criterion then runs each function once as a test), and `--test`, `--list` and
/// `--profile-time` are not measurements either. Criterion does not expose its mode, hence the second reading.
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// Times [`pairs`] alternating calls of `ours` and `torch` after one uncounted pair, and records them under
/// `group`. Prints the median ratio (libtorch / ours, as scripts/benchmarks_md.py computes it) and its range.
///
/// `selected`: whether criterion ran both of the group's functions, i.e. its name filter let them through (the
/// caller notes it from inside the `bench_function` closures; criterion does not expose its filter). A run
/// filtered to other benchmarks, or to one side of this group, spends no time here.
pub fn measure<A, B>(
    group: &str,
    selected: bool,
    mut ours: impl FnMut() -> A,
    mut torch: impl FnMut() -> B,
) {
    let pairs = pairs();
    if pairs == 0 || !selected || !benchmarking() {
        return;
    }
    std::hint::black_box(ours());
    std::hint::black_box(torch());
    let (mut ours_ns, mut torch_ns) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for _ in 0..pairs {
        let t = Instant::now();
        std::hint::black_box(ours());
        ours_ns.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        std::hint::black_box(torch());
        torch_ns.push(t.elapsed().as_nanos() as f64);
    }
    let mut ratios: Vec<f64> = torch_ns.iter().zip(&ours_ns).map(|(t, o)| t / o).collect();
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "gan-engine bench: {group}: {pairs} alternating pairs, ratio libtorch / ours median {:.2} (min {:.2}, \
         max {:.2})",
        median(&ratios),
        ratios[0],
        ratios[ratios.len() - 1]
    );
    if let Err(e) = write(group, &ours_ns, &torch_ns) {
        eprintln!("gan-engine bench: {group}: alternating pairs not saved: {e}");
    }
}

/// The median of sorted values: the middle one, or the mean of the two middle ones.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn write(group: &str, ours_ns: &[f64], torch_ns: &[f64]) -> std::io::Result<()> {
    let root = std::env::var("CRITERION_HOME").unwrap_or_else(|_| "target/criterion".into());
    let dir = std::path::Path::new(&root).join("gan-bench-paired");
    std::fs::create_dir_all(&dir)?;
    let file: String = group
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let json = serde_json::json!({ "group": group, "ours_ns": ours_ns, "libtorch_ns": torch_ns });
    std::fs::write(dir.join(format!("{file}.json")), json.to_string())
}
