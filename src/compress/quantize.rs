//! Post-training static int8 quantisation of a lowered network ([`Program`], BN already folded
//! into the convs): weights symmetric per output channel in [−127, 127], activations uint8
//! asymmetric per tensor with ranges calibrated by running the f32 program on training batches.
//! The result, a [`QProgram`], runs every conv, depthwise conv, pool and the classifier
//! ([`QHead`]) on int8 kernels; biases are i32 at the accumulator's scale `s_x·s_w`, and weight
//! scales are f16 values (chosen before the weights are rounded, so that storing them in f16
//! loses nothing).
//!
//! Slots whose step cannot change the range in a way that needs new parameters (ReLU, pools, the
//! one-pixel shift) keep their input's scale and zero point, so these steps are pure uint8 ops.

use serde::{Deserialize, Serialize};

use super::head::QHead;
use super::int8::{Isa, QConv};
pub use super::observe::{calibrate, calibration_batches, Observer};
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::infer::{Program, Slot, Step};

/// Scale and zero point of a uint8 tensor: `real = scale·(q − zp)`; `[scale, zp]` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "(f32, u8)", into = "(f32, u8)")]
pub struct QParams {
    pub scale: f32,
    pub zp: u8,
}

impl From<(f32, u8)> for QParams {
    fn from((scale, zp): (f32, u8)) -> QParams {
        QParams { scale, zp }
    }
}

impl From<QParams> for (f32, u8) {
    fn from(p: QParams) -> (f32, u8) {
        (p.scale, p.zp)
    }
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
        head: QHead,
    },
}

/// The smallest f16 value at or above `x ≥ 0`, as f32; `None` past the f16 range.
fn f16_up(x: f32) -> Option<f32> {
    let h = half::f16::from_f32(x);
    let h = if h.to_f32() < x {
        half::f16::from_bits(h.to_bits() + 1)
    } else {
        h
    };
    h.is_finite().then(|| h.to_f32())
}

/// Symmetric per-output-channel int8 weights of a folded conv or linear layer, `s_o` the f16
/// value rounded up from `max|w_o|/127` (so `|w/s_o| ≤ 127` and the stored f16 scale is the
/// one the weights were rounded with).
pub fn quantize_weights(w: &[f32], cout: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    let per = w.len() / cout.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(cout);
    for row in w.chunks(per.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = f16_up((max / 127.0).max(f32::MIN_POSITIVE)).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "quantize: a weight of magnitude {max} is past the range of an f16 scale"
            ))
        })?;
        q.extend(
            row.iter()
                .map(|&v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    Ok((q, scales))
}

/// The f32 bias `b` in i32 at the accumulator's scale `x_scale·w_scale[o]`.
pub fn quantize_bias(b: &[f32], w_scale: &[f32], x_scale: f32) -> Vec<i32> {
    b.iter()
        .zip(w_scale)
        .map(|(&v, &s)| (v / (x_scale * s)).round() as i32)
        .collect()
}

/// A quantised network: its steps, each slot's parameters, and how it is executed.
pub struct QProgram {
    pub steps: Vec<QStep>,
    pub params: Vec<QParams>,
    pub(super) plan: Plan,
    pub isa: Isa,
}

impl QProgram {
    /// Quantises `prog` with the calibrated `ranges` (one per slot).
    pub fn new(prog: &Program, ranges: &[(f32, f32)]) -> Result<QProgram> {
        let mut params: Vec<QParams> = ranges
            .iter()
            .map(|&(a, b)| QParams::from_range(a, b))
            .collect();
        share_concat_params(prog, &mut params);
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
                    let (q, w_scale) = quantize_weights(w.data(), shape[0])?;
                    let bias = quantize_bias(b.data(), &w_scale, params[*src].scale);
                    let cin = if cfg.groups > 1 { shape[0] } else { shape[1] };
                    let conv = QConv::new(q, w_scale, bias, cin, shape[0], shape[2], *cfg)?;
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
                    head: QHead::quantize(w, b.as_ref(), params[*src].scale)?,
                },
            });
        }
        QProgram::from_parts(steps, params)
    }

    /// The program of `steps` over slots with `params` (slot 0 the input images, one step the
    /// head): what a serialised model is rebuilt from. Derives the execution [`Plan`].
    pub fn from_parts(steps: Vec<QStep>, params: Vec<QParams>) -> Result<QProgram> {
        let mut heads = 0;
        for (i, step) in steps.iter().enumerate() {
            let (srcs, dst) = step.slots();
            heads += matches!(step, QStep::Head { .. }) as usize;
            let bad = srcs.into_iter().chain([dst]).find(|&s| s >= params.len());
            if let Some(s) = bad {
                return Err(Error::InvalidArgument(format!(
                    "int8 program: step {i} uses slot {s} but only {} slots have parameters",
                    params.len()
                )));
            }
        }
        if heads != 1 {
            return Err(Error::InvalidArgument(format!(
                "int8 program: needs exactly one head step, got {heads}"
            )));
        }
        Ok(QProgram {
            plan: Plan::new(&steps, params.len()),
            steps,
            params,
            isa: Isa::detect(),
        })
    }
}

impl QStep {
    /// The slots the step reads and the one it writes.
    pub fn slots(&self) -> (Vec<Slot>, Slot) {
        match self {
            QStep::Conv { src, dst, .. }
            | QStep::Relu { src, dst }
            | QStep::Pool { src, dst, .. }
            | QStep::Affine { src, dst, .. }
            | QStep::Shift { src, dst }
            | QStep::Head { src, dst, .. } => (vec![*src], *dst),
            QStep::Zeros { like, dst, .. } => (vec![*like], *dst),
            QStep::Sum { srcs, dst } | QStep::Concat { srcs, dst } => (srcs.clone(), *dst),
        }
    }
}

/// Gives each concat part that a conv or a sum computes the concat's parameters, so that the
/// part is requantised once, by its producer, and the concat only copies bytes. The concat's
/// range covers its parts' (it is their union), so no part is clipped; a part keeps its own
/// where it is in two concats or where its parameters are inherited (a ReLU's, a pool's).
fn share_concat_params(prog: &Program, params: &mut [QParams]) {
    let mut requantised = vec![false; params.len()];
    let mut concats = vec![0usize; params.len()];
    for step in &prog.steps {
        match step {
            Step::Conv { dst, .. } | Step::Sum { dst, .. } => requantised[*dst] = true,
            Step::Concat { srcs, .. } => srcs.iter().for_each(|&s| concats[s] += 1),
            _ => {}
        }
    }
    for step in &prog.steps {
        if let Step::Concat { srcs, dst } = step {
            for &s in srcs {
                if concats[s] == 1 && requantised[s] {
                    params[s] = params[*dst];
                }
            }
        }
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
