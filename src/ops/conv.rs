//! 2-D convolution with PyTorch's semantics (NCHW, zero padding, stride, dilation, groups):
//! shape checks, the tape wiring and the bias gradient here; two CPU kernels underneath.
//!
//! - [`dense`]: im2col + sgemm per sample and group, for filters that see several input channels.
//!   A 1×1 stride-1 unpadded conv is a plain GEMM on the NCHW sample and skips the unfolding.
//! - [`depthwise`]: a direct kernel for one input channel per group (DARTS's `sep_conv` and
//!   `dil_conv` first stage). It is memory bound, and im2col would multiply its traffic by kh·kw.
//!
//! - [`cuda`]: the GPU path of both (column-matrix GEMMs on cuBLAS, direct depthwise kernels).
//!
//! Determinism: work is split across threads by sample or by channel, never inside a sum, and
//! the weight gradient is reduced from partials whose grouping does not depend on the thread
//! count, so every result is bit-identical whatever the size of the rayon pool.

mod cuda;
mod dense;
mod depthwise;
mod pointwise;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use super::{operands, Operands};
use crate::device::cpu::Mat;
use crate::device::pool;
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

/// Stride, zero padding (both sides, both axes), dilation and groups of a [`conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv2dCfg {
    fn default() -> Self {
        Conv2dCfg {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Every size of one convolution, checked once; the kernels index with these.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
}

/// Output length along one axis, `(len + 2p − d(k−1) − 1)/s + 1`, or `None` when the dilated
/// kernel does not fit in the padded input (or the sizes overflow).
fn out_len(len: usize, k: usize, cfg: &Conv2dCfg) -> Option<usize> {
    let span = cfg.dilation.checked_mul(k - 1)?.checked_add(1)?;
    let padded = len.checked_add(cfg.padding.checked_mul(2)?)?;
    padded.checked_sub(span).map(|r| r / cfg.stride + 1)
}

/// Output positions `o` in `0..out` whose input position `o·s + off − p` lies in `0..len`, as
/// `lo..hi`: the interior of one kernel tap, so loops over it need no border tests.
fn valid(out: usize, len: usize, s: usize, off: usize, p: usize) -> (usize, usize) {
    let lo = p.saturating_sub(off).div_ceil(s);
    let hi = (len + p).saturating_sub(off).div_ceil(s).min(out);
    (lo.min(hi), hi)
}

impl Geom {
    fn new(op: &'static str, x: &[usize], w: &[usize], cfg: &Conv2dCfg) -> Result<Geom> {
        let bad = |msg: &str| Err(Error::shape(op, msg, &[x, w]));
        let (&[n, cin, h, wd], &[cout, cig, kh, kw]) = (x, w) else {
            return bad("expects x [N,Cin,H,W] and w [Cout,Cin/groups,kh,kw]");
        };
        if cfg.stride == 0 || cfg.dilation == 0 || cfg.groups == 0 {
            return Err(Error::InvalidArgument(format!(
                "{op}: stride, dilation and groups must be at least 1 (got {cfg:?})"
            )));
        }
        if x.contains(&0) || w.contains(&0) {
            return bad("every dimension must be non-zero");
        }
        if cin % cfg.groups != 0 || cout % cfg.groups != 0 {
            return bad(&format!(
                "groups = {} must divide both Cin and Cout",
                cfg.groups
            ));
        }
        if cig != cin / cfg.groups {
            return bad("the weight's dim 1 must be Cin/groups");
        }
        let (Some(oh), Some(ow)) = (out_len(h, kh, cfg), out_len(wd, kw, cfg)) else {
            return bad("the dilated kernel is larger than the padded input");
        };
        Ok(Geom {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            oh,
            ow,
            stride: cfg.stride,
            pad: cfg.padding,
            dil: cfg.dilation,
            groups: cfg.groups,
        })
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.oh, self.ow]
    }
    /// One input channel per group: the direct kernel applies.
    fn depthwise(&self) -> bool {
        self.cin == self.groups
    }
    /// Output rows `oy` for which kernel row `ky` reads inside the input.
    fn rows(&self, ky: usize) -> (usize, usize) {
        valid(self.oh, self.h, self.stride, ky * self.dil, self.pad)
    }
    /// Output columns `ox` for which kernel column `kx` reads inside the input.
    fn cols(&self, kx: usize) -> (usize, usize) {
        valid(self.ow, self.w, self.stride, kx * self.dil, self.pad)
    }
}

