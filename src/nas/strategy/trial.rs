//! The training evaluator: each arch is trained by a `darts train` trial (a child process, run
//! by an [`Executor`]) with a short proxy recipe, in its own folder `trials/<hash>/`, where the
//! hash is of the trial's whole training config (arch and recipe). The strategy sees the
//! accuracy on the held-out part of the training set; the test accuracy, from the same trial,
//! is only reported. A folder whose `results.json` shows the trial finished is read instead of
//! trained again: that is the cache, and it survives a killed job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::evaluator::Evaluator;
use super::executor::{Executor, Task};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::nas::space::Arch;
use crate::train::TrainConfig;

/// How every trial of a job trains: the recipe (its genotype is replaced by each arch) and
/// the trials' processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialSettings {
    pub recipe: TrainConfig,
    /// Compute threads of each trial's process.
    pub threads_per_trial: usize,
    /// Times a trial whose process died is started again.
    pub retries: usize,
}

/// What the job reads back from a finished trial (percent).
#[derive(Clone, Copy, Debug)]
pub struct TrialScore {
    pub valid: f64,
    pub test: f64,
    pub epochs: usize,
}

/// The folder name of a trial: the first 16 hex digits of the SHA-256 of its config's JSON.
pub fn trial_hash(cfg: &TrainConfig) -> Result<String> {
    let json = serde_json::to_string(cfg)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    let digest = Sha256::digest(json.as_bytes());
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The scores in a trial folder's `results.json`, once it has trained at least `epochs`.
pub fn read_score(dir: &Path, epochs: usize) -> Result<Option<TrialScore>> {
    let path = dir.join("results.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("bad trial results: {e}")))?;
    let done = v["epochs"].as_u64().unwrap_or(0) as usize;
    let (Some(valid), Some(test)) = (v["valid_accuracy"].as_f64(), v["test_accuracy"].as_f64())
    else {
        return Err(Error::data(
            &path,
            "trial results without valid_accuracy and test_accuracy",
        ));
    };
    Ok((done >= epochs).then_some(TrialScore {
        valid: 100.0 * valid,
        test: 100.0 * test,
        epochs: done,
    }))
}

/// `darts train` arguments of a trial: `start` is the config file of a fresh trial, or `None`
/// to continue the trial's folder; `stop_after` ends it early (successive halving).
pub fn train_args(
    dir: &Path,
    start: Option<&Path>,
    stop_after: Option<usize>,
    threads: usize,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into()];
    let path = |p: &Path| p.to_string_lossy().into_owned();
    match start {
        Some(file) => args.extend(["--config".into(), path(file), "--out".into(), path(dir)]),
        None => args.extend(["--resume".into(), path(dir)]),
    }
    if let Some(s) = stop_after {
        args.extend(["--stop-after".into(), s.to_string()]);
    }
    args.extend(["--threads".into(), threads.to_string(), "--json".into()]);
    args
}

/// Writes a trial's config and trains it to its full recipe, unless its folder already has.
pub fn train_trial(
    exec: &dyn Executor,
    dir: &Path,
    cfg: &TrainConfig,
    threads: usize,
) -> Result<TrialScore> {
    if let Some(s) = read_score(dir, cfg.epochs)? {
        return Ok(s);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = dir.join("trial.json");
    let text = serde_json::to_string_pretty(cfg)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    write_atomic(&file, text.as_bytes())?;
    let task = Task {
        args: train_args(dir, Some(&file), None, threads),
        dir: dir.to_path_buf(),
    };
    exec.run(&task)?;
    read_score(dir, cfg.epochs)?
        .ok_or_else(|| Error::data(dir.join("results.json"), "the trial ended without results"))
}

/// Scores archs by training them (see the module's comment).
pub struct TrainingEvaluator<'a> {
    pub trials: PathBuf,
    pub settings: &'a TrialSettings,
    pub exec: &'a dyn Executor,
}

impl TrainingEvaluator<'_> {
    /// The trial of `arch`: its training config and its folder.
    pub fn trial<A: Clone + Into<Arch>>(&self, arch: &A) -> Result<(TrainConfig, PathBuf)> {
        let cfg = TrainConfig {
            genotype: arch.clone().into(),
            genotype_source: "darts nas trial".into(),
            ..self.settings.recipe.clone()
        };
        let dir = self.trials.join(trial_hash(&cfg)?);
        Ok((cfg, dir))
    }

    fn score<A: Clone + Into<Arch>>(&self, arch: &A) -> Result<TrialScore> {
        let (cfg, dir) = self.trial(arch)?;
        train_trial(self.exec, &dir, &cfg, self.settings.threads_per_trial)
    }
}

impl<A: Clone + Into<Arch> + Sync> Evaluator<A> for TrainingEvaluator<'_> {
    fn signal(&self, arch: &A) -> Result<f64> {
        Ok(self.score(arch)?.valid)
    }

    fn test(&self, arch: &A) -> Result<f64> {
        Ok(self.score(arch)?.test)
    }

    /// All at once, one thread per arch waiting on the executor's slots.
    fn signals(&self, archs: &[A]) -> Result<Vec<f64>> {
        super::executor::each_in_parallel(archs, |a| self.signal(a))
    }
}
