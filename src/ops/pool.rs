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

use crate::device::pool;
use crate::error::{Error, Result};
use crate::ops::simd::simd_fn;
use crate::tape;
use crate::tensor::Tensor;

mod cuda;

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

/// Kernels up to this size run on framed planes; larger ones on the direct loops.
const FRAMED_MAX_KERNEL: usize = 16;

impl Window {
    /// Whether the separable kernels on a framed plane apply.
    fn framed(&self) -> bool {
        self.kernel <= FRAMED_MAX_KERNEL
    }

    /// Row pitch of the framed plane.
    fn pitch(&self) -> usize {
        self.w + 2 * self.padding
    }

    /// Cells of the framed plane (without the tail that [`Framed`] adds).
    fn frame_cells(&self) -> usize {
        (self.h + 2 * self.padding) * self.pitch()
    }
}

/// A plane inside a frame of `padding` cells of a fill value on every side, at row pitch
/// `w + 2·padding`, followed by `tail` more fill cells (at least `kernel − 1`, so that a window
/// starting on any cell of the frame stays inside the buffer). `load` rewrites only the plane's
/// cells, so the frame keeps its fill from plane to plane.
struct Framed {
    buf: Vec<f32>,
    w: usize,
    pad: usize,
    pitch: usize,
}

impl Framed {
    fn new(win: &Window, fill: f32, tail: usize) -> Framed {
        Framed {
            buf: vec![fill; win.frame_cells() + tail],
            w: win.w,
            pad: win.padding,
            pitch: win.pitch(),
        }
    }

    #[inline(always)]
    fn load(&mut self, plane: &[f32]) {
        for (r, src) in plane.chunks_exact(self.w).enumerate() {
            let at = (self.pad + r) * self.pitch + self.pad;
            self.buf[at..at + self.w].copy_from_slice(src);
        }
    }
}

/// The max of two window elements, `b` before `v`: `v` wins if it is larger or NaN, as in
/// PyTorch. A bit-mask blend rather than `if`, which LLVM may turn into a branch per lane.
#[inline(always)]
fn max_nan(b: f32, v: f32) -> f32 {
    let m = (((v > b) | v.is_nan()) as u32).wrapping_neg();
    f32::from_bits((v.to_bits() & m) | (b.to_bits() & !m))
}

#[inline(always)]
fn add(a: f32, b: f32) -> f32 {
    a + b
}

/// `dst[i] = f(…f(f(src[i], src[i + step]), src[i + 2·step])…, src[i + (k − 1)·step])`: each
/// lane folds `k` cells `step` apart, in order. A 3-cell window is one pass over memory.
#[inline(always)]
fn window_fold(dst: &mut [f32], src: &[f32], k: usize, step: usize, f: impl Fn(f32, f32) -> f32) {
    let n = dst.len();
    if k == 3 {
        let (a, b, c) = (&src[..n], &src[step..][..n], &src[2 * step..][..n]);
        for (((d, &a), &b), &c) in dst.iter_mut().zip(a).zip(b).zip(c) {
            *d = f(f(a, b), c);
        }
        return;
    }
    dst.copy_from_slice(&src[..n]);
    for j in 1..k {
        for (d, &v) in dst.iter_mut().zip(&src[j * step..][..n]) {
            *d = f(*d, v);
        }
    }
}

/// Buffers of the framed forward kernels, built once per task and reused for every plane.
struct PoolScratch {
    src: Framed,
    /// Row folds of every framed cell.
    rows: Vec<f32>,
    /// Column folds: the outputs at the frame's pitch (stride 1) or one row of them (strided).
    run: Vec<f32>,
}

impl PoolScratch {
    fn new(win: &Window, fill: f32) -> PoolScratch {
        PoolScratch {
            src: Framed::new(win, fill, win.kernel - 1),
            rows: vec![0.0; win.frame_cells()],
            run: vec![0.0; win.frame_cells()],
        }
    }
}

