//! [`QConv`], a quantised convolution on channels-last uint8 maps: dense convolutions as one
//! matrix product over (output positions × output channels) ([`gemm`]: patches gathered from
//! the [`Padded`] input, without bounds tests, only when the kernel is larger than 1×1, strided
//! or padded, or the channels are not a multiple of 4), depthwise convolutions on
//! [`depthwise`]'s lane-parallel loops.
//!
//! The accumulator is `Σ w·(x − zp_x) + bias_q`, the bias held as i32 at the accumulator's scale
//! `s_x·s_w` (as standard int8 runtimes store it: quantised once, for the input's scale); the
//! output `requant(acc, s_x·s_w/s_y)` ([`requant`](super::isa::requant)), clamped below at
//! `zp_y` (real 0) when a ReLU follows. Padding holds `zp_x`, which is real 0. The dense
//! kernels multiply raw bytes, so their bias also takes `−zp_x·Σ_k w[o, k]`.

use super::depthwise::depthwise;
use super::gemm::{gemm, Adds, Epilogue, Gemm, PackedW};
use super::isa::Isa;
use super::map::{buffer, OutQ, QTensor};
use super::padded::Padded;
use crate::error::{Error, Result};
use crate::ops::Conv2dCfg;

/// A quantised convolution. `w` is int8 OIHW: `[Cout, Cin, k, k]` (dense, groups = 1) or
/// `[C, 1, k, k]` (depthwise, groups = Cin = Cout); `w_scale` per output channel, `bias` i32 at
/// scale `s_x·w_scale[o]` for inputs of scale `s_x`.
/// The private half is the weights repacked for the kernels, made by [`QConv::new`].
#[derive(Clone, Debug)]
pub struct QConv {
    pub w: Vec<i8>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<i32>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub cfg: Conv2dCfg,
    packed: Packed,
}

#[derive(Clone, Debug)]
enum Packed {
    /// Rows in patch order `[ky][kx][c]`, the order of an NHWC patch.
    Dense(PackedW),
    /// `[tap][c]`, widened to i32: one lane per channel.
    Depthwise(Vec<i32>),
}

/// The output length of a window of `k` taps over `len`.
pub(super) fn out_len(len: usize, k: usize, c: &Conv2dCfg) -> Option<usize> {
    (len + 2 * c.padding)
        .checked_sub(c.dilation * (k - 1) + 1)
        .map(|r| r / c.stride + 1)
}

impl QConv {
    /// Checks the sizes and packs the weights.
    pub fn new(
        w: Vec<i8>,
        w_scale: Vec<f32>,
        bias: Vec<i32>,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: Conv2dCfg,
    ) -> Result<QConv> {
        let dw = cfg.groups > 1;
        let per = if dw { 1 } else { cin };
        let ok = (cfg.groups == 1 || cfg.groups == cin && cin == cout)
            && k > 0
            && cfg.stride > 0
            && cfg.dilation > 0
            && w.len() == cout * per * k * k
            && w_scale.len() == cout
            && bias.len() == cout;
        if !ok {
            return Err(Error::shape(
                "int8 conv",
                format!(
                    "{cin} -> {cout} channels, kernel {k}, groups {}: give OIHW int8 weights and one scale and bias per output channel",
                    cfg.groups
                ),
                &[&[w.len()], &[w_scale.len()], &[bias.len()]],
            ));
        }
        let taps = k * k;
        let packed = if dw {
            let mut t = vec![0i32; taps * cout];
            for (c, row) in w.chunks_exact(taps).enumerate() {
                for (tap, &v) in row.iter().enumerate() {
                    t[tap * cout + c] = v as i32;
                }
            }
            Packed::Depthwise(t)
        } else {
            let mut rows = vec![0i8; w.len()];
            for o in 0..cout {
                for c in 0..cin {
                    for tap in 0..taps {
                        rows[(o * taps + tap) * cin + c] = w[(o * cin + c) * taps + tap];
                    }
                }
            }
            Packed::Dense(PackedW::new(&rows, cout, cin * taps))
        };
        Ok(QConv {
            w,
            w_scale,
            bias,
            cin,
            cout,
            k,
            cfg,
            packed,
        })
    }

    pub fn depthwise(&self) -> bool {
        self.cfg.groups > 1
    }

