//! The f32 inference path's kernels, on the slices of one image (`[C, H, W]`, NCHW) and with no
//! threads of their own: the plan ([`super::plan`]) runs a whole image through them on one
//! core, so each step costs its arithmetic and nothing else. Inference only; the training
//! path's kernels in `ops` keep their own rounding.
//!
//! Every conv takes a ReLU on its input (`relu_in`: applied as it reads, so a standalone ReLU
//! pass is not needed) and an epilogue: maps added to its output (a node's sum) and a ReLU.
//! Products are fused multiply-adds, compiled for AVX-512 and AVX2 and chosen at run time.

use crate::ops::copy_row;

/// Defines `fn $name` from one body compiled for AVX-512 + FMA, AVX2 + FMA and the baseline
/// target, the first the CPU has being chosen at run time. The body and the `#[inline(always)]`
/// helpers it calls are inlined into each copy, so their loops vectorise for each.
macro_rules! fast_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if is_x86_feature_detected!("fma") {
                    if is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has every feature `avx512` was compiled for.
                        return unsafe { avx512($($arg),*) };
                    }
                    if is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU has both features `avx2` was compiled for.
                        return unsafe { avx2($($arg),*) };
                    }
                }
            }
            body($($arg),*)
        }
    };
}

/// The lower bound a value is clamped to: 0 applies a ReLU, −∞ leaves it as is. One `max` in
/// every case keeps the loops free of branches.
pub(super) fn relu_floor(relu: bool) -> f32 {
    if relu {
        0.0
    } else {
        f32::NEG_INFINITY
    }
}

/// What a conv does after its sums: `y = max(Σ + Σ_k add_k, lo)` (see [`relu_floor`]).
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub add: &'a [&'a [f32]],
    pub lo: f32,
}

impl Epilogue<'_> {
    /// Writes `sums` to `out`, which starts at element `at` of the output map. One zipped loop
    /// per count of maps added, so each vectorises without a `memcpy` call.
    #[inline(always)]
    fn store(&self, out: &mut [f32], sums: &[f32], at: usize) {
        let (sums, lo) = (&sums[..out.len()], self.lo);
        match self.add {
            [] => {
                for (o, &v) in out.iter_mut().zip(sums) {
                    *o = v.max(lo);
                }
            }
            [a] => {
                for ((o, &v), &x) in out.iter_mut().zip(sums).zip(&a[at..]) {
                    *o = (v + x).max(lo);
                }
            }
            adds => {
                for (i, (o, &v)) in out.iter_mut().zip(sums).enumerate() {
                    *o = adds.iter().fold(v, |acc, a| acc + a[at + i]).max(lo);
                }
            }
        }
    }
}

/// Positions per tile and output channels per block of [`pointwise`]: 8 × 16 running sums are
/// eight AVX-512 registers, and each input row's tile is loaded once for all eight outputs.
const TILE: usize = 16;
const ROWS: usize = 8;

/// The sums of [`pointwise`] for output channels `o0..o0 + R` on the `TILE` positions of `x`
/// (rows of pitch `xp`) from `t0` on.
#[inline(always)]
fn pw_tile<const R: usize>(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    xp: usize,
    t0: usize,
    o0: usize,
    lo: f32,
) -> [[f32; TILE]; R] {
    let cin = w.len() / b.len();
    let mut acc: [[f32; TILE]; R] = std::array::from_fn(|r| [b[o0 + r]; TILE]);
    for c in 0..cin {
        let row: &[f32; TILE] = x[c * xp + t0..][..TILE].try_into().expect("a full tile");
        let v: [f32; TILE] = std::array::from_fn(|l| row[l].max(lo));
        for (r, sums) in acc.iter_mut().enumerate() {
            let wt = w[(o0 + r) * cin + c];
            for l in 0..TILE {
                sums[l] = wt.mul_add(v[l], sums[l]);
            }
        }
    }
    acc
}

/// Stores the sums `acc` of output channels `o0..` for the `len` positions from `t0` on.
#[inline(always)]
fn pw_store<const R: usize>(
    acc: &[[f32; TILE]; R],
    o0: usize,
    t0: usize,
    len: usize,
    p: usize,
    out: &mut [f32],
    epi: Epilogue,
) {
    for (r, sums) in acc.iter().enumerate() {
        let at = (o0 + r) * p + t0;
        epi.store(&mut out[at..][..len], sums, at);
    }
}

