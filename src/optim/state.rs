//! What every optimiser here does with its per-parameter state tensors (Adam's two moments, RMSprop's squared
//! averages): create them zeroed, check them against the store before a step, and restore them from a
//! checkpoint. `who` names the optimiser and the state in error messages.

use anyhow::{ensure, Result};

use crate::device::Device;
use crate::nn::params::{ParamId, ParamStore};
use crate::tensor::Tensor;

/// One zeroed tensor per parameter of `store`, in its order, on `device`.
pub(super) fn zeros_like_params(store: &ParamStore, device: &Device) -> Result<Vec<Tensor>> {
    (0..store.len())
        .map(|i| Tensor::zeros(store.value(ParamId(i)).shape(), device))
        .collect()
}

/// The state still fits the store: one tensor per parameter, each of its parameter's shape.
pub(super) fn check_matches(who: &str, store: &ParamStore, state: &[Tensor]) -> Result<()> {
    ensure!(
        store.len() == state.len(),
        "{who}: the store has {} parameters but the optimizer was built for {}",
        store.len(),
        state.len()
    );
    for (i, s) in state.iter().enumerate() {
        let p = store.value(ParamId(i));
        ensure!(
            p.shape() == s.shape(),
            "{who}: parameter '{}' has shape {:?} but its optimizer state has {:?}",
            store.name(ParamId(i)),
            p.shape(),
            s.shape()
        );
    }
    Ok(())
}

/// `saved` (e.g. read from a checkpoint) moved to `device`, once it has as many tensors as `current`, each of
/// the same shape.
pub(super) fn restore(
    who: &str,
    current: &[Tensor],
    saved: Vec<Tensor>,
    device: &Device,
) -> Result<Vec<Tensor>> {
    ensure!(
        saved.len() == current.len(),
        "{who}: expected {} tensors, got {}",
        current.len(),
        saved.len()
    );
    for (i, (new, old)) in saved.iter().zip(current).enumerate() {
        ensure!(
            new.shape() == old.shape(),
            "{who}: tensor {i} has shape {:?}, expected {:?}",
            new.shape(),
            old.shape()
        );
    }
    saved.iter().map(|t| t.to_device(device)).collect()
}
