//! The CUDA path of [`conv2d`](super::conv2d) and its backward (kernels/conv.cu).
//!
//! Dense and grouped convs are GEMMs over a column matrix that holds every sample side by side,
//! `col` [K, N·P] with `K = Cin·kh·kw`, `P = OH·OW`: one strided batched cuBLAS call over the
//! groups per product, so each GEMM is as wide as the whole batch.
//!
//! ```text
//! forward  yt_g [Cout/g, N·P] = W_g · col_g              y = NCHW(yt) + bias (one kernel)
//! dW       dW_g               = dyt_g · col_gᵀ            dyt = dy as [Cout, N·P]
//! dx       dcol_g             = W_gᵀ · dyt_g              dx = col2im(dcol), a gather
//! ```
//!
//! A 1×1 stride-1 unpadded conv needs no unfolding: its forward and dx are GEMMs batched over
//! the samples straight on NCHW, and only dW uses `col` = x as [Cin, N·P] (x itself for one
//! sample). Depthwise convs run direct kernels. Nothing here uses float atomics, so every
//! result is the same from run to run.

use super::Geom;
use crate::device::cuda::{self, kernels, Arg, Gemm, Gpu, GpuBuf, Kernel, Launch};
use crate::error::{Error, Result};

/// Blocks that keep an H200 busy (132 SMs, 8 resident blocks of 256 each): the depthwise weight
/// gradient splits each channel's sums into enough pieces to launch about this many.
const DW_TARGET_BLOCKS: usize = 1024;
/// The least number of outputs one block of the depthwise weight gradient goes through.
const DW_MIN_CHUNK: usize = 1024;
/// Taps one block of the depthwise weight gradient sums at once (`DW_TAPS` in kernels/conv.cu).
const DW_TAPS: usize = 25;

/// The gradients asked for: x, w, bias.
pub(super) type Grads = (Option<GpuBuf>, Option<GpuBuf>, Option<GpuBuf>);

/// One operand of [`batched_gemm`]: a buffer, the element where matrix 0 starts, and the
/// elements from one matrix to the next.
type Operand<'a> = (&'a GpuBuf, usize, usize);

/// `int` arguments (`what` names them in the error for one too large).
fn i32s(what: &'static str, v: &[usize]) -> Result<Vec<Arg>> {
    v.iter().map(|&v| Arg::int(what, v)).collect()
}

/// `n, cin, h, w, kh, kw, oh, ow, s, p, d`: the geometry arguments of the dense kernels.
fn dense_args(g: &Geom) -> Result<Vec<Arg>> {
    i32s(
        "conv geometry",
        &[
            g.n, g.cin, g.h, g.w, g.kh, g.kw, g.oh, g.ow, g.stride, g.pad, g.dil,
        ],
    )
}

/// `n, cin, h, w, m, kh, kw, oh, ow, s, p, d`: those of the depthwise kernels (`m = Cout/Cin`).
fn depthwise_args(g: &Geom) -> Result<Vec<Arg>> {
    let m = g.cout / g.cin;
    i32s(
        "conv geometry",
        &[
            g.n, g.cin, g.h, g.w, m, g.kh, g.kw, g.oh, g.ow, g.stride, g.pad, g.dil,
        ],
    )
}

fn pointwise(g: &Geom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

/// The kernels index with 32-bit integers: every buffer they touch must be shorter than 2^31.
fn check_size(g: &Geom) -> Result<()> {
    let col = g.cin * g.kh * g.kw * g.n * g.ohw();
    let largest = col.max(g.n * g.cin * g.hw()).max(g.n * g.cout * g.ohw());
    if largest > i32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "conv2d on the GPU: {largest} elements in one buffer (x, y or the unfolded \
             columns) exceed 2^31; use a smaller batch"
        )));
    }
    Ok(())
}

fn launch(gpu: &Gpu, kernel: Kernel, cfg: Launch, args: &[Arg]) -> Result<()> {
    gpu.launch(kernel, cfg, args)
}

/// Row-major `C_i[m,n] = op(A_i) · op(B_i) + beta · C_i` for i < batch (see [`Gemm::row_major`]
/// for `ta`, `tb`).
fn batched_gemm(
    gpu: &Gpu,
    batch: usize,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    (a, b, c): (Operand, Operand, Operand),
    beta: f32,
) -> Result<()> {
    let mut gm = Gemm::row_major(ta, tb, m, n, k, a.0, b.0, c.0, beta);
    // row_major computes Cᵀ = Bᵀ·Aᵀ: cuBLAS's first operand is B.
    (gm.a, gm.stride_a) = (b.0.ptr_at(b.1), b.2);
    (gm.b, gm.stride_b) = (a.0.ptr_at(a.1), a.2);
    (gm.c, gm.stride_c) = (c.0.ptr_at(c.1), c.2);
    gm.batch = batch;
    gpu.gemm(&gm)
}

