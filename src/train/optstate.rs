//! Adam state in checkpoints: per parameter `{prefix}exp_avg.<name>` and `{prefix}exp_avg_sq.<name>` (the
//! first and second moments, PyTorch's names for them), and the step count as `{prefix}step` in the metadata.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::checkpoint::TensorFile;
use crate::nn::{ParamId, ParamStore};
use crate::optim::Adam;

pub fn save(f: &mut TensorFile, prefix: &str, opt: &Adam, store: &ParamStore) -> Result<()> {
    let (step, m, v) = opt.state();
    for i in 0..store.len() {
        let name = store.name(ParamId(i));
        f.insert(format!("{prefix}exp_avg.{name}"), &m[i])?;
        f.insert(format!("{prefix}exp_avg_sq.{name}"), &v[i])?;
    }
    f.metadata.insert(format!("{prefix}step"), step.to_string());
    Ok(())
}

pub fn load(
    f: &TensorFile,
    prefix: &str,
    opt: &mut Adam,
    store: &ParamStore,
    path: &Path,
) -> Result<()> {
    let mut m = vec![];
    let mut v = vec![];
    for i in 0..store.len() {
        let id = ParamId(i);
        let (name, shape) = (store.name(id), store.value(id).shape());
        for (kind, dst) in [("exp_avg", &mut m), ("exp_avg_sq", &mut v)] {
            let t = f.tensor(&format!("{prefix}{kind}.{name}"), shape, path)?;
            dst.push(t.to_tensor(&store.device)?);
        }
    }
    let key = format!("{prefix}step");
    let step = f
        .metadata
        .get(&key)
        .ok_or_else(|| anyhow!("{}: metadata has no '{key}'", path.display()))?
        .parse::<u64>()
        .with_context(|| format!("{}: metadata '{key}' is not a step count", path.display()))?;
    opt.load_state(step, m, v)
}
