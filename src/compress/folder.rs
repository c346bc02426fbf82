//! A quantised run folder (`darts quantize --out DIR`), two files written atomically:
//!
//! - `quantized.json`: the format and its version, the source run and its training config (the
//!   dataset, its normalisation and class names come from there), the calibration (observer,
//!   batches, seed), every slot's uint8 scale and zero point, the int8 program's steps with the
//!   names of their tensors, and what `darts quantize` measured;
//! - `model.int8.safetensors`: each conv's weights `NAME.weight` (I8, OIHW, BN folded), their
//!   per-output-channel scales `NAME.weight_scale` (F32) and bias `NAME.bias` (F32); the f32
//!   affine of a BN that follows no conv (`NAME.scale`, `NAME.shift`) and the f32 classifier
//!   (`classifier.weight`, `classifier.bias`). `NAME` is the conv's PyTorch state-dict prefix.
//!
//! Loading rebuilds the [`QProgram`] from these files alone, without the network code.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::int8::QConv;
use super::quantize::{Observer, QParams, QProgram, QStep};
use crate::error::{Error, Result};
use crate::infer::{Program, Slot, Step};
use crate::ops::Conv2dCfg;
use crate::tensor::Tensor;
use crate::train::TrainConfig;

pub const CONFIG: &str = "quantized.json";
pub const WEIGHTS: &str = "model.int8.safetensors";
const FORMAT: &str = "darts-int8";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

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
    /// The tensors of `model.int8.safetensors` stored as f32 (folded weights, no scales): the
    /// like-for-like baseline.
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

