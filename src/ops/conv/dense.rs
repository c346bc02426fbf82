//! Dense and grouped convolution as GEMMs. Per sample and group `g`, with `P = OH·OW` and
//! `K = Cin/groups·kh·kw`:
//!
//! ```text
//! forward  y_g [Cout/g × P] = W_g [Cout/g × K] · col_g [K × P]
//! dw       dW_g            += dy_g · col_gᵀ
//! dx       dcol_g [K × P]   = W_gᵀ · dy_g, then folded back onto x's grid (col2im)
//! ```
//!
//! `col_g` unfolds the input patches (im2col); a 1×1 stride-1 unpadded conv uses the sample's
//! channel planes as they are. Samples run in parallel, each with its own `col` scratch; with
//! fewer samples than threads they run in turn and each GEMM is split across the threads
//! instead. dW is summed per fixed block of samples and the partials added in order.
//!
//! Small output maps take the batched path instead: every sample's `col_g` side by side in one
//! [K × N·P] matrix and one GEMM for the whole batch, since with P of a few positions the
//! per-sample products are matrix-vector ones that re-pack all of W for every sample. And where
//! the GEMMs would be tiny (narrow 1×1 convs, weight gradients of ≤ 2048 entries), the
//! per-sample products run as the plain loops of `pointwise.rs`.

use rayon::prelude::*;

use super::pointwise;
use super::{chunks_or_none, copy_row, zero_row, Geom};
use crate::device::cpu::{sgemm, sgemm_par, sum_partials, Mat};
use crate::device::pool;

/// [`sgemm`] or [`sgemm_par`]; both give the same bits, so the choice is only about speed.
type Gemm = fn(usize, usize, usize, f32, Mat, Mat, f32, &mut [f32]);

/// Samples whose weight gradient one task accumulates before the partials are summed. Fixed, so
/// the grouping of the sum (and its rounding) never depends on the thread count.
const SAMPLES_PER_PARTIAL: usize = 4;

