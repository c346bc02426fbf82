//! Hyperparameter spaces of `darts train`: each tuned field is one decision, so the strategies
//! of architecture search (random, BO, evolution, REINFORCE) tune it unchanged. A continuous
//! range becomes [`LEVELS`] grid points (geometric for a log-uniform range), an integer range
//! its integers, a choice its values. Ranges come from a JSON space file over built-in
//! defaults: `{"lr": {"type": "log_uniform", "low": 0.01, "high": 0.1}, "batch_size":
//! {"type": "choice", "values": [32, 64]}}`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SearchSpace;
use crate::error::{Error, Result};
use crate::train::TrainConfig;

/// Grid points of a continuous range: enough for a strategy to move by small steps, few
/// enough that BO's one-hot encoding stays small.
pub const LEVELS: usize = 8;

/// The range of one hyperparameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Range {
    LogUniform {
        low: f64,
        high: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// Every integer from `low` to `high`, both included.
    Int {
        low: i64,
        high: i64,
    },
    Choice {
        values: Vec<f64>,
    },
}

impl Range {
    /// The options a decision picks among, in order; an error says what is wrong with the range.
    fn options(&self) -> std::result::Result<Vec<f64>, String> {
        let grid = |low: f64, high: f64, f: &dyn Fn(f64) -> f64| {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!("empty or inverted range [{low}, {high}]"));
            }
            Ok((0..LEVELS)
                .map(|i| f(i as f64 / (LEVELS - 1) as f64))
                .collect())
        };
        match *self {
            Range::LogUniform { low, high } => {
                if low <= 0.0 {
                    return Err(format!("a log-uniform range needs low > 0, got {low}"));
                }
                grid(low, high, &|t| low * (high / low).powf(t))
            }
            Range::Uniform { low, high } => grid(low, high, &|t| low + (high - low) * t),
            Range::Int { low, high } if low > high => {
                Err(format!("empty or inverted range [{low}, {high}]"))
            }
            Range::Int { low, high } => Ok((low..=high).map(|v| v as f64).collect()),
            Range::Choice { ref values } if values.is_empty() => Err("an empty choice".into()),
            Range::Choice { ref values } => Ok(values.clone()),
        }
    }
}

/// The tunable fields, in decision order.
pub const PARAMS: [&str; 7] = [
    "lr",
    "weight_decay",
    "batch_size",
    "channels",
    "layers",
    "drop_path",
    "auxiliary_weight",
];

/// The built-in ranges, sized for the built-in dataset's small networks.
pub fn default_ranges() -> BTreeMap<String, Range> {
    let choice = |v: &[f64]| Range::Choice { values: v.to_vec() };
    BTreeMap::from([
        (
            "lr".into(),
            Range::LogUniform {
                low: 0.005,
                high: 0.2,
            },
        ),
        (
            "weight_decay".into(),
            Range::LogUniform {
                low: 1e-5,
                high: 1e-2,
            },
        ),
        ("batch_size".into(), choice(&[16.0, 32.0, 64.0, 96.0])),
        ("channels".into(), choice(&[4.0, 8.0, 12.0, 16.0])),
        ("layers".into(), Range::Int { low: 3, high: 5 }),
        (
            "drop_path".into(),
            Range::Uniform {
                low: 0.0,
                high: 0.3,
            },
        ),
        (
            "auxiliary_weight".into(),
            Range::Uniform {
                low: 0.0,
                high: 0.6,
            },
        ),
    ])
}

/// A hyperparameter space: the tuned fields and each one's options.
#[derive(Clone, Debug)]
pub struct HpoSpace {
    pub ranges: BTreeMap<String, Range>,
    options: Vec<(String, Vec<f64>)>,
    dims: Vec<usize>,
}

impl HpoSpace {
    /// The defaults with the entries of the space file `file` (if any) in their place; every
    /// option is checked against `base` (what `darts train` would accept), and an error names
    /// the file and the entry.
    pub fn load(file: Option<&Path>, base: &TrainConfig) -> Result<HpoSpace> {
        let mut ranges = default_ranges();
        let name = file.map_or("the built-in space".into(), |f| f.display().to_string());
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            let given: BTreeMap<String, Range> = serde_json::from_str(&text)
                .map_err(|e| Error::data(f, format!("not a hyperparameter space: {e}")))?;
            for (k, r) in given {
                if !PARAMS.contains(&k.as_str()) {
                    return Err(Error::data(
                        f,
                        format!("unknown entry `{k}`; expected one of {}", PARAMS.join(", ")),
                    ));
                }
                ranges.insert(k, r);
            }
        }
        HpoSpace::new(ranges, base).map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))
    }

    /// The space of `ranges`; an error names the entry.
    pub fn new(
        ranges: BTreeMap<String, Range>,
        base: &TrainConfig,
    ) -> std::result::Result<HpoSpace, String> {
        let mut options = Vec::new();
        for key in PARAMS {
            let Some(r) = ranges.get(key) else { continue };
            let opts = r.options().map_err(|e| format!("entry `{key}`: {e}"))?;
            for &v in &opts {
                let mut cfg = base.clone();
                set(&mut cfg, key, v);
                cfg.validate()
                    .map_err(|e| format!("entry `{key}`: value {v}: {e}"))?;
            }
            options.push((key.to_string(), opts));
        }
        let dims = options.iter().map(|o| o.1.len()).collect();
        Ok(HpoSpace {
            ranges,
            options,
            dims,
        })
    }

    /// `base` with the hyperparameters `c` picks.
    pub fn apply(&self, base: &TrainConfig, c: &[usize]) -> TrainConfig {
        let mut cfg = base.clone();
        for ((key, opts), &x) in self.options.iter().zip(c) {
            set(&mut cfg, key, opts[x]);
        }
        cfg
    }

    /// The picked values by name, for the log and the table.
    pub fn values(&self, c: &[usize]) -> BTreeMap<String, f64> {
        self.options
            .iter()
            .zip(c)
            .map(|((k, opts), &x)| (k.clone(), opts[x]))
            .collect()
    }
}

impl SearchSpace for HpoSpace {
    fn dims(&self) -> &[usize] {
        &self.dims
    }
}

/// Sets the field `key` (one of [`PARAMS`]) of `cfg`.
fn set(cfg: &mut TrainConfig, key: &str, v: f64) {
    let count = v.round().max(0.0) as usize;
    match key {
        "lr" => cfg.lr = v as f32,
        "weight_decay" => cfg.weight_decay = v as f32,
        "batch_size" => cfg.batch_size = count,
        "channels" => cfg.channels = count,
        "layers" => cfg.layers = count,
        "drop_path" => cfg.drop_path = v as f32,
        "auxiliary_weight" => cfg.auxiliary_weight = v as f32,
        _ => {}
    }
}
