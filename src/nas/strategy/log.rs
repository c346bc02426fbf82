//! A `darts nas` folder: `config.json`, `queries.jsonl` (one line per query, every run's lines
//! interleaved as the runs went), `state/run-<r>.json` (a run's strategy every
//! [`CHECKPOINT_EVERY`] queries) and `result.json`. A killed job resumes from each run's last
//! checkpoint and replays the logged queries after it, so no query is evaluated twice.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::run::{NasConfig, NasResult};
use super::AnyStrategy;
use crate::checkpoint::{remove_if_exists, write_atomic};
use crate::error::{Error, Result};

/// Queries between a run's checkpoints.
pub const CHECKPOINT_EVERY: usize = 50;
pub const CONFIG: &str = "config.json";
pub const LOG: &str = "queries.jsonl";
pub const RESULT: &str = "result.json";
const STATE: &str = "state";

/// One line of `queries.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryLine {
    pub run: usize,
    pub query: usize,
    pub arch: String,
    /// The arch as the strategy's decisions (see `SearchSpace::dims`).
    pub choices: Vec<usize>,
    /// The signal the strategy was told.
    pub signal: f64,
    /// The run's best signal so far, this query included.
    pub best_signal: f64,
    /// Seconds into the run (over all its attempts) when the query finished.
    #[serde(default)]
    pub seconds: f64,
}

/// A run's strategy after `queries` queries.
#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    pub queries: usize,
    pub strategy: AnyStrategy,
}

pub struct Folder {
    dir: PathBuf,
    log: Mutex<File>,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))
}

/// The log's lines grouped by run, each run's in query order; a torn last line (the job was
/// killed while writing it) is dropped, any other bad line is an error naming it.
fn parse_log(path: &Path, text: &str, cfg: &NasConfig) -> Result<Vec<Vec<QueryLine>>> {
    let mut runs = vec![Vec::new(); cfg.runs];
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let bad = |msg: String| Error::data(path, format!("line {}: {msg}", i + 1));
        let line: QueryLine = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(_) if i + 1 == lines.len() && !raw.ends_with('\n') => break,
            Err(e) => return Err(bad(format!("not a query line: {e}"))),
        };
        let Some(run) = runs.get_mut(line.run) else {
            return Err(bad(format!(
                "run {} but the job has {} runs",
                line.run, cfg.runs
            )));
        };
        if line.query != run.len() || line.query >= cfg.max_queries() {
            return Err(bad(format!(
                "run {} query {} out of order (expected query {} of {})",
                line.run,
                line.query,
                run.len(),
                cfg.budget.map_or("a time budget".into(), |b| b.to_string())
            )));
        }
        run.push(line);
    }
    Ok(runs)
}

/// A job folder's `config.json`, validated.
pub fn read_config(dir: &Path) -> Result<NasConfig> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: NasConfig = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("bad nas config: {e}")))?;
    cfg.validate()
        .map_err(|e| Error::data(&path, e.to_string()))?;
    Ok(cfg)
}

impl Folder {
    /// Opens `dir` for the job `cfg`: a fresh job writes its config and clears old files; a
    /// resumed one keeps the log's complete lines. Returns the logged lines by run.
    pub fn open(
        dir: &Path,
        cfg: &NasConfig,
        resume: bool,
    ) -> Result<(Folder, Vec<Vec<QueryLine>>)> {
        let log_path = dir.join(LOG);
        let state = dir.join(STATE);
        let logged = if resume {
            if read_config(dir)? != *cfg {
                return Err(Error::data(
                    dir.join(CONFIG),
                    "the folder holds another job (its config differs from this one)",
                ));
            }
            let text = match std::fs::read_to_string(&log_path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(Error::io(&log_path, e)),
            };
            let logged = parse_log(&log_path, &text, cfg)?;
            // Rewritten in run order without the torn line, so appends start on a fresh line.
            let kept: String = logged
                .iter()
                .flatten()
                .map(|l| to_json(l).map(|s| s + "\n"))
                .collect::<Result<_>>()?;
            write_atomic(&log_path, kept.as_bytes())?;
            logged
        } else {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let config = serde_json::to_string_pretty(cfg)
                .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
            write_atomic(&dir.join(CONFIG), config.as_bytes())?;
            for f in [LOG, RESULT] {
                remove_if_exists(&dir.join(f))?;
            }
            if state.exists() {
                std::fs::remove_dir_all(&state).map_err(|e| Error::io(&state, e))?;
            }
            vec![Vec::new(); cfg.runs]
        };
        std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let folder = Folder {
            dir: dir.to_path_buf(),
            log: Mutex::new(log),
        };
        Ok((folder, logged))
    }

    fn state_path(&self, run: usize) -> PathBuf {
        self.dir.join(STATE).join(format!("run-{run}.json"))
    }

    /// Run `run`'s last checkpoint, if it has one.
    pub fn read_checkpoint(&self, run: usize, cfg: &NasConfig) -> Result<Option<Checkpoint>> {
        let path = self.state_path(run);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let c: Checkpoint = serde_json::from_str(&text)
            .map_err(|e| Error::data(&path, format!("bad checkpoint: {e}")))?;
        if c.strategy.kind() != cfg.strategy {
            return Err(Error::data(
                &path,
                format!(
                    "a {} checkpoint in a {} job",
                    c.strategy.kind(),
                    cfg.strategy
                ),
            ));
        }
        Ok(Some(c))
    }

    /// Appends one query's line (not synced: [`Folder::checkpoint`] syncs before it writes).
    pub fn log(&self, line: &QueryLine) -> Result<()> {
        let path = self.dir.join(LOG);
        let text = to_json(line)? + "\n";
        let mut f = self
            .log
            .lock()
            .map_err(|_| Error::InvalidArgument("the query log's lock is poisoned".into()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }

    /// Saves run `run`'s strategy after `queries` queries, once the log holding them is on
    /// disk (a checkpoint must never be ahead of the log).
    pub fn checkpoint(&self, run: usize, queries: usize, strategy: &AnyStrategy) -> Result<()> {
        let path = self.dir.join(LOG);
        if let Ok(f) = self.log.lock() {
            f.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        #[derive(Serialize)]
        struct Saved<'a> {
            queries: usize,
            strategy: &'a AnyStrategy,
        }
        let text = to_json(&Saved { queries, strategy })?;
        write_atomic(&self.state_path(run), text.as_bytes())
    }

    pub fn save_result(&self, result: &NasResult) -> Result<()> {
        let text = serde_json::to_string_pretty(result)
            .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
        write_atomic(&self.dir.join(RESULT), text.as_bytes())
    }
}