/// `out` = each `k`×`k` window of the framed plane folded by `f`: first along rows, then down
/// columns. `f` must not care how the window is grouped (max, sum).
#[inline(always)]
fn fold_windows(
    win: &Window,
    sc: &mut PoolScratch,
    x: &[f32],
    out: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    sc.src.load(x);
    let (k, s, pitch, ow) = (win.kernel, win.stride, win.pitch(), win.ow);
    // Every framed cell folds the k cells from it rightwards; in the last k − 1 columns of a
    // row that runs into the next row, but no output reads those columns.
    window_fold(&mut sc.rows, &sc.src.buf, k, 1, f);
    if s == 1 {
        let run = &mut sc.run[..(win.oh - 1) * pitch + ow];
        window_fold(run, &sc.rows, k, pitch, f);
        for (o, r) in out.chunks_exact_mut(ow).zip(run.chunks(pitch)) {
            o.copy_from_slice(&r[..ow]);
        }
    } else {
        let run = &mut sc.run[..(ow - 1) * s + 1];
        for (oy, o) in out.chunks_exact_mut(ow).enumerate() {
            window_fold(run, &sc.rows[oy * s * pitch..], k, pitch, f);
            o.iter_mut()
                .zip(run.iter().step_by(s))
                .for_each(|(o, &v)| *o = v);
        }
    }
}

simd_fn! {
    /// Max of each window of one plane, on a plane framed by −∞.
    fn max_plane_framed(win: &Window, sc: &mut PoolScratch, x: &[f32], out: &mut [f32]) {
        fold_windows(win, sc, x, out, max_nan);
    }
}

simd_fn! {
    /// Average of each window of one plane over its in-bounds elements, on a plane framed by 0.
    fn avg_plane_framed(win: &Window, sc: &mut PoolScratch, x: &[f32], out: &mut [f32]) {
        fold_windows(win, sc, x, out, add);
        for (oy, row) in out.chunks_exact_mut(win.ow).enumerate() {
            let rows = win.span(oy, win.h).len() as f32;
            row.iter_mut()
                .zip(&win.col_counts)
                .for_each(|(o, &c)| *o /= rows * c);
        }
    }
}

/// The argmax of the window of output (`oy`, `ox`) by the forward's rule, element by element:
/// the first max in row-major order, or the last NaN. For the outputs [`max_plane_backward`]
/// cannot settle by equality.
fn window_argmax(win: &Window, x: &[f32], oy: usize, ox: usize) -> usize {
    let (rows, cols) = (win.span(oy, win.h), win.span(ox, win.w));
    let mut at = rows.start * win.w + cols.start;
    let mut best = x[at];
    for y in rows {
        for i in cols.clone().map(|c| y * win.w + c) {
            if x[i] > best || x[i].is_nan() {
                (best, at) = (x[i], i);
            }
        }
    }
    at
}

/// Lanes per register block of [`first_match`]. It runs in whole blocks, so the buffers it reads
/// carry this many extra cells.
const LANES: usize = 16;

/// Buffers of the framed max-pool backward, built once per task and reused for every plane.
struct MaxBackScratch {
    /// The input plane framed by −∞.
    src: Framed,
    /// Offset of each window element from the window's first cell in the frame (row-major).
    offs: Vec<usize>,
    /// Outputs placed on the frame's cells where their windows start (stride 1: the whole plane
    /// at the frame's pitch; strided: one row, at every stride-th column), NaN elsewhere, which
    /// equals nothing.
    grid: Vec<f32>,
    /// The outputs' gradients, on the same cells as `grid`.
    grads: Vec<f32>,
    /// For each grid cell, the first window element equal to it (`kernel²` if none).
    first: Vec<u32>,
    /// The input gradient on the framed plane.
    dx: Vec<f32>,
}

impl MaxBackScratch {
    fn new(win: &Window) -> MaxBackScratch {
        let (k, pitch, cells) = (win.kernel, win.pitch(), win.frame_cells());
        let taps = (0..k).flat_map(|ky| (0..k).map(move |kx| ky * pitch + kx));
        MaxBackScratch {
            src: Framed::new(win, f32::NEG_INFINITY, k - 1 + LANES),
            offs: taps.collect(),
            grid: vec![f32::NAN; cells + LANES],
            grads: vec![0.0; cells + LANES],
            first: vec![0; cells + LANES],
            dx: vec![0.0; cells],
        }
    }
}