/// 2-D cross-correlation, as PyTorch's `F.conv2d`: `x` [N, Cin, H, W], `w` [Cout, Cin/groups,
/// kh, kw], `bias` [Cout]; the output is [N, Cout, OH, OW] with
/// `OH = (H + 2p − d(kh−1) − 1)/s + 1` (likewise OW) and
/// `y[n,o,i,j] = b[o] + Σ_{c,u,v} w[o,c,u,v] · x[n, g·Cin/groups + c, i·s + u·d − p, j·s + v·d − p]`
/// where `g` is the group of `o` and out-of-range inputs are zero.
///
/// ```
/// use darts::{ops::{conv2d, Conv2dCfg}, Tensor};
/// let x = Tensor::ones(&[1, 1, 3, 3]);
/// let w = Tensor::ones(&[1, 1, 3, 3]);
/// let y = conv2d(&x, &w, None, Conv2dCfg { padding: 1, ..Default::default() }).unwrap();
/// assert_eq!(y.shape(), &[1, 1, 3, 3]);
/// assert_eq!(y.to_vec(), vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
/// ```
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: Conv2dCfg) -> Result<Tensor> {
    let g = Geom::new("conv2d", x.shape(), w.shape(), &cfg)?;
    // The kernel family names the op in profiles and in backward's errors.
    let op = if g.depthwise() {
        "conv2d_depthwise"
    } else if g.kh * g.kw == 1 {
        "conv2d_1x1"
    } else {
        "conv2d"
    };
    let _prof = super::prof::span(op, false);
    if let Some(b) = bias {
        if b.shape() != [g.cout] {
            return Err(Error::shape(
                "conv2d",
                "bias must have one value per output channel",
                &[w.shape(), b.shape()],
            ));
        }
    }
    // Without a bias, x stands in for it so that one dispatch checks every operand's device.
    let out = match operands("conv2d", [x, w, bias.unwrap_or(x)])? {
        Operands::Cuda([xb, wb, bb]) => {
            let y = cuda::forward(&g, xb, wb, bias.map(|_| bb))?;
            Tensor::from_gpu(y, &g.out_shape())
        }
        Operands::Cpu([xd, wd, bd]) => {
            let bias_data = bias.map(|_| bd);
            let out = if g.depthwise() {
                depthwise::forward(&g, xd, wd, bias_data)
            } else {
                dense::forward(&g, xd, wd, bias_data)
            };
            Tensor::from_parts(out, &g.out_shape())
        }
    };
    let (sx, sw) = (x.detach(), w.detach());
    let backward = move |dy: &Tensor, needs: &[bool]| {
        let wants_bias = needs.get(2).copied().unwrap_or(false);
        let gr = conv2d_backward(&sx, &sw, dy, cfg, [needs[0], needs[1], wants_bias])?;
        let mut grads = vec![gr.x, gr.w, gr.bias];
        grads.truncate(needs.len());
        Ok(grads)
    };
    Ok(match bias {
        Some(b) => tape::record(op, out, &[x, w, b], backward),
        None => tape::record(op, out, &[x, w], backward),
    })
}

/// [`conv2d`] for the inference path: no tape, and on the CPU a 1×1, stride-1, ungrouped conv
/// runs the loops of `pointwise` with fused multiply-adds at any width (the small channel counts
/// of cells are where the GEMM spends as long packing as multiplying); so such a conv rounds
/// differently from [`conv2d`] in the last bits. Everything else is [`conv2d`].
pub fn conv2d_inference(x: &Tensor, w: &Tensor, bias: &Tensor, cfg: Conv2dCfg) -> Result<Tensor> {
    let g = Geom::new("conv2d", x.shape(), w.shape(), &cfg)?;
    let one_by_one = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0 && g.groups == 1;
    let data = match operands("conv2d", [x, w, bias])? {
        Operands::Cpu([xd, wd, bd]) if one_by_one && bias.shape() == [g.cout] => (xd, wd, bd),
        _ => return crate::no_grad(|| conv2d(x, w, Some(bias), cfg)),
    };
    let _prof = super::prof::span("conv2d_1x1", false);
    let (xd, wd, bd) = data;
    let (p, cin) = (g.ohw(), g.cin);
    let mut out = pool::take(g.n * g.cout * p);
    out.par_chunks_mut(g.cout * p)
        .zip(xd.par_chunks(cin * p))
        .for_each(|(y, xs)| pointwise::mix_fused(Mat::rm(wd, cin), xs, Some(bd), y, p));
    Ok(Tensor::from_parts(out, &g.out_shape()))
}

