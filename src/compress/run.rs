//! Running a [`QProgram`]: the input quantised, each step on the int8 kernels, slots freed
//! after their last reader, the head in f32 on the dequantised last map.

use super::int8::{self, OutQ, QTensor};
use super::quantize::{QParams, QProgram, QStep};
use crate::error::{Error, Result};
use crate::infer::Slot;
use crate::ops;
use crate::tensor::Tensor;

impl QParams {
    fn quantize(&self, t: &Tensor) -> Result<QTensor> {
        let (n, c, h, w) = t.dims4("quantize")?;
        let inv = 1.0 / self.scale;
        let data = t
            .data()
            .iter()
            .map(|&v| ((v * inv).round() + self.zp as f32).clamp(0.0, 255.0) as u8)
            .collect();
        Ok(QTensor {
            data,
            shape: [n, c, h, w],
            scale: self.scale,
            zp: self.zp,
        })
    }
}

impl QProgram {
    /// Logits for f32 images (quantised with the input slot's parameters).
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let mut slots: Vec<Option<QTensor>> = (0..self.slots).map(|_| None).collect();
        slots[0] = Some(self.params[0].quantize(&x)?);
        let mut logits = None;
        for (i, step) in self.steps.iter().enumerate() {
            let get = |s: Slot| {
                slots[s]
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument(format!("int8: slot {s} unset")))
            };
            let (dst, out) = match step {
                QStep::Head { src, dst, w, b } => {
                    let f = dequantize(get(*src)?)?;
                    logits = Some(ops::linear(&ops::global_avg_pool(&f)?, w, b.as_ref())?);
                    (*dst, None)
                }
                _ => self.exec(step, &get)?,
            };
            for s in srcs(step) {
                if self.last_use[s] == i {
                    slots[s] = None;
                }
            }
            slots[dst] = out;
        }
        logits.ok_or_else(|| Error::InvalidArgument("int8: no logits computed".into()))
    }
}

impl QProgram {
    fn out(&self, dst: Slot, relu: bool) -> OutQ {
        let p = self.params[dst];
        OutQ {
            scale: p.scale,
            zp: p.zp,
            relu,
        }
    }

    fn exec<'a>(
        &self,
        step: &QStep,
        get: &dyn Fn(Slot) -> Result<&'a QTensor>,
    ) -> Result<(Slot, Option<QTensor>)> {
        let y = match step {
            QStep::Conv {
                src,
                dst,
                conv,
                relu,
            } => (
                *dst,
                conv.forward(self.isa, get(*src)?, self.out(*dst, *relu))?,
            ),
            QStep::Relu { src, dst } => {
                let mut x = get(*src)?.clone();
                let zp = x.zp;
                x.data.iter_mut().for_each(|v| *v = (*v).max(zp));
                (*dst, x)
            }
            QStep::Pool {
                src,
                dst,
                max,
                k,
                stride,
                pad,
            } => (*dst, int8::pool(get(*src)?, *max, *k, *stride, *pad)?),
            QStep::Shift { src, dst } => (*dst, shift(get(*src)?)),
            QStep::Affine {
                src,
                dst,
                scale,
                shift,
                relu,
            } => {
                let x = get(*src)?;
                let [_, c, h, w] = x.shape;
                let p = self.out(*dst, *relu);
                let mut data = vec![0u8; x.data.len()];
                for (k, (o, xp)) in data.chunks_mut(h * w).zip(x.data.chunks(h * w)).enumerate() {
                    let (a, b) = (scale[k % c], shift[k % c]);
                    for (v, &q) in o.iter_mut().zip(xp) {
                        *v = quant(x.scale * (q as f32 - x.zp as f32) * a + b, p);
                    }
                }
                (
                    *dst,
                    QTensor {
                        data,
                        shape: x.shape,
                        scale: p.scale,
                        zp: p.zp,
                    },
                )
            }
            QStep::Sum { srcs, dst } => {
                let p = self.out(*dst, false);
                let xs = srcs.iter().map(|&s| get(s)).collect::<Result<Vec<_>>>()?;
                let mut acc = vec![0f32; xs[0].data.len()];
                for x in &xs {
                    if x.shape != xs[0].shape {
                        return Err(Error::shape(
                            "int8 sum",
                            "shapes differ",
                            &[&x.shape, &xs[0].shape],
                        ));
                    }
                    for (a, &q) in acc.iter_mut().zip(&x.data) {
                        *a += x.scale * (q as f32 - x.zp as f32);
                    }
                }
                let data = acc.iter().map(|&r| quant(r, p)).collect();
                (
                    *dst,
                    QTensor {
                        data,
                        shape: xs[0].shape,
                        scale: p.scale,
                        zp: p.zp,
                    },
                )
            }
            QStep::Concat { srcs, dst } => {
                let p = self.out(*dst, false);
                let xs = srcs.iter().map(|&s| get(s)).collect::<Result<Vec<_>>>()?;
                let [n, _, h, w] = xs[0].shape;
                let c: usize = xs.iter().map(|x| x.shape[1]).sum();
                let parts: Vec<QTensor> = xs.iter().map(|x| requantize(x, p)).collect();
                let mut data = Vec::with_capacity(n * c * h * w);
                for s in 0..n {
                    for x in &parts {
                        let per = x.shape[1] * h * w;
                        data.extend_from_slice(&x.data[s * per..][..per]);
                    }
                }
                (
                    *dst,
                    QTensor {
                        data,
                        shape: [n, c, h, w],
                        scale: p.scale,
                        zp: p.zp,
                    },
                )
            }
            QStep::Zeros { like, stride, dst } => {
                let [n, c, h, w] = get(*like)?.shape;
                let p = self.params[*dst];
                let shape = [n, c, h.div_ceil(*stride), w.div_ceil(*stride)];
                let data = vec![p.zp; shape.iter().product()];
                (
                    *dst,
                    QTensor {
                        data,
                        shape,
                        scale: p.scale,
                        zp: p.zp,
                    },
                )
            }
            QStep::Head { .. } => unreachable!("the head is run by forward"),
        };
        Ok((y.0, Some(y.1)))
    }
}

