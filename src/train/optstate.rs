//! Optimiser state in checkpoints, under PyTorch's names for it:
//! - Adam: per parameter `{prefix}exp_avg.<name>` and `{prefix}exp_avg_sq.<name>` (first and second moments);
//! - RMSprop: per parameter `{prefix}square_avg.<name>`;
//!
//! and in the metadata the step count as `{prefix}step` and the optimiser as `{prefix}optimizer` ("adam" or
//! "rmsprop"; checkpoints written before RMSprop existed have no such key and hold Adam state). An fp16 run adds
//! its loss scaler's state as `{prefix}loss_scale` and `{prefix}loss_scale_growth_tracker` (GradScaler's
//! `scale` and `_growth_tracker`); everything else is f32 at every precision, so a checkpoint resumes at any.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::checkpoint::TensorFile;
use crate::nn::{ParamId, ParamStore};
use crate::optim::scaler::LossScaler;
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

/// Saves the loss scaler's state, if the run has one, beside the optimiser state of `prefix`.
pub fn save_scaler(f: &mut TensorFile, prefix: &str, scaler: Option<&LossScaler>) {
    if let Some(s) = scaler {
        let (scale, tracker) = s.state();
        f.metadata
            .insert(format!("{prefix}loss_scale"), scale.to_string());
        f.metadata.insert(
            format!("{prefix}loss_scale_growth_tracker"),
            tracker.to_string(),
        );
    }
}

/// Restores the state [`save_scaler`] saved into `scaler`, if the run has one. A checkpoint without it (written
/// at another precision, or before loss scaling existed) leaves the scaler fresh; a run without a scaler ignores
/// a saved one (an fp16 checkpoint resumed at bf16 or fp32).
pub fn load_scaler(
    f: &TensorFile,
    prefix: &str,
    scaler: Option<&mut LossScaler>,
    path: &Path,
) -> Result<()> {
    let Some(s) = scaler else {
        return Ok(());
    };
    let Some(scale) = f.metadata.get(&format!("{prefix}loss_scale")) else {
        return Ok(());
    };
    let bad = |key: &str| format!("{}: metadata '{prefix}{key}' is not valid", path.display());
    let scale = scale.parse::<f32>().with_context(|| bad("loss_scale"))?;
    let tracker = f
        .metadata
        .get(&format!("{prefix}loss_scale_growth_tracker"))
        .ok_or_else(|| anyhow!("{}", bad("loss_scale_growth_tracker")))?
        .parse::<u32>()
        .with_context(|| bad("loss_scale_growth_tracker"))?;
    s.load_state(scale, tracker)
        .with_context(|| bad("loss_scale"))
}
