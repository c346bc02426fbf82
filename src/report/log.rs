//! Reading a run's JSON-lines logs (`search.jsonl`, `train.jsonl`): one object per epoch.
//! A run killed while writing leaves a partial last line; it is left out with a warning instead
//! of failing the report, since the report is most wanted exactly when a run went wrong.

use std::path::Path;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::nas::space::Arch;
use crate::nas::Genotype;

/// One epoch of a search run. Metrics are optional so a log missing one (or holding `null`, which
/// is how a non-finite loss is written) still reports everything else.
#[derive(Deserialize)]
pub(crate) struct SearchEpoch {
    pub epoch: usize,
    pub lr: Option<f64>,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Softmaxed weights, a row per edge, a column per primitive.
    pub alphas_normal: Option<Vec<Vec<f64>>>,
    /// Absent in a NAS-Bench-201 search, whose cell has no reduction cell.
    pub alphas_reduce: Option<Vec<Vec<f64>>>,
    #[serde(default, deserialize_with = "arch")]
    pub genotype: Option<Arch>,
    pub seconds: Option<f64>,
}

/// A logged architecture: a DARTS genotype object or a NAS-Bench-201 string. Read by its JSON
/// type rather than as an untagged [`Arch`], so a bad one is reported by what is wrong with it.
fn arch<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Arch>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(|a| Some(Arch::Nb201(a)))
            .map_err(D::Error::custom),
        Some(v) => Genotype::deserialize(v)
            .map(|g| Some(Arch::Darts(g)))
            .map_err(D::Error::custom),
    }
}

/// One epoch of a training run.
#[derive(Deserialize)]
pub(crate) struct TrainEpoch {
    pub epoch: usize,
    pub lr: Option<f64>,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub seconds: Option<f64>,
}

/// A log line that names its epoch.
pub(crate) trait Epoch {
    fn epoch(&self) -> usize;
}

impl Epoch for SearchEpoch {
    fn epoch(&self) -> usize {
        self.epoch
    }
}

impl Epoch for TrainEpoch {
    fn epoch(&self) -> usize {
        self.epoch
    }
}

/// The entries of a log with the line each came from, in epoch order.
pub(crate) struct Log<T> {
    pub entries: Vec<(usize, T)>,
    pub warnings: Vec<String>,
}

/// Reads a JSON-lines log. Blank lines are skipped; a last line that is cut short is left out
/// with a warning; any other bad line is an error naming the file and line. When an epoch was
/// logged twice (a resumed run repeats the epoch it resumed in), the later line wins.
pub(crate) fn read<T: DeserializeOwned + Epoch>(path: &Path) -> Result<Log<T>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Lossy, so a multi-byte character cut in half by a kill is just part of a bad last line.
    let text = String::from_utf8_lossy(&bytes);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut entries = Vec::with_capacity(lines.len());
    let mut warnings = Vec::new();
    for (k, &(no, line)) in lines.iter().enumerate() {
        match serde_json::from_str::<T>(line) {
            Ok(v) => entries.push((no, v)),
            Err(e) if k + 1 == lines.len() && (e.is_eof() || !text.ends_with('\n')) => {
                warnings.push(format!(
                    "{name}: line {no} is incomplete ({e}); the run was probably stopped while \
                     writing it, so that epoch is left out"
                ));
            }
            Err(e) => return Err(Error::data(path, format!("line {no}: {e}"))),
        }
    }
    entries.sort_by_key(|(no, v)| (v.epoch(), *no));
    let logged = entries.len();
    entries.reverse();
    entries.dedup_by_key(|(_, v)| v.epoch());
    entries.reverse();
    if entries.len() < logged {
        warnings.push(format!(
            "{name}: {} epoch(s) logged more than once (a resumed run?); the later line is used",
            logged - entries.len()
        ));
    }
    Ok(Log { entries, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(name: &str, text: &str) -> Result<Log<TrainEpoch>> {
        let dir = std::env::temp_dir().join(format!("darts-log-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.jsonl");
        std::fs::write(&path, text).unwrap();
        let log = read(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        log
    }

    #[test]
    fn partial_last_line_is_a_warning() {
        let log = read_text(
            "partial",
            "{\"epoch\": 1, \"train_loss\": 2.0}\n\n{\"epoch\": 2, \"train_loss\": 1.5}\n{\"epoch\": 3, \"tra",
        )
        .unwrap();
        let epochs: Vec<usize> = log.entries.iter().map(|e| e.1.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        assert_eq!(log.entries[1].0, 3, "line numbers count blank lines");
        assert!(
            log.warnings[0].contains("train.jsonl: line 4 is incomplete"),
            "{:?}",
            log.warnings
        );
    }

    #[test]
    fn bad_middle_line_is_an_error() {
        let e = read_text(
            "middle",
            "{\"epoch\": 1}\n{\"epoch\": \"two\"}\n{\"epoch\": 3}\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("train.jsonl: line 2: invalid type"), "{e}");
    }

    #[test]
    fn repeated_epochs_keep_the_later_line() {
        let log = read_text(
            "resumed",
            "{\"epoch\": 1, \"lr\": 0.1}\n{\"epoch\": 2, \"lr\": 0.2}\n{\"epoch\": 2, \"lr\": 0.3}\n",
        )
        .unwrap();
        let lrs: Vec<Option<f64>> = log.entries.iter().map(|e| e.1.lr).collect();
        assert_eq!(lrs, [Some(0.1), Some(0.3)]);
        assert!(log.warnings[0].contains("1 epoch(s) logged more than once"));
    }
}
