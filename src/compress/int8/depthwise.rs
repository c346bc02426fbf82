//! Depthwise convolution on NHWC uint8 maps: `acc[c] = bias[c] + Σ_taps w[tap][c]·(x − zp)`,
//! taps outside the map skipped (they hold real 0), one i32 lane per channel.
//!
//! At stride 1 the output row is computed as one flat run of `ow·C` lanes: for each tap the
//! input pixels it reads are a contiguous run of the input row too, so each tap is one long
//! multiply-add over slices (the weights and multipliers repeated every C lanes), long enough
//! to fill vector registers even with 8 channels. Other strides go pixel by pixel, the channels
//! as the lanes. The loops are plain Rust compiled for the chosen instruction set
//! ([`for_each_isa`]); integer arithmetic makes every compilation agree exactly.

use super::conv::QConv;
use super::gemm::Epilogue;
use super::isa::{for_each_isa, requant, Isa};
use super::map::QTensor;

/// `conv` (depthwise, weights `taps[tap·C + c]`) of `x` into `y` (NHWC, `oh × ow`).
pub(super) fn depthwise(
    isa: Isa,
    conv: &QConv,
    taps: &[i32],
    x: &QTensor,
    (oh, ow): (usize, usize),
    epi: &Epilogue,
    y: &mut [u8],
) {
    if conv.cfg.stride == 1 {
        flat_rows(isa, conv, taps, x, (oh, ow), epi, y)
    } else {
        pixels(isa, conv, taps, x, (oh, ow), epi, y)
    }
}

/// Input coordinate of output `o` at tap `t` (may be outside the map).
#[inline(always)]
fn at(o: usize, t: usize, conv: &QConv) -> isize {
    (o * conv.cfg.stride + t * conv.cfg.dilation) as isize - conv.cfg.padding as isize
}

for_each_isa! {
fn flat_rows(
    conv: &QConv,
    taps: &[i32],
    x: &QTensor,
    dims: (usize, usize),
    epi: &Epilogue,
    y: &mut [u8],
) {
    let (oh, ow) = dims;
    let [n, h, w, c] = x.shape;
    let (k, len, zp) = (conv.k, ow * c, x.zp as i32);
    let repeat = |v: &[i32]| -> Vec<i32> { (0..len).map(|j| v[j % c]).collect() };
    let wexp: Vec<Vec<i32>> = taps.chunks_exact(c).map(repeat).collect();
    let bexp = repeat(&epi.bias);
    let mexp: Vec<f32> = (0..len).map(|j| epi.mult[j % c]).collect();
    let mut acc = vec![0i32; len];
    for (r, yrow) in y.chunks_exact_mut(len).enumerate().take(n * oh) {
        let (s, oy) = (r / oh, r % oh);
        acc.copy_from_slice(&bexp);
        for ky in 0..k {
            let iy = at(oy, ky, conv);
            if iy < 0 || iy as usize >= h {
                continue;
            }
            let xrow = &x.data[(s * h + iy as usize) * w * c..][..w * c];
            for kx in 0..k {
                // Output pixels ox whose input ox + off lies inside the row.
                let off = at(0, kx, conv);
                let lo = (-off).max(0) as usize;
                let hi = (w as isize - off).clamp(0, ow as isize) as usize;
                if lo >= hi {
                    continue;
                }
                let xs = &xrow[(lo as isize + off) as usize * c..][..(hi - lo) * c];
                let ws = &wexp[ky * k + kx][lo * c..hi * c];
                for ((a, &wv), &xv) in acc[lo * c..hi * c].iter_mut().zip(ws).zip(xs) {
                    *a += wv * (xv as i32 - zp);
                }
            }
        }
        for ((o, &a), &m) in yrow.iter_mut().zip(&acc).zip(&mexp) {
            *o = requant(a, m, epi.zp, epi.lo);
        }
    }
}
}

for_each_isa! {
fn pixels(
    conv: &QConv,
    taps: &[i32],
    x: &QTensor,
    dims: (usize, usize),
    epi: &Epilogue,
    y: &mut [u8],
) {
    let (oh, ow) = dims;
    let [_, h, w, c] = x.shape;
    let (k, zp) = (conv.k, x.zp as i32);
    let mut acc = vec![0i32; c];
    for (p, ypx) in y.chunks_exact_mut(c).enumerate() {
        let (s, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        acc.copy_from_slice(&epi.bias[..c]);
        for ky in 0..k {
            let iy = at(oy, ky, conv);
            for kx in 0..k {
                let ix = at(ox, kx, conv);
                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                    continue;
                }
                let xs = &x.data[((s * h + iy as usize) * w + ix as usize) * c..][..c];
                let ws = &taps[(ky * k + kx) * c..][..c];
                for ((a, &wv), &xv) in acc.iter_mut().zip(ws).zip(xs) {
                    *a += wv * (xv as i32 - zp);
                }
            }
        }
        for (o, (&a, &m)) in ypx.iter_mut().zip(acc.iter().zip(&epi.mult)) {
            *o = requant(a, m, epi.zp, epi.lo);
        }
    }
}
}
