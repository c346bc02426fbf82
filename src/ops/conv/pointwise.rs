//! The products of a small convolution, per sample, as loops over the positions: with a few
//! dozen channels, matrixmultiply spends as long packing its operands as multiplying them
//! (8 → 8 channels on 28×28 maps ran at ~15% of the FMA peak). [`mix`] does the forward and
//! dx of narrow 1×1 convs, [`dots`] the weight gradient of any conv with a small dW. Every output element is summed
//! in a fixed order that does not depend on where it falls in a tile, so results do not depend on
//! the map size or the thread count.

use crate::device::cpu::Mat;
use crate::ops::simd::simd_fn;

/// Where these loops beat the GEMM: at most this many channels on one side (the GEMM's rows are
/// then mostly padding)...
pub(super) const MAX_NARROW_SIDE: usize = 8;
/// ...and at most this many on the other (the loops use separate multiplies and adds, half the
/// GEMM kernel's FMA rate, so wider products favour the GEMM).
pub(super) const MAX_WIDE_SIDE: usize = 32;

/// Positions per tile: the running sums of one output row's tile stay in vector registers.
const TILE: usize = 32;

/// Element (i, j) of `a`.
#[inline(always)]
fn at(a: Mat, i: usize, j: usize) -> f32 {
    a.data[i * a.rs + j * a.cs]
}

simd_fn! {
    /// `out[i, p] = init[i] + Σ_j a[i, j] · x[j, p]` for the rows of `out` ([rows, P]) and `x`
    /// ([K, P]), `init` zero when absent: the forward (a = W) and dx (a = Wᵀ) of a 1×1 conv.
    pub(super) fn mix(a: Mat, x: &[f32], init: Option<&[f32]>, out: &mut [f32], p: usize) {
        let k = x.len() / p;
        for (i, row) in out.chunks_exact_mut(p).enumerate() {
            let start = init.map_or(0.0, |b| b[i]);
            let mut tiles = row.chunks_exact_mut(TILE);
            let mut t0 = 0;
            for tile in &mut tiles {
                let mut acc = [start; TILE];
                for j in 0..k {
                    let (aij, src) = (at(a, i, j), &x[j * p + t0..][..TILE]);
                    acc.iter_mut().zip(src).for_each(|(s, v)| *s += aij * v);
                }
                tile.copy_from_slice(&acc);
                t0 += TILE;
            }
            let rest = tiles.into_remainder();
            rest.fill(start);
            for j in 0..k {
                let (aij, src) = (at(a, i, j), &x[j * p + t0..]);
                rest.iter_mut().zip(src).for_each(|(s, v)| *s += aij * v);
            }
        }
    }
}

/// The weight-gradient size (Cout · K per group) up to which [`dots`] beats the GEMM; past it,
/// re-streaming the rows for every block of outputs costs more than the GEMM's packing (a 3×3
/// 32 → 64 conv's dW takes twice as long as dot products).
pub(super) const DOTS_MAX_WEIGHTS: usize = 2048;

/// Output rows and input rows of one block of [`dots`]: 4 × 2 running sums of 8 lanes and the 6
/// rows' loads fit in the 16 AVX2 registers.
const DOT_ROWS: usize = 4;
const DOT_COLS: usize = 2;
const LANES: usize = 8;

/// The 8 values of `row` from `q` on.
#[inline(always)]
fn lanes_at(row: &[f32], q: usize) -> [f32; LANES] {
    row[q..q + LANES].try_into().expect("a full chunk")
}

simd_fn! {
    /// `dw[o, c] += Σ_p dy[o, p] · x[c, p]` for dy [Cout, P], x [Cin, P], dw [Cout, Cin]: the
    /// weight gradient of a 1×1 conv. Each sum runs lane-wise over the full 8-wide chunks, then
    /// across the lanes, then over the remaining positions.
    pub(super) fn dots(dy: &[f32], x: &[f32], dw: &mut [f32], p: usize) {
        let (cout, cin) = (dy.len() / p, x.len() / p);
        let full = p / LANES * LANES;
        for o0 in (0..cout).step_by(DOT_ROWS) {
            for c0 in (0..cin).step_by(DOT_COLS) {
                // Rows past the end repeat the last one; their sums are computed and dropped.
                let dyr: [&[f32]; DOT_ROWS] =
                    std::array::from_fn(|i| &dy[(o0 + i).min(cout - 1) * p..][..p]);
                let xr: [&[f32]; DOT_COLS] =
                    std::array::from_fn(|j| &x[(c0 + j).min(cin - 1) * p..][..p]);
                let mut acc = [[[0.0f32; LANES]; DOT_COLS]; DOT_ROWS];
                for q in (0..full).step_by(LANES) {
                    let d: [[f32; LANES]; DOT_ROWS] = std::array::from_fn(|i| lanes_at(dyr[i], q));
                    let v: [[f32; LANES]; DOT_COLS] = std::array::from_fn(|j| lanes_at(xr[j], q));
                    for i in 0..DOT_ROWS {
                        for j in 0..DOT_COLS {
                            for l in 0..LANES {
                                acc[i][j][l] += d[i][l] * v[j][l];
                            }
                        }
                    }
                }
                for i in 0..DOT_ROWS.min(cout - o0) {
                    for j in 0..DOT_COLS.min(cin - c0) {
                        let lanes: f32 = acc[i][j].iter().sum();
                        let rest: f32 = (full..p).map(|q| dyr[i][q] * xr[j][q]).sum();
                        dw[(o0 + i) * cin + c0 + j] += lanes + rest;
                    }
                }
            }
        }
    }
}
