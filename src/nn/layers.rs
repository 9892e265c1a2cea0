//! Layers: Conv2d (and transposed), BatchNorm (1-D and 2-D), Linear, max pooling, nearest upsampling and the
//! pointwise activations.
//!
//! A layer holds only ids into a [`ParamStore`]; the tensors live in the store under PyTorch's `state_dict`
//! names (`{prefix}.weight`, `{prefix}.running_mean`, ...), so a whole model saves and loads by name.
//! Initialisation follows the DCGAN paper (and PyTorch's DCGAN example `weights_init`): conv and linear weights
//! N(0, 0.02), BN gamma N(1, 0.02), every bias 0. Draws come from a seeded [`RngStream`], in registration
//! order, so a seed fixes a model exactly on every device.

use anyhow::{ensure, Context, Result};

use crate::autograd::{Tape, Var};
use crate::backend::{Activation, Conv2dParams, Pool2d, RunningStatsMut};
use crate::nn::params::{BufferId, ParamId, ParamStore};
use crate::ops;
use crate::ops::random::RngStream;
use crate::tensor::Tensor;

/// Standard deviation of the DCGAN weight init.
pub const INIT_STD: f32 = 0.02;

/// 2-D convolution without bias (DCGAN follows every conv by batch norm or the output): PyTorch's Conv2d, weight
/// `[out, in, kh, kw]`, or with `transposed` its ConvTranspose2d, weight `[in, out, kh, kw]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: ParamId,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub params: Conv2dParams,
    pub transposed: bool,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        transposed: bool,
        rng: &mut RngStream,
    ) -> Result<Conv2d> {
        let (a, b) = match transposed {
            false => (out_channels, in_channels),
            true => (in_channels, out_channels),
        };
        let w = rng.normal(&[a, b, kernel, kernel], 0.0, INIT_STD, &store.device)?;
        let weight = store.add(&format!("{prefix}.weight"), w);
        Ok(Conv2d {
            weight,
            in_channels,
            out_channels,
            kernel,
            params: Conv2dParams::new(stride, padding),
            transposed,
        })
    }

    /// A 3×3 convolution with stride 1 and padding 1: after a 2× upsampling, [`ops::resize_conv2d`] computes the
    /// pair.
    fn is_resize_conv3x3(&self) -> bool {
        !self.transposed && self.kernel == 3 && self.params == Conv2dParams::new(1, 1)
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let w = store.var(tape, self.weight);
        let y = match self.transposed {
            false => ops::conv2d(tape, x, w, self.params),
            true => ops::conv_transpose2d(tape, x, w, self.params, None),
        };
        y.with_context(|| self.describe(store))
    }

    /// [`forward`](Self::forward) then `act`: one op ([`ops::conv2d_act`]) for a convolution, two for a
    /// transposed one.
    pub fn forward_act(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        act: Activation,
    ) -> Result<Var> {
        if self.transposed {
            let y = self.forward(tape, store, x)?;
            return ops::activation(tape, y, act);
        }
        let w = store.var(tape, self.weight);
        let y = ops::conv2d_act(tape, x, w, self.params, act);
        y.with_context(|| format!("{} + {act:?}", self.describe(store)))
    }

    /// [`forward`](Self::forward) for a convolution followed by a training-mode batch norm: also the output's
    /// statistics in parts, when the backend gathers them in the convolution's own pass
    /// ([`ops::conv2d_with_stats`]).
    pub fn forward_with_stats(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
    ) -> Result<(Var, Option<Tensor>)> {
        let w = store.var(tape, self.weight);
        let y = match self.transposed {
            false => ops::conv2d_with_stats(tape, x, w, self.params),
            true => ops::conv_transpose2d_with_stats(tape, x, w, self.params, None),
        };
        y.with_context(|| self.describe(store))
    }

    fn describe(&self, store: &ParamStore) -> String {
        let kind = match self.transposed {
            false => "Conv2d",
            true => "ConvTranspose2d",
        };
        format!("{} ({kind})", store.name(self.weight))
    }
}

