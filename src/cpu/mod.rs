//! The CPU backend: the reference every CUDA kernel is checked against, and a real fallback.
//! Convolutions and linear layers run on a packed SIMD GEMM (`gemm` crate); loops over the batch or channels
//! are spread over threads with rayon.
//!
//! Each op family has its own file; this one only routes the [`Backend`] trait to them.

pub mod activation;
pub mod adam;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod ema;
pub mod heap;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod random;
pub mod resize;
pub mod rmsprop;
pub mod shape;

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::backend::*;
use crate::tensor::{numel, Storage, Tensor};

pub use crate::device::{CpuBackend, CPU};

/// A buffer every element of which the pass will write. Debug builds (the tests) fill it with NaN, so an
/// element left unwritten cannot pass for a result. Release builds ask for zeros (`vec![0.0; n]`, a calloc):
/// free on fresh pages, but calloc clears recycled heap memory with a memset, which is the same extra pass as
/// the NaN fill (docs/perf-notes.md). The pointwise maps avoid both with uncleared memory
/// (`elementwise::par_map`).
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        vec![f32::NAN; len]
    } else {
        vec![0.0; len]
    }
}

/// Host slice of a tensor that must be on the CPU.
pub fn data(t: &Tensor) -> Result<&[f32]> {
    match t.cpu_data() {
        Some(d) => Ok(d),
        None => bail!("CPU backend was given a tensor on {}", t.device().name()),
    }
}

/// Mutable host data of a tensor that must be on the CPU.
pub fn data_mut(t: &mut Tensor) -> Result<&mut Vec<f32>> {
    let dev = t.device().name();
    match t.cpu_data_mut() {
        Some(d) => Ok(d),
        None => bail!("CPU backend was given a tensor on {dev}"),
    }
}

/// Wraps a host vector as a CPU tensor.
pub fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    debug_assert_eq!(v.len(), numel(shape));
    Tensor::from_storage(Storage::Cpu(Arc::new(v)), shape)
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        match rayon::current_num_threads() {
            1 => "cpu (1 thread)".to_string(),
            n => format!("cpu ({n} threads)"),
        }
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(tensor(vec![0.0; numel(shape)], shape))
    }

    fn from_host(&self, d: &[f32], shape: &[usize]) -> Result<Tensor> {
        anyhow::ensure!(
            d.len() == numel(shape),
            "{} values for shape {:?}",
            d.len(),
            shape
        );
        Ok(tensor(d.to_vec(), shape))
    }

    fn to_host(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(data(x)?.to_vec())
    }

    fn randn(
        &self,
        shape: &[usize],
        mean: f32,
        std: f32,
        seed: u64,
        offset: u64,
    ) -> Result<Tensor> {
        Ok(tensor(
            random::normal(numel(shape), mean, std, seed, offset),
            shape,
        ))
    }

    fn rand_uniform(
        &self,
        shape: &[usize],
        lo: f32,
        hi: f32,
        seed: u64,
        offset: u64,
    ) -> Result<Tensor> {
        Ok(tensor(
            random::uniform(numel(shape), lo, hi, seed, offset),
            shape,
        ))
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        elementwise::add(a, b)
    }

    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()> {
        elementwise::add_assign(a, b)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        elementwise::mul(a, b)
    }

    fn affine_assign(&self, x: &mut Tensor, alpha: f32, beta: f32) -> Result<()> {
        elementwise::affine_assign(x, alpha, beta)
    }

    fn affine(&self, a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        elementwise::affine(a, alpha, beta)
    }

    fn powf(&self, a: &Tensor, p: f32) -> Result<Tensor> {
        elementwise::powf(a, p)
    }

    fn sum(&self, a: &Tensor) -> Result<Tensor> {
        elementwise::sum(a)
    }

    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        activation::activation(x, act)
    }

    fn activation_backward(&self, y: &Tensor, dy: &Tensor, act: Activation) -> Result<Tensor> {
        activation::activation_backward(y, dy, act)
    }

    fn conv2d(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        conv::conv2d(x, w, p)
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        conv::conv2d_backward_data(dy, w, x_shape, p)
    }

    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        conv::conv2d_backward_weight(x, dy, w_shape, p)
    }

    fn batch_norm_train(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStatsMut<'_>,
        act: Option<Activation>,
    ) -> Result<BatchNormOut> {
        batchnorm::batch_norm_train(x, affine, running, act)
    }

    fn batch_norm_eval(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStats<'_>,
        act: Option<Activation>,
    ) -> Result<Tensor> {
        batchnorm::batch_norm_eval(x, affine, running, act)
    }

    fn batch_norm_backward(
        &self,
        saved: BatchNormSaved<'_>,
        dy: &Tensor,
    ) -> Result<BatchNormGrads> {
        batchnorm::batch_norm_backward(saved, dy)
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        linear::linear(x, w, b)
    }

    fn linear_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        need: LinearNeed,
    ) -> Result<LinearGrads> {
        linear::linear_backward(x, w, dy, need)
    }

    fn bce_with_logits(&self, logits: &Tensor, target: f32) -> Result<(Tensor, Tensor)> {
        loss::bce_with_logits(logits, target)
    }

    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor> {
        shape::concat_channels(xs)
    }

    fn slice_channels(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        shape::slice_channels(x, start, len)
    }

    fn adam_step(&self, slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()> {
        adam::adam_step(slots, h)
    }

    // ---- pooling and bilinear resize ----
    fn max_pool2d(&self, x: &Tensor, p: Pool2d) -> Result<Tensor> {
        pool::max_pool2d(x, p)
    }

    fn max_pool2d_backward(&self, x: &Tensor, dy: &Tensor, p: Pool2d) -> Result<Tensor> {
        pool::max_pool2d_backward(x, dy, p)
    }

    fn avg_pool2d(&self, x: &Tensor, p: Pool2d, count_include_pad: bool) -> Result<Tensor> {
        pool::avg_pool2d(x, p, count_include_pad)
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        p: Pool2d,
        count_include_pad: bool,
    ) -> Result<Tensor> {
        pool::avg_pool2d_backward(dy, x_shape, p, count_include_pad)
    }

    fn resize_bilinear(
        &self,
        x: &Tensor,
        out_h: usize,
        out_w: usize,
        mode: ResizeMode,
    ) -> Result<Tensor> {
        resize::resize_bilinear(x, out_h, out_w, mode)
    }

    fn resize_bilinear_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        mode: ResizeMode,
    ) -> Result<Tensor> {
        resize::resize_bilinear_backward(dy, x_shape, mode)
    }

    fn upsample_nearest(&self, x: &Tensor, scale: usize) -> Result<Tensor> {
        resize::upsample_nearest(x, scale)
    }

    fn upsample_nearest_backward(&self, dy: &Tensor, scale: usize) -> Result<Tensor> {
        resize::upsample_nearest_backward(dy, scale)
    }

    fn resize_conv_weight(&self, w: &Tensor) -> Result<Tensor> {
        resize::resize_conv_weight(w)
    }

    fn resize_conv_weight_backward(&self, dk: &Tensor) -> Result<Tensor> {
        resize::resize_conv_weight_backward(dk)
    }

    // ---- WGAN training: weight clipping and RMSprop; the generator average ----------------------------------
    fn clamp_(&self, xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()> {
        rmsprop::clamp_(xs, lo, hi)
    }

    fn ema_(&self, avgs: &mut [&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()> {
        ema::ema_(avgs, xs, decay)
    }

    fn rmsprop_step(&self, slots: &mut [RmsPropSlot<'_>], h: RmsPropHyper) -> Result<()> {
        rmsprop::rmsprop_step(slots, h)
    }
}
