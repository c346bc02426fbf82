//! Depthwise convolution (one input channel per group, `Cout = m·Cin`), computed directly on
//! each plane: the op is memory bound, and im2col would multiply its traffic by kh·kw.
//!
//! Each source plane is copied into a buffer with a zero frame as wide as the padding
//! ([`Framed`]), so no loop tests borders. With stride 1, output (oy, ox) of tap t reads buffer
//! cell `oy·pitch + ox + off_t`, `off_t = ky·d·pitch + kx·d`: computing the outputs with the
//! buffer's row pitch (and dropping the `pitch − OW` extra columns of each row) turns a whole
//! plane into one contiguous run per tap, which [`taps_run`] sums over the taps in registers,
//! 64 outputs at a time. Strided convs run the same kernel row by row.
//!
//! Backward, stride 1: dx is the forward conv of dy with the kernel mirrored and padding
//! `(k−1)d − p`, and dw[t] is one dot product of dy (laid out with the input buffer's pitch, its
//! extra columns zero) with the input buffer shifted by `off_t`. Where the mirrored padding
//! would be negative, or with a channel multiplier, dy is scattered into a framed dx instead.
//! A strided conv's backward is that of its stride-1 twin, with dy widened by zeros ([`widen`]). One task per sample streams through contiguous
//! memory; each sample's dw is kept apart (in f64) and the samples are summed in order, so dw is
//! the same whatever the number of threads.
//!
//! The crate targets baseline x86-64 (SSE2); [`simd_fn`] compiles the plane loops a second time
//! for AVX2 and picks that copy at run time, doubling the vector width. Products and sums stay
//! separate (no FMA), so both copies round identically.

use rayon::prelude::*;

use super::{chunks_or_none, copy_row, Geom};
use crate::device::pool;
use crate::ops::simd::simd_fn;

/// Outputs per register block on a stride-1 run (8 AVX2 registers of sums: enough independent
/// additions to hide their latency), and on a row of a strided conv.
const RUN_BLOCK: usize = 64;
const ROW_BLOCK: usize = 8;

/// A plane of `cols` columns stored from (`top`, `left`) on in a zeroed buffer of row pitch
/// `pitch`. `load` rewrites only the plane's cells, so the frame stays zero from plane to plane.
struct Framed {
    buf: Vec<f32>,
    cols: usize,
    top: usize,
    left: usize,
    pitch: usize,
}

impl Framed {
    fn new(len: usize, pitch: usize, cols: usize, top: usize, left: usize) -> Framed {
        Framed {
            buf: vec![0.0; len],
            cols,
            top,
            left,
            pitch,
        }
    }

    /// Inlined, so the copy is compiled into the callers' AVX2 versions too.
    #[inline(always)]
    fn load(&mut self, plane: &[f32]) {
        for (r, src) in plane.chunks_exact(self.cols).enumerate() {
            let at = (self.top + r) * self.pitch + self.left;
            copy_row(&mut self.buf[at..][..self.cols], src);
        }
    }
}

/// Single-plane convolutions that all share one geometry: the framed source, the offset of each
/// tap into it (in the weight's tap order), the output size and the stride.
struct PlaneConv {
    src: Framed,
    offs: Vec<usize>,
    ow: usize,
    stride: usize,
    /// Outputs computed in whole register blocks before the extra ones are dropped: the plane at
    /// the source's pitch (stride 1) or one row (strided).
    run: Vec<f32>,
}

fn taps(g: &Geom) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ky, kx)))
}

impl PlaneConv {
    /// A source of `rows × cols` framed by `py` rows and `px` columns of zeros, and outputs
    /// `oh × ow` at stride `s`. The buffer extends past the frame so that whole blocks of
    /// outputs read inside it (their extra outputs are dropped).
    fn new(
        (rows, cols): (usize, usize),
        (py, px): (usize, usize),
        (oh, ow): (usize, usize),
        s: usize,
        offs: impl Fn(usize) -> Vec<usize>,
    ) -> PlaneConv {
        let pitch = cols + 2 * px;
        let offs = offs(pitch);
        let last = offs.iter().max().copied().unwrap_or(0);
        let (run, reach) = if s == 1 {
            let run = ((oh - 1) * pitch + ow).next_multiple_of(RUN_BLOCK);
            (run, last + run)
        } else {
            let run = ow.next_multiple_of(ROW_BLOCK);
            (run, (oh - 1) * s * pitch + last + s * (run - 1) + 1)
        };
        let len = reach.max((rows + 2 * py) * pitch);
        PlaneConv {
            src: Framed::new(len, pitch, cols, py, px),
            offs,
            ow,
            stride: s,
            run: vec![0.0; run],
        }
    }

    /// The forward conv of `g`, reading an input plane framed by the padding.
    fn forward(g: &Geom) -> PlaneConv {
        let d = g.dil;
        let offs = |pitch| taps(g).map(|(ky, kx)| ky * d * pitch + kx * d).collect();
        let (p, o) = ((g.pad, g.pad), (g.oh, g.ow));
        PlaneConv::new((g.h, g.w), p, o, g.stride, offs)
    }

