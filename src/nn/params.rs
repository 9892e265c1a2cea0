//! Named parameters and buffers of one model, with their gradients.
//!
//! Names follow PyTorch's `state_dict` keys (e.g. `main.0.weight`) so checkpoints load into PyTorch models.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Result};

use crate::autograd::{Gradients, ParamKey, Tape, Var};
use crate::device::Device;
use crate::tensor::Tensor;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Index of a parameter in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// Index of a buffer (BN running stats) in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(pub usize);

pub struct ParamStore {
    id: u64,
    pub device: Device,
    names: Vec<String>,
    values: Vec<Tensor>,
    grads: Vec<Option<Tensor>>,
    buffer_names: Vec<String>,
    buffers: Vec<Tensor>,
    /// When false (G step through D), parameters enter the tape as constants: no weight gradients computed.
    pub requires_grad: bool,
}

impl ParamStore {
    pub fn new(device: &Device) -> ParamStore {
        ParamStore {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            device: device.clone(),
            names: vec![],
            values: vec![],
            grads: vec![],
            buffer_names: vec![],
            buffers: vec![],
            requires_grad: true,
        }
    }

    /// The key tapes tag this store's parameters with ([`crate::autograd::ParamKey::store`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn add(&mut self, name: &str, value: Tensor) -> ParamId {
        self.names.push(name.to_string());
        self.values.push(value);
        self.grads.push(None);
        ParamId(self.values.len() - 1)
    }

    pub fn add_buffer(&mut self, name: &str, value: Tensor) -> BufferId {
        self.buffer_names.push(name.to_string());
        self.buffers.push(value);
        BufferId(self.buffers.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn num_elements(&self) -> usize {
        self.values.iter().map(|t| t.numel()).sum()
    }

    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.values[id.0]
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id.0]
    }

    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        self.grads[id.0].as_ref()
    }

    pub fn buffer(&self, id: BufferId) -> &Tensor {
        &self.buffers[id.0]
    }

    pub fn buffer_mut(&mut self, id: BufferId) -> &mut Tensor {
        &mut self.buffers[id.0]
    }

    /// Several distinct buffers mutably at once (batch norm's running mean, variance and batch count).
    pub fn buffers_mut<const N: usize>(&mut self, ids: [BufferId; N]) -> [&mut Tensor; N] {
        self.buffers
            .get_disjoint_mut(ids.map(|id| id.0))
            .expect("distinct buffers of this store")
    }

    /// Puts parameter `id` on the tape as a leaf.
    pub fn var(&self, tape: &mut Tape, id: ParamId) -> Var {
        tape.param(
            self.values[id.0].clone(),
            ParamKey {
                store: self.id,
                index: id.0,
            },
            self.requires_grad,
        )
    }

    /// Adds the gradients of this store's parameters found in `grads`.
    ///
    /// A parameter used twice in a step (D on the real and on the fake batch) has two gradients. The first is
    /// still shared with `grads`, so an in-place add would copy it first: a fresh sum costs one pass less. The
    /// sums of all parameters go to the backend together (one launch on CUDA), in rounds when a parameter has
    /// more than two gradients, so that each is added in the order `grads` gives them.
    pub fn accumulate_grads(&mut self, grads: &Gradients) -> Result<()> {
        let mut pending: Vec<(usize, &Tensor)> = Vec::new();
        for (k, g) in grads.params() {
            if k.store != self.id {
                continue;
            }
            match &mut self.grads[k.index] {
                Some(_) => pending.push((k.index, g)),
                slot @ None => *slot = Some(g.clone()),
            }
        }
        while let Some(&(_, first)) = pending.first() {
            // One gradient per parameter in this round; a parameter's next one waits for the next round.
            let mut taken = vec![false; self.grads.len()];
            let (round, later): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|&(i, _)| !std::mem::replace(&mut taken[i], true));
            let sums = {
                let pairs: Vec<(&Tensor, &Tensor)> = round
                    .iter()
                    .map(|&(i, g)| (self.grads[i].as_ref().expect("a gradient to add to"), g))
                    .collect();
                first.backend().add_each(&pairs)?
            };
            for (&(i, _), s) in round.iter().zip(sums) {
                self.grads[i] = Some(s);
            }
            pending = later;
        }
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = None);
    }

    /// (name, value) of every parameter, then every buffer, in registration order.
    pub fn named_tensors(&self) -> Vec<(&str, &Tensor)> {
        let p = self
            .names
            .iter()
            .map(|s| s.as_str())
            .zip(self.values.iter());
        let b = self
            .buffer_names
            .iter()
            .map(|s| s.as_str())
            .zip(self.buffers.iter());
        p.chain(b).collect()
    }

    /// Parameter ids with their values, grads (for the optimizer).
    pub fn params_and_grads_mut(
        &mut self,
    ) -> impl Iterator<Item = (ParamId, &mut Tensor, Option<&Tensor>)> {
        self.values
            .iter_mut()
            .zip(self.grads.iter())
            .enumerate()
            .map(|(i, (v, g))| (ParamId(i), v, g.as_ref()))
    }

    /// The gradients present, in registration order (loss scaling rewrites them in place).
    pub fn grads_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.grads.iter_mut().flatten()
    }

    /// The parameter values (not the buffers), in registration order.
    pub fn values(&self) -> &[Tensor] {
        &self.values
    }

    pub fn values_mut(&mut self) -> &mut [Tensor] {
        &mut self.values
    }

    /// Makes every buffer `other`'s (sharing its storage; copy-on-write keeps them apart afterwards). The two
    /// stores must hold the same buffers, as two instances of one model do.
    pub fn copy_buffers_from(&mut self, other: &ParamStore) -> Result<()> {
        ensure!(
            self.buffer_names == other.buffer_names,
            "internal: copying buffers between stores of different models"
        );
        for (dst, src) in self.buffers.iter_mut().zip(&other.buffers) {
            ensure!(dst.shape() == src.shape(), "internal: buffer shapes differ");
            *dst = src.clone();
        }
        Ok(())
    }

    /// Replaces a parameter's or buffer's value by name, checking the shape.
    pub fn set_by_name(&mut self, name: &str, value: Tensor) -> Result<()> {
        let slot = if let Some(i) = self.names.iter().position(|n| n == name) {
            &mut self.values[i]
        } else if let Some(i) = self.buffer_names.iter().position(|n| n == name) {
            &mut self.buffers[i]
        } else {
            bail!("no parameter or buffer named '{name}'")
        };
        if slot.shape() != value.shape() {
            bail!(
                "'{name}': expected shape {:?}, got {:?}",
                slot.shape(),
                value.shape()
            );
        }
        *slot = value.to_device(&self.device)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Tape;
    use crate::device::Device;
    use crate::ops;

    /// A parameter used three times in a step and one used once: the first gets its three gradients summed in
    /// the tape's order (two rounds of sums), the second its one gradient as it is.
    fn three_uses(dev: &Device) {
        let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), &[v.len()], dev).unwrap();
        let mut store = ParamStore::new(dev);
        let w = store.add("w", t(&[1.0, 2.0, 3.0]));
        let u = store.add("u", t(&[0.5, 0.5, 0.5]));
        let mut tape = Tape::new();
        let mut loss = None;
        for k in [1.0f32, 10.0, 100.0] {
            let wv = store.var(&mut tape, w);
            let c = tape.constant(t(&[k, 2.0 * k, 3.0 * k]));
            let prod = ops::mul(&mut tape, wv, c).unwrap();
            let term = ops::sum(&mut tape, prod).unwrap();
            loss = Some(match loss {
                None => term,
                Some(l) => ops::add(&mut tape, l, term).unwrap(),
            });
        }
        let uv = store.var(&mut tape, u);
        let su = ops::sum(&mut tape, uv).unwrap();
        let loss = ops::add(&mut tape, loss.unwrap(), su).unwrap();
        let grads = tape.backward(loss).unwrap();
        store.accumulate_grads(&grads).unwrap();
        let g = |id: ParamId| store.grads[id.0].as_ref().unwrap().to_vec().unwrap();
        assert_eq!(g(w), [111.0, 222.0, 333.0]);
        assert_eq!(g(u), [1.0, 1.0, 1.0]);
    }

    test_devices!(a_parameter_used_three_times_gets_the_sum_of_its_gradients => super::three_uses);
}
