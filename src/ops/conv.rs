//! conv2d and conv_transpose2d (no bias, groups = 1, no dilation).
//!
//! A transposed convolution is the adjoint of a convolution with the same weight, so it needs no numerical
//! code of its own: with w [Cin, Cout, kh, kw] read as a conv weight [O = Cin, C = Cout, kh, kw],
//! - its forward is the conv's input gradient: `conv2d_backward_data(x, w)`,
//! - its input gradient is the conv itself: `conv2d(dy, w)`,
//! - its weight gradient is the conv's weight gradient with the roles swapped: the conv's "input" is our
//!   output gradient and the conv's "output gradient" is our input x.
//!
//! The weight gradient is an op of its own for double backward; with it the three passes (conv, transposed
//! conv, weight gradient) are each other's gradients, so every gradient of a convolution differentiates again.

use anyhow::{bail, ensure, Result};

use crate::autograd::{rule, FoldSwitch, Tape, Var};
use crate::backend::{Activation, Conv2dParams};
use crate::ops::activation::derivative_times;
use crate::tensor::Tensor;

/// The sizes of one convolution, validated once: both backends build it for each of the three passes, so the
/// checks and their messages are the same on every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Validates an input of `x` = [N, C, H, W] against a weight `w` = [O, C, kh, kw].
    pub fn new(what: &str, x: [usize; 4], w: [usize; 4], p: Conv2dParams) -> Result<ConvGeom> {
        let [n, c, h, wd] = x;
        let [o, wc, kh, kw] = w;
        ensure!(
            c == wc,
            "{what}: input has {c} channels but the weight {w:?} expects {wc}"
        );
        ensure!(
            c > 0 && h > 0 && wd > 0 && o > 0 && kh > 0 && kw > 0,
            "{what}: empty dimension in input {x:?} or weight {w:?}"
        );
        ensure!(
            p.stride.0 > 0 && p.stride.1 > 0,
            "{what}: stride must be positive, got {:?}",
            p.stride
        );
        let Some((ho, wo)) = p.output_size(h, wd, kh, kw) else {
            bail!(
                "{what}: kernel {kh}x{kw} is larger than the padded input {}x{} (input {h}x{wd}, padding {:?})",
                h + 2 * p.padding.0,
                wd + 2 * p.padding.1,
                p.padding
            );
        };
        Ok(ConvGeom {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            sh: p.stride.0,
            sw: p.stride.1,
            ph: p.padding.0,
            pw: p.padding.1,
            ho,
            wo,
        })
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }

    /// dy must be exactly the output shape of this convolution.
    pub fn check_dy(&self, what: &str, dy: [usize; 4], input_name: &str) -> Result<()> {
        ensure!(
            dy == self.out_shape(),
            "{what}: dy has shape {dy:?}, but a {}x{} kernel with stride {:?} and padding {:?} over {input_name} \
             [{}, {}, {}, {}] gives {:?}",
            self.kh,
            self.kw,
            (self.sh, self.sw),
            (self.ph, self.pw),
            self.n,
            self.c,
            self.h,
            self.w,
            self.out_shape()
        );
        Ok(())
    }
}

/// x [N, C, H, W], w [O, C, kh, kw] (PyTorch Conv2d layout), no bias.
pub fn conv2d(tape: &mut Tape, x: Var, w: Var, p: Conv2dParams) -> Result<Var> {
    let (xv, wv) = (tape.value(x), tape.value(w));
    check_same_device("conv2d", xv, wv)?;
    let y = xv.backend().conv2d(xv, wv, p)?;
    record_conv2d(tape, x, w, p, None, y)
}

