//! Adam state in checkpoints (adapter over `crate::optim::Adam`).

use std::path::Path;

use anyhow::{bail, Result};

use crate::checkpoint::TensorFile;
use crate::nn::ParamStore;
use crate::optim::Adam;

pub fn save(_f: &mut TensorFile, _prefix: &str, _opt: &Adam, _store: &ParamStore) -> Result<()> {
    bail!("not wired yet")
}

pub fn load(
    _f: &TensorFile,
    _prefix: &str,
    _opt: &mut Adam,
    _store: &ParamStore,
    _path: &Path,
) -> Result<()> {
    bail!("not wired yet")
}