/// A 1×1 stride-1 unpadded conv: the input planes already are `col`.
fn pointwise(g: &Geom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

/// Output positions per sample up to which the batched path is faster.
const BATCHED_MAX_POSITIONS: usize = 16;

fn batched(g: &Geom) -> bool {
    g.ohw() <= BATCHED_MAX_POSITIONS
}

/// A pointwise conv narrow enough for [`pointwise`]'s loops.
fn narrow(g: &Geom) -> bool {
    pointwise(g)
        && g.groups == 1
        && g.cin.min(g.cout) <= pointwise::MAX_NARROW_SIDE
        && g.cin.max(g.cout) <= pointwise::MAX_WIDE_SIDE
}

fn col_len(g: &Geom) -> usize {
    if pointwise(g) {
        0
    } else {
        g.cin / g.groups * g.kh * g.kw * g.ohw()
    }
}

/// Unfolds the planes `x` [Cin/groups, H, W] of one group into `col` [K, OH·OW], whose rows
/// start `ld` apart; taps that fall in the padding read zero.
fn im2col(g: &Geom, x: &[f32], col: &mut [f32], ld: usize) {
    let (ohw, ow, s) = (g.ohw(), g.ow, g.stride);
    let taps = g.kh * g.kw;
    for r in 0..g.cin / g.groups * taps {
        let row = &mut col[r * ld..][..ohw];
        let (c, ky, kx) = (r / taps, r / g.kw % g.kh, r % g.kw);
        let plane = &x[c * g.hw()..][..g.hw()];
        let ((y0, y1), (x0, x1)) = (g.rows(ky), g.cols(kx));
        row[..y0 * ow].fill(0.0);
        row[y1 * ow..].fill(0.0);
        for oy in y0..y1 {
            let iy = oy * s + ky * g.dil - g.pad;
            let src = &plane[iy * g.w + x0 * s + kx * g.dil - g.pad..];
            let dst = &mut row[oy * ow..][..ow];
            zero_row(&mut dst[..x0]);
            zero_row(&mut dst[x1..]);
            if s == 1 {
                copy_row(&mut dst[x0..x1], src);
            } else {
                for (d, v) in dst[x0..x1].iter_mut().zip(src.iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every entry of `col` onto the input cell it was read from.
fn col2im(g: &Geom, col: &[f32], ld: usize, dx: &mut [f32]) {
    let (ohw, ow, s) = (g.ohw(), g.ow, g.stride);
    let taps = g.kh * g.kw;
    for r in 0..g.cin / g.groups * taps {
        let row = &col[r * ld..][..ohw];
        let (c, ky, kx) = (r / taps, r / g.kw % g.kh, r % g.kw);
        let plane = &mut dx[c * g.hw()..][..g.hw()];
        let ((y0, y1), (x0, x1)) = (g.rows(ky), g.cols(kx));
        for oy in y0..y1 {
            let iy = oy * s + ky * g.dil - g.pad;
            let dst = &mut plane[iy * g.w + x0 * s + kx * g.dil - g.pad..];
            let src = &row[oy * ow + x0..oy * ow + x1];
            if s == 1 {
                dst.iter_mut().zip(src).for_each(|(d, v)| *d += *v);
            } else {
                dst.iter_mut()
                    .step_by(s)
                    .zip(src)
                    .for_each(|(d, v)| *d += *v);
            }
        }
    }
}

/// `y = W · col (+ bias)` for one sample `x` [Cin, H, W] into `y` [Cout, OH, OW].
fn forward_sample(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    col: &mut [f32],
    gemm: Gemm,
) {
    let (cig, cog, p) = (g.cin / g.groups, g.cout / g.groups, g.ohw());
    let k = cig * g.kh * g.kw;
    if narrow(g) {
        return pointwise::mix(Mat::rm(w, k), x, bias, y, p);
    }
    // The bias is preloaded and the GEMM accumulates onto it, saving a pass over y.
    let beta = match bias {
        Some(b) => {
            y.chunks_exact_mut(p).zip(b).for_each(|(r, &v)| r.fill(v));
            1.0
        }
        None => 0.0,
    };
    for gi in 0..g.groups {
        let xg = &x[gi * cig * g.hw()..][..cig * g.hw()];
        let b = if pointwise(g) {
            xg
        } else {
            im2col(g, xg, col, p);
            &*col
        };
        let wg = Mat::rm(&w[gi * cog * k..], k);
        let yg = &mut y[gi * cog * p..][..cog * p];
        gemm(cog, k, p, 1.0, wg, Mat::rm(b, p), beta, yg);
    }
}

/// The batched path's `col` [K, N·P] for group `gi`: sample n's patches in columns n·P.. of
/// every row.
fn im2col_batch(g: &Geom, x: &[f32], gi: usize, col: &mut [f32]) {
    let (cig, p) = (g.cin / g.groups, g.ohw());
    if pointwise(g) {
        // The patches are the planes: a plain regrouping, without im2col's per-row bookkeeping.
        for (at, to, _) in batch_rows(g.n, g.cin, gi * cig..(gi + 1) * cig, p) {
            col[to..to + p].copy_from_slice(&x[at..at + p]);
        }
        return;
    }
    for n in 0..g.n {
        let xg = &x[(n * g.cin + gi * cig) * g.hw()..][..cig * g.hw()];
        im2col(g, xg, &mut col[n * p..], g.n * p);
    }
}

/// Where each P-long row of the channels `group` lives in the batch layout [N, C, P] and in the
/// batched path's GEMM layout [|group|, N·P]: (batch offset, GEMM offset, channel).
fn batch_rows(
    n: usize,
    c: usize,
    group: std::ops::Range<usize>,
    p: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let first = group.start;
    group
        .flat_map(move |ch| (0..n).map(move |i| ((i * c + ch) * p, ((ch - first) * n + i) * p, ch)))
}

fn forward_batched(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (cog, p, np) = (g.cout / g.groups, g.ohw(), g.n * g.ohw());
    let k = g.cin / g.groups * g.kh * g.kw;
    let (mut col, mut yg) = (vec![0.0; k * np], vec![0.0; cog * np]);
    let mut y = pool::take(g.n * g.cout * p);
    for gi in 0..g.groups {
        im2col_batch(g, x, gi, &mut col);
        let wg = Mat::rm(&w[gi * cog * k..], k);
        sgemm_par(cog, k, np, 1.0, wg, Mat::rm(&col, np), 0.0, &mut yg);
        for (at, from, c) in batch_rows(g.n, g.cout, gi * cog..(gi + 1) * cog, p) {
            let b = bias.map_or(0.0, |b| b[c]);
            let (dst, src) = (&mut y[at..at + p], &yg[from..from + p]);
            dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + b);
        }
    }
    y
}

fn backward_batched(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
) {
    let (cig, cog, p, np) = (g.cin / g.groups, g.cout / g.groups, g.ohw(), g.n * g.ohw());
    let k = cig * g.kh * g.kw;
    let (mut col, mut dyg) = (vec![0.0; k * np], vec![0.0; cog * np]);
    for gi in 0..g.groups {
        for (at, to, _) in batch_rows(g.n, g.cout, gi * cog..(gi + 1) * cog, p) {
            dyg[to..to + p].copy_from_slice(&dy[at..at + p]);
        }
        if let Some(dw) = dw.as_deref_mut() {
            im2col_batch(g, x, gi, &mut col);
            let dwg = &mut dw[gi * cog * k..][..cog * k];
            sgemm_par(
                cog,
                np,
                k,
                1.0,
                Mat::rm(&dyg, np),
                Mat::tr(&col, np),
                1.0,
                dwg,
            );
        }
        if let Some(dx) = dx.as_deref_mut() {
            let wg = Mat::tr(&w[gi * cog * k..][..cog * k], k);
            sgemm_par(k, cog, np, 1.0, wg, Mat::rm(&dyg, np), 0.0, &mut col);
            for n in 0..g.n {
                let dxg = &mut dx[(n * g.cin + gi * cig) * g.hw()..][..cig * g.hw()];
                dxg.fill(0.0);
                col2im(g, &col[n * p..], np, dxg);
            }
        }
    }
}

pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if batched(g) {
        return forward_batched(g, x, w, bias);
    }
    let (xs, ys) = (g.cin * g.hw(), g.cout * g.ohw());
    let mut y = pool::take(g.n * ys);
    if g.n >= rayon::current_num_threads() {
        y.par_chunks_mut(ys).zip(x.par_chunks(xs)).for_each_init(
            || vec![0.0; col_len(g)],
            |col, (yn, xn)| forward_sample(g, xn, w, bias, yn, col, sgemm),
        );
    } else {
        let mut col = vec![0.0; col_len(g)];
        for (yn, xn) in y.chunks_mut(ys).zip(x.chunks(xs)) {
            forward_sample(g, xn, w, bias, yn, &mut col, sgemm_par);
        }
    }
    y
}

/// The operands of one backward call, shared by its blocks of samples.
struct Backward<'a> {
    g: &'a Geom,
    x: &'a [f32],
    w: &'a [f32],
    dy: &'a [f32],
}

impl Backward<'_> {
    /// The samples `first..first + SAMPLES_PER_PARTIAL` (fewer at the end of the batch): adds
    /// their weight gradient into `dw` and writes their dx into `dx` (overwritten), where given.
    fn block(
        &self,
        first: usize,
        mut dx: Option<&mut [f32]>,
        mut dw: Option<&mut [f32]>,
        col: &mut [f32],
        gemm: Gemm,
    ) {
        let g = self.g;
        let (cig, cog, p, hw) = (g.cin / g.groups, g.cout / g.groups, g.ohw(), g.hw());
        let k = cig * g.kh * g.kw;
        for i in 0..SAMPLES_PER_PARTIAL.min(g.n - first) {
            let s = first + i;
            for gi in 0..g.groups {
                let xg = &self.x[(s * g.cin + gi * cig) * hw..][..cig * hw];
                let dyg = &self.dy[(s * g.cout + gi * cog) * p..][..cog * p];
                let wg = &self.w[gi * cog * k..][..cog * k];
                if let Some(dw) = dw.as_deref_mut() {
                    let b = if pointwise(g) {
                        xg
                    } else {
                        im2col(g, xg, col, p);
                        &*col
                    };
                    let dwg = &mut dw[gi * cog * k..][..cog * k];
                    if cog * k <= pointwise::DOTS_MAX_WEIGHTS {
                        pointwise::dots(dyg, b, dwg, p);
                    } else {
                        gemm(cog, p, k, 1.0, Mat::rm(dyg, p), Mat::tr(b, p), 1.0, dwg);
                    }
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let dxg = &mut dx[(i * g.cin + gi * cig) * hw..][..cig * hw];
                    let wt = Mat::tr(wg, k);
                    if narrow(g) {
                        pointwise::mix(wt, dyg, None, dxg, p);
                    } else if pointwise(g) {
                        gemm(k, cog, p, 1.0, wt, Mat::rm(dyg, p), 0.0, dxg);
                    } else {
                        gemm(k, cog, p, 1.0, wt, Mat::rm(dyg, p), 0.0, col);
                        dxg.fill(0.0);
                        col2im(g, col, p, dxg);
                    }
                }
            }
        }
    }
}

/// dx (every element written) and dW (added onto) for the whole batch; either may be absent.
pub(super) fn backward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) {
    if batched(g) {
        return backward_batched(g, x, w, dy, dx, dw);
    }
    let blocks = g.n.div_ceil(SAMPLES_PER_PARTIAL);
    let dx_blocks = chunks_or_none(dx, SAMPLES_PER_PARTIAL * g.cin * g.hw(), blocks);
    let op = Backward { g, x, w, dy };
    let want_dw = dw.is_some();
    // One dW partial per block of samples (empty when dW is not wanted).
    let block = |b: usize, dxb: Option<&mut [f32]>, col: &mut Vec<f32>, gemm: Gemm| {
        let mut part = if want_dw {
            vec![0.0; w.len()]
        } else {
            Vec::new()
        };
        let dwb = want_dw.then_some(&mut part[..]);
        op.block(b * SAMPLES_PER_PARTIAL, dxb, dwb, col, gemm);
        part
    };
    let partials: Vec<Vec<f32>> = if blocks >= rayon::current_num_threads() {
        dx_blocks
            .into_par_iter()
            .enumerate()
            .map_init(
                || vec![0.0; col_len(g)],
                |col, (b, dxb)| block(b, dxb, col, sgemm),
            )
            .collect()
    } else {
        let mut col = vec![0.0; col_len(g)];
        let blocks = dx_blocks.into_iter().enumerate();
        blocks
            .map(|(b, dxb)| block(b, dxb, &mut col, sgemm_par))
            .collect()
    };
    if let Some(dw) = dw {
        sum_partials(&partials, dw);
    }
}
