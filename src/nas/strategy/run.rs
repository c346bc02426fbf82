//! `darts nas`: K independent runs of a strategy, each of `budget` queries, scored by an
//! evaluator; the result is each run's best-by-signal arch with its test accuracy, their mean
//! ± std, and the best-so-far curves. Runs go in parallel (they share nothing but the cache
//! and the log), and each query's randomness depends only on (seed, run, query), so the result
//! does not depend on the thread count or on interruptions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::evaluator::{Cached, Evaluator, TableEvaluator};
use super::log::{Checkpoint, Folder, QueryLine};
use super::space::{ArchSpace, Nb201Space};
use super::{query_rng, AnyStrategy, Strategy, StrategyKind, StrategyParams};
use crate::bench201::Bench201;
use crate::error::{Error, Result};
use crate::nas::space::Space;
use crate::progress::Progress;

/// Everything that defines a `darts nas` job; saved as `config.json` in its folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NasConfig {
    pub strategy: StrategyKind,
    pub space: Space,
    /// Queries per run (a repeated arch counts again, as in the NB201 protocol).
    pub budget: usize,
    pub runs: usize,
    pub seed: u64,
    /// The table column the strategy is told.
    pub signal: String,
    /// The table column the report shows for each run's chosen arch.
    pub test: String,
    pub benchmark: PathBuf,
    #[serde(flatten)]
    pub params: StrategyParams,
}

impl NasConfig {
    /// The checks every config passes, from flags or from a resumed `config.json`.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidArgument(msg.into()));
        let p = &self.params;
        if self.budget == 0 {
            return bad("--budget must be at least 1 query");
        }
        if self.runs == 0 {
            return bad("--runs must be at least 1");
        }
        if self.space == Space::Darts {
            return bad(
                "--space darts needs a training evaluator, which darts nas does not have yet; \
                 use --space nb201 (scored by the NAS-Bench-201 table)",
            );
        }
        if p.population == 0 || p.sample == 0 {
            return bad("--population and --sample must be at least 1");
        }
        if p.sample > p.population {
            return bad("--sample must not exceed --population");
        }
        if !(0.0..=1.0).contains(&p.crossover) {
            return bad("--crossover is a probability: between 0 and 1");
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&p.baseline_momentum) {
            return bad("--baseline-momentum must be in [0, 1)");
        }
        Ok(())
    }
}

/// One run's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: usize,
    /// The arch of highest signal (the first queried among equals).
    pub best_arch: String,
    pub best_signal: f64,
    /// Its test accuracy: the run's final number.
    pub test_accuracy: f64,
    /// After each query, the test accuracy of the best-by-signal arch so far.
    pub curve: Vec<f64>,
}

/// What `darts nas` prints (the last stdout line with `--json`) and saves as `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NasResult {
    pub strategy: StrategyKind,
    pub space: Space,
    pub signal: String,
    pub test: String,
    pub budget: usize,
    pub runs: usize,
    /// The best-by-signal arch over all runs, and its test accuracy.
    pub best_arch: String,
    pub best_test_accuracy: f64,
    /// Over runs, of each run's final test accuracy (population std, as numpy's default).
    pub mean_test_accuracy: f64,
    pub std_test_accuracy: f64,
    /// Queries over all runs, and how many distinct archs they were.
    pub queries: usize,
    pub distinct_archs: usize,
    /// Wall time of the search (the table's loading excluded).
    pub seconds: f64,
    /// After each query, the mean over runs of the best-so-far test accuracy.
    pub mean_curve: Vec<f64>,
    pub per_run: Vec<RunResult>,
}

/// What a run needs besides its number: the job, its space and evaluator, and its folder.
struct Job<'a, S: ArchSpace, E> {
    cfg: &'a NasConfig,
    space: &'a S,
    eval: &'a E,
    folder: Option<&'a Folder>,
    progress: &'a Mutex<(Progress, usize)>,
    /// Every arch queried, by any run.
    seen: &'a Mutex<HashSet<String>>,
}