fn quant(real: f32, p: OutQ) -> u8 {
    let lo = if p.relu { p.zp as f32 } else { 0.0 };
    ((real / p.scale).round() + p.zp as f32).clamp(lo, 255.0) as u8
}

/// `x` in the parameters `p` (a copy when they are already its own).
fn requantize(x: &QTensor, p: OutQ) -> QTensor {
    let same = x.scale == p.scale && x.zp == p.zp && !p.relu;
    let data = if same {
        x.data.clone()
    } else {
        x.data
            .iter()
            .map(|&q| quant(x.scale * (q as f32 - x.zp as f32), p))
            .collect()
    };
    QTensor {
        data,
        shape: x.shape,
        scale: p.scale,
        zp: p.zp,
    }
}

/// `x[i + 1, j + 1]`, real zero (the zero point) past the border.
fn shift(x: &QTensor) -> QTensor {
    let [n, c, h, w] = x.shape;
    let mut y = vec![x.zp; x.data.len()];
    for (yp, xp) in y.chunks_mut(h * w).zip(x.data.chunks(h * w)).take(n * c) {
        for i in 0..h.saturating_sub(1) {
            yp[i * w..i * w + w - 1].copy_from_slice(&xp[(i + 1) * w + 1..(i + 2) * w]);
        }
    }
    QTensor {
        data: y,
        shape: x.shape,
        scale: x.scale,
        zp: x.zp,
    }
}

fn dequantize(x: &QTensor) -> Result<Tensor> {
    let v = x
        .data
        .iter()
        .map(|&q| x.scale * (q as f32 - x.zp as f32))
        .collect();
    Tensor::from_vec(v, &x.shape)
}

fn srcs(step: &QStep) -> Vec<Slot> {
    match step {
        QStep::Conv { src, .. }
        | QStep::Relu { src, .. }
        | QStep::Pool { src, .. }
        | QStep::Affine { src, .. }
        | QStep::Shift { src, .. }
        | QStep::Head { src, .. } => vec![*src],
        QStep::Zeros { like, .. } => vec![*like],
        QStep::Sum { srcs, .. } | QStep::Concat { srcs, .. } => srcs.clone(),
    }
}
