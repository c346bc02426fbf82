//! Building an ONNX graph one layer at a time: each helper appends the nodes of one of our
//! layers (a conv with its BN folded in or as BatchNormalization, a pool, a sum) and returns the
//! name of its output value. Weights become initializers under their state-dict names, found by
//! the tensor's storage (so the graph's names are the checkpoint's, `cells.3._ops.7.op.1.weight`).

use std::collections::HashMap;

use super::proto::{
    AttributeProto, NodeProto, TensorProto, ATTR_FLOAT, ATTR_INT, ATTR_INTS, FLOAT, INT64,
};
use crate::error::{Error, Result};
use crate::nn::{BatchNorm2d, Conv2d, Linear, Module};
use crate::tensor::Tensor;

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ATTR_INT),
        i: Some(v),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ATTR_INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ATTR_FLOAT),
        f: Some(v),
        ..Default::default()
    }
}

/// The graph being built: nodes in topological order (each appended after its inputs exist),
/// initializers, and the state-dict name of every weight of the network.
pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Weight storage address → state-dict name.
    names: HashMap<*const f32, String>,
    /// Node signature → its output, so that the ReLU or pool several edges apply to one state
    /// is computed once, as our forward pass shares it.
    memo: HashMap<String, String>,
    /// Fold each BN into the conv before it (the default), or keep BatchNormalization nodes.
    pub fold: bool,
}

impl Builder {
    pub fn new(net: &dyn Module, fold: bool) -> Self {
        let mut b = Builder::bare();
        net.visit("", &mut |name, t, _| {
            b.names.insert(t.data().as_ptr(), name.to_string());
        });
        b.fold = fold;
        b
    }

    /// A builder that names its initializers itself (a quantised program has no network).
    pub fn bare() -> Self {
        Builder {
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: HashMap::new(),
            memo: HashMap::new(),
            fold: true,
        }
    }

