//! `darts train --config FILE`: a training config JSON (a run's `config.json`, or the best
//! configuration `darts hpo` writes) as the base, with every flag given explicitly on top.

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::train::TrainConfig;

/// Flags that set a config field of another name (the rest are named like their field).
const RENAMED: [(&str, &str); 4] = [
    ("genotype", "genotype"),
    ("arch", "genotype"),
    ("dataset", "data"),
    ("data_dir", "data"),
];

/// The config in `file` with the fields of `flags` (the config the command line describes)
/// that `m` says were given explicitly; validated.
pub fn merge(file: &Path, flags: TrainConfig, m: &ArgMatches) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mut base: Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(file, format!("not a training config: {e}")))?;
    let given = serde_json::to_value(&flags)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    let (Some(obj), Some(given)) = (base.as_object_mut(), given.as_object()) else {
        return Err(Error::data(
            file,
            "not a training config: expected a JSON object",
        ));
    };
    for id in m.ids().map(|id| id.as_str()) {
        if m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let field = RENAMED.iter().find(|r| r.0 == id).map_or(id, |r| r.1);
        if let Some(v) = given.get(field) {
            obj.insert(field.to_string(), v.clone());
            if field == "genotype" {
                obj.insert("genotype_source".into(), given["genotype_source"].clone());
            }
        }
    }
    let cfg: TrainConfig = serde_json::from_value(base)
        .map_err(|e| Error::data(file, format!("not a training config: {e}")))?;
    cfg.validate()
        .map_err(|e| Error::data(file, e.to_string()))?;
    Ok(cfg)
}