/// [`conv2d`] followed by `act` as one op, for a convolution with no batch norm after it (DCGAN's first D
/// layer): the backend may store the activation of the sums as it writes them
/// ([`Backend::conv2d_act`](crate::backend::Backend::conv2d_act)), so the activation costs no pass of its own.
/// The backward takes dy through the activation from the output, as [`activation`](super::activation) does,
/// then through the convolution: the gradients are the composition's.
pub fn conv2d_act(
    tape: &mut Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
    act: Activation,
) -> Result<Var> {
    let (xv, wv) = (tape.value(x), tape.value(w));
    check_same_device("conv2d", xv, wv)?;
    let y = xv.backend().conv2d_act(xv, wv, p, act)?;
    record_conv2d(tape, x, w, p, Some(act), y)
}

/// [`conv2d`] whose output goes to a training-mode batch norm: also the output's per-channel statistics in
/// parts, when the backend gathers them as it writes the output
/// ([`Backend::conv2d_with_stats`](crate::backend::Backend::conv2d_with_stats); for
/// [`batch_norm_act_from_parts`](super::batchnorm::batch_norm_act_from_parts)).
pub fn conv2d_with_stats(
    tape: &mut Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
) -> Result<(Var, Option<Tensor>)> {
    let (xv, wv) = (tape.value(x), tape.value(w));
    check_same_device("conv2d", xv, wv)?;
    let (y, parts) = xv.backend().conv2d_with_stats(xv, wv, p)?;
    Ok((record_conv2d(tape, x, w, p, None, y)?, parts))
}

fn check_same_device(what: &str, x: &Tensor, w: &Tensor) -> Result<()> {
    ensure!(
        x.device().same(&w.device()),
        "{what}: x is on {} but w is on {}",
        x.device().name(),
        w.device().name()
    );
    Ok(())
}

/// Puts y = conv2d(x, w), or act of it, on the tape, with its gradients: dy goes back through the activation
/// (from y, as the activation op does) and then through the convolution.
///
/// Folds (see [`crate::autograd`]): with an activation, the op offers its backward to the consumer of y, and
/// when that is the only consumer it gets the gradient of the sums straight away. As a consumer, it claims the
/// fold that x's producer offers (DCGAN's second D layer, of the first's LeakyReLU): its input gradient then
/// stores act'(x)·dx as it is written ([`Backend::conv2d_backward_data_act`](crate::backend::Backend)).
fn record_conv2d(
    tape: &mut Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
    act: Option<Activation>,
    y: Tensor,
) -> Result<Var> {
    let (xv, wv) = (tape.value(x), tape.value(w));
    let (saved_x, saved_w) = (xv.clone(), wv.clone());
    // The output is kept only where the backward takes dy through the activation.
    let saved_y = act.map(|_| y.clone());
    let (x_shape, w_shape) = (xv.dims4("conv2d x")?, wv.dims4("conv2d w")?);
    let offered = act.map(|a| (a, FoldSwitch::new()));
    let folded = offered.as_ref().map(|(_, s)| s.clone());
    let claimed = tape.fold_offer(x);
    let claims = claimed.is_some();
    let out = tape.push_op_with_rule(
        if act.is_some() {
            "conv2d + activation"
        } else {
            "conv2d"
        },
        y,
        &[x, w],
        Box::new(move |dy, need| {
            let b = dy.backend();
            // Folded: the consumer already took dy through the activation.
            let dz = match (&saved_y, act) {
                (Some(y), Some(a)) if !folded.as_ref().is_some_and(|s| s.on()) => {
                    Some(b.activation_backward(y, dy, a)?)
                }
                _ => None,
            };
            let dz = dz.as_ref().unwrap_or(dy);
            let fold = claimed.as_ref().filter(|f| f.switch.on());
            if need[0] && need[1] {
                let act = fold.map(|f| (f.act, &f.y));
                let (dx, dw) = b.conv2d_backward(dz, &saved_x, &saved_w, p, act)?;
                return Ok(vec![Some(dx), Some(dw)]);
            }
            let dx = need[0]
                .then(|| match fold {
                    Some(f) => b.conv2d_backward_data_act(dz, &saved_w, p, f.act, &f.y),
                    None => b.conv2d_backward_data(dz, &saved_w, x_shape, p),
                })
                .transpose()?;
            let dw = need[1]
                .then(|| b.conv2d_backward_weight(&saved_x, dz, w_shape, p))
                .transpose()?;
            Ok(vec![dx, dw])
        }),
        rule(move |t, a| {
            let (x, w) = (a.inputs[0], a.inputs[1]);
            let dz = match act {
                Some(f) => derivative_times(t, a.out, a.dy, f)?,
                None => a.dy,
            };
            Ok(vec![
                a.grad(0, || conv_data(t, dz, w, x_shape, p))?,
                a.grad(1, || conv_weight(t, x, dz, w_shape, p))?,
            ])
        }),
    );
    if let Some((a, switch)) = offered {
        tape.offer_fold(out, a, switch);
    }
    if claims {
        tape.claim_fold(out, 0);
    }
    Ok(out)
}

