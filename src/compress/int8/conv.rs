//! int8 layers on uint8 activations (asymmetric per tensor: `real = scale·(q − zero_point)`)
//! and int8 weights (symmetric per output channel, in [−127, 127]): dense convolution (patches
//! gathered per output position, then [`matvec`] against all output channels), depthwise
//! convolution (direct, one plane per task), max and average pooling, and the requantisation
//! from the i32 accumulator to the next layer's uint8.
//!
//! The accumulator is `Σ w·(x − zp_x) + bias_q` with `bias_q = round(b / (s_x·s_w))`; the
//! output `clamp(round(acc · s_x·s_w/s_y) + zp_y)`, clamped below at `zp_y` (real 0) when a
//! ReLU follows. Padding holds `zp_x`, which is real 0. The integer parts are exact, and the
//! one float multiply per output is the same code for every instruction set, so results do not
//! depend on the CPU.

use rayon::prelude::*;

use super::dot::{matvec, Isa};
use crate::error::{Error, Result};
use crate::ops::Conv2dCfg;

/// A uint8 feature map `[N, C, H, W]` with its scale and zero point.
#[derive(Clone, Debug)]
pub struct QTensor {
    pub data: Vec<u8>,
    pub shape: [usize; 4],
    pub scale: f32,
    pub zp: u8,
}

/// Where a layer's output goes: its scale and zero point, and whether a ReLU is fused.
#[derive(Clone, Copy, Debug)]
pub struct OutQ {
    pub scale: f32,
    pub zp: u8,
    pub relu: bool,
}

impl OutQ {
    fn lo(&self) -> i32 {
        if self.relu {
            self.zp as i32
        } else {
            0
        }
    }
}

/// `clamp(round(acc·m) + zp, lo, 255)`.
#[inline]
pub fn requant(acc: i32, m: f32, zp: u8, lo: i32) -> u8 {
    ((acc as f32 * m).round() as i32 + zp as i32).clamp(lo, 255) as u8
}

/// A quantised convolution: weights `[Cout, Cin/groups·kh·kw]` (dense, groups = 1) or
/// `[C, kh·kw]` (depthwise, groups = Cin = Cout).
#[derive(Clone, Debug)]
pub struct QConv {
    pub w: Vec<i8>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub cfg: Conv2dCfg,
}

fn out_len(len: usize, k: usize, c: &Conv2dCfg) -> Option<usize> {
    (len + 2 * c.padding)
        .checked_sub(c.dilation * (k - 1) + 1)
        .map(|r| r / c.stride + 1)
}

impl QConv {
    pub fn depthwise(&self) -> bool {
        self.cfg.groups > 1
    }

