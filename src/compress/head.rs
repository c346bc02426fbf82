//! [`QHead`], the int8 classifier: global average pool and linear layer on the last uint8 map.
//!
//! With `S[c] = Σ_hw (q − zp_x)` the exact integer channel sums and int8 weights `W` at scale
//! `s_w[o]` per class, `logit[o] = s_x·s_w[o]·(Σ_c W[o, c]·S[c] / (h·w) + bias_q[o])`: a QGemm
//! on the channel means with the bias in i32 at the accumulator's scale `s_x·s_w[o]`, as for
//! the convs. The means are not rounded back to uint8, so the only rounding is the weights'.

use super::int8::{elementwise as ew, Isa, QTensor};
use super::quantize::{quantize_bias, quantize_weights};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `w` int8 `[classes, c]`, `w_scale` per class, `bias` i32 at scale `s_x·w_scale[o]` for
/// inputs of scale `s_x`.
#[derive(Clone, Debug)]
pub struct QHead {
    pub w: Vec<i8>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<i32>,
    pub classes: usize,
    pub c: usize,
}

impl QHead {
    /// Checks the sizes.
    pub fn new(w: Vec<i8>, w_scale: Vec<f32>, bias: Vec<i32>, classes: usize) -> Result<QHead> {
        if classes == 0
            || !w.len().is_multiple_of(classes)
            || w_scale.len() != classes
            || bias.len() != classes
        {
            return Err(Error::shape(
                "int8 head",
                format!("{classes} classes: give [classes, C] int8 weights and one scale and bias per class"),
                &[&[w.len()], &[w_scale.len()], &[bias.len()]],
            ));
        }
        let c = w.len() / classes;
        Ok(QHead {
            w,
            w_scale,
            bias,
            classes,
            c,
        })
    }

    /// The f32 classifier `w` `[classes, c]` and bias `b` for inputs of scale `x_scale`.
    pub fn quantize(w: &Tensor, b: Option<&Tensor>, x_scale: f32) -> Result<QHead> {
        let classes = w.shape()[0];
        let (q, w_scale) = quantize_weights(&w.try_to_vec()?, classes)?;
        let b = match b {
            Some(t) => t.try_to_vec()?,
            None => vec![0.0; classes],
        };
        let bias = quantize_bias(&b, &w_scale, x_scale);
        QHead::new(q, w_scale, bias, classes)
    }

    /// The weights dequantised, `[classes, c]` row-major.
    pub fn real_weights(&self) -> Vec<f32> {
        let c = self.c;
        (0..self.w.len())
            .map(|i| self.w[i] as f32 * self.w_scale[i / c])
            .collect()
    }

    /// Logits `[n][classes]` of the NHWC map `x`.
    pub fn forward(&self, isa: Isa, x: &QTensor) -> Result<Vec<f32>> {
        let [_, h, w, c] = x.shape;
        if c != self.c || h * w == 0 {
            return Err(Error::shape(
                "int8 head",
                format!("a classifier on {} channels (NHWC input)", self.c),
                &[&x.shape],
            ));
        }
        let hw = (h * w) as f64;
        let sums = ew::channel_sums(isa, x);
        let mut out = Vec::with_capacity(sums.len() / c * self.classes);
        for s in sums.chunks_exact(c) {
            for (o, row) in self.w.chunks_exact(c).enumerate() {
                let acc: i64 = row.iter().zip(s).map(|(&w, &v)| w as i64 * v as i64).sum();
                let scale = x.scale as f64 * self.w_scale[o] as f64;
                out.push((scale * (acc as f64 / hw + self.bias[o] as f64)) as f32);
            }
        }
        Ok(out)
    }
}
