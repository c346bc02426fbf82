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
//! A 1×1 stride-1 unpadded conv needs no unfolding: `col` is x as [Cin, N·P] (x itself for one
//! sample), and dx is dcol back in NCHW. Depthwise convs run direct kernels. Nothing here uses
//! float atomics, so every result is the same from run to run.

use super::Geom;
use crate::device::cuda::{self, Arg, Gemm, Gpu, GpuBuf, Launch};
use crate::error::Result;

/// Blocks that keep an H200 busy (132 SMs, 8 resident blocks of 256 each): the depthwise weight
/// gradient splits each (tap, channel) sum into enough pieces to launch about this many.
const DW_TARGET_BLOCKS: usize = 1024;
/// The least number of products one block of the depthwise weight gradient adds up.
const DW_MIN_CHUNK: usize = 1024;

/// The gradients asked for: x, w, bias.
pub(super) type Grads = (Option<GpuBuf>, Option<GpuBuf>, Option<GpuBuf>);

fn i32s(v: &[usize]) -> Vec<Arg> {
    v.iter().map(|&v| Arg::I32(v as i32)).collect()
}

/// `n, cin, h, w, kh, kw, oh, ow, s, p, d`: the geometry arguments of the dense kernels.
fn dense_args(g: &Geom) -> Vec<Arg> {
    i32s(&[
        g.n, g.cin, g.h, g.w, g.kh, g.kw, g.oh, g.ow, g.stride, g.pad, g.dil,
    ])
}

/// `n, cin, h, w, m, kh, kw, oh, ow, s, p, d`: those of the depthwise kernels (`m = Cout/Cin`).
fn depthwise_args(g: &Geom) -> Vec<Arg> {
    i32s(&[
        g.n,
        g.cin,
        g.h,
        g.w,
        g.cout / g.cin,
        g.kh,
        g.kw,
        g.oh,
        g.ow,
        g.stride,
        g.pad,
        g.dil,
    ])
}

