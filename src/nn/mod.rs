//! Layers with named parameters: the `Module` visitor, the forward context, and the building
//! blocks (Conv2d, BatchNorm2d, Linear, ReLU, pools, Sequential) the NAS networks are made of.
//!
//! Names follow PyTorch's `state_dict` (`cells.3.ops.7.conv.weight`, `bn.running_mean`), so a
//! checkpoint or an optimiser state keyed by name survives rebuilding the model, and weights can
//! be compared one to one with a PyTorch run. Initialisation is PyTorch's default, drawn from a
//! caller-supplied RNG so that a seed fixes every value.
//!
//! ```
//! use darts::nn::{self, BatchNorm2d, Conv2d, Ctx, Layer, ReLU, Sequential};
//! use darts::ops::Conv2dCfg;
//! use darts::Tensor;
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let cfg = Conv2dCfg { padding: 1, ..Conv2dCfg::default() };
//! let mut net = Sequential::new()
//!     .with(Conv2d::new(3, 8, 3, cfg, false, &mut rng).unwrap())
//!     .with(BatchNorm2d::new(8, true).unwrap())
//!     .with(ReLU);
//! let names: Vec<String> = nn::state(&net).into_iter().map(|(n, _, _)| n).collect();
//! assert_eq!(names, ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"]);
//! assert_eq!(nn::param_count(&net), 8 * 3 * 3 * 3 + 8 + 8);
//! // [N, C, H, W] in, [N, 8, H, W] out; training mode updates the running statistics.
//! let y = net.forward(&Tensor::zeros(&[2, 3, 5, 5]), &mut Ctx::new(true, 0)).unwrap();
//! assert_eq!(y.shape(), &[2, 8, 5, 5]);
//! ```

mod layers;
mod macs;
pub mod walk;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

pub use layers::{BatchNorm2d, Conv2d, Linear};
pub use macs::{count_macs, macs_by_layer};

/// Whether a named tensor is trained (a weight, it gets a gradient) or only carried along (a
/// buffer such as batch-norm running statistics, saved in checkpoints but never optimised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Buffer,
}

/// Anything that owns named tensors. `visit` walks them in a fixed order, calling `f` with the
/// full dotted name (`prefix` joined with the local name, see [`join`]). Implement both methods
/// with one body through [`visitors!`](crate::visitors) (see [`walk`]).
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
    m.visit("", &mut |name, t, kind| {
        out.push((name.to_string(), t.clone(), kind))
    });
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

/// Turns gradient tracking of every weight of `m` on or off: DARTS alternates between steps that
/// differentiate only the network weights and steps that differentiate only the architecture
/// parameters, and an untracked weight costs no graph. A weight switched back on is a fresh leaf
/// (new tape id, same name, value and optimiser state); buffers are never tracked.
pub fn set_trainable<M: Module + ?Sized>(m: &mut M, trainable: bool) {
    m.visit_mut("", &mut |_, t, kind| {
        if kind == ParamKind::Weight && t.tracks_grad() != trainable {
            let value = t.detach();
            *t = if trainable {
                value.requires_grad()
            } else {
                value
            };
        }
    });
}

/// Moves every parameter and buffer of `m` to `device`, keeping identities (and so optimiser
/// state keyed by name).
pub fn to_device<M: Module + ?Sized>(m: &mut M, device: crate::Device) -> crate::Result<()> {
    let mut result = Ok(());
    m.visit_mut("", &mut |_, t, _| {
        if result.is_ok() {
            result = t.move_to(device);
        }
    });
    result
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
    crate::visitors!(|m, prefix, f| {
        m.layers.walk(prefix, f);
    });
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
            crate::visitors!(|_m, _prefix, _f| {});
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

/// Pooling window settings, checked as PyTorch does (padding at most half the kernel).
fn pool_window(what: &str, kernel: usize, stride: usize, padding: usize) -> Result<()> {
    positive(what, &[("kernel", kernel), ("stride", stride)])?;
    if 2 * padding > kernel {
        return Err(Error::InvalidArgument(format!(
            "{what}: padding {padding} must be at most half the kernel ({kernel})"
        )));
    }
    Ok(())
}

/// Max pooling over `kernel`×`kernel` windows (padding counts as −∞).
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}
stateless!(MaxPool2d);

impl MaxPool2d {
    /// Checked window settings.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        pool_window("MaxPool2d", kernel, stride, padding)?;
        Ok(MaxPool2d {
            kernel,
            stride,
            padding,
        })
    }
}

impl Layer for MaxPool2d {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        ops::max_pool2d(x, self.kernel, self.stride, self.padding)
    }
}

/// Average pooling over `kernel`×`kernel` windows, padding excluded from the count
/// (`count_include_pad=False`, as DARTS uses it).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}
stateless!(AvgPool2d);

impl AvgPool2d {
    /// Checked window settings.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        pool_window("AvgPool2d", kernel, stride, padding)?;
        Ok(AvgPool2d {
            kernel,
            stride,
            padding,
        })
    }
}

impl Layer for AvgPool2d {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        ops::avg_pool2d(x, self.kernel, self.stride, self.padding)
    }
}

