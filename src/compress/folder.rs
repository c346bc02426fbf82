//! A quantised run folder (`darts quantize --out DIR`), two files written atomically:
//!
//! - `quantized.json` (compact): the format and its version, the source run and its training
//!   config (the dataset, its normalisation and class names come from there), the calibration
//!   (observer, batches, seed), every slot's uint8 `[scale, zero point]`, the int8 program's
//!   steps with their shapes and where their tensors start ([`At`]), and what `darts quantize`
//!   measured;
//! - `model.int8.safetensors`: the packed tensors of [`super::packed`].
//!
//! Loading rebuilds the [`QProgram`] from these files alone, without the network code. A step's
//! `name` is the PyTorch state-dict prefix of its layer.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::head::QHead;
use super::int8::QConv;
use super::packed::{part, Packed, PackedF32};
use super::quantize::{Observer, QParams, QProgram, QStep};
use crate::error::{Error, Result};
use crate::infer::{Program, Slot, Step};
use crate::ops::Conv2dCfg;
use crate::train::TrainConfig;

pub const CONFIG: &str = "quantized.json";
pub const WEIGHTS: &str = "model.int8.safetensors";
const FORMAT: &str = "darts-int8";
/// The version this build writes (1: a tensor per layer and f32 scales, biases and
/// classifier; 2: every bias in i32).
pub const VERSION: u32 = 3;
/// The oldest version this build reads: a version-2 folder is a version-3 one without
/// 16-bit biases.
const OLDEST: u32 = 2;

/// How the activation ranges were calibrated.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Calibration {
    pub observer: Observer,
    pub batches: usize,
    pub seed: u64,
}

/// What `darts quantize` measured on the test set and on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measured {
    pub f32_top1: f32,
    pub int8_top1: f32,
    /// `int8_top1 − f32_top1` in percentage points.
    pub delta_points: f32,
    /// The source run's `model.safetensors` (training weights, BN, auxiliary head).
    pub source_bytes: u64,
    /// The f32 program's tensors in the same packed layout (folded weights, biases, the f32
    /// classifier; no scales): the like-for-like baseline.
    pub f32_bytes: u64,
    pub int8_bytes: u64,
    /// `f32_bytes / int8_bytes`.
    pub ratio: f64,
}

/// `quantized.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuantizedRun {
    pub format: String,
    pub version: u32,
    pub source: PathBuf,
    pub train: TrainConfig,
    pub calibration: Calibration,
    /// Per slot (slot 0 the input images).
    pub params: Vec<QParams>,
    pub steps: Vec<StepSpec>,
    pub measured: Option<Measured>,
}

/// Where a layer's tensors start: its weights in `weights`, its output channels' scales in
/// `scales`, its bias in `biases` or, where every value fits 16 bits, in `biases16` (both
/// absent: all zero, not stored).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct At {
    pub w: usize,
    pub s: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b16: Option<usize>,
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !v
}

/// One int8 step; its tensors are in the weights file where `at` says. Fields at their
/// default (stride 1, no padding, ...) are left out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StepSpec {
    Conv {
        src: Slot,
        dst: Slot,
        name: String,
        /// OIHW: `[cout, cin / groups, k, k]`.
        shape: [usize; 4],
        #[serde(default = "one", skip_serializing_if = "is_one")]
        stride: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        padding: usize,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        dilation: usize,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
        #[serde(default, skip_serializing_if = "is_false")]
        relu: bool,
        at: At,
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
    /// `scale` at `affine[at..at + len]`, `shift` after it.
    Affine {
        src: Slot,
        dst: Slot,
        name: String,
        len: usize,
        at: usize,
        #[serde(default, skip_serializing_if = "is_false")]
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
        name: String,
        /// `[classes, C]`.
        shape: [usize; 2],
        at: At,
    },
}

/// Whether `dir` is a quantised run folder.
pub fn is_quantized(dir: &Path) -> bool {
    dir.join(CONFIG).is_file()
}

