//! Calibration: the f32 program run on training batches, each slot's values read by an
//! observer that turns them into the range its uint8 parameters must cover.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::loader::{Loader, LoaderConfig};
use crate::data::{Dataset, DatasetKind};
use crate::error::{Error, Result};
use crate::infer::{Program, Slot};
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
    /// TensorRT's entropy calibration, per sign: a 2048-bin histogram of each side of zero over
    /// all batches, clipped at the threshold whose quantised histogram (that side's share of the
    /// 256 levels) is closest to it in KL divergence.
    Entropy,
}

/// Bins of the entropy observer's histogram.
pub const HISTOGRAM_BINS: usize = 2048;

/// Images per calibration batch.
pub const CALIBRATION_BATCH: usize = 64;

/// `n` batches of [`CALIBRATION_BATCH`] training images drawn without replacement in the order
/// `seed` shuffles them to, normalised as in training and not augmented.
pub fn calibration_batches(
    train: Arc<Dataset>,
    kind: DatasetKind,
    n: usize,
    seed: u64,
) -> Result<Vec<Tensor>> {
    let available = train.len() / CALIBRATION_BATCH;
    if n == 0 || n > available {
        return Err(Error::InvalidArgument(format!(
            "--calibration-batches must be in 1..={available} (batches of {CALIBRATION_BATCH} of \
             the training set), got {n}"
        )));
    }
    let norm = crate::data::source::default_normalize(kind, &train)?;
    let all = (0..train.len()).collect();
    let cfg = LoaderConfig {
        seed,
        ..LoaderConfig::new(CALIBRATION_BATCH)
    };
    let loader = Loader::new(train, all, norm, cfg)?;
    Ok(loader.epoch(0)?.take(n).map(|b| b.images).collect())
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
    match observer {
        Observer::Minmax => min_max(prog, batches),
        Observer::Percentile => percentiles(prog, batches),
        Observer::Entropy => entropy(prog, batches),
    }
}

/// Runs the f32 program on every batch, showing `f` each slot's values.
fn observe(
    prog: &Program,
    batches: &[Tensor],
    f: &mut (dyn FnMut(Slot, Vec<f32>) + Send),
) -> Result<()> {
    for x in batches {
        prog.forward_observed(x.clone(), &mut |s, t| {
            if let Ok(d) = t.try_to_vec() {
                f(s, d)
            }
        })?;
    }
    Ok(())
}

fn min_max(prog: &Program, batches: &[Tensor]) -> Result<Vec<(f32, f32)>> {
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); prog.slots];
    observe(prog, batches, &mut |s, d| {
        let r = &mut ranges[s];
        for v in d {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
    })?;
    Ok(ranges)
}

fn percentiles(prog: &Program, batches: &[Tensor]) -> Result<Vec<(f32, f32)>> {
    let mut sums = vec![(0f64, 0f64); prog.slots];
    observe(prog, batches, &mut |s, mut d| {
        let n = d.len();
        let at = |q: f64| ((n - 1) as f64 * q).round() as usize;
        let lo = *d.select_nth_unstable_by(at(1e-4), f32::total_cmp).1;
        let hi = *d.select_nth_unstable_by(at(1.0 - 1e-4), f32::total_cmp).1;
        sums[s].0 += lo as f64;
        sums[s].1 += hi as f64;
    })?;
    let n = batches.len() as f64;
    Ok(sums
        .iter()
        .map(|&(a, b)| ((a / n) as f32, (b / n) as f32))
        .collect())
}

