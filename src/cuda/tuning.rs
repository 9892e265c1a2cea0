//! Launch choices of the GEMM kernels that a tuning run may override without a rebuild.
//!
//! The defaults are rules in conv.rs: the tensor-core tile by the GEMM's rows (64 x 128 up to 64 rows, 128 x 128
//! above) and split-K until a launch reaches about two waves of an H100 / H200 (`TARGET_BLOCKS`). Both were
//! chosen by reading, not by timing. A GPU session can time the alternatives in one call (scripts/first_light.sh,
//! phase 8) through environment variables, read when a CUDA backend opens:
//!
//! - `GAN_ENGINE_CONV_TILE=64|128`: the tensor-core tile rows of every convolution GEMM that runs on one (more
//!   than 16 rows at precision tf32, bf16 or fp16; at fp32, those on the channels-last kernels).
//! - `GAN_ENGINE_SPLIT_K_BLOCKS=N`: the blocks a split-K launch aims for (convolutions and linear layers); 1
//!   never splits.
//! - `GAN_ENGINE_CONV_LAYOUT=nchw|nhwc`: whether a convolution GEMM on a tensor-core tile (TF32, bf16, fp16; or
//!   FP32 with more than 16 rows) whose channels suit conv_nhwc.rs's kernels converts its operands to
//!   channels-last values of its format (f32 as they are at FP32) and runs those kernels (`nhwc`, the rule) or
//!   runs the NCHW ones (`nchw`: the tensor-core gathers from NCHW f32, or conv.cu's FP32 kernels). The two sum the
//!   same products in another order.
//! - `GAN_ENGINE_CONV_REUSE=on|off`: whether the channels-last copies of the convolutions' operands are kept
//!   while their sources are unchanged (operand_cache.rs: a weight converted once between optimizer steps, an
//!   activation's forward copy read again by its backward weight; `on`, the rule) or made for each GEMM and
//!   dropped after it (`off`). The same values either way: the A/B of the conversion passes it saves against the
//!   memory the copies hold.
//!
//! Within one output tile the reduction runs in the same slices and order whichever tile holds it, but the split
//! rule counts tiles and batch norm merges one statistics part per tile: under an override a result can differ
//! from the default's in its last bits (the same sums grouped otherwise), on the GPU and on the emulation alike.
//! An override is for timing; training runs that should be bit-identical to each other leave the tile, split and
//! layout unset.

use anyhow::{bail, Result};

/// The overrides; None keeps the rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmTuning {
    /// Rows of the tensor-core tile (64 or 128).
    pub tc_rows: Option<usize>,
    /// Blocks a split-K launch aims for (at least 1).
    pub split_k_blocks: Option<usize>,
    /// Whether the convolutions may run channels-last (true) or always NCHW (false).
    pub nhwc: Option<bool>,
    /// Whether channels-last operand copies are kept for reuse (true) or dropped after each GEMM (false).
    pub reuse: Option<bool>,
}

pub const TILE_VAR: &str = "GAN_ENGINE_CONV_TILE";
pub const SPLIT_VAR: &str = "GAN_ENGINE_SPLIT_K_BLOCKS";
pub const LAYOUT_VAR: &str = "GAN_ENGINE_CONV_LAYOUT";
pub const REUSE_VAR: &str = "GAN_ENGINE_CONV_REUSE";

impl GemmTuning {
    /// From the environment; an unset or empty variable keeps the rule, anything unreadable is an error that
    /// names the variable.
    pub fn from_env() -> Result<GemmTuning> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        GemmTuning::parse(
            var(TILE_VAR).as_deref(),
            var(SPLIT_VAR).as_deref(),
            var(LAYOUT_VAR).as_deref(),
            var(REUSE_VAR).as_deref(),
        )
    }

    /// From the four variables' values.
    pub fn parse(
        tile: Option<&str>,
        split_blocks: Option<&str>,
        layout: Option<&str>,
        reuse: Option<&str>,
    ) -> Result<GemmTuning> {
        let tc_rows = match tile {
            None => None,
            Some("64") => Some(64),
            Some("128") => Some(128),
            Some(v) => bail!("{TILE_VAR}={v:?}: the tensor-core tiles have 64 or 128 rows"),
        };
        let split_k_blocks = match split_blocks {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1 << 20).contains(&n) => Some(n),
                _ => bail!(
                    "{SPLIT_VAR}={v:?}: give the blocks a split-K launch aims for, 1 to 1048576"
                ),
            },
        };
        let nhwc = match layout {
            None => None,
            Some("nhwc") => Some(true),
            Some("nchw") => Some(false),
            Some(v) => bail!("{LAYOUT_VAR}={v:?}: the convolution layouts are nchw and nhwc"),
        };
        let reuse = match reuse {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(v) => {
                bail!("{REUSE_VAR}={v:?}: on keeps converted operands for reuse, off does not")
            }
        };
        Ok(GemmTuning {
            tc_rows,
            split_k_blocks,
            nhwc,
            reuse,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_overrides_and_names_a_bad_value() {
        assert_eq!(
            GemmTuning::parse(None, None, None, None).unwrap(),
            GemmTuning::default()
        );
        let t = GemmTuning::parse(Some("128"), Some("1"), Some("nchw"), Some("off")).unwrap();
        assert_eq!(
            (t.tc_rows, t.split_k_blocks, t.nhwc, t.reuse),
            (Some(128), Some(1), Some(false), Some(false))
        );
        let t = GemmTuning::parse(None, None, Some("nhwc"), Some("on")).unwrap();
        assert_eq!((t.nhwc, t.reuse), (Some(true), Some(true)));
        for (tile, split, layout, reuse, var) in [
            (Some("96"), None, None, None, TILE_VAR),
            (Some("x"), None, None, None, TILE_VAR),
            (None, Some("0"), None, None, SPLIT_VAR),
            (None, Some("-3"), None, None, SPLIT_VAR),
            (None, Some("many"), None, None, SPLIT_VAR),
            (None, None, Some("NHWC"), None, LAYOUT_VAR),
            (None, None, Some("chw"), None, LAYOUT_VAR),
            (None, None, None, Some("1"), REUSE_VAR),
            (None, None, None, Some("ON"), REUSE_VAR),
        ] {
            let e = GemmTuning::parse(tile, split, layout, reuse)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(var), "{e}");
        }
    }
}
