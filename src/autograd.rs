//! A minimal, explicit autograd tape.
//!
//! Forward ops append nodes (value, inputs, a backward closure) to the [`Tape`]. `backward(loss)` walks the
//! nodes in reverse, hands each closure its output gradient, and accumulates input gradients. Parameters enter
//! the tape as leaves tagged with their [`ParamKey`]; [`crate::nn::ParamStore::accumulate_grads`] then adds the
//! leaves' gradients into the store. Nodes whose inputs need no gradient (constants, detached values, frozen
//! parameters, no-grad mode) keep no closure, so their backward work is skipped entirely.

use std::collections::HashMap;

use anyhow::{ensure, Result};

use crate::tensor::Tensor;

/// A handle to a value on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

/// Identifies a parameter: which store (unique per [`crate::nn::ParamStore`]) and which slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamKey {
    pub store: u64,
    pub index: usize,
}

/// Backward closure: gets the output gradient and which inputs need a gradient, returns one optional gradient
/// per input (in input order).
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>>>;

struct Node {
    /// None once released (see [`Tape::release_params`]).
    value: Option<Tensor>,
    requires_grad: bool,
    param: Option<ParamKey>,
    inputs: Vec<Var>,
    backward: Option<BackwardFn>,
}

pub struct Tape {
    nodes: Vec<Node>,
    grad_enabled: bool,
}

/// Gradients of the leaves after a backward pass.
pub struct Gradients {
    by_var: HashMap<Var, Tensor>,
    params: Vec<(ParamKey, Var)>,
}

