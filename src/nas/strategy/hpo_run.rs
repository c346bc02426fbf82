//! `darts hpo`: a strategy proposes `darts train` configurations from a hyperparameter space,
//! and successive halving spends the epochs. Every trial trains for the grace period first;
//! the best 1/η of a rung go on to the next (η times the epochs, by resuming the same run, so
//! its cosine schedule is the full one), until the last rung trains the full `--proxy-epochs`.
//! A stopped trial keeps its folder and logs. The rungs are synchronous (a rung is decided
//! when all its trials are in), which keeps a run reproducible; the trials of a rung run in
//! parallel on the executor. The strategy is told the first rung's score of each trial. The
//! defaults' config is trained on the full budget beside them, for comparison.
//!
//! The job is saved as `hpo_config.json` first; `--resume` of a killed job runs it again from
//! that file: a trial's folder is named by its number and config, the scores of finished rungs
//! are read from it, so the strategy asks the same configs and nothing finished trains again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::cli::TrialArgs;
use super::executor::{Executor, LocalPool, Task};
use super::hpo::HpoSpace;
use super::trial::{read_score, train_args, train_trial, trial_hash, TrialScore, TrialSettings};
use super::{query_rng, AnyStrategy, Choices, Strategy, StrategyKind, StrategyParams};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::nas::space::{Arch, Space};
use crate::train::TrainConfig;