    /// dx of the stride-1 conv `g` as a forward conv of one dy plane: the taps mirrored, padding
    /// `(k−1)d − p` on each axis (see [`transposable`]).
    fn transposed(g: &Geom) -> PlaneConv {
        let d = g.dil;
        let p = ((g.kh - 1) * d - g.pad, (g.kw - 1) * d - g.pad);
        let mirror = |pitch| {
            let at = |(ky, kx)| (g.kh - 1 - ky) * d * pitch + (g.kw - 1 - kx) * d;
            taps(g).map(at).collect()
        };
        PlaneConv::new((g.oh, g.ow), p, (g.h, g.w), 1, mirror)
    }
}

/// dx can be computed by [`PlaneConv::transposed`]: stride 1, one output channel per input
/// channel (so each dx plane comes from one dy plane), and a padding that leaves the mirrored
/// conv's padding non-negative.
fn transposable(g: &Geom) -> bool {
    let reach = (g.kh.min(g.kw) - 1) * g.dil;
    g.stride == 1 && g.cout == g.cin && g.pad <= reach
}

/// `out[j] = init + Σ_t ws[t] · src[offs[t] + s·j]`, summed in tap order, in blocks of `B`
/// outputs held in registers: each tap then costs one load, one multiply and one add per output.
/// `out.len()` is a multiple of `B`.
#[inline(always)]
fn taps_run<const B: usize>(
    out: &mut [f32],
    src: &[f32],
    offs: &[usize],
    ws: &[f32],
    init: f32,
    s: usize,
) {
    debug_assert_eq!(out.len() % B, 0);
    for (b, block) in out.chunks_exact_mut(B).enumerate() {
        let j = b * B;
        let mut acc = [init; B];
        for (&off, &wt) in offs.iter().zip(ws) {
            let x = &src[off + s * j..][..s * (B - 1) + 1];
            for (l, a) in acc.iter_mut().enumerate() {
                *a += wt * x[s * l];
            }
        }
        block.copy_from_slice(&acc);
    }
}

/// `Σ_i a[i] · b[i]` with 32 independent partial sums (so it vectorises and the additions do
/// not wait on each other), in a fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 32;
    let mut acc = [0.0f32; L];
    let mut chunks = a.chunks_exact(L);
    let mut j = 0;
    for c in &mut chunks {
        let y = &b[j..][..L];
        for (l, a) in acc.iter_mut().enumerate() {
            *a += c[l] * y[l];
        }
        j += L;
    }
    let mut tail = 0.0;
    for &v in chunks.remainder() {
        tail += v * b[j];
        j += 1;
    }
    // A plain sum: out-of-order execution overlaps it with the next dot product, and folding the
    // lanes pairwise got the loop above vectorised worse.
    acc.iter().sum::<f32>() + tail
}

simd_fn! {
    /// `out = init + Σ_t ws[t] · (tap t over the framed plane)` for one plane.
    fn conv_plane(pc: &mut PlaneConv, plane: &[f32], ws: &[f32], init: f32, out: &mut [f32]) {
        pc.src.load(plane);
        let (pitch, ow, s) = (pc.src.pitch, pc.ow, pc.stride);
        if s == 1 {
            taps_run::<RUN_BLOCK>(&mut pc.run, &pc.src.buf, &pc.offs, ws, init, 1);
            for (o, r) in out.chunks_exact_mut(ow).zip(pc.run.chunks(pitch)) {
                copy_row(o, r);
            }
        } else {
            for (oy, o) in out.chunks_exact_mut(ow).enumerate() {
                let src = &pc.src.buf[oy * s * pitch..];
                taps_run::<ROW_BLOCK>(&mut pc.run, src, &pc.offs, ws, init, s);
                copy_row(o, &pc.run);
            }
        }
    }
}

pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (m, kk, hw, ohw) = (g.cout / g.cin, g.kh * g.kw, g.hw(), g.ohw());
    let mut y = pool::take(g.n * g.cout * ohw);
    y.par_chunks_mut(ohw).enumerate().for_each_init(
        || PlaneConv::forward(g),
        |pc, (i, yp)| {
            let (n, o) = (i / g.cout, i % g.cout);
            let xp = &x[(n * g.cin + o / m) * hw..][..hw];
            let init = bias.map_or(0.0, |b| b[o]);
            conv_plane(pc, xp, &w[o * kk..][..kk], init, yp);
        },
    );
    y
}

/// `dy` of the strided conv `g` placed at every `g.stride`-th row and column of the output grid
/// of its stride-1 twin `g1`, zeros elsewhere.
fn widen(g: &Geom, g1: &Geom, dy: &[f32]) -> Vec<f32> {
    let (ohw, ohw1, s) = (g.ohw(), g1.ohw(), g.stride);
    let mut up = pool::take_zeroed(g.n * g.cout * ohw1);
    up.par_chunks_mut(ohw1)
        .zip(dy.par_chunks(ohw))
        .with_min_len(64)
        .for_each(|(u, d)| {
            for (oy, row) in d.chunks_exact(g.ow).enumerate() {
                let dst = &mut u[oy * s * g1.ow..];
                dst.iter_mut()
                    .step_by(s)
                    .zip(row)
                    .for_each(|(u, &v)| *u = v);
            }
        });
    up
}

