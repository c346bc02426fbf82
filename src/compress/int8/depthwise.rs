//! Depthwise convolution on NHWC uint8 maps: `acc[c] = bias[c] + Σ_taps w[tap][c]·(x − zp)`,
//! one i32 lane per channel.
//!
//! The input is first copied into a [`Padded`] buffer (border of zero points, rows split into
//! `stride` phases, a ReLU applied on the way when the caller fused one), where, for every
//! stride and dilation, the pixels a tap reads for one output row are one contiguous run of
//! bytes, and the output row is one flat run of `ow·C` lanes (the weights repeated every
//! C lanes), long enough to fill vector registers even with 8 channels. With the zero point
//! folded into the bias (`bias − zp·Σ_taps w`), a lane is `bias + Σ_taps w·x` on raw bytes.
//!
//! The rows are cut into blocks of 64 lanes whose accumulators stay in registers across all
//! taps and are requantised straight from them: by hand on AVX-512 (`vpdpwssd` multiplies the
//! zero-extended byte by the weight and adds, exact since both fit in i16), elsewhere plain
//! Rust compiled per instruction set ([`for_each_isa`]), the reference.

use super::conv::QConv;
use super::gemm::Epilogue;
use super::isa::{for_each_isa, requant, Isa};
use super::map::QTensor;
use super::padded::Padded;

/// Lanes per block: four AVX-512 registers of i32.
const BLOCK: usize = 64;

/// The bytes a VBMI tap group may span from its first tap's start, for one 16-lane vector:
/// two 64-byte loads that `vpermt2b` picks from.
const WINDOW: usize = 128;

/// The taps summed by one instruction: where each group starts reading (its first tap's offset
/// from the row start) and, on [`Isa::Avx512Vbmi`], the byte permutation that gathers up to
/// four taps of a window into the four bytes of each lane (`vpdpbusd` then sums all four). On
/// the other instruction sets every tap is its own group.
struct Groups {
    /// Taps packed by VBMI permutations (else single taps).
    vbmi: bool,
    taps: Vec<Vec<usize>>,
    at: Vec<usize>,
    idx: Vec<[u8; 64]>,
    /// Every permutation stays in the first 64 bytes (one load and `vpermb`).
    narrow: bool,
}

impl Groups {
    /// Single taps; or, for `vbmi`, each row's consecutive taps packed by fours while their
    /// bytes fit one [`WINDOW`] (offsets `taps_at`, `k` taps a row).
    fn new(taps_at: &[usize], k: usize, vbmi: bool) -> Groups {
        let mut taps: Vec<Vec<usize>> = Vec::new();
        for t in 0..taps_at.len() {
            let joins = |g: &Vec<usize>| {
                vbmi && g.len() < 4
                    && g[0] / k == t / k
                    && taps_at[t] - taps_at[g[0]] + 16 <= WINDOW
            };
            match taps.last_mut() {
                Some(g) if joins(g) => g.push(t),
                _ => taps.push(vec![t]),
            }
        }
        let at = taps.iter().map(|g| taps_at[g[0]]).collect();
        let idx = taps
            .iter()
            .map(|g| {
                let mut idx = [0u8; 64];
                for (b, v) in idx.iter_mut().enumerate() {
                    let (l, j) = (b / 4, b % 4);
                    // A byte past the group's taps meets a zero weight: any in-window byte.
                    let d = g.get(j).map_or(0, |&t| taps_at[t] - taps_at[g[0]]);
                    *v = (d + l) as u8;
                }
                idx
            })
            .collect::<Vec<[u8; 64]>>();
        let narrow = idx.iter().flatten().all(|&b| b < 64);
        Groups {
            vbmi,
            taps,
            at,
            idx,
            narrow,
        }
    }

    /// Group `g`'s weights for channel `ch`: one i32 (a single tap), or its taps' int8 weights
    /// as the four bytes of one (VBMI).
    fn weight(&self, g: usize, taps: &[i32], c: usize, ch: usize) -> i32 {
        let w = |t: usize| taps[t * c + ch];
        if !self.vbmi {
            return w(self.taps[g][0]);
        }
        let bytes = self.taps[g].iter().enumerate();
        bytes.fold(0u32, |v, (j, &t)| v | (w(t) as i8 as u8 as u32) << (8 * j)) as i32
    }
}

