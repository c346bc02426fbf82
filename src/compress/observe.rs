//! Calibration: the f32 program run on training batches, each slot's values read by an
//! observer that turns them into the range its uint8 parameters must cover.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::infer::Program;
use crate::tensor::Tensor;

/// How a slot's range is read from the calibration batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Observer {
    /// The smallest and largest value seen.
    Minmax,
    /// The 0.01 % and 99.99 % percentiles of each batch, averaged over the batches: outliers
    /// no longer stretch the scale.
    Percentile,
}

/// Each slot's calibrated range, from the f32 program run on `batches`.
pub fn calibrate(
    prog: &Program,
    batches: &[Tensor],
    observer: Observer,
) -> Result<Vec<(f32, f32)>> {
    if batches.is_empty() {
        return Err(Error::InvalidArgument(
            "quantize: calibration needs at least one batch".into(),
        ));
    }
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); prog.slots];
    let mut sums = vec![(0f64, 0f64); prog.slots];
    for x in batches {
        prog.forward_observed(x.clone(), &mut |s, t| {
            let Ok(d) = t.try_to_vec() else { return };
            match observer {
                Observer::Minmax => {
                    let r = &mut ranges[s];
                    for v in d {
                        r.0 = r.0.min(v);
                        r.1 = r.1.max(v);
                    }
                }
                Observer::Percentile => {
                    let mut d = d;
                    let n = d.len();
                    let at = |q: f64| ((n - 1) as f64 * q).round() as usize;
                    let lo = *d.select_nth_unstable_by(at(1e-4), f32::total_cmp).1;
                    let hi = *d.select_nth_unstable_by(at(1.0 - 1e-4), f32::total_cmp).1;
                    sums[s].0 += lo as f64;
                    sums[s].1 += hi as f64;
                }
            }
        })?;
    }
    if observer == Observer::Percentile {
        let n = batches.len() as f64;
        ranges = sums
            .iter()
            .map(|&(a, b)| ((a / n) as f32, (b / n) as f32))
            .collect();
    }
    Ok(ranges)
}
