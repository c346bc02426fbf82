//! `darts eval`: the f32 network, a quantised folder, or int8 on the fly.

use std::path::PathBuf;

use clap::Args;

use super::{print_json, set_threads, DeviceArgs};
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::train::TrainConfig;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A training run folder (holding config.json and model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Evaluate on another dataset of the same shape than the one trained on.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Read the dataset (the trained one, or `--dataset`) from this folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the bootstrap resampling behind the top-1 confidence interval.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Quantise to int8 first (post-training static, calibrated on training batches) and
    /// evaluate the int8 network (CPU).
    #[arg(long)]
    pub int8: bool,
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct CalibrationArgs {
    /// Training batches of 64 the activation ranges are calibrated on.
    #[arg(long, default_value_t = 16)]
    pub calibration_batches: usize,
    #[arg(long, value_enum, default_value_t = crate::compress::quantize::Observer::Minmax)]
    pub observer: crate::compress::quantize::Observer,
}

pub(super) fn run_eval(a: EvalArgs) -> Result<()> {
    set_threads(a.threads)?;
    let device = a.device.start()?;
    let int8 = a.int8 || crate::compress::folder::is_quantized(&a.checkpoint);
    if int8 && device != crate::Device::Cpu {
        return Err(Error::InvalidArgument(
            "int8 runs on the CPU; drop --device".into(),
        ));
    }
    let (cfg, splits, mut forward) = eval_forward(&a, device)?;
    let train = std::sync::Arc::new(splits.train);
    let mut report = crate::evaluate::evaluate_network(
        &mut forward,
        &cfg,
        &train,
        std::sync::Arc::new(splits.test),
        a.seed,
    )?;
    if int8 {
        report.precision = "int8";
    }
    if a.json {
        print_json(&report)
    } else {
        print!("{}", crate::evaluate::render(&report));
        Ok(())
    }
}

type Forward = Box<dyn FnMut(crate::Tensor) -> Result<crate::Tensor>>;

/// What `darts eval` measures: a quantised folder's saved int8 program, a training run
/// quantised on the fly (`--int8`), or the f32 network on `device`.
fn eval_forward(
    a: &EvalArgs,
    device: crate::Device,
) -> Result<(TrainConfig, crate::data::Splits, Forward)> {
    use crate::compress::{folder, quantize, quantize_cli};
    if folder::is_quantized(&a.checkpoint) {
        if a.int8 {
            return Err(Error::InvalidArgument(format!(
                "{} is already int8: drop --int8",
                a.checkpoint.display()
            )));
        }
        let (run, cfg, splits, q) =
            quantize_cli::load_with_data(&a.checkpoint, a.dataset, a.data_dir.clone())?;
        let c = run.calibration;
        eprintln!(
            "int8 run folder: the saved program ({:?} observer, {} calibration batches)",
            c.observer, c.batches
        );
        return Ok((cfg, splits, Box::new(move |x| q.forward(x))));
    }
    let (mut cfg, mut net, splits) =
        crate::evaluate::load_trained(&a.checkpoint, a.dataset, a.data_dir.clone())?;
    crate::nn::to_device(&mut net, device)?;
    cfg.device = device;
    let forward: Forward = if a.int8 {
        let c = a.calibration;
        let train = std::sync::Arc::new(splits.train.clone());
        let q = quantize::quantize_network(
            &net,
            cfg.data.kind,
            train,
            c.calibration_batches,
            c.observer,
            a.seed,
        )?;
        eprintln!("int8: quantised on the fly ({:?} observer)", c.observer);
        Box::new(move |x| q.forward(x))
    } else {
        crate::evaluate::eval_forward(net, device)?
    };
    Ok((cfg, splits, forward))
}
