//! `darts nas`: K independent runs of a strategy, each of `budget` queries or `time` seconds,
//! scored by an evaluator; the result is each run's best-by-signal arch with its test accuracy, their mean
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
use super::executor::LocalPool;
use super::log::{Checkpoint, Folder, QueryLine, CHECKPOINT_EVERY};
use super::space::{ArchSpace, DartsSpace, Nb201Space};
use super::trial::{TrainingEvaluator, TrialSettings};
use super::{query_rng, AnyStrategy, Choices, Strategy, StrategyKind, StrategyParams};
use crate::bench201::Bench201;
use crate::error::{Error, Result};
use crate::nas::space::Space;
use crate::progress::Progress;

/// Everything that defines a `darts nas` job; saved as `config.json` in its folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NasConfig {
    pub strategy: StrategyKind,
    pub space: Space,
    /// Queries per run (a repeated arch counts again, as in the NB201 protocol); `None` when
    /// the runs have a time budget.
    #[serde(default)]
    pub budget: Option<usize>,
    /// Wall-clock seconds per run, instead of a query budget: a query (a batch, with several
    /// workers) starts while the run has time left and counts in full. The NB201 table has no
    /// training-time column, so the table evaluator is timed by the clock too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    pub runs: usize,
    pub seed: u64,
    /// The table column the strategy is told (`valid_accuracy` for training trials).
    pub signal: String,
    /// The table column the report shows for each run's chosen arch (`test_accuracy`).
    pub test: String,
    /// The NAS-Bench-201 table; `None` when trials are trained instead.
    pub benchmark: Option<PathBuf>,
    /// Trained trials (the training evaluator) instead of the table.
    #[serde(default)]
    pub trial: Option<TrialSettings>,
    /// Candidates a run asks for at once and evaluates in parallel (1 asks and tells in turn).
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(flatten)]
    pub params: StrategyParams,
}

fn one() -> usize {
    1
}

/// What a run's budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetKind {
    Queries,
    Seconds,
}

impl NasConfig {
    /// The checks every config passes, from flags or from a resumed `config.json`.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidArgument(msg.into()));
        let p = &self.params;
        match (self.budget, self.time) {
            (Some(_), Some(_)) => {
                return bad("give --budget (queries) or --time (seconds) per run, not both")
            }
            (None, None) => return bad("give a budget per run: --budget N or --time SECONDS"),
            (Some(0), None) => return bad("--budget must be at least 1 query"),
            (None, Some(t)) if !(t.is_finite() && t > 0.0) => {
                return bad("--time must be a positive number of seconds")
            }
            _ => {}
        }
        if self.runs == 0 {
            return bad("--runs must be at least 1");
        }
        match (&self.trial, &self.benchmark) {
            (Some(t), _) => {
                t.recipe.validate()?;
                if t.recipe.valid_fraction <= 0.0 {
                    return bad(
                        "training trials need --valid-fraction above 0: the strategy \
                                must not see the test set",
                    );
                }
                crate::validate::count("threads-per-trial", t.threads_per_trial)?;
            }
            (None, _) if self.space == Space::Darts => {
                return bad("--space darts has no table; use --evaluator train")
            }
            (None, Some(_)) => {}
            (None, None) => return bad("--evaluator table needs --benchmark"),
        }
        crate::validate::count("workers", self.workers)?;
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

    pub fn budget_kind(&self) -> BudgetKind {
        match self.time {
            Some(_) => BudgetKind::Seconds,
            None => BudgetKind::Queries,
        }
    }

    /// The most queries a run may make (unbounded under a time budget).
    pub fn max_queries(&self) -> usize {
        self.budget.unwrap_or(usize::MAX)
    }

