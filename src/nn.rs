//! Layers with named parameters: the `Module` visitor, the forward context, and the building
//! blocks (Conv2d, BatchNorm2d, Linear, ReLU, pools, Sequential) the NAS networks are made of.
//!
//! Names follow PyTorch's `state_dict` (`cells.3.ops.7.conv.weight`, `bn.running_mean`), so a
//! checkpoint or an optimiser state keyed by name survives rebuilding the model, and weights can
//! be compared one to one with a PyTorch run. Initialisation is PyTorch's default, drawn from a
//! caller-supplied RNG so that a seed fixes every value.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// Whether a named tensor is trained (a weight, it gets a gradient) or only carried along (a
/// buffer such as batch-norm running statistics, saved in checkpoints but never optimised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Buffer,
}

/// Anything that owns named tensors. `visit` walks them in a fixed order, calling `f` with the
/// full dotted name (`prefix` joined with the local name, see [`join`]).
pub trait Module {
    /// Calls `f` on every tensor this module owns, children included.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind));
    /// Like [`Module::visit`], with mutable access (optimiser updates, checkpoint loading).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind));
}

/// `prefix.name`, or just `name` at the root (empty prefix), as in PyTorch's `state_dict` keys.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The trained tensors (weights only) with their names, in visit order.
pub fn named_parameters<M: Module + ?Sized>(m: &M) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, kind| {
        if kind == ParamKind::Weight {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// Every named tensor, weights and buffers, in visit order: what a checkpoint stores.
pub fn state<M: Module + ?Sized>(m: &M) -> Vec<(String, Tensor, ParamKind)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, kind| out.push((name.to_string(), t.clone(), kind)));
    out
}

/// Number of trained scalars (buffers excluded), as papers report model size.
pub fn param_count<M: Module + ?Sized>(m: &M) -> usize {
    let mut n = 0;
    m.visit("", &mut |_, t, kind| {
        if kind == ParamKind::Weight {
            n += t.numel();
        }
    });
    n
}

/// What a forward pass needs besides its input: train or eval mode (batch norm, dropout) and
/// the randomness for dropout and drop-path, seeded so that runs repeat exactly.
pub struct Ctx {
    pub training: bool,
    pub rng: StdRng,
}

impl Ctx {
    /// A context in the given mode whose randomness is fixed by `seed`.
    pub fn new(training: bool, seed: u64) -> Self {
        Ctx {
            training,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

/// A module with a forward pass. `&mut self` because batch norm updates its running statistics.
pub trait Layer: Module {
    /// Applies the layer to `x`.
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
}

/// Layers applied in order; children are named `0`, `1`, ... like `torch.nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl Layer + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&join(prefix, &i.to_string()), f);
        }
    }
}

impl Layer for Sequential {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &mut self.layers {
            h = l.forward(&h, ctx)?;
        }
        Ok(h)
    }
}

/// Implements [`Module`] for a layer without tensors.
macro_rules! stateless {
    ($t:ty) => {
        impl Module for $t {
            fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, ParamKind)) {}
            fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {}
        }
    };
}

/// `max(x, 0)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReLU;
stateless!(ReLU);

impl Layer for ReLU {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        ops::relu(x)
    }
}

/// Visits an optional tensor under `name`.
fn visit_opt(
    prefix: &str,
    name: &str,
    t: &Option<Tensor>,
    kind: ParamKind,
    f: &mut dyn FnMut(&str, &Tensor, ParamKind),
) {
    if let Some(t) = t {
        f(&join(prefix, name), t, kind);
    }
}

/// Mutable twin of [`visit_opt`].
fn visit_opt_mut(
    prefix: &str,
    name: &str,
    t: &mut Option<Tensor>,
    kind: ParamKind,
    f: &mut dyn FnMut(&str, &mut Tensor, ParamKind),
) {
    if let Some(t) = t {
        f(&join(prefix, name), t, kind);
    }
}

/// PyTorch's default for conv and linear layers: `kaiming_uniform_(a=√5)` on the weight, which
/// works out to U(-1/√fan_in, 1/√fan_in), and the same bound for the bias.
fn pytorch_default_init(
    shape: &[usize],
    fan_in: usize,
    bias: Option<usize>,
    rng: &mut impl Rng,
) -> (Tensor, Option<Tensor>) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = Tensor::uniform(shape, -bound, bound, rng).requires_grad();
    let b = bias.map(|n| Tensor::uniform(&[n], -bound, bound, rng).requires_grad());
    (w, b)
}

fn positive(what: &str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Error::InvalidArgument(format!("{what}: {name} must be positive"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_has_no_leading_dot() {
        assert_eq!(join("", "weight"), "weight");
        assert_eq!(join("cells.3", "weight"), "cells.3.weight");
    }
}
