//! `gan-engine benchmark`: the iteration it times is the training iteration (eager and replayed from a CUDA
//! graph give the same numbers) or, with `--g-inference`, G alone; its JSON holds what the first-light and
//! CPU-baseline scripts read, and bad arguments are clear errors.

mod common;

use common::cli::{fails, ok, stdout};

/// A tiny DCGAN-32 iteration on `device`, as JSON.
fn bench(device: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let mut args = vec!["benchmark", "--device", device, "--image-size", "32"];
    args.extend(common::cli::TINY_MODEL);
    args.extend([
        "--warmup",
        "1",
        "--steps",
        "2",
        "--repeat",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    let o = ok(&args);
    assert!(stdout(&o).contains("ms per iteration"), "{}", stdout(&o));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

#[test]
fn cpu_benchmark_reports_samples_and_the_last_iteration() {
    let v = bench("cpu", &[]);
    let samples = v["samples_ms_per_iteration"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0));
    let median = v["median_ms"].as_f64().unwrap();
    assert!(v["min_ms"].as_f64().unwrap() <= median && median <= v["max_ms"].as_f64().unwrap());
    assert_eq!(v["timer"], "host clock");
    assert_eq!(v["mode"], "eager");
    assert!(
        v["launches_per_iteration"].is_null(),
        "the CPU launches no kernels: {v}"
    );
    for k in ["loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2"] {
        assert!(v["last"][k].as_f64().unwrap().is_finite(), "{k}");
    }
    // 1 warm-up + 3 x 2 timed iterations from one seed: a second run computes the same last iteration.
    assert_eq!(v["last"], bench("cpu", &[])["last"]);
}

#[test]
fn g_inference_times_the_generator_alone() {
    let v = bench("cpu", &["--g-inference"]);
    assert_eq!(v["g_inference"], true);
    assert!(v["what"].as_str().unwrap().ends_with("g inference"), "{v}");
    let mean = v["last"]["mean_pixel"].as_f64().unwrap();
    // Tanh output of a freshly initialised G: finite, inside (-1, 1), and not a constant image of zeros.
    assert!(
        mean.is_finite() && mean.abs() < 1.0 && mean != 0.0,
        "{mean}"
    );
    assert!(v["last"].get("loss_d").is_none(), "{v}");
    // A fixed z and eval mode: every run computes the same images.
    assert_eq!(v["last"], bench("cpu", &["--g-inference"])["last"]);
    #[cfg(feature = "emulation")]
    {
        // The same G from the same seed on the emulated GPU: the same mean pixel up to rounding.
        let emu = bench("emu", &["--g-inference"])["last"]["mean_pixel"]
            .as_f64()
            .unwrap();
        assert!((emu - mean).abs() < 1e-5, "emu {emu} vs cpu {mean}");
    }
}

#[cfg(feature = "emulation")]
#[test]
fn graph_replay_times_the_same_iteration_as_eager() {
    let eager = bench("emu", &[]);
    let graph = bench("emu", &["--cuda-graph"]);
    assert_eq!(graph["mode"], "graph");
    assert_eq!(
        eager["last"], graph["last"],
        "the replayed iterations computed other numbers"
    );
    // Launches per iteration, by kernel: eagerly every kernel of the step; replayed, the graph's kernels run
    // inside one replay and only the z draw is launched beside it.
    let launches = |v: &serde_json::Value| v["launches_per_iteration"].as_f64().unwrap();
    let by_kernel = |v: &serde_json::Value| v["launches_by_kernel"].as_object().unwrap().clone();
    let eager_kernels = by_kernel(&eager);
    let sum: f64 = eager_kernels.values().map(|c| c.as_f64().unwrap()).sum();
    assert_eq!(sum, launches(&eager), "{eager}");
    assert!(launches(&eager) > 50.0, "{eager}");
    // A training batch norm normalises in one launch that also counts the batch. Its statistics come from the
    // convolution before it (epilogue or split-K reduction); only G's first layer, a 1x1 input that runs on
    // the linear kernels, leaves batch norm to read them off its input (bn_train_parts_f32), once per G pass.
    let count = |k: &str| eager_kernels.get(k).map_or(0.0, |v| v.as_f64().unwrap());
    assert!(count("bn_train_fwd_f32") > 0.0, "{eager}");
    assert!(
        count("bn_train_parts_f32") < count("bn_train_fwd_f32") / 4.0,
        "{eager}"
    );
    assert!(!eager_kernels.contains_key("affine_assign_f32"), "{eager}");
    assert!(eager["graph_kernels"].is_null());
    // Debug builds also fill each new output with NaN first (fill_f32), z's included.
    let beside: Vec<_> = by_kernel(&graph)
        .into_iter()
        .filter(|(k, _)| k != "fill_f32")
        .collect();
    assert_eq!(
        beside,
        [("philox_normal_f32".to_string(), 1.0.into())],
        "{graph}"
    );
    assert!(graph["graph_kernels"].as_u64().unwrap() > 50, "{graph}");
}

/// The GEMM launch overrides of a tuning run (src/cuda/tuning.rs) are read when the CUDA backend opens: a bad
/// value is a clear error naming the variable, and good ones show in the kernels the iteration launches.
#[test]
fn tuning_overrides_choose_the_kernels_and_bad_ones_are_clear_errors() {
    for (var, value, says) in [
        ("GAN_ENGINE_CONV_TILE", "96", "64 or 128"),
        ("GAN_ENGINE_CONV_LAYOUT", "NHWC", "nchw and nhwc"),
        ("GAN_ENGINE_CONV_REUSE", "1", "on keeps"),
    ] {
        let o = common::cli::bin()
            .args(["benchmark", "--device", "emu", "--steps", "1"])
            .env(var, value)
            .output()
            .unwrap();
        common::cli::failed(&o, &["benchmark"], 1, &[&format!("{var}={value:?}"), says]);
    }
    let kernels = |env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("b.json");
        let mut args = vec![
            "benchmark",
            "--device",
            "emu",
            "--image-size",
            "32",
            "--precision",
            "bf16",
        ];
        // ndf 16: D3's input has 32 channels, the channels-last kernel's by default and not under nchw.
        args.extend([
            "--ngf",
            "8",
            "--ndf",
            "16",
            "--nz",
            "16",
            "--batch-size",
            "4",
        ]);
        args.extend(["--warmup", "1", "--steps", "1", "--repeat", "1"]);
        args.extend(["--json", json.to_str().unwrap()]);
        let o = common::cli::bin()
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::cli::stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        // The JSON and the printed line say which overrides were in force.
        let var = |name: &str| {
            let v = env.iter().find(|(k, _)| *k == name)?.1;
            Some(v.parse::<u64>().unwrap())
        };
        let (tile, blocks) = (
            var("GAN_ENGINE_CONV_TILE"),
            var("GAN_ENGINE_SPLIT_K_BLOCKS"),
        );
        let named = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let (layout, reuse) = (
            named("GAN_ENGINE_CONV_LAYOUT"),
            named("GAN_ENGINE_CONV_REUSE"),
        );
        assert_eq!(
            v["gemm_tuning"],
            serde_json::json!({"conv_tile": tile, "split_k_blocks": blocks, "conv_layout": layout,
                "conv_reuse": reuse})
        );
        assert_eq!(line_has_layout(&stdout(&o)), layout.is_some());
        assert_eq!(stdout(&o).contains(" operand reuse off"), reuse.is_some());
        let line = stdout(&o);
        assert_eq!(line.contains(" tile "), tile.is_some(), "{line}");
        assert_eq!(
            line.contains(" split-k target "),
            blocks.is_some(),
            "{line}"
        );
        (
            v["launches_by_kernel"].as_object().unwrap().clone(),
            v["converted_values_per_iteration"].as_f64().unwrap(),
        )
    };
    let (default, converted) = kernels(&[]);
    let (tuned, _) = kernels(&[
        ("GAN_ENGINE_CONV_TILE", "128"),
        ("GAN_ENGINE_SPLIT_K_BLOCKS", "1"),
    ]);
    let (nchw, none) = kernels(&[("GAN_ENGINE_CONV_LAYOUT", "nchw")]);
    let (fresh, converted_fresh) = kernels(&[("GAN_ENGINE_CONV_REUSE", "off")]);
    let has = |k: &serde_json::Map<String, serde_json::Value>, pat: &str| {
        k.keys().any(|n| n.contains(pat))
    };
    assert!(has(&default, "splitk_reduce"), "{default:?}");
    assert!(!has(&tuned, "splitk_reduce"), "{tuned:?}");
    assert!(has(&tuned, "_m128_bf16"), "{tuned:?}");
    let small_tile = |k: &serde_json::Map<String, serde_json::Value>| {
        k.keys()
            .any(|n| n.ends_with("_bf16") && n.starts_with("conv2d_") && !n.contains("_m128_"))
    };
    assert!(small_tile(&default), "{default:?}");
    assert!(!small_tile(&tuned), "{tuned:?}");
    assert!(has(&default, "conv2d_fwd_nhwc_bf16"), "{default:?}");
    assert!(has(&default, "conv2d_bwd_weight_nhwc_bf16"), "{default:?}");
    assert!(has(&default, "to_nhwc_pair_bf16"), "{default:?}");
    // Without kept copies a backward converts its three operands in one launch; with them x's forward copy is
    // reused, and fewer values are converted.
    assert!(has(&fresh, "to_nhwc_triple_bf16"), "{fresh:?}");
    assert!(
        0.0 < converted && converted < converted_fresh,
        "{converted} vs {converted_fresh}"
    );
    assert!(!has(&nchw, "nhwc"), "{nchw:?}");
    assert_eq!(none, 0.0);
}

/// Whether benchmark's line names a layout override.
fn line_has_layout(line: &str) -> bool {
    line.contains(" layout nchw") || line.contains(" layout nhwc")
}

#[test]
fn bad_arguments_are_clear_errors() {
    fails(
        &["benchmark", "--device", "cpu", "--cuda-graph"],
        1,
        &["--cuda-graph needs a CUDA device"],
    );
    fails(
        &["benchmark", "--device", "cpu", "--batch-size", "100000000"],
        1,
        &["--batch-size 100000000 is larger than"],
    );
    fails(&["benchmark", "--steps", "0"], 2, &["--steps"]);
    fails(
        &["benchmark", "--g-inference", "--cuda-graph"],
        2,
        &["--g-inference", "--cuda-graph"],
    );
    fails(
        &["benchmark", "--device", "cpu", "--image-size", "48"],
        1,
        &["48"],
    );
}
