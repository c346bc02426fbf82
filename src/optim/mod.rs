//! Optimisers with PyTorch's exact update rules (`torch.optim.SGD`, `torch.optim.Adam`),
//! gradient-norm clipping, the cosine learning-rate schedule, and divergence checks.
//!
//! Optimiser state is keyed by the parameter's dotted name (see [`crate::nn::Module`]), not by its
//! tape id, so it can be serialised with serde and restored into a freshly built model.

use std::collections::BTreeMap;

use crate::device::cuda::{kernels, Arg, Launch};
use crate::device::Storage;
use crate::error::{Error, Result};
use crate::nn::{Module, ParamKind};
use crate::tape::{no_grad, Grads};
use crate::tensor::Tensor;

/// A first-order optimiser that updates a model's weights in place from their gradients.
pub trait Optimizer {
    /// One update of every weight that has a gradient in `grads`; the others are left alone.
    fn step(&mut self, model: &mut dyn Module, grads: &Grads) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f32;
    /// Sets the learning rate (schedules call this once per step or epoch); a negative or
    /// non-finite rate is an error, so a broken schedule stops the run instead of climbing.
    fn set_lr(&mut self, lr: f32) -> Result<()>;
}

/// Calls `f(name, param, grad)` for each weight of `model` that has a gradient, inside
/// [`no_grad`]; stops at the first error.
fn for_each_weight(
    model: &mut dyn Module,
    grads: &Grads,
    mut f: impl FnMut(&str, &mut Tensor, &Tensor) -> Result<()>,
) -> Result<()> {
    let mut result = Ok(());
    no_grad(|| {
        model.visit_mut("", &mut |name, p, kind| {
            if kind != ParamKind::Weight || result.is_err() {
                return;
            }
            if let Some(g) = grads.get(p) {
                if g.device() != p.device() {
                    result = Err(Error::devices("optimizer step", p, g));
                    return;
                }
                result = f(name, p, g);
            }
        })
    });
    result
}

/// Fetches (or creates, zero-filled on the parameter's device) the state tensor for `name`,
/// checking its size so that a state restored for a differently shaped model is an error
/// rather than a silent mix-up. Returns it and whether it is new.
fn slot<'a>(
    map: &'a mut BTreeMap<String, Tensor>,
    name: &str,
    like: &Tensor,
) -> Result<(&'a mut Tensor, bool)> {
    let fresh = !map.contains_key(name);
    if fresh {
        map.insert(name.to_string(), like.zeros_like()?);
    }
    let buf = map.get_mut(name).expect("inserted above");
    if buf.numel() != like.numel() {
        return Err(Error::InvalidArgument(format!(
            "optimiser state for {name} has {} values, the parameter has {}",
            buf.numel(),
            like.numel()
        )));
    }
    if buf.device() != like.device() {
        *buf = buf.to_device(like.device())?;
    }
    Ok((buf, fresh))
}

/// The GPU buffers of tensors that a fused update writes in place.
fn in_place(t: &mut Tensor) -> Result<u64> {
    Ok(t.cuda_buf_mut("optimizer step")?.ptr())
}

fn check_hyper(op: &str, lr: f32, weight_decay: f32) -> Result<()> {
    let ok = |v: f32| v >= 0.0 && v.is_finite();
    if !ok(lr) || !ok(weight_decay) {
        return Err(Error::InvalidArgument(format!(
            "{op}: lr ({lr}) and weight_decay ({weight_decay}) must be finite and non-negative"
        )));
    }
    Ok(())
}

fn checked_lr(lr: f32) -> Result<f32> {
    if lr >= 0.0 && lr.is_finite() {
        return Ok(lr);
    }
    Err(Error::InvalidArgument(format!(
        "set_lr: learning rate {lr} must be finite and non-negative"
    )))
}