/// Per-task buffers of the backward, built once per task and reused for every sample.
struct BackwardScratch {
    /// Its framed input and tap offsets serve dw; it is never run.
    xs: PlaneConv,
    /// dy at the input buffer's pitch, its extra columns zero, as long as the forward's run.
    dy_run: Framed,
    /// dx as a conv of dy, where [`transposable`].
    dyconv: Option<PlaneConv>,
    /// Otherwise dx is scattered into a plane framed like the forward's input.
    frame: Vec<f32>,
}

impl BackwardScratch {
    fn new(g: &Geom) -> BackwardScratch {
        let xs = PlaneConv::forward(g);
        let dy_run = Framed::new(xs.run.len(), xs.src.pitch, g.ow, 0, 0);
        let dyconv = transposable(g).then(|| PlaneConv::transposed(g));
        let frame = match dyconv {
            Some(_) => Vec::new(),
            None => vec![0.0; xs.src.buf.len()],
        };
        BackwardScratch {
            xs,
            dy_run,
            dyconv,
            frame,
        }
    }
}

simd_fn! {
    /// The backward of one sample: its dx (when wanted) and its dw, added into `dw` (f64, empty
    /// when not wanted).
    fn sample_backward(
        g: &Geom,
        sc: &mut BackwardScratch,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f64],
    ) {
        let mut dx = dx;
        debug_assert_eq!(g.stride, 1, "strided convs are widened to stride 1 first");
        let (m, kk, hw, ohw) = (g.cout / g.cin, g.kh * g.kw, g.hw(), g.ohw());
        let BackwardScratch { xs, dy_run, dyconv, frame } = sc;
        let pitch = xs.src.pitch;
        for c in 0..g.cin {
            if !dw.is_empty() {
                xs.src.load(&x[c * hw..][..hw]);
            }
            let mut dxp = dx.as_deref_mut().map(|d| &mut d[c * hw..][..hw]);
            frame.fill(0.0);
            for o in c * m..(c + 1) * m {
                let dyp = &dy[o * ohw..][..ohw];
                let wo = &w[o * kk..][..kk];
                if !dw.is_empty() {
                    let acc = &mut dw[o * kk..][..kk];
                    dy_run.load(dyp);
                    for (a, &off) in acc.iter_mut().zip(&xs.offs) {
                        *a += f64::from(dot(&dy_run.buf, &xs.src.buf[off..]));
                    }
                }
                let Some(dxp) = dxp.as_deref_mut() else { continue };
                match dyconv.as_mut() {
                    Some(dc) => conv_plane(dc, dyp, wo, 0.0, dxp),
                    None => {
                        for (oy, r) in dyp.chunks_exact(g.ow).enumerate() {
                            for (&off, &wt) in xs.offs.iter().zip(wo) {
                                let dst = &mut frame[oy * pitch + off..];
                                for (d, &v) in dst.iter_mut().zip(r) {
                                    *d += wt * v;
                                }
                            }
                        }
                    }
                }
            }
            if let (None, Some(dxp)) = (&dyconv, dxp) {
                for (iy, row) in dxp.chunks_exact_mut(g.w).enumerate() {
                    copy_row(row, &frame[(iy + g.pad) * pitch + g.pad..]);
                }
            }
        }
    }
}

/// dx (every element written) and dw for the whole batch, one task per sample. Each sample's dw
/// is summed in f64 and the samples are added in order, whatever the number of threads.
pub(super) fn backward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) {
    if g.stride > 1 {
        // A stride-s conv is the stride-1 conv read at every s-th output, so its backward is the
        // stride-1 backward of dy spread onto the stride-1 grid with zeros in between. That is s²
        // times the arithmetic, but in contiguous vector loops: the strided row loops it replaces
        // ran scalar and took ~4x as long per call in a search step.
        let g1 = Geom {
            stride: 1,
            oh: g.h + 2 * g.pad - g.dil * (g.kh - 1),
            ow: g.w + 2 * g.pad - g.dil * (g.kw - 1),
            ..*g
        };
        let dy1 = widen(g, &g1, dy);
        backward(&g1, x, w, &dy1, dx, dw);
        pool::give(dy1);
        return;
    }
    let (xs, ys) = (g.cin * g.hw(), g.cout * g.ohw());
    let dw_len = if dw.is_some() { w.len() } else { 0 };
    let partials: Vec<Vec<f64>> = chunks_or_none(dx, xs, g.n)
        .into_par_iter()
        .enumerate()
        .map_init(
            || BackwardScratch::new(g),
            |sc, (n, dxn)| {
                let mut part = vec![0.0; dw_len];
                let (xn, dyn_) = (&x[n * xs..][..xs], &dy[n * ys..][..ys]);
                sample_backward(g, sc, xn, w, dyn_, dxn, &mut part);
                part
            },
        )
        .collect();
    if let Some(dw) = dw {
        for (i, d) in dw.iter_mut().enumerate() {
            *d = partials.iter().map(|p| p[i]).sum::<f64>() as f32;
        }
    }
}
