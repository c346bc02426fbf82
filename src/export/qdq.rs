//! A quantised run folder's int8 program as an ONNX model in the QDQ format: every slot of the
//! program is a uint8 tensor `QuantizeLinear(x, scale, zero_point)` with the slot's calibrated
//! parameters, read by its consumers through `DequantizeLinear`; each conv takes its int8
//! weights through a per-output-channel `DequantizeLinear` (axis 0, zero points 0) and an int32
//! bias quantised at `scale_x·scale_w[o]`. onnxruntime's QDQ transformer fuses these groups into
//! its int8 kernels (QLinearConv, QLinearAdd, QLinearConcat, QLinearAveragePool; max pools and
//! ReLUs whose output zero point is the minimum drop their Q/DQ pair). A ReLU fused into a conv
//! is a `Relu` before the output's `QuantizeLinear`, whose zero point is 0 after a ReLU, so
//! onnxruntime removes it again. The classifier is a `Gemm` on the global average pool of the
//! last slot dequantised, its int8 weights and int32 bias dequantised the same way.
//!
//! Input `images` `[batch, C, H, W]` float32 normalised as for `darts eval`, output `logits`.

use super::builder::{conv_attrs, int, Builder};
use super::onnx::{wrap, zeros_like, INPUT, OUTPUT};
use super::proto::{tensor_info, GraphProto, ModelProto, INT32, INT8, UINT8};
use crate::compress::folder::{QuantizedRun, StepSpec};
use crate::compress::int8::QConv;
use crate::compress::quantize::{QParams, QProgram, QStep};
use crate::error::{Error, Result};
use crate::infer::Slot;

/// The QDQ model of `q` (loaded with `run`) for images of `channels`×`size`×`size`.
pub fn model(run: &QuantizedRun, q: &QProgram, channels: usize, size: usize) -> Result<ModelProto> {
    let mut g = Qdq {
        b: Builder::bare(),
        params: &q.params,
    };
    let first = g.quantize(INPUT, 0);
    g.dequantize_as(&first, 0);
    let mut classes = None;
    for (i, (step, spec)) in q.steps.iter().zip(&run.steps).enumerate() {
        let name = match spec {
            StepSpec::Conv { name, .. }
            | StepSpec::Affine { name, .. }
            | StepSpec::Head { name, .. } => name.clone(),
            _ => format!("steps.{i}"),
        };
        if let QStep::Head { head, .. } = step {
            classes = Some(head.classes);
        }
        g.step(step, &name)?;
    }
    let classes =
        classes.ok_or_else(|| Error::InvalidArgument("int8 program without a head".into()))?;
    let dims = [channels, size, size].map(|d| Some(d as i64));
    let graph = GraphProto {
        name: Some("darts-int8".into()),
        doc_string: Some(format!("{}", run.train.genotype)),
        input: vec![tensor_info(INPUT, &[&[None], &dims[..]].concat())],
        output: vec![tensor_info(OUTPUT, &[None, Some(classes as i64)])],
        node: std::mem::take(&mut g.b.nodes),
        initializer: std::mem::take(&mut g.b.initializers),
        ..Default::default()
    };
    let c = run.calibration;
    Ok(wrap(
        graph,
        "DARTS evaluation network, int8 QDQ, exported by darts",
        &[
            ("architecture", format!("{}", run.train.genotype)),
            (
                "quantization",
                format!("{:?} observer, {} batches", c.observer, c.batches),
            ),
        ],
    ))
}

struct Qdq<'a> {
    b: Builder,
    params: &'a [QParams],
}

/// The float value of slot `s` (its dequantised uint8 tensor).
fn real(s: Slot) -> String {
    format!("slot{s}")
}

