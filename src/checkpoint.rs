//! Checkpoints as safetensors files.
//!
//! A run directory holds these files:
//! - `generator.safetensors`: only G's `state_dict`, under PyTorch's names (`main.0.weight`, ...,
//!   `main.1.num_batches_tracked` as int64), so a PyTorch user loads it with
//!   `G.load_state_dict(safetensors.torch.load_file(path))`. Its `__metadata__` carries the model config.
//! - `generator_ema.safetensors` (runs with `--g-ema`): the same for G's moving average.
//! - `checkpoint.safetensors`: everything needed to resume bit-exactly: G and D (prefixes `G.` and `D.`),
//!   G's moving average if kept (`G_ema.`), both optimiser states under PyTorch's names (Adam:
//!   `opt_G.exp_avg.<name>`, `opt_G.exp_avg_sq.<name>`; RMSprop: `opt_G.square_avg.<name>`; likewise `opt_D.`,
//!   see src/train/optstate.rs), and, as JSON in `__metadata__`, the model config, the training config and
//!   the loop state (step, RNG offsets, data loader position).
//!
//! Files are written atomically (temporary file + rename), so a crash mid-save leaves the previous checkpoint.
//! Loading checks the format, every name and every shape, and says precisely what does not match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::device::Device;
use crate::nn::models::ModelConfig;
use crate::nn::ParamStore;
use crate::tensor::Tensor;

