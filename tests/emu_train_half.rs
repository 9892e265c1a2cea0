//! Mixed-precision training on the emulated CUDA backend: DCGAN runs at bf16 and fp16 follow the fp32 run's
//! losses, fp16's loss scaler skips an overflowed step and halves its scale, and checkpoints move between
//! precisions (the scaler's state with them at fp16). The model is wide enough (widths 12, so layers of 24 and 48
//! channels: more than 16 GEMM rows) that its middle convolutions run on the tensor-core kernels. The fp32
//! reference runs on the CPU backend, which the emulated fp32 kernels match to within a tenth of an Adam step
//! (tests/common/cli.rs, `assert_cpu_and_emu_runs_agree`).
#![cfg(feature = "emulation")]

use gan_engine::checkpoint::{OPT_D_PREFIX, OPT_G_PREFIX};
use gan_engine::cuda::{open_emulated, Precision};
use gan_engine::nn::models::ModelConfig;
use gan_engine::ops::random::RngStream;
use gan_engine::train::config::{AdamSettings, LossKind};
use gan_engine::train::Gan;
use gan_engine::{Device, Tape, Tensor};

mod common;
use common::cli::{fails, ok, stderr, tiny_train};

fn model() -> ModelConfig {
    common::model::dcgan28(12, 16)
}

const STEPS: usize = 8;

/// A fresh GAN (seed 1) on an emulated backend at `precision`, on the CPU at F32.
fn gan(precision: Precision) -> Gan {
    let dev = match precision {
        Precision::F32 => Device::Cpu,
        p => Device::Cuda(open_emulated(p).unwrap()),
    };
    let a = AdamSettings::DCGAN;
    Gan::new(&model(), &a, &a, LossKind::Ns, 1, &dev).unwrap()
}

/// The losses (errD, errG) of STEPS iterations at `precision`, on the same real batches for every precision, and
/// the GAN after them.
fn losses(precision: Precision) -> (Vec<(f32, f32)>, Gan) {
    let mut gan = gan(precision);
    let mut data = RngStream::new(2);
    let mut tape = Tape::new();
    let losses = (1..=STEPS as u64)
        .map(|step| {
            let real = data
                .uniform(&[4, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
                .unwrap();
            let m = gan
                .train_step(&mut tape, 1, step, || Ok(real.clone().into()))
                .unwrap();
            (m.loss_d, m.loss_g)
        })
        .collect();
    (losses, gan)
}

/// Every step's |loss - fp32 loss| <= tol_abs + tol_rel * |fp32 loss|, and some loss differs (the 16-bit
/// kernels ran).
fn follows_fp32(precision: Precision, tol_abs: f32, tol_rel: f32) -> Gan {
    let (reference, _) = losses(Precision::F32);
    let (got, gan) = losses(precision);
    println!("{precision}: {got:?}\nfp32: {reference:?}");
    let mut differs = false;
    for (step, (&(d, g), &(d32, g32))) in got.iter().zip(&reference).enumerate() {
        for (what, x, x32) in [("errD", d, d32), ("errG", g, g32)] {
            assert!(
                (x - x32).abs() <= tol_abs + tol_rel * x32.abs(),
                "{precision} step {}: {what} {x} vs fp32 {x32}",
                step + 1
            );
            differs |= x != x32;
        }
    }
    assert!(
        differs,
        "{precision}: losses identical to fp32's: the 16-bit kernels did not run"
    );
    gan
}

/// bf16 rounds operands to 8 significant bits but keeps f32's range: no step is skipped, and the losses stay
/// within 0.005 + 0.5% of fp32's (measured: at most 0.0015 apart over the 8 steps).
#[test]
fn bf16_losses_follow_fp32() {
    let gan = follows_fp32(Precision::Bf16, 0.005, 0.005);
    assert!(gan.scaler_d.is_none() && gan.scaler_g.is_none());
    assert_eq!(gan.opt_d.step_count(), STEPS as u64);
}

/// fp16 starts at GradScaler's scale 2^16, which overflows this model's first backward products: like PyTorch's
/// scaler it skips those steps and halves the scale until the gradients fit, so its curve lags fp32's by a step
/// or two at the start. Bound: 0.05 + 5% of fp32's loss at every step (measured: at most 0.04 apart, with 2 D
/// steps skipped), and at most 3 skipped D steps.
#[test]
fn fp16_losses_follow_fp32() {
    let gan = follows_fp32(Precision::Fp16, 0.05, 0.05);
    let skipped = STEPS as u64 - gan.opt_d.step_count();
    let scale = gan.scaler_d.as_ref().unwrap().scale();
    println!("fp16: {skipped} D steps skipped, scale now {scale}");
    assert!(skipped <= 3, "{skipped} of {STEPS} D steps skipped");
    assert_eq!(scale, 65536.0 / 2f32.powi(skipped as i32));
}

/// D's parameters, read back.
fn d_params(gan: &Gan) -> Vec<Vec<f32>> {
    gan.d
        .store
        .values()
        .iter()
        .map(|t| t.to_vec().unwrap())
        .collect()
}

#[test]
fn fp16_overflow_skips_the_step_and_halves_the_scale() {
    let mut gan = gan(Precision::Fp16);
    assert!(gan.scaler_g.is_some() && gan.scaler_d.is_some());
    let huge = 2f32.powi(100);
    gan.scaler_d.as_mut().unwrap().load_state(huge, 5).unwrap();
    let real: Tensor = RngStream::new(2)
        .uniform(&[4, 1, 28, 28], -1.0, 1.0, &Device::Cpu)
        .unwrap();
    let mut tape = Tape::new();
    let before = d_params(&gan);
    let latents = gan.latents(4).unwrap();
    gan.d_step(&mut tape, real.clone().into(), latents, 1)
        .unwrap();
    // The loss times 2^100 overflows fp16 in the first backward product: the step is skipped.
    assert!(
        d_params(&gan) == before,
        "a skipped step must leave D alone"
    );
    assert_eq!(gan.opt_d.step_count(), 0);
    assert_eq!(gan.scaler_d.as_ref().unwrap().state(), (huge / 2.0, 0));
    // From a scale the gradients fit in, the step runs.
    gan.scaler_d.as_mut().unwrap().load_state(256.0, 0).unwrap();
    let latents = gan.latents(4).unwrap();
    gan.d_step(&mut tape, real.into(), latents, 2).unwrap();
    assert!(d_params(&gan) != before, "a clean step must update D");
    assert_eq!(gan.opt_d.step_count(), 1);
    assert_eq!(gan.scaler_d.as_ref().unwrap().state(), (256.0, 1));
}

fn metadata(run: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    gan_engine::checkpoint::TensorFile::load(&run.join("checkpoint.safetensors"))
        .unwrap()
        .metadata
}

fn resume(run: &std::path::Path, steps: &str, precision: &str) {
    let o = ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--steps",
        steps,
        "--precision",
        precision,
        "--quiet",
    ]);
    assert!(stderr(&o).contains("resuming at step"), "{}", stderr(&o));
}