fn pointwise(g: &Geom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

fn launch(gpu: &Gpu, kernel: &'static str, cfg: Launch, args: &[Arg]) -> Result<()> {
    gpu.launch("conv", kernel, cfg, args)
}

/// Row-major `C_g[m,n] = op(A_g) · op(B_g)` for every group g, the operands `sa`, `sb`, `sc`
/// elements apart (see [`Gemm::row_major`] for `ta`, `tb`).
#[allow(clippy::too_many_arguments)]
fn grouped_gemm(
    gpu: &Gpu,
    groups: usize,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    (a, sa): (&GpuBuf, usize),
    (b, sb): (&GpuBuf, usize),
    (c, sc): (&GpuBuf, usize),
) -> Result<()> {
    let mut gm = Gemm::row_major(ta, tb, m, n, k, a, b, c, 0.0);
    // row_major computes Cᵀ = Bᵀ·Aᵀ: cuBLAS's first operand is B.
    gm.batch = groups;
    gm.stride_a = sb;
    gm.stride_b = sa;
    gm.stride_c = sc;
    gpu.gemm(&gm)
}

/// NCHW `[n, c, P]` as `[c, n·P]`, or `None` when that is the same layout (one sample).
fn to_cnhw(gpu: &Gpu, t: &GpuBuf, n: usize, c: usize, p: usize) -> Result<Option<GpuBuf>> {
    if n == 1 {
        return Ok(None);
    }
    let out = gpu.alloc(t.len())?;
    let mut args = vec![t.arg(), out.arg()];
    args.extend(i32s(&[n, c, p]));
    launch(gpu, "conv_cnhw_bwd_f32", Launch::elems(t.len()), &args)?;
    Ok(Some(out))
}

/// `[c, n·P]` back to NCHW, adding `bias` [c] where given.
fn to_nchw(
    gpu: &Gpu,
    t: &GpuBuf,
    bias: Option<&GpuBuf>,
    n: usize,
    c: usize,
    p: usize,
) -> Result<GpuBuf> {
    let out = gpu.alloc(t.len())?;
    let b = bias.map_or(Arg::Ptr(0), GpuBuf::arg);
    let mut args = vec![t.arg(), b, Arg::I32(bias.is_some() as i32), out.arg()];
    args.extend(i32s(&[n, c, p]));
    launch(gpu, "conv_nchw_fwd_f32", Launch::elems(t.len()), &args)?;
    Ok(out)
}

/// The column matrix of x, or `None` when x itself is it (a 1×1 conv of one sample).
fn columns(gpu: &Gpu, g: &Geom, x: &GpuBuf) -> Result<Option<GpuBuf>> {
    if pointwise(g) {
        return to_cnhw(gpu, x, g.n, g.cin, g.hw());
    }
    let col = gpu.alloc(g.cin * g.kh * g.kw * g.n * g.ohw())?;
    let mut args = vec![x.arg(), col.arg()];
    args.extend(dense_args(g));
    launch(gpu, "conv_im2col_f32", Launch::elems(col.len()), &args)?;
    Ok(Some(col))
}

/// The output [N, Cout, OH, OW] of a conv whose operands are all on the GPU.
pub(super) fn forward(g: &Geom, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>) -> Result<GpuBuf> {
    let gpu = cuda::gpu()?;
    if g.depthwise() {
        let y = gpu.alloc(g.n * g.cout * g.ohw())?;
        let b = bias.map_or(Arg::Ptr(0), GpuBuf::arg);
        let mut args = vec![
            x.arg(),
            w.arg(),
            b,
            Arg::I32(bias.is_some() as i32),
            y.arg(),
        ];
        args.extend(depthwise_args(g));
        launch(gpu, "dwconv_fwd_f32", Launch::elems(y.len()), &args)?;
        return Ok(y);
    }
    let owned = columns(gpu, g, x)?;
    let col = owned.as_ref().unwrap_or(x);
    let (cog, k, np) = (
        g.cout / g.groups,
        g.cin / g.groups * g.kh * g.kw,
        g.n * g.ohw(),
    );
    let yt = gpu.alloc(g.cout * np)?;
    grouped_gemm(
        gpu,
        g.groups,
        (false, false),
        (cog, np, k),
        (w, cog * k),
        (col, k * np),
        (&yt, cog * np),
    )?;
    if g.n == 1 && bias.is_none() {
        return Ok(yt);
    }
    to_nchw(gpu, &yt, bias, g.n, g.cout, g.ohw())
}

/// The gradients flagged in `needs` (x, w, bias) of a conv whose operands are all on the GPU.
pub(super) fn backward(
    g: &Geom,
    x: &GpuBuf,
    w: &GpuBuf,
    dy: &GpuBuf,
    needs: [bool; 3],
) -> Result<Grads> {
    let gpu = cuda::gpu()?;
    let db = if needs[2] {
        let db = gpu.alloc(g.cout)?;
        let mut args = vec![dy.arg(), db.arg()];
        args.extend(i32s(&[g.n, g.cout, g.ohw()]));
        launch(gpu, "conv_bias_bwd_f32", Launch::rows(g.cout), &args)?;
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
    let (cog, k, np) = (
        g.cout / g.groups,
        g.cin / g.groups * g.kh * g.kw,
        g.n * g.ohw(),
    );
    let owned_dyt = to_cnhw(gpu, dy, g.n, g.cout, g.ohw())?;
    let dyt = owned_dyt.as_ref().unwrap_or(dy);
    let dw = if needs[1] {
        let owned = columns(gpu, g, x)?;
        let col = owned.as_ref().unwrap_or(x);
        let dw = gpu.alloc(w.len())?;
        grouped_gemm(
            gpu,
            g.groups,
            (false, true),
            (cog, k, np),
            (dyt, cog * np),
            (col, k * np),
            (&dw, cog * k),
        )?;
        Some(dw)
    } else {
        None
    };
    let dx = if needs[0] {
        let dcol = gpu.alloc(g.groups * k * np)?;
        grouped_gemm(
            gpu,
            g.groups,
            (true, false),
            (k, np, cog),
            (w, cog * k),
            (dyt, cog * np),
            (&dcol, k * np),
        )?;
        Some(if pointwise(g) {
            if g.n == 1 {
                dcol
            } else {
                to_nchw(gpu, &dcol, None, g.n, g.cin, g.hw())?
            }
        } else {
            let dx = gpu.alloc(g.n * g.cin * g.hw())?;
            let mut args = vec![dcol.arg(), dx.arg()];
            args.extend(dense_args(g));
            launch(gpu, "conv_col2im_bwd_f32", Launch::elems(dx.len()), &args)?;
            dx
        })
    } else {
        None
    };
    Ok((dx, dw))
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
        args.extend(depthwise_args(g));
        launch(gpu, "dwconv_dx_bwd_f32", Launch::elems(dx.len()), &args)?;
        Some(dx)
    } else {
        None
    };
    let dw = if needs[1] {
        let taps = g.kh * g.kw;
        let np = g.n * g.ohw();
        // The split depends only on the shapes, so the order of the sums is fixed.
        let splits = DW_TARGET_BLOCKS
            .div_ceil(g.cout * taps)
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
        args.extend(depthwise_args(g));
        args.push(Arg::I32(chunk as i32));
        let cfg = Launch {
            grid: (taps as u32, g.cout as u32, splits as u32),
            block: (cuda::BLOCK, 1, 1),
            shared_bytes: 0,
        };
        launch(gpu, "dwconv_dw_partial_bwd_f32", cfg, &args)?;
        if let Some(partial) = &partial {
            let args = [
                partial.arg(),
                Arg::I32(splits as i32),
                dw.arg(),
                Arg::I32(dw.len() as i32),
            ];
            launch(
                gpu,
                "dwconv_dw_final_bwd_f32",
                Launch::elems(dw.len()),
                &args,
            )?;
        }
        Some(dw)
    } else {
        None
    };
    Ok((dx, dw))
}
