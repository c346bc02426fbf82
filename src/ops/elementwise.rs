//! Elementwise ops: add, sub, mul, scale, relu, and multiplication by a constant mask (the
//! kernel behind dropout and drop-path).

use rand::Rng;
use rayon::prelude::*;

use super::Operands;
use crate::device::cuda::{self, kernels, Arg, Kernel, Launch};
use crate::device::{pool, Device};
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

/// Below this many elements a parallel loop costs more than it saves.
const PAR_MIN: usize = 1 << 15;

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            "operands must have the same shape",
            &[a.shape(), b.shape()],
        ));
    }
    Ok(())
}

/// `out[i] = f(x[i], y[i])` with `shape`, parallel for large tensors.
fn zip_map(x: &[f32], y: &[f32], shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    let mut out = pool::take(x.len());
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN).zip(y.par_chunks(PAR_MIN)))
            .for_each(|(o, (x, y))| {
                o.iter_mut()
                    .zip(x.iter().zip(y))
                    .for_each(|(o, (x, y))| *o = f(*x, *y))
            });
    } else {
        out.iter_mut()
            .zip(x.iter().zip(y))
            .for_each(|(o, (x, y))| *o = f(*x, *y));
    }
    Tensor::from_parts(out, shape)
}

/// `out[i] = f(x[i])` with `shape`, parallel for large tensors.
fn map(x: &[f32], shape: &[usize], f: impl Fn(f32) -> f32 + Sync) -> Tensor {
    let mut out = pool::take(x.len());
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, x)| *o = f(*x)));
    } else {
        out.iter_mut().zip(x).for_each(|(o, x)| *o = f(*x));
    }
    Tensor::from_parts(out, shape)
}

/// A binary pointwise function stated once: `f` on the CPU and `kernel` (from
/// kernels/elementwise.cu, signature `(a, b, out, n)`) on the GPU compute the same values.
#[derive(Clone, Copy)]
struct Zip<F> {
    kernel: Kernel,
    f: F,
}

/// A unary pointwise function: `f` on the CPU, `kernel` `(x, [scalar,] out, n)` on the GPU.
#[derive(Clone, Copy)]
struct Map<F> {
    kernel: Kernel,
    scalar: Option<f32>,
    f: F,
}

fn plus() -> Zip<impl Fn(f32, f32) -> f32 + Copy + Sync> {
    Zip {
        kernel: kernels::ADD_FWD,
        f: |x, y| x + y,
    }
}

fn minus() -> Zip<impl Fn(f32, f32) -> f32 + Copy + Sync> {
    Zip {
        kernel: kernels::SUB_FWD,
        f: |x, y| x - y,
    }
}

fn times() -> Zip<impl Fn(f32, f32) -> f32 + Copy + Sync> {
    Zip {
        kernel: kernels::MUL_FWD,
        f: |x, y| x * y,
    }
}

/// ReLU's derivative applied to `g`, from the output `y`: `g` where `y > 0`, else 0.
fn relu_grad() -> Zip<impl Fn(f32, f32) -> f32 + Copy + Sync> {
    Zip {
        kernel: kernels::RELU_BWD,
        f: |g, y| if y > 0.0 { g } else { 0.0 },
    }
}

fn rectify() -> Map<impl Fn(f32) -> f32 + Copy + Sync> {
    Map {
        kernel: kernels::RELU_FWD,
        scalar: None,
        f: |v: f32| v.max(0.0),
    }
}

fn scaled(s: f32) -> Map<impl Fn(f32) -> f32 + Copy + Sync> {
    Map {
        kernel: kernels::SCALE_FWD,
        scalar: Some(s),
        f: move |x| s * x,
    }
}

/// A new device buffer of `n` values written by `kernel` from `inputs` (then `out, n`).
fn launch_elems(kernel: Kernel, inputs: &[Arg], n: usize, shape: &[usize]) -> Result<Tensor> {
    let gpu = cuda::gpu()?;
    let out = gpu.alloc(n)?;
    let mut args = inputs.to_vec();
    args.extend([out.arg(), Arg::int("n", n)?]);
    gpu.launch(kernel, Launch::elems(n), &args)?;
    Ok(Tensor::from_gpu(out, shape))
}

impl<F: Fn(f32, f32) -> f32 + Sync> Zip<F> {
    /// `f(a, b)` elementwise on the device holding both (same shapes, checked by the caller).
    fn apply(&self, op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match super::operands(op, [a, b])? {
            Operands::Cpu([x, y]) => Ok(zip_map(x, y, a.shape(), &self.f)),
            Operands::Cuda([x, y]) => {
                launch_elems(self.kernel, &[x.arg(), y.arg()], x.len(), a.shape())
            }
        }
    }
}

impl<F: Fn(f32) -> f32 + Sync> Map<F> {
    /// `f(x)` elementwise on `x`'s device.
    fn apply(&self, op: &'static str, x: &Tensor) -> Result<Tensor> {
        match super::operands(op, [x])? {
            Operands::Cpu([v]) => Ok(map(v, x.shape(), &self.f)),
            Operands::Cuda([b]) => {
                let inputs: Vec<Arg> = [b.arg()]
                    .into_iter()
                    .chain(self.scalar.map(Arg::F32))
                    .collect();
                launch_elems(self.kernel, &inputs, b.len(), x.shape())
            }
        }
    }
}

/// The gradient of one input of a pointwise op, from the upstream gradient `g`.
enum Grad {
    /// `g` itself.
    Pass,
    /// `s · g`.
    Scale(f32),
    /// `g ⊙ t` for a saved (or constant) `t`.
    Times(Tensor),
    /// ReLU's: `g` where the saved output is positive.
    Relu(Tensor),
    /// `g ⊙ keep_mask(seed, keep, per)`, the mask drawn again rather than kept.
    Mask { seed: u64, keep: f32, per: usize },
}