pub const GENERATOR_FILE: &str = "generator.safetensors";
/// G's exponential moving average (`train --g-ema`), in the layout of [`GENERATOR_FILE`].
pub const GENERATOR_EMA_FILE: &str = "generator_ema.safetensors";
/// Prefixes of the tensors of a full checkpoint: G, D, G's average, and the optimiser state of G and of D.
pub const G_PREFIX: &str = "G.";
pub const D_PREFIX: &str = "D.";
pub const G_EMA_PREFIX: &str = "G_ema.";
pub const OPT_G_PREFIX: &str = "opt_G.";
pub const OPT_D_PREFIX: &str = "opt_D.";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The directory of a run that holds the last save (checkpoint and generators, written as one unit by
/// [`crate::io::write_file_set`]); the run's top-level files of those names are symlinks into it.
pub const SAVED_DIR: &str = "saved";

/// `__metadata__` key saying which kind of file this is.
pub const FORMAT_KEY: &str = "format";
pub const FORMAT_GENERATOR: &str = "gan-engine/generator/v1";
pub const FORMAT_CHECKPOINT: &str = "gan-engine/checkpoint/v1";
/// `__metadata__` key of the JSON [`ModelConfig`].
pub const MODEL_KEY: &str = "model";

/// Buffers that PyTorch keeps as integers; we hold them as f32 and convert at the file boundary.
fn is_integer_buffer(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// A tensor read from or headed for a file, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Written as int64 (exact for the small counters we store this way).
    pub integer: bool,
}

impl HostTensor {
    pub fn from_tensor(t: &Tensor, integer: bool) -> Result<HostTensor> {
        Ok(HostTensor {
            shape: t.shape().to_vec(),
            data: t.to_vec()?,
            integer,
        })
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.data.clone(), &self.shape, device)
    }

    fn bytes(&self) -> Vec<u8> {
        if self.integer {
            self.data
                .iter()
                .flat_map(|&x| (x as i64).to_le_bytes())
                .collect()
        } else {
            self.data.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
    }
}

/// The tensors and `__metadata__` of one safetensors file. Both are ordered maps, so the same contents always
/// make the same bytes.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, HostTensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    pub fn new(format: &str) -> TensorFile {
        let mut f = TensorFile::default();
        f.metadata.insert(FORMAT_KEY.into(), format.into());
        f
    }

    pub fn insert(&mut self, name: String, t: &Tensor) -> Result<()> {
        let integer = is_integer_buffer(&name);
        self.tensors
            .insert(name, HostTensor::from_tensor(t, integer)?);
        Ok(())
    }

    /// Every parameter and buffer of `store`, named `{prefix}{name}`.
    pub fn insert_store(&mut self, prefix: &str, store: &ParamStore) -> Result<()> {
        for (name, t) in store.named_tensors() {
            self.insert(format!("{prefix}{name}"), t)?;
        }
        Ok(())
    }

    pub fn set_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        self.metadata
            .insert(key.into(), serde_json::to_string(value)?);
        Ok(())
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str, path: &Path) -> Result<T> {
        let s = self.metadata.get(key).ok_or_else(|| {
            anyhow!(
                "{}: metadata has no '{key}' entry (not written by gan-engine?)",
                path.display()
            )
        })?;
        serde_json::from_str(s)
            .with_context(|| format!("{}: metadata '{key}' is not valid", path.display()))
    }

    pub fn format(&self) -> Option<&str> {
        self.metadata.get(FORMAT_KEY).map(|s| s.as_str())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(&str, Vec<usize>, Dtype, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                let dt = if t.integer { Dtype::I64 } else { Dtype::F32 };
                (n.as_str(), t.shape.clone(), dt, t.bytes())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, shape, dt, b)| Ok((*n, TensorView::new(*dt, shape.clone(), b)?)))
            .collect::<Result<Vec<_>>>()?;
        // The safetensors crate writes `__metadata__` from a HashMap, in a different order every run; it is
        // written here instead, in key order.
        let body = safetensors::serialize(views, &None)?;
        let n = u64::from_le_bytes(body[..8].try_into().expect("8 bytes")) as usize;
        let mut header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body[8..8 + n])?;
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(&self.metadata)?);
        }
        let mut json = serde_json::to_vec(&header)?;
        // Tensor data starts 8-byte aligned, as the crate writes it.
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let mut out = Vec::with_capacity(8 + json.len() + body.len() - 8 - n);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&body[8 + n..]);
        Ok(out)
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::io::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write checkpoint {}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<TensorFile> {
        let not_st =
            |e: &dyn std::fmt::Display| anyhow!("not a safetensors file: {} ({e})", path.display());
        let st = SafeTensors::deserialize(bytes).map_err(|e| not_st(&e))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| not_st(&e))?;
        let mut f = TensorFile {
            tensors: BTreeMap::new(),
            metadata: meta
                .metadata()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        for (name, view) in st.tensors() {
            let raw = view.data();
            let (data, integer): (Vec<f32>, bool) = match view.dtype() {
                Dtype::F32 => (
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    false,
                ),
                Dtype::I64 if !is_integer_buffer(&name) => bail!(
                    "{}: tensor '{name}' has dtype I64; only the num_batches_tracked counters are integers, \
                     weights are F32",
                    path.display()
                ),
                Dtype::I64 => (
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                    true,
                ),
                other => bail!(
                    "{}: tensor '{name}' has dtype {other:?}; gan-engine reads F32 (and I64 counters)",
                    path.display()
                ),
            };
            f.tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                    integer,
                },
            );
        }
        Ok(f)
    }

    pub fn load(path: &Path) -> Result<TensorFile> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        TensorFile::from_bytes(&bytes, path)
    }

    /// Copies the tensors named `{prefix}{name}` into `store` after checking that every parameter and buffer of
    /// the store is present with the right shape and that the file has no extra tensors under `prefix`.
    /// `what` names the model in messages ("generator").
    pub fn load_store(
        &self,
        prefix: &str,
        store: &mut ParamStore,
        what: &str,
        path: &Path,
    ) -> Result<()> {
        let mut problems = vec![];
        let expected: Vec<(String, Vec<usize>)> = store
            .named_tensors()
            .iter()
            .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
            .collect();
        for (name, shape) in &expected {
            match self.tensors.get(&format!("{prefix}{name}")) {
                None => problems.push(format!("{prefix}{name}: missing")),
                Some(t) if &t.shape != shape => problems.push(format!(
                    "{prefix}{name}: expected {}, got {}",
                    fmt_shape(shape),
                    fmt_shape(&t.shape)
                )),
                Some(_) => {}
            }
        }
        for name in self.tensors.keys() {
            if let Some(rest) = name.strip_prefix(prefix) {
                if !expected.iter().any(|(n, _)| n == rest) {
                    problems.push(format!("{name}: not a tensor of this {what}"));
                }
            }
        }
        if !problems.is_empty() {
            let n = problems.len();
            problems.truncate(8);
            let more = if n > 8 {
                format!("\n  ... and {} more", n - 8)
            } else {
                String::new()
            };
            bail!(
                "{}: the {what} in this file does not match the model ({n} problem{}):\n  {}{more}",
                path.display(),
                if n == 1 { "" } else { "s" },
                problems.join("\n  ")
            );
        }
        for (name, _) in expected {
            let t = &self.tensors[&format!("{prefix}{name}")];
            store.set_by_name(&name, t.to_tensor(&store.device)?)?;
        }
        Ok(())
    }

    /// A tensor that must exist with the given shape.
    pub fn tensor(&self, name: &str, shape: &[usize], path: &Path) -> Result<&HostTensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| anyhow!("{}: missing tensor {name}", path.display()))?;
        if t.shape != shape {
            bail!(
                "{}: {name}: expected {}, got {}",
                path.display(),
                fmt_shape(shape),
                fmt_shape(&t.shape)
            );
        }
        Ok(t)
    }
}