/// NCHW `[n, c, P]` as `[c, n·P]`, or `None` when that is the same layout (one sample).
fn to_cnhw(gpu: &Gpu, t: &GpuBuf, n: usize, c: usize, p: usize) -> Result<Option<GpuBuf>> {
    if n == 1 {
        return Ok(None);
    }
    let out = gpu.alloc(t.len())?;
    let mut args = vec![t.arg(), out.arg()];
    args.extend(i32s("conv sizes", &[n, c, p])?);
    launch(gpu, kernels::CONV_CNHW_BWD, Launch::elems(t.len()), &args)?;
    Ok(Some(out))
}

/// The column matrix of x, or `None` when x itself is it (a 1×1 conv of one sample).
fn columns(gpu: &Gpu, g: &Geom, x: &GpuBuf) -> Result<Option<GpuBuf>> {
    if pointwise(g) {
        return to_cnhw(gpu, x, g.n, g.cin, g.hw());
    }
    let col = gpu.alloc(g.cin * g.kh * g.kw * g.n * g.ohw())?;
    let mut args = vec![x.arg(), col.arg()];
    args.extend(dense_args(g)?);
    launch(gpu, kernels::CONV_IM2COL, Launch::elems(col.len()), &args)?;
    Ok(Some(col))
}

/// `(Cout/groups, Cin/groups·kh·kw, N·P)`: the GEMM sizes of one group.
fn gemm_dims(g: &Geom) -> (usize, usize, usize) {
    let k = g.cin / g.groups * g.kh * g.kw;
    (g.cout / g.groups, k, g.n * g.ohw())
}

/// The output [N, Cout, OH, OW] of a conv whose operands are all on the GPU.
pub(super) fn forward(g: &Geom, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>) -> Result<GpuBuf> {
    check_size(g)?;
    let gpu = cuda::gpu()?;
    let has_bias = Arg::flag(bias.is_some());
    let bias_arg = bias.map_or(Arg::Ptr(0), GpuBuf::arg);
    let y = gpu.alloc(g.n * g.cout * g.ohw())?;
    if g.depthwise() {
        let mut args = vec![x.arg(), w.arg(), bias_arg, has_bias, y.arg()];
        args.extend(depthwise_args(g)?);
        launch(gpu, kernels::DWCONV_FWD, Launch::elems(y.len()), &args)?;
        return Ok(y);
    }
    let (cog, k, np) = gemm_dims(g);
    if pointwise(g) {
        // y_b = W_g · x_b per group, batched over the samples b, onto the preloaded bias.
        let beta = if bias.is_some() { 1.0 } else { 0.0 };
        if bias.is_some() {
            let mut args = vec![bias_arg, y.arg()];
            args.extend(i32s("conv sizes", &[g.n, g.cout, g.ohw()])?);
            launch(
                gpu,
                kernels::CONV_BIAS_FILL_FWD,
                Launch::elems(y.len()),
                &args,
            )?;
        }
        let p = g.ohw();
        for gi in 0..g.groups {
            let wg = (w, gi * cog * k, 0);
            let xg = (x, gi * k * p, g.cin * p);
            let yg = (&y, gi * cog * p, g.cout * p);
            batched_gemm(gpu, g.n, (false, false), (cog, p, k), (wg, xg, yg), beta)?;
        }
        return Ok(y);
    }
    let col = columns(gpu, g, x)?.expect("a conv with taps unfolds x");
    // With one sample and no bias the GEMM's [Cout, P] already is NCHW.
    let direct = g.n == 1 && bias.is_none();
    let (yt, y) = if direct {
        (y, None)
    } else {
        (gpu.alloc(g.cout * np)?, Some(y))
    };
    let operands = ((w, 0, cog * k), (&col, 0, k * np), (&yt, 0, cog * np));
    batched_gemm(gpu, g.groups, (false, false), (cog, np, k), operands, 0.0)?;
    let Some(y) = y else {
        return Ok(yt);
    };
    let mut args = vec![yt.arg(), bias_arg, has_bias, y.arg()];
    args.extend(i32s("conv sizes", &[g.n, g.cout, g.ohw()])?);
    launch(gpu, kernels::CONV_NCHW_FWD, Launch::elems(y.len()), &args)?;
    Ok(y)
}

/// The gradients flagged in `needs` (x, w, bias) of a conv whose operands are all on the GPU.
pub(super) fn backward(
    g: &Geom,
    x: &GpuBuf,
    w: &GpuBuf,
    dy: &GpuBuf,
    needs: [bool; 3],
) -> Result<Grads> {
    check_size(g)?;
    let gpu = cuda::gpu()?;
    let db = if needs[2] {
        let db = gpu.alloc(g.cout)?;
        let mut args = vec![dy.arg(), db.arg()];
        args.extend(i32s("conv sizes", &[g.n, g.cout, g.ohw()])?);
        launch(gpu, kernels::CONV_BIAS_BWD, Launch::rows(g.cout), &args)?;
        Some(db)
    } else {
        None
    };
    let (dx, dw) = if g.depthwise() {
        depthwise_backward(gpu, g, x, w, dy, needs)?
    } else {
        dense_backward(gpu, g, x, w, dy, needs)?
    };
    Ok((dx, dw, db))
}

