//! The latency of the unpruned and the pruned model's f32 inference path, timed in turns on
//! the same test images (A, B, A, B, ...), so that a load burst on a shared machine hits both
//! alike; the speed-up is the median of the per-turn ratios.

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::infer::Program;
use crate::tensor::Tensor;

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub unpruned_batch1_median_ms: f64,
    pub pruned_batch1_median_ms: f64,
    /// Median over turns of unpruned / pruned time, batch 1.
    pub batch1_speedup: f64,
    pub unpruned_batch64_images_per_s: f64,
    pub pruned_batch64_images_per_s: f64,
    /// Median over turns of unpruned / pruned time, batch 64.
    pub batch64_speedup: f64,
    pub turns_batch1: usize,
    pub turns_batch64: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(p: &Program, x: &Tensor) -> Result<f64> {
    let t = Instant::now();
    p.forward(x.clone())?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Per turn, the times of `a` and `b` on `x`, after two warm-up calls each.
fn turns(a: &Program, b: &Program, x: &Tensor, n: usize) -> Result<Vec<(f64, f64)>> {
    for _ in 0..2 {
        time(a, x)?;
        time(b, x)?;
    }
    (0..n).map(|_| Ok((time(a, x)?, time(b, x)?))).collect()
}

/// Times `unpruned` against `pruned`: `runs` turns at batch 1 (the first image of `x64`) and
/// `runs / 10` (at least 3) at batch 64.
pub fn compare(unpruned: &Program, pruned: &Program, x64: &Tensor, runs: usize) -> Result<Latency> {
    let n = x64.shape()[0];
    if n == 0 {
        return Err(Error::InvalidArgument("the test set is empty".into()));
    }
    let per = x64.numel() / n;
    let x1 = Tensor::from_vec(
        x64.data()[..per].to_vec(),
        &[&[1], &x64.shape()[1..]].concat(),
    )?;
    let one = turns(unpruned, pruned, &x1, runs)?;
    let many = turns(unpruned, pruned, x64, (runs / 10).max(3))?;
    let side = |t: &[(f64, f64)], first: bool| {
        median(t.iter().map(|p| if first { p.0 } else { p.1 }).collect())
    };
    let ratio = |t: &[(f64, f64)]| median(t.iter().map(|p| p.0 / p.1).collect());
    let ips = |ms: f64| n as f64 / ms * 1e3;
    Ok(Latency {
        unpruned_batch1_median_ms: side(&one, true),
        pruned_batch1_median_ms: side(&one, false),
        batch1_speedup: ratio(&one),
        unpruned_batch64_images_per_s: ips(side(&many, true)),
        pruned_batch64_images_per_s: ips(side(&many, false)),
        batch64_speedup: ratio(&many),
        turns_batch1: one.len(),
        turns_batch64: many.len(),
    })
}

/// Two lines: batch-1 latency and batch-64 throughput, unpruned → pruned.
pub fn render(l: &Latency) -> String {
    format!(
        "batch 1 median: {:.3} ms -> {:.3} ms ({:.2}x, median of {} paired turns)\nbatch 64: {:.0} -> {:.0} img/s ({:.2}x, median of {} paired turns)\n",
        l.unpruned_batch1_median_ms,
        l.pruned_batch1_median_ms,
        l.batch1_speedup,
        l.turns_batch1,
        l.unpruned_batch64_images_per_s,
        l.pruned_batch64_images_per_s,
        l.batch64_speedup,
        l.turns_batch64
    )
}
