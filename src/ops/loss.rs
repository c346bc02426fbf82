//! Softmax, log-softmax (over the last dimension) and cross-entropy with integer labels.
//! On the GPU (kernels/loss.cu) one warp handles one row.

use super::{operands, Operands};
use crate::device::cuda::{self, kernels, Arg, GpuBuf, Launch};
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
    let xd = match operands("softmax", [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return softmax_gpu(x, xb, k, false),
    };
    let mut out = vec![0.0; x.numel()];
    for (o, r) in out.chunks_mut(k).zip(xd.chunks(k)) {
        log_softmax_row(r, o);
        o.iter_mut().for_each(|v| *v = v.exp());
    }
    let out = Tensor::from_parts(out, x.shape());
    let y = out.clone();
    Ok(tape::record("softmax", out, &[x], move |g, _| {
        // dx = y ⊙ (g − Σ g·y)
        let [gd, yd] = operands("softmax", [g, &y])?.cpu("softmax")?;
        let mut dx = vec![0.0; y.numel()];
        for ((d, gr), yr) in dx.chunks_mut(k).zip(gd.chunks(k)).zip(yd.chunks(k)) {
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
    let xd = match operands("log_softmax", [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return softmax_gpu(x, xb, k, true),
    };
    let mut out = vec![0.0; x.numel()];
    for (o, r) in out.chunks_mut(k).zip(xd.chunks(k)) {
        log_softmax_row(r, o);
    }
    let out = Tensor::from_parts(out, x.shape());
    let y = out.clone();
    Ok(tape::record("log_softmax", out, &[x], move |g, _| {
        // dx = g − softmax · Σ g
        let [gd, yd] = operands("log_softmax", [g, &y])?.cpu("log_softmax")?;
        let mut dx = vec![0.0; y.numel()];
        for ((d, gr), yr) in dx.chunks_mut(k).zip(gd.chunks(k)).zip(yd.chunks(k)) {
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
    let xd = match operands("cross_entropy", [logits])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return cross_entropy_gpu(logits, xb, labels, n, k),
    };
    let mut logp = vec![0.0; n * k];
    let mut total = 0.0f64;
    for ((o, r), &l) in logp.chunks_mut(k).zip(xd.chunks(k)).zip(labels) {
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
            let [gd] = operands("cross_entropy", [g])?.cpu("cross_entropy")?;
            let s = gd[0] / n as f32;
            let mut dx: Vec<f32> = logp.iter().map(|&lp| lp.exp() * s).collect();
            for (row, &l) in dx.chunks_mut(k).zip(&labels) {
                row[l] -= s;
            }
            Ok(vec![Some(Tensor::from_parts(dx, &[n, k]))])
        },
    ))
}

/// Rows per 256-thread block of the warp-per-row kernels (`LOSS_ROWS_PER_BLOCK` in loss.cu).
const ROWS_PER_BLOCK: usize = cuda::BLOCK as usize / 32;

/// Most blocks of `cross_entropy_fwd_f32`, whose per-block partial losses one block then adds.
const LOSS_BLOCKS: usize = 1024;

/// Blocks for a warp-per-row kernel over `rows` rows, at most `cap` (rows beyond are strided).
fn row_blocks(rows: usize, cap: usize) -> Launch {
    Launch::rows(rows.div_ceil(ROWS_PER_BLOCK).clamp(1, cap))
}

/// Softmax (or log-softmax when `log`) of a CUDA tensor over its last dimension `k`, with the
/// matching backward (`softmax_bwd_f32` / `log_softmax_bwd_f32`).
fn softmax_gpu(x: &Tensor, xb: &GpuBuf, k: usize, log: bool) -> Result<Tensor> {
    let (op, bwd) = if log {
        ("log_softmax", kernels::LOG_SOFTMAX_BWD)
    } else {
        ("softmax", kernels::SOFTMAX_BWD)
    };
    let rows = x.numel() / k;
    let launch = row_blocks(rows, 65_535 * 8);
    let gpu = cuda::gpu()?;
    let out = gpu.alloc(x.numel())?;
    if rows > 0 {
        let args = [
            xb.arg(),
            out.arg(),
            Arg::int("rows", rows)?,
            Arg::int("k", k)?,
            Arg::flag(log),
        ];
        gpu.launch(kernels::SOFTMAX_FWD, launch, &args)?;
    }
    let out = Tensor::from_gpu(out, x.shape());
    let y = out.detach();
    Ok(tape::record(op, out, &[x], move |g, _| {
        let gpu = cuda::gpu()?;
        let dx = gpu.alloc(y.numel())?;
        if rows > 0 {
            let [gb, yb] = operands(op, [g, &y])?.cuda(op)?;
            let args = [
                gb.arg(),
                yb.arg(),
                dx.arg(),
                Arg::int("rows", rows)?,
                Arg::int("k", k)?,
            ];
            gpu.launch(bwd, launch, &args)?;
        }
        Ok(vec![Some(Tensor::from_gpu(dx, y.shape()))])
    }))
}

/// [`cross_entropy`] of CUDA logits `x` `[n, k]` (checked). The labels go to the device once,
/// as int32 bits; the loss stays there (per-block partials, then `sum_final_f32`), and so does
/// the upstream gradient the backward scales by.
fn cross_entropy_gpu(
    logits: &Tensor,
    x: &GpuBuf,
    labels: &[usize],
    n: usize,
    k: usize,
) -> Result<Tensor> {
    let gpu = cuda::gpu()?;
    let bits: Vec<f32> = labels.iter().map(|&l| f32::from_bits(l as u32)).collect();
    let labels = gpu.upload(&bits)?;
    let logp = gpu.alloc(n * k)?;
    let launch = row_blocks(n, LOSS_BLOCKS);
    let partial = gpu.alloc(launch.grid.0 as usize)?;
    let args = [
        x.arg(),
        labels.arg(),
        logp.arg(),
        partial.arg(),
        Arg::int("n", n)?,
        Arg::int("k", k)?,
    ];
    gpu.launch(kernels::CROSS_ENTROPY_FWD, launch, &args)?;
    let loss = gpu.alloc(1)?;
    let inv_n = 1.0 / n as f32;
    let args = [
        partial.arg(),
        Arg::int("blocks", launch.grid.0)?,
        Arg::F32(inv_n),
        loss.arg(),
    ];
    gpu.launch(kernels::SUM_FINAL, Launch::rows(1), &args)?;
    let loss = Tensor::from_gpu(loss, &[]);
    Ok(tape::record(
        "cross_entropy",
        loss,
        &[logits],
        move |g, _| {
            let gpu = cuda::gpu()?;
            let dx = gpu.alloc(n * k)?;
            let [gb] = operands("cross_entropy", [g])?.cuda("cross_entropy")?;
            let args = [
                logp.arg(),
                labels.arg(),
                gb.arg(),
                Arg::F32(inv_n),
                dx.arg(),
                Arg::int("n", n)?,
                Arg::int("k", k)?,
            ];
            gpu.launch(kernels::CROSS_ENTROPY_BWD, Launch::elems(n * k), &args)?;
            Ok(vec![Some(Tensor::from_gpu(dx, &[n, k]))])
        },
    ))
}