/// Two passes: the min-max range fixes each slot's histogram span `[0, max|x|]`, then the
/// histograms are filled and each clipped at its KL-optimal threshold.
/// Each sign of a slot gets its own histogram and threshold: the uint8 range is asymmetric, so
/// one histogram of |x| would clip the long side at the short side's mass (a normalised image's
/// background at −0.8 would clip its bright pixels at +0.8).
fn entropy(prog: &Program, batches: &[Tensor]) -> Result<Vec<(f32, f32)>> {
    let ranges = min_max(prog, batches)?;
    let mut hists = vec![[vec![0u64; HISTOGRAM_BINS], vec![0u64; HISTOGRAM_BINS]]; prog.slots];
    observe(prog, batches, &mut |s, d| {
        let (lo, hi) = ranges[s];
        for v in d {
            let (side, extent) = if v < 0.0 { (0, -lo) } else { (1, hi) };
            if extent > 0.0 {
                let bin = (v.abs() / extent * HISTOGRAM_BINS as f32) as usize;
                hists[s][side][bin.min(HISTOGRAM_BINS - 1)] += 1;
            }
        }
    })?;
    Ok(ranges
        .iter()
        .zip(&hists)
        .map(|(&(lo, hi), [neg, pos])| {
            // Levels in proportion to each side's extent, as the affine uint8 grid splits them.
            let levels = |extent: f32| {
                ((256.0 * extent / (hi - lo).max(f32::MIN_POSITIVE)) as usize).clamp(1, 256)
            };
            let clip = |hist: &[u64], extent: f32| {
                if extent <= 0.0 {
                    return 0.0;
                }
                // The first bin holds every exact zero (half of a ReLU's output, all the
                // padding): as in NVIDIA's pytorch-quantization it counts as its neighbour, or
                // that spike alone decides the threshold and clips the whole tail.
                let mut hist = hist.to_vec();
                hist[0] = hist[1];
                kl_threshold(&hist, levels(extent)) as f32 * extent / HISTOGRAM_BINS as f32
            };
            (-clip(neg, -lo), clip(pos, hi))
        })
        .collect())
}

/// The number of leading bins of `hist` to keep (the clipping threshold in bins) that minimises
/// KL(P‖Q): P the kept bins with everything beyond folded into the last one, Q those bins merged
/// into `levels` equal groups and spread back evenly over each group's non-empty bins — how much
/// information quantising to `levels` values after clipping there loses.
pub fn kl_threshold(hist: &[u64], levels: usize) -> usize {
    let total: u64 = hist.iter().sum();
    if hist.len() <= levels || total == 0 {
        return hist.len();
    }
    let mut beyond: u64 = hist[levels..].iter().sum();
    let (mut best, mut best_kl) = (hist.len(), f64::INFINITY);
    for i in levels..=hist.len() {
        let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        p[i - 1] += beyond as f64;
        if i < hist.len() {
            beyond -= hist[i];
        }
        let kl = kl_divergence(&p, &spread(&hist[..i], levels));
        if kl < best_kl {
            (best, best_kl) = (i, kl);
        }
    }
    best
}

/// `hist` merged into `levels` groups of (about) equal width, each group's count spread evenly
/// over its non-empty bins.
fn spread(hist: &[u64], levels: usize) -> Vec<f64> {
    let mut q = vec![0f64; hist.len()];
    let width = hist.len() as f64 / levels as f64;
    for j in 0..levels {
        let (a, b) = (
            (j as f64 * width) as usize,
            (((j + 1) as f64 * width) as usize).min(hist.len()),
        );
        let group = &hist[a..b];
        let nonzero = group.iter().filter(|&&c| c > 0).count();
        if nonzero > 0 {
            let each = group.iter().sum::<u64>() as f64 / nonzero as f64;
            for (k, &c) in group.iter().enumerate() {
                if c > 0 {
                    q[a + k] = each;
                }
            }
        }
    }
    q
}

/// KL(P‖Q) of two unnormalised histograms; a bin where P has mass and Q none counts as if Q
/// held a tiny ε there, so that the divergence stays finite (TensorRT smooths the same way).
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, (b / sq).max(1e-10));
            a * (a / b).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peaked distribution with a far, thin tail is clipped well before its maximum; a flat
    /// one, which clipping can only hurt, is kept whole.
    #[test]
    fn kl_threshold_clips_thin_tails_only() {
        let mut peaked: Vec<u64> = (0..HISTOGRAM_BINS)
            .map(|i| (1e6 * (-(i as f64) / 40.0).exp()) as u64)
            .collect();
        peaked[HISTOGRAM_BINS - 1] = 1;
        let t = kl_threshold(&peaked, 128);
        assert!((128..HISTOGRAM_BINS / 2).contains(&t), "{t}");
        let flat = vec![1000u64; HISTOGRAM_BINS];
        assert!(kl_threshold(&flat, 256) > HISTOGRAM_BINS * 9 / 10);
    }
}
