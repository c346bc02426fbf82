//! `darts export --check`: our own structural checks of an ONNX model as written — the header
//! (IR version, opset, producer), every node input defined before use (graph input,
//! initializer or an earlier node's output), no value defined twice, attributes and weight
//! shapes that fit, and shapes inferred node by node from `images` to `logits`, which must come
//! out as the declared `[batch, classes]`. Covers the ops the exporter writes; any other op is
//! an error naming it.

use std::collections::{BTreeMap, HashMap};

use super::proto::{
    tensor_shape_proto::dimension::Value, type_proto, ModelProto, NodeProto, ValueInfoProto,
};
use super::proto::{FLOAT, INT64};

/// One dimension: known, or symbolic (the batch).
type Dim = Option<i64>;

/// What the check found.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub nodes: usize,
    pub initializers: usize,
    pub parameters: usize,
    /// How many nodes of each op type.
    pub ops: BTreeMap<String, usize>,
    /// The inferred shape of the output (`null` for the batch).
    pub output_shape: Vec<Dim>,
}

struct Value2 {
    dims: Vec<Dim>,
    /// The values of an int64 initializer (Slice's starts, Pad's pads).
    ints: Option<Vec<i64>>,
}

fn declared(v: &ValueInfoProto) -> Option<Vec<Dim>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    (t.elem_type == Some(FLOAT)).then_some(())?;
    let dims = t.shape.as_ref()?.dim.iter().map(|d| match d.value {
        Some(Value::DimValue(v)) => Some(v),
        _ => None,
    });
    Some(dims.collect())
}

/// Checks `m`; the error names the node and what is wrong.
pub fn check(m: &ModelProto) -> Result<CheckReport, String> {
    if m.ir_version.unwrap_or(0) < 7 {
        return Err(format!(
            "ir_version {:?} is missing or too old",
            m.ir_version
        ));
    }
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("").is_empty());
    if opset.and_then(|o| o.version).is_none() {
        return Err("no opset_import for the default ONNX domain".into());
    }
    if m.producer_name.as_deref().unwrap_or("").is_empty() {
        return Err("producer_name is not set".into());
    }
    let g = m.graph.as_ref().ok_or("the model has no graph")?;
    let mut values: HashMap<String, Value2> = HashMap::new();
    let mut parameters = 0;
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        let n: i64 = t.dims.iter().product();
        let bytes = t.raw_data.as_ref().map_or(0, Vec::len) as i64;
        let ints = match t.data_type {
            Some(FLOAT) if bytes == 4 * n => None,
            Some(INT64) if bytes == 8 * n => Some(
                t.raw_data
                    .as_ref()
                    .unwrap()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            ty => {
                return Err(format!(
                    "initializer {name}: type {ty:?} with {bytes} bytes for dims {:?}",
                    t.dims
                ))
            }
        };
        parameters += if ints.is_none() { n as usize } else { 0 };
        let dims = t.dims.iter().map(|&d| Some(d)).collect();
        if values.insert(name.clone(), Value2 { dims, ints }).is_some() {
            return Err(format!("initializer {name} is defined twice"));
        }
    }
    for i in &g.input {
        let name = i.name.clone().unwrap_or_default();
        let dims = declared(i)
            .ok_or_else(|| format!("input {name} is not a float tensor with a shape"))?;
        values.insert(name, Value2 { dims, ints: None });
    }
    let mut ops = BTreeMap::new();
    for n in &g.node {
        let op = n.op_type.clone().unwrap_or_default();
        let here = format!("node {} ({op})", n.name.as_deref().unwrap_or("?"));
        let mut ins = Vec::with_capacity(n.input.len());
        for i in &n.input {
            ins.push(
                values
                    .get(i)
                    .ok_or_else(|| format!("{here}: input {i} is not defined before it"))?,
            );
        }
        let dims = infer(&op, n, &ins).map_err(|e| format!("{here}: {e}"))?;
        if n.output.len() != 1 {
            return Err(format!("{here}: {} outputs, expected 1", n.output.len()));
        }
        if values
            .insert(n.output[0].clone(), Value2 { dims, ints: None })
            .is_some()
        {
            return Err(format!("{here}: output {} is defined twice", n.output[0]));
        }
        *ops.entry(op).or_insert(0) += 1;
    }
    let [out] = g.output.as_slice() else {
        return Err(format!("{} graph outputs, expected 1", g.output.len()));
    };
    let name = out.name.clone().unwrap_or_default();
    let want =
        declared(out).ok_or_else(|| format!("output {name} is not a float tensor with a shape"))?;
    let got = &values
        .get(&name)
        .ok_or_else(|| format!("output {name} is never computed"))?
        .dims;
    if *got != want {
        return Err(format!(
            "output {name}: inferred shape {got:?}, declared {want:?}"
        ));
    }
    Ok(CheckReport {
        nodes: g.node.len(),
        initializers: g.initializer.len(),
        parameters,
        ops,
        output_shape: want,
    })
}

