//! Elementwise ops: add, sub, mul, scale, relu, and multiplication by a constant mask (the
//! kernel behind dropout and drop-path).

use rand::Rng;
use rayon::prelude::*;

use crate::device::cuda::{self, Arg, Launch};
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

/// `out[i] = f(a[i], b[i])`, parallel for large tensors.
pub(crate) fn zip_map(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    let (x, y) = (a.data(), b.data());
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
    Tensor::from_parts(out, a.shape())
}

/// `out[i] = f(a[i])`, parallel for large tensors.
pub(crate) fn map(a: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
    let x = a.data();
    let mut out = pool::take(x.len());
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, x)| *o = f(*x)));
    } else {
        out.iter_mut().zip(x).for_each(|(o, x)| *o = f(*x));
    }
    Tensor::from_parts(out, a.shape())
}

/// `out = a ∘ b` elementwise on whichever device holds both: `f` on the CPU, `kernel` (from
/// kernels/elementwise.cu, signature `(a, b, out, n)`) on the GPU.
fn binary(
    op: &'static str,
    kernel: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    match (a.gpu_buf(), b.gpu_buf()) {
        (None, None) => Ok(zip_map(a, b, f)),
        (Some(x), Some(y)) => {
            let gpu = cuda::gpu()?;
            let out = gpu.alloc(x.len())?;
            let args = [x.arg(), y.arg(), out.arg(), Arg::I32(x.len() as i32)];
            gpu.launch("elementwise", kernel, Launch::elems(x.len()), &args)?;
            Ok(Tensor::from_gpu(out, a.shape()))
        }
        _ => Err(Error::devices(op, a, b)),
    }
}

/// `s · a`, on either device.
fn scaled(a: &Tensor, s: f32) -> Result<Tensor> {
    match a.gpu_buf() {
        None => Ok(map(a, |x| s * x)),
        Some(x) => {
            let gpu = cuda::gpu()?;
            let out = gpu.alloc(x.len())?;
            let args = [x.arg(), Arg::F32(s), out.arg(), Arg::I32(x.len() as i32)];
            gpu.launch(
                "elementwise",
                "scale_fwd_f32",
                Launch::elems(x.len()),
                &args,
            )?;
            Ok(Tensor::from_gpu(out, a.shape()))
        }
    }
}

/// `a + b` (same shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("add", false);
    same_shape("add", a, b)?;
    let out = binary("add", "add_fwd_f32", a, b, |x, y| x + y)?;
    Ok(tape::record("add", out, &[a, b], |g, _| {
        Ok(vec![Some(g.clone()), Some(g.clone())])
    }))
}

/// `a - b` (same shapes).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("sub", false);
    same_shape("sub", a, b)?;
    let out = binary("sub", "sub_fwd_f32", a, b, |x, y| x - y)?;
    Ok(tape::record("sub", out, &[a, b], |g, needs| {
        Ok(vec![
            Some(g.clone()),
            needs[1].then(|| scaled(g, -1.0)).transpose()?,
        ])
    }))
}

/// `a ⊙ b` (same shapes).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mul", false);
    same_shape("mul", a, b)?;
    let out = binary("mul", "mul_fwd_f32", a, b, |x, y| x * y)?;
    let (sa, sb) = (a.detach(), b.detach());
    Ok(tape::record("mul", out, &[a, b], move |g, needs| {
        let product = |x: &Tensor| binary("mul", "mul_fwd_f32", g, x, |g, x| g * x);
        Ok(vec![
            needs[0].then(|| product(&sb)).transpose()?,
            needs[1].then(|| product(&sa)).transpose()?,
        ])
    }))
}

/// `s · a` for a constant `s`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let _prof = super::prof::span("scale", false);
    let out = scaled(a, s)?;
    Ok(tape::record("scale", out, &[a], move |g, _| {
        Ok(vec![Some(scaled(g, s)?)])
    }))
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("relu", false);
    let out = match x.gpu_buf() {
        None => map(x, |v| v.max(0.0)),
        Some(b) => {
            let gpu = cuda::gpu()?;
            let out = gpu.alloc(b.len())?;
            let args = [b.arg(), out.arg(), Arg::I32(b.len() as i32)];
            gpu.launch("elementwise", "relu_fwd_f32", Launch::elems(b.len()), &args)?;
            Tensor::from_gpu(out, x.shape())
        }
    };
    let y = out.detach();
    Ok(tape::record("relu", out, &[x], move |g, _| {
        let dx = binary(
            "relu",
            "relu_bwd_f32",
            g,
            &y,
            |g, y| if y > 0.0 { g } else { 0.0 },
        )?;
        Ok(vec![Some(dx)])
    }))
}

/// `x ⊙ mask` for a constant mask of the same shape (no gradient to the mask).
pub fn mul_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mul_mask", false);
    same_shape("mul_mask", x, mask)?;
    let out = binary("mul_mask", "mul_fwd_f32", x, mask, |x, m| x * m)?;
    let m = mask.detach();
    Ok(tape::record("mul_mask", out, &[x], move |g, _| {
        Ok(vec![Some(binary(
            "mul_mask",
            "mul_fwd_f32",
            g,
            &m,
            |g, m| g * m,
        )?)])
    }))
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
            let gpu = cuda::gpu()?;
            let out = gpu.alloc(n)?;
            let args = [
                Arg::U64(seed),
                Arg::F32(keep),
                Arg::I32(per as i32),
                out.arg(),
                Arg::I32(n as i32),
            ];
            gpu.launch("elementwise", "keep_mask_f32", Launch::elems(n), &args)?;
            Ok(Tensor::from_gpu(out, like.shape()))
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
    let out = binary(
        op,
        "mul_fwd_f32",
        x,
        &keep_mask(x, seed, keep, per)?,
        |x, m| x * m,
    )?;
    Ok(tape::record(op, out, &[x], move |g, _| {
        let m = keep_mask(g, seed, keep, per)?;
        Ok(vec![Some(binary(op, "mul_fwd_f32", g, &m, |g, m| g * m)?)])
    }))
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
