//! The separable pooling kernels on framed planes (see the parent module's docs): row folds,
//! column folds, and max pooling's argmax found again in the backward.

use super::*;

/// Kernels up to this size run on framed planes; larger ones on the direct loops.
pub(super) const FRAMED_MAX_KERNEL: usize = 16;

impl Window {
    /// Whether the separable kernels on a framed plane apply.
    pub(super) fn framed(&self) -> bool {
        self.kernel <= FRAMED_MAX_KERNEL
    }

    /// An output buffer of `len` for this window's kernels: the framed ones write every
    /// element, the direct ones add onto zeros.
    pub(super) fn take_output(&self, len: usize) -> Vec<f32> {
        if self.framed() {
            pool::take(len)
        } else {
            pool::take_zeroed(len)
        }
    }

    /// Row pitch of the framed plane.
    pub(super) fn pitch(&self) -> usize {
        self.w + 2 * self.padding
    }

    /// Cells of the framed plane (without the tail that [`Framed`] adds).
    pub(super) fn frame_cells(&self) -> usize {
        (self.h + 2 * self.padding) * self.pitch()
    }
}

/// A plane inside a frame of `padding` cells of a fill value on every side, at row pitch
/// `w + 2·padding`, followed by `tail` more fill cells (at least `kernel − 1`, so that a window
/// starting on any cell of the frame stays inside the buffer). `load` rewrites only the plane's
/// cells, so the frame keeps its fill from plane to plane.
pub(super) struct Framed {
    pub(super) buf: Vec<f32>,
    pub(super) w: usize,
    pub(super) pad: usize,
    pub(super) pitch: usize,
}

impl Framed {
    pub(super) fn new(win: &Window, fill: f32, tail: usize) -> Framed {
        Framed {
            buf: vec![fill; win.frame_cells() + tail],
            w: win.w,
            pad: win.padding,
            pitch: win.pitch(),
        }
    }

    #[inline(always)]
    pub(super) fn load(&mut self, plane: &[f32]) {
        for (r, src) in plane.chunks_exact(self.w).enumerate() {
            let at = (self.pad + r) * self.pitch + self.pad;
            self.buf[at..at + self.w].copy_from_slice(src);
        }
    }
}

/// The max of two window elements, `b` before `v`: `v` wins if it is larger or NaN, as in
/// PyTorch. A bit-mask blend rather than `if`, which LLVM may turn into a branch per lane.
#[inline(always)]
pub(super) fn max_nan(b: f32, v: f32) -> f32 {
    let m = (((v > b) | v.is_nan()) as u32).wrapping_neg();
    f32::from_bits((v.to_bits() & m) | (b.to_bits() & !m))
}

#[inline(always)]
pub(super) fn add(a: f32, b: f32) -> f32 {
    a + b
}

/// `dst[i] = f(…f(f(src[i], src[i + step]), src[i + 2·step])…, src[i + (k − 1)·step])`: each
/// lane folds `k` cells `step` apart, in order. A 3-cell window is one pass over memory.
#[inline(always)]
pub(super) fn window_fold(
    dst: &mut [f32],
    src: &[f32],
    k: usize,
    step: usize,
    f: impl Fn(f32, f32) -> f32,
) {
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
pub(super) struct PoolScratch {
    pub(super) src: Framed,
    /// Row folds of every framed cell.
    pub(super) rows: Vec<f32>,
    /// Column folds: the outputs at the frame's pitch (stride 1) or one row of them (strided).
    pub(super) run: Vec<f32>,
}

impl PoolScratch {
    pub(super) fn new(win: &Window, fill: f32) -> PoolScratch {
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
pub(super) fn fold_windows(
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
    pub(super) fn max_plane_framed(win: &Window, sc: &mut PoolScratch, x: &[f32], out: &mut [f32]) {
        fold_windows(win, sc, x, out, max_nan);
    }
}

simd_fn! {
    /// Average of each window of one plane over its in-bounds elements, on a plane framed by 0.
    pub(super) fn avg_plane_framed(win: &Window, sc: &mut PoolScratch, x: &[f32], out: &mut [f32]) {
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
pub(super) fn window_argmax(win: &Window, x: &[f32], oy: usize, ox: usize) -> usize {
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
pub(super) const LANES: usize = 16;

/// Buffers of the framed max-pool backward, built once per task and reused for every plane.
pub(super) struct MaxBackScratch {
    /// The input plane framed by −∞.
    pub(super) src: Framed,
    /// Offset of each window element from the window's first cell in the frame (row-major).
    pub(super) offs: Vec<usize>,
    /// Outputs placed on the frame's cells where their windows start (stride 1: the whole plane
    /// at the frame's pitch; strided: one row, at every stride-th column), NaN elsewhere, which
    /// equals nothing.
    pub(super) grid: Vec<f32>,
    /// The outputs' gradients, on the same cells as `grid`.
    pub(super) grads: Vec<f32>,
    /// For each grid cell, the first window element equal to it (`kernel²` if none).
    pub(super) first: Vec<u32>,
    /// The input gradient on the framed plane.
    pub(super) dx: Vec<f32>,
}

impl MaxBackScratch {
    pub(super) fn new(win: &Window) -> MaxBackScratch {
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
pub(super) fn first_match(first: &mut [u32], grid: &[f32], src: &[f32], offs: &[usize], n: usize) {
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
pub(super) fn scatter_first(
    dx: &mut [f32],
    grads: &[f32],
    first: &[u32],
    offs: &[usize],
    n: usize,
) {
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
    pub(super) fn max_plane_backward(
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
pub(super) struct AvgBackScratch {
    /// Each output's share of its gradient, placed where its window starts on the stride-1
    /// grid, framed by `kernel − 1` zeros on every side (pitch `w + 2p + k − 1`) and followed by
    /// `kernel − 1` more; zero at the cells no output lands on.
    pub(super) shares: Vec<f32>,
    pub(super) pitch: usize,
    pub(super) rows: Vec<f32>,
    pub(super) run: Vec<f32>,
}

impl AvgBackScratch {
    pub(super) fn new(win: &Window) -> AvgBackScratch {
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
    pub(super) fn avg_plane_backward_framed(win: &Window, sc: &mut AvgBackScratch, g: &[f32], dx: &mut [f32]) {
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
