//! The command line: clap definitions and the glue from each subcommand to the library, one
//! file per subcommand group. With `--json`, the last line on stdout is one JSON object with
//! the run's results; progress and logs go to stderr.

mod bench;
mod data;
mod eval;
mod genotype;
mod search;
mod train;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use bench::{BenchCommand, BenchConfig, BenchInferArgs, BenchMemoryArgs, BenchSearchArgs};
pub use data::{DataCommand, FetchArgs, Nb201Command, Nb201LookupArgs};
pub use eval::{CalibrationArgs, EvalArgs};
pub use genotype::GenotypeCommand;
pub(crate) use search::search_config;
pub use search::SearchArgs;
pub use train::TrainArgs;
pub(crate) use train::{default_train_args, train_config};

use crate::data::{DataSpec, DatasetKind};
use crate::error::{Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "darts",
    version,
    about = "Differentiable architecture search (DARTS) on CPU, in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Search a cell architecture with DARTS (bilevel: weights on one half of the training set,
    /// alphas on the other) and print the genotype.
    Search(SearchArgs),
    /// Train a genotype's network from scratch (the paper's evaluation recipe) and test it.
    Train(TrainArgs),
    /// Evaluate a trained network: top-1/top-5, loss, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Quantise a trained network to int8 (post-training static, calibrated on training
    /// batches) into its own run folder.
    Quantize(crate::compress::quantize_cli::QuantizeArgs),
    /// Export a trained network: ONNX (onnxruntime, TensorRT, ...) or PyTorch weights + model.py.
    Export(crate::export::ExportArgs),
    /// Prune a trained network's channels (or weights) to a sparsity or MACs target, then fine-tune.
    Prune(crate::compress::prune::PruneArgs),
    /// Classify image files with a trained network: top-k classes with probabilities.
    Predict(crate::predict::PredictArgs),
    /// Write a self-contained HTML report (cells, alphas, curves) for a search or training run.
    Report(ReportArgs),
    /// Benchmarks (search step timing, memory estimate).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect architectures: DARTS genotypes and NAS-Bench-201 cells.
    #[command(subcommand)]
    Genotype(GenotypeCommand),
    /// Get datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// The NAS-Bench-201 tabular benchmark.
    #[command(subcommand)]
    Nb201(Nb201Command),
    /// Search by queries: random search, regularised evolution / GA, Bayesian optimisation or
    /// REINFORCE, scored by the NAS-Bench-201 table.
    Nas(crate::nas::strategy::cli::NasArgs),
    /// Tune `darts train`'s hyperparameters (random, BO, evolution, RL) with successive halving;
    /// writes the best configuration for `darts train --config`.
    Hpo(crate::nas::strategy::hpo_run::HpoArgs),
}

/// Dataset selection shared by the subcommands that read data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset: the built-in generated one needs no files.
    #[arg(long, value_enum, default_value_t = DatasetKind::Builtin)]
    pub dataset: DatasetKind,
    /// Folder with the dataset files (default: $DARTS_DATA_DIR, else ../shared/datasets). For
    /// `--dataset folder`, the image folder itself.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    pub(crate) fn spec(&self) -> DataSpec {
        DataSpec {
            kind: self.dataset,
            dir: self.data_dir.clone(),
        }
    }
}

/// Where the work runs; shared by the subcommands that compute.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, or cuda: the first NVIDIA GPU (CUDA 13 driver; kernels compiled by NVRTC at first
    /// use; `DARTS_CUDA_EMULATOR=1` runs them on the CPU instead, for testing).
    #[arg(long, default_value = "cpu")]
    pub device: crate::Device,
    /// Allow TF32 tensor cores in cuBLAS matrix products on the GPU (faster, ~1e-3 relative error).
    #[arg(long)]
    pub tf32: bool,
}