/// The input gradient of a convolution with weight w [O, C, kh, kw] over inputs of `x_shape`, from dy
/// [N, O, Ho, Wo]: a transposed convolution of dy. Its own gradients are the convolution itself (for dy) and a
/// weight gradient (for w).
fn conv_data(
    tape: &mut Tape,
    dy: Var,
    w: Var,
    x_shape: [usize; 4],
    p: Conv2dParams,
) -> Result<Var> {
    let (dyv, wv) = (tape.value(dy), tape.value(w));
    let y = dyv.backend().conv2d_backward_data(dyv, wv, x_shape, p)?;
    record_conv_data(tape, dy, w, p, y)
}

/// Puts y = conv_data(dy, w) on the tape, with its gradients.
fn record_conv_data(tape: &mut Tape, dy: Var, w: Var, p: Conv2dParams, y: Tensor) -> Result<Var> {
    let (dyv, wv) = (tape.value(dy), tape.value(w));
    let w_shape = wv.dims4("conv_transpose2d w")?;
    let (saved_dy, saved_w) = (dyv.clone(), wv.clone());
    Ok(tape.push_op_with_rule(
        "conv_transpose2d",
        y,
        &[dy, w],
        Box::new(move |g, need| {
            let b = g.backend();
            if need[0] && need[1] {
                let (ddy, dw) = b.conv_transpose2d_backward(g, &saved_dy, &saved_w, p)?;
                return Ok(vec![Some(ddy), Some(dw)]);
            }
            let ddy = need[0].then(|| b.conv2d(g, &saved_w, p)).transpose()?;
            let dw = need[1]
                .then(|| b.conv2d_backward_weight(g, &saved_dy, w_shape, p))
                .transpose()?;
            Ok(vec![ddy, dw])
        }),
        rule(move |t, a| {
            let (dy, w) = (a.inputs[0], a.inputs[1]);
            Ok(vec![
                a.grad(0, || conv2d(t, a.dy, w, p))?,
                a.grad(1, || conv_weight(t, a.dy, dy, w_shape, p))?,
            ])
        }),
    ))
}

/// The weight gradient [`w_shape`] of a convolution of x from dy. Linear in each argument: its gradient for x
/// is an input gradient ([`conv_data`]) and for dy a convolution.
fn conv_weight(
    tape: &mut Tape,
    x: Var,
    dy: Var,
    w_shape: [usize; 4],
    p: Conv2dParams,
) -> Result<Var> {
    let (xv, dyv) = (tape.value(x), tape.value(dy));
    let y = xv.backend().conv2d_backward_weight(xv, dyv, w_shape, p)?;
    let x_shape = xv.dims4("conv2d weight gradient x")?;
    Ok(tape.push_rule_op(
        "conv2d weight gradient",
        y,
        &[x, dy],
        rule(move |t, a| {
            let (x, dy) = (a.inputs[0], a.inputs[1]);
            Ok(vec![
                a.grad(0, || conv_data(t, dy, a.dy, x_shape, p))?,
                a.grad(1, || conv2d(t, x, a.dy, p))?,
            ])
        }),
    ))
}

