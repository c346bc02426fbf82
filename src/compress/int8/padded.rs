//! [`Padded`], a conv's input copied with its border: the border filled with the zero point
//! (real 0), so every tap is read and none is tested, and each row split into `stride` phases
//! (columns `ph, ph + s, …`), so that the pixels a tap reads for consecutive output pixels are
//! consecutive pixels of one phase, for every stride and dilation; a ReLU applied on the way
//! when the caller fused one.

use super::elementwise::relu_copy;
use super::isa::{for_each_isa, Isa};
use super::map::QTensor;
use crate::ops::Conv2dCfg;

/// Bytes of slack past the last row: a whole vector block may be read from any tap's start,
/// and a 128-byte window from any 16-lane vector's in it (the depthwise VBMI kernel).
pub(super) const SLACK: usize = 192;

pub(super) struct Padded {
    /// Image `s`, padded row `r`, phase `ph`, column `q`, channel `c` at
    /// `(s·rows + r)·row + ph·phase + q·C + c`; then [`SLACK`] bytes.
    pub data: Vec<u8>,
    rows: usize,
    row: usize,
    phase: usize,
    c: usize,
    stride: usize,
    dilation: usize,
}

impl Padded {
    /// `x` (rectified when `relu`) laid out for a window of `cfg`.
    pub fn new(isa: Isa, x: &QTensor, cfg: &Conv2dCfg, relu: bool) -> Padded {
        let [n, h, w, c] = x.shape;
        let (s, p) = (cfg.stride, cfg.padding);
        let (rows, cols) = (h + 2 * p, w + 2 * p);
        let phase = cols.div_ceil(s) * c;
        let row = s * phase;
        let mut data = vec![x.zp; n * rows * row + SLACK];
        let lo = if relu { x.zp } else { 0 };
        let rows_in = x.data.chunks_exact(w * c);
        let at = (0..n).flat_map(|img| (0..h).map(move |r| (img * rows + r + p) * row));
        for (src, at) in rows_in.zip(at) {
            let dst = &mut data[at..][..row];
            if s == 1 {
                relu_copy(isa, &mut dst[p * c..][..w * c], src, lo);
            } else {
                phases_copy(isa, dst, src, (c, s, p, phase), lo);
            }
        }
        Padded {
            data,
            rows,
            row,
            phase,
            c,
            stride: s,
            dilation: cfg.dilation,
        }
    }

    /// Where output row `oy` of image `s` starts reading: its tap `t` reads output pixel
    /// `ox`'s channels at `row_start + taps(k)[t] + ox·C`.
    pub fn row_start(&self, s: usize, oy: usize) -> usize {
        (s * self.rows + oy * self.stride) * self.row
    }

    /// Each tap's offset from [`Padded::row_start`], taps `ky·k + kx` of a `k × k` window.
    pub fn taps(&self, k: usize) -> Vec<usize> {
        let (st, d) = (self.stride, self.dilation);
        (0..k * k)
            .map(|t| {
                let (ky, kx) = (t / k * d, t % k * d);
                ky * self.row + kx % st * self.phase + kx / st * self.c
            })
            .collect()
    }
}

for_each_isa! {
/// One input row's pixels (`c` bytes each) into their stride phases of the padded row `dst`
/// (`p` border columns, `phase` bytes a phase), rectified at `lo`: phase by phase, so without
/// a division per pixel.
fn phases_copy(dst: &mut [u8], src: &[u8], geom: (usize, usize, usize, usize), lo: u8) {
    let (c, s, p, phase) = geom;
    let w = src.len() / c;
    for ph in 0..s {
        let to = &mut dst[ph * phase..][..phase];
        // Padded column q·s + ph is input column q·s + ph − p.
        for (q, px) in to.chunks_exact_mut(c).enumerate() {
            let col = q * s + ph;
            if col >= p && col - p < w {
                let from = &src[(col - p) * c..][..c];
                px.iter_mut().zip(from).for_each(|(d, &v)| *d = v.max(lo));
            }
        }
    }
}
}