/// Batch norm over the channels of NCHW (BatchNorm2d) or the features of [N, F] (BatchNorm1d); which one is
/// decided by the input's rank, the parameters are the same.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub weight: ParamId,
    pub bias: ParamId,
    pub running_mean: BufferId,
    pub running_var: BufferId,
    pub num_batches_tracked: BufferId,
    pub num_features: usize,
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNorm {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        num_features: usize,
        rng: &mut RngStream,
    ) -> Result<BatchNorm> {
        let dev = store.device.clone();
        let gamma = rng.normal(&[num_features], 1.0, INIT_STD, &dev)?;
        let weight = store.add(&format!("{prefix}.weight"), gamma);
        let bias = store.add(
            &format!("{prefix}.bias"),
            Tensor::zeros(&[num_features], &dev)?,
        );
        let running_mean = store.add_buffer(
            &format!("{prefix}.running_mean"),
            Tensor::zeros(&[num_features], &dev)?,
        );
        let running_var = store.add_buffer(
            &format!("{prefix}.running_var"),
            Tensor::full(&[num_features], 1.0, &dev)?,
        );
        // A 0-d tensor, as in PyTorch; an integer there, an f32 here (exact up to 2^24 batches) and written
        // back as int64 by the checkpoint code.
        let num_batches_tracked = store.add_buffer(
            &format!("{prefix}.num_batches_tracked"),
            Tensor::zeros(&[], &dev)?,
        );
        Ok(BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            num_features,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// Training mode normalises with the batch statistics and folds them into the running stats; eval mode
    /// normalises with the running stats and changes nothing. `act`: an activation fused into the same op
    /// ([`ops::batch_norm_act`]). `parts`: in training mode, the statistics of x in parts when the layer that
    /// wrote x gathered them ([`Conv2d::forward_with_stats`]), so that x is not read for them.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        train: bool,
        act: Option<Activation>,
        parts: Option<&Tensor>,
    ) -> Result<Var> {
        let shape = tape.value(x).shape().to_vec();
        ensure!(
            (shape.len() == 2 || shape.len() == 4) && shape[1] == self.num_features,
            "{}: BatchNorm over {} features expects [N, {f}] or [N, {f}, H, W], got {:?}",
            store.name(self.weight),
            self.num_features,
            shape,
            f = self.num_features
        );
        let g = store.var(tape, self.weight);
        let b = store.var(tape, self.bias);
        let name = store.name(self.weight).to_string();
        let [rm, rv, batches] = store.buffers_mut([
            self.running_mean,
            self.running_var,
            self.num_batches_tracked,
        ]);
        // The backend counts the batch in place with the statistics (the counter keeps its storage).
        let running = RunningStatsMut::new(rm, rv, self.momentum).counting(batches);
        match parts.filter(|_| train) {
            Some(p) => ops::batch_norm_act_from_parts(tape, x, [g, b], running, self.eps, act, p),
            None => ops::batch_norm_act(tape, x, [g, b], running, train, self.eps, act),
        }
        .with_context(|| format!("{name} (BatchNorm)"))
    }
}

/// Fully connected layer with bias, PyTorch layout `weight [out, in]`, `bias [out]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        rng: &mut RngStream,
    ) -> Result<Linear> {
        let dev = store.device.clone();
        let w = rng.normal(&[out_features, in_features], 0.0, INIT_STD, &dev)?;
        let weight = store.add(&format!("{prefix}.weight"), w);
        let bias = store.add(
            &format!("{prefix}.bias"),
            Tensor::zeros(&[out_features], &dev)?,
        );
        Ok(Linear {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let w = store.var(tape, self.weight);
        let b = store.var(tape, self.bias);
        ops::linear(tape, x, w, Some(b))
            .with_context(|| format!("{} (Linear)", store.name(self.weight)))
    }
}

/// One entry of a [`Sequential`]; its position is the `main.<index>` of the PyTorch names.
#[derive(Clone, Debug)]
pub enum Layer {
    Conv(Conv2d),
    BatchNorm(BatchNorm),
    Linear(Linear),
    Act(Activation),
    MaxPool(Pool2d),
    /// Nearest-neighbour upsampling by this integer scale (PyTorch's `nn.Upsample(scale_factor, "nearest")`).
    Upsample(usize),
}

impl Layer {
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        train: bool,
    ) -> Result<Var> {
        match self {
            Layer::Conv(l) => l.forward(tape, store, x),
            Layer::BatchNorm(l) => l.forward(tape, store, x, train, None, None),
            Layer::Linear(l) => l.forward(tape, store, x),
            Layer::Act(a) => ops::activation::activation(tape, x, *a),
            Layer::MaxPool(p) => ops::pool::max_pool2d(tape, x, *p),
            Layer::Upsample(s) => ops::upsample_nearest(tape, x, *s),
        }
    }
}

/// A square convolution's channels (in, out), kernel, stride and padding, as PyTorch's Conv2d takes them.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        ConvShape {
            cin,
            cout,
            k,
            stride,
            pad,
        }
    }
}

