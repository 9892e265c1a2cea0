//! A minimal, explicit autograd tape.
//!
//! Forward ops append nodes (value, inputs, a backward closure) to the [`Tape`]. `backward(loss)` walks the
//! nodes in reverse, hands each closure its output gradient, and accumulates input gradients. Parameters enter
//! the tape as leaves tagged with their [`ParamKey`]; [`crate::nn::ParamStore::accumulate_grads`] then adds the
//! leaves' gradients into the store. Nodes whose inputs need no gradient (constants, detached values, frozen
//! parameters, no-grad mode) keep no closure, so their backward work is skipped entirely.
//!
//! Double backward (PyTorch's `create_graph=True`): an op may also give a [`GradRule`], which records its input
//! gradients as ops on the tape instead of computing tensors. [`Tape::grad_graph`] walks the nodes with these
//! rules, so the gradient it returns is itself a tape value, and a loss built from it (a gradient penalty)
//! back-propagates through the gradient computation into the parameters. An op without a rule (batch norm,
//! pooling, resizing) is refused there by name. The first-order closures stay untouched by that walk, so one
//! `backward` afterwards covers both the forward ops and the recorded gradient ops.
//!
//! Folds: an op whose output is an activation's may offer that activation's backward to the op that consumes the
//! output ([`Tape::offer_fold`]), and a consumer able to take its input gradient on through it claims the offer
//! ([`Tape::fold_offer`], [`Tape::claim_fold`]); a convolution's input gradient then stores act'(y)·dx as it is
//! written. The fold is only right when that consumer is the only op that sends the output a gradient, which is
//! known once the graph is complete: each backward pass turns a claimed fold on where it is, off elsewhere, before
//! the first closure runs, and both closures read the same [`FoldSwitch`].

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, ensure, Result};

use crate::backend::Activation;
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

/// What a [`GradRule`] is given: the op's inputs and output on the tape, the output's gradient `dy` (a tape
/// value), and which inputs need a gradient.
pub struct RuleArgs<'a> {
    pub inputs: &'a [Var],
    pub out: Var,
    pub dy: Var,
    pub need: &'a [bool],
}

/// Double-backward rule: records the gradients of an op's inputs as ops on the tape (one optional var per
/// input, in input order), so that they can be differentiated again.
pub type GradRule = Rc<dyn Fn(&mut Tape, &RuleArgs) -> Result<Vec<Option<Var>>>>;

/// A [`GradRule`] from a closure (fixes the closure's argument types).
pub fn rule(f: impl Fn(&mut Tape, &RuleArgs) -> Result<Vec<Option<Var>>> + 'static) -> GradRule {
    Rc::new(f)
}

impl RuleArgs<'_> {
    /// The gradient of input `i`, recorded by `f` only if that input needs one.
    pub fn grad(&self, i: usize, f: impl FnOnce() -> Result<Var>) -> Result<Option<Var>> {
        self.need[i].then(f).transpose()
    }
}

/// Whether a fold is on in this backward pass: shared by the closures of the activation's op (which then takes
/// its output's gradient to be the gradient of its pre-activation already) and of the consumer (which then
/// applies the activation's backward). Off until a backward pass turns it on.
#[derive(Clone, Default)]
pub struct FoldSwitch(Rc<Cell<bool>>);

impl FoldSwitch {
    pub fn new() -> FoldSwitch {
        FoldSwitch::default()
    }

    pub fn on(&self) -> bool {
        self.0.get()
    }
}

/// An offered fold as the consumer sees it: the activation, its output y (the consumer's input) and the switch.
#[derive(Clone)]
pub struct Fold {
    pub act: Activation,
    pub y: Tensor,
    pub switch: FoldSwitch,
}

struct Node {
    /// None once released (see [`Tape::release_params`]).
    value: Option<Tensor>,
    requires_grad: bool,
    param: Option<ParamKey>,
    inputs: Vec<Var>,
    backward: Option<BackwardFn>,
    /// The op's name, for the message when [`Tape::grad_graph`] meets an op without a rule.
    name: &'static str,
    rule: Option<GradRule>,
    /// The activation whose backward this op's closure can leave to the consumer of its output.
    fold_offer: Option<(Activation, FoldSwitch)>,
    /// The input (by position) whose producer's fold this op's closure can take over.
    fold_claim: Option<usize>,
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
            name: "leaf",
            rule: None,
            fold_offer: None,
            fold_claim: None,
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
            name: "leaf",
            rule: None,
            fold_offer: None,
            fold_claim: None,
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
            name: "leaf",
            rule: None,
            fold_offer: None,
            fold_claim: None,
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

    /// Records the output of the op `name`, which has no double backward ([`Tape::grad_graph`] refuses it).
    /// `backward` is kept only if some input requires a gradient.
    pub fn push_op(
        &mut self,
        name: &'static str,
        value: Tensor,
        inputs: &[Var],
        backward: BackwardFn,
    ) -> Var {
        self.push_node(name, value, inputs, backward, None)
    }