fn dense_backward(
    gpu: &Gpu,
    g: &Geom,
    x: &GpuBuf,
    w: &GpuBuf,
    dy: &GpuBuf,
    needs: [bool; 3],
) -> Result<(Option<GpuBuf>, Option<GpuBuf>)> {
    let (cog, k, np) = gemm_dims(g);
    // A 1×1 conv's dx works on NCHW dy; everything else on dy as [Cout, N·P].
    let owned_dyt = if needs[1] || !pointwise(g) {
        to_cnhw(gpu, dy, g.n, g.cout, g.ohw())?
    } else {
        None
    };
    let dyt = owned_dyt.as_ref().unwrap_or(dy);
    let dw = if needs[1] {
        let owned = columns(gpu, g, x)?;
        let col = owned.as_ref().unwrap_or(x);
        let dw = gpu.alloc(w.len())?;
        let operands = ((dyt, 0, cog * np), (col, 0, k * np), (&dw, 0, cog * k));
        batched_gemm(gpu, g.groups, (false, true), (cog, k, np), operands, 0.0)?;
        Some(dw)
    } else {
        None
    };
    if !needs[0] {
        return Ok((None, dw));
    }
    let dx = gpu.alloc(x.len())?;
    if pointwise(g) {
        // dx_b = W_gᵀ · dy_b per group, batched over the samples.
        let p = g.ohw();
        for gi in 0..g.groups {
            let wg = (w, gi * cog * k, 0);
            let dyg = (dy, gi * cog * p, g.cout * p);
            let dxg = (&dx, gi * k * p, g.cin * p);
            batched_gemm(gpu, g.n, (true, false), (k, p, cog), (wg, dyg, dxg), 0.0)?;
        }
        return Ok((Some(dx), dw));
    }
    let dcol = gpu.alloc(g.groups * k * np)?;
    let operands = ((w, 0, cog * k), (dyt, 0, cog * np), (&dcol, 0, k * np));
    batched_gemm(gpu, g.groups, (true, false), (k, np, cog), operands, 0.0)?;
    let mut args = vec![dcol.arg(), dx.arg()];
    args.extend(dense_args(g)?);
    launch(
        gpu,
        kernels::CONV_COL2IM_BWD,
        Launch::elems(dx.len()),
        &args,
    )?;
    Ok((Some(dx), dw))
}

fn depthwise_backward(
    gpu: &Gpu,
    g: &Geom,
    x: &GpuBuf,
    w: &GpuBuf,
    dy: &GpuBuf,
    needs: [bool; 3],
) -> Result<(Option<GpuBuf>, Option<GpuBuf>)> {
    let dx = if needs[0] {
        let dx = gpu.alloc(x.len())?;
        let mut args = vec![dy.arg(), w.arg(), dx.arg()];
        args.extend(depthwise_args(g)?);
        launch(gpu, kernels::DWCONV_DX_BWD, Launch::elems(dx.len()), &args)?;
        Some(dx)
    } else {
        None
    };
    if !needs[1] {
        return Ok((dx, None));
    }
    let tap_groups = (g.kh * g.kw).div_ceil(DW_TAPS);
    let np = g.n * g.ohw();
    // The split depends only on the shapes, so the order of the sums is fixed.
    let splits = DW_TARGET_BLOCKS
        .div_ceil(g.cout * tap_groups)
        .min(np.div_ceil(DW_MIN_CHUNK))
        .max(1);
    let chunk = np.div_ceil(splits);
    let splits = np.div_ceil(chunk);
    let dw = gpu.alloc(w.len())?;
    let partial = if splits > 1 {
        Some(gpu.alloc(w.len() * splits)?)
    } else {
        None
    };
    let mut args = vec![x.arg(), dy.arg(), partial.as_ref().unwrap_or(&dw).arg()];
    args.extend(depthwise_args(g)?);
    args.push(Arg::int("chunk", chunk)?);
    let cfg = Launch {
        grid: (g.cout as u32, splits as u32, tap_groups as u32),
        block: (cuda::BLOCK, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::DWCONV_DW_PARTIAL_BWD, cfg, &args)?;
    if let Some(partial) = &partial {
        let args = [
            partial.arg(),
            Arg::int("splits", splits)?,
            dw.arg(),
            Arg::int("n", dw.len())?,
        ];
        let cfg = Launch::elems(dw.len());
        launch(gpu, kernels::DWCONV_DW_FINAL_BWD, cfg, &args)?;
    }
    Ok((dx, Some(dw)))
}