/// Output height or width of a transposed convolution along one axis: (len − 1)·s − 2p + k by default, or
/// the requested size, which must be one the matching convolution maps back onto `len` (default .. default +
/// s − 1, what PyTorch's `output_padding` reaches).
fn transposed_len(
    axis: &str,
    len: usize,
    k: usize,
    s: usize,
    p: usize,
    requested: Option<usize>,
) -> Result<usize> {
    ensure!(s > 0, "conv_transpose2d: {axis} stride must be positive");
    let full = (len - 1) * s + k;
    if full <= 2 * p {
        bail!(
            "conv_transpose2d: {axis} output size would be {full} - 2*{p} <= 0 (input {len}, kernel {k}, stride {s}, \
             padding {p})"
        );
    }
    let default = full - 2 * p;
    match requested {
        None => Ok(default),
        Some(r) if (default..default + s).contains(&r) => Ok(r),
        Some(r) => bail!(
            "conv_transpose2d: requested {axis} output size {r} is not reachable; with input {len}, kernel {k}, \
             stride {s}, padding {p} it must be in {default}..={}",
            default + s - 1
        ),
    }
}

/// x [N, Cin, H, W], w [Cin, Cout, kh, kw] (PyTorch ConvTranspose2d layout), no bias. `output_size` picks the
/// output height/width when the stride makes it ambiguous; default (H-1)*s - 2p + k.
pub fn conv_transpose2d(
    tape: &mut Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
    output_size: Option<(usize, usize)>,
) -> Result<Var> {
    let out_shape = transposed_shape(tape, x, w, p, output_size)?;
    conv_data(tape, x, w, out_shape, p)
}

/// [`conv_transpose2d`] with its output's per-channel statistics in parts, as [`conv2d_with_stats`].
pub fn conv_transpose2d_with_stats(
    tape: &mut Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
    output_size: Option<(usize, usize)>,
) -> Result<(Var, Option<Tensor>)> {
    let out_shape = transposed_shape(tape, x, w, p, output_size)?;
    let (xv, wv) = (tape.value(x), tape.value(w));
    let (y, parts) = xv
        .backend()
        .conv2d_backward_data_with_stats(xv, wv, out_shape, p)?;
    Ok((record_conv_data(tape, x, w, p, y)?, parts))
}