/// PyTorch's `nn.Sequential` named `prefix` (DCGAN's `main`): layers are built in order and layer `i`'s tensors
/// are named `{prefix}.{i}.*`, parameter-free layers included in the numbering.
pub struct Sequential {
    pub prefix: String,
    pub layers: Vec<Layer>,
}

impl Sequential {
    pub fn new(prefix: &str) -> Sequential {
        Sequential {
            prefix: prefix.to_string(),
            layers: vec![],
        }
    }

    /// The name prefix the next layer gets.
    pub fn next_name(&self) -> String {
        format!("{}.{}", self.prefix, self.layers.len())
    }

    pub fn conv(
        &mut self,
        store: &mut ParamStore,
        rng: &mut RngStream,
        c: ConvShape,
    ) -> Result<()> {
        self.push_conv(store, rng, c, false)
    }

    /// A transposed convolution (PyTorch's ConvTranspose2d).
    pub fn conv_t(
        &mut self,
        store: &mut ParamStore,
        rng: &mut RngStream,
        c: ConvShape,
    ) -> Result<()> {
        self.push_conv(store, rng, c, true)
    }

    fn push_conv(
        &mut self,
        store: &mut ParamStore,
        rng: &mut RngStream,
        c: ConvShape,
        transposed: bool,
    ) -> Result<()> {
        let ConvShape {
            cin,
            cout,
            k,
            stride,
            pad,
        } = c;
        let name = self.next_name();
        let l = Conv2d::new(store, &name, cin, cout, k, stride, pad, transposed, rng)?;
        self.layers.push(Layer::Conv(l));
        Ok(())
    }

    pub fn batch_norm(
        &mut self,
        store: &mut ParamStore,
        rng: &mut RngStream,
        features: usize,
    ) -> Result<()> {
        let l = BatchNorm::new(store, &self.next_name(), features, rng)?;
        self.layers.push(Layer::BatchNorm(l));
        Ok(())
    }

    pub fn linear(
        &mut self,
        store: &mut ParamStore,
        rng: &mut RngStream,
        fin: usize,
        fout: usize,
    ) -> Result<()> {
        let l = Linear::new(store, &self.next_name(), fin, fout, rng)?;
        self.layers.push(Layer::Linear(l));
        Ok(())
    }

    pub fn act(&mut self, a: Activation) {
        self.layers.push(Layer::Act(a));
    }

    pub fn max_pool(&mut self, p: Pool2d) {
        self.layers.push(Layer::MaxPool(p));
    }

    pub fn upsample(&mut self, scale: usize) {
        self.layers.push(Layer::Upsample(scale));
    }

    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &mut ParamStore,
        mut x: Var,
        train: bool,
    ) -> Result<Var> {
        let layers = &self.layers;
        let mut i = 0;
        while i < layers.len() {
            let act_at = |j: usize| match layers.get(j) {
                Some(Layer::Act(a)) => Some(*a),
                _ => None,
            };
            match (&layers[i], layers.get(i + 1)) {
                // In training, a convolution hands the batch norm after it its output's statistics, gathered
                // as it wrote the output (when the backend can), and the batch norm does not read them off x.
                (Layer::Conv(c), Some(Layer::BatchNorm(bn))) if train => {
                    let (y, parts) = c.forward_with_stats(tape, store, x)?;
                    let act = act_at(i + 2);
                    x = bn.forward(tape, store, y, train, act, parts.as_ref())?;
                    i += 2 + usize::from(act.is_some());
                }
                // A convolution and the activation right after it (D's first layer) run as one op: the
                // convolution stores the activation of its sums where the backend can (same values, one pass
                // fewer).
                (Layer::Conv(c), Some(Layer::Act(a))) => {
                    x = c.forward_act(tape, store, x, *a)?;
                    i += 2;
                }
                // Batch norm and the activation after it run as one fused op (same values, one pass fewer).
                (Layer::BatchNorm(bn), Some(Layer::Act(a))) => {
                    x = bn.forward(tape, store, x, train, Some(*a), None)?;
                    i += 2;
                }
                // A 2x upsampling and the 3x3 convolution after it run as one transposed convolution (the
                // same values up to rounding, at 16 instead of 36 multiply-adds per input cell and output
                // channel).
                (Layer::Upsample(2), Some(Layer::Conv(c))) if c.is_resize_conv3x3() => {
                    let w = store.var(tape, c.weight);
                    x = ops::resize_conv2d(tape, x, w)
                        .with_context(|| format!("{} (Upsample + Conv2d)", store.name(c.weight)))?;
                    i += 2;
                }
                (l, _) => {
                    x = l.forward(tape, store, x, train)?;
                    i += 1;
                }
            }
        }
        Ok(x)
    }
}