/// The error for a quantised folder given where a training run folder is needed.
pub fn reject(dir: &Path) -> Result<()> {
    if !is_quantized(dir) {
        return Ok(());
    }
    let source = read_config(dir)
        .map(|r| format!(" (its source: {})", r.source.display()))
        .unwrap_or_default();
    Err(Error::data(
        dir,
        format!(
            "is an int8 run folder written by `darts quantize`, not a training run: pass the \
             `darts train` run folder it came from{source}"
        ),
    ))
}

/// The packed tensors of the int8 program and of the f32 one it came from.
#[derive(Default)]
struct Packer {
    int8: Packed,
    f32: PackedF32,
}

impl Packer {
    /// Appends a layer's int8 weights `q`, scales and i32 bias, and its f32 weights `w` and
    /// bias `b`; a bias that is all zero is not stored.
    fn layer(&mut self, q: &[i8], scales: &[f32], bias: &[i32], w: &[f32], b: &[f32]) -> At {
        let (p, f) = (&mut self.int8, &mut self.f32);
        let stored = bias.iter().any(|&v| v != 0);
        let narrow: Option<Vec<i16>> = bias.iter().map(|&v| i16::try_from(v).ok()).collect();
        let at = At {
            w: p.weights.len(),
            s: p.scales.len(),
            b: (stored && narrow.is_none()).then_some(p.biases.len()),
            b16: (stored && narrow.is_some()).then_some(p.biases16.len()),
        };
        p.weights.extend(q);
        p.scales.extend(scales);
        match narrow {
            Some(n) if stored => p.biases16.extend(n),
            _ if stored => p.biases.extend(bias),
            _ => {}
        }
        f.weights.extend(w);
        if b.iter().any(|&v| v != 0.0) {
            f.biases.extend(b);
        }
        at
    }
}

/// The step specs of `q` and its packed tensors, with those of the f32 program `prog` it was
/// quantised from (the size baseline). Step names are `prog.names`, `steps.I` where a step has
/// none or its name is taken.
fn describe(q: &QProgram, prog: &Program) -> Result<(Vec<StepSpec>, Packer)> {
    let (mut specs, mut pack) = (Vec::new(), Packer::default());
    let mut taken = HashSet::new();
    for (i, (qs, fs)) in q.steps.iter().zip(&prog.steps).enumerate() {
        let given = prog.names.get(i).filter(|n| !n.is_empty());
        let name = match given {
            Some(n) if taken.insert(n.clone()) => n.clone(),
            _ => format!("steps.{i}"),
        };
        specs.push(match (qs, fs) {
            (
                QStep::Conv {
                    src,
                    dst,
                    conv,
                    relu,
                },
                Step::Conv { w, b, .. },
            ) => {
                let at = pack.layer(&conv.w, &conv.w_scale, &conv.bias, w.data(), b.data());
                let c = conv.cfg;
                let per = if conv.depthwise() { 1 } else { conv.cin };
                StepSpec::Conv {
                    src: *src,
                    dst: *dst,
                    name,
                    shape: [conv.cout, per, conv.k, conv.k],
                    stride: c.stride,
                    padding: c.padding,
                    dilation: c.dilation,
                    groups: c.groups,
                    relu: *relu,
                    at,
                }
            }
            (QStep::Head { src, dst, head }, Step::Head { w, b, .. }) => {
                let b = match b {
                    Some(t) => t.try_to_vec()?,
                    None => Vec::new(),
                };
                let at = pack.layer(&head.w, &head.w_scale, &head.bias, &w.try_to_vec()?, &b);
                StepSpec::Head {
                    src: *src,
                    dst: *dst,
                    name,
                    shape: [head.classes, head.c],
                    at,
                }
            }
            (
                QStep::Affine {
                    src,
                    dst,
                    scale,
                    shift,
                    relu,
                },
                _,
            ) => {
                let at = pack.int8.affine.len();
                for p in [&mut pack.int8.affine, &mut pack.f32.affine] {
                    p.extend(scale.iter().chain(shift));
                }
                StepSpec::Affine {
                    src: *src,
                    dst: *dst,
                    name,
                    len: scale.len(),
                    at,
                    relu: *relu,
                }
            }
            (QStep::Relu { src, dst }, _) => StepSpec::Relu {
                src: *src,
                dst: *dst,
            },
            (
                QStep::Pool {
                    src,
                    dst,
                    max,
                    k,
                    stride,
                    pad,
                },
                _,
            ) => StepSpec::Pool {
                src: *src,
                dst: *dst,
                max: *max,
                k: *k,
                stride: *stride,
                pad: *pad,
            },
            (QStep::Shift { src, dst }, _) => StepSpec::Shift {
                src: *src,
                dst: *dst,
            },
            (QStep::Sum { srcs, dst }, _) => StepSpec::Sum {
                srcs: srcs.clone(),
                dst: *dst,
            },
            (QStep::Concat { srcs, dst }, _) => StepSpec::Concat {
                srcs: srcs.clone(),
                dst: *dst,
            },
            (QStep::Zeros { like, stride, dst }, _) => StepSpec::Zeros {
                like: *like,
                stride: *stride,
                dst: *dst,
            },
            (QStep::Conv { .. } | QStep::Head { .. }, _) => {
                return Err(Error::InvalidArgument(format!(
                    "int8 program: step {i} is a conv or the head but the f32 program's is not"
                )))
            }
        });
    }
    Ok((specs, pack))
}