pub fn fmt_shape(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}

/// The checkpoint file for a `--checkpoint` / `--resume` argument: a file, or a run directory's
/// `checkpoint.safetensors` (`prefer_full`, for resuming) or else the generator to sample from: its moving
/// average if the run kept one, else G.
pub fn resolve(path: &Path, prefer_full: bool) -> Result<PathBuf> {
    if path.is_dir() {
        let order: &[&str] = if prefer_full {
            &[CHECKPOINT_FILE, GENERATOR_FILE]
        } else {
            &[GENERATOR_EMA_FILE, GENERATOR_FILE, CHECKPOINT_FILE]
        };
        for f in order {
            let p = path.join(f);
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "{} contains no checkpoint ({} or {})",
            path.display(),
            CHECKPOINT_FILE,
            GENERATOR_FILE
        )
    } else if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        bail!("checkpoint {} does not exist", path.display())
    }
}

/// The model config recorded in a file written by gan-engine.
pub fn model_config(f: &TensorFile, path: &Path) -> Result<ModelConfig> {
    match f.format() {
        Some(FORMAT_GENERATOR) | Some(FORMAT_CHECKPOINT) => {}
        Some(other) => bail!(
            "{}: unknown checkpoint format '{other}' (expected {FORMAT_GENERATOR} or {FORMAT_CHECKPOINT})",
            path.display()
        ),
        None => bail!(
            "{}: a safetensors file without gan-engine metadata; cannot tell which model it holds",
            path.display()
        ),
    }
    let cfg: ModelConfig = f.get_json(MODEL_KEY, path)?;
    cfg.validate()
        .with_context(|| format!("{}: the model in its metadata is invalid", path.display()))?;
    Ok(cfg)
}

/// Refuses a file whose metadata describes a much bigger model than the tensors under `prefix` hold, before the
/// model is built (metadata claiming a huge model would otherwise allocate it). `values` is the model's count of
/// parameters and buffers ([`ModelConfig::sizes`]). A small difference is left to
/// [`TensorFile::load_store`], which names every tensor that does not fit.
pub fn check_size(
    f: &TensorFile,
    prefix: &str,
    values: u128,
    what: &str,
    path: &Path,
) -> Result<()> {
    let held: u128 = f
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, t)| t.data.len() as u128)
        .sum();
    if values > (2 * held).max(SIZE_SLACK) {
        bail!(
            "{}: its metadata describes a {what} of {values} values, but the file holds only {held} values for it",
            path.display()
        );
    }
    Ok(())
}

/// Values of a model that may be built for a file holding fewer (64 MiB of f32), so that its loading can name
/// the tensors that differ.
const SIZE_SLACK: u128 = 1 << 24;

/// Refuses a full checkpoint whose G or D, as `model` describes them, is much bigger than its tensors; called
/// before the models are built (see [`check_size`]).
pub fn check_gan_size(f: &TensorFile, model: &ModelConfig, path: &Path) -> Result<()> {
    let (g, d) = model.sizes()?;
    check_size(f, G_PREFIX, g, "generator", path)?;
    check_size(f, D_PREFIX, d, "discriminator", path)
}

/// Copies G's and D's parameters and buffers from full checkpoint `f` into their stores.
pub fn load_gan_stores(
    f: &TensorFile,
    g: &mut ParamStore,
    d: &mut ParamStore,
    path: &Path,
) -> Result<()> {
    f.load_store(G_PREFIX, g, "generator", path)?;
    f.load_store(D_PREFIX, d, "discriminator", path)
}

/// The generator's tensors' name prefix in a file of this format.
pub fn generator_prefix(f: &TensorFile) -> &'static str {
    if f.format() == Some(FORMAT_CHECKPOINT) {
        G_PREFIX
    } else {
        ""
    }
}

/// `__metadata__` key of the training step a run's generator file was saved at (files saved before it existed
/// have none).
pub const STEP_KEY: &str = "step";

