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
use super::padded::{Padded, SLACK};

/// Lanes per block: four AVX-512 registers of i32 (the padded input's slack covers the reads
/// of a block that runs past the row).
const BLOCK: usize = SLACK;

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
    // Each lane's constants are its channel's, repeated every C lanes: tiled by whole-pixel
    // copies (a lane-by-lane `j % C` would cost more than the convolution at batch 1).
    let tile = |row: &mut [i32], per: &[i32]| {
        row[..len]
            .chunks_exact_mut(c)
            .for_each(|px| px.copy_from_slice(per));
    };
    let mut wexp = vec![0i32; kk * lenp];
    for (row, per) in wexp.chunks_exact_mut(lenp).zip(taps.chunks_exact(c)) {
        tile(row, per);
    }
    let bias: Vec<i32> = (0..c)
        .map(|ch| epi.bias[ch] - zp * (0..kk).map(|t| taps[t * c + ch]).sum::<i32>())
        .collect();
    let mut bexp = vec![0i32; lenp];
    tile(&mut bexp, &bias);
    let mut mexp = vec![0f32; lenp];
    mexp[..len]
        .chunks_exact_mut(c)
        .for_each(|px| px.copy_from_slice(&epi.mult[..c]));
    let lanes = Lanes {
        w: &wexp,
        bias: &bexp,
        mult: &mexp,
        zp: epi.zp,
        lo: epi.lo,
    };
    let taps_at = pad.taps(conv.k);
    let mut offs = vec![0usize; kk];
    for (r, yrow) in y.chunks_exact_mut(len).enumerate().take(n * oh) {
        let base = pad.row_start(r / oh, r % oh);
        for (o, &t) in offs.iter_mut().zip(&taps_at) {
            *o = base + t;
        }
        row(isa, &pad.data, &offs, &lanes, yrow);
    }
}

/// One output row's per-lane constants, each `lenp` long (the row rounded up to a block):
/// weights `w[tap·lenp + j]`, bias with the zero point folded in, multipliers.
struct Lanes<'a> {
    w: &'a [i32],
    bias: &'a [i32],
    mult: &'a [f32],
    zp: i32,
    lo: i32,
}

/// One output row `y` from the taps starting at `offs` in `data`.
fn row(isa: Isa, data: &[u8], offs: &[usize], lanes: &Lanes, y: &mut [u8]) {
    let lenp = y.len().div_ceil(BLOCK) * BLOCK;
    assert!(
        offs.iter().all(|&o| o + lenp <= data.len())
            && lanes.w.len() >= offs.len() * lenp
            && lanes.bias.len() >= lenp
            && lanes.mult.len() >= lenp,
        "int8 depthwise: buffers too small"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` names it only where the CPU has the features; the sizes were
        // checked above.
        Isa::Avx512Vnni => unsafe { x86::row_vnni(data, offs, lanes, y) },
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
    use super::{Lanes, BLOCK};

    /// [`super::row_plain`] with the block's four accumulators in registers.
    ///
    /// # Safety
    /// The CPU has AVX-512 VNNI; the sizes are those `super::row` checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn row_vnni(data: &[u8], offs: &[usize], lanes: &Lanes, y: &mut [u8]) {
        let len = y.len();
        let lenp = len.div_ceil(BLOCK) * BLOCK;
        let rq = Requant16::new(lanes.zp, lanes.lo);
        let (x, w) = (data.as_ptr(), lanes.w.as_ptr());
        for j0 in (0..len).step_by(BLOCK) {
            let mut acc = [_mm512_setzero_si512(); 4];
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_si512(lanes.bias.as_ptr().add(j0 + 16 * v) as *const _);
            }
            for (t, &o) in offs.iter().enumerate() {
                let (xt, wt) = (x.add(o + j0), w.add(t * lenp + j0));
                for (v, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_cvtepu8_epi32(_mm_loadu_si128(xt.add(16 * v) as *const _));
                    let wv = _mm512_loadu_si512(wt.add(16 * v) as *const _);
                    *a = _mm512_dpwssd_epi32(*a, xv, wv);
                }
            }
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
}