    fn check(&self, x: &QTensor) -> Result<(usize, usize)> {
        let [_, h, w, c] = x.shape;
        if c != self.cin {
            return Err(Error::shape(
                "int8 conv",
                format!(
                    "weights for {} -> {} channels (NHWC input)",
                    self.cin, self.cout
                ),
                &[&x.shape],
            ));
        }
        match (out_len(h, self.k, &self.cfg), out_len(w, self.k, &self.cfg)) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::shape(
                "int8 conv",
                "kernel larger than input",
                &[&x.shape],
            )),
        }
    }

    /// The i32 bias and multiplier of each output channel, padded to 16 channels.
    fn epilogue(&self, x: &QTensor, out: OutQ) -> Epilogue {
        let sb = |o: usize| x.scale * self.w_scale[o];
        let per = self.w.len() / self.cout;
        let padded = self.cout.div_ceil(16) * 16;
        let mut bias = vec![0i32; padded];
        let mut mult = vec![0f32; padded];
        for o in 0..self.cout {
            let b = self.bias[o];
            let wsum: i32 = self.w[o * per..][..per].iter().map(|&v| v as i32).sum();
            bias[o] = if self.depthwise() {
                b
            } else {
                b - x.zp as i32 * wsum
            };
            mult[o] = sb(o) / out.scale;
        }
        Epilogue {
            bias,
            mult,
            zp: out.zp as i32,
            lo: out.lo(),
        }
    }

    /// The patch of the output position whose window starts at `at` in the padded input into
    /// `row` (its [`PackedW::kp`] bytes) in `[ky][kx][c]` order (`taps` the input's
    /// [`Padded::taps`]); the bytes past the patch may be left with anything, since they meet
    /// zero weights.
    fn gather(&self, pad: &Padded, taps: &[usize], at: usize, row: &mut [u8]) {
        let (c, k) = (self.cin, self.k);
        let run = k * c;
        let dense = self.cfg.stride == 1 && self.cfg.dilation == 1;
        if dense && run <= 4 && (k - 1) * run + 4 <= row.len() {
            // A kernel row's taps are one run of at most 4 bytes (the stem's 3 × 1): copied
            // as one word, whose spill the next run overwrites and the last one's lands past
            // the patch. The padded input's slack covers the spill's read.
            for ky in 0..k {
                let src = at + taps[ky * k];
                let word: [u8; 4] = pad.data[src..src + 4].try_into().expect("4 bytes");
                row[ky * run..ky * run + 4].copy_from_slice(&word);
            }
            return;
        }
        for (dst, &t) in row.chunks_exact_mut(c).zip(taps) {
            if c == 1 {
                // A one-byte copy_from_slice would be a call to memcpy.
                dst[0] = pad.data[at + t];
            } else {
                dst.copy_from_slice(&pad.data[at + t..][..c]);
            }
        }
    }

    /// The convolution of the NHWC map `x`, requantised to `out`.
    pub fn forward(&self, isa: Isa, x: &QTensor, out: OutQ) -> Result<QTensor> {
        self.forward_fused(isa, x, false, &[], out)
    }

    /// [`QConv::forward`] of `relu(x)` when `relu_in` (applied while the input is padded or
    /// gathered, so a ReLU whose only readers are depthwise or strided/padded convs costs no
    /// pass of its own; a plain 1×1 conv takes a rectified copy), plus the maps `adds` in the
    /// epilogue (a node's sum computed by the dense conv of its last term):
    /// `Σ_t s_t·(q_t − zp_t)`, requantised with the conv's output once.
    pub fn forward_fused(
        &self,
        isa: Isa,
        x: &QTensor,
        relu_in: bool,
        adds: &[&QTensor],
        out: OutQ,
    ) -> Result<QTensor> {
        let (oh, ow) = self.check(x)?;
        let n = x.shape[0];
        let shape = [n, oh, ow, self.cout];
        if let Some(t) = adds.iter().find(|t| t.shape != shape) {
            return Err(Error::shape(
                "int8 conv",
                "an added map of another shape",
                &[&shape, &t.shape],
            ));
        }
        let epi = self.epilogue(x, out);
        let terms = Adds::of(adds, out);
        let mut y = buffer(n * oh * ow * self.cout);
        match &self.packed {
            Packed::Depthwise(_) if !adds.is_empty() => {
                return Err(Error::InvalidArgument(
                    "int8 conv: a depthwise conv adds no maps in its epilogue".into(),
                ))
            }
            Packed::Depthwise(taps) => {
                depthwise(isa, self, taps, x, relu_in, (oh, ow), &epi, &mut y);
            }
            Packed::Dense(pw) => {
                let c = &self.cfg;
                let rows = n * oh * ow;
                if self.k == 1 && c.stride == 1 && c.padding == 0 && pw.kp == pw.k {
                    // The map is already the matrix: one row of C bytes per position (a
                    // rectified copy of it for a ReLU read in).
                    let r;
                    let x = if relu_in {
                        r = super::elementwise::rectified(isa, x);
                        &r
                    } else {
                        x
                    };
                    let g = Gemm {
                        a: &x.data,
                        lda: self.cin,
                        rows,
                        w: pw,
                        epi: &epi,
                        adds: &terms,
                    };
                    gemm(isa, &g, &mut y);
                } else {
                    const BLOCK: usize = 64;
                    // The padded copy rectifies as it copies.
                    let pad = Padded::new(isa, x, c, relu_in);
                    let taps = pad.taps(self.k);
                    let mut a = vec![0u8; BLOCK * pw.kp];
                    // Where output position p's window starts, one division per output row.
                    let row_at = |r: usize| pad.row_start(r / oh, r % oh);
                    let (mut r, mut ox, mut at) = (0, 0, row_at(0));
                    for p0 in (0..rows).step_by(BLOCK) {
                        let m = BLOCK.min(rows - p0);
                        for row in a.chunks_exact_mut(pw.kp).take(m) {
                            self.gather(&pad, &taps, at + ox * self.cin, row);
                            ox += 1;
                            if ox == ow {
                                (r, ox) = (r + 1, 0);
                                at = if r < n * oh { row_at(r) } else { 0 };
                            }
                        }
                        let dst = &mut y[p0 * self.cout..][..m * self.cout];
                        let block = terms.rows(p0, m, self.cout);
                        let g = Gemm {
                            a: &a,
                            lda: pw.kp,
                            rows: m,
                            w: pw,
                            epi: &epi,
                            adds: &block,
                        };
                        gemm(isa, &g, dst);
                    }
                }
            }
        }
        Ok(QTensor {
            data: y,
            shape,
            scale: out.scale,
            zp: out.zp,
        })
    }
}
