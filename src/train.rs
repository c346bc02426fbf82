//! Shared pieces of the training loops: running loss/accuracy meters and evaluation passes.

use crate::data::Batch;
use crate::error::Result;
use crate::nn::Ctx;
use crate::tensor::Tensor;

/// Index of the largest logit in each row.
pub fn argmax_rows(logits: &Tensor) -> Vec<usize> {
    let k = logits.shape().last().copied().unwrap_or(1).max(1);
    logits
        .data()
        .chunks(k)
        .map(|r| r.iter().enumerate().fold(0, |best, (i, &v)| if v > r[best] { i } else { best }))
        .collect()
}

/// Running mean loss and accuracy over batches, weighted by batch size.
#[derive(Default, Clone, Debug)]
pub struct Meter {
    loss_sum: f64,
    correct: usize,
    seen: usize,
}

impl Meter {
    /// Adds a batch's logits, labels and mean loss.
    pub fn add(&mut self, logits: &Tensor, labels: &[usize], loss: f32) {
        let pred = argmax_rows(logits);
        self.correct += pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        self.loss_sum += loss as f64 * labels.len() as f64;
        self.seen += labels.len();
    }
    pub fn loss(&self) -> f32 {
        (self.loss_sum / self.seen.max(1) as f64) as f32
    }
    pub fn accuracy(&self) -> f32 {
        self.correct as f32 / self.seen.max(1) as f32
    }
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// Mean loss and accuracy of a model over batches, in evaluation mode and without a tape.
pub fn evaluate<M>(
    model: &mut M,
    batches: impl Iterator<Item = Batch>,
    mut forward: impl FnMut(&mut M, &Tensor, &mut Ctx) -> Result<Tensor>,
) -> Result<(f32, f32)> {
    let mut ctx = Ctx::new(false, 0);
    let mut meter = Meter::default();
    crate::no_grad(|| {
        for b in batches {
            let logits = forward(model, &b.images, &mut ctx)?;
            let loss = crate::ops::cross_entropy(&logits, &b.labels)?;
            meter.add(&logits, &b.labels, loss.item()?);
        }
        Ok(())
    })?;
    Ok((meter.loss(), meter.accuracy()))
}
