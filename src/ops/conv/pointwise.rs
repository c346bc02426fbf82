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

/// Positions per tile and output rows per block: the 4 × 16 running sums of a block stay in
/// eight AVX2 registers while each input row's tile is loaded once for all four outputs.
const TILE: usize = 16;
const ROWS: usize = 4;

/// Element (i, j) of `a`.
#[inline(always)]
fn at(a: Mat, i: usize, j: usize) -> f32 {
    a.data[i * a.rs + j * a.cs]
}

/// How a running sum takes one more product.
trait Madd {
    fn madd(s: f32, a: f32, x: f32) -> f32;
}

/// `s + a·x` rounded twice: what the training path computes on every CPU.
struct Separate;
impl Madd for Separate {
    #[inline(always)]
    fn madd(s: f32, a: f32, x: f32) -> f32 {
        s + a * x
    }
}

/// `s + a·x` rounded once (FMA): for inference, only where the CPU has the instruction.
struct Fused;
impl Madd for Fused {
    #[inline(always)]
    fn madd(s: f32, a: f32, x: f32) -> f32 {
        a.mul_add(x, s)
    }
}

/// The `R` output rows from `i0` on of [`mix`] for the `len` positions from `t0` on, `out`
/// holding just those rows. Called with `len == TILE` the loops have constant bounds, so the
/// running sums live in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn mix_tile<M: Madd, const R: usize>(
    a: Mat,
    x: &[f32],
    start: [f32; R],
    out: &mut [f32],
    p: usize,
    i0: usize,
    t0: usize,
    len: usize,
) {
    let k = x.len() / p;
    let mut acc: [[f32; TILE]; R] = std::array::from_fn(|r| [start[r]; TILE]);
    for j in 0..k {
        let src = &x[j * p + t0..][..len];
        for (r, sums) in acc.iter_mut().enumerate() {
            let arj = at(a, i0 + r, j);
            sums[..len]
                .iter_mut()
                .zip(src)
                .for_each(|(s, &v)| *s = M::madd(*s, arj, v));
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        out[r * p + t0..][..len].copy_from_slice(&sums[..len]);
    }
}

/// The `R` output rows from `i0` on of [`mix`], `out` holding just those rows.
#[inline(always)]
fn mix_rows<M: Madd, const R: usize>(
    a: Mat,
    x: &[f32],
    init: Option<&[f32]>,
    out: &mut [f32],
    p: usize,
    i0: usize,
) {
    let start: [f32; R] = std::array::from_fn(|r| init.map_or(0.0, |b| b[i0 + r]));
    let full = p / TILE * TILE;
    for t0 in (0..full).step_by(TILE) {
        mix_tile::<M, R>(a, x, start, out, p, i0, t0, TILE);
    }
    if full < p {
        mix_tile::<M, R>(a, x, start, out, p, i0, full, p - full);
    }
}

/// `out[i, p] = init[i] + Σ_j a[i, j] · x[j, p]` for the rows of `out` ([rows, P]) and `x`
/// ([K, P]), `init` zero when absent, each sum taken over j in order.
#[inline(always)]
fn mix_with<M: Madd>(a: Mat, x: &[f32], init: Option<&[f32]>, out: &mut [f32], p: usize) {
    let rows = out.len() / p;
    let blocked = rows / ROWS * ROWS;
    for (b, block) in out[..blocked * p].chunks_exact_mut(ROWS * p).enumerate() {
        mix_rows::<M, ROWS>(a, x, init, block, p, b * ROWS);
    }
    for i in blocked..rows {
        mix_rows::<M, 1>(a, x, init, &mut out[i * p..][..p], p, i);
    }
}

simd_fn! {
    /// [`mix_with`] as the training path computes it: the forward (a = W) and dx (a = Wᵀ) of
    /// a 1×1 conv.
    pub(super) fn mix(a: Mat, x: &[f32], init: Option<&[f32]>, out: &mut [f32], p: usize) {
        mix_with::<Separate>(a, x, init, out, p)
    }
}

/// [`mix`] with fused multiply-adds where the CPU has AVX2 and FMA: an inference-path 1×1 conv
/// of any width (the sums then round once per product, not twice).
pub(super) fn mix_fused(a: Mat, x: &[f32], init: Option<&[f32]>, out: &mut [f32], p: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2_fma(a: Mat, x: &[f32], init: Option<&[f32]>, out: &mut [f32], p: usize) {
            mix_with::<Fused>(a, x, init, out, p)
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has both features `avx2_fma` was compiled for.
            return unsafe { avx2_fma(a, x, init, out, p) };
        }
    }
    mix(a, x, init, out, p)
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