    fn check(&self, x: &QTensor) -> Result<(usize, usize)> {
        let [_, c, h, w] = x.shape;
        let ok_groups = self.cfg.groups == 1 || self.cfg.groups == c && self.cout == c;
        let per = if self.cfg.groups == 1 { self.cin } else { 1 };
        if c != self.cin || !ok_groups || self.w.len() != self.cout * per * self.k * self.k {
            return Err(Error::shape(
                "int8 conv",
                format!("weights for {} -> {} channels", self.cin, self.cout),
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

    /// The i32 bias and the requantisation multiplier of each output channel. For the dense
    /// kernel, whose dot products run on raw `x`, the bias also takes `−zp_x·Σ_k w[o, k]`:
    /// `Σ w·(x − zp) = Σ w·x − zp·Σ w`.
    fn epilogue(&self, x: &QTensor, out: OutQ) -> (Vec<i32>, Vec<f32>) {
        let sb = |o: usize| x.scale * self.w_scale[o];
        let per = self.w.len() / self.cout;
        let bias = (0..self.cout).map(|o| {
            let b = (self.bias[o] / sb(o)).round() as i32;
            if self.depthwise() {
                return b;
            }
            let wsum: i32 = self.w[o * per..][..per].iter().map(|&v| v as i32).sum();
            b - x.zp as i32 * wsum
        });
        let mult = (0..self.cout).map(|o| sb(o) / out.scale);
        (bias.collect(), mult.collect())
    }

    /// The patch of output position (oy, ox) in `[c][ky][kx]` order, `zp` outside the map.
    fn gather(
        &self,
        xs: &[u8],
        zp: u8,
        (h, w): (usize, usize),
        oy: usize,
        ox: usize,
        patch: &mut [u8],
    ) {
        let (k, c) = (self.k, &self.cfg);
        let mut i = 0;
        for ch in 0..self.cin {
            let plane = &xs[ch * h * w..][..h * w];
            for ky in 0..k {
                let y = (oy * c.stride + ky * c.dilation) as isize - c.padding as isize;
                for kx in 0..k {
                    let xx = (ox * c.stride + kx * c.dilation) as isize - c.padding as isize;
                    let inside = y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w;
                    patch[i] = if inside {
                        plane[y as usize * w + xx as usize]
                    } else {
                        zp
                    };
                    i += 1;
                }
            }
        }
    }

    /// One depthwise output plane: `Σ_taps w·(x − zp)` over the taps inside the map.
    #[allow(clippy::too_many_arguments)]
    fn depthwise_plane(
        &self,
        zp: u8,
        xp: &[u8],
        ch: usize,
        (h, w, oh, ow): (usize, usize, usize, usize),
        bias: i32,
        mult: f32,
        out: OutQ,
        yp: &mut [u8],
    ) {
        let (k, c) = (self.k, &self.cfg);
        let wk = &self.w[ch * k * k..][..k * k];
        let zp = zp as i32;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias;
                for ky in 0..k {
                    let y = (oy * c.stride + ky * c.dilation) as isize - c.padding as isize;
                    if y < 0 || y as usize >= h {
                        continue;
                    }
                    let row = &xp[y as usize * w..][..w];
                    for kx in 0..k {
                        let xx = (ox * c.stride + kx * c.dilation) as isize - c.padding as isize;
                        if xx >= 0 && (xx as usize) < w {
                            acc += wk[ky * k + kx] as i32 * (row[xx as usize] as i32 - zp);
                        }
                    }
                }
                yp[oy * ow + ox] = requant(acc, mult, out.zp, out.lo());
            }
        }
    }

    /// The convolution of `x`, requantised to `out`.
    pub fn forward(&self, isa: Isa, x: &QTensor, out: OutQ) -> Result<QTensor> {
        let (oh, ow) = self.check(x)?;
        let [n, c, h, w] = x.shape;
        let (bias, mult) = self.epilogue(x, out);
        let mut y = vec![0u8; n * self.cout * oh * ow];
        if self.depthwise() {
            y.par_chunks_mut(oh * ow).enumerate().for_each(|(i, yp)| {
                let ch = i % c;
                let xp = &x.data[i * h * w..][..h * w];
                self.depthwise_plane(x.zp, xp, ch, (h, w, oh, ow), bias[ch], mult[ch], out, yp)
            });
        } else {
            let kk = self.cin * self.k * self.k;
            // Tasks are output rows; each gathers its patches and writes [Cout, ow] at once.
            let rows: Vec<Vec<u8>> = (0..n * oh)
                .into_par_iter()
                .map_init(
                    || (vec![0u8; kk], vec![0i32; self.cout]),
                    |(patch, acc), r| {
                        let (s, oy) = (r / oh, r % oh);
                        let xs = &x.data[s * c * h * w..][..c * h * w];
                        let mut row = vec![0u8; self.cout * ow];
                        for ox in 0..ow {
                            self.gather(xs, x.zp, (h, w), oy, ox, patch);
                            matvec(isa, patch, &self.w, acc);
                            for o in 0..self.cout {
                                let v = acc[o] + bias[o];
                                row[o * ow + ox] = requant(v, mult[o], out.zp, out.lo());
                            }
                        }
                        row
                    },
                )
                .collect();
            let ohw = oh * ow;
            for (r, row) in rows.iter().enumerate() {
                let (s, oy) = (r / oh, r % oh);
                for o in 0..self.cout {
                    let at = (s * self.cout + o) * ohw + oy * ow;
                    y[at..at + ow].copy_from_slice(&row[o * ow..][..ow]);
                }
            }
        }
        Ok(QTensor {
            data: y,
            shape: [n, self.cout, oh, ow],
            scale: out.scale,
            zp: out.zp,
        })
    }
}

/// Max or average pooling of a uint8 map, padding ignored (excluded from the average's count, as
/// the training path does); the output keeps the input's scale and zero point, since both are
/// exact (max) or rounded (average) in the same units.
pub fn pool(x: &QTensor, max: bool, k: usize, stride: usize, pad: usize) -> Result<QTensor> {
    let [n, c, h, w] = x.shape;
    let cfg = Conv2dCfg {
        stride,
        padding: pad,
        dilation: 1,
        groups: 1,
    };
    let (Some(oh), Some(ow)) = (out_len(h, k, &cfg), out_len(w, k, &cfg)) else {
        return Err(Error::shape(
            "int8 pool",
            "window larger than input",
            &[&x.shape],
        ));
    };
    let mut y = vec![0u8; n * c * oh * ow];
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(i, yp)| {
        let xp = &x.data[i * h * w..][..h * w];
        for oy in 0..oh {
            let y0 = (oy * stride) as isize - pad as isize;
            let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(h));
            for ox in 0..ow {
                let x0 = (ox * stride) as isize - pad as isize;
                let (xa, xb) = (x0.max(0) as usize, ((x0 + k as isize) as usize).min(w));
                let (mut m, mut sum) = (0u8, 0u32);
                for yy in ya..yb {
                    for &v in &xp[yy * w + xa..yy * w + xb] {
                        m = m.max(v);
                        sum += v as u32;
                    }
                }
                let cnt = ((yb - ya) * (xb - xa)) as u32;
                yp[oy * ow + ox] = if max {
                    m
                } else {
                    ((sum + cnt / 2) / cnt) as u8
                };
            }
        }
    });
    Ok(QTensor {
        data: y,
        shape: [n, c, oh, ow],
        scale: x.scale,
        zp: x.zp,
    })
}
