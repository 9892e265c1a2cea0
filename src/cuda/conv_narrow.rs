//! conv2d's backward data (= conv_transpose2d's forward) for the two shapes that conv.cu's implicit GEMM handles
//! badly, both at the ends of a DCGAN:
//!
//! - **Few input channels** (C <= [`MAX_C`]: the image layer, 3 or 1 channels): the GEMM has only C rows, so even
//!   the 16-row tile is mostly padding. `kernels/conv_narrow.cu` sums over the stride-phase taps directly, one
//!   thread per input pixel position and all C channels.
//! - **A 1x1 output covering the whole input** (H = kh, W = kw, no padding: conv_transpose2d of a 1x1 input,
//!   the generator's first layer): every tap meets exactly one input pixel, so backward data is the plain product
//!   dx [N, C*kh*kw] = dy [N, O] · w [O, C*kh*kw], which is linear.cu's backward-data GEMM with K = O (the conv
//!   GEMM would run K = O*kh*kw, all but one tap in kh*kw of it outside dy).
//!
//! Both run f32 arithmetic at every [`Precision`](super::conv::Precision): the narrow kernel has no tensor-core
//! variant, and the 1x1 product is a few hundred MFLOP at most. One exception: at the 16-bit precisions a 1x1
//! kernel's plain product (a linear layer's backward data, see linear.rs) goes to the tensor-core GEMM, which
//! then wastes no taps, so that every linear product rounds its operands as autocast does.

use anyhow::Result;

use super::backend::n_i32;
use super::linear;
use super::runtime::{KernelArg, LaunchCfg};
use super::CudaBackend;
use crate::ops::conv::ConvGeom as Geom;
use crate::tensor::Tensor;

/// Most input channels the narrow kernel takes (one float4 of weights per tap).
pub(crate) const MAX_C: usize = 4;
/// Weight taps (kh*kw) the narrow kernel stages per output channel at most (its shared-memory chunk).
const MAX_TAPS: usize = 1024;
/// The narrow kernel's tap bounds T (ceil(kh/sh) and ceil(kw/sw) <= T), the `_tT` of its entry names: T = 2
/// covers 4x4 stride 2; T = 4 the small stride-1 kernels. Every tap of the bound costs registers and code, so
/// larger kernels go to the GEMM.
const TAP_BOUNDS: [usize; 2] = [2, 4];
/// Images per thread and threads per block, as in conv_narrow.cu.
const IMGS: usize = 4;
const THREADS: usize = 256;

/// Whether backward data of `g` is the product dy [N, O] · w [O, C*kh*kw].
pub(crate) fn is_plain_product(g: &Geom) -> bool {
    g.h == g.kh && g.w == g.kw && g.ph == 0 && g.pw == 0
}

/// The tap bound of the narrow kernel variant for `g`, if it runs on one.
pub(crate) fn narrow_taps(g: &Geom) -> Option<usize> {
    let taps = g.kh.div_ceil(g.sh).max(g.kw.div_ceil(g.sw));
    let bound = TAP_BOUNDS.into_iter().find(|&t| taps <= t)?;
    (g.c <= MAX_C && g.kh * g.kw <= MAX_TAPS).then_some(bound)
}

/// Whether [`backward_data`] runs `g` itself rather than leaving it to the GEMM kernels.
pub(super) fn takes_backward_data(be: &CudaBackend, g: &Geom) -> bool {
    if is_plain_product(g) {
        !(g.kh * g.kw == 1 && be.precision().is_half())
    } else {
        narrow_taps(g).is_some()
    }
}

/// Writes dx for `g` (N > 0, shapes validated by the caller) when one of this module's shapes applies and
/// returns true; returns false, launching nothing, otherwise.
pub(super) fn backward_data(
    be: &CudaBackend,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    g: &Geom,
) -> Result<bool> {
    if !takes_backward_data(be, g) {
        return Ok(false);
    }
    if is_plain_product(g) {
        linear::matmul(be, dy, w, dx, (g.n, g.o, g.c * g.kh * g.kw))?;
        return Ok(true);
    }
    let Some(taps) = narrow_taps(g) else {
        return Ok(false);
    };
    let what = "conv2d_backward_data";
    let positions = g.n.div_ceil(IMGS) * g.h.div_ceil(g.sh) * g.w.div_ceil(g.sw);
    let warps = positions.div_ceil(32) * g.sh * g.sw;
    n_i32(warps * 32, what)?;
    let kernel = format!("conv2d_bwd_data_narrow_c{}_t{taps}_f32", g.c);
    let mut args = vec![
        KernelArg::Ptr(be.ptr(dy)?),
        KernelArg::Ptr(be.ptr(w)?),
        KernelArg::Ptr(be.ptr(dx)?),
    ];
    args.extend_from_slice(&g.args());
    let cfg = LaunchCfg::linear(warps * 32, THREADS as u32);
    be.launch(&kernel, cfg, &args)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Conv2dParams;

    fn geom(x: [usize; 4], w: [usize; 4], stride: usize, pad: usize) -> Geom {
        Geom::new("test", x, w, Conv2dParams::new(stride, pad)).unwrap()
    }

    #[test]
    fn dcgan_ends_take_these_paths() {
        // G1 (ConvTranspose 100 -> 512, 1x1 -> 4x4) as the conv it transposes: x = its output.
        let g1 = geom([64, 512, 4, 4], [100, 512, 4, 4], 1, 0);
        assert!(is_plain_product(&g1) && narrow_taps(&g1).is_none());
        // D5's backward data (512x4x4 -> 1x1) has the same form.
        assert!(is_plain_product(&geom(
            [64, 512, 4, 4],
            [1, 512, 4, 4],
            1,
            0
        )));
        // G5 / D1: 3 (or 1) image channels, 4x4 stride 2.
        for c in [1, 3] {
            let g = geom([64, c, 64, 64], [64, c, 4, 4], 2, 1);
            assert_eq!(narrow_taps(&g), Some(2));
            assert!(!is_plain_product(&g));
        }
        // The hidden layers stay on conv.cu.
        let d2 = geom([64, 64, 32, 32], [128, 64, 4, 4], 2, 1);
        assert!(narrow_taps(&d2).is_none() && !is_plain_product(&d2));
        // A 1x1 output with padding, or one that leaves input pixels uncovered, is not a plain product.
        assert!(!is_plain_product(&geom([2, 8, 2, 2], [5, 8, 4, 4], 1, 1)));
        assert!(!is_plain_product(&geom([2, 8, 5, 5], [5, 8, 4, 4], 2, 0)));
    }

    #[test]
    fn narrow_kernel_limits() {
        assert_eq!(
            narrow_taps(&geom([2, 4, 8, 8], [5, 4, 3, 3], 1, 1)),
            Some(4)
        );
        assert_eq!(
            narrow_taps(&geom([2, 4, 8, 8], [5, 4, 4, 4], 1, 1)),
            Some(4)
        );
        assert_eq!(
            narrow_taps(&geom([2, 4, 8, 8], [5, 4, 3, 3], 2, 1)),
            Some(2)
        );
        // One channel too many, a kernel too tall for the tap bound.
        assert_eq!(narrow_taps(&geom([2, 5, 8, 8], [5, 5, 3, 3], 1, 1)), None);
        assert_eq!(narrow_taps(&geom([2, 1, 9, 9], [5, 1, 5, 1], 1, 0)), None);
        // A stride so large that one output channel's taps overflow the shared-memory chunk.
        assert_eq!(
            narrow_taps(&geom([1, 1, 80, 80], [2, 1, 40, 40], 40, 0)),
            None
        );
    }
}