/// An fp16 run saves its scalers' state; it resumes at bf16 (ignoring it) and fp16 (restoring it), and an fp32
/// checkpoint resumes at fp16 with a fresh scaler.
#[test]
fn checkpoints_cross_precisions() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("half");
    tiny_train(
        "balls",
        &run,
        &["--device", "emu", "--precision", "fp16", "--steps", "2"],
    );
    let m = metadata(&run);
    for prefix in [OPT_G_PREFIX, OPT_D_PREFIX] {
        let key = format!("{prefix}loss_scale");
        let s: f32 = m[&key].parse().unwrap();
        assert!(s > 0.0 && s <= 65536.0, "{key} = {s}");
        let tracker: u32 = m[&format!("{prefix}loss_scale_growth_tracker")]
            .parse()
            .unwrap();
        assert!(tracker <= 2, "{tracker}");
    }
    resume(&run, "3", "bf16");
    // Saved at bf16: no scaler state.
    assert!(!metadata(&run).keys().any(|k| k.contains("loss_scale")));
    resume(&run, "4", "fp16");
    let m = metadata(&run);
    assert!(
        m.contains_key(&format!("{OPT_G_PREFIX}loss_scale")),
        "{m:?}"
    );
    resume(&run, "5", "fp32");

    // The 16-bit precisions need the CUDA backend; fp16 cannot be graphed.
    let resume_fails = |extra: [&str; 3], needle: &str| {
        let mut args = vec!["train", "--resume", run.to_str().unwrap(), "--steps", "6"];
        args.extend(extra);
        fails(&args, 1, &["error:", needle]);
    };
    resume_fails(
        ["--precision", "bf16", "--device=cpu"],
        "precision bf16 needs the CUDA backend",
    );
    resume_fails(
        ["--precision", "fp16", "--cuda-graph"],
        "--cuda-graph cannot be combined with --precision fp16",
    );
}