/// `first[i]` = the first `t` with `src[i + offs[t]] == grid[i]`, `offs.len()` if none, for
/// `i < n` rounded up to whole blocks of [`LANES`]. Each block keeps its lanes in registers
/// while the taps are visited last to first, each overwriting the lanes it matches.
#[inline(always)]
fn first_match(first: &mut [u32], grid: &[f32], src: &[f32], offs: &[usize], n: usize) {
    let none = offs.len() as u32;
    let blocks = first[..n.next_multiple_of(LANES)].chunks_exact_mut(LANES);
    for (b, out) in blocks.enumerate() {
        let i = b * LANES;
        let y = &grid[i..][..LANES];
        let mut acc = [none; LANES];
        for (t, &off) in offs.iter().enumerate().rev() {
            let v = &src[i + off..][..LANES];
            for l in 0..LANES {
                acc[l] = if v[l] == y[l] { t as u32 } else { acc[l] };
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// `dx[i + offs[t]] += grads[i]` where `first[i] == t`, for `i < n`: one pass per tap.
#[inline(always)]
fn scatter_first(dx: &mut [f32], grads: &[f32], first: &[u32], offs: &[usize], n: usize) {
    for (t, &off) in offs.iter().enumerate() {
        let t = t as u32;
        let lanes = dx[off..][..n].iter_mut().zip(&first[..n]).zip(&grads[..n]);
        for ((d, &f), &g) in lanes {
            *d += if f == t { g } else { 0.0 };
        }
    }
}

simd_fn! {
    /// The input gradient of one plane: each output's gradient `g` goes to its window's argmax,
    /// found again from the input `x` and the output `y`. A window's first element equal to its
    /// max is its argmax unless the max is NaN (the argmax is the last NaN) or −∞ (the −∞ frame
    /// matches too); those rare outputs go through [`window_argmax`]. Every element of `dx` is
    /// written.
    fn max_plane_backward(
        win: &Window,
        sc: &mut MaxBackScratch,
        x: &[f32],
        y: &[f32],
        g: &[f32],
        dx: &mut [f32],
    ) {
        sc.src.load(x);
        sc.dx.fill(0.0);
        let (s, pitch, ow, p) = (win.stride, win.pitch(), win.ow, win.padding);
        // Outputs that only `window_argmax` settles are left out of the grid.
        let unsettled = |v: f32| v.is_nan() || v == f32::NEG_INFINITY;
        let settled = |v: f32| if unsettled(v) { f32::NAN } else { v };
        if s == 1 {
            for (oy, (yr, gr)) in y.chunks_exact(ow).zip(g.chunks_exact(ow)).enumerate() {
                let cells = sc.grid[oy * pitch..][..ow].iter_mut();
                cells.zip(yr).for_each(|(d, &v)| *d = settled(v));
                sc.grads[oy * pitch..][..ow].copy_from_slice(gr);
            }
            let n = (win.oh - 1) * pitch + ow;
            first_match(&mut sc.first, &sc.grid, &sc.src.buf, &sc.offs, n);
            scatter_first(&mut sc.dx, &sc.grads, &sc.first, &sc.offs, n);
        } else {
            let n = (ow - 1) * s + 1;
            for (oy, (yr, gr)) in y.chunks_exact(ow).zip(g.chunks_exact(ow)).enumerate() {
                let cells = sc.grid.iter_mut().step_by(s).zip(sc.grads.iter_mut().step_by(s));
                for ((d, dg), (&v, &gv)) in cells.zip(yr.iter().zip(gr)) {
                    (*d, *dg) = (settled(v), gv);
                }
                let at = oy * s * pitch;
                first_match(&mut sc.first, &sc.grid, &sc.src.buf[at..], &sc.offs, n);
                scatter_first(&mut sc.dx[at..], &sc.grads, &sc.first, &sc.offs, n);
            }
        }
        for (d, r) in dx.chunks_exact_mut(win.w).zip(sc.dx[p * pitch + p..].chunks(pitch)) {
            d.copy_from_slice(&r[..win.w]);
        }
        if y.iter().any(|&v| unsettled(v)) {
            for (o, (&v, &gv)) in y.iter().zip(g).enumerate() {
                if unsettled(v) {
                    dx[window_argmax(win, x, o / ow, o % ow)] += gv;
                }
            }
        }
    }
}

/// Buffers of the framed avg-pool backward, built once per task and reused for every plane.
struct AvgBackScratch {
    /// Each output's share of its gradient, placed where its window starts on the stride-1
    /// grid, framed by `kernel − 1` zeros on every side (pitch `w + 2p + k − 1`) and followed by
    /// `kernel − 1` more; zero at the cells no output lands on.
    shares: Vec<f32>,
    pitch: usize,
    rows: Vec<f32>,
    run: Vec<f32>,
}

impl AvgBackScratch {
    fn new(win: &Window) -> AvgBackScratch {
        let k = win.kernel;
        let pitch = win.pitch() + k - 1;
        let cells = (win.h + 2 * win.padding + k - 1) * pitch;
        AvgBackScratch {
            shares: vec![0.0; cells + k - 1],
            pitch,
            rows: vec![0.0; cells],
            run: vec![0.0; (win.h - 1) * pitch + win.w],
        }
    }
}

simd_fn! {
    /// Spreads each output gradient evenly over the in-bounds elements of its window: input cell
    /// (y, x) sums the shares of the outputs whose windows cover it, a k×k box over the shares
    /// (rows, then columns). Every element of `dx` is written.
    fn avg_plane_backward_framed(win: &Window, sc: &mut AvgBackScratch, g: &[f32], dx: &mut [f32]) {
        let (k, s, p, q) = (win.kernel, win.stride, win.padding, sc.pitch);
        for (oy, gr) in g.chunks_exact(win.ow).enumerate() {
            let rows = win.span(oy, win.h).len() as f32;
            let dst = &mut sc.shares[(oy * s + k - 1) * q + k - 1..];
            dst.iter_mut()
                .step_by(s)
                .zip(gr.iter().zip(&win.col_counts))
                .for_each(|(d, (&gv, &c))| *d = gv / (rows * c));
        }
        window_fold(&mut sc.rows, &sc.shares, k, 1, add);
        // Input (y, x) is frame cell (y + p, x + p); the boxes over it start there.
        window_fold(&mut sc.run, &sc.rows[p * q + p..], k, q, add);
        for (d, r) in dx.chunks_exact_mut(win.w).zip(sc.run.chunks(q)) {
            d.copy_from_slice(&r[..win.w]);
        }
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
    if let Some(xb) = x.gpu_buf() {
        return cuda::max_pool2d(x, xb, planes, win);
    }
    let (il, ol) = (win.in_len(), win.out_len());
    let mut out = pool::take(planes * ol);
    let tasks = out
        .par_chunks_mut(ol)
        .zip(x.data().par_chunks(il))
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
        let mut dx = if win.framed() {
            pool::take(planes * il)
        } else {
            pool::take_zeroed(planes * il)
        };
        let tasks = dx
            .par_chunks_mut(il)
            .zip(g.data().par_chunks(ol))
            .zip(xs.data().par_chunks(il).zip(ys.data().par_chunks(ol)))
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
    if let Some(xb) = x.gpu_buf() {
        return cuda::avg_pool2d(x, xb, planes, win);
    }
    let (il, ol) = (win.in_len(), win.out_len());
    let mut out = if win.framed() {
        pool::take(planes * ol)
    } else {
        pool::take_zeroed(planes * ol)
    };
    let tasks = out
        .par_chunks_mut(ol)
        .zip(x.data().par_chunks(il))
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
        let mut dx = if win.framed() {
            pool::take(planes * il)
        } else {
            pool::take_zeroed(planes * il)
        };
        let tasks = dx
            .par_chunks_mut(il)
            .zip(g.data().par_chunks(ol))
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
    if let Some(xb) = x.gpu_buf() {
        return cuda::global_avg_pool(x, xb, n * c, hw);
    }
    let mut out = vec![0.0f32; n * c];
    out.par_iter_mut()
        .zip(x.data().par_chunks(hw))
        .with_min_len(planes_per_task(hw))
        .for_each(|(o, p)| *o = (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32);
    let in_shape = x.shape().to_vec();
    let out = Tensor::from_parts(out, &[n, c]);
    Ok(tape::record("global_avg_pool", out, &[x], move |g, _| {
        let mut dx = pool::take(n * c * hw);
        dx.par_chunks_mut(hw)
            .zip(g.data().par_iter())
            .with_min_len(planes_per_task(hw))
            .for_each(|(d, &gv)| d.fill(gv / hw as f32));
        Ok(vec![Some(Tensor::from_parts(dx, &in_shape))])
    }))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    /// The textbook loops over a padded window, as an oracle for the kernels.
    fn naive(x: &Tensor, k: usize, s: usize, p: usize, max: bool) -> Vec<f32> {
        let (n, c, h, w) = x.dims4("naive").unwrap();
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let d = x.data();
        let mut out = Vec::new();
        for plane in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut vals = Vec::new();
                    for ky in 0..k {
                        for kx in 0..k {
                            let (y, xx) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                vals.push(d[plane * h * w + y as usize * w + xx as usize]);
                            }
                        }
                    }
                    out.push(if max {
                        vals.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                    } else {
                        vals.iter().sum::<f32>() / vals.len() as f32
                    });
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
    }

    #[test]
    fn match_the_naive_loops_on_odd_shapes() {
        let mut rng = StdRng::seed_from_u64(3);
        // The second shape is large enough to run on several threads.
        for shape in [[2, 3, 7, 9], [4, 20, 33, 31]] {
            // All negative, so a padding treated as 0 instead of −∞ would show.
            let x = Tensor::uniform(&shape, -5.0, -1.0, &mut rng);
            for (k, s, p) in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2), (1, 1, 0)] {
                let m = max_pool2d(&x, k, s, p).unwrap();
                let a = avg_pool2d(&x, k, s, p).unwrap();
                assert!(
                    close(m.data(), &naive(&x, k, s, p, true)),
                    "max {k} {s} {p}"
                );
                assert!(
                    close(a.data(), &naive(&x, k, s, p, false)),
                    "avg {k} {s} {p}"
                );
                let oh = (shape[2] + 2 * p - k) / s + 1;
                let ow = (shape[3] + 2 * p - k) / s + 1;
                assert_eq!(m.shape(), [shape[0], shape[1], oh, ow]);
            }
        }
    }

    #[test]
    fn max_propagates_nan() {
        let x = Tensor::from_vec(vec![1.0, f32::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
        let y = max_pool2d(&x, 2, 1, 1).unwrap().to_vec();
        // Windows holding the NaN (index 1) give NaN; the bottom-left corner sees only 3.0.
        assert!(
            y[0] == 1.0 && y[1].is_nan() && y[2].is_nan() && y[6] == 3.0,
            "{y:?}"
        );
    }

    #[test]
    fn pytorch_output_sizes() {
        let x = Tensor::zeros(&[1, 1, 7, 9]);
        // torch: max_pool2d(ones(1,1,7,9), 3, 2, 1).shape == (1, 1, 4, 5); (2, 2, 0) -> (3, 4)
        assert_eq!(max_pool2d(&x, 3, 2, 1).unwrap().shape(), [1, 1, 4, 5]);
        assert_eq!(avg_pool2d(&x, 2, 2, 0).unwrap().shape(), [1, 1, 3, 4]);
        assert_eq!(avg_pool2d(&x, 3, 1, 1).unwrap().shape(), [1, 1, 7, 9]);
    }

    #[test]
    fn avg_divides_by_in_bounds_count() {
        let x = Tensor::ones(&[1, 1, 3, 3]);
        let y = avg_pool2d(&x, 3, 1, 1).unwrap();
        assert_eq!(y.to_vec(), vec![1.0; 9]);
        let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
        // Top-left window covers 1, 2, 4, 5.
        assert_eq!(avg_pool2d(&x, 3, 1, 1).unwrap().data()[0], 3.0);
    }

    #[test]
    fn max_backward_routes_to_the_argmax() {
        let x = Tensor::from_vec(vec![1.0, 4.0, 3.0, 2.0], &[1, 1, 2, 2])
            .unwrap()
            .requires_grad();
        let y = crate::ops::sum(&max_pool2d(&x, 2, 1, 1).unwrap()).unwrap();
        // Nine windows: 4 wins four of them, 3 wins three, 1 and 2 only their own corners.
        let g = y.backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 4.0, 3.0, 1.0]);
        // On ties the first element in row-major order wins, as in PyTorch.
        let x = Tensor::ones(&[1, 1, 2, 2]).requires_grad();
        let y = crate::ops::sum(&max_pool2d(&x, 2, 1, 0).unwrap()).unwrap();
        let g = y.backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 0.0, 0.0, 0.0]);
    }

    /// Random planes with many ties, −∞ runs and a few NaNs: the cases where an argmax found
    /// again by equality could differ from the forward's rule.
    fn awkward(shape: &[usize], seed: u64) -> Tensor {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let mut v: Vec<f32> = (0..n)
            .map(|_| match rng.random_range(0..20) {
                0..=3 => f32::NEG_INFINITY,
                4 => f32::NAN,
                5 => -0.0,
                r => (r % 4) as f32,
            })
            .collect();
        // One plane entirely −∞, and one entirely −∞ but for a NaN in its middle.
        let hw = shape[2] * shape[3];
        v[..hw].fill(f32::NEG_INFINITY);
        v[hw..2 * hw].fill(f32::NEG_INFINITY);
        v[hw + hw / 2] = f32::NAN;
        Tensor::from_vec(v, shape).unwrap()
    }

    /// Integer gradients, so that every sum of them is exact whatever its order.
    fn int_grads(shape: &[usize], seed: u64) -> Tensor {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| rng.random_range(-4..=4) as f32).collect(),
            shape,
        )
        .unwrap()
    }

    /// The gradient of `Σ g ⊙ max_pool2d(x)` through the tape.
    fn max_grad(x: &Tensor, g: &Tensor, k: usize, s: usize, p: usize) -> Vec<f32> {
        let x = x.detach().requires_grad();
        let y = max_pool2d(&x, k, s, p).unwrap();
        let loss = crate::ops::sum(&crate::ops::mul(&y, g).unwrap()).unwrap();
        loss.backward().unwrap().get(&x).unwrap().to_vec()
    }

    #[test]
    fn max_backward_finds_the_forward_argmax_again() {
        let cases = [
            ([2, 3, 7, 9], 3, 1, 1),
            ([2, 3, 7, 9], 3, 2, 1),
            ([2, 3, 8, 6], 2, 2, 0),
            ([1, 4, 9, 11], 5, 3, 2),
            ([2, 2, 5, 6], 2, 1, 1),
            ([1, 3, 20, 19], 17, 1, 8), // past FRAMED_MAX_KERNEL: the direct kernels
            ([8, 8, 28, 28], 3, 1, 1),  // several tasks
            ([8, 8, 28, 28], 3, 2, 1),
        ];
        for (i, (shape, k, s, p)) in cases.into_iter().enumerate() {
            let x = awkward(&shape, i as u64);
            let (planes, win) = Window::new("test", &x, k, s, p).unwrap();
            let (il, ol) = (win.in_len(), win.out_len());
            let y = max_pool2d(&x, k, s, p).unwrap();
            let g = int_grads(y.shape(), 100 + i as u64);
            // The oracle: the direct kernel's values, and its argmaxes for the gradient.
            let mut want_dx = vec![0.0f32; planes * il];
            let (mut best, mut arg, mut scratch) = (vec![0.0; ol], vec![0u32; ol], vec![0.0; ol]);
            for pl in 0..planes {
                max_plane(
                    &win,
                    &x.data()[pl * il..][..il],
                    &mut best,
                    &mut arg,
                    &mut scratch,
                );
                let got = &y.data()[pl * ol..][..ol];
                for (o, (&a, &b)) in got.iter().zip(&best).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{i} {o}"
                    );
                    let at = arg[o] as usize;
                    assert_eq!(
                        at,
                        window_argmax(&win, &x.data()[pl * il..], o / win.ow, o % win.ow)
                    );
                    want_dx[pl * il + at] += g.data()[pl * ol + o];
                }
            }
            assert_eq!(
                max_grad(&x, &g, k, s, p),
                want_dx,
                "case {i}: {shape:?} k{k} s{s} p{p}"
            );
        }
    }

    #[test]
    fn avg_backward_matches_a_direct_scatter() {
        let mut rng = StdRng::seed_from_u64(9);
        for (shape, k, s, p) in [
            ([2, 3, 7, 9], 3, 1, 1),
            ([2, 3, 7, 9], 3, 2, 1),
            ([1, 4, 9, 11], 5, 3, 2),
            ([2, 2, 5, 6], 2, 1, 1),
            ([1, 3, 20, 19], 17, 1, 8),
            ([8, 8, 28, 28], 3, 2, 1),
        ] {
            let x = Tensor::uniform(&shape, -1.0, 1.0, &mut rng).requires_grad();
            let y = avg_pool2d(&x, k, s, p).unwrap();
            let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
            let loss = crate::ops::sum(&crate::ops::mul(&y, &g).unwrap()).unwrap();
            let got = loss.backward().unwrap().get(&x).unwrap().to_vec();
            let (planes, win) = Window::new("test", &x, k, s, p).unwrap();
            let (il, ol) = (win.in_len(), win.out_len());
            let mut want = vec![0.0f32; planes * il];
            for pl in 0..planes {
                let mut share = vec![0.0; win.ow];
                let (gp, d) = (&g.data()[pl * ol..][..ol], &mut want[pl * il..][..il]);
                avg_plane_backward(&win, gp, d, &mut share);
            }
            assert!(close(&got, &want), "{shape:?} k{k} s{s} p{p}");
        }
    }

    #[test]
    fn global_avg_pool_shape_and_value() {
        let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[2, 3, 1, 2]).unwrap();
        let y = global_avg_pool(&x).unwrap();
        assert_eq!(y.shape(), [2, 3]);
        assert_eq!(y.to_vec(), vec![0.5, 2.5, 4.5, 6.5, 8.5, 10.5]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::zeros(&[1, 2, 5, 5]);
        assert!(max_pool2d(&x, 0, 1, 0).is_err());
        assert!(max_pool2d(&x, 3, 0, 1).is_err());
        assert!(avg_pool2d(&x, 3, 1, 2).is_err(), "padding above kernel/2");
        assert!(avg_pool2d(&x, 7, 1, 0).is_err(), "empty output");
        assert!(max_pool2d(&Tensor::zeros(&[2, 5, 5]), 3, 1, 1).is_err());
        // A kernel as large as it gets, with padding to match: one window over the whole plane.
        let huge = max_pool2d(&x, usize::MAX, 1, usize::MAX / 2).unwrap();
        assert_eq!(huge.shape(), [1, 2, 5, 5]);
        assert!(global_avg_pool(&Tensor::zeros(&[2, 5])).is_err());
        assert!(global_avg_pool(&Tensor::zeros(&[2, 5, 0, 3])).is_err());
        let e = avg_pool2d(&x, 7, 1, 0).unwrap_err().to_string();
        assert!(
            e.contains("avg_pool2d") && e.contains("[1, 2, 5, 5]"),
            "{e}"
        );
    }
}
