//! The bilevel architecture step (the reference `architect.py`).
//!
//! First order: ∇α L_val(w, α). Second order: the gradient of the unrolled objective
//! L_val(w′, α) with w′ = w − ξ(μ·buf + ∇w L_train(w, α) + λw), one SGD step with the weight
//! optimiser's momentum and weight decay at ξ = the current weight learning rate, which is
//! ∇α L_val(w′, α) − ξ ∇²α,w L_train(w, α) · ∇w′ L_val(w′, α); the Hessian-vector product is a
//! central finite difference at w ± ε·∇w′L_val with ε = 0.01 / ‖∇w′ L_val‖.

use super::supernet::Network;
use crate::error::{Error, Result};
use crate::nn::{set_trainable, Ctx, Module, ParamKind};
use crate::optim::{ensure_finite_grads, Adam, Optimizer, Sgd};
use crate::tape::Grads;
use crate::tensor::Tensor;

/// First- or second-order approximation of the architecture gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Order {
    First,
    Second,
}

/// One labelled batch.
pub struct Batch<'a> {
    pub images: &'a Tensor,
    pub labels: &'a [usize],
}

/// Updates the alphas of a [`Network`] with Adam from (approximate) validation gradients.
pub struct Architect {
    pub optimizer: Adam,
    pub order: Order,
}

/// Copies (outside the graph) of the tensors of `kind`, in visiting order.
fn tensors(net: &Network, kind: ParamKind) -> Vec<Tensor> {
    let mut out = Vec::new();
    net.visit("", &mut |_, t, k| {
        if k == kind {
            out.push(t.detach())
        }
    });
    out
}