impl Gradients {
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.by_var.get(&v)
    }

    /// Parameter gradients, in the order the parameters entered the tape.
    pub fn params(&self) -> impl Iterator<Item = (ParamKey, &Tensor)> {
        self.params
            .iter()
            .filter_map(|(k, v)| self.by_var.get(v).map(|g| (*k, g)))
    }
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    pub fn new() -> Tape {
        Tape {
            nodes: Vec::new(),
            grad_enabled: true,
        }
    }

    /// A tape that records nothing for backward (sampling, evaluation).
    pub fn no_grad() -> Tape {
        Tape {
            nodes: Vec::new(),
            grad_enabled: false,
        }
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Drops every node (and the activations they hold). Call between training steps.
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn push(&mut self, node: Node) -> Var {
        self.nodes.push(node);
        Var(self.nodes.len() - 1)
    }

    /// A value that never receives a gradient (data, labels, noise).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.push(Node {
            value: Some(value),
            requires_grad: false,
            param: None,
            inputs: vec![],
            backward: None,
        })
    }

    /// A leaf that receives a gradient (unless the tape is in no-grad mode).
    pub fn leaf(&mut self, value: Tensor) -> Var {
        let requires_grad = self.grad_enabled;
        self.push(Node {
            value: Some(value),
            requires_grad,
            param: None,
            inputs: vec![],
            backward: None,
        })
    }

    /// A parameter leaf; `requires_grad = false` (a frozen model) makes it a constant for backward.
    pub fn param(&mut self, value: Tensor, key: ParamKey, requires_grad: bool) -> Var {
        let requires_grad = requires_grad && self.grad_enabled;
        self.push(Node {
            value: Some(value),
            requires_grad,
            param: Some(key),
            inputs: vec![],
            backward: None,
        })
    }

    /// The same value cut from the graph: gradients stop here (D on detached fakes).
    pub fn detach(&mut self, v: Var) -> Var {
        let value = self.value(v).clone();
        self.constant(value)
    }

    /// The value of `v`. Panics if `v` is a parameter leaf released by [`Tape::release_params`]: reading
    /// it would be a bug in the step's code, not a user error.
    pub fn value(&self, v: Var) -> &Tensor {
        self.nodes[v.0]
            .value
            .as_ref()
            .expect("value of a parameter leaf read after Tape::release_params")
    }

    /// Drops the tape's copies of the parameters of store `store` (their leaves' values), once the step no
    /// longer needs them: after the backward pass that produced their gradients. The optimizer then updates
    /// the parameters in place; while the tape still shares them, copy-on-write storage would first copy
    /// every parameter to a fresh buffer, each step: wasted work on both backends, and on CUDA a parameter
    /// address that moves every step, which a captured CUDA graph cannot follow.
    pub fn release_params(&mut self, store: u64) {
        for node in &mut self.nodes {
            if node.param.is_some_and(|k| k.store == store) {
                node.value = None;
            }
        }
    }

    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Records an op's output. `backward` is kept only if some input requires a gradient.
    pub fn push_op(&mut self, value: Tensor, inputs: &[Var], backward: BackwardFn) -> Var {
        let requires_grad =
            self.grad_enabled && inputs.iter().any(|&i| self.nodes[i.0].requires_grad);
        let backward = if requires_grad { Some(backward) } else { None };
        self.push(Node {
            value: Some(value),
            requires_grad,
            param: None,
            inputs: inputs.to_vec(),
            backward,
        })
    }

    /// Back-propagates from a one-element `loss`. Consumes the backward closures of the nodes it visits, so a
    /// tape supports one backward pass; `clear()` it before the next step.
    pub fn backward(&mut self, loss: Var) -> Result<Gradients> {
        let lv = self.value(loss);
        ensure!(
            lv.numel() == 1,
            "backward() needs a scalar loss, got shape {:?}",
            lv.shape()
        );
        // The seed 1.0 is made on the device (0·zeros + 1) rather than uploaded: a training step then copies
        // nothing from the host (see benches/train.rs, which counts copies per step).
        let be = lv.backend();
        let seed = be.affine(&be.zeros(lv.shape())?, 0.0, 1.0)?;
        self.backward_from(loss, seed)
    }

    /// Back-propagates from any `out` with the given output gradient (vector-Jacobian product); gradient
    /// checks use it with a random `grad_out`.
    pub fn backward_from(&mut self, out: Var, grad_out: Tensor) -> Result<Gradients> {
        let loss = out;
        ensure!(
            grad_out.shape() == self.value(out).shape(),
            "backward_from(): grad_out shape {:?} does not match output shape {:?}",
            grad_out.shape(),
            self.value(out).shape()
        );
        ensure!(
            self.nodes[loss.0].requires_grad,
            "backward(): the loss does not depend on anything that requires a gradient"
        );
        let mut grads: Vec<Option<Tensor>> = vec![None; loss.0 + 1];
        grads[loss.0] = Some(grad_out);
        let mut out = Gradients {
            by_var: HashMap::new(),
            params: Vec::new(),
        };
        for i in (0..=loss.0).rev() {
            let Some(g) = grads[i].take() else { continue };
            let node = &mut self.nodes[i];
            if node.inputs.is_empty() {
                if node.requires_grad {
                    if let Some(k) = node.param {
                        out.params.push((k, Var(i)));
                    }
                    out.by_var.insert(Var(i), g);
                }
                continue;
            }
            let Some(f) = node.backward.take() else {
                continue;
            };
            let inputs = node.inputs.clone();
            let need: Vec<bool> = inputs
                .iter()
                .map(|v| self.nodes[v.0].requires_grad)
                .collect();
            let gin = f(&g, &need)?;
            ensure!(
                gin.len() == inputs.len(),
                "internal: backward returned {} grads for {} inputs",
                gin.len(),
                inputs.len()
            );
            for ((v, gi), needed) in inputs.iter().zip(gin).zip(need) {
                let (Some(gi), true) = (gi, needed) else {
                    continue;
                };
                let Some(value) = self.nodes[v.0].value.as_ref() else {
                    anyhow::bail!(
                        "internal: a parameter leaf was released before a backward pass through it"
                    );
                };
                let want = value.shape();
                ensure!(
                    gi.shape() == want,
                    "internal: gradient shape {:?} does not match value shape {want:?}",
                    gi.shape(),
                );
                match &mut grads[v.0] {
                    Some(acc) => {
                        let b = gi.backend();
                        b.add_assign(acc, &gi)?;
                    }
                    slot @ None => *slot = Some(gi),
                }
            }
        }
        out.params.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::tensor::Storage;

    fn t(v: f32) -> Tensor {
        Tensor::from_vec(vec![v], &[1], &Device::Cpu).unwrap()
    }

    fn refs(x: &Tensor) -> usize {
        match x.storage() {
            Storage::Cpu(v) => std::sync::Arc::strong_count(v),
            _ => unreachable!("a CPU tensor"),
        }
    }

    fn key(store: u64) -> ParamKey {
        ParamKey { store, index: 0 }
    }

    #[test]
    fn release_params_drops_the_leaves_of_one_store() {
        let w = t(2.0);
        let mut tape = Tape::new();
        let a = tape.param(w.clone(), key(7), true);
        let b = tape.param(t(3.0), key(8), true);
        let s = crate::ops::add(&mut tape, a, b).unwrap();
        let grads = tape.backward(s).unwrap();
        assert_eq!(grads.params().count(), 2);
        assert_eq!(refs(&w), 2, "the tape shares w's storage");
        tape.release_params(7);
        assert_eq!(
            refs(&w),
            1,
            "an in-place update of w no longer needs a copy"
        );
        assert_eq!(
            tape.value(b).scalar().unwrap(),
            3.0,
            "other stores keep theirs"
        );
    }

    #[test]
    fn a_backward_pass_through_a_released_leaf_is_an_error() {
        let mut tape = Tape::new();
        let a = tape.param(t(2.0), key(7), true);
        let b = tape.param(t(3.0), key(8), true);
        let s = crate::ops::add(&mut tape, a, b).unwrap();
        tape.release_params(7);
        let err = tape.backward(s).err().expect("an error").to_string();
        assert!(err.contains("released"), "{err}");
    }
}
