//! The weights file of a quantised folder, `model.int8.safetensors`: a few packed 1-D tensors
//! instead of three per layer, so that the header names four tensors, not hundreds:
//!
//! - `weights` (I8): every conv's OIHW weights (BN folded) and the classifier's
//!   `[classes, C]`, in step order;
//! - `scales` (F16): their per-output-channel scales, in the same order (exact: the weights
//!   were rounded with these f16 values);
//! - `biases` (I32) and `biases16` (I16): the biases at the accumulator's scale `s_x·s_w`,
//!   a layer's in `biases16` where every one of them fits 16 bits (most: exact either way),
//!   only for the layers whose bias is not all zero (a depthwise conv inside a sep or dil conv
//!   has none);
//! - `affine` (F32): `scale` then `shift` of each BN that follows no conv.
//!
//! Where each layer's part starts is in its step of `quantized.json`. An empty tensor is left
//! out of the file and reads back empty.

use std::path::Path;

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};

/// The int8 model's tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Packed {
    pub weights: Vec<i8>,
    pub scales: Vec<f32>,
    pub biases: Vec<i32>,
    pub biases16: Vec<i16>,
    pub affine: Vec<f32>,
}

/// The same layers in f32 (BN-folded weights, biases, affine) packed the same way: the
/// like-for-like size baseline, measured, never written.
#[derive(Clone, Debug, Default)]
pub struct PackedF32 {
    pub weights: Vec<f32>,
    pub biases: Vec<f32>,
    pub affine: Vec<f32>,
}

/// One tensor of the file: name, dtype, little-endian bytes.
type Part<'a> = (&'a str, Dtype, Vec<u8>);

fn le<T, const N: usize>(v: &[T], to: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(to).collect()
}

fn serialize(parts: Vec<Part>) -> Result<Vec<u8>> {
    let views = parts
        .iter()
        .filter(|(_, _, bytes)| !bytes.is_empty())
        .map(|(name, dt, bytes)| {
            let len = bytes.len() / dt.bitsize().div_ceil(8);
            TensorView::new(*dt, vec![len], bytes)
                .map(|v| (*name, v))
                .map_err(|e| Error::InvalidArgument(format!("int8 tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidArgument(format!("writing int8 weights: {e}")))
}

impl Packed {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serialize(vec![
            ("weights", Dtype::I8, le(&self.weights, |v| v.to_le_bytes())),
            (
                "scales",
                Dtype::F16,
                le(&self.scales, |v| f16::from_f32(*v).to_le_bytes()),
            ),
            ("biases", Dtype::I32, le(&self.biases, |v| v.to_le_bytes())),
            (
                "biases16",
                Dtype::I16,
                le(&self.biases16, |v| v.to_le_bytes()),
            ),
            ("affine", Dtype::F32, le(&self.affine, |v| v.to_le_bytes())),
        ])
    }

    /// The tensors of the weights file `bytes` read from `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Packed> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::data(path, format!("not a readable safetensors file: {e}")))?;
        let get = |name: &str, dtype: Dtype| -> Result<Vec<u8>> {
            let Ok(t) = st.tensor(name) else {
                return Ok(Vec::new());
            };
            if t.dtype() != dtype || t.shape().len() != 1 {
                return Err(Error::data(
                    path,
                    format!(
                        "tensor {name} is {:?} of shape {:?}, expected 1-D {dtype:?}",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            Ok(t.data().to_vec())
        };
        let f32s = |b: &[u8]| -> Vec<f32> {
            let four = b.chunks_exact(4);
            four.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        Ok(Packed {
            weights: get("weights", Dtype::I8)?
                .into_iter()
                .map(|b| b as i8)
                .collect(),
            scales: get("scales", Dtype::F16)?
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            biases: get("biases", Dtype::I32)?
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            biases16: get("biases16", Dtype::I16)?
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
            affine: f32s(&get("affine", Dtype::F32)?),
        })
    }
}

impl PackedF32 {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let f32s = |v: &[f32]| le(v, |x| x.to_le_bytes());
        serialize(vec![
            ("weights", Dtype::F32, f32s(&self.weights)),
            ("biases", Dtype::F32, f32s(&self.biases)),
            ("affine", Dtype::F32, f32s(&self.affine)),
        ])
    }
}

/// `v[at..at + len]`, or the error that `what` runs past the end of tensor `tensor`.
pub fn part<'a, T>(
    v: &'a [T],
    at: usize,
    len: usize,
    tensor: &str,
    what: &str,
) -> std::result::Result<&'a [T], String> {
    at.checked_add(len)
        .and_then(|end| v.get(at..end))
        .ok_or_else(|| {
            format!(
                "{what}: values {at}..{} of tensor {tensor}, which has {}",
                at.saturating_add(len),
                v.len()
            )
        })
}
