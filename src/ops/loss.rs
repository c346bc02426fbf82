//! Softmax, log-softmax (over the last dimension) and cross-entropy with integer labels.

use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

fn last_dim(op: &'static str, x: &Tensor) -> Result<usize> {
    match x.shape().last() {
        Some(&k) if k > 0 => Ok(k),
        _ => Err(Error::shape(
            op,
            "needs a non-empty last dimension",
            &[x.shape()],
        )),
    }
}

/// Numerically stable log-softmax of one row into `out`.
fn log_softmax_row(x: &[f32], out: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let lse = max + x.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = v - lse);
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("softmax", false);
    let k = last_dim("softmax", x)?;
    let mut out = vec![0.0; x.numel()];
    for (o, r) in out.chunks_mut(k).zip(x.data().chunks(k)) {
        log_softmax_row(r, o);
        o.iter_mut().for_each(|v| *v = v.exp());
    }
    let out = Tensor::from_parts(out, x.shape());
    let y = out.clone();
    Ok(tape::record("softmax", out, &[x], move |g, _| {
        // dx = y ⊙ (g − Σ g·y)
        let mut dx = vec![0.0; y.numel()];
        for ((d, gr), yr) in dx
            .chunks_mut(k)
            .zip(g.data().chunks(k))
            .zip(y.data().chunks(k))
        {
            let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
            d.iter_mut()
                .zip(gr.iter().zip(yr))
                .for_each(|(d, (g, y))| *d = y * (g - dot));
        }
        Ok(vec![Some(Tensor::from_parts(dx, y.shape()))])
    }))
}

/// Log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("log_softmax", false);
    let k = last_dim("log_softmax", x)?;
    let mut out = vec![0.0; x.numel()];
    for (o, r) in out.chunks_mut(k).zip(x.data().chunks(k)) {
        log_softmax_row(r, o);
    }
    let out = Tensor::from_parts(out, x.shape());
    let y = out.clone();
    Ok(tape::record("log_softmax", out, &[x], move |g, _| {
        // dx = g − softmax · Σ g
        let mut dx = vec![0.0; y.numel()];
        for ((d, gr), yr) in dx
            .chunks_mut(k)
            .zip(g.data().chunks(k))
            .zip(y.data().chunks(k))
        {
            let total: f32 = gr.iter().sum();
            d.iter_mut()
                .zip(gr.iter().zip(yr))
                .for_each(|(d, (g, y))| *d = g - y.exp() * total);
        }
        Ok(vec![Some(Tensor::from_parts(dx, y.shape()))])
    }))
}

/// Mean cross-entropy of `logits[n,k]` against integer `labels` (each `< k`).
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let _prof = super::prof::span("cross_entropy", false);
    let [n, k] = *logits.shape() else {
        return Err(Error::shape(
            "cross_entropy",
            "expects logits [batch, classes]",
            &[logits.shape()],
        ));
    };
    if n == 0 || labels.len() != n {
        return Err(Error::shape(
            "cross_entropy",
            format!("{} labels for {n} rows of logits", labels.len()),
            &[logits.shape()],
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(Error::InvalidArgument(format!(
            "cross_entropy: label {bad} is out of range for {k} classes"
        )));
    }
    let mut logp = vec![0.0; n * k];
    let mut total = 0.0f64;
    for ((o, r), &l) in logp.chunks_mut(k).zip(logits.data().chunks(k)).zip(labels) {
        log_softmax_row(r, o);
        total -= o[l] as f64;
    }
    let labels = labels.to_vec();
    let loss = Tensor::scalar((total / n as f64) as f32);
    Ok(tape::record(
        "cross_entropy",
        loss,
        &[logits],
        move |g, _| {
            // d/dlogits = (softmax − onehot) · g / n
            let s = g.item()? / n as f32;
            let mut dx: Vec<f32> = logp.iter().map(|&lp| lp.exp() * s).collect();
            for (row, &l) in dx.chunks_mut(k).zip(&labels) {
                row[l] -= s;
            }
            Ok(vec![Some(Tensor::from_parts(dx, &[n, k]))])
        },
    ))
}