fn attr_ints(n: &NodeProto, name: &str, default: &[i64]) -> Vec<i64> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map_or_else(|| default.to_vec(), |a| a.ints.clone())
}

fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
        .unwrap_or(default)
}

/// The output size of a window op along one axis.
fn window(size: Dim, k: i64, s: i64, pads: (i64, i64), d: i64) -> Result<Dim, String> {
    let Some(size) = size else { return Ok(None) };
    let span = d * (k - 1) + 1;
    if s < 1 || size + pads.0 + pads.1 < span {
        return Err(format!(
            "a window of {span} at stride {s} does not fit {size} with pads {pads:?}"
        ));
    }
    Ok(Some((size + pads.0 + pads.1 - span) / s + 1))
}

/// The spatial output of Conv or a pool on `[N, C, H, W]`.
fn spatial(n: &NodeProto, x: &[Dim], kernel: &[i64]) -> Result<Vec<Dim>, String> {
    let k = attr_ints(n, "kernel_shape", kernel);
    let s = attr_ints(n, "strides", &[1, 1]);
    let p = attr_ints(n, "pads", &[0, 0, 0, 0]);
    let d = attr_ints(n, "dilations", &[1, 1]);
    if x.len() != 4 || k.len() != 2 || s.len() != 2 || p.len() != 4 || d.len() != 2 {
        return Err(format!(
            "expects a 4-d input and 2-d attributes, got input {x:?}"
        ));
    }
    Ok(vec![
        window(x[2], k[0], s[0], (p[0], p[2]), d[0])?,
        window(x[3], k[1], s[1], (p[1], p[3]), d[1])?,
    ])
}

