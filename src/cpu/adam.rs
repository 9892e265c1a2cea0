use crate::backend::{AdamHyper, AdamSlot};
use anyhow::Result;
pub fn step(_slots: &mut [AdamSlot<'_>], _h: AdamHyper) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
