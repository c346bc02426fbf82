//! Elementwise ops: add, sub, mul, scale, relu, and multiplication by a constant mask (the
//! kernel behind dropout and drop-path).

use rand::Rng;
use rayon::prelude::*;

use crate::device::pool;
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

/// `a + b` (same shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("add", false);
    same_shape("add", a, b)?;
    let out = zip_map(a, b, |x, y| x + y);
    Ok(tape::record("add", out, &[a, b], |g, _| {
        Ok(vec![Some(g.clone()), Some(g.clone())])
    }))
}

/// `a - b` (same shapes).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("sub", false);
    same_shape("sub", a, b)?;
    let out = zip_map(a, b, |x, y| x - y);
    Ok(tape::record("sub", out, &[a, b], |g, needs| {
        Ok(vec![Some(g.clone()), needs[1].then(|| map(g, |v| -v))])
    }))
}

/// `a ⊙ b` (same shapes).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mul", false);
    same_shape("mul", a, b)?;
    let out = zip_map(a, b, |x, y| x * y);
    let (sa, sb) = (a.detach(), b.detach());
    Ok(tape::record("mul", out, &[a, b], move |g, needs| {
        Ok(vec![
            needs[0].then(|| zip_map(g, &sb, |g, y| g * y)),
            needs[1].then(|| zip_map(g, &sa, |g, x| g * x)),
        ])
    }))
}

/// `s · a` for a constant `s`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let _prof = super::prof::span("scale", false);
    let out = map(a, |x| s * x);
    Ok(tape::record("scale", out, &[a], move |g, _| {
        Ok(vec![Some(map(g, |v| s * v))])
    }))
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("relu", false);
    let out = map(x, |v| v.max(0.0));
    let y = out.clone();
    Ok(tape::record("relu", out, &[x], move |g, _| {
        Ok(vec![Some(zip_map(
            g,
            &y,
            |g, y| if y > 0.0 { g } else { 0.0 },
        ))])
    }))
}

/// `x ⊙ mask` for a constant mask of the same shape (no gradient to the mask).
pub fn mul_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mul_mask", false);
    same_shape("mul_mask", x, mask)?;
    let out = zip_map(x, mask, |x, m| x * m);
    let m = mask.detach();
    Ok(tape::record("mul_mask", out, &[x], move |g, _| {
        Ok(vec![Some(zip_map(g, &m, |g, m| g * m))])
    }))
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
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..x.numel())
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    mul_mask(x, &Tensor::from_parts(mask, x.shape()))
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
    let per = x.numel() / n.max(1);
    let keep = 1.0 - p;
    let mut mask = Vec::with_capacity(x.numel());
    for _ in 0..n {
        let m = if rng.random::<f32>() < keep {
            1.0 / keep
        } else {
            0.0
        };
        mask.extend(std::iter::repeat_n(m, per));
    }
    mul_mask(x, &Tensor::from_parts(mask, x.shape()))
}