    /// Whether a query that would start `elapsed` seconds into its run may start.
    fn in_time(&self, elapsed: f64) -> bool {
        self.time.is_none_or(|t| elapsed < t)
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
    /// Seconds of the run when its last query finished (summed over resumed attempts).
    #[serde(default)]
    pub seconds: f64,
}

/// What `darts nas` prints (the last stdout line with `--json`) and saves as `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NasResult {
    pub strategy: StrategyKind,
    pub space: Space,
    pub signal: String,
    pub test: String,
    pub budget_kind: BudgetKind,
    /// Queries per run (`budget_kind` queries) or seconds per run (`seconds`).
    pub budget: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
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
    /// The trial folder of the best arch, with training trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial: Option<PathBuf>,
    /// After each query, the mean over runs of the best-so-far test accuracy (a run that made
    /// fewer queries, under a time budget, stays at its final value).
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
    /// log belongs to this job, but not evaluated again) and then querying the rest. Under a
    /// time budget, query q starts if the run's clock read below the budget when query q - 1
    /// finished: the log holds those times, so a resumed run stops where the first would have.
    fn run(
        &self,
        run: usize,
        logged: &[QueryLine],
        checkpoint: Option<Checkpoint>,
    ) -> Result<(RunResult, S::Arch)> {
        let cfg = self.cfg;
        let (mut strategy, start) = match checkpoint {
            Some(c) if c.queries <= logged.len() => (c.strategy, c.queries),
            _ => (AnyStrategy::new(cfg.strategy, &cfg.params, self.space), 0),
        };
        // The clock goes on from the killed attempt's last logged query.
        let clock = RunClock {
            start: Instant::now(),
            offset: logged.last().map_or(0.0, |l| l.seconds),
        };
        let mut best: Option<(f64, S::Arch, f64)> = None;
        let mut curve = Vec::new();
        let (mut q, mut elapsed) = (0, 0.0);
        while q < cfg.max_queries() && cfg.in_time(elapsed) {
            // Batches start at multiples of `workers`, so a checkpoint (taken after a batch)
            // is never inside one and the replay asks in the same batches.
            let end = q.saturating_add(cfg.workers).min(cfg.max_queries());
            let batch = if q < start {
                (q..end)
                    .map(|k| {
                        let l = &logged[k];
                        (self.space.decode(&l.choices), l.signal, l.seconds)
                    })
                    .collect()
            } else {
                self.batch(
                    run,
                    q..end,
                    logged,
                    &mut strategy,
                    best.as_ref().map(|b| b.0),
                    &clock,
                )?
            };
            for (arch, signal, seconds) in batch {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.insert(arch.to_string());
                }
                if best.as_ref().is_none_or(|b| signal > b.0) {
                    let test = self.eval.test(&arch)?;
                    best = Some((signal, arch, test));
                }
                // A budget ≥ 1 has set `best` on the first query.
                curve.push(best.as_ref().map_or(f64::NAN, |b| b.2));
                elapsed = seconds;
                self.tick();
            }
            q = end;
        }
        if cfg.time.is_some() {
            eprintln!("run {run}: time budget spent after {q} queries ({elapsed:.2} s)");
        }
        let (best_signal, arch, test_accuracy) =
            best.ok_or_else(|| Error::InvalidArgument("--budget must be at least 1".into()))?;
        let result = RunResult {
            run,
            best_arch: arch.to_string(),
            best_signal,
            test_accuracy,
            curve,
            seconds: elapsed,
        };
        Ok((result, arch))
    }

    /// Queries `qs` of run `run`: asked together, scored (from the log when it has them, else
    /// by the evaluator, in parallel), told in order, logged with the run's `clock`; the
    /// strategy is checkpointed after the batch when it crosses a multiple of
    /// [`CHECKPOINT_EVERY`], ends the run, or holds trained trials (each costs far more than a
    /// checkpoint). Returns each query's arch, signal and finishing time.
    fn batch(
        &self,
        run: usize,
        qs: std::ops::Range<usize>,
        logged: &[QueryLine],
        strategy: &mut AnyStrategy,
        mut best_signal: Option<f64>,
        clock: &RunClock,
    ) -> Result<Vec<(S::Arch, f64, f64)>> {
        let cfg = self.cfg;
        let asked: Vec<Choices> = qs
            .clone()
            .map(|k| strategy.ask(self.space, &mut query_rng(cfg.seed, run, k)))
            .collect();
        let archs: Vec<S::Arch> = asked.iter().map(|c| self.space.decode(c)).collect();
        let mut scored = Vec::with_capacity(asked.len());
        for (k, (choices, arch)) in qs.clone().zip(asked.iter().zip(&archs)) {
            match logged.get(k) {
                Some(line) if line.choices == *choices => scored.push((line.signal, line.seconds)),
                Some(line) => {
                    return Err(Error::InvalidArgument(format!(
                        "run {run} query {k}: the log has {} but the strategy asks {arch}; \
                         the log is not this job's",
                        line.arch
                    )))
                }
                None => break,
            }
        }
        let fresh = self.eval.signals(&archs[scored.len()..])?;
        let now = clock.now();
        scored.extend(fresh.into_iter().map(|s| (s, now)));
        for (k, ((choices, arch), &(signal, seconds))) in
            qs.clone().zip(asked.into_iter().zip(&archs).zip(&scored))
        {
            strategy.tell(self.space, &choices, signal);
            best_signal = Some(best_signal.map_or(signal, |b| b.max(signal)));
            if let Some(folder) = self.folder.filter(|_| k >= logged.len()) {
                folder.log(&QueryLine {
                    run,
                    query: k,
                    arch: arch.to_string(),
                    choices,
                    signal,
                    best_signal: best_signal.unwrap_or(signal),
                    seconds,
                })?;
            }
        }
        let crossed = qs.end / CHECKPOINT_EVERY > qs.start / CHECKPOINT_EVERY;
        let last = qs.end == cfg.max_queries() || !cfg.in_time(now);
        if let Some(folder) = self.folder.filter(|_| qs.end > logged.len()) {
            if crossed || last || cfg.trial.is_some() {
                folder.checkpoint(run, qs.end, strategy)?;
            }
        }
        Ok(archs
            .into_iter()
            .zip(scored)
            .map(|(a, (s, t))| (a, s, t))
            .collect())
    }

    fn tick(&self) {
        if let Ok(mut p) = self.progress.lock() {
            p.1 += 1;
            let done = p.1;
            p.0.set(done, "");
        }
    }
}

