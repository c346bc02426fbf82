//! `darts bench`: search-step timing, the memory estimate's check, inference speed.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::eval::CalibrationArgs;
use super::{print_json, set_threads, DeviceArgs};
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Median seconds per search step (first and second order) for configs T and S.
    Search(BenchSearchArgs),
    /// The memory check's estimate against the peak memory of short real search and training
    /// runs on the built-in dataset.
    Memory(BenchMemoryArgs),
    /// Inference speed of a trained run folder: batch-1 latency (median, p99) and batch-64
    /// throughput of the training path's eval forward, the f32 and int8 inference paths, and the
    /// same network in onnxruntime (f32, its own int8) and PyTorch where Python has them.
    Infer(BenchInferArgs),
}

#[derive(Args, Debug)]
pub struct BenchInferArgs {
    /// A `darts train` run folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Timed batch-1 calls per path (batch 64: a tenth of them, at least 3).
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    #[arg(long)]
    pub threads: Option<usize>,
    /// The Python that runs onnxruntime and PyTorch on the exported model (rows for what it
    /// lacks are left out, with a note).
    #[arg(long, env = "DARTS_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Only our own paths.
    #[arg(long)]
    pub no_external: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchMemoryArgs {
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BenchConfig {
    /// C=8, 5 cells, batch 32, 28×28×1, 10 classes.
    T,
    /// C=16, 8 cells, batch 64, 32×32×3, 10 classes.
    S,
    All,
}

#[derive(Args, Debug)]
pub struct BenchSearchArgs {
    #[arg(long, value_enum, default_value_t = BenchConfig::T)]
    pub config: BenchConfig,
    /// Batch size instead of the configuration's own (e.g. 256 for the large-batch GPU figure).
    #[arg(long)]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Timed steps per measurement (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Orders to time: 1, 2, or both.
    #[arg(long, default_value = "both")]
    pub order: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

/// Runs `darts bench SUB`.
pub(super) fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Search(a) => {
            set_threads(a.threads)?;
            crate::nas::bench::run_cli(&a)
        }
        BenchCommand::Infer(a) => run_infer(&a),
        BenchCommand::Memory(a) => {
            set_threads(a.threads)?;
            crate::memory_bench::run_cli(&a)
        }
    }
}

fn run_infer(a: &BenchInferArgs) -> Result<()> {
    set_threads(a.threads)?;
    let c = a.calibration;
    let paths = crate::infer::bench::paths(&a.checkpoint, c.calibration_batches, c.observer)?;
    let mut rows = crate::infer::bench::run(&a.checkpoint, paths, a.runs)?;
    let mut notes = vec![];
    if !a.no_external {
        let ext =
            crate::infer::bench::external(&a.checkpoint, &a.python, a.runs, c.calibration_batches)?;
        rows.extend(ext.rows);
        notes = ext.notes;
    }
    notes.iter().for_each(|n| eprintln!("note: {n}"));
    if a.json {
        return print_json(&serde_json::json!({ "paths": rows, "notes": notes }));
    }
    print!("{}", crate::infer::bench::render(&rows));
    Ok(())
}
