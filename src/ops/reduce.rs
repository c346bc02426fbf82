//! Reductions to a scalar: sum and mean (accumulated in f64 on the CPU so large tensors keep
//! precision; a two-pass tree on the GPU).

use super::Operands;
use crate::device::cuda::{self, kernels, Arg, GpuBuf, Launch};
use crate::device::Storage;
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

/// Blocks of the first pass of a device reduction: enough to fill the GPU, few enough for one
/// block to add up.
const REDUCE_BLOCKS: usize = 1024;

/// `scale · Σ x` (or `Σ x²` when `square`) as a one-element device buffer.
pub(crate) fn gpu_sum(x: &GpuBuf, square: bool, scale: f32) -> Result<GpuBuf> {
    let gpu = cuda::gpu()?;
    let n = x.len();
    let blocks = n.div_ceil(cuda::BLOCK as usize).clamp(1, REDUCE_BLOCKS);
    let partial = gpu.alloc(blocks)?;
    let args = [x.arg(), Arg::flag(square), partial.arg(), Arg::int("n", n)?];
    gpu.launch(kernels::SUM_PARTIAL, Launch::rows(blocks), &args)?;
    let out = gpu.alloc(1)?;
    let args = [
        partial.arg(),
        Arg::int("blocks", blocks)?,
        Arg::F32(scale),
        out.arg(),
    ];
    gpu.launch(kernels::SUM_FINAL, Launch::rows(1), &args)?;
    Ok(out)
}

/// `Σ ‖t‖²` over all tensors (outside the graph), accumulated in f64 on the CPU; on the GPU
/// the per-tensor sums stay on the device and one value comes back.
pub fn squared_norm(ts: &[&Tensor]) -> Result<f64> {
    let mut host = 0.0f64;
    let mut device: Option<GpuBuf> = None;
    for t in ts {
        match t.storage() {
            Storage::Cpu(a) => {
                host += a
                    .as_slice()
                    .iter()
                    .map(|&v| (v as f64) * (v as f64))
                    .sum::<f64>()
            }
            Storage::Cuda(b) => {
                let s = gpu_sum(b, true, 1.0)?;
                match &device {
                    None => device = Some(s),
                    Some(acc) => {
                        let args = [Arg::F32(1.0), s.arg(), acc.arg(), Arg::I32(1)];
                        cuda::gpu()?.launch(kernels::AXPY, Launch::elems(1), &args)?;
                    }
                }
            }
        }
    }
    if let Some(acc) = device {
        host += cuda::gpu()?.download(&acc)?[0] as f64;
    }
    Ok(host)
}

/// `scale · Σ x` on `x`'s device, as a scalar tensor.
fn scaled_sum(op: &'static str, x: &Tensor, scale: f64) -> Result<Tensor> {
    match super::operands(op, [x])? {
        Operands::Cpu([v]) => {
            let s: f64 = v.iter().map(|&v| v as f64).sum();
            Ok(Tensor::scalar((s * scale) as f32))
        }
        Operands::Cuda([b]) => Ok(Tensor::from_gpu(gpu_sum(b, false, scale as f32)?, &[])),
    }
}

/// `s · g` broadcast to `shape`, where `g` is a scalar: the backward of sum and mean.
fn broadcast(op: &'static str, g: &Tensor, s: f32, shape: &[usize]) -> Result<Tensor> {
    match super::operands(op, [g])? {
        Operands::Cpu(_) => Ok(Tensor::full(shape, s * g.item()?)),
        Operands::Cuda([b]) => {
            let gpu = cuda::gpu()?;
            let n = shape.iter().product();
            let out = gpu.alloc(n)?;
            let args = [b.arg(), Arg::F32(s), out.arg(), Arg::int("n", n)?];
            gpu.launch(kernels::BROADCAST, Launch::elems(n), &args)?;
            Ok(Tensor::from_gpu(out, shape))
        }
    }
}

/// Sum of all elements, as a scalar (shape `[]`).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("sum", false);
    let out = scaled_sum("sum", x, 1.0)?;
    let shape = x.shape().to_vec();
    Ok(tape::record("sum", out, &[x], move |g, _| {
        Ok(vec![Some(broadcast("sum", g, 1.0, &shape)?)])
    }))
}

/// Mean of all elements, as a scalar (shape `[]`).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mean", false);
    let n = x.numel();
    if n == 0 {
        return Err(Error::shape(
            "mean",
            "mean of an empty tensor",
            &[x.shape()],
        ));
    }
    let out = scaled_sum("mean", x, 1.0 / n as f64)?;
    let shape = x.shape().to_vec();
    Ok(tape::record("mean", out, &[x], move |g, _| {
        Ok(vec![Some(broadcast("mean", g, 1.0 / n as f32, &shape)?)])
    }))
}