    /// Appends a node and returns its output (`out`, or a fresh name); an identical earlier
    /// node (same op, inputs and attributes) is reused instead.
    pub fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
        out: Option<&str>,
    ) -> String {
        let key = format!("{op}{inputs:?}{attrs:?}");
        if out.is_none() {
            if let Some(o) = self.memo.get(&key) {
                return o.clone();
            }
        }
        let n = self.nodes.len();
        let output = out.map_or_else(|| format!("{}_{n}", op.to_lowercase()), str::to_string);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: Some(format!("{op}_{n}")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        self.memo.insert(key, output.clone());
        output
    }

    /// A float initializer; returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.init(
            name,
            dims,
            FLOAT,
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    pub fn init_i64(&mut self, name: &str, values: &[i64]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes());
        self.init(name, &[values.len()], INT64, bytes)
    }

    /// An initializer of element type `ty` (a `proto` data type) from its little-endian bytes;
    /// returns its name.
    pub fn init(
        &mut self,
        name: &str,
        dims: &[usize],
        ty: i32,
        bytes: impl Iterator<Item = u8>,
    ) -> String {
        if !self
            .initializers
            .iter()
            .any(|t| t.name.as_deref() == Some(name))
        {
            self.initializers.push(TensorProto {
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: Some(ty),
                name: Some(name.into()),
                raw_data: Some(bytes.collect()),
            });
        }
        name.to_string()
    }

    /// The state-dict name of one of the network's tensors.
    fn name_of(&self, t: &Tensor) -> Result<String> {
        self.names.get(&t.data().as_ptr()).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "ONNX export: a tensor of shape {:?} is not a weight of the network",
                t.shape()
            ))
        })
    }

    /// A weight as an initializer under its own name.
    fn param(&mut self, t: &Tensor) -> Result<String> {
        let name = self.name_of(t)?;
        Ok(self.init_f32(&name, t.shape(), t.data()))
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", vec![x.into()], vec![], None)
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", vec![a.into(), b.into()], vec![], None)
    }

    pub fn concat(&mut self, xs: &[String]) -> String {
        self.node("Concat", xs.to_vec(), vec![int("axis", 1)], None)
    }

    /// 3×3 (or k×k) pooling; average pooling divides by the window's cells inside the map
    /// (`count_include_pad=0`), as ours and PyTorch's `count_include_pad=False` do.
    pub fn pool(&mut self, x: &str, max: bool, k: usize, stride: usize, pad: usize) -> String {
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        let mut attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("pads", &[p, p, p, p]),
            ints("strides", &[s, s]),
        ];
        if max {
            self.node("MaxPool", vec![x.into()], attrs, None)
        } else {
            attrs.push(int("count_include_pad", 0));
            self.node("AveragePool", vec![x.into()], attrs, None)
        }
    }

    /// `conv` on `x`, followed by channels `at..` of `bn` when given: folded into the conv's
    /// weight and bias (`w·s`, `(b − mean)·s + β` with `s = γ/√(var + ε)`, in f64), or as a
    /// BatchNormalization node with `--no-fold` (then `bn` must cover exactly the conv's output).
    pub fn conv(
        &mut self,
        x: &str,
        conv: &Conv2d,
        bn: Option<(&BatchNorm2d, usize)>,
    ) -> Result<String> {
        let w = &conv.weight;
        let cout = w.shape()[0];
        let attrs = conv_attrs(&conv.cfg, w.shape()[2]);
        let w_name = self.name_of(w)?;
        let b_name = format!("{}bias", w_name.trim_end_matches("weight"));
        let mut inputs = vec![x.to_string()];
        match bn {
            Some((bn, at)) if self.fold => {
                let (scale, shift) = bn_affine(bn, at, cout);
                let per = w.numel() / cout;
                let folded: Vec<f32> = w
                    .data()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v as f64 * scale[i / per]) as f32)
                    .collect();
                let b = conv.bias.as_ref().map(|b| b.data());
                let bias: Vec<f32> = (0..cout)
                    .map(|o| (b.map_or(0.0, |b| b[o] as f64) * scale[o] + shift[o]) as f32)
                    .collect();
                inputs.push(self.init_f32(&w_name, w.shape(), &folded));
                inputs.push(self.init_f32(&b_name, &[cout], &bias));
                Ok(self.node("Conv", inputs, attrs, None))
            }
            _ => {
                inputs.push(self.param(w)?);
                if let Some(b) = &conv.bias {
                    inputs.push(self.param(b)?);
                }
                let y = self.node("Conv", inputs, attrs, None);
                match bn {
                    Some((bn, _)) => self.batch_norm(&y, bn),
                    None => Ok(y),
                }
            }
        }
    }

    /// Our one-pixel shift (`x[i + 1, j + 1]`): a Slice from row and column 1, zero-padded back
    /// to the size at the far edges, so odd sizes keep their output size.
    pub fn shift(&mut self, x: &str) -> String {
        let starts = self.init_i64("shift.starts", &[1, 1]);
        let ends = self.init_i64("shift.ends", &[i64::MAX, i64::MAX]);
        let axes = self.init_i64("shift.axes", &[2, 3]);
        let sliced = self.node("Slice", vec![x.into(), starts, ends, axes], vec![], None);
        let pads = self.init_i64("shift.pads", &[0, 0, 0, 0, 0, 0, 1, 1]);
        self.node("Pad", vec![sliced, pads], vec![], None)
    }

    /// BatchNormalization with the running statistics (inference mode); a BN without affine
    /// parameters gets γ = 1, β = 0 initializers, which ONNX requires.
    pub fn batch_norm(&mut self, x: &str, bn: &BatchNorm2d) -> Result<String> {
        let mean = self.param(&bn.running_mean)?;
        let prefix = mean.trim_end_matches("running_mean").to_string();
        let c = bn.running_mean.numel();
        let scale = match &bn.weight {
            Some(w) => self.param(w)?,
            None => self.init_f32(&format!("{prefix}weight"), &[c], &vec![1.0; c]),
        };
        let shift = match &bn.bias {
            Some(b) => self.param(b)?,
            None => self.init_f32(&format!("{prefix}bias"), &[c], &vec![0.0; c]),
        };
        let var = self.param(&bn.running_var)?;
        let inputs = vec![x.into(), scale, shift, mean, var];
        Ok(self.node(
            "BatchNormalization",
            inputs,
            vec![float("epsilon", bn.eps)],
            None,
        ))
    }

    /// Flatten and Gemm (`x·Wᵀ + b`): the classifier, whose output is named `out`.
    pub fn linear(&mut self, x: &str, l: &Linear, out: &str) -> Result<String> {
        let flat = self.node("Flatten", vec![x.into()], vec![int("axis", 1)], None);
        let mut inputs = vec![flat, self.param(&l.weight)?];
        if let Some(b) = &l.bias {
            inputs.push(self.param(b)?);
        }
        Ok(self.node("Gemm", inputs, vec![int("transB", 1)], Some(out)))
    }
}

/// A Conv node's attributes for a square `k`×`k` kernel.
pub fn conv_attrs(cfg: &crate::ops::Conv2dCfg, k: usize) -> Vec<AttributeProto> {
    let (k, p, s, d) = (
        k as i64,
        cfg.padding as i64,
        cfg.stride as i64,
        cfg.dilation as i64,
    );
    vec![
        ints("dilations", &[d, d]),
        int("group", cfg.groups as i64),
        ints("kernel_shape", &[k, k]),
        ints("pads", &[p, p, p, p]),
        ints("strides", &[s, s]),
    ]
}

/// Per-channel scale and shift of BN channels `at..at + n` in inference mode.
fn bn_affine(bn: &BatchNorm2d, at: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mean, var) = (bn.running_mean.data(), bn.running_var.data());
    let gamma = bn.weight.as_ref().map(|t| t.data());
    let beta = bn.bias.as_ref().map(|t| t.data());
    (at..at + n)
        .map(|c| {
            let s = gamma.map_or(1.0, |g| g[c] as f64) / (var[c] as f64 + bn.eps as f64).sqrt();
            (s, beta.map_or(0.0, |b| b[c] as f64) - mean[c] as f64 * s)
        })
        .unzip()
}
