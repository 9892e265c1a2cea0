//! Reference tensors from `tests/fixtures/*.safetensors` (written by the scripts/gen_*golden.py scripts), and
//! the devices a golden test runs on.

use std::collections::HashMap;

use gan_engine::{Device, Tensor};

/// One reference tensor: shape and row-major f32 data.
pub struct Ref {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One fixture file: its f32 tensors by name, and the string metadata of its header.
pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, Ref>,
    pub meta: HashMap<String, String>,
}

impl Fixture {
    /// `tests/fixtures/<name>`; panics with the path when it cannot be read or parsed.
    pub fn load(name: &str) -> Fixture {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("parsing {path}: {e:?}"));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("parsing {path}: {e:?}"));
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            assert_eq!(
                view.dtype(),
                safetensors::Dtype::F32,
                "{name}:{key}: fixtures are f32"
            );
            // The byte buffer need not be 4-aligned, so decode instead of casting.
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = view.shape().to_vec();
            tensors.insert(key, Ref { shape, data });
        }
        Fixture {
            name: name.to_string(),
            tensors,
            meta: header.metadata().clone().unwrap_or_default(),
        }
    }

    pub fn get(&self, key: &str) -> &Ref {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor '{key}'", self.name))
    }

    pub fn tensor(&self, key: &str, dev: &Device) -> Tensor {
        let r = self.get(key);
        Tensor::from_vec(r.data.clone(), &r.shape, dev).unwrap()
    }

    /// A number stored in the header's metadata.
    pub fn num(&self, key: &str) -> f64 {
        let v = self
            .meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata '{key}'", self.name));
        v.parse()
            .unwrap_or_else(|e| panic!("{}: metadata '{key}' = {v}: {e}", self.name))
    }
}

/// The devices to test on: CPU always; `emu` and `cuda` when they open. A device the user asked for by name in
/// GAN_GOLDEN_DEVICES must open.
pub fn devices() -> Vec<Device> {
    let requested = std::env::var("GAN_GOLDEN_DEVICES").ok();
    let names: Vec<String> = match &requested {
        Some(s) => s.split(',').map(|s| s.trim().to_string()).collect(),
        None => vec!["cpu".into(), "emu".into(), "cuda".into()],
    };
    let mut out = Vec::new();
    for n in names {
        match Device::parse(&n) {
            Ok(d) => out.push(d),
            Err(e) if requested.is_none() => eprintln!("golden: skipping device '{n}': {e}"),
            Err(e) => panic!("GAN_GOLDEN_DEVICES names '{n}', which does not open: {e}"),
        }
    }
    out
}

/// |got − want| ≤ tol · (|want| + rms(want)) elementwise (the rms floor covers outputs that are small because
/// their terms cancelled; see tests/golden.rs). NaN fails.
pub fn assert_close_rms(what: &str, got: &Tensor, want: &Ref, tol: f64) {
    assert_eq!(got.shape(), &want.shape[..], "{what}: shape");
    let g = got.to_vec().unwrap();
    let rms = (want.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
        / want.data.len().max(1) as f64)
        .sqrt();
    for (i, (&a, &b)) in g.iter().zip(&want.data).enumerate() {
        let err = (a as f64 - b as f64).abs();
        assert!(
            a.is_finite() && err <= tol * (b.abs() as f64 + rms),
            "{what}: element {i} is {a} but PyTorch has {b}"
        );
    }
}
