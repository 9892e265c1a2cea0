//! Optimiser state in checkpoints, under PyTorch's names for it:
//! - Adam: per parameter `{prefix}exp_avg.<name>` and `{prefix}exp_avg_sq.<name>` (first and second moments);
//! - RMSprop: per parameter `{prefix}square_avg.<name>`;
//!
//! and in the metadata the step count as `{prefix}step` and the optimiser as `{prefix}optimizer` ("adam" or
//! "rmsprop"; checkpoints written before RMSprop existed have no such key and hold Adam state).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::checkpoint::TensorFile;
use crate::nn::{ParamId, ParamStore};
use crate::optim::Optimizer;
use crate::tensor::Tensor;

pub fn save(f: &mut TensorFile, prefix: &str, opt: &Optimizer, store: &ParamStore) -> Result<()> {
    let step = match opt {
        Optimizer::Adam(a) => {
            let (step, m, v) = a.state();
            for i in 0..store.len() {
                let name = store.name(ParamId(i));
                f.insert(format!("{prefix}exp_avg.{name}"), &m[i])?;
                f.insert(format!("{prefix}exp_avg_sq.{name}"), &v[i])?;
            }
            step
        }
        Optimizer::RmsProp(r) => {
            let (step, v) = r.state();
            for (i, v) in v.iter().enumerate() {
                let name = store.name(ParamId(i));
                f.insert(format!("{prefix}square_avg.{name}"), v)?;
            }
            step
        }
    };
    f.metadata.insert(format!("{prefix}step"), step.to_string());
    f.metadata
        .insert(format!("{prefix}optimizer"), opt.name().to_string());
    Ok(())
}

/// Loads the state saved by [`save`] into `opt`, which must be the same kind of optimiser.
pub fn load(
    f: &TensorFile,
    prefix: &str,
    opt: &mut Optimizer,
    store: &ParamStore,
    path: &Path,
) -> Result<()> {
    let saved = f
        .metadata
        .get(&format!("{prefix}optimizer"))
        .map_or("adam", |s| s.as_str());
    if saved != opt.name() {
        bail!(
            "{} holds {saved} state for {prefix}, but the run is configured with --optimizer {}; a resumed run \
             keeps its optimiser",
            path.display(),
            opt.name()
        );
    }
    let tensors = |kind: &str| -> Result<Vec<Tensor>> {
        (0..store.len())
            .map(|i| {
                let id = ParamId(i);
                let (name, shape) = (store.name(id), store.value(id).shape());
                f.tensor(&format!("{prefix}{kind}.{name}"), shape, path)?
                    .to_tensor(&store.device)
            })
            .collect()
    };
    let key = format!("{prefix}step");
    let step = f
        .metadata
        .get(&key)
        .ok_or_else(|| anyhow!("{}: metadata has no '{key}'", path.display()))?
        .parse::<u64>()
        .with_context(|| format!("{}: metadata '{key}' is not a step count", path.display()))?;
    match opt {
        Optimizer::Adam(a) => a.load_state(step, tensors("exp_avg")?, tensors("exp_avg_sq")?),
        Optimizer::RmsProp(r) => r.load_state(step, tensors("square_avg")?),
    }
}
