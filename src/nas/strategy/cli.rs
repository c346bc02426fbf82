//! `darts nas`: its flags and the glue from them to [`run::run`](super::run::run).

use std::path::PathBuf;

use clap::Args;

use super::run::{self, NasConfig, NasResult};
use super::trial::TrialSettings;
use super::{StrategyKind, StrategyParams};
use crate::bench201::Bench201;
use crate::cli::DataArgs;
use crate::error::{Error, Result};
use crate::nas::space::Space;

#[derive(Args, Debug)]
pub struct NasArgs {
    /// random | evolution | bo | rl (REINFORCE) | tpe.
    #[arg(long, default_value = "evolution")]
    pub strategy: String,
    /// Search space; nb201 is scored by the NAS-Bench-201 table.
    #[arg(long, value_enum, default_value_t = Space::Nb201)]
    pub space: Space,
    /// Queries per run (repeats count, as in the NB201 protocol) [default: 300 unless --time].
    #[arg(long)]
    pub budget: Option<usize>,
    /// Wall-clock seconds per run instead of --budget; a query started in time counts.
    #[arg(long)]
    pub time: Option<f64>,
    /// Independent runs (seeds), reported as mean ± std.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The table column the strategy sees: cifar10_valid (200 epochs) or e.g. cifar10_valid_12ep.
    #[arg(long, default_value = "cifar10_valid")]
    pub signal: String,
    /// The column the final report shows for each run's best-by-signal arch.
    #[arg(long, default_value = "cifar10_test")]
    pub test_column: String,
    /// Evolution: population size.
    #[arg(long, default_value_t = 10)]
    pub population: usize,
    /// Evolution: tournament size.
    #[arg(long, default_value_t = 3)]
    pub sample: usize,
    /// Evolution: probability of a uniform crossover of two tournament winners (the GA).
    #[arg(long, default_value_t = 0.0)]
    pub crossover: f64,
    /// REINFORCE: Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// REINFORCE: momentum of the moving-average baseline.
    #[arg(long, default_value_t = 0.9)]
    pub baseline_momentum: f64,
    /// BO and TPE: random queries before the surrogate proposes.
    #[arg(long, default_value_t = 10)]
    pub initial: usize,
    /// The table (default: $DARTS_DATA_DIR/nb201/nb201.csv, else ../shared/datasets/nb201/nb201.csv).
    #[arg(long)]
    pub benchmark: Option<PathBuf>,
    /// What scores an arch: the table, or a short `darts train` trial per arch
    /// [default: table for nb201, train for darts].
    #[arg(long, value_enum)]
    pub evaluator: Option<EvaluatorKind>,
    #[command(flatten)]
    pub trial: TrialArgs,
    /// Run folder: config.json, queries.jsonl, checkpoints, result.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a killed job from its folder (its config.json holds every other setting).
    #[arg(long, conflicts_with_all = [
        "strategy", "space", "budget", "time", "runs", "seed", "signal", "test_column", "population",
        "sample", "crossover", "lr", "baseline_momentum", "initial", "benchmark", "out",
        "evaluator", "dataset", "data_dir", "proxy_epochs", "max_steps", "channels", "layers",
        "batch_size", "valid_fraction", "workers", "threads_per_trial", "retries",
    ])]
    pub resume: Option<PathBuf>,
    /// Worker threads for the parallel runs [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

/// `--evaluator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvaluatorKind {
    Table,
    Train,
}

/// The proxy recipe and the processes of training trials (`darts nas --evaluator train`,
/// `darts hpo`); what is not given is `darts train`'s default for the space and dataset.
#[derive(Args, Debug)]
pub struct TrialArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs of each trial.
    #[arg(long, default_value_t = 3)]
    pub proxy_epochs: usize,
    /// Batches per epoch of each trial [default: all].
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Initial channels C of each trial [default: darts train's].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Cells of each trial [default: darts train's].
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Fraction of the training set each trial holds out; its accuracy is the search signal.
    #[arg(long, default_value_t = 0.2)]
    pub valid_fraction: f32,
    /// Trials at once [default: cores / --threads-per-trial].
    #[arg(long)]
    pub workers: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub threads_per_trial: usize,
    /// Times a trial whose process died or failed is started again.
    #[arg(long, default_value_t = 2)]
    pub retries: usize,
}

impl TrialArgs {
    /// The trial settings for `space`, seeded with `seed`.
    pub fn settings(&self, space: Space, seed: u64) -> Result<TrialSettings> {
        let mut t = crate::cli::default_train_args(space)?;
        t.data = self.data.clone();
        t.epochs = Some(self.proxy_epochs);
        t.max_steps = self.max_steps;
        t.channels = self.channels;
        t.layers = self.layers;
        t.batch_size = self.batch_size;
        t.valid_fraction = self.valid_fraction;
        t.seed = seed;
        Ok(TrialSettings {
            recipe: crate::cli::train_config(&t)?,
            threads_per_trial: self.threads_per_trial,
            retries: self.retries,
        })
    }