/// The generator file of the model under `prefix` (`G.` or [`G_EMA_PREFIX`]) of full checkpoint `ck`, saved at
/// training step `step`: the same tensors, under their plain names.
pub fn generator_from(ck: &TensorFile, prefix: &str, step: u64) -> Result<TensorFile> {
    let mut f = TensorFile::new(FORMAT_GENERATOR);
    let model = ck
        .metadata
        .get(MODEL_KEY)
        .ok_or_else(|| anyhow!("internal: a checkpoint without its model config"))?;
    f.metadata.insert(MODEL_KEY.into(), model.clone());
    f.metadata.insert(STEP_KEY.into(), step.to_string());
    for (name, t) in &ck.tensors {
        if let Some(rest) = name.strip_prefix(prefix) {
            f.tensors.insert(rest.to_string(), t.clone());
        }
    }
    Ok(f)
}

/// The training step a run's generator file at `path` was saved at, if it says.
pub fn saved_step(path: &Path) -> Option<u64> {
    let f = TensorFile::load(path).ok()?;
    f.metadata.get(STEP_KEY)?.parse().ok()
}

/// Saves G's state_dict alone, in the PyTorch-loadable layout.
pub fn save_generator(path: &Path, cfg: &ModelConfig, g: &ParamStore) -> Result<()> {
    let mut f = TensorFile::new(FORMAT_GENERATOR);
    f.set_json(MODEL_KEY, cfg)?;
    f.insert_store("", g)?;
    f.save(path)
}

