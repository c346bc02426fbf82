//! Post-training static int8 quantisation of a lowered network ([`Program`], BN already folded
//! into the convs): weights symmetric per output channel in [−127, 127], activations uint8
//! asymmetric per tensor with ranges calibrated by running the f32 program on training batches.
//! The result, a [`QProgram`], runs every conv, depthwise conv and pool on the int8 kernels; only
//! the classifier (global pool and linear) stays in f32, on the dequantised last map.
//!
//! Slots whose step cannot change the range in a way that needs new parameters (ReLU, pools, the
//! one-pixel shift) keep their input's scale and zero point, so these steps are pure uint8 ops.

use serde::{Deserialize, Serialize};

use super::int8::{self, Isa, OutQ, QConv, QTensor};
pub use super::observe::{calibrate, calibration_batches, Observer};
use crate::error::{Error, Result};
use crate::infer::{Program, Slot, Step};
use crate::ops;
use crate::tensor::Tensor;

/// Scale and zero point of a uint8 tensor: `real = scale·(q − zp)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zp: u8,
}

impl QParams {
    /// The parameters that cover `[lo, hi]` widened to contain 0 (so that padding and ReLU are
    /// exact).
    pub fn from_range(lo: f32, hi: f32) -> QParams {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-8);
        QParams {
            scale,
            zp: (-lo / scale).round().clamp(0.0, 255.0) as u8,
        }
    }

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