/// `conv` (depthwise, weights `taps[tap·C + c]`) of `x`, or of `relu(x)` when `relu_in`, into
/// `y` (NHWC, `oh × ow`).
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    isa: Isa,
    conv: &QConv,
    taps: &[i32],
    x: &QTensor,
    relu_in: bool,
    (oh, ow): (usize, usize),
    epi: &Epilogue,
    y: &mut [u8],
) {
    let [n, _, _, c] = x.shape;
    let pad = Padded::new(isa, x, &conv.cfg, relu_in);
    let (kk, len) = (conv.k * conv.k, ow * c);
    let lenp = len.div_ceil(BLOCK) * BLOCK;
    let zp = x.zp as i32;
    // At stride 1 a row's taps are evenly spaced in one run of bytes: VBMI can gather them.
    let vbmi = isa == Isa::Avx512Vbmi && conv.cfg.stride == 1;
    let taps_at = pad.taps(conv.k);
    let groups = Groups::new(&taps_at, conv.k, vbmi);
    let mut wexp = vec![0i32; groups.at.len() * lenp];
    for (g, row) in wexp.chunks_exact_mut(lenp).enumerate() {
        let per: Vec<i32> = (0..c).map(|ch| groups.weight(g, taps, c, ch)).collect();
        tile(&mut row[..len], &per);
    }
    let bias: Vec<i32> = (0..c)
        .map(|ch| epi.bias[ch] - zp * (0..kk).map(|t| taps[t * c + ch]).sum::<i32>())
        .collect();
    let mut bexp = vec![0i32; lenp];
    tile(&mut bexp[..len], &bias);
    let mut mexp = vec![0f32; lenp];
    tile(&mut mexp[..len], &epi.mult[..c]);
    let lanes = Lanes {
        c,
        w: &wexp,
        bias: &bexp,
        mult: &mexp,
        zp: epi.zp,
        lo: epi.lo,
    };
    let mut offs = vec![0usize; groups.at.len()];
    for (r, yrow) in y.chunks_exact_mut(len).enumerate().take(n * oh) {
        let base = pad.row_start(r / oh, r % oh);
        for (o, &t) in offs.iter_mut().zip(&groups.at) {
            *o = base + t;
        }
        row(isa, &pad.data, &offs, &groups, &lanes, yrow);
    }
}

/// A channel's constants `per` repeated over the lanes of `row`, one whole-pixel copy each (a
/// lane-by-lane `j % C` would cost more than the convolution at batch 1).
fn tile<T: Copy>(row: &mut [T], per: &[T]) {
    row.chunks_exact_mut(per.len())
        .for_each(|px| px.copy_from_slice(per));
}

/// One output row's per-lane constants, each `lenp` long (the row rounded up to a block):
/// weights `w[tap·lenp + j]`, bias with the zero point folded in, multipliers.
struct Lanes<'a> {
    /// Channels: the lanes' constants repeat every `c`.
    c: usize,
    w: &'a [i32],
    bias: &'a [i32],
    mult: &'a [f32],
    zp: i32,
    lo: i32,
}

