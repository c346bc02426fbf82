//! Unstructured magnitude pruning, for comparison with channel pruning: the smallest conv and
//! linear weights set to zero (below one global threshold, or one per layer), and a mask that
//! keeps them zero after every optimiser step of the fine-tuning. The tensors keep their
//! shapes, so the dense MACs do not change.

use crate::error::{Error, Result};
use crate::nn::{Module, ParamKind};
use crate::tensor::Tensor;

/// Conv and linear weights outside the auxiliary head: what magnitude pruning thins. BN
/// scales and biases are left alone, as in the usual recipe.
fn prunable(name: &str, t: &Tensor, kind: ParamKind) -> bool {
    kind == ParamKind::Weight && t.shape().len() >= 2 && !name.starts_with("auxiliary_head.")
}

/// The value at or below which the fraction `sparsity` of `magnitudes` lies.
fn threshold(mut magnitudes: Vec<f32>, sparsity: f64) -> Option<f32> {
    let k = (sparsity * magnitudes.len() as f64).round() as usize;
    if k == 0 {
        return None;
    }
    let (_, kth, _) = magnitudes.select_nth_unstable_by(k - 1, f32::total_cmp);
    Some(*kth)
}

/// Zeroes the weights of `net` at or below the magnitude that makes `sparsity` of them zero:
/// one threshold over all prunable weights, or with `per_layer` one per tensor.
pub fn prune(net: &mut dyn Module, sparsity: f64, per_layer: bool) -> Result<()> {
    let mut all = Vec::new();
    net.visit("", &mut |name, t, kind| {
        if prunable(name, t, kind) {
            all.extend(t.to_vec().iter().map(|v| v.abs()));
        }
    });
    let global = threshold(all, sparsity);
    let mut result = Ok(());
    net.visit_mut("", &mut |name, t, kind| {
        if !prunable(name, t, kind) || result.is_err() {
            return;
        }
        let values = t.to_vec();
        let cut = if per_layer {
            threshold(values.iter().map(|v| v.abs()).collect(), sparsity)
        } else {
            global
        };
        if let Some(cut) = cut {
            let thinned = values
                .iter()
                .map(|&v| if v.abs() <= cut { 0.0 } else { v })
                .collect();
            result = Tensor::from_vec(thinned, t.shape()).and_then(|v| t.set_data(&v));
        }
    });
    result
}

/// The zero pattern of the prunable weights, re-applied after each optimiser step.
pub struct Masks(Vec<(String, Vec<bool>)>);

impl Masks {
    /// The weights of `net` that are zero now stay zero.
    pub fn of(net: &dyn Module) -> Masks {
        let mut masks = Vec::new();
        net.visit("", &mut |name, t, kind| {
            if prunable(name, t, kind) {
                masks.push((
                    name.to_string(),
                    t.to_vec().iter().map(|&v| v != 0.0).collect(),
                ));
            }
        });
        Masks(masks)
    }

    /// Zeroes the masked weights of `net` again.
    pub fn apply(&self, net: &mut dyn Module) -> Result<()> {
        let mut at = self.0.iter();
        let mut result = Ok(());
        net.visit_mut("", &mut |name, t, kind| {
            if !prunable(name, t, kind) || result.is_err() {
                return;
            }
            result = match at.next() {
                Some((n, mask)) if n == name && mask.len() == t.numel() => {
                    let v = t.try_to_vec().map(|v| {
                        v.iter()
                            .zip(mask)
                            .map(|(&x, &m)| if m { x } else { 0.0 })
                            .collect()
                    });
                    v.and_then(|v| Tensor::from_vec(v, t.shape()))
                        .and_then(|v| t.set_data(&v))
                }
                _ => Err(Error::InvalidArgument(format!(
                    "pruning mask does not fit tensor {name}"
                ))),
            };
        });
        result
    }
}

/// The fraction of prunable weights that are zero.
pub fn weight_sparsity(net: &dyn Module) -> f64 {
    let (mut zeros, mut total) = (0usize, 0usize);
    net.visit("", &mut |name, t, kind| {
        if prunable(name, t, kind) {
            let v = t.to_vec();
            zeros += v.iter().filter(|&&x| x == 0.0).count();
            total += v.len();
        }
    });
    zeros as f64 / total.max(1) as f64
}