    /// Records an op with both a first-order closure (the fast path of `backward`) and a rule that records the
    /// same gradients as tape ops (for [`Tape::grad_graph`]).
    pub fn push_op_with_rule(
        &mut self,
        name: &'static str,
        value: Tensor,
        inputs: &[Var],
        backward: BackwardFn,
        rule: GradRule,
    ) -> Var {
        self.push_node(name, value, inputs, backward, Some(rule))
    }

    /// Records an op whose only backward is its rule: the first-order closure runs the rule on a scratch
    /// no-grad tape over the saved values (the ops that exist only as gradients of other ops).
    pub fn push_rule_op(
        &mut self,
        name: &'static str,
        value: Tensor,
        inputs: &[Var],
        rule: GradRule,
    ) -> Var {
        let saved: Vec<Tensor> = inputs.iter().map(|&v| self.value(v).clone()).collect();
        let (out, first) = (value.clone(), rule.clone());
        let backward: BackwardFn = Box::new(move |dy, need| {
            let mut t = Tape::no_grad();
            let inputs: Vec<Var> = saved.into_iter().map(|v| t.constant(v)).collect();
            let out = t.constant(out);
            let dy = t.constant(dy.clone());
            let g = first(
                &mut t,
                &RuleArgs {
                    inputs: &inputs,
                    out,
                    dy,
                    need,
                },
            )?;
            Ok(g.into_iter()
                .map(|g| g.map(|v| t.value(v).clone()))
                .collect())
        });
        self.push_node(name, value, inputs, backward, Some(rule))
    }

    fn push_node(
        &mut self,
        name: &'static str,
        value: Tensor,
        inputs: &[Var],
        backward: BackwardFn,
        rule: Option<GradRule>,
    ) -> Var {
        let requires_grad =
            self.grad_enabled && inputs.iter().any(|&i| self.nodes[i.0].requires_grad);
        let (backward, rule) = if requires_grad {
            (Some(backward), rule)
        } else {
            (None, None)
        };
        self.push(Node {
            value: Some(value),
            requires_grad,
            param: None,
            inputs: inputs.to_vec(),
            backward,
            name,
            rule,
            fold_offer: None,
            fold_claim: None,
        })
    }

    /// Offers the backward of `act` to the consumer of `out`, the output of an op that applied `act` last and
    /// whose closure skips it while `switch` is on. Nothing when the op keeps no closure.
    pub fn offer_fold(&mut self, out: Var, act: Activation, switch: FoldSwitch) {
        let node = &mut self.nodes[out.0];
        if node.backward.is_some() {
            node.fold_offer = Some((act, switch));
        }
    }

    /// The fold that the producer of `x` offers, for an op about to consume `x` that can take its gradient on
    /// through the activation; it must then [`claim_fold`](Tape::claim_fold) once recorded.
    pub fn fold_offer(&self, x: Var) -> Option<Fold> {
        let node = &self.nodes[x.0];
        let (act, switch) = node.fold_offer.clone()?;
        Some(Fold {
            act,
            y: node.value.clone()?,
            switch,
        })
    }

    /// Records that the op `op` takes over the fold offered by the producer of its input `input`.
    pub fn claim_fold(&mut self, op: Var, input: usize) {
        let node = &mut self.nodes[op.0];
        if node.backward.is_some() && input < node.inputs.len() {
            node.fold_claim = Some(input);
        }
    }

    /// Before a backward pass over nodes 0..=end: turns on the fold of each claim whose consumer is the only op
    /// of the pass with a closure that takes the activation's output, and off every other claimed fold (a
    /// second consumer's gradient must go through the activation's own backward, summed with the first's).
    fn arm_folds(&self, end: usize) {
        let nodes = &self.nodes[..=end];
        let mut uses = vec![0u32; nodes.len()];
        for n in nodes.iter().filter(|n| n.backward.is_some()) {
            for v in &n.inputs {
                uses[v.0] += 1;
            }
        }
        for n in nodes.iter().filter(|n| n.backward.is_some()) {
            let Some(v) = n.fold_claim.map(|i| n.inputs[i]) else {
                continue;
            };
            let producer = &self.nodes[v.0];
            if let Some((_, switch)) = &producer.fold_offer {
                switch.0.set(uses[v.0] == 1 && producer.backward.is_some());
            }
        }
    }