/// Output channels `o0..o0 + R` of [`pointwise`]; the last, partial tile of positions is read
/// from `tail`, a copy of it padded to a whole tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pw_rows<const R: usize>(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    tail: &[f32],
    o0: usize,
    lo: f32,
    out: &mut [f32],
    epi: Epilogue,
) {
    let p = x.len() * b.len() / w.len();
    let full = p / TILE * TILE;
    for t0 in (0..full).step_by(TILE) {
        let acc = pw_tile::<R>(w, b, x, p, t0, o0, lo);
        pw_store::<R>(&acc, o0, t0, TILE, p, out, epi);
    }
    if full < p {
        let acc = pw_tile::<R>(w, b, tail, TILE, 0, o0, lo);
        pw_store::<R>(&acc, o0, full, p - full, p, out, epi);
    }
}

fast_fn! {
    /// A 1×1 conv: `out[o, p] = b[o] + Σ_c w[o, c] · max(x[c, p], lo)`, then the epilogue;
    /// `x` is `[Cin, P]`, `w` `[Cout, Cin]`, `out` `[Cout, P]`, each sum taken over c in order.
    /// `tail` is scratch of at least `Cin · TILE`.
    pub(super) fn pointwise(
        w: &[f32],
        b: &[f32],
        x: &[f32],
        lo: f32,
        out: &mut [f32],
        epi: Epilogue,
        tail: &mut [f32],
    ) {
        let (cout, cin) = (b.len(), w.len() / b.len());
        let p = x.len() / cin;
        let full = p / TILE * TILE;
        for c in 0..cin {
            let t = &mut tail[c * TILE..][..TILE];
            t.fill(0.0);
            t[..p - full].copy_from_slice(&x[c * p + full..][..p - full]);
        }
        let tail = &tail[..cin * TILE];
        let blocked = cout / ROWS * ROWS;
        for o0 in (0..blocked).step_by(ROWS) {
            pw_rows::<ROWS>(w, b, x, tail, o0, lo, out, epi);
        }
        for o0 in blocked..cout {
            pw_rows::<1>(w, b, x, tail, o0, lo, out, epi);
        }
    }
}

/// Every size of one conv on one image, and where its taps read in the framed input.
#[derive(Clone, Debug)]
pub(super) struct ConvGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: (usize, usize),
    pub oh: usize,
    pub ow: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    /// Row pitch and length of one framed input plane (zero padding around it, and room past
    /// it for the last block of outputs).
    pitch: usize,
    plane: usize,
    /// Outputs computed per run (see [`direct`]), a multiple of the block.
    run: usize,
    /// Offset of each tap into the framed plane, in the weight's tap order.
    offs: Vec<usize>,
}

/// Outputs per register block of a direct conv: stride 1 runs over a whole plane, strided ones
/// over one output row.
const RUN_BLOCK: usize = 64;
const ROW_BLOCK: usize = 16;

impl ConvGeom {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        (cin, h, w): (usize, usize, usize),
        (cout, kh, kw): (usize, usize, usize),
        (oh, ow): (usize, usize),
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
    ) -> ConvGeom {
        let pitch = w + 2 * pad;
        let offs: Vec<usize> = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| ky * dil * pitch + kx * dil))
            .collect();
        let last = offs.iter().max().copied().unwrap_or(0);
        let (run, reach) = if stride == 1 {
            let run = ((oh - 1) * pitch + ow).next_multiple_of(RUN_BLOCK);
            (run, last + run)
        } else {
            let run = ow.next_multiple_of(ROW_BLOCK);
            (
                run,
                (oh - 1) * stride * pitch + last + stride * (run - 1) + 1,
            )
        };
        ConvGeom {
            cin,
            h,
            w,
            cout,
            k: (kh, kw),
            oh,
            ow,
            stride,
            pad,
            groups,
            pitch,
            plane: reach.max((h + 2 * pad) * pitch),
            run,
            offs,
        }
    }

    /// A 1×1 unpadded ungrouped conv: [`pointwise`] on the (subsampled) input.
    pub(super) fn is_pointwise(&self) -> bool {
        self.k == (1, 1) && self.pad == 0 && self.groups == 1
    }

    /// Scratch [`conv`] needs.
    pub(super) fn scratch(&self) -> usize {
        if self.is_pointwise() {
            self.cin * (self.oh * self.ow + TILE)
        } else {
            self.cin * self.plane + self.run
        }
    }
}