/// Stochastic gradient descent with momentum and L2 weight decay, as `torch.optim.SGD` with
/// `dampening = 0`: `d = g + wd·p`; `buf = d` on the first step, then `buf = μ·buf + d`;
/// the step direction is `buf`, or `d + μ·buf` with Nesterov; `p -= lr·direction`.
#[derive(Clone, Debug)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// Momentum buffers by parameter name, on the parameter's device.
    pub momentum_buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// Validated hyper-parameters and empty state.
    pub fn new(lr: f32, momentum: f32, weight_decay: f32, nesterov: bool) -> Result<Self> {
        check_hyper("Sgd", lr, weight_decay)?;
        if !(0.0..1.0).contains(&momentum) || (nesterov && momentum == 0.0) {
            return Err(Error::InvalidArgument(format!(
                "Sgd: momentum {momentum} must be in [0, 1), and positive with Nesterov"
            )));
        }
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            nesterov,
            momentum_buffers: BTreeMap::new(),
        })
    }

    /// Zero momentum buffers for the weights of `model` that have none: the state of every
    /// step after the first (whose `buf = d` equals `μ·0 + d`), so that a memory probe sees it
    /// in one step.
    pub fn init_momentum(&mut self, model: &dyn Module) -> Result<()> {
        let mut result = Ok(());
        model.visit("", &mut |name, t, kind| {
            let missing = !self.momentum_buffers.contains_key(name);
            if kind == ParamKind::Weight && missing && result.is_ok() {
                match t.zeros_like() {
                    Ok(z) => {
                        self.momentum_buffers.insert(name.to_string(), z);
                    }
                    Err(e) => result = Err(e),
                }
            }
        });
        result
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Module, grads: &Grads) -> Result<()> {
        let Sgd {
            lr,
            momentum,
            weight_decay: wd,
            nesterov,
            momentum_buffers,
        } = self;
        let (lr, mu, wd, nesterov) = (*lr, *momentum, *wd, *nesterov);
        for_each_weight(model, grads, |name, p, g| {
            let mut fresh = false;
            let mut buf = None;
            if mu != 0.0 {
                let (b, f) = slot(momentum_buffers, name, p)?;
                fresh = f;
                buf = Some(b);
            }
            let g = match g.storage() {
                Storage::Cpu(g) => g.as_slice(),
                Storage::Cuda(gb) => {
                    let gpu = crate::device::cuda::gpu()?;
                    let n = p.numel();
                    let pp = in_place(p)?;
                    let bp = match buf {
                        Some(b) => in_place(b)?,
                        None => pp, // not read with μ = 0
                    };
                    let args = [
                        Arg::Ptr(pp),
                        gb.arg(),
                        Arg::Ptr(bp),
                        Arg::F32(lr),
                        Arg::F32(mu),
                        Arg::F32(wd),
                        Arg::flag(nesterov),
                        Arg::flag(fresh),
                        Arg::int("n", n)?,
                    ];
                    return gpu.launch(kernels::SGD_STEP, Launch::elems(n), &args);
                }
            };
            let p = p.data_mut();
            let Some(buf) = buf else {
                p.iter_mut()
                    .zip(g)
                    .for_each(|(p, g)| *p -= lr * (g + wd * *p));
                return Ok(());
            };
            for ((p, g), b) in p.iter_mut().zip(g).zip(buf.data_mut()) {
                let d = g + wd * *p;
                *b = if fresh { d } else { mu * *b + d };
                *p -= lr * if nesterov { d + mu * *b } else { *b };
            }
            Ok(())
        })
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.lr = checked_lr(lr)?;
        Ok(())
    }
}