fn infer(op: &str, n: &NodeProto, ins: &[&Value2]) -> Result<Vec<Dim>, String> {
    let arity = |want: std::ops::RangeInclusive<usize>| {
        if want.contains(&ins.len()) {
            Ok(())
        } else {
            Err(format!("{} inputs, expected {want:?}", ins.len()))
        }
    };
    let x = &ins.first().ok_or("no inputs")?.dims;
    match op {
        "Relu" => arity(1..=1).map(|_| x.clone()),
        "Add" | "Mul" => {
            arity(2..=2)?;
            let y = &ins[1].dims;
            match (x.len(), y.len()) {
                (_, 0) => Ok(x.clone()),
                _ if x == y => Ok(x.clone()),
                _ => Err(format!("shapes {x:?} and {y:?} differ")),
            }
        }
        "Conv" => {
            arity(2..=3)?;
            let w = &ins[1].dims;
            let group = attr_int(n, "group", 1);
            let [Some(cout), Some(cin_g), Some(kh), Some(kw)] = w[..] else {
                return Err(format!("weight shape {w:?} is not 4-d"));
            };
            if x.len() != 4 || x[1].is_some_and(|c| c != cin_g * group) {
                return Err(format!(
                    "input {x:?} does not have {group}×{cin_g} channels"
                ));
            }
            if ins.len() == 3 && ins[2].dims != [Some(cout)] {
                return Err(format!("bias {:?} for {cout} filters", ins[2].dims));
            }
            Ok([vec![x[0], Some(cout)], spatial(n, x, &[kh, kw])?].concat())
        }
        "BatchNormalization" => {
            arity(5..=5)?;
            if ins[1..]
                .iter()
                .any(|v| v.dims != [x.get(1).copied().flatten()])
            {
                return Err(format!("scale, bias, mean, var must be [{:?}]", x.get(1)));
            }
            Ok(x.clone())
        }
        "MaxPool" | "AveragePool" => {
            arity(1..=1)?;
            if op == "AveragePool" && attr_int(n, "count_include_pad", 0) != 0 {
                return Err("count_include_pad must be 0 (pooling excludes the padding)".into());
            }
            Ok([vec![x[0], x[1]], spatial(n, x, &[])?].concat())
        }
        "GlobalAveragePool" => arity(1..=1).map(|_| vec![x[0], x[1], Some(1), Some(1)]),
        "Concat" => {
            let axis = attr_int(n, "axis", 0) as usize;
            let mut out = x.clone();
            for v in &ins[1..] {
                let same =
                    v.dims.len() == x.len() && (0..x.len()).all(|i| i == axis || v.dims[i] == x[i]);
                if !same {
                    return Err(format!(
                        "cannot concatenate {x:?} and {:?} on axis {axis}",
                        v.dims
                    ));
                }
                out[axis] = out[axis].zip(v.dims[axis]).map(|(a, b)| a + b);
            }
            Ok(out)
        }
        "Slice" => {
            arity(3..=4)?;
            let int_input = |i: usize| {
                ins[i]
                    .ints
                    .clone()
                    .ok_or(format!("input {i} must be an int64 initializer"))
            };
            let (starts, ends) = (int_input(1)?, int_input(2)?);
            let axes = if ins.len() > 3 {
                int_input(3)?
            } else {
                (0..starts.len() as i64).collect()
            };
            let mut out = x.clone();
            for ((&a, &s), &e) in axes.iter().zip(&starts).zip(&ends) {
                let d = out.get_mut(a as usize).ok_or("axis out of range")?;
                *d = d
                    .map(|size| e.min(size) - s.clamp(0, size))
                    .map(|l| l.max(0));
            }
            Ok(out)
        }
        "Pad" => {
            arity(2..=3)?;
            let pads = ins[1]
                .ints
                .clone()
                .ok_or("pads must be an int64 initializer")?;
            if pads.len() != 2 * x.len() {
                return Err(format!("{} pads for a {}-d input", pads.len(), x.len()));
            }
            Ok((0..x.len())
                .map(|i| x[i].map(|d| d + pads[i] + pads[i + x.len()]))
                .collect())
        }
        "Flatten" => {
            let axis = attr_int(n, "axis", 1) as usize;
            let rest = x[axis..].iter().try_fold(1, |p, d| d.map(|d| p * d));
            Ok(vec![x[0], rest])
        }
        "Gemm" => {
            arity(2..=3)?;
            let w = &ins[1].dims;
            if attr_int(n, "transB", 0) != 1 || w.len() != 2 || x.len() != 2 || x[1] != w[1] {
                return Err(format!("x {x:?} and transposed weight {w:?} do not fit"));
            }
            Ok(vec![x[0], w[0]])
        }
        other => Err(format!("op {other} is not one the exporter writes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::proto::tensor_info;
    use crate::nas::network::{Network, NetworkSpec};
    use crate::nas::space::{Arch, NB201_BEST};

    fn model() -> ModelProto {
        let spec = NetworkSpec {
            channels: 2,
            layers: 1,
            num_classes: 3,
            in_channels: 1,
            image_size: 8,
            auxiliary: false,
            genotype: Arch::load(NB201_BEST).unwrap(),
        };
        let net = Network::new(spec, &mut crate::rng(0)).unwrap();
        crate::export::onnx::model(&net, true).unwrap()
    }

    #[test]
    fn exported_model_passes_and_broken_ones_are_named() {
        let good = model();
        let report = check(&good).unwrap();
        assert_eq!(report.output_shape, vec![None, Some(3)]);
        assert_eq!(report.ops["Gemm"], 1);

        let mut undefined = good.clone();
        undefined.graph.as_mut().unwrap().node[3].input[0] = "nowhere".into();
        let err = check(&undefined).unwrap_err();
        assert!(err.contains("input nowhere is not defined"), "{err}");

        let mut misshapen = good.clone();
        let g = misshapen.graph.as_mut().unwrap();
        g.initializer[0].dims[1] = 5;
        let err = check(&misshapen).unwrap_err();
        assert!(
            err.contains("stem.0.weight") && err.contains("bytes"),
            "{err}"
        );

        // Images of 3 channels for a stem conv of 1.
        let mut wrong_input = good.clone();
        wrong_input.graph.as_mut().unwrap().input[0] =
            tensor_info("images", &[None, Some(3), Some(8), Some(8)]);
        let err = check(&wrong_input).unwrap_err();
        assert!(err.contains("Conv") && err.contains("channels"), "{err}");

        let mut unknown = good;
        unknown.graph.as_mut().unwrap().node[1].op_type = Some("Gelu".into());
        assert!(check(&unknown)
            .unwrap_err()
            .contains("op Gelu is not one the exporter writes"));
    }
}