/// `run[j] = b + Σ_c Σ_t w[c, t] · src_c[base + off_t + s·j]` over the planes `src` (of length
/// `plane`) and the taps `offs`, in blocks of `B` outputs held in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn taps_run<const B: usize>(
    run: &mut [f32],
    src: &[f32],
    plane: usize,
    offs: &[usize],
    w: &[f32],
    b: f32,
    base: usize,
    s: usize,
) {
    for (blk, out) in run.chunks_exact_mut(B).enumerate() {
        let j = base + blk * B * s;
        let mut acc = [b; B];
        for (c, ws) in w.chunks_exact(offs.len()).enumerate() {
            let planes = &src[c * plane..];
            for (&off, &wt) in offs.iter().zip(ws) {
                let x = &planes[off + j..][..s * (B - 1) + 1];
                for (l, a) in acc.iter_mut().enumerate() {
                    *a = wt.mul_add(x[s * l], *a);
                }
            }
        }
        // A whole-array store: 4 vector moves, where a slice copy is a `memcpy` call.
        let out: &mut [f32; B] = out.try_into().expect("a whole block");
        *out = acc;
    }
}

fast_fn! {
    /// A direct conv (any kernel, stride, dilation and groups): each input plane is copied,
    /// through `max(·, lo)`, into a zero frame as wide as the padding, so no loop tests borders.
    /// At stride 1, output (oy, ox) of tap t reads frame cell `oy·pitch + ox + off_t`: computed
    /// at the frame's pitch (the `pitch − OW` extra columns of each row dropped), a plane is one
    /// contiguous run per tap, summed over every tap and input channel in registers. Strided
    /// convs run row by row. `w` is `[Cout, Cin/groups, kh, kw]`.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        g: &ConvGeom,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        lo: f32,
        out: &mut [f32],
        epi: Epilogue,
        scratch: &mut [f32],
    ) {
        let (frame, run) = scratch.split_at_mut(g.cin * g.plane);
        let run = &mut run[..g.run];
        for (f, xp) in frame.chunks_exact_mut(g.plane).zip(x.chunks_exact(g.h * g.w)) {
            f.fill(0.0);
            for (r, src) in xp.chunks_exact(g.w).enumerate() {
                let row = &mut f[(g.pad + r) * g.pitch + g.pad..][..g.w];
                for (d, &v) in row.iter_mut().zip(src) {
                    *d = v.max(lo);
                }
            }
        }
        let (cig, cog) = (g.cin / g.groups, g.cout / g.groups);
        let per = cig * g.offs.len();
        let ohw = g.oh * g.ow;
        for o in 0..g.cout {
            let src = &frame[o / cog * cig * g.plane..];
            let ws = &w[o * per..][..per];
            let y = &mut out[o * ohw..][..ohw];
            if g.stride == 1 {
                taps_run::<RUN_BLOCK>(run, src, g.plane, &g.offs, ws, b[o], 0, 1);
                for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
                    epi.store(row, &run[oy * g.pitch..], o * ohw + oy * g.ow);
                }
            } else {
                for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
                    let base = oy * g.stride * g.pitch;
                    taps_run::<ROW_BLOCK>(run, src, g.plane, &g.offs, ws, b[o], base, g.stride);
                    epi.store(row, run, o * ohw + oy * g.ow);
                }
            }
        }
    }
}

/// The conv `g` of one image: [`pointwise`] for a 1×1 (after subsampling a strided one into
/// scratch), else [`direct`]. `relu_in` applies a ReLU to `x` as it is read.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    g: &ConvGeom,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    relu_in: bool,
    out: &mut [f32],
    epi: Epilogue,
    scratch: &mut [f32],
) {
    let lo = relu_floor(relu_in);
    if !g.is_pointwise() {
        return direct(g, w, b, x, lo, out, epi, scratch);
    }
    if g.stride == 1 {
        return pointwise(w, b, x, lo, out, epi, scratch);
    }
    let (sub, tail) = scratch.split_at_mut(g.cin * g.oh * g.ow);
    let mut at = 0;
    for c in 0..g.cin {
        for oy in 0..g.oh {
            let row = &x[(c * g.h + oy * g.stride) * g.w..][..g.w];
            for ox in 0..g.ow {
                sub[at] = row[ox * g.stride];
                at += 1;
            }
        }
    }
    pointwise(w, b, sub, lo, out, epi, tail)
}

/// The first input and the end of the window of output `o`, clipped to `0..len`.
#[inline(always)]
fn window(o: usize, s: usize, p: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * s).saturating_sub(p);
    let end = (o * s + k).saturating_sub(p).min(len);
    (start, end)
}

/// Sizes of one pool of one image: input and output planes, window, stride, padding.
#[derive(Clone, Copy, Debug)]
pub(super) struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolGeom {
    /// Scratch [`pool`] needs: one framed plane and one of its rows.
    pub(super) fn scratch(&self) -> usize {
        (self.h + 2 * self.pad + 1) * (self.w + 2 * self.pad)
    }
}