/// One output row `y` from the tap `groups` starting at `offs` in `data`: single taps, or
/// taps gathered by the groups' VBMI permutations.
fn row(isa: Isa, data: &[u8], offs: &[usize], groups: &Groups, lanes: &Lanes, y: &mut [u8]) {
    let lenp = y.len().div_ceil(BLOCK) * BLOCK;
    // A vector's window starts at most 48 bytes into the row's last block.
    let reach = if groups.vbmi {
        lenp - BLOCK + 48 + WINDOW
    } else {
        lenp
    };
    assert!(
        offs.iter().all(|&o| o + reach <= data.len())
            && groups.idx.len() == offs.len()
            && lanes.w.len() >= offs.len() * lenp
            && lanes.bias.len() >= lenp
            && lanes.mult.len() >= lenp,
        "int8 depthwise: buffers too small"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` names these only where the CPU has the features; the sizes
        // were checked above.
        Isa::Avx512Vbmi if groups.vbmi => unsafe { x86::row_vbmi(data, offs, groups, lanes, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512Vbmi => unsafe { x86::row_vnni(data, offs, lanes, y) },
        _ => row_plain(isa, data, offs, lanes, y),
    }
}

for_each_isa! {
fn row_plain(data: &[u8], offs: &[usize], lanes: &Lanes, y: &mut [u8]) {
    let lenp = y.len().div_ceil(BLOCK) * BLOCK;
    let mut acc = [0i32; BLOCK];
    for (b, yb) in y.chunks_mut(BLOCK).enumerate() {
        let j0 = b * BLOCK;
        acc.copy_from_slice(&lanes.bias[j0..][..BLOCK]);
        for (t, &o) in offs.iter().enumerate() {
            let xs = &data[o + j0..][..BLOCK];
            let ws = &lanes.w[t * lenp + j0..][..BLOCK];
            for ((a, &w), &x) in acc.iter_mut().zip(ws).zip(xs) {
                *a += w * x as i32;
            }
        }
        for ((o, &a), &m) in yb.iter_mut().zip(&acc).zip(&lanes.mult[j0..]) {
            *o = requant(a, m, lanes.zp, lanes.lo);
        }
    }
}
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::isa::x86::Requant16;
    use super::{Groups, Lanes, BLOCK};

    /// [`super::row_plain`] with the block's four accumulators in registers.
    ///
    /// # Safety
    /// The CPU has AVX-512 VNNI; the sizes are those `super::row` checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn row_vnni(data: &[u8], offs: &[usize], lanes: &Lanes, y: &mut [u8]) {
        let len = y.len();
        let lenp = len.div_ceil(BLOCK) * BLOCK;
        let (x, w) = (data.as_ptr(), lanes.w.as_ptr());
        for j0 in (0..len).step_by(BLOCK) {
            let mut acc = bias(lanes, j0);
            for (t, &o) in offs.iter().enumerate() {
                let (xt, wt) = (x.add(o + j0), w.add(t * lenp + j0));
                for (v, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_cvtepu8_epi32(_mm_loadu_si128(xt.add(16 * v) as *const _));
                    let wv = _mm512_loadu_si512(wt.add(16 * v) as *const _);
                    *a = _mm512_dpwssd_epi32(*a, xv, wv);
                }
            }
            store(&acc, lanes, j0, y);
        }
    }

    /// [`row_vnni`] on tap groups: for each 16 lanes, `vpermt2b` gathers a group's taps from
    /// a 128-byte window into the four bytes of each lane, and one `vpdpbusd` adds their
    /// products (u8 × i8, exact in i32) instead of one `vpdpwssd` per tap.
    ///
    /// # Safety
    /// The CPU has AVX-512 VNNI and VBMI; the sizes are those `super::row` checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    pub(super) unsafe fn row_vbmi(
        data: &[u8],
        offs: &[usize],
        groups: &Groups,
        lanes: &Lanes,
        y: &mut [u8],
    ) {
        // With C dividing 16 every vector of lanes has the same weights.
        let periodic = 16 % lanes.c == 0;
        let idx = &groups.idx;
        match (groups.narrow, periodic) {
            (true, true) => groups_vbmi::<true, true>(data, offs, idx, lanes, y),
            (true, false) => groups_vbmi::<true, false>(data, offs, idx, lanes, y),
            (false, true) => groups_vbmi::<false, true>(data, offs, idx, lanes, y),
            (false, false) => groups_vbmi::<false, false>(data, offs, idx, lanes, y),
        }
    }

    /// [`row_vbmi`] for windows of 64 bytes (`NARROW`: one load and `vpermb`) or 128, and
    /// weights that repeat every 16 lanes (`PERIODIC`: one load per group and row) or not.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    unsafe fn groups_vbmi<const NARROW: bool, const PERIODIC: bool>(
        data: &[u8],
        offs: &[usize],
        idx: &[[u8; 64]],
        lanes: &Lanes,
        y: &mut [u8],
    ) {
        let len = y.len();
        let lenp = len.div_ceil(BLOCK) * BLOCK;
        let (x, w) = (data.as_ptr(), lanes.w.as_ptr());
        for j0 in (0..len).step_by(BLOCK) {
            let mut acc = bias(lanes, j0);
            for (g, &o) in offs.iter().enumerate() {
                let iv = _mm512_loadu_si512(idx[g].as_ptr() as *const _);
                let (xg, wg) = (x.add(o + j0), w.add(g * lenp + j0));
                let w0 = _mm512_loadu_si512(w.add(g * lenp) as *const _);
                for (v, a) in acc.iter_mut().enumerate() {
                    let lo = _mm512_loadu_si512(xg.add(16 * v) as *const _);
                    let xv = if NARROW {
                        _mm512_permutexvar_epi8(iv, lo)
                    } else {
                        let hi = _mm512_loadu_si512(xg.add(16 * v + 64) as *const _);
                        _mm512_permutex2var_epi8(lo, iv, hi)
                    };
                    let wv = if PERIODIC {
                        w0
                    } else {
                        _mm512_loadu_si512(wg.add(16 * v) as *const _)
                    };
                    *a = _mm512_dpbusd_epi32(*a, xv, wv);
                }
            }
            store(&acc, lanes, j0, y);
        }
    }

    /// The block at lane `j0`'s four accumulators, started at the bias.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn bias(lanes: &Lanes, j0: usize) -> [__m512i; 4] {
        let b = lanes.bias.as_ptr().add(j0);
        [0, 1, 2, 3].map(|v| _mm512_loadu_si512(b.add(16 * v) as *const _))
    }

    /// The block's accumulators requantised into `y` (the lanes before its end).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store(acc: &[__m512i; 4], lanes: &Lanes, j0: usize, y: &mut [u8]) {
        let len = y.len();
        let rq = Requant16::new(lanes.zp, lanes.lo);
        for (v, a) in acc.iter().enumerate() {
            let at = j0 + 16 * v;
            if at >= len {
                break;
            }
            let mult = _mm512_loadu_ps(lanes.mult.as_ptr().add(at));
            let cnt = (len - at).min(16);
            let mask: __mmask16 = if cnt == 16 { !0 } else { (1 << cnt) - 1 };
            let dst = y.as_mut_ptr().add(at) as *mut i8;
            _mm_mask_storeu_epi8(dst, mask, rq.bytes(*a, mult));
        }
    }
}