    /// The gradients of `out` (seeded with `grad_out`, a tape value of `out`'s shape) with respect to each of
    /// `wrt`, recorded as tape ops so that they can be differentiated again (PyTorch's
    /// `torch.autograd.grad(out, wrt, grad_out, create_graph=True)`). None for a var `out` does not depend on.
    /// Only the ops between `out` and `wrt` are visited; each must have a [`GradRule`].
    pub fn grad_graph(&mut self, out: Var, grad_out: Var, wrt: &[Var]) -> Result<Vec<Option<Var>>> {
        ensure!(
            self.grad_enabled,
            "grad_graph: the tape records no gradients (no-grad mode)"
        );
        ensure!(
            self.value(grad_out).shape() == self.value(out).shape(),
            "grad_graph: grad_out shape {:?} does not match output shape {:?}",
            self.value(grad_out).shape(),
            self.value(out).shape()
        );
        let end = out.0;
        // leads[i]: node i is one of `wrt` or an op with an input that leads to one.
        let mut leads = vec![false; end + 1];
        for w in wrt.iter().filter(|w| w.0 <= end) {
            leads[w.0] = self.nodes[w.0].requires_grad;
        }
        for i in 0..=end {
            let n = &self.nodes[i];
            leads[i] |= n.requires_grad && n.inputs.iter().any(|v| leads[v.0]);
        }
        let mut grads: Vec<Option<Var>> = vec![None; end + 1];
        grads[end] = Some(grad_out);
        for i in (0..=end).rev() {
            if !leads[i] || self.nodes[i].inputs.is_empty() {
                continue;
            }
            let Some(dy) = grads[i] else { continue };
            let inputs = self.nodes[i].inputs.clone();
            let need: Vec<bool> = inputs.iter().map(|v| leads[v.0]).collect();
            let name = self.nodes[i].name;
            let rule = self.nodes[i].rule.clone().ok_or_else(|| {
                anyhow!(
                    "{name} has no double backward: a gradient penalty cannot be taken through it (use a \
                     network without it)"
                )
            })?;
            let args = RuleArgs {
                inputs: &inputs,
                out: Var(i),
                dy,
                need: &need,
            };
            let gin = rule(self, &args)?;
            check_grad_count(&format!("the rule of {name}"), gin.len(), inputs.len())?;
            for ((v, gi), needed) in inputs.iter().zip(gin).zip(need) {
                let (Some(gi), true) = (gi, needed) else {
                    continue;
                };
                if self.value(gi).shape() != self.value(*v).shape() {
                    bail!(
                        "internal: the rule of {name} gave a gradient of shape {:?} for an input of shape {:?}",
                        self.value(gi).shape(),
                        self.value(*v).shape()
                    );
                }
                grads[v.0] = Some(match grads[v.0] {
                    Some(acc) => crate::ops::add(self, acc, gi)?,
                    None => gi,
                });
            }
        }
        Ok(wrt
            .iter()
            .map(|w| grads.get(w.0).copied().flatten())
            .collect())
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
        self.arm_folds(loss.0);
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
            check_grad_count("backward", gin.len(), inputs.len())?;
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

/// An op's backward gives one (optional) gradient per input; anything else is a bug in the op.
fn check_grad_count(what: &str, got: usize, inputs: usize) -> Result<()> {
    ensure!(
        got == inputs,
        "internal: {what} returned {got} grads for {inputs} inputs"
    );
    Ok(())
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
    fn grad_graph_differentiates_twice_and_leaves_backward_intact() {
        let xs = [0.5f32, -2.0, 3.0];
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(xs.to_vec(), &[3], &Device::Cpu).unwrap());
        let other = tape.leaf(t(1.0));
        let x2 = crate::ops::mul(&mut tape, x, x).unwrap();
        let x3 = crate::ops::mul(&mut tape, x2, x).unwrap();
        let s = crate::ops::sum(&mut tape, x3).unwrap();
        let one = tape.constant(t(1.0));
        let g = tape.grad_graph(s, one, &[x, other]).unwrap();
        assert!(g[1].is_none(), "s does not depend on `other`");
        let g = g[0].unwrap();
        let gv = tape.value(g).to_vec().unwrap();
        for (gi, xi) in gv.iter().zip(xs) {
            assert_eq!(*gi, 3.0 * xi * xi, "d(x³)/dx");
        }
        // loss = Σ 3x² + Σ x³: one backward pass through the recorded gradient and the forward ops.
        let gs = crate::ops::sum(&mut tape, g).unwrap();
        let loss = crate::ops::add(&mut tape, gs, s).unwrap();
        let d = tape
            .backward(loss)
            .unwrap()
            .get(x)
            .unwrap()
            .to_vec()
            .unwrap();
        for (di, xi) in d.iter().zip(xs) {
            assert_eq!(*di, 6.0 * xi + 3.0 * xi * xi);
        }
    }

    #[test]
    fn grad_graph_refuses_an_op_without_a_rule_by_name() {
        let mut tape = Tape::new();
        let x = tape.leaf(
            Tensor::from_vec(
                crate::ops::gradcheck::test_values(32, 1),
                &[2, 1, 4, 4],
                &Device::Cpu,
            )
            .unwrap(),
        );
        let p = crate::ops::max_pool2d(&mut tape, x, crate::backend::Pool2d::new(2, 2, 0)).unwrap();
        let s = crate::ops::sum(&mut tape, p).unwrap();
        let one = tape.constant(t(1.0));
        let e = tape.grad_graph(s, one, &[x]).unwrap_err().to_string();
        assert!(e.contains("max pooling has no double backward"), "{e}");
        // A gradient that does not pass through it is fine.
        let y = tape.leaf(t(2.0));
        let y2 = crate::ops::mul(&mut tape, y, y).unwrap();
        let s2 = crate::ops::add(&mut tape, s, y2).unwrap();
        let g = tape.grad_graph(s2, one, &[y]).unwrap()[0].unwrap();
        assert_eq!(tape.value(g).scalar().unwrap(), 4.0);
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
