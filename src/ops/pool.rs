//! Pooling over NCHW planes: max and average with square windows (PyTorch floor-mode output
//! sizes), and the global average that ends a network.
//!
//! Every kernel works on one H×W plane at a time; the N·C planes are independent, so they run on
//! rayon when the tensor is large enough to pay for the threads.
//!
//! Windows of up to [`FRAMED_MAX_KERNEL`] run separably on a copy of the plane framed by the
//! padding ([`Framed`]): each cell first folds the `k` cells to its right, then each output folds
//! `k` of those row results one pitch apart. Computed at the frame's pitch, a whole plane is one
//! contiguous run per pass (the columns that mix two rows are never read by an output), so the
//! loops vectorise; [`simd_fn`] adds AVX2 copies. Max pooling keeps no argmax: its backward finds
//! each output's first window element equal to the output again. Larger kernels, whose frame
//! would dwarf the plane, run on direct loops over the windows.

use std::ops::Range;

use rayon::prelude::*;

use super::{operands, Operands};
use crate::device::pool;
use crate::error::{Error, Result};
use crate::ops::simd::simd_fn;
use crate::tape;
use crate::tensor::Tensor;

mod cuda;
mod framed;

use framed::*;

/// Below this many elements per task a parallel loop costs more than it saves.
const PAR_MIN: usize = 1 << 15;

/// Planes per rayon task, so that each task touches at least `PAR_MIN` elements; a small tensor
/// is then a single task that runs on the calling thread.
fn planes_per_task(plane_len: usize) -> usize {
    PAR_MIN.div_ceil(plane_len.max(1))
}

/// The geometry of a pooling window sliding over one H×W plane, with the per-column tables the
/// kernels need precomputed once per call (they would otherwise cost integer divisions per row).
#[derive(Clone, Debug)]
struct Window {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// For each kernel column `kx`: the output columns whose window puts `kx` inside the input,
    /// and the input column the first of them reads.
    col_runs: Vec<(Range<usize>, usize)>,
    /// For each output column: how many input columns its window covers.
    col_counts: Vec<f32>,
}