/// Adam state of one parameter: its own step count (a parameter that got no gradient did not
/// step) and the first and second moment estimates.
#[derive(Clone, Debug)]
pub struct AdamSlot {
    pub step: u64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// Adam with L2 weight decay added to the gradient, as `torch.optim.Adam`:
/// `g += wd·p; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
/// p -= lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps)`.
#[derive(Clone, Debug)]
pub struct Adam {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    /// Moment estimates by parameter name.
    pub slots: BTreeMap<String, AdamSlot>,
}

impl Adam {
    /// Validated hyper-parameters and empty state.
    pub fn new(lr: f32, betas: (f32, f32), eps: f32, weight_decay: f32) -> Result<Self> {
        check_hyper("Adam", lr, weight_decay)?;
        let beta_ok = |b: f32| (0.0..1.0).contains(&b);
        let eps_ok = eps >= 0.0 && eps.is_finite();
        if !beta_ok(betas.0) || !beta_ok(betas.1) || !eps_ok {
            return Err(Error::InvalidArgument(format!(
                "Adam: betas {betas:?} must be in [0, 1) and eps {eps} finite and non-negative"
            )));
        }
        Ok(Adam {
            lr,
            betas,
            eps,
            weight_decay,
            slots: BTreeMap::new(),
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, model: &mut dyn Module, grads: &Grads) -> Result<()> {
        let Adam {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay: wd,
            slots,
        } = self;
        let (lr, b1, b2, eps, wd) = (*lr, *b1, *b2, *eps, *wd);
        for_each_weight(model, grads, |name, p, g| {
            if !slots.contains_key(name) {
                let slot = AdamSlot {
                    step: 0,
                    exp_avg: p.zeros_like()?,
                    exp_avg_sq: p.zeros_like()?,
                };
                slots.insert(name.to_string(), slot);
            }
            let s = slots.get_mut(name).expect("inserted above");
            if s.exp_avg.numel() != p.numel() || s.exp_avg_sq.numel() != p.numel() {
                return Err(Error::InvalidArgument(format!(
                    "Adam state for {name} has {} values, the parameter has {}",
                    s.exp_avg.numel(),
                    p.numel()
                )));
            }
            s.step += 1;
            // PyTorch computes the bias corrections in double precision (Python floats).
            let t = s.step as i32;
            let step_size = (lr as f64 / (1.0 - (b1 as f64).powi(t))) as f32;
            let bc2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt() as f32;
            let g = match g.storage() {
                Storage::Cpu(g) => g.as_slice(),
                Storage::Cuda(gb) => {
                    let gpu = crate::device::cuda::gpu()?;
                    let n = p.numel();
                    let args = [
                        Arg::Ptr(in_place(p)?),
                        gb.arg(),
                        Arg::Ptr(in_place(&mut s.exp_avg)?),
                        Arg::Ptr(in_place(&mut s.exp_avg_sq)?),
                        Arg::F32(step_size),
                        Arg::F32(bc2_sqrt),
                        Arg::F32(b1),
                        Arg::F32(b2),
                        Arg::F32(eps),
                        Arg::F32(wd),
                        Arg::int("n", n)?,
                    ];
                    return gpu.launch(kernels::ADAM_STEP, Launch::elems(n), &args);
                }
            };
            let (m, v) = (s.exp_avg.data_mut(), s.exp_avg_sq.data_mut());
            for (((p, g), m), v) in p.data_mut().iter_mut().zip(g).zip(m).zip(v) {
                let g = g + wd * *p;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
            Ok(())
        })
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.lr = checked_lr(lr)?;
        Ok(())
    }
}

/// The weights of `model` that have a gradient in `grads`, with their names.
fn weights_with_grads<M: Module + ?Sized>(model: &M, grads: &Grads) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    model.visit("", &mut |name, t, kind| {
        if kind == ParamKind::Weight && grads.get(t).is_some() {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// Rescales the gradients of `model`'s weights so that their joint L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_`: scale `max_norm / (norm + 1e-6)` when that
/// is below 1. Returns the norm before clipping. A non-finite norm leaves the gradients
/// untouched; check it with [`ensure_finite_grads`].
pub fn clip_grad_norm<M: Module + ?Sized>(
    model: &M,
    grads: &mut Grads,
    max_norm: f32,
) -> Result<f32> {
    let params = weights_with_grads(model, grads);
    let gs: Vec<&Tensor> = params.iter().filter_map(|(_, p)| grads.get(p)).collect();
    let norm = crate::ops::squared_norm(&gs)?.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for (_, p) in &params {
            if let Some(g) = grads.get_mut(p) {
                *g = no_grad(|| crate::ops::scale(g, coef))?;
            }
        }
    }
    Ok(norm)
}

/// [`clip_grad_norm`], then `Error::NonFinite` naming the first weight whose gradient is NaN
/// or infinite: a finite loss can still have an overflowing gradient, and one step with it
/// would turn every weight into NaN.
pub fn clip_finite_grad_norm<M: Module + ?Sized>(
    model: &M,
    grads: &mut Grads,
    max_norm: f32,
) -> Result<f32> {
    let norm = clip_grad_norm(model, grads, max_norm)?;
    if !norm.is_finite() {
        ensure_finite_grads(model, grads)?;
        return Err(Error::NonFinite(format!("the gradient norm is {norm}")));
    }
    Ok(norm)
}

/// `Error::NonFinite` when the loss is NaN or infinite (call before `backward`).
pub fn ensure_finite_loss(loss: f32) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite(format!("the loss is {loss}")))
    }
}

/// `Error::NonFinite` naming the first weight whose gradient holds a NaN or infinity.
pub fn ensure_finite_grads<M: Module + ?Sized>(model: &M, grads: &Grads) -> Result<()> {
    for (name, p) in weights_with_grads(model, grads) {
        if grads.get(&p).map(Tensor::all_finite).transpose()? == Some(false) {
            return Err(Error::NonFinite(format!(
                "the gradient of {name} is not finite"
            )));
        }
    }
    Ok(())
}

/// Cosine annealing (`torch.optim.lr_scheduler.CosineAnnealingLR`, closed form):
/// `min + (base - min)·(1 + cos(π·t/total))/2`, held at `min` once `t ≥ total`.
///
/// ```
/// use darts::optim::cosine_lr;
/// assert_eq!(cosine_lr(0.1, 0.0, 0, 10), 0.1);
/// assert!((cosine_lr(0.1, 0.0, 5, 10) - 0.05).abs() < 1e-7);
/// assert_eq!(cosine_lr(0.1, 0.001, 10, 10), 0.001);
/// ```
pub fn cosine_lr(base: f32, min: f32, t: usize, total: usize) -> f32 {
    if total == 0 {
        return base;
    }
    let frac = t.min(total) as f64 / total as f64;
    (min as f64 + (base as f64 - min as f64) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0)
        as f32
}

#[cfg(test)]
mod tests;