impl Grad {
    fn of(&self, op: &'static str, g: &Tensor) -> Result<Tensor> {
        match self {
            Grad::Pass => Ok(g.clone()),
            Grad::Scale(s) => scaled(*s).apply(op, g),
            Grad::Times(t) => times().apply(op, g, t),
            Grad::Relu(y) => relu_grad().apply(op, g, y),
            &Grad::Mask { seed, keep, per } => {
                times().apply(op, g, &keep_mask(g, seed, keep, per)?)
            }
        }
    }
}

/// A pointwise op stated once: `out` computed from `inputs`, and each input's gradient as a
/// [`Grad`] of the upstream gradient (computed only for the inputs that need one).
fn pointwise<const N: usize>(
    op: &'static str,
    out: Tensor,
    inputs: [&Tensor; N],
    grads: [Grad; N],
) -> Tensor {
    tape::record(op, out, &inputs, move |g, needs| {
        grads
            .iter()
            .zip(needs)
            .map(|(d, &need)| need.then(|| d.of(op, g)).transpose())
            .collect()
    })
}

/// A binary pointwise op on same-shape operands: `fwd` forward, `grads` backward.
fn binary<F: Fn(f32, f32) -> f32 + Sync>(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    fwd: Zip<F>,
    grads: impl FnOnce() -> [Grad; 2],
) -> Result<Tensor> {
    let _prof = super::prof::span(op, false);
    same_shape(op, a, b)?;
    let out = fwd.apply(op, a, b)?;
    Ok(pointwise(op, out, [a, b], grads()))
}

/// `a + b` (same shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("add", a, b, plus(), || [Grad::Pass, Grad::Pass])
}

/// `a - b` (same shapes).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("sub", a, b, minus(), || [Grad::Pass, Grad::Scale(-1.0)])
}

/// `a ⊙ b` (same shapes).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("mul", a, b, times(), || {
        [Grad::Times(b.detach()), Grad::Times(a.detach())]
    })
}

/// `s · a` for a constant `s`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let _prof = super::prof::span("scale", false);
    let out = scaled(s).apply("scale", a)?;
    Ok(pointwise("scale", out, [a], [Grad::Scale(s)]))
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("relu", false);
    let out = rectify().apply("relu", x)?;
    let y = out.detach();
    Ok(pointwise("relu", out, [x], [Grad::Relu(y)]))
}

/// `x ⊙ mask` for a constant mask of the same shape (no gradient to the mask).
pub fn mul_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mul_mask", false);
    same_shape("mul_mask", x, mask)?;
    let out = times().apply("mul_mask", x, mask)?;
    Ok(pointwise(
        "mul_mask",
        out,
        [x],
        [Grad::Times(mask.detach())],
    ))
}

/// A uniform draw in [0, 1) that depends only on `(seed, i)`: SplitMix64's finaliser, the same
/// function as `uniform_at` in kernels/common.cuh, so CPU and GPU draw identical masks.
pub(crate) fn uniform_at(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// The mask `1/keep` where `uniform_at(seed, i / per) < keep`, else 0, on `like`'s device.
fn keep_mask(like: &Tensor, seed: u64, keep: f32, per: usize) -> Result<Tensor> {
    let n = like.numel();
    match like.device() {
        Device::Cpu => {
            // One draw per group of `per`, written `per` times (drop-path masks whole samples).
            let mut m = Vec::with_capacity(n);
            for (g, start) in (0..n).step_by(per).enumerate() {
                let v = if uniform_at(seed, g as u64) < keep {
                    1.0 / keep
                } else {
                    0.0
                };
                m.extend(std::iter::repeat_n(v, per.min(n - start)));
            }
            Ok(Tensor::from_parts(m, like.shape()))
        }
        Device::Cuda => {
            let inputs = [Arg::U64(seed), Arg::F32(keep), Arg::int("per", per)?];
            launch_elems(kernels::KEEP_MASK, &inputs, n, like.shape())
        }
    }
}

fn check_prob(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidArgument(format!(
            "{op}: probability {p} must be in [0, 1)"
        )));
    }
    Ok(())
}

/// Inverted dropout: zeroes each element with probability `p`, scales the rest by `1/(1-p)`.
pub fn dropout(x: &Tensor, p: f32, rng: &mut impl Rng) -> Result<Tensor> {
    check_prob("dropout", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    masked("dropout", x, rng.random(), 1.0 - p, 1)
}

/// `x ⊙ keep_mask(seed, keep, per)`. The backward draws the mask again from its seed rather
/// than keeping it: a kept mask is one more tensor of x's size per call held until the
/// backward (drop-path on every edge of a cell added ~12% to a training step's peak).
fn masked(op: &'static str, x: &Tensor, seed: u64, keep: f32, per: usize) -> Result<Tensor> {
    let _prof = super::prof::span(op, false);
    let out = times().apply(op, x, &keep_mask(x, seed, keep, per)?)?;
    Ok(pointwise(op, out, [x], [Grad::Mask { seed, keep, per }]))
}

/// Drop-path (stochastic depth): drops whole samples of a batch (dim 0) with probability `p`,
/// scaling the kept ones by `1/(1-p)`, as DARTS does on each cell edge during evaluation training.
pub fn drop_path(x: &Tensor, p: f32, rng: &mut impl Rng) -> Result<Tensor> {
    check_prob("drop_path", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let Some(&n) = x.shape().first() else {
        return Err(Error::shape(
            "drop_path",
            "needs a batch dimension",
            &[x.shape()],
        ));
    };
    let per = (x.numel() / n.max(1)).max(1);
    masked("drop_path", x, rng.random(), 1.0 - p, per)
}
