//! The CUDA path of [`super::batch_norm2d`] (kernels/norm.cu), with the CPU's semantics: batch
//! statistics in two deterministic passes (mean, then centred squares, accumulated in double),
//! the running statistics moved on the device (new buffers, so a tensor sharing the old ones
//! keeps them, as the CPU's copy on write does), and a backward from the per-channel sums
//! Σ dy and Σ dy·x̂.

use super::{BatchNormCfg, Layout, OP};
use crate::device::cuda::{self, kernels, Arg, GpuBuf, Launch};
use crate::error::{Error, Result};
use crate::ops::operands;
use crate::tape;
use crate::tensor::Tensor;

/// Each block of a statistics pass reduces at least this many elements of its channel.
const PER_BLOCK: usize = 2048;

/// Most blocks per channel in a statistics pass (the partials are added by one thread).
const MAX_SPLITS: usize = 64;

/// Blocks per channel for a reduction over `m` elements.
fn splits(m: usize) -> usize {
    m.div_ceil(PER_BLOCK).clamp(1, MAX_SPLITS)
}

/// The launch of a `*_partial` kernel: `splits` blocks for each channel (channels beyond the
/// grid's y limit are strided over).
fn partial_launch(splits: usize, channels: usize) -> Launch {
    Launch {
        grid: (splits as u32, channels.clamp(1, 65_535) as u32, 1),
        block: (cuda::BLOCK, 1, 1),
        shared_bytes: 0,
    }
}

/// The launch of an elementwise pass: a few elements per thread, so that each thread's one
/// channel computation (a division) is amortised over several elements.
fn flat_launch(total: usize) -> Launch {
    Launch::rows(total.div_ceil(4 * cuda::BLOCK as usize).clamp(1, 2048))
}

/// A per-channel input's buffer (null for an absent γ or β).
fn ptr(t: Option<&Tensor>) -> Result<Arg> {
    match t {
        None => Ok(Arg::Ptr(0)),
        Some(t) => {
            let [b] = operands(OP, [t])?.cuda(OP)?;
            Ok(b.arg())
        }
    }
}