/// The output shape of conv_transpose2d(x, w), after checking the pair.
fn transposed_shape(
    tape: &Tape,
    x: Var,
    w: Var,
    p: Conv2dParams,
    output_size: Option<(usize, usize)>,
) -> Result<[usize; 4]> {
    let (xv, wv) = (tape.value(x), tape.value(w));
    check_same_device("conv_transpose2d", xv, wv)?;
    let [n, cin, h, wd] = xv.dims4("conv_transpose2d x")?;
    let w_shape @ [wcin, cout, kh, kw] = wv.dims4("conv_transpose2d w")?;
    ensure!(
        cin == wcin,
        "conv_transpose2d: input has {cin} channels but the weight {w_shape:?} (layout [Cin, Cout, kh, kw]) \
         expects {wcin}"
    );
    ensure!(
        h > 0 && wd > 0,
        "conv_transpose2d: empty input {:?}",
        xv.shape()
    );
    let ho = transposed_len(
        "height",
        h,
        kh,
        p.stride.0,
        p.padding.0,
        output_size.map(|s| s.0),
    )?;
    let wo = transposed_len(
        "width",
        wd,
        kw,
        p.stride.1,
        p.padding.1,
        output_size.map(|s| s.1),
    )?;
    Ok([n, cout, ho, wo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{test_tensor, GradCheck};
    use crate::tensor::Tensor;

    fn params(stride: (usize, usize), padding: (usize, usize)) -> Conv2dParams {
        Conv2dParams { stride, padding }
    }

    fn check_grads(inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
        let worst = GradCheck::default().run(inputs, f).unwrap();
        assert!(worst.is_finite());
    }

    /// Second-order gradients of the three passes of a convolution, strided and padded as the critic's layers
    /// are (4×4, stride 2, padding 1) and with unequal strides and paddings, squared so that none vanishes.
    fn second_order(dev: &crate::Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let sq = |t: &mut Tape, y: Var| crate::ops::mul(t, y, y);
        let gc = GradCheck::default();
        for (xs, ws, p) in [
            ([2, 2, 6, 6], [3, 2, 4, 4], params((2, 2), (1, 1))),
            ([1, 2, 5, 4], [2, 2, 3, 2], params((2, 1), (1, 0))),
        ] {
            let (x, w) = (t(&xs, 1), t(&ws, 2));
            gc.run_second_order(&[x.clone(), w.clone()], |t, v| {
                let y = conv2d(t, v[0], v[1], p)?;
                sq(t, y)
            })
            .unwrap();
            let [n, _, h, wd] = xs;
            let (ho, wo) = p.output_size(h, wd, ws[2], ws[3]).unwrap();
            let dy = t(&[n, ws[0], ho, wo], 3);
            gc.run_second_order(&[dy.clone(), w], |t, v| {
                let y = conv_data(t, v[0], v[1], xs, p)?;
                sq(t, y)
            })
            .unwrap();
            gc.run_second_order(&[x, dy], |t, v| {
                let y = conv_weight(t, v[0], v[1], ws, p)?;
                sq(t, y)
            })
            .unwrap();
        }
    }

    test_devices!(second_order_gradients_match_finite_differences => super::second_order);

    const ACTS: [Activation; 4] = [
        Activation::LeakyRelu(0.2),
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
    ];

    /// A convolution and its activation as one op: first- and second-order gradients (a gradient penalty
    /// differentiates D's first layer twice) for every activation, with the critic's 4×4 stride-2 geometry.
    fn conv_act(dev: &crate::Device) {
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let gc = GradCheck::default();
        let p = params((2, 2), (1, 1));
        for (i, act) in ACTS.into_iter().enumerate() {
            let (x, w) = (
                t(&[2, 2, 6, 6], 50 + i as u64),
                t(&[3, 2, 4, 4], 60 + i as u64),
            );
            let worst = gc
                .run(&[x.clone(), w.clone()], |t, v| {
                    conv2d_act(t, v[0], v[1], p, act)
                })
                .unwrap();
            assert!(worst.is_finite(), "{act:?}");
            gc.run_second_order(&[x, w], |t, v| {
                let y = conv2d_act(t, v[0], v[1], p, act)?;
                crate::ops::mul(t, y, y)
            })
            .unwrap();
        }
    }

    test_devices!(conv2d_act_gradients_match_finite_differences => super::conv_act);

    /// A convolution of an activated convolution's output (D's first two layers), where the second takes the
    /// first's activation into its input gradient (the fold), against the same chain with the activation as an
    /// op of its own (no fold): the same gradients bit for bit, with the activated output the second layer's
    /// only consumer (the fold on) and with a second consumer (off). Then, on the CPU, finite differences of
    /// first and second order through the chain for the smooth activations. 6 channels between the layers run the GEMM kernels' epilogue on a CUDA
    /// backend, 3 the narrow kernels and the activation's own backward after them.
    fn folded_activation(dev: &crate::Device) {
        use crate::ops::{activation, add, mul, sum};
        let t = |shape: &[usize], seed| test_tensor(shape, seed).to_device(dev).unwrap();
        let p = params((2, 2), (1, 1));
        for (i, (mid, act)) in [6, 3]
            .into_iter()
            .flat_map(|m| ACTS.map(|a| (m, a)))
            .enumerate()
        {
            let seed = 70 + 10 * i as u64;
            let inputs = [
                t(&[2, 3, 8, 8], seed),
                t(&[mid, 3, 4, 4], seed + 1),
                t(&[5, mid, 4, 4], seed + 2),
            ];
            let (r, r2) = (t(&[2, 5, 2, 2], seed + 3), t(&[2, mid, 4, 4], seed + 4));
            for second_consumer in [false, true] {
                let what = format!("{mid} channels, {act:?}, second consumer {second_consumer}");
                let grads = |fold: bool| {
                    let mut tape = Tape::new();
                    let v: Vec<Var> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
                    let a = if fold {
                        conv2d_act(&mut tape, v[0], v[1], p, act)
                    } else {
                        let z = conv2d(&mut tape, v[0], v[1], p).unwrap();
                        activation(&mut tape, z, act)
                    }
                    .unwrap();
                    let y = conv2d(&mut tape, a, v[2], p).unwrap();
                    let (rv, r2v) = (tape.constant(r.clone()), tape.constant(r2.clone()));
                    let yr = mul(&mut tape, y, rv).unwrap();
                    let mut loss = sum(&mut tape, yr).unwrap();
                    if second_consumer {
                        let ar = mul(&mut tape, a, r2v).unwrap();
                        let s = sum(&mut tape, ar).unwrap();
                        loss = add(&mut tape, loss, s).unwrap();
                    }
                    let g = tape.backward(loss).unwrap();
                    v.iter()
                        .map(|&x| g.get(x).unwrap().to_vec().unwrap())
                        .collect::<Vec<_>>()
                };
                let (folded, apart) = (grads(true), grads(false));
                for (name, (f, a)) in ["x", "w1", "w2"].iter().zip(folded.iter().zip(&apart)) {
                    assert!(
                        f.iter().zip(a).all(|(f, a)| f.to_bits() == a.to_bits()),
                        "{what}: d{name} differs from the chain without the fold"
                    );
                }
            }
            // Finite differences across ReLU's kink are wrong wherever a sum lies within a step of it, and the
            // chain's sums cannot all be kept away; the kinked functions are covered by the bits above. On a
            // device the bits above tie the fold to the unfolded chain, whose ops have checks of their own.
            if !matches!(act, Activation::Tanh | Activation::Sigmoid) || !dev.is_cpu() {
                continue;
            }
            let chain = |t: &mut Tape, v: &[Var]| {
                let a = conv2d_act(t, v[0], v[1], p, act)?;
                conv2d(t, a, v[2], p)
            };
            let gc = GradCheck::default();
            let worst = gc.run(&inputs, chain).unwrap();
            assert!(worst.is_finite(), "{act:?}");
            gc.run_second_order(&inputs, chain)
                .unwrap_or_else(|e| panic!("{mid} channels, {act:?}: {e}"));
        }
    }

    test_devices!(a_folded_activation_gives_the_gradients_of_the_chain => super::folded_activation);

    #[test]
    fn conv2d_gradients_match_finite_differences() {
        let cases = [
            ([2, 3, 5, 6], [4, 3, 3, 2], params((2, 1), (1, 0))),
            ([2, 3, 5, 6], [2, 3, 1, 4], params((1, 2), (0, 2))),
            ([2, 3, 4, 3], [2, 3, 1, 1], params((1, 1), (0, 0))),
            ([3, 2, 4, 4], [3, 2, 4, 4], params((1, 1), (0, 0))),
        ];
        for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
            let inputs = [
                test_tensor(&xs, 10 + i as u64),
                test_tensor(&ws, 20 + i as u64),
            ];
            check_grads(&inputs, |t, v| conv2d(t, v[0], v[1], p));
        }
    }

    #[test]
    fn conv_transpose2d_gradients_match_finite_differences() {
        let cases = [
            ([2, 3, 3, 4], [3, 2, 4, 4], params((2, 2), (1, 1)), None),
            (
                [2, 3, 3, 4],
                [3, 2, 4, 4],
                params((2, 2), (1, 1)),
                Some((7, 8)),
            ),
            (
                [2, 3, 3, 2],
                [3, 4, 1, 3],
                params((1, 2), (0, 1)),
                Some((3, 4)),
            ),
            ([3, 4, 1, 1], [4, 2, 4, 4], params((1, 1), (0, 0)), None),
        ];
        for (i, (xs, ws, p, out)) in cases.into_iter().enumerate() {
            let inputs = [
                test_tensor(&xs, 30 + i as u64),
                test_tensor(&ws, 40 + i as u64),
            ];
            check_grads(&inputs, |t, v| conv_transpose2d(t, v[0], v[1], p, out));
        }
    }

    /// ConvTranspose2d from its own definition: every input pixel scatters its kernel-weighted copy onto the
    /// output at (ih·s − p + i, iw·s − p + j); contributions outside the output are dropped. f64 sums.
    fn ref_conv_transpose(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        p: Conv2dParams,
        (ho, wo): (usize, usize),
    ) -> Vec<f64> {
        let [n, cin, h, wd] = xs;
        let [_, cout, kh, kw] = ws;
        let mut y = vec![0.0f64; n * cout * ho * wo];
        for ni in 0..n {
            for ci in 0..cin {
                for ih in 0..h {
                    for iw in 0..wd {
                        let xv = x[((ni * cin + ci) * h + ih) * wd + iw] as f64;
                        for co in 0..cout {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let oh = (ih * p.stride.0 + i) as isize - p.padding.0 as isize;
                                    let ow = (iw * p.stride.1 + j) as isize - p.padding.1 as isize;
                                    if oh < 0 || ow < 0 || oh >= ho as isize || ow >= wo as isize {
                                        continue;
                                    }
                                    let wv = w[((ci * cout + co) * kh + i) * kw + j] as f64;
                                    y[((ni * cout + co) * ho + oh as usize) * wo + ow as usize] +=
                                        xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn conv_transpose2d_matches_scatter_reference() {
        let cases = [
            // DCGAN's generator layer, shrunk.
            (
                [2, 5, 4, 4],
                [5, 3, 4, 4],
                params((2, 2), (1, 1)),
                None,
                (8, 8),
            ),
            // DCGAN's first layer: 1×1 noise to 4×4.
            (
                [3, 7, 1, 1],
                [7, 5, 4, 4],
                params((1, 1), (0, 0)),
                None,
                (4, 4),
            ),
            (
                [2, 3, 5, 3],
                [3, 4, 3, 3],
                params((2, 3), (1, 0)),
                Some((10, 9)),
                (10, 9),
            ),
            (
                [2, 3, 5, 3],
                [3, 4, 3, 3],
                params((2, 3), (1, 0)),
                Some((9, 11)),
                (9, 11),
            ),
            (
                [1, 2, 6, 5],
                [2, 3, 1, 7],
                params((1, 1), (0, 3)),
                None,
                (6, 5),
            ),
            (
                [1, 2, 6, 5],
                [2, 3, 7, 1],
                params((1, 1), (3, 0)),
                None,
                (6, 5),
            ),
            (
                [2, 4, 3, 3],
                [4, 3, 1, 1],
                params((1, 1), (0, 0)),
                None,
                (3, 3),
            ),
        ];
        for (ci, (xs, ws, p, out, expect)) in cases.into_iter().enumerate() {
            let x = test_tensor(&xs, 50 + ci as u64);
            let w = test_tensor(&ws, 60 + ci as u64);
            let mut tape = Tape::no_grad();
            let (xv, wv) = (tape.constant(x.clone()), tape.constant(w.clone()));
            let y = conv_transpose2d(&mut tape, xv, wv, p, out).unwrap();
            let y = tape.value(y);
            assert_eq!(y.shape(), &[xs[0], ws[1], expect.0, expect.1], "case {ci}");
            let want = ref_conv_transpose(
                &x.to_vec().unwrap(),
                xs,
                &w.to_vec().unwrap(),
                ws,
                p,
                expect,
            );
            for (i, (&g, &r)) in y.to_vec().unwrap().iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - r).abs() <= 1e-5,
                    "case {ci} element {i}: got {g}, expected {r}"
                );
            }
        }
    }

    #[test]
    fn backward_returns_only_the_gradients_asked_for() {
        let p = params((2, 1), (1, 1));
        let x = test_tensor(&[2, 3, 5, 4], 1);
        let w = test_tensor(&[4, 3, 3, 3], 2);
        let wt = test_tensor(&[4, 3, 3, 3], 3);
        for x_is_leaf in [true, false] {
            let mut tape = Tape::new();
            let (xv, wv, wtv) = if x_is_leaf {
                (
                    tape.leaf(x.clone()),
                    tape.constant(w.clone()),
                    tape.constant(wt.clone()),
                )
            } else {
                (
                    tape.constant(x.clone()),
                    tape.leaf(w.clone()),
                    tape.leaf(wt.clone()),
                )
            };
            let y = conv2d(&mut tape, xv, wv, p).unwrap();
            let z = conv_transpose2d(&mut tape, y, wtv, p, None).unwrap();
            let dz = test_tensor(tape.value(z).shape(), 4);
            let grads = tape.backward_from(z, dz).unwrap();
            assert_eq!(grads.get(xv).is_some(), x_is_leaf);
            assert_eq!(grads.get(wv).is_some(), !x_is_leaf);
            assert_eq!(grads.get(wtv).is_some(), !x_is_leaf);
        }
    }

    fn err_text(r: Result<Var>) -> String {
        format!("{:#}", r.expect_err("expected an error"))
    }

    #[test]
    fn bad_arguments_are_errors() {
        let p = params((2, 2), (1, 1));
        let mut tape = Tape::new();
        let x = tape.leaf(test_tensor(&[2, 3, 4, 4], 1));
        let wt = tape.leaf(test_tensor(&[3, 2, 4, 4], 2));
        // Default 8×8; stride 2 also reaches 9, nothing else.
        assert!(conv_transpose2d(&mut tape, x, wt, p, Some((9, 8))).is_ok());
        let e = err_text(conv_transpose2d(&mut tape, x, wt, p, Some((10, 8))));
        assert!(
            e.contains("height output size 10") && e.contains("8..=9"),
            "{e}"
        );
        let e = err_text(conv_transpose2d(&mut tape, x, wt, p, Some((8, 7))));
        assert!(e.contains("width output size 7"), "{e}");

        let w_bad = tape.leaf(test_tensor(&[2, 3, 4, 4], 3));
        let e = err_text(conv_transpose2d(&mut tape, x, w_bad, p, None));
        assert!(e.contains("3 channels") && e.contains("expects 2"), "{e}");
        // As a conv weight, [3, 2, 4, 4] wants 2 input channels.
        let e = err_text(conv2d(&mut tape, x, wt, p));
        assert!(e.contains("3 channels") && e.contains("expects 2"), "{e}");

        // A 1×1 input with a 1×1 kernel and padding 1 would have a negative output size.
        let tiny = tape.leaf(test_tensor(&[1, 3, 1, 1], 4));
        let k1 = tape.leaf(test_tensor(&[3, 2, 1, 1], 5));
        let e = err_text(conv_transpose2d(
            &mut tape,
            tiny,
            k1,
            params((1, 1), (1, 1)),
            None,
        ));
        assert!(e.contains("<= 0"), "{e}");
        let e = err_text(conv_transpose2d(
            &mut tape,
            x,
            wt,
            params((0, 1), (0, 0)),
            None,
        ));
        assert!(e.contains("stride"), "{e}");

        let flat = tape.leaf(test_tensor(&[2, 3], 6));
        let e = err_text(conv2d(&mut tape, flat, wt, p));
        assert!(e.contains("4-D"), "{e}");
        let e = err_text(conv_transpose2d(&mut tape, flat, wt, p, None));
        assert!(e.contains("4-D"), "{e}");
    }
}