/// Sets the tensors of `kind`, in visiting order, to `f(i, current)`.
fn update(
    net: &mut Network,
    kind: ParamKind,
    mut f: impl FnMut(usize, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    let mut i = 0;
    let mut result = Ok(());
    net.visit_mut("", &mut |_, t, k| {
        if k == kind && result.is_ok() {
            result = f(i, t).and_then(|v| t.set_data(&v));
            i += 1;
        }
    });
    result
}

/// `a + s·b`, elementwise, outside the graph.
fn axpy(a: &Tensor, s: f32, b: &Tensor) -> Result<Tensor> {
    crate::no_grad(|| crate::ops::add(a, &crate::ops::scale(b, s)?))
}

impl Architect {
    /// The paper's architecture optimiser: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3.
    pub fn new(order: Order, lr: f32, weight_decay: f32) -> Result<Self> {
        Ok(Architect {
            optimizer: Adam::new(lr, (0.5, 0.999), 1e-8, weight_decay)?,
            order,
        })
    }

    /// Loss and gradients with only the chosen parameter sets tracked.
    fn loss_grads(
        net: &mut Network,
        batch: &Batch,
        train_w: bool,
        train_a: bool,
        ctx: &mut Ctx,
    ) -> Result<(f32, Grads)> {
        set_trainable(net, train_w);
        set_trainable(&mut net.alphas, train_a);
        let loss = net.loss(batch.images, batch.labels, ctx)?;
        let value = loss.item()?;
        if !value.is_finite() {
            return Err(Error::NonFinite(format!(
                "architecture step loss is {value}"
            )));
        }
        Ok((value, loss.backward()?))
    }

    /// ∇α of the (first- or second-order) validation objective; returns it with L_val.
    pub fn alpha_gradient(
        &self,
        net: &mut Network,
        train: &Batch,
        val: &Batch,
        eta: f32,
        sgd: &Sgd,
        ctx: &mut Ctx,
    ) -> Result<(f32, Vec<Tensor>)> {
        let alpha_grads = |net: &Network, g: &Grads| -> Result<Vec<Tensor>> {
            // A network without normal (or reduction) cells, e.g. 2 layers, leaves those
            // alphas without a gradient: zero, as PyTorch's Adam then sees none.
            let get = |t: &Tensor| g.get(t).cloned().map_or_else(|| t.zeros_like(), Ok);
            net.alphas.matrices().into_iter().map(get).collect()
        };
        let result = match self.order {
            Order::First => Self::loss_grads(net, val, false, true, ctx)
                .and_then(|(loss, g)| Ok((loss, alpha_grads(net, &g)?))),
            Order::Second => self.unrolled_gradient(net, train, val, eta, sgd, ctx, &alpha_grads),
        };
        // On every path, errors included: the weight step after this differentiates weights.
        set_trainable(net, true);
        set_trainable(&mut net.alphas, true);
        result
    }

    /// The second-order gradient. It moves the weights to w′ and to w ± ε·v in place; whatever
    /// happens in between (an error, a NaN), they are put back to w before this returns, and
    /// on an error the BN statistics too, so a failed step leaves the network as it found it.
    #[allow(clippy::too_many_arguments)]
    fn unrolled_gradient(
        &self,
        net: &mut Network,
        train: &Batch,
        val: &Batch,
        eta: f32,
        sgd: &Sgd,
        ctx: &mut Ctx,
        alpha_grads: &dyn Fn(&Network, &Grads) -> Result<Vec<Tensor>>,
    ) -> Result<(f32, Vec<Tensor>)> {
        let w0 = tensors(net, ParamKind::Weight);
        let b0 = tensors(net, ParamKind::Buffer);
        let result = Self::perturbed_gradient(net, &w0, train, val, eta, sgd, ctx, alpha_grads);
        let restored = update(net, ParamKind::Weight, |i, _| Ok(w0[i].clone())).and_then(|()| {
            if result.is_err() {
                update(net, ParamKind::Buffer, |i, _| Ok(b0[i].clone()))
            } else {
                Ok(())
            }
        });
        result.and_then(|r| restored.map(|()| r))
    }

    /// The body of [`Self::unrolled_gradient`]: leaves the weights perturbed (its caller
    /// restores them).
    #[allow(clippy::too_many_arguments)]
    fn perturbed_gradient(
        net: &mut Network,
        w0: &[Tensor],
        train: &Batch,
        val: &Batch,
        eta: f32,
        sgd: &Sgd,
        ctx: &mut Ctx,
        alpha_grads: &dyn Fn(&Network, &Grads) -> Result<Vec<Tensor>>,
    ) -> Result<(f32, Vec<Tensor>)> {
        // w′ = w − ξ(μ·buf + ∇w L_train + λw), exactly one step of the weight optimiser.
        let (_, g_train) = Self::loss_grads(net, train, true, false, ctx)?;
        let mut names = Vec::new();
        let mut grads_w = Vec::new();
        net.visit("", &mut |name, t, kind| {
            if kind == ParamKind::Weight {
                names.push(name.to_string());
                grads_w.push(g_train.get(t).cloned());
            }
        });
        drop(g_train);
        update(net, ParamKind::Weight, |i, w| {
            let mut step = match &grads_w[i] {
                Some(g) => axpy(g, sgd.weight_decay, w)?,
                None => crate::no_grad(|| crate::ops::scale(w, sgd.weight_decay))?,
            };
            if let Some(buf) = sgd.momentum_buffers.get(&names[i]) {
                let buf = buf.to_device(w.device())?.reshape(w.shape())?;
                step = axpy(&step, sgd.momentum, &buf)?;
            }
            axpy(w, -eta, &step)
        })?;
        // The unrolled model is a copy in the reference: its BN statistics do not persist.
        let saved_buffers = tensors(net, ParamKind::Buffer);
        let (loss, g_val) = Self::loss_grads(net, val, true, true, ctx)?;
        update(net, ParamKind::Buffer, |i, _| Ok(saved_buffers[i].clone()))?;
        let mut da = alpha_grads(net, &g_val)?;
        let mut v = Vec::new();
        net.visit("", &mut |_, t, kind| {
            if kind == ParamKind::Weight {
                v.push(g_val.get(t).cloned().map_or_else(|| t.zeros_like(), Ok));
            }
        });
        let v = v.into_iter().collect::<Result<Vec<_>>>()?;
        drop(g_val);
        let norm = crate::ops::squared_norm(&v.iter().collect::<Vec<_>>())?.sqrt() as f32;
        // Hessian-vector product by central differences at w0 ± R·v.
        let r = 1e-2 / norm.max(1e-12);
        let mut hvp_side = |sign: f32, ctx: &mut Ctx| -> Result<Vec<Tensor>> {
            update(net, ParamKind::Weight, |i, _| axpy(&w0[i], sign * r, &v[i]))?;
            let (_, g) = Self::loss_grads(net, train, false, true, ctx)?;
            alpha_grads(net, &g)
        };
        let plus = hvp_side(1.0, ctx)?;
        let minus = hvp_side(-1.0, ctx)?;
        let c = -eta / (2.0 * r);
        for ((d, p), m) in da.iter_mut().zip(&plus).zip(&minus) {
            *d = axpy(d, c, &axpy(p, -1.0, m)?)?;
        }
        Ok((loss, da))
    }

    /// One architecture update; returns the validation loss it saw.
    pub fn step(
        &mut self,
        net: &mut Network,
        train: &Batch,
        val: &Batch,
        eta: f32,
        sgd: &Sgd,
        ctx: &mut Ctx,
    ) -> Result<f32> {
        let (loss, alpha_grads) = self.alpha_gradient(net, train, val, eta, sgd, ctx)?;
        let mut grads = Grads::default();
        for (a, g) in net.alphas.matrices().into_iter().zip(alpha_grads) {
            grads.insert(a, g);
        }
        // The loss was finite; a NaN here (e.g. from the finite-difference Hessian) must not
        // reach the alphas.
        ensure_finite_grads(&net.alphas, &grads)?;
        self.optimizer.step(&mut net.alphas, &grads)?;
        Ok(loss)
    }
}