impl<S: ArchSpace, E: Evaluator<S::Arch>> Job<'_, S, E> {
    /// Run `run` from its checkpoint, replaying its logged queries (asked again, to check the
    /// log belongs to this job, but not evaluated again) and then querying the rest.
    fn run(
        &self,
        run: usize,
        logged: &[QueryLine],
        checkpoint: Option<Checkpoint>,
    ) -> Result<RunResult> {
        let cfg = self.cfg;
        let (mut strategy, start) = match checkpoint {
            Some(c) if c.queries <= logged.len() => (c.strategy, c.queries),
            _ => (AnyStrategy::new(cfg.strategy, &cfg.params, self.space), 0),
        };
        let mut best: Option<(f64, S::Arch, f64)> = None;
        let mut curve = Vec::with_capacity(cfg.budget);
        for q in 0..cfg.budget {
            let (arch, signal) = if q < start {
                (self.space.decode(&logged[q].choices), logged[q].signal)
            } else {
                let choices = strategy.ask(self.space, &mut query_rng(cfg.seed, run, q));
                let arch = self.space.decode(&choices);
                let signal = match logged.get(q) {
                    Some(line) if line.choices == choices => line.signal,
                    Some(line) => {
                        return Err(Error::InvalidArgument(format!(
                            "run {run} query {q}: the log has {} but the strategy asks {arch}; \
                             the log is not this job's",
                            line.arch
                        )))
                    }
                    None => self.eval.signal(&arch)?,
                };
                strategy.tell(self.space, &choices, signal);
                if let Some(folder) = self.folder.filter(|_| q >= logged.len()) {
                    let best_signal = best.as_ref().map_or(signal, |b| b.0.max(signal));
                    folder.log(&QueryLine {
                        run,
                        query: q,
                        arch: arch.to_string(),
                        choices,
                        signal,
                        best_signal,
                    })?;
                    if (q + 1) % super::log::CHECKPOINT_EVERY == 0 || q + 1 == cfg.budget {
                        folder.checkpoint(run, q + 1, &strategy)?;
                    }
                }
                (arch, signal)
            };
            if let Ok(mut seen) = self.seen.lock() {
                seen.insert(arch.to_string());
            }
            if best.as_ref().is_none_or(|b| signal > b.0) {
                let test = self.eval.test(&arch)?;
                best = Some((signal, arch, test));
            }
            // A budget ≥ 1 has set `best` on the first query.
            curve.push(best.as_ref().map_or(f64::NAN, |b| b.2));
            self.tick();
        }
        let (best_signal, arch, test_accuracy) =
            best.ok_or_else(|| Error::InvalidArgument("--budget must be at least 1".into()))?;
        Ok(RunResult {
            run,
            best_arch: arch.to_string(),
            best_signal,
            test_accuracy,
            curve,
        })
    }

    fn tick(&self) {
        if let Ok(mut p) = self.progress.lock() {
            p.1 += 1;
            let done = p.1;
            p.0.set(done, "");
        }
    }
}

/// Mean and population standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Runs (or, with `resume`, continues) the job `cfg` in folder `out`.
pub fn run(cfg: &NasConfig, out: Option<&Path>, resume: bool) -> Result<NasResult> {
    cfg.validate()?;
    let table = Bench201::load(&cfg.benchmark)?;
    let eval = Cached::new(TableEvaluator::new(&table, &cfg.signal, &cfg.test)?);
    let (folder, logged) = match out {
        Some(dir) => {
            let (f, logged) = Folder::open(dir, cfg, resume)?;
            (Some(f), logged)
        }
        None => (None, vec![Vec::new(); cfg.runs]),
    };
    let start = Instant::now();
    let total = cfg.budget * cfg.runs;
    let seen = Mutex::new(HashSet::new());
    let progress = Mutex::new((
        Progress::new(format!("nas {}", cfg.strategy), total, 1).unit("queries"),
        0,
    ));
    let job = Job {
        cfg,
        space: &Nb201Space,
        eval: &eval,
        folder: folder.as_ref(),
        progress: &progress,
        seen: &seen,
    };
    let checkpoints: Vec<Option<Checkpoint>> = (0..cfg.runs)
        .map(|r| {
            folder
                .as_ref()
                .map(|f| f.read_checkpoint(r, cfg))
                .transpose()
                .map(Option::flatten)
        })
        .collect::<Result<_>>()?;
    let per_run: Vec<RunResult> = logged
        .par_iter()
        .zip(checkpoints)
        .enumerate()
        .map(|(r, (lines, c))| job.run(r, lines, c))
        .collect::<Result<_>>()?;
    if let Ok(p) = progress.lock() {
        p.0.finish();
    }
    let seconds = start.elapsed().as_secs_f64();
    let finals: Vec<f64> = per_run.iter().map(|r| r.test_accuracy).collect();
    let (mean, std) = mean_std(&finals);
    let overall = per_run.iter().fold(&per_run[0], |b, r| {
        if r.best_signal > b.best_signal {
            r
        } else {
            b
        }
    });
    let mean_curve = (0..cfg.budget)
        .map(|q| per_run.iter().map(|r| r.curve[q]).sum::<f64>() / cfg.runs as f64)
        .collect();
    let result = NasResult {
        strategy: cfg.strategy,
        space: cfg.space,
        signal: cfg.signal.clone(),
        test: cfg.test.clone(),
        budget: cfg.budget,
        runs: cfg.runs,
        best_arch: overall.best_arch.clone(),
        best_test_accuracy: overall.test_accuracy,
        mean_test_accuracy: mean,
        std_test_accuracy: std,
        queries: total,
        distinct_archs: seen.lock().map_or(0, |s| s.len()),
        seconds,
        mean_curve,
        per_run,
    };
    if let Some(f) = &folder {
        f.save_result(&result)?;
    }
    Ok(result)
}