/// The bytes of the two files of a quantised folder and the f32 baseline's size.
pub struct Encoded {
    pub config: QuantizedRun,
    pub weights: Vec<u8>,
    pub f32_bytes: u64,
}

/// Encodes `q`, quantised from `prog` of the training run `source` with config `train`.
pub fn encode(
    q: &QProgram,
    prog: &Program,
    source: &Path,
    train: &TrainConfig,
    calibration: Calibration,
) -> Result<Encoded> {
    let (steps, pack) = describe(q, prog)?;
    let weights = pack.int8.to_bytes()?;
    Ok(Encoded {
        config: QuantizedRun {
            format: FORMAT.into(),
            version: VERSION,
            source: source.to_path_buf(),
            train: train.clone(),
            calibration,
            params: q.params.clone(),
            steps,
            measured: None,
        },
        weights,
        f32_bytes: pack.f32.to_bytes()?.len() as u64,
    })
}

/// Writes the folder `dir` (created if missing), weights first so that a folder whose
/// `quantized.json` exists is complete.
pub fn write(dir: &Path, e: &Encoded) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
    crate::checkpoint::write_atomic(&dir.join(WEIGHTS), &e.weights)?;
    let text = serde_json::to_string(&e.config)
        .map_err(|err| Error::InvalidArgument(format!("serialising {CONFIG}: {err}")))?;
    crate::checkpoint::write_atomic(&dir.join(CONFIG), text.as_bytes())
}

fn read_config(dir: &Path) -> Result<QuantizedRun> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::data(&path, format!("not JSON: {e}")))?;
    if v["format"] != FORMAT {
        return Err(Error::data(&path, "not a `darts quantize` run folder"));
    }
    let readable = v["version"]
        .as_u64()
        .is_some_and(|n| (OLDEST as u64..=VERSION as u64).contains(&n));
    if !readable {
        let source = v["source"].as_str().unwrap_or("its training run folder");
        return Err(Error::data(
            &path,
            format!(
                "written in int8 format version {}, this darts reads versions {OLDEST} to \
                 {VERSION}: re-run `darts quantize --checkpoint {source}` with this darts",
                v["version"]
            ),
        ));
    }
    let run: QuantizedRun = serde_json::from_value(v)
        .map_err(|e| Error::data(&path, format!("bad quantised run config: {e}")))?;
    run.train
        .validate()
        .map_err(|e| Error::data(&path, e.to_string()))?;
    Ok(run)
}

