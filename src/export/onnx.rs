//! The evaluation network as an ONNX model (opset 17): input `images` `[batch, C, H, W]`
//! float32 (normalised as for `darts eval`), output `logits` `[batch, classes]`. The graph
//! follows the network's forward pass in evaluation mode: no drop-path, no auxiliary head,
//! `none` edges left out (a node all of whose edges are `none` is zeros of its shape), and the
//! ReLU and pools that several edges apply to one state computed once.

use prost::Message;

use super::builder::Builder;
use super::proto::{
    tensor_info, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
};
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nas::operations::{FactorizedReduce, Op, Preprocess, ReluConvBn, ResidualBlock};
use crate::nas::space::skeleton::{Block, Cell};

/// The operator set the graph is written against.
pub const OPSET: i64 = 17;
/// IR version 8: the one that goes with opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "logits";

/// Builds the ONNX model of `net`; `fold`: BN folded into the convs.
pub fn model(net: &Network, fold: bool) -> Result<ModelProto> {
    let mut b = Builder::new(net, fold);
    let body = &net.body;
    let stem = b.conv(INPUT, &body.stem.conv, Some((&body.stem.bn, 0)))?;
    let mut window = vec![stem; body.inputs];
    for block in &body.blocks {
        let out = match block {
            Block::Cell(cell) => cell_graph(&mut b, cell, &window)?,
            Block::Residual(r) => residual(&mut b, r, window.last().expect("inputs >= 1"))?,
        };
        window.remove(0);
        window.push(out);
    }
    let mut last = window.pop().expect("inputs >= 1");
    if let Some(bn) = &body.lastact {
        last = b.batch_norm(&last, bn)?;
        last = b.relu(&last);
    }
    let pooled = b.node("GlobalAveragePool", vec![last], vec![], None);
    b.linear(&pooled, &body.classifier, OUTPUT)?;

    let spec = &net.spec;
    let input_dims = [spec.in_channels, spec.image_size, spec.image_size].map(|d| Some(d as i64));
    let graph = GraphProto {
        name: Some("darts".into()),
        doc_string: Some(format!("{}", spec.genotype)),
        input: vec![tensor_info(INPUT, &[&[None], &input_dims[..]].concat())],
        output: vec![tensor_info(OUTPUT, &[None, Some(spec.num_classes as i64)])],
        node: std::mem::take(&mut b.nodes),
        initializer: std::mem::take(&mut b.initializers),
        ..Default::default()
    };
    Ok(wrap(
        graph,
        "DARTS evaluation network exported by darts",
        &[
            ("architecture", format!("{}", spec.genotype)),
            ("bn_folded", fold.to_string()),
        ],
    ))
}

/// `graph` as a model of our opset, with a description and metadata.
pub fn wrap(graph: GraphProto, doc: &str, meta: &[(&str, String)]) -> ModelProto {
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("darts".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc.into()),
        graph: Some(graph),
        metadata_props: meta
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some((*k).into()),
                value: Some(v.clone()),
            })
            .collect(),
    }
}

/// The model's protobuf bytes.
pub fn to_bytes(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// Reads a model written by [`to_bytes`] (or any ONNX file; unknown fields are skipped).
pub fn from_bytes(bytes: &[u8], path: &std::path::Path) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::data(path, format!("not an ONNX model: {e}")))
}

/// ReLU → conv → BN.
fn relu_conv_bn(b: &mut Builder, x: &str, m: &ReluConvBn) -> Result<String> {
    let r = b.relu(x);
    b.conv(&r, &m.conv, Some((&m.bn, 0)))
}

/// ReLU, then two stride-2 1×1 convs, the second on the map shifted by one pixel up and left
/// (our `shift`: a Slice from row and column 1, zero-padded back to the size at the far edges,
/// so odd sizes give the same output size as the first conv), concatenated, then BN.
fn factorized_reduce(b: &mut Builder, x: &str, m: &FactorizedReduce) -> Result<String> {
    let r = b.relu(x);
    let shifted = b.shift(&r);
    let half = m.conv_1.weight.shape()[0];
    if b.fold {
        let y1 = b.conv(&r, &m.conv_1, Some((&m.bn, 0)))?;
        let y2 = b.conv(&shifted, &m.conv_2, Some((&m.bn, half)))?;
        Ok(b.concat(&[y1, y2]))
    } else {
        let y1 = b.conv(&r, &m.conv_1, None)?;
        let y2 = b.conv(&shifted, &m.conv_2, None)?;
        let cat = b.concat(&[y1, y2]);
        b.batch_norm(&cat, &m.bn)
    }
}