impl DeviceArgs {
    /// Starts the device (a clear error when CUDA is missing) and says what runs, on stderr.
    pub fn start(&self) -> Result<crate::Device> {
        if self.device == crate::Device::Cuda {
            let gpu = crate::device::cuda::gpu()?;
            gpu.set_tf32(self.tf32)?;
            eprintln!("device: {}", gpu.describe());
        } else if self.tf32 {
            return Err(Error::InvalidArgument("--tf32 needs --device cuda".into()));
        }
        Ok(self.device)
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A search or training run folder, or one or more `darts nas` folders to compare.
    #[arg(required = true)]
    pub run: Vec<PathBuf>,
    /// Output HTML file [default: RUN/report.html, of the first RUN].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::InvalidArgument(format!("--threads: {e}")))?;
    }
    Ok(())
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string(v)
        .map_err(|e| Error::InvalidArgument(format!("serialising results: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Flags that a resumed run applies; every other flag would be silently overridden by the
/// run's saved `config.json`, so giving one is an error.
const RESUME_FLAGS: [&str; 6] = ["resume", "threads", "device", "tf32", "json", "stop_after"];

fn check_resume_flags(cmd: &clap::Command, m: &ArgMatches) -> Result<()> {
    let ignored: Vec<String> = cmd
        .get_arguments()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let given = m.value_source(id) == Some(ValueSource::CommandLine);
            let long = arg
                .get_long()
                .filter(|_| given && !RESUME_FLAGS.contains(&id))?;
            Some(format!("--{long}"))
        })
        .collect();
    if ignored.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "--resume continues with the run's saved config.json, which would override {}; drop \
         them (a resumed run takes only --threads, --device, --tf32 and --json) or start a new \
         run with --out",
        ignored.join(", ")
    )))
}

/// Reads and validates a run folder's `config.json` for `--resume`.
fn resumed_config<C: serde::de::DeserializeOwned>(
    dir: &std::path::Path,
    validate: impl Fn(&C) -> Result<()>,
) -> Result<C> {
    crate::compress::folder::reject(dir)?;
    let path = dir.join(crate::train::MODEL_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("bad run config: {e}")))?;
    validate(&cfg).map_err(|e| Error::data(&path, e.to_string()))?;
    Ok(cfg)
}

fn run_report(a: ReportArgs) -> Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run[0].join("report.html"));
    crate::report::write_reports(&a.run, &out)?;
    if a.json {
        print_json(&serde_json::json!({ "report": out }))
    } else {
        println!("{}", out.display());
        Ok(())
    }
}

/// `--weight-decay -1` must reach validation (and its one-line error), not be read as a flag.
fn accept_negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.allow_negative_numbers(true)
        .mut_subcommands(accept_negative_numbers)
}

/// Parses the process's command line; the matches tell which flags were given explicitly.
pub fn parse() -> std::result::Result<(Cli, ArgMatches), clap::Error> {
    let matches = accept_negative_numbers(Cli::command()).try_get_matches()?;
    Ok((Cli::from_arg_matches(&matches)?, matches))
}

/// Runs a parsed command line (`matches` from [`parse`]).
pub fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(matches);
    match cli.command {
        Command::Search(a) => search::run_search(a, sub),
        Command::Train(a) => train::run_train(a, sub),
        Command::Eval(a) => eval::run_eval(a),
        Command::Report(a) => run_report(a),
        Command::Quantize(a) => crate::compress::quantize_cli::run(&a),
        Command::Export(a) => crate::export::run(&a),
        Command::Prune(a) => crate::compress::prune::run(&a),
        Command::Predict(a) => crate::predict::run(&a),
        Command::Data(DataCommand::Fetch(a)) => data::run_fetch(a),
        Command::Nb201(Nb201Command::Lookup(a)) => crate::bench201::run_lookup(&a),
        Command::Nas(a) => crate::nas::strategy::cli::run_cli(&a),
        Command::Hpo(a) => crate::nas::strategy::hpo_run::run_cli(&a),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Genotype(cmd) => genotype::run(cmd),
    }
}