/// A run's seconds: those of its earlier attempts (`offset`) plus this one's.
struct RunClock {
    start: Instant,
    offset: f64,
}

impl RunClock {
    fn now(&self) -> f64 {
        self.offset + self.start.elapsed().as_secs_f64()
    }
}

/// Mean and population standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The mean and population std over runs of best-so-far curves, query by query, up to the
/// longest; a shorter curve (a run that made fewer queries in its time) holds its last value.
pub fn curve_stats(curves: &[&[f64]]) -> Vec<(f64, f64)> {
    let len = curves.iter().map(|c| c.len()).max().unwrap_or(0);
    (0..len)
        .map(|q| {
            let at: Vec<f64> = curves
                .iter()
                .filter_map(|c| c.get(q).or(c.last()).copied())
                .collect();
            mean_std(&at)
        })
        .collect()
}

/// Runs (or, with `resume`, continues) the job `cfg` in folder `out`.
pub fn run(cfg: &NasConfig, out: Option<&Path>, resume: bool) -> Result<NasResult> {
    cfg.validate()?;
    let (Some(t), Some(dir)) = (&cfg.trial, out) else {
        let path = cfg.benchmark.as_deref().ok_or_else(|| {
            Error::InvalidArgument("training trials need --out: their folders go there".into())
        })?;
        let table = Bench201::load(path)?;
        let eval = Cached::new(TableEvaluator::new(&table, &cfg.signal, &cfg.test)?);
        return search(cfg, &Nb201Space, &eval, out, resume, &|_| Ok(None));
    };
    let pool = LocalPool::new(cfg.workers, t.retries)?;
    let trials = TrainingEvaluator {
        trials: dir.join("trials"),
        settings: t,
        exec: &pool,
    };
    let eval = Cached::new(trials);
    match cfg.space {
        Space::Darts => search(cfg, &DartsSpace::default(), &eval, out, resume, &|a| {
            Ok(Some(eval.inner().trial(a)?.1))
        }),
        Space::Nb201 => search(cfg, &Nb201Space, &eval, out, resume, &|a| {
            Ok(Some(eval.inner().trial(a)?.1))
        }),
    }
}

/// The job `cfg` over `space`, scored by `eval`; `locate` names the best arch's trial folder.
fn search<S: ArchSpace, E: Evaluator<S::Arch>>(
    cfg: &NasConfig,
    space: &S,
    eval: &E,
    out: Option<&Path>,
    resume: bool,
    locate: &dyn Fn(&S::Arch) -> Result<Option<PathBuf>>,
) -> Result<NasResult> {
    let (folder, logged) = match out {
        Some(dir) => {
            let (f, logged) = Folder::open(dir, cfg, resume)?;
            (Some(f), logged)
        }
        None => (None, vec![Vec::new(); cfg.runs]),
    };
    let start = Instant::now();
    // Under a time budget the query count is not known ahead: the bar shows no total.
    let total = cfg.budget.map_or(0, |b| b * cfg.runs);
    let seen = Mutex::new(HashSet::new());
    let progress = Mutex::new((
        Progress::new(format!("nas {}", cfg.strategy), total, 1).unit("queries"),
        0,
    ));
    let job = Job {
        cfg,
        space,
        eval,
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
    let per_run: Vec<(RunResult, S::Arch)> = logged
        .par_iter()
        .zip(checkpoints)
        .enumerate()
        .map(|(r, (lines, c))| job.run(r, lines, c))
        .collect::<Result<_>>()?;
    if let Ok(p) = progress.lock() {
        p.0.finish();
    }
    let seconds = start.elapsed().as_secs_f64();
    let finals: Vec<f64> = per_run.iter().map(|r| r.0.test_accuracy).collect();
    let (mean, std) = mean_std(&finals);
    let (overall, overall_arch) = per_run.iter().fold(&per_run[0], |b, r| {
        if r.0.best_signal > b.0.best_signal {
            r
        } else {
            b
        }
    });
    let best_trial = locate(overall_arch)?;
    let overall = overall.clone();
    let per_run: Vec<RunResult> = per_run.into_iter().map(|r| r.0).collect();
    let curves: Vec<&[f64]> = per_run.iter().map(|r| r.curve.as_slice()).collect();
    let mean_curve = curve_stats(&curves).into_iter().map(|s| s.0).collect();
    let result = NasResult {
        strategy: cfg.strategy,
        space: cfg.space,
        signal: cfg.signal.clone(),
        test: cfg.test.clone(),
        budget_kind: cfg.budget_kind(),
        budget: cfg.budget,
        time: cfg.time,
        runs: cfg.runs,
        best_arch: overall.best_arch.clone(),
        best_test_accuracy: overall.test_accuracy,
        mean_test_accuracy: mean,
        std_test_accuracy: std,
        queries: per_run.iter().map(|r| r.curve.len()).sum(),
        distinct_archs: seen.lock().map_or(0, |s| s.len()),
        seconds,
        best_trial,
        mean_curve,
        per_run,
    };
    if let Some(f) = &folder {
        f.save_result(&result)?;
    }
    Ok(result)
}