/// A layer's int8 weights, scales and i32 bias.
type Layer = (Vec<i8>, Vec<f32>, Vec<i32>);

/// A layer's int8 weights (`len` of them), scales and bias (`cout` each) from `p`.
fn layer(p: &Packed, at: At, len: usize, cout: usize) -> std::result::Result<Layer, String> {
    let w = part(&p.weights, at.w, len, "weights", "weights")?;
    let s = part(&p.scales, at.s, cout, "scales", "scales")?;
    let b = match (at.b, at.b16) {
        (Some(b), None) => part(&p.biases, b, cout, "biases", "bias")?.to_vec(),
        (None, Some(b)) => part(&p.biases16, b, cout, "biases16", "bias")?
            .iter()
            .map(|&v| v as i32)
            .collect(),
        (None, None) => vec![0; cout],
        (Some(_), Some(_)) => return Err("a layer with two biases".into()),
    };
    Ok((w.to_vec(), s.to_vec(), b))
}

fn step(p: &Packed, spec: &StepSpec) -> std::result::Result<QStep, String> {
    Ok(match spec.clone() {
        StepSpec::Conv {
            src,
            dst,
            name,
            shape,
            stride,
            padding,
            dilation,
            groups,
            relu,
            at,
        } => {
            let [cout, per, k, k2] = shape;
            let named = |e: String| format!("{name}: {e}");
            if k != k2 || groups == 0 {
                return Err(named("square kernels and groups ≥ 1 only".into()));
            }
            let (w, s, b) = layer(p, at, shape.iter().product(), cout).map_err(named)?;
            let cfg = Conv2dCfg {
                stride,
                padding,
                dilation,
                groups,
            };
            let cin = if groups > 1 { cout } else { per };
            let conv = QConv::new(w, s, b, cin, cout, k, cfg).map_err(|e| named(e.to_string()))?;
            QStep::Conv {
                src,
                dst,
                conv,
                relu,
            }
        }
        StepSpec::Affine {
            src,
            dst,
            name,
            len,
            at,
            relu,
        } => {
            let v = part(&p.affine, at, 2 * len, "affine", &name)?;
            QStep::Affine {
                src,
                dst,
                scale: v[..len].to_vec(),
                shift: v[len..].to_vec(),
                relu,
            }
        }
        StepSpec::Head {
            src,
            dst,
            name,
            shape: [classes, c],
            at,
        } => {
            let named = |e: String| format!("{name}: {e}");
            let (w, s, b) = layer(p, at, classes * c, classes).map_err(named)?;
            let head = QHead::new(w, s, b, classes).map_err(|e| named(e.to_string()))?;
            QStep::Head { src, dst, head }
        }
        StepSpec::Relu { src, dst } => QStep::Relu { src, dst },
        StepSpec::Pool {
            src,
            dst,
            max,
            k,
            stride,
            pad,
        } => QStep::Pool {
            src,
            dst,
            max,
            k,
            stride,
            pad,
        },
        StepSpec::Shift { src, dst } => QStep::Shift { src, dst },
        StepSpec::Sum { srcs, dst } => QStep::Sum { srcs, dst },
        StepSpec::Concat { srcs, dst } => QStep::Concat { srcs, dst },
        StepSpec::Zeros { like, stride, dst } => QStep::Zeros { like, stride, dst },
    })
}

/// Reads a quantised folder: its config and the int8 program rebuilt from its files.
pub fn load(dir: &Path) -> Result<(QuantizedRun, QProgram)> {
    let run = read_config(dir)?;
    let path = dir.join(WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let p = Packed::from_bytes(&bytes, &path)?;
    let steps = run
        .steps
        .iter()
        .map(|s| step(&p, s).map_err(|e| Error::data(&path, e)))
        .collect::<Result<Vec<_>>>()?;
    let q = QProgram::from_parts(steps, run.params.clone())
        .map_err(|e| Error::data(dir.join(CONFIG), e.to_string()))?;
    Ok((run, q))
}
