//! Pointwise nonlinearities. The backward passes read the forward output `y`, which is all each of them needs
//! (see [`Activation`]), so the tape keeps one tensor per activation instead of two.

use anyhow::Result;

use super::elementwise::{par_map, par_zip_map, same_shape};
use super::{data, tensor};
use crate::backend::Activation;
use crate::tensor::Tensor;

// The forward functions, shared with batch norm's fused pass. Branch-free selects (`if` on a comparison, no
// early exit) so the loops compile to SIMD blends.
// ReLU tests `<= 0` so that NaN passes through, as in PyTorch (forward and backward alike).
pub(crate) fn relu(x: f32) -> f32 {
    if x <= 0.0 {
        0.0
    } else {
        x
    }
}

pub(crate) fn leaky_relu(slope: f32) -> impl Fn(f32) -> f32 + Copy + Send + Sync {
    move |x| if x > 0.0 { x } else { slope * x }
}

/// Logistic function without overflow: exp of a large positive argument is never formed.
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn activation(x: &Tensor, a: Activation) -> Result<Tensor> {
    a.check()?;
    let xd = data(x)?;
    let out = match a {
        Activation::Relu => par_map(xd, relu),
        Activation::LeakyRelu(s) => par_map(xd, leaky_relu(s)),
        Activation::Tanh => par_map(xd, f32::tanh),
        Activation::Sigmoid => par_map(xd, sigmoid),
    };
    Ok(tensor(out, x.shape()))
}

pub fn activation_backward(y: &Tensor, dy: &Tensor, a: Activation) -> Result<Tensor> {
    a.check()?;
    same_shape("activation_backward (y vs dy)", y, dy)?;
    let (yd, gd) = (data(y)?, data(dy)?);
    // d/dx expressed through y: tanh' = 1 - y², sigmoid' = y (1 - y).
    let out = match a {
        Activation::Relu => par_zip_map(yd, gd, |y, g| if y <= 0.0 { 0.0 } else { g }),
        Activation::LeakyRelu(s) => {
            par_zip_map(yd, gd, move |y, g| if y > 0.0 { g } else { s * g })
        }
        Activation::Tanh => par_zip_map(yd, gd, |y, g| g * (1.0 - y * y)),
        Activation::Sigmoid => par_zip_map(yd, gd, |y, g| g * y * (1.0 - y)),
    };
    Ok(tensor(out, y.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::test_tensor;

    #[test]
    fn relu_propagates_nan_like_pytorch() {
        let x = tensor(vec![f32::NAN, -1.0, 2.0], &[3]);
        let y = activation(&x, Activation::Relu).unwrap().to_vec().unwrap();
        assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 2.0, "{y:?}");
        let y = tensor(y, &[3]);
        let dy = tensor(vec![0.5, 0.5, 0.5], &[3]);
        let dx = activation_backward(&y, &dy, Activation::Relu)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(dx, [0.5, 0.0, 0.5]);
    }

    #[test]
    fn forward_values() {
        let x = tensor(vec![-2.0, -0.5, 0.0, 0.5, 3.0, -100.0, 100.0], &[7]);
        let get = |a| activation(&x, a).unwrap().to_vec().unwrap();
        assert_eq!(get(Activation::Relu), [0.0, 0.0, 0.0, 0.5, 3.0, 0.0, 100.0]);
        assert_eq!(
            get(Activation::LeakyRelu(0.2)),
            [-0.4, -0.1, 0.0, 0.5, 3.0, -20.0, 100.0]
        );
        let t = get(Activation::Tanh);
        let s = get(Activation::Sigmoid);
        for (i, &xv) in x.to_vec().unwrap().iter().enumerate() {
            assert!((t[i] as f64 - (xv as f64).tanh()).abs() < 1e-6);
            let sig = 1.0 / (1.0 + (-(xv as f64)).exp());
            assert!((s[i] as f64 - sig).abs() < 1e-6, "{} {}", s[i], sig);
            assert!(s[i].is_finite());
        }
    }

    #[test]
    fn backward_matches_derivative() {
        let x = test_tensor(&[3, 5, 7], 5);
        let dy = test_tensor(&[3, 5, 7], 6);
        let (xv, gv) = (x.to_vec().unwrap(), dy.to_vec().unwrap());
        for a in [
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let y = activation(&x, a).unwrap();
            let dx = activation_backward(&y, &dy, a).unwrap().to_vec().unwrap();
            for i in 0..xv.len() {
                let xi = xv[i] as f64;
                let d = match a {
                    Activation::Relu => (xi > 0.0) as i32 as f64,
                    Activation::LeakyRelu(s) => {
                        if xi > 0.0 {
                            1.0
                        } else {
                            s as f64
                        }
                    }
                    Activation::Tanh => 1.0 - xi.tanh().powi(2),
                    Activation::Sigmoid => {
                        let s = 1.0 / (1.0 + (-xi).exp());
                        s * (1.0 - s)
                    }
                };
                assert!(
                    (dx[i] as f64 - d * gv[i] as f64).abs() < 1e-6,
                    "{a:?} at {i}"
                );
            }
        }
    }

    #[test]
    fn errors() {
        let y = test_tensor(&[2, 3], 1);
        let dy = test_tensor(&[3, 2], 1);
        let msg = activation_backward(&y, &dy, Activation::Tanh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
        assert!(activation(&y, Activation::LeakyRelu(-0.1)).is_err());
    }
}