impl Window {
    /// Checks the arguments as PyTorch does and returns the number of planes and the geometry.
    fn new(
        op: &'static str,
        x: &Tensor,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<(usize, Window)> {
        let (n, c, h, w) = x.dims4(op)?;
        let bad = |msg: &str| {
            Err(Error::shape(
                op,
                format!("kernel {kernel}, stride {stride}, padding {padding}: {msg}"),
                &[x.shape()],
            ))
        };
        if kernel == 0 || stride == 0 {
            return bad("kernel and stride must be positive");
        }
        // At most half the kernel, so every window holds at least one real element.
        if padding > kernel / 2 {
            return bad("padding must be at most half the kernel");
        }
        if h == 0 || w == 0 {
            return bad("the spatial size must be non-zero");
        }
        // `kernel − 2·padding` cannot underflow (checked above) and, unlike `len + 2·padding`,
        // cannot overflow.
        let reach = kernel - 2 * padding;
        if h < reach || w < reach {
            return bad("the padded input is smaller than the kernel, so the output is empty");
        }
        // Max-pool stores argmax positions within a plane as u32.
        if u32::try_from(h * w).is_err() {
            return bad("a plane has more than 2^32 elements");
        }
        let out = |len: usize| (len - reach) / stride + 1;
        let mut win = Window {
            h,
            w,
            oh: out(h),
            ow: out(w),
            kernel,
            stride,
            padding,
            col_runs: Vec::new(),
            col_counts: Vec::new(),
        };
        // Kernel columns outside this range fall in the padding for every output column;
        // skipping them keeps the table small whatever the kernel size.
        let kx_lo = padding.saturating_sub((win.ow - 1) * stride);
        win.col_runs = (kx_lo..kernel.min(w + padding))
            .map(|kx| {
                // Output columns with 0 ≤ ox·stride + kx − padding < w.
                let lo = padding.saturating_sub(kx).div_ceil(stride);
                let hi = (w + padding).saturating_sub(kx).div_ceil(stride);
                let outs = lo..hi.min(win.ow).max(lo);
                let first = (outs.start * stride + kx).saturating_sub(padding);
                (outs, first)
            })
            .collect();
        win.col_counts = (0..win.ow).map(|ox| win.span(ox, w).len() as f32).collect();
        Ok((n * c, win))
    }

    /// The in-bounds input positions covered by output position `o` along an axis of length
    /// `len`; padded positions are simply not visited.
    fn span(&self, o: usize, len: usize) -> Range<usize> {
        let start = o * self.stride;
        // `kernel - padding > 0` because padding ≤ kernel / 2, so the end never underflows.
        start.saturating_sub(self.padding)..(start + self.kernel - self.padding).min(len)
    }

    /// Visits the windows of output row `oy` one run at a time: `f(outputs, first)` for each
    /// in-bounds input row `y` and kernel column `kx`, where output `ox` of the range reads input
    /// index `first + (ox − outputs.start)·stride`. Looping over outputs innermost keeps each
    /// window's elements in row-major order yet gives the compiler independent lanes.
    fn runs(&self, oy: usize, mut f: impl FnMut(Range<usize>, usize)) {
        for y in self.span(oy, self.h) {
            for (outs, first) in &self.col_runs {
                if !outs.is_empty() {
                    f(outs.clone(), y * self.w + first);
                }
            }
        }
    }

    fn in_len(&self) -> usize {
        self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.oh * self.ow
    }

    fn out_shape(&self, x: &Tensor) -> [usize; 4] {
        let s = x.shape();
        [s[0], s[1], self.oh, self.ow]
    }
}

/// Max of each window of one plane and the position of that max within the plane (the first one
/// in row-major order on ties; a NaN wins, as in PyTorch). `scratch` holds one row of outputs.
fn max_plane(win: &Window, x: &[f32], out: &mut [f32], arg: &mut [u32], scratch: &mut [f32]) {
    let (ow, s) = (win.ow, win.stride);
    for oy in 0..win.oh {
        let best = &mut out[oy * ow..(oy + 1) * ow];
        let at = &mut arg[oy * ow..(oy + 1) * ow];
        // Start from each window's first element, so an all −∞ window still has an argmax.
        let y0 = win.span(oy, win.h).start;
        for (ox, (b, a)) in best.iter_mut().zip(at.iter_mut()).enumerate() {
            let i = y0 * win.w + win.span(ox, win.w).start;
            (*b, *a) = (x[i], i as u32);
        }
        win.runs(oy, |outs, first| {
            let (best, at) = (&mut best[outs.clone()], &mut at[outs]);
            // Strided inputs are gathered first, so the blend below always runs on contiguous
            // lanes, which the compiler vectorises.
            let vals = if s == 1 {
                &x[first..first + best.len()]
            } else {
                let vals = &mut scratch[..best.len()];
                vals.iter_mut()
                    .zip(x[first..].iter().step_by(s))
                    .for_each(|(d, &v)| *d = v);
                vals
            };
            // u32 lane indices (planes are checked to fit) keep the index arithmetic in
            // 32-bit vector lanes.
            let (first, step) = (first as u32, s as u32);
            let lanes = best.iter_mut().zip(at.iter_mut()).zip(vals);
            for (j, ((b, a), &v)) in (0u32..).zip(lanes) {
                // A bit-mask blend rather than `if`: LLVM turns that select into a conditional
                // store, a branch per lane that random data mispredicts half the time.
                let m = (((v > *b) | v.is_nan()) as u32).wrapping_neg();
                *b = f32::from_bits((v.to_bits() & m) | (b.to_bits() & !m));
                *a = ((first + j * step) & m) | (*a & !m);
            }
        });
    }
}

/// Max pooling with a `kernel`×`kernel` window; padding counts as −∞.
///
/// Output `[N, C, (H + 2p − k)/s + 1, (W + 2p − k)/s + 1]` (floor), as in PyTorch's `max_pool2d`.
/// The gradient of each output goes to the input element that was the max.
///
/// ```
/// use darts::{ops, Tensor};
/// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
/// let y = ops::max_pool2d(&x, 2, 2, 0).unwrap();
/// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
/// ```
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let _prof = super::prof::span("max_pool2d", false);
    let (planes, win) = Window::new("max_pool2d", x, kernel, stride, padding)?;
    let xd = match operands("max_pool2d", [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return cuda::max_pool2d(x, xb, planes, win),
    };
    let (il, ol) = (win.in_len(), win.out_len());
    let mut out = pool::take(planes * ol);
    let tasks = out
        .par_chunks_mut(ol)
        .zip(xd.par_chunks(il))
        .with_min_len(planes_per_task(il));
    if win.framed() {
        tasks.for_each_init(
            || PoolScratch::new(&win, f32::NEG_INFINITY),
            |sc, (o, xp)| max_plane_framed(&win, sc, xp, o),
        );
    } else {
        tasks.for_each_init(
            || (vec![0u32; ol], vec![0.0f32; win.ow]),
            |(arg, scratch), (o, xp)| max_plane(&win, xp, o, arg, scratch),
        );
    }
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_parts(out, &win.out_shape(x));
    let (xs, ys) = (x.detach(), out.detach());
    Ok(tape::record("max_pool2d", out, &[x], move |g, _| {
        let [gd, xd, yd] = operands("max_pool2d", [g, &xs, &ys])?.cpu("max_pool2d")?;
        let mut dx = win.take_output(planes * il);
        let tasks = dx
            .par_chunks_mut(il)
            .zip(gd.par_chunks(ol))
            .zip(xd.par_chunks(il).zip(yd.par_chunks(ol)))
            .with_min_len(planes_per_task(il));
        if win.framed() {
            tasks.for_each_init(
                || MaxBackScratch::new(&win),
                |sc, ((d, gp), (xp, yp))| max_plane_backward(&win, sc, xp, yp, gp, d),
            );
        } else {
            // Without a stored argmax, the direct kernel finds it again.
            tasks.for_each_init(
                || (vec![0.0f32; ol], vec![0u32; ol], vec![0.0f32; win.ow]),
                |(best, arg, scratch), ((d, gp), (xp, _))| {
                    max_plane(&win, xp, best, arg, scratch);
                    for (&gv, &at) in gp.iter().zip(arg.iter()) {
                        d[at as usize] += gv;
                    }
                },
            );
        }
        Ok(vec![Some(Tensor::from_parts(dx, &in_shape))])
    }))
}

/// `acc[j] += xs[j·s]` for every lane `j` of `acc`.
#[inline(always)]
fn gather_add(acc: &mut [f32], xs: &[f32], s: usize) {
    // A literal stride of 1 compiles to contiguous vector code.
    if s == 1 {
        acc.iter_mut().zip(xs).for_each(|(a, &v)| *a += v);
    } else {
        acc.iter_mut()
            .zip(xs.iter().step_by(s))
            .for_each(|(a, &v)| *a += v);
    }
}

/// `dst[j·s] += vals[j]` for every lane `j` of `vals`.
#[inline(always)]
fn scatter_add(dst: &mut [f32], vals: &[f32], s: usize) {
    if s == 1 {
        dst.iter_mut().zip(vals).for_each(|(d, &v)| *d += v);
    } else {
        dst.iter_mut()
            .step_by(s)
            .zip(vals)
            .for_each(|(d, &v)| *d += v);
    }
}

/// Average of each window of one plane over its in-bounds elements.
fn avg_plane(win: &Window, x: &[f32], out: &mut [f32]) {
    let ow = win.ow;
    for oy in 0..win.oh {
        let sums = &mut out[oy * ow..(oy + 1) * ow];
        win.runs(oy, |outs, first| {
            gather_add(&mut sums[outs], &x[first..], win.stride)
        });
        let rows = win.span(oy, win.h).len() as f32;
        sums.iter_mut()
            .zip(&win.col_counts)
            .for_each(|(o, &c)| *o /= rows * c);
    }
}

/// Spreads each output gradient evenly over the in-bounds elements of its window; `share` is
/// scratch space for one row of outputs.
fn avg_plane_backward(win: &Window, g: &[f32], dx: &mut [f32], share: &mut [f32]) {
    let ow = win.ow;
    for oy in 0..win.oh {
        // Divide once per output rather than once per window element.
        let rows = win.span(oy, win.h).len() as f32;
        let gs = g[oy * ow..(oy + 1) * ow].iter().zip(&win.col_counts);
        share
            .iter_mut()
            .zip(gs)
            .for_each(|(sh, (&gv, &c))| *sh = gv / (rows * c));
        win.runs(oy, |outs, first| {
            scatter_add(&mut dx[first..], &share[outs], win.stride)
        });
    }
}

/// Average pooling with a `kernel`×`kernel` window, dividing by the number of in-bounds elements
/// (PyTorch's `count_include_pad=False`, which DARTS uses for `avg_pool_3x3`).
///
/// Output sizes as for [`max_pool2d`].
///
/// ```
/// use darts::{ops, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
/// // 3×3 windows, stride 1, padding 1: each corner sees all four elements.
/// let y = ops::avg_pool2d(&x, 3, 1, 1).unwrap();
/// assert_eq!(y.to_vec(), vec![2.5; 4]);
/// ```
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let _prof = super::prof::span("avg_pool2d", false);
    let (planes, win) = Window::new("avg_pool2d", x, kernel, stride, padding)?;
    let xd = match operands("avg_pool2d", [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return cuda::avg_pool2d(x, xb, planes, win),
    };
    let (il, ol) = (win.in_len(), win.out_len());
    let mut out = win.take_output(planes * ol);
    let tasks = out
        .par_chunks_mut(ol)
        .zip(xd.par_chunks(il))
        .with_min_len(planes_per_task(il));
    if win.framed() {
        tasks.for_each_init(
            || PoolScratch::new(&win, 0.0),
            |sc, (o, xp)| avg_plane_framed(&win, sc, xp, o),
        );
    } else {
        tasks.for_each(|(o, xp)| avg_plane(&win, xp, o));
    }
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_parts(out, &win.out_shape(x));
    Ok(tape::record("avg_pool2d", out, &[x], move |g, _| {
        let [gd] = operands("avg_pool2d", [g])?.cpu("avg_pool2d")?;
        let mut dx = win.take_output(planes * il);
        let tasks = dx
            .par_chunks_mut(il)
            .zip(gd.par_chunks(ol))
            .with_min_len(planes_per_task(il));
        if win.framed() {
            tasks.for_each_init(
                || AvgBackScratch::new(&win),
                |sc, (d, gp)| avg_plane_backward_framed(&win, sc, gp, d),
            );
        } else {
            tasks.for_each_init(
                || vec![0.0f32; win.ow],
                |share, (d, gp)| avg_plane_backward(&win, gp, d, share),
            );
        }
        Ok(vec![Some(Tensor::from_parts(dx, &in_shape))])
    }))
}

/// The mean of each H×W plane: `[N, C, H, W] -> [N, C]` (accumulated in f64).
///
/// ```
/// use darts::{ops, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0], &[1, 2, 1, 2]).unwrap();
/// assert_eq!(ops::global_avg_pool(&x).unwrap().to_vec(), vec![1.5, 4.5]);
/// ```
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("global_avg_pool", false);
    let (n, c, h, w) = x.dims4("global_avg_pool")?;
    let hw = h * w;
    if hw == 0 {
        return Err(Error::shape(
            "global_avg_pool",
            "the spatial size must be non-zero",
            &[x.shape()],
        ));
    }
    let xd = match operands("global_avg_pool", [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => return cuda::global_avg_pool(x, xb, n * c, hw),
    };
    let mut out = vec![0.0f32; n * c];
    out.par_iter_mut()
        .zip(xd.par_chunks(hw))
        .with_min_len(planes_per_task(hw))
        .for_each(|(o, p)| *o = (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32);
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_parts(out, &[n, c]);
    Ok(tape::record("global_avg_pool", out, &[x], move |g, _| {
        let [gd] = operands("global_avg_pool", [g])?.cpu("global_avg_pool")?;
        let mut dx = pool::take(n * c * hw);
        dx.par_chunks_mut(hw)
            .zip(gd.par_iter())
            .with_min_len(planes_per_task(hw))
            .for_each(|(d, &gv)| d.fill(gv / hw as f32));
        Ok(vec![Some(Tensor::from_parts(dx, &in_shape))])
    }))
}

#[cfg(test)]
mod tests;