/// One edge's op on state `x`; `None` for `none`.
fn op_graph(b: &mut Builder, x: &str, op: &Op) -> Result<Option<String>> {
    Ok(Some(match op {
        Op::Zero => return Ok(None),
        Op::Identity => x.to_string(),
        Op::Pool { max, stride, bn } => {
            let y = b.pool(x, *max, 3, *stride, 1);
            match bn {
                Some(bn) => b.batch_norm(&y, bn)?,
                None => y,
            }
        }
        Op::SepConv(blocks) => {
            let mut y = x.to_string();
            for blk in blocks.iter() {
                let r = b.relu(&y);
                let dw = b.conv(&r, &blk.dw, None)?;
                y = b.conv(&dw, &blk.pw, Some((&blk.bn, 0)))?;
            }
            y
        }
        Op::DilConv(blk) => {
            let r = b.relu(x);
            let dw = b.conv(&r, &blk.dw, None)?;
            b.conv(&dw, &blk.pw, Some((&blk.bn, 0)))?
        }
        Op::Reduce(r) => factorized_reduce(b, x, r)?,
        Op::NorConv(m) => relu_conv_bn(b, x, m)?,
    }))
}

/// A cell on its input states: preprocessing, each node the sum of its edges, the output the
/// concatenation of its output states.
fn cell_graph(b: &mut Builder, cell: &Cell<Op>, inputs: &[String]) -> Result<String> {
    let mut states: Vec<String> = if cell.preprocess.is_empty() {
        inputs.to_vec()
    } else {
        let mut pre = Vec::with_capacity(inputs.len());
        for (p, x) in cell.preprocess.iter().zip(inputs) {
            pre.push(match p {
                Preprocess::Reduce(r) => factorized_reduce(b, x, r)?,
                Preprocess::Conv(m) => relu_conv_bn(b, x, m)?,
            });
        }
        pre
    };
    let mut e = 0;
    while e < cell.plan.len() {
        let first = cell.plan[e];
        let mut sum: Option<String> = None;
        while e < cell.plan.len() && cell.plan[e].to == first.to {
            if let Some(y) = op_graph(b, &states[cell.plan[e].from], &cell.edges[e])? {
                sum = Some(match sum {
                    Some(s) => b.add(&s, &y),
                    None => y,
                });
            }
            e += 1;
        }
        let value = match sum {
            Some(s) => s,
            None => zeros_like(b, &states[first.from], first.stride),
        };
        states.push(value);
    }
    Ok(match cell.output.as_slice() {
        [one] => states[*one].clone(),
        many => b.concat(&many.iter().map(|&i| states[i].clone()).collect::<Vec<_>>()),
    })
}

/// Zeros of the shape of `x` subsampled at `stride` (a 1×1 average pool picks every
/// `stride`-th pixel, `⌈H/stride⌉` of them, as our zero node has), times 0.
pub fn zeros_like(b: &mut Builder, x: &str, stride: usize) -> String {
    let sub = if stride > 1 {
        b.pool(x, false, 1, stride, 0)
    } else {
        x.to_string()
    };
    let zero = b.init_f32("zero", &[], &[0.0]);
    b.node("Mul", vec![sub, zero], vec![], None)
}

/// NAS-Bench-201's residual reduction: two ReLU-Conv-BN 3×3 (the first at stride 2) plus a 2×2
/// average pool and a 1×1 conv on the shortcut.
fn residual(b: &mut Builder, r: &ResidualBlock, x: &str) -> Result<String> {
    let y = relu_conv_bn(b, x, &r.conv_a)?;
    let y = relu_conv_bn(b, &y, &r.conv_b)?;
    let pooled = b.pool(x, false, 2, 2, 0);
    let shortcut = b.conv(&pooled, &r.downsample, None)?;
    Ok(b.add(&shortcut, &y))
}
