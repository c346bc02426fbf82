//! The int8 steps that are not convolutions, on NHWC maps: pools (channels as lanes), ReLU,
//! sums and requantisation (one f32 multiply-add per term and element, in plain loops that
//! [`for_each_isa`] vectorises), concatenation along channels, the one-pixel shift, per-channel
//! affine maps (a 256-entry table per channel), and the conversions at the program's two ends.

use super::conv::out_len;
use super::gemm::Adds;
use super::isa::{for_each_isa, to_u8, Isa};
use super::map::{buffer, OutQ, QTensor};
use crate::error::{Error, Result};
use crate::ops::Conv2dCfg;

/// Max or average pooling, padding ignored (excluded from the average's count, as the
/// training path does); the output keeps the input's scale and zero point, since both are
/// exact (max) or rounded (average, half up) in the same units.
pub fn pool(
    isa: Isa,
    x: &QTensor,
    max: bool,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<QTensor> {
    let [n, h, w, c] = x.shape;
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
    if k * k > 255 {
        return Err(Error::InvalidArgument(format!(
            "int8 pool: a {k}x{k} window is too large (at most 15x15)"
        )));
    }
    let mut y = buffer(n * oh * ow * c);
    pool_into(isa, x, max, (k, stride, pad), (oh, ow), &mut y);
    Ok(QTensor {
        data: y,
        shape: [n, oh, ow, c],
        scale: x.scale,
        zp: x.zp,
    })
}

/// ReLU in place: real 0 is the zero point.
pub fn relu(isa: Isa, x: &mut QTensor) {
    relu_bytes(isa, &mut x.data, x.zp);
}

/// A rectified copy of `x`, in one pass.
pub fn rectified(isa: Isa, x: &QTensor) -> QTensor {
    let mut data = buffer(x.data.len());
    relu_copy(isa, &mut data, &x.data, x.zp);
    QTensor { data, ..*x }
}

for_each_isa! {
/// `dst = max(src, lo)`.
pub(super) fn relu_copy(dst: &mut [u8], src: &[u8], lo: u8) {
    dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v.max(lo));
}
}

for_each_isa! {
fn relu_bytes(data: &mut [u8], zp: u8) {
    data.iter_mut().for_each(|v| *v = (*v).max(zp));
}
}

/// `Σ_i s_i·(x_i − zp_i)` requantised to `out`, element by element over maps of one shape
/// (one term: a requantisation).
pub fn sum(isa: Isa, xs: &[&QTensor], out: OutQ) -> Result<QTensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::InvalidArgument("int8 sum: no terms".into()))?;
    for x in xs {
        x.same_shape(first, "int8 sum")?;
    }
    let mut y = buffer(first.data.len());
    sum_into(isa, xs, out, &mut y, first.channels(), 0);
    Ok(QTensor {
        data: y,
        shape: first.shape,
        scale: out.scale,
        zp: out.zp,
    })
}

/// [`sum`] of maps of one shape into channels `off..off + C` of `y`, whose pixels have `ctot`
/// channels: `to_u8(b + Σ_i a_i·q_i)` with `a_i = s_i/s_y` and `b = −Σ_i a_i·zp_i`.
fn sum_into(isa: Isa, xs: &[&QTensor], out: OutQ, y: &mut [u8], ctot: usize, off: usize) {
    let adds = Adds::of(xs, out);
    let a: Vec<f32> = adds.terms.iter().map(|t| t.1).collect();
    mix(
        isa,
        xs,
        &a,
        (adds.shift, out.zp as i32, out.lo()),
        (ctot, off),
        y,
    );
}

/// Each `x_i` requantised to `out` (copied when already in it), channels side by side.
pub fn concat(isa: Isa, xs: &[&QTensor], out: OutQ) -> Result<QTensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::InvalidArgument("int8 concat: no inputs".into()))?;
    let [n, h, w, _] = first.shape;
    if xs.iter().any(|x| x.shape[..3] != first.shape[..3]) {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| &x.shape[..]).collect();
        return Err(Error::shape("int8 concat", "maps differ", &shapes));
    }
    let ctot: usize = xs.iter().map(|x| x.channels()).sum();
    let mut y = buffer(n * h * w * ctot);
    let mut off = 0;
    for x in xs {
        if x.scale == out.scale && x.zp == out.zp && !out.relu {
            scatter(&x.data, x.channels(), &mut y, ctot, off);
        } else {
            sum_into(isa, &[x], out, &mut y, ctot, off);
        }
        off += x.channels();
    }
    Ok(QTensor {
        data: y,
        shape: [n, h, w, ctot],
        scale: out.scale,
        zp: out.zp,
    })
}

