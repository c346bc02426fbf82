//! Reductions to a scalar: sum and mean (accumulated in f64 so large tensors keep precision).

use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

/// Sum of all elements, as a scalar (shape `[]`).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("sum", false);
    let s: f64 = x.data().iter().map(|&v| v as f64).sum();
    let shape = x.shape().to_vec();
    Ok(tape::record(
        "sum",
        Tensor::scalar(s as f32),
        &[x],
        move |g, _| Ok(vec![Some(Tensor::full(&shape, g.item()?))]),
    ))
}

/// Mean of all elements, as a scalar (shape `[]`).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("mean", false);
    let n = x.numel();
    if n == 0 {
        return Err(Error::shape(
            "mean",
            "mean of an empty tensor",
            &[x.shape()],
        ));
    }
    let s: f64 = x.data().iter().map(|&v| v as f64).sum();
    let shape = x.shape().to_vec();
    Ok(tape::record(
        "mean",
        Tensor::scalar((s / n as f64) as f32),
        &[x],
        move |g, _| Ok(vec![Some(Tensor::full(&shape, g.item()? / n as f32))]),
    ))
}
