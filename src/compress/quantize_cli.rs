//! `darts quantize`: a training run folder to an int8 run folder ([`super::folder`]): lowered
//! (BN folded), calibrated on training batches, quantised, measured against the f32 program on
//! the test set, written. And the other commands' way into such a folder.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::folder::{self, Calibration, Measured, QuantizedRun};
use super::quantize::{calibrate, calibration_batches, QProgram};
use crate::cli::CalibrationArgs;
use crate::data::{DatasetKind, Splits};
use crate::error::{Error, Result};
use crate::evaluate::{evaluate_network, load_data, load_trained};
use crate::train::{TrainConfig, MODEL_CONFIG, MODEL_WEIGHTS};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A `darts train` run folder (holding config.json and model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The int8 run folder to write (quantized.json, model.int8.safetensors); `darts eval`,
    /// `predict`, `bench infer` and `export` take it as --checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// Which training images calibrate (the shuffle of the training set), and the bootstrap
    /// of the reported accuracies.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Read the trained dataset from this folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &QuantizeArgs) -> Result<()> {
    if folder::is_quantized(&a.checkpoint) {
        return Err(Error::data(
            &a.checkpoint,
            "is already quantised (an int8 run folder): quantise the `darts train` run folder \
             it came from",
        ));
    }
    if a.out.join(MODEL_CONFIG).exists() || a.out.join(MODEL_WEIGHTS).exists() {
        return Err(Error::data(
            &a.out,
            "holds a training run: give --out a new folder for the int8 run",
        ));
    }
    crate::cli::set_threads(a.threads)?;
    let (cfg, net, splits) = load_trained(&a.checkpoint, None, a.data_dir.clone())?;
    let c = a.calibration;
    let train = Arc::new(splits.train);
    let xs = calibration_batches(train.clone(), cfg.data.kind, c.calibration_batches, a.seed)?;
    let prog = crate::infer::lower(&net)?;
    let t = std::time::Instant::now();
    let q = QProgram::new(&prog, &calibrate(&prog, &xs, c.observer)?)?;
    eprintln!(
        "calibrated on {} batches ({:?} observer) in {:.1}s",
        xs.len(),
        c.observer,
        t.elapsed().as_secs_f64()
    );
    let calibration = Calibration {
        observer: c.observer,
        batches: c.calibration_batches,
        seed: a.seed,
    };
    let mut enc = folder::encode(&q, &prog, &a.checkpoint, &cfg, calibration)?;
    let test = Arc::new(splits.test);
    let top1 = |forward: &mut dyn FnMut(crate::Tensor) -> Result<crate::Tensor>| {
        evaluate_network(forward, &cfg, &train, test.clone(), a.seed).map(|r| r.top1)
    };
    let f32_top1 = top1(&mut |x| prog.forward(x))?;
    let int8_top1 = top1(&mut |x| q.forward(x))?;
    let source = a.checkpoint.join(MODEL_WEIGHTS);
    let source_bytes = std::fs::metadata(&source)
        .map_err(|e| Error::io(&source, e))?
        .len();
    let int8_bytes = enc.weights.len() as u64;
    let m = Measured {
        f32_top1,
        int8_top1,
        delta_points: 100.0 * (int8_top1 - f32_top1),
        source_bytes,
        f32_bytes: enc.f32_bytes,
        int8_bytes,
        ratio: enc.f32_bytes as f64 / int8_bytes as f64,
    };
    enc.config.measured = Some(m.clone());
    folder::write(&a.out, &enc)?;
    // The folder's size is known only once quantized.json (which holds `m`) is written.
    let size = |name: &str| {
        std::fs::metadata(a.out.join(name))
            .map(|f| f.len())
            .unwrap_or(0)
    };
    let folder_bytes = size(folder::CONFIG) + size(folder::WEIGHTS);
    if a.json {
        return crate::cli::print_json(&serde_json::json!({
            "out": a.out,
            "calibration": calibration,
            "measured": m,
            "folder_bytes": folder_bytes,
        }));
    }
    println!(
        "int8 top-1 {:.2}% vs f32 {:.2}% ({:+.2} points) | weights {} bytes vs {} in f32 ({:.2}×; \
         the source's model.safetensors: {} bytes; the folder: {folder_bytes} bytes) | {}",
        100.0 * m.int8_top1,
        100.0 * m.f32_top1,
        m.delta_points,
        m.int8_bytes,
        m.f32_bytes,
        m.ratio,
        m.source_bytes,
        a.out.display()
    );
    Ok(())
}

/// A quantised folder with its data: the source run's dataset unless `kind` names another, read
/// from `dir` when given, as for a training run folder.
pub fn load_with_data(
    run: &std::path::Path,
    kind: Option<DatasetKind>,
    dir: Option<PathBuf>,
) -> Result<(QuantizedRun, TrainConfig, Splits, QProgram)> {
    let (q_run, q) = folder::load(run)?;
    let mut cfg = q_run.train.clone();
    let splits = load_data(&mut cfg, kind, dir)?;
    Ok((q_run, cfg, splits, q))
}
