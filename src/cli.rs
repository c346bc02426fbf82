//! The command line: clap definitions and the glue from each subcommand to the library.
//! With `--json`, the last line on stdout is one JSON object with the run's results; progress
//! and logs go to stderr.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::data::fetch::{self, FetchName};
use crate::data::{DataSpec, DatasetKind};
use crate::error::{Error, Result};
use crate::nas::architect::Order;
use crate::nas::primitives::parse_primitive_list;
use crate::nas::search::{self, SearchConfig};
use crate::nas::space::nb201::EDGES;
use crate::nas::space::{Arch, Space};
use crate::train::TrainConfig;

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
pub struct SearchArgs {
    /// Search space: darts (the paper's cells) or nb201 (NAS-Bench-201's cell; the found cell
    /// is then looked up in the benchmark's table). Both use the DARTS search recipe below, as
    /// the NAS-Bench-201 paper does.
    #[arg(long, value_enum, default_value_t = Space::Darts)]
    pub space: Space,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Epochs [default: 50; 3 on the built-in dataset, so that a plain `darts search` ends in
    /// about two minutes on two cores].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs at the start that train the weights only, the alphas frozen [default: 0; 1 on
    /// the built-in dataset, unless --epochs is 1].
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Batch size [default: 64; 32 on the built-in dataset].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Initial channels C [default: 16; 8 on the built-in dataset].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Number of cells [darts: 8 in all (5 on the built-in dataset); nb201: N = 5 per stage
    /// (2 on the built-in dataset)].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Architecture gradient: 1 = first order, 2 = second order (unrolled) [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub order: Option<u8>,
    /// Random seed (weights, alphas, data order, augmentation) [default: 2].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Comma-separated candidate operations [default: the 8 DARTS primitives; nb201 searches
    /// its own 5].
    #[arg(long)]
    pub primitives: Option<String>,
    /// Fraction of the training set that trains weights; the rest trains the alphas
    /// [default: 0.5].
    #[arg(long)]
    pub train_portion: Option<f32>,
    /// Weight learning rate, cosine-annealed to --lr-min [default: 0.025].
    #[arg(long)]
    pub lr: Option<f32>,
    /// [default: 0.001]
    #[arg(long)]
    pub lr_min: Option<f32>,
    /// [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f32>,
    /// [default: 3e-4]
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// [default: 5]
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// Architecture (alpha) learning rate for Adam [default: 3e-4, the paper's; 0.03 on the
    /// built-in dataset, whose short search would leave 3e-4 alphas uniform].
    #[arg(long)]
    pub arch_lr: Option<f32>,
    /// [default: 1e-3]
    #[arg(long)]
    pub arch_weight_decay: Option<f32>,
    /// Softmax temperature of the alphas at the end of the search, annealed geometrically from
    /// 1 over the epochs after the warm-up, which sharpens the supernet's mixture towards the
    /// cell it derives [default: 1, the paper's fixed softmax; 0.2 on the built-in dataset].
    #[arg(long)]
    pub arch_temperature: Option<f32>,
    /// Stop each epoch after this many steps (quick experiments).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// nb201: the benchmark table that scores the found cell [default:
    /// $DARTS_DATA_DIR/nb201/nb201.csv, else ../shared/datasets/nb201/nb201.csv, when present].
    #[arg(long)]
    pub benchmark: Option<PathBuf>,
    /// Run folder: search.jsonl, genotype.json/.txt, config.json, checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its config.json wins).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Print the results as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Search space of the architecture [default: nb201 with --arch, else darts]. With nb201 the
    /// defaults are NAS-Bench-201's training recipe: SGD lr 0.1 with Nesterov momentum 0.9,
    /// weight decay 5e-4, batch 256, 200 epochs, C=16, N=5, no auxiliary head, no drop-path
    /// (the flags marked below); cosine schedule, crop+flip and --grad-clip as in DARTS.
    #[arg(long, value_enum)]
    pub space: Option<Space>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// DARTS genotype: a built-in name (DARTS_V2, DARTS_V1, DARTS) or a JSON / DARTS-text file
    /// (e.g. a search run's genotype.json) [default: DARTS_V2].
    #[arg(long, conflicts_with = "arch")]
    pub genotype: Option<String>,
    /// NAS-Bench-201 cell: its benchmark string
    /// ('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|')
    /// or a file holding one (a search run's genotype.json) [default: the benchmark's best
    /// CIFAR-10 cell, index 6111].
    #[arg(long)]
    pub arch: Option<String>,
    /// Initial channels C [darts: 36; nb201: 16; 8 on the built-in dataset].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Cells [darts: 20 in all; nb201: N = 5 per stage; 5 / 2 on the built-in dataset].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Epochs [darts: 600; nb201: 200; 10 on the built-in dataset].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [darts: 96; nb201: 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Initial learning rate (cosine-annealed to 0, per step) [darts: 0.025; nb201: 0.1].
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Nesterov momentum [darts: off; nb201: on]; `--nesterov false` turns it off.
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// [darts: 3e-4; nb201: 5e-4].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    #[arg(long, default_value_t = 5.0)]
    pub grad_clip: f32,
    /// Weight of the auxiliary head's loss, 0 disables the head [darts: 0.4; nb201: 0, it has
    /// none].
    #[arg(long)]
    pub auxiliary_weight: Option<f32>,
    /// Drop-path probability, ramped linearly from 0 over the epochs [darts: 0.2; nb201: 0].
    #[arg(long)]
    pub drop_path: Option<f32>,
    /// Cutout length (0 = off), on top of the dataset's standard augmentation: random crop
    /// after zero padding (4 pixels on CIFAR-10 and folders, 2 on MNIST and Fashion-MNIST, 1 on
    /// the built-in set) and horizontal flip (not on MNIST's digits).
    #[arg(long, default_value_t = 0)]
    pub cutout: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Evaluate on the test set after every epoch.
    #[arg(long)]
    pub eval_every_epoch: bool,
    /// Stop each epoch after this many batches (quick experiments); the test set is always
    /// evaluated whole.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Hold out this fraction of the training set (seeded) and report its accuracy after every
    /// epoch, the number a tuner may see (0 = no validation set).
    #[arg(long, default_value_t = 0.0)]
    pub valid_fraction: f32,
    /// Stop after this many epochs of the --epochs schedule; `--resume` continues the run.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// A training config JSON (a run's config.json, `darts hpo`'s best_config.json); flags
    /// given explicitly override its fields.
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Run folder: config.json, genotype.json, train.jsonl, model.safetensors, results.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its config.json wins).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

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

#[derive(Subcommand, Debug)]
pub enum GenotypeCommand {
    /// Draw architectures uniformly at random from a space, one per line: the random baseline
    /// that a search has to beat (DARTS: 4-node cells over the 7 ops besides none, two distinct
    /// inputs per node; nb201: one of the 15,625 cells).
    Random {
        #[arg(long, value_enum, default_value_t = Space::Darts)]
        space: Space,
        /// How many to draw.
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write each as DIR/random-<i>.json, which `darts train --genotype` (or `--arch`)
        /// reads.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print {"archs": [...]} as the last stdout line.
        #[arg(long)]
        json: bool,
    },
    /// Print an architecture: a DARTS genotype or a NAS-Bench-201 cell.
    ///
    /// A DARTS genotype is a built-in name such as DARTS_V2, or a JSON / DARTS-text file; a
    /// NAS-Bench-201 cell is its `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` string, or a file
    /// holding one (e.g. an nb201 search's genotype.json), and prints with one line per edge.
    Show {
        /// The genotype or NAS-Bench-201 cell.
        genotype: String,
        /// Also draw it into this SVG file (both DARTS cells, or the NAS-Bench-201 DAG).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print it as JSON (a genotype object, or the NAS-Bench-201 string).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a dataset's official files into the datasets folder, check their published
    /// checksums, and unpack tarballs where `--dataset` looks; files already there and verified
    /// are not downloaded again.
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[arg(value_enum)]
    pub name: FetchName,
    /// The datasets folder to fill, created if missing (default: $DARTS_DATA_DIR, else
    /// ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download from this base URL instead of the official sources: it must serve the same
    /// files as `<URL>/<NAME>/<file>`, e.g. `<URL>/mnist/train-images-idx3-ubyte.gz` or
    /// `<URL>/cifar10/cifar-10-binary.tar.gz` [env: DARTS_DATA_MIRROR].
    #[arg(long)]
    pub mirror: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Nb201Command {
    /// Print a cell's row of the NAS-Bench-201 table (accuracies in %, params, FLOPs) and its
    /// ranks by cifar10_test and cifar10_valid.
    Lookup(Nb201LookupArgs),
}

#[derive(Args, Debug)]
pub struct Nb201LookupArgs {
    /// An arch index (0..=15624), or an arch string such as
    /// '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'.
    pub arch: String,
    /// The table (default: $DARTS_DATA_DIR/nb201/nb201.csv, else ../shared/datasets/nb201/nb201.csv).
    #[arg(long)]
    pub benchmark: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn run_fetch(a: FetchArgs) -> Result<()> {
    let root = crate::data::data_dir_to_fill(a.data_dir.as_deref())?;
    let from_env = std::env::var(fetch::MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty());
    let mirror = a.mirror.or(from_env);
    let report = fetch::fetch(&fetch::official(a.name), &root, mirror.as_deref())?;
    if a.json {
        return print_json(&report);
    }
    for f in &report.files {
        let status = match f.status {
            fetch::Status::Downloaded => "downloaded",
            fetch::Status::AlreadyPresent => "present",
        };
        println!(
            "{status:<10} {}  {}",
            f.sha256,
            report.folder.join(&f.name).display()
        );
    }
    Ok(())
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

/// The search config that `darts search` flags describe (the built-in dataset's smaller
/// defaults included), validated.
pub(crate) fn search_config(a: &SearchArgs) -> Result<SearchConfig> {
    let r = SearchConfig::recipe(a.space, a.data.spec());
    let primitives = match (&a.primitives, a.space) {
        (Some(_), Space::Nb201) => {
            return Err(Error::InvalidArgument(
                "--space nb201 searches the benchmark's own 5 ops; drop --primitives".into(),
            ))
        }
        (Some(list), Space::Darts) => parse_primitive_list(list)?,
        (None, _) => r.primitives.clone(),
    };
    if a.benchmark.is_some() && a.space != Space::Nb201 {
        return Err(Error::InvalidArgument(
            "--benchmark scores NAS-Bench-201 cells; it needs --space nb201".into(),
        ));
    }
    let epochs = a.epochs.unwrap_or(r.epochs);
    let cfg = SearchConfig {
        benchmark: a.benchmark.clone(),
        epochs,
        // A shorter search keeps at least one epoch that trains the alphas.
        warmup_epochs: (a.warmup_epochs)
            .unwrap_or_else(|| r.warmup_epochs.min(epochs.saturating_sub(1))),
        batch_size: a.batch_size.unwrap_or(r.batch_size),
        channels: a.channels.unwrap_or(r.channels),
        layers: a.layers.unwrap_or(r.layers),
        order: match a.order {
            Some(2) => Order::Second,
            Some(_) => Order::First,
            None => r.order,
        },
        seed: a.seed.unwrap_or(r.seed),
        primitives,
        train_portion: a.train_portion.unwrap_or(r.train_portion),
        lr: a.lr.unwrap_or(r.lr),
        lr_min: a.lr_min.unwrap_or(r.lr_min),
        momentum: a.momentum.unwrap_or(r.momentum),
        weight_decay: a.weight_decay.unwrap_or(r.weight_decay),
        grad_clip: a.grad_clip.unwrap_or(r.grad_clip),
        arch_lr: a.arch_lr.unwrap_or(r.arch_lr),
        arch_weight_decay: a.arch_weight_decay.unwrap_or(r.arch_weight_decay),
        arch_temperature: a.arch_temperature.unwrap_or(r.arch_temperature),
        max_steps: a.max_steps,
        ..r
    };
    cfg.validate()?;
    Ok(cfg)
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

fn run_search(a: SearchArgs, m: &ArgMatches) -> Result<()> {
    if a.resume.is_some() {
        check_resume_flags(&SearchArgs::augment_args(clap::Command::new("search")), m)?;
    }
    set_threads(a.threads)?;
    let device = a.device.start()?;
    let (mut cfg, out, resume) = match &a.resume {
        Some(dir) => (
            resumed_config(dir, SearchConfig::validate)?,
            Some(dir.clone()),
            true,
        ),
        None => (search_config(&a)?, a.out.clone(), false),
    };
    cfg.device = device;
    let result = search::run(cfg, out.as_deref(), resume)?;
    if a.json {
        print_json(&result)?;
    } else {
        println!("{}", result.genotype_text);
    }
    Ok(())
}

fn run_train(a: TrainArgs, m: &ArgMatches) -> Result<()> {
    if a.resume.is_some() {
        check_resume_flags(&TrainArgs::augment_args(clap::Command::new("train")), m)?;
    }
    set_threads(a.threads)?;
    let device = a.device.start()?;
    let (mut cfg, out, resume) = match (&a.resume, &a.config) {
        (Some(dir), _) => (
            resumed_config(dir, TrainConfig::validate)?,
            Some(dir.clone()),
            true,
        ),
        (None, Some(file)) => (
            crate::train_file::merge(file, train_config(&a)?, m)?,
            a.out.clone(),
            false,
        ),
        (None, None) => (train_config(&a)?, a.out.clone(), false),
    };
    cfg.device = device;
    cfg.stop_after = a.stop_after;
    let result = crate::train::run(cfg, out.as_deref(), resume)?;
    if a.json {
        print_json(&result)
    } else {
        println!(
            "test accuracy {:.2}% | {} params, {:.1} M MACs | {} epochs in {:.0}s ({:.0} img/s)",
            100.0 * result.test_accuracy,
            result.params,
            result.macs as f64 / 1e6,
            result.epochs,
            result.seconds,
            result.images_per_second
        );
        Ok(())
    }
}

/// `darts train`'s flags with none given, for `space`: what the proxy trials of `darts nas`
/// and `darts hpo` fill in and pass to [`train_config`], so they train with its defaults.
pub(crate) fn default_train_args(space: Space) -> Result<TrainArgs> {
    let cmd = TrainArgs::augment_args(clap::Command::new("train"));
    let space = space.to_string();
    cmd.try_get_matches_from(["train", "--space", space.as_str()])
        .and_then(|m| TrainArgs::from_arg_matches(&m))
        .map_err(|e| Error::InvalidArgument(format!("darts train's defaults: {e}")))
}

/// The training config that `darts train` flags describe, with the chosen space's recipe (and
/// the built-in dataset's smaller defaults) for what they leave out, validated.
pub(crate) fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let builtin = a.data.dataset == DatasetKind::Builtin;
    let space = a.space.unwrap_or(if a.arch.is_some() {
        Space::Nb201
    } else {
        Space::Darts
    });
    let source = match space {
        Space::Darts if a.arch.is_some() => {
            return Err(Error::InvalidArgument(
                "--arch names a NAS-Bench-201 cell; use --genotype with --space darts".into(),
            ))
        }
        Space::Darts => a.genotype.clone().unwrap_or_else(|| "DARTS_V2".into()),
        Space::Nb201 => a
            .arch
            .clone()
            .or(a.genotype.clone())
            .unwrap_or_else(|| crate::nas::space::NB201_BEST.into()),
    };
    let genotype = Arch::load(&source)?;
    if genotype.space() != space {
        return Err(Error::InvalidArgument(format!(
            "'{source}' is a {} architecture, but the space is {space}; pass --space {}",
            genotype.space(),
            genotype.space()
        )));
    }
    let nb201 = space == Space::Nb201;
    // The DARTS value, or NAS-Bench-201's.
    let pick = |darts: f32, nb201_value: f32| if nb201 { nb201_value } else { darts };
    let pick_n = |darts: usize, nb201_value: usize| if nb201 { nb201_value } else { darts };
    let cfg = TrainConfig {
        data: a.data.spec(),
        data_files: Vec::new(),
        genotype,
        genotype_source: source,
        epochs: a
            .epochs
            .unwrap_or(if builtin { 10 } else { pick_n(600, 200) }),
        batch_size: a.batch_size.unwrap_or(pick_n(96, 256)),
        channels: a
            .channels
            .unwrap_or(if builtin { 8 } else { pick_n(36, 16) }),
        layers: a
            .layers
            .unwrap_or(if builtin { pick_n(5, 2) } else { pick_n(20, 5) }),
        lr: a.lr.unwrap_or(pick(0.025, 0.1)),
        momentum: a.momentum,
        nesterov: a.nesterov.unwrap_or(nb201),
        weight_decay: a.weight_decay.unwrap_or(pick(3e-4, 5e-4)),
        grad_clip: a.grad_clip,
        auxiliary_weight: a.auxiliary_weight.unwrap_or(pick(0.4, 0.0)),
        drop_path: a.drop_path.unwrap_or(pick(0.2, 0.0)),
        cutout: a.cutout,
        seed: a.seed,
        eval_every_epoch: a.eval_every_epoch,
        max_steps: a.max_steps,
        valid_fraction: a.valid_fraction,
        prune: None,
        stop_after: a.stop_after,
        device: crate::Device::Cpu,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn run_eval(a: EvalArgs) -> Result<()> {
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
        Command::Search(a) => run_search(a, sub),
        Command::Train(a) => run_train(a, sub),
        Command::Eval(a) => run_eval(a),
        Command::Report(a) => run_report(a),
        Command::Quantize(a) => crate::compress::quantize_cli::run(&a),
        Command::Export(a) => crate::export::run(&a),
        Command::Prune(a) => crate::compress::prune::run(&a),
        Command::Predict(a) => crate::predict::run(&a),
        Command::Data(DataCommand::Fetch(a)) => run_fetch(a),
        Command::Nb201(Nb201Command::Lookup(a)) => crate::bench201::run_lookup(&a),
        Command::Nas(a) => crate::nas::strategy::cli::run_cli(&a),
        Command::Hpo(a) => crate::nas::strategy::hpo_run::run_cli(&a),
        Command::Bench(BenchCommand::Search(a)) => {
            set_threads(a.threads)?;
            crate::nas::bench::run_cli(&a)
        }
        Command::Bench(BenchCommand::Infer(a)) => {
            set_threads(a.threads)?;
            let c = a.calibration;
            let paths =
                crate::infer::bench::paths(&a.checkpoint, c.calibration_batches, c.observer)?;
            let mut rows = crate::infer::bench::run(&a.checkpoint, paths, a.runs)?;
            let mut notes = vec![];
            if !a.no_external {
                let c = a.calibration;
                let ext = crate::infer::bench::external(
                    &a.checkpoint,
                    &a.python,
                    a.runs,
                    c.calibration_batches,
                )?;
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
        Command::Bench(BenchCommand::Memory(a)) => {
            set_threads(a.threads)?;
            crate::memory_bench::run_cli(&a)
        }
        Command::Genotype(GenotypeCommand::Random {
            space,
            count,
            seed,
            out,
            json,
        }) => {
            crate::validate::count("count", count)?;
            let archs = crate::nas::space::random_archs(space, count, seed)?;
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            for (i, arch) in archs.iter().enumerate() {
                println!("{arch}");
                if let Some(dir) = &out {
                    let text = serde_json::to_string_pretty(arch)
                        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
                    let path = dir.join(format!("random-{i}.json"));
                    crate::checkpoint::write_atomic(&path, text.as_bytes())?;
                }
            }
            if json {
                print_json(&serde_json::json!({ "archs": archs }))?;
            }
            Ok(())
        }
        Command::Genotype(GenotypeCommand::Show {
            genotype,
            svg,
            json,
        }) => {
            let arch = Arch::load(&genotype)?;
            arch.validate()?;
            if let Some(path) = svg {
                crate::checkpoint::write_atomic(&path, crate::report::arch_svg(&arch)?.as_bytes())?;
            }
            if json {
                return print_json(&arch);
            }
            println!("{arch}");
            if let Arch::Nb201(a) = arch {
                for (&(from, to), op) in EDGES.iter().zip(a.ops) {
                    println!("  {to}←{from}  {op}");
                }
            }
            Ok(())
        }
    }
}
