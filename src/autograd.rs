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
    value: Tensor,
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
            value,
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
            value,
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
            value,
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

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
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
            value,
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
                ensure!(
                    gi.shape() == self.nodes[v.0].value.shape(),
                    "internal: gradient shape {:?} does not match value shape {:?}",
                    gi.shape(),
                    self.nodes[v.0].value.shape()
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