#[derive(Args, Debug)]
pub struct HpoArgs {
    /// random | bo (GP, expected improvement) | tpe | evolution | rl.
    #[arg(long, default_value = "random")]
    pub strategy: String,
    /// Configurations to try.
    #[arg(long, default_value_t = 9)]
    pub budget: usize,
    /// JSON ranges replacing the built-in ones (lr, weight_decay, batch_size, channels,
    /// layers, drop_path, auxiliary_weight).
    #[arg(long)]
    pub space_file: Option<PathBuf>,
    /// Successive halving's η: a rung keeps its best 1/η.
    #[arg(long, default_value_t = 3)]
    pub reduction_factor: usize,
    /// Epochs of the first rung.
    #[arg(long, default_value_t = 1)]
    pub grace_period: usize,
    /// The genotype every trial trains [default: DARTS_V2].
    #[arg(long, default_value = "DARTS_V2")]
    pub genotype: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub trial: TrialArgs,
    /// Folder: hpo_config.json, trials/, default/, hpo.jsonl, best_config.json.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue a killed job from its folder (its hpo_config.json holds every other setting).
    #[arg(long, conflicts_with_all = [
        "strategy", "budget", "space_file", "reduction_factor", "grace_period", "genotype",
        "seed", "out", "dataset", "data_dir", "proxy_epochs", "max_steps", "channels", "layers",
        "batch_size", "valid_fraction", "workers", "threads_per_trial", "retries",
    ])]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Everything that defines a `darts hpo` job, validated; saved as `hpo_config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HpoJob {
    pub strategy: StrategyKind,
    pub budget: usize,
    /// The space's ranges (the built-in ones with the space file's in their place).
    pub ranges: BTreeMap<String, super::hpo::Range>,
    pub reduction_factor: usize,
    pub grace_period: usize,
    pub seed: u64,
    /// The base recipe (its genotype is the one every trial trains) and the trials' processes.
    pub settings: TrialSettings,
    pub workers: usize,
}

/// The file a job folder's [`HpoJob`] is saved in.
pub const HPO_CONFIG: &str = "hpo_config.json";

/// One trial's record (a line of `hpo.jsonl`).
#[derive(Clone, Debug, Serialize)]
pub struct TrialLine {
    pub trial: usize,
    pub dir: PathBuf,
    pub params: BTreeMap<String, f64>,
    /// (epochs, validation accuracy %) at each rung it reached.
    pub rungs: Vec<(usize, f64)>,
    pub stopped_early: bool,
    /// Reported only: never used to rank.
    pub test_accuracy: f64,
}

/// What `darts hpo --json` prints last.
#[derive(Debug, Serialize)]
pub struct HpoResult {
    pub best_trial: usize,
    pub best_params: BTreeMap<String, f64>,
    pub best_valid_accuracy: f64,
    pub best_test_accuracy: f64,
    pub default_valid_accuracy: f64,
    pub default_test_accuracy: f64,
    pub epochs: usize,
    pub trials: usize,
    pub stopped_early: usize,
    pub best_config: PathBuf,
    pub seconds: f64,
}

/// The rungs' epochs: grace, grace·η, … below `epochs`, then `epochs`.
pub fn rungs(grace: usize, eta: usize, epochs: usize) -> Vec<usize> {
    let mut out = vec![grace];
    while let Some(&r) = out.last().filter(|&&r| r < epochs) {
        out.push((r * eta).min(epochs));
    }
    out
}

/// A trial in flight: its config, folder and scores so far.
struct Trial {
    choices: Choices,
    cfg: TrainConfig,
    dir: PathBuf,
    rungs: Vec<(usize, f64)>,
    test: f64,
}

/// Trains each `(dir, start config)` to `epochs` in parallel: a fresh trial from its config
/// file, a promoted one by resuming its folder; a folder already there is read.
fn rung(
    exec: &dyn Executor,
    jobs: &[(&Path, Option<&Path>)],
    epochs: usize,
    threads: usize,
) -> Result<Vec<TrialScore>> {
    super::executor::each_in_parallel(jobs, |&(dir, start)| {
        if let Some(score) = read_score(dir, epochs)? {
            return Ok(score);
        }
        let task = Task {
            args: train_args(dir, start, Some(epochs), threads),
            dir: dir.to_path_buf(),
        };
        exec.run(&task)?;
        read_score(dir, epochs)?
            .ok_or_else(|| Error::data(dir.join("results.json"), "the trial ended without results"))
    })
}

fn write_config(dir: &Path, cfg: &TrainConfig) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = dir.join("trial.json");
    let text = serde_json::to_string_pretty(cfg)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    write_atomic(&file, text.as_bytes())?;
    Ok(file)
}

/// The search: `budget` configs asked in batches of the executor's size, successive halving.
fn halving(a: &HpoJob, out: &Path, space: &HpoSpace, exec: &dyn Executor) -> Result<Vec<Trial>> {
    let settings = &a.settings;
    let base = &settings.recipe;
    let threads = settings.threads_per_trial;
    let steps = rungs(a.grace_period, a.reduction_factor, base.epochs);
    let mut strategy = AnyStrategy::new(a.strategy, &StrategyParams::default(), space);
    let mut trials: Vec<Trial> = Vec::new();
    while trials.len() < a.budget {
        let n = exec.slots().min(a.budget - trials.len());
        let mut batch = Vec::new();
        for i in trials.len()..trials.len() + n {
            let choices = strategy.ask(space, &mut query_rng(a.seed, 0, i));
            let cfg = space.apply(base, &choices);
            let dir = out
                .join("trials")
                .join(format!("{i:03}-{}", trial_hash(&cfg)?));
            let file = write_config(&dir, &cfg)?;
            batch.push((choices, cfg, dir, file));
        }
        let jobs: Vec<_> = batch
            .iter()
            .map(|b| (b.2.as_path(), Some(b.3.as_path())))
            .collect();
        let scores = rung(exec, &jobs, steps[0], threads)?;
        for ((choices, cfg, dir, _), s) in batch.into_iter().zip(scores) {
            strategy.tell(space, &choices, s.valid);
            trials.push(Trial {
                choices,
                cfg,
                dir,
                rungs: vec![(s.epochs, s.valid)],
                test: s.test,
            });
        }
    }
    for (k, &epochs) in steps.iter().enumerate().skip(1) {
        let mut alive: Vec<usize> = (0..trials.len())
            .filter(|&i| trials[i].rungs.len() == k)
            .collect();
        alive.sort_by(|&x, &y| {
            trials[y].rungs[k - 1]
                .1
                .total_cmp(&trials[x].rungs[k - 1].1)
        });
        alive.truncate((alive.len() / a.reduction_factor).max(1));
        let jobs: Vec<_> = alive
            .iter()
            .map(|&i| (trials[i].dir.as_path(), None))
            .collect();
        let scores = rung(exec, &jobs, epochs, threads)?;
        for (&i, s) in alive.iter().zip(scores) {
            trials[i].rungs.push((s.epochs, s.valid));
            trials[i].test = s.test;
        }
    }
    Ok(trials)
}

/// `--strategy` for hpo.
fn kind(name: &str) -> Result<StrategyKind> {
    use clap::ValueEnum;
    StrategyKind::from_str(name, true).map_err(|_| {
        Error::InvalidArgument(format!(
            "unknown --strategy `{name}`; expected one of random, evolution, bo, rl, tpe"
        ))
    })
}

/// The job the flags describe, validated.
fn job(a: &HpoArgs) -> Result<HpoJob> {
    let mut settings = a.trial.settings(Space::Darts, a.seed)?;
    settings.recipe.genotype = Arch::load(&a.genotype)?;
    settings.recipe.genotype_source = a.genotype.clone();
    let space = HpoSpace::load(a.space_file.as_deref(), &settings.recipe)?;
    let job = HpoJob {
        strategy: kind(&a.strategy)?,
        budget: a.budget,
        ranges: space.ranges,
        reduction_factor: a.reduction_factor,
        grace_period: a.grace_period,
        seed: a.seed,
        settings,
        workers: a.trial.workers()?,
    };
    job.validate()?;
    Ok(job)
}

impl HpoJob {
    /// The checks a job passes, from flags or from a resumed `hpo_config.json`.
    fn validate(&self) -> Result<()> {
        crate::validate::count("budget", self.budget)?;
        crate::validate::count("grace-period", self.grace_period)?;
        crate::validate::count("workers", self.workers)?;
        if self.reduction_factor < 2 {
            return Err(Error::InvalidArgument(
                "--reduction-factor must be at least 2".into(),
            ));
        }
        let epochs = self.settings.recipe.epochs;
        if self.grace_period > epochs {
            return Err(Error::InvalidArgument(format!(
                "--grace-period {} exceeds --proxy-epochs {epochs}",
                self.grace_period
            )));
        }
        if self.settings.recipe.valid_fraction <= 0.0 {
            return Err(Error::InvalidArgument(
                "--valid-fraction must be above 0: trials are ranked on validation accuracy".into(),
            ));
        }
        self.space().map(|_| ())
    }

    fn space(&self) -> Result<HpoSpace> {
        HpoSpace::new(self.ranges.clone(), &self.settings.recipe)
            .map_err(|e| Error::InvalidArgument(format!("the hyperparameter space: {e}")))
    }

    /// A job folder's saved job, validated.
    fn read(dir: &Path) -> Result<HpoJob> {
        let path = dir.join(HPO_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let job: HpoJob = serde_json::from_str(&text)
            .map_err(|e| Error::data(&path, format!("bad hpo config: {e}")))?;
        job.validate()
            .map_err(|e| Error::data(&path, e.to_string()))?;
        Ok(job)
    }
}

/// `darts hpo`.
pub fn run_cli(args: &HpoArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let (job, out) = match (&args.resume, &args.out) {
        (Some(dir), _) => (HpoJob::read(dir)?, dir.as_path()),
        (None, Some(out)) => {
            let job = job(args)?;
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            let text = serde_json::to_string_pretty(&job)
                .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
            write_atomic(&out.join(HPO_CONFIG), text.as_bytes())?;
            (job, out.as_path())
        }
        (None, None) => return Err(Error::InvalidArgument("give --out or --resume".into())),
    };
    let a = &job;
    let space = a.space()?;
    let settings = &a.settings;
    let exec = LocalPool::new(a.workers, settings.retries)?;
    let base = settings.recipe.clone();
    let (trials, default) = std::thread::scope(|s| {
        // The defaults' run shares the pool's slots with the trials.
        let default = s.spawn(|| {
            train_trial(
                &exec,
                &out.join("default"),
                &base,
                settings.threads_per_trial,
            )
        });
        let trials = halving(a, out, &space, &exec);
        let default = default
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("the default trial panicked".into())));
        (trials, default)
    });
    let (trials, default) = (trials?, default?);
    let full = |t: &&Trial| t.rungs.last().is_some_and(|r| r.0 == base.epochs);
    let best = trials
        .iter()
        .filter(full)
        .max_by(|x, y| {
            x.rungs[x.rungs.len() - 1]
                .1
                .total_cmp(&y.rungs[y.rungs.len() - 1].1)
        })
        .ok_or_else(|| Error::InvalidArgument("no trial reached the full budget".into()))?;
    let lines: Vec<TrialLine> = trials
        .iter()
        .enumerate()
        .map(|(i, t)| TrialLine {
            trial: i,
            dir: t.dir.clone(),
            params: space.values(&t.choices),
            rungs: t.rungs.clone(),
            stopped_early: !full(&t),
            test_accuracy: t.test,
        })
        .collect();
    let jsonl: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).map(|s| s + "\n"))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    write_atomic(&out.join("hpo.jsonl"), jsonl.as_bytes())?;
    let best_config = out.join("best_config.json");
    let text = serde_json::to_string_pretty(&best.cfg)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    write_atomic(&best_config, text.as_bytes())?;
    let best_i = trials
        .iter()
        .position(|t| std::ptr::eq(t, best))
        .unwrap_or(0);
    eprint!("{}", table(&lines, best_i));
    let result = HpoResult {
        best_trial: best_i,
        best_params: space.values(&best.choices),
        best_valid_accuracy: best.rungs[best.rungs.len() - 1].1,
        best_test_accuracy: best.test,
        default_valid_accuracy: default.valid,
        default_test_accuracy: default.test,
        epochs: base.epochs,
        trials: trials.len(),
        stopped_early: lines.iter().filter(|l| l.stopped_early).count(),
        best_config,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        let s = serde_json::to_string(&result)
            .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
        println!("{s}");
    } else {
        println!(
            "best trial {}: valid {:.2} % (defaults: {:.2} %) after {} epochs; {} of {} trials \
             stopped early; config in {}",
            result.best_trial,
            result.best_valid_accuracy,
            result.default_valid_accuracy,
            result.epochs,
            result.stopped_early,
            result.trials,
            result.best_config.display()
        );
    }
    Ok(())
}

/// The results table: one row per trial, its values, the rungs it reached.
fn table(lines: &[TrialLine], best: usize) -> String {
    let Some(first) = lines.first() else {
        return String::new();
    };
    let names: Vec<&String> = first.params.keys().collect();
    let mut out = format!("{:>5}", "trial");
    for n in &names {
        out += &format!(" {n:>16}");
    }
    out += "   epochs  valid %\n";
    for l in lines {
        out += &format!("{:>5}", l.trial);
        for n in &names {
            out += &format!(" {:>16.4e}", l.params[*n]);
        }
        let (epochs, valid) = l.rungs.last().copied().unwrap_or((0, f64::NAN));
        let mark = if l.trial == best {
            "  best"
        } else if l.stopped_early {
            "  stopped"
        } else {
            ""
        };
        out += &format!("   {epochs:>6}  {valid:>7.2}{mark}\n");
    }
    out
}