/// The gradients [`conv2d_backward`] was asked for.
#[derive(Debug)]
pub struct Conv2dGrads {
    /// d loss / d x, [N, Cin, H, W].
    pub x: Option<Tensor>,
    /// d loss / d w, [Cout, Cin/groups, kh, kw].
    pub w: Option<Tensor>,
    /// d loss / d bias, [Cout].
    pub bias: Option<Tensor>,
}

/// The backward of [`conv2d`] given the output gradient `dy` [N, Cout, OH, OW]: computes the
/// gradients flagged in `needs` (for x, w, bias, in that order). The tape calls this; it is public
/// so that benchmarks and fused layers can time or reuse the kernels without building a graph.
pub fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    cfg: Conv2dCfg,
    needs: [bool; 3],
) -> Result<Conv2dGrads> {
    let g = Geom::new("conv2d_backward", x.shape(), w.shape(), &cfg)?;
    if dy.shape() != g.out_shape() {
        return Err(Error::shape(
            "conv2d_backward",
            "dy must have the output's shape",
            &[x.shape(), w.shape(), dy.shape()],
        ));
    }
    let (xd, wd, dyd) = match operands("conv2d_backward", [x, w, dy])? {
        Operands::Cuda([xb, wb, dyb]) => {
            let (dx, dw, db) = cuda::backward(&g, xb, wb, dyb, needs)?;
            return Ok(Conv2dGrads {
                x: dx.map(|d| Tensor::from_gpu(d, x.shape())),
                w: dw.map(|d| Tensor::from_gpu(d, w.shape())),
                bias: db.map(|d| Tensor::from_gpu(d, &[g.cout])),
            });
        }
        Operands::Cpu([xd, wd, dyd]) => (xd, wd, dyd),
    };
    // The kernels write every element of dx; dw is summed onto zeros.
    let mut dx = needs[0].then(|| pool::take(x.numel()));
    let mut dw = needs[1].then(|| pool::take_zeroed(w.numel()));
    if needs[0] || needs[1] {
        let (dxm, dwm) = (dx.as_deref_mut(), dw.as_deref_mut());
        if g.depthwise() {
            depthwise::backward(&g, xd, wd, dyd, dxm, dwm);
        } else {
            dense::backward(&g, xd, wd, dyd, dxm, dwm);
        }
    }
    Ok(Conv2dGrads {
        x: dx.map(|d| Tensor::from_parts(d, x.shape())),
        w: dw.map(|d| Tensor::from_parts(d, w.shape())),
        bias: needs[2].then(|| Tensor::from_parts(bias_grad(&g, dyd), &[g.cout])),
    })
}

/// `dst.copy_from_slice(src)` for the short rows of a feature map, as inline vector moves: a
/// `memcpy` call per row cost a depthwise conv about 8% of its time. LLVM turns plain copy loops
/// back into `memcpy` calls; a fixed trip count and an empty `black_box` (which emits nothing)
/// keep it from doing so here.
#[inline(always)]
pub(crate) fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    if n < 8 {
        for i in 0..7 {
            if i < n {
                dst[i] = src[i];
            }
        }
        return;
    }
    for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        d.copy_from_slice(s);
        std::hint::black_box(());
    }
    // The last, partial chunk as an overlapping full one.
    dst[n - 8..].copy_from_slice(&src[n - 8..]);
}

/// `dst.fill(0.0)` for the few border cells of a row, without a `memset` call when they are few.
#[inline(always)]
fn zero_row(dst: &mut [f32]) {
    if dst.len() <= 8 {
        copy_row(dst, &[0.0; 8]);
    } else {
        dst.fill(0.0);
    }
}

/// `buf` cut into `count` chunks of `len`, or `count` times `None`: one optional output slice per
/// parallel task, whether or not that output was asked for.
fn chunks_or_none(buf: Option<&mut [f32]>, len: usize, count: usize) -> Vec<Option<&mut [f32]>> {
    match buf {
        Some(b) => b.chunks_mut(len).map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

/// `db[o] = Σ_{n,i,j} dy[n,o,i,j]`, one channel per task and summed in f64 in a fixed order.
fn bias_grad(g: &Geom, dy: &[f32]) -> Vec<f32> {
    let ohw = g.ohw();
    (0..g.cout)
        .into_par_iter()
        .map(|o| {
            let planes = (0..g.n).map(|i| &dy[(i * g.cout + o) * ohw..][..ohw]);
            planes.flatten().map(|&v| f64::from(v)).sum::<f64>() as f32
        })
        .collect()
}
