//! `darts bench search`: median wall time of one full search step (architecture step, then
//! weight step) on random data for the reference configurations, with images/s and peak memory.

use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use super::architect::{Architect, Batch, Order};
use super::supernet::{Network, SearchSpec};
use crate::cli::{BenchConfig, BenchSearchArgs};
use crate::error::{Error, Result};
use crate::nn::{param_count, set_trainable, Ctx};
use crate::optim::{clip_grad_norm, Optimizer, Sgd};
use crate::tensor::Tensor;
use crate::Device;

/// One benchmark configuration.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StepConfig {
    pub name: &'static str,
    pub channels: usize,
    pub layers: usize,
    pub batch: usize,
    pub image: usize,
    pub in_channels: usize,
    pub classes: usize,
}

pub const CONFIG_T: StepConfig = StepConfig {
    name: "T",
    channels: 8,
    layers: 5,
    batch: 32,
    image: 28,
    in_channels: 1,
    classes: 10,
};
pub const CONFIG_S: StepConfig = StepConfig {
    name: "S",
    channels: 16,
    layers: 8,
    batch: 64,
    image: 32,
    in_channels: 3,
    classes: 10,
};

/// Timing of one configuration and order.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    pub config: &'static str,
    pub order: u8,
    pub params: usize,
    pub median_seconds: f64,
    pub min_seconds: f64,
    pub images_per_second: f64,
    pub peak_rss_mb: f64,
    /// Peak device memory of the step (the CUDA memory pool's high-water mark).
    pub peak_gpu_mb: Option<f64>,
}

fn random_batch(c: &StepConfig, rng: &mut impl Rng) -> Result<(Tensor, Vec<usize>)> {
    let x = Tensor::randn(&[c.batch, c.in_channels, c.image, c.image], 1.0, rng);
    let y = (0..c.batch)
        .map(|_| rng.random_range(0..c.classes))
        .collect();
    Ok((x, y))
}

/// Times `reps` search steps (after one warm-up) of configuration `c` at `order`.
pub fn time_steps(
    c: &StepConfig,
    order: Order,
    reps: usize,
    seed: u64,
    device: Device,
) -> Result<StepTiming> {
    crate::rss::reset_peak();
    let gpu = match device {
        Device::Cuda => Some(crate::device::cuda::gpu()?),
        Device::Cpu => None,
    };
    if let Some(g) = gpu {
        g.reset_peak_memory();
    }
    let mut rng = crate::rng(seed);
    let mut net = Network::new(
        SearchSpec::darts(c.channels, c.layers, c.in_channels, c.classes),
        &mut rng,
    )?;
    crate::nn::to_device(&mut net, device)?;
    crate::nn::to_device(&mut net.alphas, device)?;
    let mut architect = Architect::new(order, 3e-4, 1e-3)?;
    let mut sgd = Sgd::new(0.025, 0.9, 3e-4, false)?;
    let (xt, yt) = random_batch(c, &mut rng)?;
    let (xv, yv) = random_batch(c, &mut rng)?;
    let (xt, xv) = (xt.to_device(device)?, xv.to_device(device)?);
    let mut ctx = Ctx::new(true, seed);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps + 1 {
        let t = Instant::now();
        let train = Batch {
            images: &xt,
            labels: &yt,
        };
        let val = Batch {
            images: &xv,
            labels: &yv,
        };
        architect.step(&mut net, &train, &val, sgd.lr(), &sgd, &mut ctx)?;
        set_trainable(&mut net.alphas, false);
        let loss = net.loss(&xt, &yt, &mut ctx)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&net, &mut grads, 5.0)?;
        sgd.step(&mut net, &grads)?;
        if let Some(g) = gpu {
            g.synchronize()?; // the step is done when the GPU is
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    crate::ops::prof::report(reps + 1);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(StepTiming {
        config: c.name,
        order: if order == Order::First { 1 } else { 2 },
        params: param_count(&net),
        median_seconds: median,
        min_seconds: times[0],
        images_per_second: c.batch as f64 / median,
        peak_rss_mb: crate::rss::peak_mb(),
        peak_gpu_mb: gpu.and_then(|g| g.peak_memory()).map(|b| b as f64 / 1e6),
    })
}

/// The `darts bench search` command.
pub fn run_cli(a: &BenchSearchArgs) -> Result<()> {
    let device = a.device.start()?;
    let mut configs: Vec<StepConfig> = match a.config {
        BenchConfig::T => vec![CONFIG_T],
        BenchConfig::S => vec![CONFIG_S],
        BenchConfig::All => vec![CONFIG_T, CONFIG_S],
    };
    if let Some(b) = a.batch {
        if b == 0 {
            return Err(Error::InvalidArgument("--batch must be positive".into()));
        }
        configs.iter_mut().for_each(|c| c.batch = b);
    }
    let orders = match a.order.as_str() {
        "1" => vec![Order::First],
        "2" => vec![Order::Second],
        "both" => vec![Order::First, Order::Second],
        o => {
            return Err(Error::InvalidArgument(format!(
                "--order must be 1, 2 or both, got {o}"
            )))
        }
    };
    if a.reps == 0 {
        return Err(Error::InvalidArgument("--reps must be positive".into()));
    }
    let mut results = Vec::new();
    eprintln!(
        "config order   params   median s     min s    img/s  peak RSS MB  ({} threads)",
        rayon::current_num_threads()
    );
    for c in &configs {
        for &o in &orders {
            let r = time_steps(c, o, a.reps, a.seed, device)?;
            eprintln!(
                "{:>6} {:>5} {:>8} {:>10.3} {:>9.3} {:>8.1} {:>12.0}",
                r.config,
                r.order,
                r.params,
                r.median_seconds,
                r.min_seconds,
                r.images_per_second,
                r.peak_rss_mb
            );
            results.push(r);
        }
    }
    if a.json {
        let s =
            serde_json::to_string(&results).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        println!(
            "{{\"threads\":{},\"device\":\"{device}\",\"results\":{s}}}",
            rayon::current_num_threads()
        );
    }
    Ok(())
}