/// Pixel `p`'s `c` bytes of `src` into channels `off..off + c` of `dst` (`ctot` a pixel);
/// fixed-size copies for the usual channel counts.
fn scatter(src: &[u8], c: usize, dst: &mut [u8], ctot: usize, off: usize) {
    fn fixed<const C: usize>(src: &[u8], dst: &mut [u8], ctot: usize, off: usize) {
        for (s, d) in src.chunks_exact(C).zip(dst.chunks_exact_mut(ctot)) {
            let s: &[u8; C] = s.try_into().expect("chunk of C");
            let d: &mut [u8; C] = (&mut d[off..off + C]).try_into().expect("slice of C");
            *d = *s;
        }
    }
    match c {
        8 => fixed::<8>(src, dst, ctot, off),
        16 => fixed::<16>(src, dst, ctot, off),
        32 => fixed::<32>(src, dst, ctot, off),
        64 => fixed::<64>(src, dst, ctot, off),
        _ => {
            for (s, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(ctot)) {
                d[off..off + c].copy_from_slice(s);
            }
        }
    }
}

/// `x[i + 1, j + 1]`, real zero (the zero point) past the border.
pub fn shift(x: &QTensor) -> QTensor {
    let [n, h, w, c] = x.shape;
    let mut y = QTensor::zeros(x.shape, x.scale, x.zp);
    let row = w * c;
    for s in 0..n {
        for i in 0..h.saturating_sub(1) {
            let src = &x.data[(s * h + i + 1) * row + c..][..row - c];
            y.data[(s * h + i) * row..][..row - c].copy_from_slice(src);
        }
    }
    y
}

/// `x·scale[c] + shift[c]` per channel (then ReLU if `out.relu`), through a table of the 256
/// possible bytes of each channel.
pub fn affine(x: &QTensor, scale: &[f32], shift: &[f32], out: OutQ) -> Result<QTensor> {
    let c = x.channels();
    if scale.len() != c || shift.len() != c {
        return Err(Error::shape(
            "int8 affine",
            "one scale and shift per channel",
            &[&x.shape, &[scale.len()], &[shift.len()]],
        ));
    }
    let mut lut = vec![0u8; 256 * c];
    for (ch, t) in lut.chunks_exact_mut(256).enumerate() {
        for (q, v) in t.iter_mut().enumerate() {
            let real = x.scale * (q as f32 - x.zp as f32) * scale[ch] + shift[ch];
            *v = to_u8(real / out.scale, out.zp as i32, out.lo());
        }
    }
    let mut data = x.data.clone();
    for px in data.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = lut[ch * 256 + *v as usize];
        }
    }
    Ok(QTensor {
        data,
        shape: x.shape,
        scale: out.scale,
        zp: out.zp,
    })
}

/// f32 NCHW `[n, c, h, w]` images quantised to an NHWC map.
pub fn quantize_nchw(x: &[f32], [n, c, h, w]: [usize; 4], scale: f32, zp: u8) -> QTensor {
    let inv = 1.0 / scale;
    let mut y = QTensor::zeros([n, h, w, c], scale, zp);
    for (s, img) in x.chunks_exact(c * h * w).enumerate() {
        for (ch, plane) in img.chunks_exact(h * w).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                y.data[(s * h * w + p) * c + ch] = to_u8(v * inv, zp as i32, 0);
            }
        }
    }
    y
}

/// The sum of `q − zp` of each channel over the map, `[n][c]`: the head's global average pool
/// before its division by `h·w`, exact in integers.
pub fn channel_sums(isa: Isa, x: &QTensor) -> Vec<i32> {
    let [n, _, _, c] = x.shape;
    let mut out = Vec::with_capacity(n * c);
    sums_into(isa, x, &mut out);
    out
}

for_each_isa! {
/// The pooled map `[n, oh, ow, c]` of `x` into `y`, window `(k, stride, pad)`; the usual
/// channel counts with `C` known at compile time, so that a pixel is a few vector ops.
fn pool_into(x: &QTensor, max: bool, win: (usize, usize, usize), dims: (usize, usize), y: &mut [u8]) {
    match x.channels() {
        8 => pool_c::<8>(x, max, win, dims, y),
        16 => pool_c::<16>(x, max, win, dims, y),
        32 => pool_c::<32>(x, max, win, dims, y),
        64 => pool_c::<64>(x, max, win, dims, y),
        _ => pool_c::<0>(x, max, win, dims, y),
    }
}
}