/// One plane of [`pool`] from the framed plane `frame`, at stride `S` (or `s` when `S` is 0:
/// a constant stride lets the strided reads vectorise), `join` being max or +: per output row,
/// the window's rows joined across the whole width into `col`, then `col`'s windows.
#[inline(always)]
fn pool_plane<const S: usize>(
    g: &PoolGeom,
    frame: &[f32],
    join: impl Fn(f32, f32) -> f32,
    col: &mut [f32],
    out: &mut [f32],
) {
    let s = if S == 0 { g.stride } else { S };
    let pitch = g.w + 2 * g.pad;
    let col = &mut col[..pitch];
    for (oy, row) in out.chunks_exact_mut(g.ow).enumerate() {
        let rows = &frame[oy * s * pitch..];
        copy_row(col, &rows[..pitch]);
        for ky in 1..g.k {
            for (c, &v) in col.iter_mut().zip(&rows[ky * pitch..][..pitch]) {
                *c = join(*c, v);
            }
        }
        for (ox, o) in row.iter_mut().enumerate() {
            let win = &col[ox * s..][..g.k];
            *o = win[1..].iter().fold(win[0], |a, &v| join(a, v));
        }
    }
}

/// Divides each average of `out` (planes of `oh × ow`) by the in-bounds cells of its window.
fn exclude_padding(g: &PoolGeom, out: &mut [f32]) {
    for plane in out.chunks_exact_mut(g.oh * g.ow) {
        for (oy, row) in plane.chunks_exact_mut(g.ow).enumerate() {
            let (y0, y1) = window(oy, g.stride, g.pad, g.k, g.h);
            for (ox, o) in row.iter_mut().enumerate() {
                let (x0, x1) = window(ox, g.stride, g.pad, g.k, g.w);
                *o /= ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
    }
}

fast_fn! {
    /// Max (padding as −∞) or average (over the in-bounds cells only) pool of the planes of `x`
    /// into `out`: each plane framed by its padding in `scratch`, then joined row by row.
    pub(super) fn pool(g: &PoolGeom, x: &[f32], max: bool, out: &mut [f32], scratch: &mut [f32]) {
        let pitch = g.w + 2 * g.pad;
        let (frame, col) = scratch[..g.scratch()].split_at_mut(g.scratch() - pitch);
        let fill = if max { f32::NEG_INFINITY } else { 0.0 };
        for (xp, yp) in x.chunks_exact(g.h * g.w).zip(out.chunks_exact_mut(g.oh * g.ow)) {
            frame.fill(fill);
            for (r, src) in xp.chunks_exact(g.w).enumerate() {
                copy_row(&mut frame[(g.pad + r) * pitch + g.pad..][..g.w], src);
            }
            match (g.stride, max) {
                (1, true) => pool_plane::<1>(g, frame, f32::max, col, yp),
                (2, true) => pool_plane::<2>(g, frame, f32::max, col, yp),
                (_, true) => pool_plane::<0>(g, frame, f32::max, col, yp),
                (1, false) => pool_plane::<1>(g, frame, |a, b| a + b, col, yp),
                (2, false) => pool_plane::<2>(g, frame, |a, b| a + b, col, yp),
                (_, false) => pool_plane::<0>(g, frame, |a, b| a + b, col, yp),
            }
        }
        if !max {
            exclude_padding(g, out);
        }
    }
}

/// `out[c, i, j] = x[c, i + 1, j + 1]`, zero past the border (planes of `h × w`).
pub(super) fn shift(x: &[f32], (h, w): (usize, usize), out: &mut [f32]) {
    for (xp, yp) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for (i, row) in yp.chunks_exact_mut(w).enumerate() {
            row[w - 1] = 0.0;
            if i + 1 < h {
                copy_row(&mut row[..w - 1], &xp[(i + 1) * w + 1..][..w - 1]);
            } else {
                row.fill(0.0);
            }
        }
    }
}

/// Logits `b + W · mean(x[c])` of the classifier `w` `[classes, C]` on planes of `hw`.
pub(super) fn head(x: &[f32], hw: usize, w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    let pooled: Vec<f32> = x
        .chunks_exact(hw)
        .map(|p| p.iter().sum::<f32>() / hw as f32)
        .collect();
    for (k, (o, row)) in out.iter_mut().zip(w.chunks_exact(pooled.len())).enumerate() {
        let dot: f32 = row.iter().zip(&pooled).map(|(a, v)| a * v).sum();
        *o = dot + b.map_or(0.0, |b| b[k]);
    }
}