/// [`super::batch_norm2d`] for a CUDA `x` (buffer `xb`); the caller has checked the shapes, the
/// settings, and that every tensor is on the GPU.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_norm2d(
    x: &Tensor,
    xb: &GpuBuf,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    cfg: BatchNormCfg,
    lay: Layout,
) -> Result<Tensor> {
    let (c, hw, m, total) = (lay.c, lay.hw, lay.m(), x.numel());
    if total > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            "more than 2^31 elements for the CUDA kernels",
            &[x.shape()],
        ));
    }
    if cfg.training && m <= 1 {
        return Err(Error::shape(
            OP,
            "training needs more than one value per channel (N·H·W > 1)",
            &[x.shape()],
        ));
    }
    let gpu = cuda::gpu()?;
    let (mean, invstd) = (gpu.alloc(c)?, gpu.alloc(c)?);
    let dims = [
        Arg::int("channels", c)?,
        Arg::int("hw", hw)?,
        Arg::int("m", m)?,
    ];
    let s = splits(m);
    let [rm, rv] = operands(OP, [&*running_mean, &*running_var])?
        .cuda(OP)?
        .map(GpuBuf::arg);
    if cfg.training && c > 0 && total > 0 {
        let (psum, psq) = (gpu.alloc(2 * c * s)?, gpu.alloc(2 * c * s)?);
        for (prev, out) in [(Arg::Ptr(0), &psum), (psum.arg(), &psq)] {
            let mut args = vec![xb.arg(), prev, out.arg()];
            args.extend(dims);
            args.push(Arg::int("splits", s)?);
            gpu.launch(kernels::BATCH_NORM_PARTIAL, partial_launch(s, c), &args)?;
        }
        let (rm_new, rv_new) = (gpu.alloc(c)?, gpu.alloc(c)?);
        stats(
            &psum.arg(),
            &psq.arg(),
            s,
            m,
            cfg,
            [rm, rv],
            &mean,
            &invstd,
            [rm_new.arg(), rv_new.arg()],
            c,
        )?;
        running_mean.set_data(&Tensor::from_gpu(rm_new, &[c]))?;
        running_var.set_data(&Tensor::from_gpu(rv_new, &[c]))?;
    } else if c > 0 {
        let null = Arg::Ptr(0);
        stats(
            &null,
            &null,
            0,
            m,
            cfg,
            [rm, rv],
            &mean,
            &invstd,
            [null, null],
            c,
        )?;
    }

    let y = gpu.alloc(total)?;
    if total > 0 {
        let args = [
            xb.arg(),
            mean.arg(),
            invstd.arg(),
            ptr(gamma)?,
            ptr(beta)?,
            y.arg(),
            Arg::int("channels", c)?,
            Arg::int("hw", hw)?,
            Arg::int("n", total)?,
        ];
        gpu.launch(kernels::BATCH_NORM_FWD, flat_launch(total), &args)?;
    }

    // Inputs are x, then gamma and beta where given, as on the CPU.
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    let gi = gamma.map(|_| 1);
    let bi = beta.map(|_| inputs.len() - 1);
    let saved = x.detach();
    let g_saved = gamma.map(Tensor::detach);
    let training = Arg::flag(cfg.training);
    let out = Tensor::from_gpu(y, x.shape());
    Ok(tape::record(OP, out, &inputs, move |dy, needs| {
        let gpu = cuda::gpu()?;
        let [dyb, xb] = operands(OP, [dy, &saved])?.cuda(OP)?;
        // Every element is written below unless the batch is empty: then the sums are 0.
        let per_channel = || {
            if total > 0 {
                gpu.alloc(c)
            } else {
                gpu.zeros(c)
            }
        };
        let (dgamma, dbeta) = (per_channel()?, per_channel()?);
        let coef = gpu.alloc(3 * c)?;
        let dx = gpu.alloc(total)?;
        if total > 0 && c > 0 {
            let partial = gpu.alloc(4 * c * s)?;
            let mut args = vec![dyb.arg(), xb.arg(), mean.arg(), partial.arg()];
            args.extend(dims);
            args.push(Arg::int("splits", s)?);
            gpu.launch(kernels::BATCH_NORM_BWD_PARTIAL, partial_launch(s, c), &args)?;
            let args = [
                partial.arg(),
                Arg::int("splits", s)?,
                Arg::int("m", m)?,
                training,
                invstd.arg(),
                ptr(g_saved.as_ref())?,
                dgamma.arg(),
                dbeta.arg(),
                coef.arg(),
                Arg::int("channels", c)?,
            ];
            gpu.launch(kernels::BATCH_NORM_BWD_COEF, Launch::elems(c), &args)?;
            let args = [
                dyb.arg(),
                xb.arg(),
                mean.arg(),
                invstd.arg(),
                coef.arg(),
                training,
                dx.arg(),
                Arg::int("channels", c)?,
                Arg::int("hw", hw)?,
                Arg::int("n", total)?,
            ];
            gpu.launch(kernels::BATCH_NORM_BWD_DX, flat_launch(total), &args)?;
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; needs.len()];
        if needs[0] {
            grads[0] = Some(Tensor::from_gpu(dx, saved.shape()));
        }
        if let Some(i) = gi.filter(|&i| needs[i]) {
            grads[i] = Some(Tensor::from_gpu(dgamma, &[c]));
        }
        if let Some(i) = bi.filter(|&i| needs[i]) {
            grads[i] = Some(Tensor::from_gpu(dbeta, &[c]));
        }
        Ok(grads)
    }))
}

/// Launches `batch_norm_stats_f32`: mean and 1/std from the partials (`splits` > 0, training)
/// or from the running statistics (evaluation), and in training the new running statistics.
#[allow(clippy::too_many_arguments)]
fn stats(
    psum: &Arg,
    psq: &Arg,
    splits: usize,
    m: usize,
    cfg: BatchNormCfg,
    running: [Arg; 2],
    mean: &GpuBuf,
    invstd: &GpuBuf,
    running_new: [Arg; 2],
    c: usize,
) -> Result<()> {
    let args = [
        *psum,
        *psq,
        Arg::int("splits", splits)?,
        Arg::int("m", m)?,
        Arg::F32(cfg.momentum),
        Arg::F32(cfg.eps),
        running[0],
        running[1],
        mean.arg(),
        invstd.arg(),
        running_new[0],
        running_new[1],
        Arg::int("channels", c)?,
    ];
    cuda::gpu()?.launch(kernels::BATCH_NORM_STATS, Launch::elems(c), &args)
}