/// Mean over H and W: `[N, C, H, W]` → `[N, C]`, ready for a [`Linear`] classifier.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAvgPool;
stateless!(GlobalAvgPool);

impl Layer for GlobalAvgPool {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        ops::global_avg_pool(x)
    }
}

/// `InvalidArgument` naming the first size that is zero.
fn positive(what: &str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Error::InvalidArgument(format!(
            "{what}: {name} must be positive"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;

    use super::*;
    use crate::ops::Conv2dCfg;

    /// A nested module, to check that names compose like PyTorch's `state_dict` keys.
    struct Cell {
        ops: Sequential,
    }

    impl Module for Cell {
        crate::visitors!(|m, prefix, f| {
            m.ops.walk(&join(prefix, "ops"), f);
        });
    }

    fn cell(rng: &mut StdRng) -> Cell {
        let cfg = Conv2dCfg {
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
        };
        Cell {
            ops: Sequential::new()
                .with(ReLU)
                .with(Conv2d::new(3, 4, 3, cfg, false, rng).unwrap())
                .with(BatchNorm2d::new(4, true).unwrap()),
        }
    }

    #[test]
    fn join_has_no_leading_dot() {
        assert_eq!(join("", "weight"), "weight");
        assert_eq!(join("cells.3", "weight"), "cells.3.weight");
    }

    #[test]
    fn names_follow_state_dict() {
        let c = cell(&mut StdRng::seed_from_u64(0));
        let names: Vec<String> = state(&c).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            [
                "ops.1.weight",
                "ops.2.weight",
                "ops.2.bias",
                "ops.2.running_mean",
                "ops.2.running_var"
            ]
        );
        let weights: Vec<String> = named_parameters(&c).into_iter().map(|(n, _)| n).collect();
        assert_eq!(weights, ["ops.1.weight", "ops.2.weight", "ops.2.bias"]);
        assert_eq!(param_count(&c), 4 * 3 * 9 + 4 + 4);
        let mut seen = Vec::new();
        c.visit("cells.3", &mut |n, _, _| seen.push(n.to_string()));
        assert_eq!(seen[0], "cells.3.ops.1.weight");
    }

    #[test]
    fn visit_mut_reaches_every_tensor_in_place() {
        let mut c = cell(&mut StdRng::seed_from_u64(0));
        let ids: Vec<_> = state(&c).iter().map(|(_, t, _)| t.id()).collect();
        c.visit_mut("", &mut |_, t, _| t.data_mut().fill(0.5));
        for (_, t, _) in state(&c) {
            assert!(t.data().iter().all(|&v| v == 0.5));
        }
        let after: Vec<_> = state(&c).iter().map(|(_, t, _)| t.id()).collect();
        assert_eq!(ids, after, "in-place updates keep the tape ids");
    }

    #[test]
    fn set_trainable_switches_weights_only() {
        let mut c = cell(&mut StdRng::seed_from_u64(0));
        let before = state(&c);
        set_trainable(&mut c, false);
        assert!(state(&c).iter().all(|(_, t, _)| !t.tracks_grad()));
        set_trainable(&mut c, true);
        for ((_, old, kind), (_, new, _)) in before.iter().zip(state(&c)) {
            assert_eq!(new.tracks_grad(), *kind == ParamKind::Weight);
            assert_eq!(old.data(), new.data());
        }
    }

    #[test]
    fn sequential_applies_layers_in_order() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seq = Sequential::new()
            .with(Linear::new(3, 4, true, &mut rng).unwrap())
            .with(ReLU)
            .with(Linear::new(4, 2, false, &mut rng).unwrap());
        assert_eq!(seq.len(), 3);
        let x = Tensor::randn(&[5, 3], 1.0, &mut rng);
        let mut ctx = Ctx::new(false, 0);
        let y = seq.forward(&x, &mut ctx).unwrap();
        let mut h = x.clone();
        for l in &mut seq.layers {
            h = l.forward(&h, &mut ctx).unwrap();
        }
        assert_eq!(y.shape(), &[5, 2]);
        assert_eq!(y.data(), h.data());
    }

    #[test]
    fn pool_settings_are_checked() {
        assert!(MaxPool2d::new(3, 2, 1).is_ok());
        assert!(MaxPool2d::new(0, 1, 0).is_err());
        assert!(AvgPool2d::new(3, 0, 1).is_err());
        assert!(AvgPool2d::new(3, 1, 2).is_err());
    }

    #[test]
    fn pools_and_global_pool_shapes() {
        let x = Tensor::randn(&[2, 3, 8, 8], 1.0, &mut StdRng::seed_from_u64(2));
        let mut ctx = Ctx::new(true, 0);
        let y = MaxPool2d::new(2, 2, 0)
            .unwrap()
            .forward(&x, &mut ctx)
            .unwrap();
        assert_eq!(y.shape(), &[2, 3, 4, 4]);
        let y = AvgPool2d::new(3, 1, 1)
            .unwrap()
            .forward(&x, &mut ctx)
            .unwrap();
        assert_eq!(y.shape(), &[2, 3, 8, 8]);
        let y = GlobalAvgPool.forward(&x, &mut ctx).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
    }
}