impl Qdq<'_> {
    /// `QuantizeLinear(x)` with slot `s`'s parameters.
    fn quantize(&mut self, x: &str, s: Slot) -> String {
        let p = self.params[s];
        let scale = self.b.init_f32(&format!("slot{s}.scale"), &[], &[p.scale]);
        let zp = self.b.init(
            &format!("slot{s}.zero_point"),
            &[],
            UINT8,
            [p.zp].into_iter(),
        );
        let out = format!("slot{s}.q");
        self.b.node(
            "QuantizeLinear",
            vec![x.into(), scale, zp],
            vec![],
            Some(&out),
        )
    }

    /// `DequantizeLinear(q)` with slot `s`'s parameters, named [`real`]`(s)`.
    fn dequantize_as(&mut self, q: &str, s: Slot) {
        let inputs = vec![
            q.to_string(),
            format!("slot{s}.scale"),
            format!("slot{s}.zero_point"),
        ];
        self.b
            .node("DequantizeLinear", inputs, vec![], Some(&real(s)));
    }

    /// The float `y` becomes slot `dst`: quantised, then read back.
    fn store(&mut self, y: &str, dst: Slot) {
        let q = self.quantize(y, dst);
        self.dequantize_as(&q, dst);
    }

    fn step(&mut self, step: &QStep, name: &str) -> Result<()> {
        let b = &mut self.b;
        let (y, dst) = match step {
            QStep::Conv {
                src,
                dst,
                conv,
                relu,
            } => {
                let mut y = conv_node(b, self.params[*src].scale, *src, conv, name);
                if *relu {
                    y = b.relu(&y);
                }
                (y, *dst)
            }
            QStep::Relu { src, dst } => (b.relu(&real(*src)), *dst),
            QStep::Pool {
                src,
                dst,
                max,
                k,
                stride,
                pad,
            } => (b.pool(&real(*src), *max, *k, *stride, *pad), *dst),
            QStep::Affine {
                src,
                dst,
                scale,
                shift,
                relu,
            } => {
                let c = scale.len();
                let a = b.init_f32(&format!("{name}.scale"), &[1, c, 1, 1], scale);
                let t = b.init_f32(&format!("{name}.shift"), &[1, c, 1, 1], shift);
                let m = b.node("Mul", vec![real(*src), a], vec![], None);
                let mut y = b.node("Add", vec![m, t], vec![], None);
                if *relu {
                    y = b.relu(&y);
                }
                (y, *dst)
            }
            QStep::Shift { src, dst } => (b.shift(&real(*src)), *dst),
            QStep::Sum { srcs, dst } => {
                let mut y = real(srcs[0]);
                for &s in &srcs[1..] {
                    y = b.add(&y, &real(s));
                }
                (y, *dst)
            }
            QStep::Concat { srcs, dst } => {
                let xs: Vec<String> = srcs.iter().map(|&s| real(s)).collect();
                (b.concat(&xs), *dst)
            }
            QStep::Zeros { like, stride, dst } => (zeros_like(b, &real(*like), *stride), *dst),
            QStep::Head { src, head, .. } => {
                let pooled = b.node("GlobalAveragePool", vec![real(*src)], vec![], None);
                let flat = b.node("Flatten", vec![pooled], vec![int("axis", 1)], None);
                let x_scale = self.params[*src].scale;
                let dims = [head.classes, head.c];
                let w = dq_weights(b, name, &dims, &head.w, &head.w_scale);
                let bias = dq_bias(b, name, &head.bias, &head.w_scale, x_scale);
                let inputs = vec![flat, w, bias];
                b.node("Gemm", inputs, vec![int("transB", 1)], Some(OUTPUT));
                return Ok(());
            }
        };
        self.store(&y, dst);
        Ok(())
    }
}

/// Int8 weights `w` of shape `dims` (output channels first) through a per-output-channel
/// `DequantizeLinear` (axis 0, zero points 0).
fn dq_weights(b: &mut Builder, name: &str, dims: &[usize], w: &[i8], w_scale: &[f32]) -> String {
    let cout = dims[0];
    let q = b.init(
        &format!("{name}.weight"),
        dims,
        INT8,
        w.iter().map(|&v| v as u8),
    );
    let scale = b.init_f32(&format!("{name}.weight_scale"), &[cout], w_scale);
    let zp = b.init(
        &format!("{name}.weight_zero_point"),
        &[cout],
        INT8,
        std::iter::repeat_n(0u8, cout),
    );
    b.node(
        "DequantizeLinear",
        vec![q, scale, zp],
        vec![int("axis", 0)],
        None,
    )
}

/// The int32 `bias` at scale `x_scale·w_scale[o]` through a `DequantizeLinear`.
fn dq_bias(b: &mut Builder, name: &str, bias: &[i32], w_scale: &[f32], x_scale: f32) -> String {
    let cout = bias.len();
    let scale: Vec<f32> = w_scale.iter().map(|s| x_scale * s).collect();
    let q = b.init(
        &format!("{name}.bias_int32"),
        &[cout],
        INT32,
        bias.iter().flat_map(|v| v.to_le_bytes()),
    );
    let s = b.init_f32(&format!("{name}.bias_scale"), &[cout], &scale);
    let zp = b.init(
        &format!("{name}.bias_zero_point"),
        &[cout],
        INT32,
        std::iter::repeat_n(0u8, 4 * cout),
    );
    b.node(
        "DequantizeLinear",
        vec![q, s, zp],
        vec![int("axis", 0)],
        None,
    )
}

/// The float output of `conv` on slot `src` (of scale `x_scale`): int8 weights and int32 bias
/// dequantised per output channel.
fn conv_node(b: &mut Builder, x_scale: f32, src: Slot, conv: &QConv, name: &str) -> String {
    let per = if conv.depthwise() { 1 } else { conv.cin };
    let dims = [conv.cout, per, conv.k, conv.k];
    let wf = dq_weights(b, name, &dims, &conv.w, &conv.w_scale);
    let bf = dq_bias(b, name, &conv.bias, &conv.w_scale, x_scale);
    let attrs = conv_attrs(&conv.cfg, conv.k);
    b.node("Conv", vec![real(src), wf, bf], attrs, None)
}