/// [`pool_into`] for `C` channels (0: any, read from `x`): a pixel's max or sum is built in a
/// local array, which the compiler keeps in vector registers when `C` is known.
#[inline(always)]
fn pool_c<const C: usize>(
    x: &QTensor,
    max: bool,
    win: (usize, usize, usize),
    dims: (usize, usize),
    y: &mut [u8],
) {
    let ([_, h, w, cx], (k, stride, pad), (oh, ow)) = (x.shape, win, dims);
    let c = if C > 0 { C } else { cx };
    let window = |o: usize, len: usize| {
        let a = (o * stride) as isize - pad as isize;
        (a.max(0) as usize, ((a + k as isize) as usize).min(len))
    };
    let mut acc = [0u16; 64];
    // Pixel by pixel in order, without a division per pixel.
    let n = y.len() / (c * oh * ow).max(1);
    let at = (0..n).flat_map(|s| (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (s, oy, ox))));
    for (ypx, (s, oy, ox)) in y.chunks_exact_mut(c).zip(at) {
        let ((ya, yb), (xa, xb)) = (window(oy, h), window(ox, w));
        let px = |yy: usize, xx: usize| &x.data[((s * h + yy) * w + xx) * c..][..c];
        let cnt = ((yb - ya) * (xb - xa)) as u32;
        for c0 in (0..c).step_by(64) {
            let lanes = (c - c0).min(64);
            let acc = &mut acc[..lanes];
            acc.fill(0);
            for yy in ya..yb {
                for xx in xa..xb {
                    let v = &px(yy, xx)[c0..][..lanes];
                    if max {
                        acc.iter_mut()
                            .zip(v)
                            .for_each(|(a, &v)| *a = (*a).max(v as u16));
                    } else {
                        acc.iter_mut().zip(v).for_each(|(a, &v)| *a += v as u16);
                    }
                }
            }
            let out = &mut ypx[c0..][..lanes];
            if max {
                out.iter_mut().zip(&*acc).for_each(|(o, &a)| *o = a as u8);
            } else {
                // (sum + cnt/2) / cnt as a multiply and shift, exact for sums below 2^16
                // and windows below 256 taps: n·d < 2^24 (Granlund–Montgomery).
                let m = (1u32 << 24).div_ceil(cnt);
                for (o, &a) in out.iter_mut().zip(&*acc) {
                    *o = (((a as u32 + cnt / 2) as u64 * m as u64) >> 24) as u8;
                }
            }
        }
    }
}

for_each_isa! {
/// `to_u8(b + Σ_i a_i·x_i)` element by element into channels `off..` of `y`'s pixels of
/// `ctot` channels, in chunks of pixels that stay in registers.
fn mix(xs: &[&QTensor], a: &[f32], bzl: (f32, i32, i32), at: (usize, usize), y: &mut [u8]) {
    let ((b, zp, lo), (ctot, off)) = (bzl, at);
    let c = xs[0].channels();
    let px = (256 / c).max(1);
    let mut acc = vec![0f32; px * c];
    for (i, yc) in y.chunks_mut(px * ctot).enumerate() {
        let acc = &mut acc[..yc.len() / ctot * c];
        acc.fill(b);
        for (x, &a) in xs.iter().zip(a) {
            let q = &x.data[i * px * c..][..acc.len()];
            acc.iter_mut().zip(q).for_each(|(v, &q)| *v += a * q as f32);
        }
        if ctot == c {
            yc.iter_mut().zip(acc.iter()).for_each(|(o, &v)| *o = to_u8(v, zp, lo));
        } else {
            for (d, s) in yc.chunks_exact_mut(ctot).zip(acc.chunks_exact(c)) {
                d[off..off + c].iter_mut().zip(s).for_each(|(o, &v)| *o = to_u8(v, zp, lo));
            }
        }
    }
}
}

for_each_isa! {
fn sums_into(x: &QTensor, out: &mut Vec<i32>) {
    let [_, h, w, c] = x.shape;
    let mut sum = vec![0u32; c];
    let offset = (h * w) as i32 * x.zp as i32;
    for img in x.data.chunks_exact(h * w * c) {
        sum.fill(0);
        for px in img.chunks_exact(c) {
            sum.iter_mut().zip(px).for_each(|(a, &v)| *a += v as u32);
        }
        out.extend(sum.iter().map(|&s| s as i32 - offset));
    }
}
}