/// Loads a generator saved by [`save_generator`] or from the `G.` part of a full checkpoint.
pub fn load_generator(path: &Path, device: &Device) -> Result<crate::nn::models::Generator> {
    let f = TensorFile::load(path)?;
    let cfg = model_config(&f, path)?;
    let prefix = generator_prefix(&f);
    check_size(&f, prefix, cfg.sizes()?.0, "generator", path)?;
    // The init draws are overwritten right away; any stream will do.
    let mut rng = crate::ops::random::RngStream::new(0);
    let mut g = crate::nn::models::Generator::new(&cfg, device, &mut rng)?;
    f.load_store(prefix, &mut g.store, "generator", path)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::{Generator, ModelKind};
    use crate::ops::random::RngStream;

    fn small(kind: ModelKind) -> ModelConfig {
        ModelConfig {
            kind,
            image_size: 28,
            channels: 1,
            nz: 6,
            ngf: 4,
            ndf: 4,
            hidden: 8,
            ..ModelConfig::default()
        }
    }

    fn all_tensors(store: &ParamStore) -> Vec<(String, Vec<usize>, Vec<u32>)> {
        store
            .named_tensors()
            .iter()
            .map(|(n, t)| {
                let bits = t.to_vec().unwrap().iter().map(|x| x.to_bits()).collect();
                (n.to_string(), t.shape().to_vec(), bits)
            })
            .collect()
    }

    #[test]
    fn generator_round_trip_is_bit_exact_and_pytorch_shaped() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
            let cfg = small(kind);
            let mut g = Generator::new(&cfg, &Device::Cpu, &mut RngStream::new(1)).unwrap();
            // Non-trivial buffers: one training-mode forward updates running stats and the batch counter.
            let mut tape = crate::Tape::new();
            let z = RngStream::new(2)
                .normal(&[5, 6], 0.0, 1.0, &Device::Cpu)
                .unwrap();
            let z = tape.constant(z);
            g.forward(&mut tape, z, true).unwrap();
            let path = dir.path().join(format!("{kind}.safetensors"));
            save_generator(&path, &cfg, &g.store).unwrap();
            let back = load_generator(&path, &Device::Cpu).unwrap();
            assert_eq!(back.cfg, cfg);
            assert_eq!(all_tensors(&back.store), all_tensors(&g.store));

            // What PyTorch sees: plain names, f32 params, int64 num_batches_tracked of shape [].
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let nbt = st.tensor("main.1.num_batches_tracked").unwrap();
            assert_eq!(nbt.dtype(), Dtype::I64);
            assert_eq!(nbt.shape(), &[] as &[usize]);
            assert_eq!(i64::from_le_bytes(nbt.data().try_into().unwrap()), 1);
            assert_eq!(st.tensor("main.0.weight").unwrap().dtype(), Dtype::F32);
            assert_eq!(st.len(), g.store.named_tensors().len());
        }
    }

    #[test]
    fn metadata_claiming_a_huge_model_is_refused_before_it_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(ModelKind::Dcgan);
        let g = Generator::new(&cfg, &Device::Cpu, &mut RngStream::new(1)).unwrap();
        let p = dir.path().join("huge.safetensors");
        for (huge, needle) in [
            (
                ModelConfig {
                    ngf: 10_000_000,
                    ..cfg.clone()
                },
                "ngf is 10000000",
            ),
            (
                ModelConfig {
                    ngf: 1000,
                    ..cfg.clone()
                },
                "values, but the file holds only",
            ),
        ] {
            let mut f = TensorFile::new(FORMAT_GENERATOR);
            f.set_json(MODEL_KEY, &huge).unwrap();
            f.insert_store("", &g.store).unwrap();
            f.save(&p).unwrap();
            let e = format!("{:#}", load_generator(&p, &Device::Cpu).err().unwrap());
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn an_integer_weight_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(ModelKind::Dcgan);
        let g = Generator::new(&cfg, &Device::Cpu, &mut RngStream::new(1)).unwrap();
        let mut f = TensorFile::new(FORMAT_GENERATOR);
        f.set_json(MODEL_KEY, &cfg).unwrap();
        f.insert_store("", &g.store).unwrap();
        f.tensors.get_mut("main.0.weight").unwrap().integer = true;
        let p = dir.path().join("i64.safetensors");
        f.save(&p).unwrap();
        let e = format!("{:#}", load_generator(&p, &Device::Cpu).err().unwrap());
        assert!(e.contains("'main.0.weight' has dtype I64"), "{e}");
    }

    #[test]
    fn the_same_contents_make_the_same_bytes() {
        let build = |order: &[usize]| {
            let mut f = TensorFile::new(FORMAT_CHECKPOINT);
            for &i in order {
                f.metadata.insert(format!("key{i}"), format!("value {i}"));
            }
            f.to_bytes().unwrap()
        };
        let forward: Vec<usize> = (0..32).collect();
        let backward: Vec<usize> = (0..32).rev().collect();
        let a = build(&forward);
        assert_eq!(a, build(&backward));
        // Still a safetensors file with all its metadata.
        let back = TensorFile::from_bytes(&a, Path::new("x")).unwrap();
        assert_eq!(back.metadata.len(), 33);
        assert_eq!(a.len() % 8, 0);
    }

    #[test]
    fn load_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
        let e = format!(
            "{:#}",
            load_generator(&garbage, &Device::Cpu).err().unwrap()
        );
        assert!(e.contains("not a safetensors file"), "{e}");
        assert!(e.contains("garbage.safetensors"), "{e}");

        let e = format!(
            "{:#}",
            load_generator(&dir.path().join("nope"), &Device::Cpu)
                .err()
                .unwrap()
        );
        assert!(e.contains("cannot read checkpoint"), "{e}");

        // A file whose tensors have the wrong shapes for the model its metadata names.
        let cfg = small(ModelKind::Dcgan);
        let g = Generator::new(&cfg, &Device::Cpu, &mut RngStream::new(1)).unwrap();
        let mut f = TensorFile::new(FORMAT_GENERATOR);
        f.set_json(
            MODEL_KEY,
            &ModelConfig {
                ngf: 5,
                ..cfg.clone()
            },
        )
        .unwrap();
        f.insert_store("", &g.store).unwrap();
        let p = dir.path().join("wrong.safetensors");
        f.save(&p).unwrap();
        let e = format!("{:#}", load_generator(&p, &Device::Cpu).err().unwrap());
        assert!(
            e.contains("main.0.weight: expected [6,20,7,7], got [6,16,7,7]"),
            "{e}"
        );

        // A tensor missing and an extra one.
        let mut f = TensorFile::new(FORMAT_GENERATOR);
        f.set_json(MODEL_KEY, &cfg).unwrap();
        f.insert_store("", &g.store).unwrap();
        f.tensors.remove("main.3.weight");
        f.insert(
            "main.99.weight".into(),
            g.store.value(crate::nn::ParamId(0)),
        )
        .unwrap();
        f.save(&p).unwrap();
        let e = format!("{:#}", load_generator(&p, &Device::Cpu).err().unwrap());
        assert!(e.contains("main.3.weight: missing"), "{e}");
        assert!(
            e.contains("main.99.weight: not a tensor of this generator"),
            "{e}"
        );

        // A safetensors file from elsewhere (no metadata).
        let mut f = TensorFile::default();
        f.insert_store("", &g.store).unwrap();
        f.save(&p).unwrap();
        let e = format!("{:#}", load_generator(&p, &Device::Cpu).err().unwrap());
        assert!(e.contains("without gan-engine metadata"), "{e}");
    }
}