/// One int8 step; the slots and meaning are those of the f32 [`Step`] it replaces.
pub enum QStep {
    Conv {
        src: Slot,
        dst: Slot,
        conv: QConv,
        relu: bool,
    },
    Relu {
        src: Slot,
        dst: Slot,
    },
    Pool {
        src: Slot,
        dst: Slot,
        max: bool,
        k: usize,
        stride: usize,
        pad: usize,
    },
    Affine {
        src: Slot,
        dst: Slot,
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    Shift {
        src: Slot,
        dst: Slot,
    },
    Sum {
        srcs: Vec<Slot>,
        dst: Slot,
    },
    Concat {
        srcs: Vec<Slot>,
        dst: Slot,
    },
    Zeros {
        like: Slot,
        stride: usize,
        dst: Slot,
    },
    Head {
        src: Slot,
        dst: Slot,
        w: Tensor,
        b: Option<Tensor>,
    },
}

/// Symmetric per-output-channel int8 weights of a folded conv: `s_o = max|w_o|/127`.
pub fn quantize_weights(w: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(cout);
    for row in w.chunks(per) {
        let s = (row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0).max(1e-12);
        q.extend(
            row.iter()
                .map(|&v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    (q, scales)
}

/// A quantised network: its steps, each slot's parameters, and the f32 program's liveness.
pub struct QProgram {
    pub steps: Vec<QStep>,
    pub params: Vec<QParams>,
    slots: usize,
    last_use: Vec<usize>,
    pub isa: Isa,
}

impl QProgram {
    /// Quantises `prog` with the calibrated `ranges` (one per slot).
    pub fn new(prog: &Program, ranges: &[(f32, f32)]) -> Result<QProgram> {
        let mut params: Vec<QParams> = ranges
            .iter()
            .map(|&(a, b)| QParams::from_range(a, b))
            .collect();
        let mut steps = Vec::with_capacity(prog.steps.len());
        for step in &prog.steps {
            steps.push(match step {
                Step::Conv {
                    src,
                    dst,
                    w,
                    b,
                    cfg,
                    relu,
                } => {
                    let shape = w.shape();
                    if shape[2] != shape[3] {
                        return Err(Error::shape("quantize", "square kernels only", &[shape]));
                    }
                    let (q, w_scale) = quantize_weights(w.data(), shape[0]);
                    let cin = if cfg.groups > 1 { shape[0] } else { shape[1] };
                    let conv = QConv {
                        w: q,
                        w_scale,
                        bias: b.to_vec(),
                        cin,
                        cout: shape[0],
                        k: shape[2],
                        cfg: *cfg,
                    };
                    QStep::Conv {
                        src: *src,
                        dst: *dst,
                        conv,
                        relu: *relu,
                    }
                }
                Step::Relu { src, dst } => {
                    params[*dst] = params[*src];
                    QStep::Relu {
                        src: *src,
                        dst: *dst,
                    }
                }
                Step::Pool {
                    src,
                    dst,
                    max,
                    kernel,
                    stride,
                    padding,
                } => {
                    params[*dst] = params[*src];
                    QStep::Pool {
                        src: *src,
                        dst: *dst,
                        max: *max,
                        k: *kernel,
                        stride: *stride,
                        pad: *padding,
                    }
                }
                Step::Shift { src, dst } => {
                    params[*dst] = params[*src];
                    QStep::Shift {
                        src: *src,
                        dst: *dst,
                    }
                }
                Step::Affine {
                    src,
                    dst,
                    scale,
                    shift,
                    relu,
                } => QStep::Affine {
                    src: *src,
                    dst: *dst,
                    scale: scale.clone(),
                    shift: shift.clone(),
                    relu: *relu,
                },
                Step::Sum { srcs, dst } => QStep::Sum {
                    srcs: srcs.clone(),
                    dst: *dst,
                },
                Step::Concat { srcs, dst } => QStep::Concat {
                    srcs: srcs.clone(),
                    dst: *dst,
                },
                Step::Zeros { like, stride, dst } => QStep::Zeros {
                    like: *like,
                    stride: *stride,
                    dst: *dst,
                },
                Step::Head { src, dst, w, b } => QStep::Head {
                    src: *src,
                    dst: *dst,
                    w: w.clone(),
                    b: b.clone(),
                },
            });
        }
        QProgram::from_steps(steps, params)
    }

    /// The program of `steps` over slots with the parameters `params` (one per slot): the one
    /// constructor, used by [`QProgram::new`] and by a saved program's loader alike, so that
    /// what is derived from the steps (liveness, the kernel set) is computed in one place.
    pub fn from_steps(steps: Vec<QStep>, params: Vec<QParams>) -> Result<QProgram> {
        let slots = params.len();
        let mut last_use = vec![0; slots];
        for (i, step) in steps.iter().enumerate() {
            for s in srcs(step).into_iter().chain([dst(step)]) {
                if s >= slots {
                    return Err(Error::InvalidArgument(format!(
                        "int8 program: step {i} uses slot {s}, but there are {slots} slots"
                    )));
                }
            }
            for s in srcs(step) {
                last_use[s] = i;
            }
        }
        Ok(QProgram {
            steps,
            params,
            slots,
            last_use,
            isa: Isa::detect(),
        })
    }

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

fn dst(step: &QStep) -> Slot {
    match step {
        QStep::Conv { dst, .. }
        | QStep::Relu { dst, .. }
        | QStep::Pool { dst, .. }
        | QStep::Affine { dst, .. }
        | QStep::Shift { dst, .. }
        | QStep::Sum { dst, .. }
        | QStep::Concat { dst, .. }
        | QStep::Zeros { dst, .. }
        | QStep::Head { dst, .. } => *dst,
    }
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

/// Lowers `net`, calibrates it on `batches` batches of the training set `train` drawn by `seed`
/// (see [`calibration_batches`]) and quantises it.
pub fn quantize_network(
    net: &crate::nas::network::Network,
    kind: crate::data::DatasetKind,
    train: std::sync::Arc<crate::data::Dataset>,
    batches: usize,
    observer: Observer,
    seed: u64,
) -> Result<QProgram> {
    let xs = calibration_batches(train, kind, batches, seed)?;
    let prog = crate::infer::lower(net)?;
    QProgram::new(&prog, &calibrate(&prog, &xs, observer)?)
}