/// One int8 step without its tensors, which are in the weights file under `name`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StepSpec {
    Conv {
        src: Slot,
        dst: Slot,
        name: String,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
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
        name: String,
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

/// One tensor of the weights file: dtype, shape, little-endian bytes.
type Raw = (Dtype, Vec<usize>, Vec<u8>);
/// A weights file's tensors by name.
type Named = BTreeMap<String, Raw>;

fn f32_raw(shape: &[usize], v: &[f32]) -> Raw {
    (
        Dtype::F32,
        shape.to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn serialize(tensors: &Named) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(k, (dt, shape, bytes))| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (k.as_str(), v))
                .map_err(|e| Error::InvalidArgument(format!("int8 tensor {k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidArgument(format!("writing int8 weights: {e}")))
}

/// The step specs of `q` and its tensors (`int8`) and those same tensors in f32 from the
/// f32 program `prog` it was quantised from (`f32`, the size baseline). Step names are
/// `prog.names`, `steps.I` where a step has none or its name is taken.
fn describe(q: &QProgram, prog: &Program) -> Result<(Vec<StepSpec>, Named, Named)> {
    let (mut specs, mut int8, mut f32) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
    let mut taken = HashSet::new();
    for (i, (qs, fs)) in q.steps.iter().zip(&prog.steps).enumerate() {
        let given = prog.names.get(i).filter(|n| !n.is_empty());
        let name = match given {
            Some(n) if taken.insert(n.clone()) => n.clone(),
            _ => format!("steps.{i}"),
        };
        let key = |suffix: &str| format!("{name}.{suffix}");
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
                let shape = w.shape().to_vec();
                let bytes = conv.w.iter().map(|&v| v as u8).collect();
                int8.insert(key("weight"), (Dtype::I8, shape.clone(), bytes));
                int8.insert(key("weight_scale"), f32_raw(&[conv.cout], &conv.w_scale));
                int8.insert(key("bias"), f32_raw(&[conv.cout], &conv.bias));
                f32.insert(key("weight"), f32_raw(&shape, w.data()));
                f32.insert(key("bias"), f32_raw(&[conv.cout], b.data()));
                let c = conv.cfg;
                StepSpec::Conv {
                    src: *src,
                    dst: *dst,
                    name,
                    stride: c.stride,
                    padding: c.padding,
                    dilation: c.dilation,
                    groups: c.groups,
                    relu: *relu,
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
                for (k, v) in [("scale", scale), ("shift", shift)] {
                    int8.insert(key(k), f32_raw(&[v.len()], v));
                    f32.insert(key(k), f32_raw(&[v.len()], v));
                }
                StepSpec::Affine {
                    src: *src,
                    dst: *dst,
                    name,
                    relu: *relu,
                }
            }
            (QStep::Head { src, dst, w, b }, _) => {
                for (k, t) in [("weight", Some(w)), ("bias", b.as_ref())] {
                    if let Some(t) = t {
                        let raw = f32_raw(t.shape(), &t.try_to_vec()?);
                        int8.insert(key(k), raw.clone());
                        f32.insert(key(k), raw);
                    }
                }
                StepSpec::Head {
                    src: *src,
                    dst: *dst,
                    name,
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
            (QStep::Conv { .. }, _) => {
                return Err(Error::InvalidArgument(format!(
                    "int8 program: step {i} is a conv but the f32 program's is not"
                )))
            }
        });
    }
    Ok((specs, int8, f32))
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
    let (steps, int8, f32) = describe(q, prog)?;
    let weights = serialize(&int8)?;
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
        f32_bytes: serialize(&f32)?.len() as u64,
    })
}

/// Writes the folder `dir` (created if missing), weights first so that a folder whose
/// `quantized.json` exists is complete.
pub fn write(dir: &Path, e: &Encoded) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
    crate::checkpoint::write_atomic(&dir.join(WEIGHTS), &e.weights)?;
    let text = serde_json::to_string_pretty(&e.config)
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
    if v["version"] != VERSION {
        return Err(Error::data(
            &path,
            format!(
                "written in int8 format version {}, this darts reads version {VERSION}: \
                 quantise the training run again with this darts",
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

/// The tensors of a weights file by name, checked for their dtype when taken.
struct Tensors<'a> {
    st: SafeTensors<'a>,
    path: &'a Path,
}

impl Tensors<'_> {
    fn get(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, &[u8])> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| Error::data(self.path, format!("tensor {name} is missing")))?;
        if t.dtype() != dtype {
            return Err(Error::data(
                self.path,
                format!("tensor {name} is {:?}, expected {dtype:?}", t.dtype()),
            ));
        }
        Ok((t.shape().to_vec(), t.data()))
    }

    /// An F32 tensor, which must have `len` values when given.
    fn f32(&self, name: &str, len: Option<usize>) -> Result<Tensor> {
        let (shape, bytes) = self.get(name, Dtype::F32)?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if len.is_some_and(|n| n != v.len()) {
            return Err(Error::data(
                self.path,
                format!("tensor {name} has {} values, expected {len:?}", v.len()),
            ));
        }
        Tensor::from_vec(v, &shape)
    }

    fn conv(&self, name: &str, cfg: Conv2dCfg) -> Result<QConv> {
        let key = |s: &str| format!("{name}.{s}");
        let (shape, bytes) = self.get(&key("weight"), Dtype::I8)?;
        let &[cout, per, k, k2] = shape.as_slice() else {
            return Err(Error::data(
                self.path,
                format!("{} has shape {shape:?}, not OIHW", key("weight")),
            ));
        };
        if k != k2 || cfg.groups == 0 {
            return Err(Error::data(
                self.path,
                format!("{}: square kernels and groups ≥ 1 only", key("weight")),
            ));
        }
        QConv::new(
            bytes.iter().map(|&b| b as i8).collect(),
            self.f32(&key("weight_scale"), Some(cout))?.try_to_vec()?,
            self.f32(&key("bias"), Some(cout))?.try_to_vec()?,
            if cfg.groups > 1 { cout } else { per },
            cout,
            k,
            cfg,
        )
        .map_err(|e| Error::data(self.path, format!("{}: {e}", key("weight"))))
    }
}

fn step(t: &Tensors, spec: &StepSpec) -> Result<QStep> {
    Ok(match spec.clone() {
        StepSpec::Conv {
            src,
            dst,
            name,
            stride,
            padding,
            dilation,
            groups,
            relu,
        } => QStep::Conv {
            src,
            dst,
            conv: t.conv(
                &name,
                Conv2dCfg {
                    stride,
                    padding,
                    dilation,
                    groups,
                },
            )?,
            relu,
        },
        StepSpec::Affine {
            src,
            dst,
            name,
            relu,
        } => {
            let scale = t.f32(&format!("{name}.scale"), None)?.try_to_vec()?;
            let shift = t.f32(&format!("{name}.shift"), Some(scale.len()))?;
            QStep::Affine {
                src,
                dst,
                scale,
                shift: shift.try_to_vec()?,
                relu,
            }
        }
        StepSpec::Head { src, dst, name } => {
            let w = t.f32(&format!("{name}.weight"), None)?;
            let bias = format!("{name}.bias");
            let b = match t.st.tensor(&bias) {
                Ok(_) => Some(t.f32(&bias, Some(w.shape()[0]))?),
                Err(_) => None,
            };
            QStep::Head { src, dst, w, b }
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
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::data(&path, format!("not a readable safetensors file: {e}")))?;
    let t = Tensors { st, path: &path };
    let steps = run
        .steps
        .iter()
        .map(|s| step(&t, s))
        .collect::<Result<Vec<_>>>()?;
    let q = QProgram::from_parts(steps, run.params.clone())
        .map_err(|e| Error::data(dir.join(CONFIG), e.to_string()))?;
    Ok((run, q))
}