    /// `--workers`, or as many trials as the cores hold.
    pub fn workers(&self) -> Result<usize> {
        crate::validate::count("threads-per-trial", self.threads_per_trial)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = self
            .workers
            .unwrap_or((cores / self.threads_per_trial).max(1));
        crate::validate::count("workers", n)?;
        Ok(n)
    }
}

/// `--strategy`'s value; parsed here so that an unknown name is a one-line error like the others.
fn strategy_kind(name: &str) -> Result<StrategyKind> {
    use clap::ValueEnum;
    StrategyKind::from_str(name, true).map_err(|_| {
        Error::InvalidArgument(format!(
            "unknown --strategy `{name}`; expected one of random, evolution, bo, rl, tpe"
        ))
    })
}

/// The job the flags describe, validated.
pub fn config(a: &NasArgs) -> Result<NasConfig> {
    let evaluator = a.evaluator.unwrap_or(match a.space {
        Space::Nb201 => EvaluatorKind::Table,
        Space::Darts => EvaluatorKind::Train,
    });
    let (benchmark, trial, workers, signal, test) = match evaluator {
        // There is no DARTS-space table: validate() says so.
        EvaluatorKind::Table if a.space == Space::Darts => {
            (None, None, 1, a.signal.clone(), a.test_column.clone())
        }
        EvaluatorKind::Table => {
            let path = match &a.benchmark {
                Some(p) => p.clone(),
                None => Bench201::default_path()?,
            };
            // Absolute, so that a resume from another directory reads the same table.
            let path = std::path::absolute(&path).map_err(|e| Error::io(&path, e))?;
            (Some(path), None, 1, a.signal.clone(), a.test_column.clone())
        }
        EvaluatorKind::Train => (
            None,
            Some(a.trial.settings(a.space, a.seed)?),
            a.trial.workers()?,
            "valid_accuracy".into(),
            "test_accuracy".into(),
        ),
    };
    let cfg = NasConfig {
        strategy: strategy_kind(&a.strategy)?,
        space: a.space,
        // Both flags reach validate(), which says to pick one.
        budget: a.budget.or(a.time.is_none().then_some(300)),
        time: a.time,
        runs: a.runs,
        seed: a.seed,
        signal,
        test,
        benchmark,
        trial,
        workers,
        params: StrategyParams {
            population: a.population,
            sample: a.sample,
            crossover: a.crossover,
            lr: a.lr,
            baseline_momentum: a.baseline_momentum,
            initial: a.initial,
        },
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The human-readable summary: the numbers, then the mean best-so-far curve at a few budgets.
fn render(r: &NasResult) -> String {
    let budget = match r.time {
        Some(t) => format!("{t} s"),
        None => format!("{} queries", r.budget.unwrap_or(0)),
    };
    let mut out = format!(
        "{} on {} ({} runs x {budget}, signal {}): {} {:.2} ± {:.2} %\n",
        r.strategy, r.space, r.runs, r.signal, r.test, r.mean_test_accuracy, r.std_test_accuracy
    );
    out += &format!(
        "best arch {} ({} {:.2} %)\n",
        r.best_arch, r.test, r.best_test_accuracy
    );
    out += &format!(
        "{} queries ({} distinct archs) in {:.2} s\n",
        r.queries, r.distinct_archs, r.seconds
    );
    if let Some(dir) = &r.best_trial {
        out += &format!("best trial {}\n", dir.display());
    }
    let marks = [10, 25, 50, 100, 200, 300, 500, 1000];
    let len = r.mean_curve.len();
    let shown: Vec<String> = marks
        .iter()
        .filter(|&&q| q < len)
        .chain(std::iter::once(&len))
        .map(|&q| format!("{q}: {:.2}", r.mean_curve[q - 1]))
        .collect();
    out += &format!("mean best-so-far {}: {}\n", r.test, shown.join("  "));
    out
}

/// `darts nas`.
pub fn run_cli(a: &NasArgs) -> Result<()> {
    if let Some(n) = a.threads {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ));
        }
        // A second build (a test calling twice) keeps the first pool; that is harmless here.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let result = match &a.resume {
        Some(dir) => {
            let cfg = super::log::read_config(dir)?;
            run::run(&cfg, Some(dir), true)?
        }
        None => run::run(&config(a)?, a.out.as_deref(), false)?,
    };
    if a.json {
        let s = serde_json::to_string(&result)
            .map_err(|e| Error::InvalidArgument(format!("serialising results: {e}")))?;
        println!("{s}");
    } else {
        print!("{}", render(&result));
    }
    Ok(())
}
