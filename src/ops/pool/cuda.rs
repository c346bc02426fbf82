//! The CUDA path of the pooling ops (kernels/pool.cu), over the same [`Window`] geometry and
//! with the same semantics as the CPU kernels: max keeps its argmax for the backward, average
//! divides by the in-bounds count, and both backward passes gather (one thread per input
//! element), so gradients are deterministic.

use super::Window;
use crate::device::cuda::{self, kernels, Arg, GpuBuf, Kernel, Launch};
use crate::error::{Error, Result};
use crate::ops::operands;
use crate::tape;
use crate::tensor::Tensor;

/// The upstream gradient's device buffer; a gradient on another device is an error.
fn grad_buf<'a>(op: &'static str, g: &'a Tensor) -> Result<&'a GpuBuf> {
    let [b] = operands(op, [g])?.cuda(op)?;
    Ok(b)
}

/// The kernels index with `int`: `n` elements (the larger of input and output) must fit.
fn fits_int(op: &'static str, x: &Tensor, n: usize) -> Result<()> {
    if n.max(x.numel()) > i32::MAX as usize {
        return Err(Error::shape(
            op,
            "more than 2^31 elements for the CUDA kernels",
            &[x.shape()],
        ));
    }
    Ok(())
}

/// `h, w, oh, ow, s, lo, hi`: the kernels' window arguments (output `o` covers inputs
/// `[o·s − lo, o·s + hi)`), with padding, kernel and stride clamped so that they fit in an `int`
/// yet give every output the same in-bounds window (a window reaching past the plane on either
/// side is clipped to it anyway).
fn geometry(win: &Window) -> Result<[Arg; 7]> {
    let len = win.h.max(win.w);
    let stride = win.stride.min(len + 1);
    let lo = win.padding.min((win.oh.max(win.ow) - 1) * stride);
    let hi = (win.kernel - win.padding).min(len);
    let [h, w, oh, ow] = [win.h, win.w, win.oh, win.ow];
    Ok([
        Arg::int("h", h)?,
        Arg::int("w", w)?,
        Arg::int("oh", oh)?,
        Arg::int("ow", ow)?,
        Arg::int("stride", stride)?,
        Arg::int("padding", lo)?,
        Arg::int("kernel", hi)?,
    ])
}

/// Launches `kernel` over `n` threads with `bufs`, then the geometry, then `n`.
fn launch(kernel: Kernel, bufs: &[&GpuBuf], win: &Window, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let mut args: Vec<Arg> = bufs.iter().map(|b| b.arg()).collect();
    args.extend(geometry(win)?);
    args.push(Arg::int("n", n)?);
    cuda::gpu()?.launch(kernel, Launch::elems(n), &args)
}

/// [`super::max_pool2d`] on the GPU.
pub(super) fn max_pool2d(x: &Tensor, xb: &GpuBuf, planes: usize, win: Window) -> Result<Tensor> {
    let (n_in, n_out) = (planes * win.in_len(), planes * win.out_len());
    fits_int("max_pool2d", x, n_out)?;
    let gpu = cuda::gpu()?;
    let (y, arg) = (gpu.alloc(n_out)?, gpu.alloc(n_out)?);
    launch(kernels::MAX_POOL_FWD, &[xb, &y, &arg], &win, n_out)?;
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_gpu(y, &win.out_shape(x));
    Ok(tape::record("max_pool2d", out, &[x], move |g, _| {
        let dx = cuda::gpu()?.alloc(n_in)?;
        launch(
            kernels::MAX_POOL_BWD,
            &[grad_buf("max_pool2d", g)?, &arg, &dx],
            &win,
            n_in,
        )?;
        Ok(vec![Some(Tensor::from_gpu(dx, &in_shape))])
    }))
}

/// [`super::avg_pool2d`] on the GPU.
pub(super) fn avg_pool2d(x: &Tensor, xb: &GpuBuf, planes: usize, win: Window) -> Result<Tensor> {
    let (n_in, n_out) = (planes * win.in_len(), planes * win.out_len());
    fits_int("avg_pool2d", x, n_out)?;
    let gpu = cuda::gpu()?;
    let y = gpu.alloc(n_out)?;
    launch(kernels::AVG_POOL_FWD, &[xb, &y], &win, n_out)?;
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_gpu(y, &win.out_shape(x));
    Ok(tape::record("avg_pool2d", out, &[x], move |g, _| {
        let dx = cuda::gpu()?.alloc(n_in)?;
        launch(
            kernels::AVG_POOL_BWD,
            &[grad_buf("avg_pool2d", g)?, &dx],
            &win,
            n_in,
        )?;
        Ok(vec![Some(Tensor::from_gpu(dx, &in_shape))])
    }))
}

/// [`super::global_avg_pool`] on the GPU: `planes` planes of `hw` elements.
pub(super) fn global_avg_pool(x: &Tensor, xb: &GpuBuf, planes: usize, hw: usize) -> Result<Tensor> {
    fits_int("global_avg_pool", x, 0)?;
    let gpu = cuda::gpu()?;
    let y = gpu.alloc(planes)?;
    // One warp per plane (no launch for an empty batch).
    let warps_per_block = cuda::BLOCK as usize / 32;
    let blocks = planes.div_ceil(warps_per_block).min(65_535);
    let args = [
        xb.arg(),
        y.arg(),
        Arg::int("hw", hw)?,
        Arg::int("planes", planes)?,
    ];
    if planes > 0 {
        gpu.launch(kernels::GLOBAL_AVG_POOL_FWD, Launch::rows(blocks), &args)?;
    }
    let in_shape = x.shape().to_vec();
    let s = x.shape();
    let out = Tensor::from_gpu(y, &[s[0], s[1]]);
    Ok(tape::record("global_avg_pool", out, &[x], move |g, _| {
        let gpu = cuda::gpu()?;
        let n = planes * hw;
        let dx = gpu.alloc(n)?;
        let g = grad_buf("global_avg_pool", g)?;
        let args = [g.arg(), dx.arg(), Arg::int("hw", hw)?, Arg::int("n", n)?];
        if n > 0 {
            gpu.launch(kernels::GLOBAL_AVG_POOL_BWD, Launch::elems(n), &args)?;
        }
        Ok(vec![Some(Tensor::from_gpu(dx, &in_shape))])
    }))
}
