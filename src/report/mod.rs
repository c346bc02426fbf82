//! `darts report`: one self-contained HTML page (inline CSS and SVG, no JavaScript) for a search
//! or training run folder, and the genotype drawings it uses.
//!
//! A search folder holds `search.jsonl` (one JSON object per epoch: metrics, softmaxed alphas,
//! the genotype derived so far), `config.json` and `genotype.json`; a training folder holds
//! `train.jsonl`, `genotype.json` and maybe `results.json`. The page shows the run's final
//! numbers, the cells as graphs, the final alphas as heatmaps, how the alphas moved, and the
//! loss, accuracy and learning-rate curves.

mod alphas;
mod cell;
mod chart;
mod html;
mod layout;
mod log;
mod svg;

use std::path::Path;

use serde_json::Value;

pub use cell::{cell_svg, genotype_svg};

use crate::error::{Error, Result};
use crate::nas::primitives::{parse_primitive_list, Primitive, DARTS_PRIMITIVES};
use crate::nas::Genotype;
use log::{SearchEpoch, TrainEpoch};
use svg::steps_for_edges;

/// Writes the report on the run in `run_dir` to `out` as one HTML file, creating `out`'s folder
/// if needed. See [`report_html`].
pub fn write_report(run_dir: &Path, out: &Path) -> Result<()> {
    let html = report_html(run_dir)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(out, html).map_err(|e| Error::io(out, e))
}

/// The report on the run in `run_dir` as one self-contained HTML document.
///
/// A folder with neither `search.jsonl` nor `train.jsonl` is an [`Error::Data`]; so is a log
/// line that is not valid JSON, except a cut-short last line (a killed run), which is left out
/// with a warning shown on the page. Alphas whose shape does not fit the run's primitives (from
/// `config.json`, else the eight DARTS ones) are an error naming the line.
pub fn report_html(run_dir: &Path) -> Result<String> {
    Ok(html::render(&Run::load(run_dir)?))
}

/// A search log whose alphas have been checked against the primitives.
pub(crate) struct Search {
    pub epochs: Vec<SearchEpoch>,
    /// The alphas' column order.
    pub primitives: Vec<Primitive>,
    /// Intermediate nodes per cell, from the alphas' row count; `None` if no epoch has alphas.
    pub steps: Option<usize>,
}

/// Everything the report shows, read from a run folder.
pub(crate) struct Run {
    pub name: String,
    pub search: Option<Search>,
    pub train: Option<Vec<TrainEpoch>>,
    /// The genotype to draw and where it came from.
    pub genotype: Option<(Genotype, String)>,
    pub config: Option<Value>,
    pub results: Option<Value>,
    pub warnings: Vec<String>,
}

impl Run {
    fn load(dir: &Path) -> Result<Run> {
        if !dir.is_dir() {
            return Err(Error::data(
                dir,
                "not a folder; give the folder written by a `darts search` or `darts train` run",
            ));
        }
        let (search_log, train_log) = (dir.join("search.jsonl"), dir.join("train.jsonl"));
        if !search_log.is_file() && !train_log.is_file() {
            return Err(Error::data(
                dir,
                "holds neither search.jsonl nor train.jsonl, so it is not a run folder; give \
                 the folder written by a `darts search` or `darts train` run",
            ));
        }
        let mut warnings = Vec::new();
        let config = read_json(&dir.join("config.json"), &mut warnings);
        let results = read_json(&dir.join("results.json"), &mut warnings);

        let search = if search_log.is_file() {
            let log = log::read::<SearchEpoch>(&search_log)?;
            warnings.extend(log.warnings);
            let primitives = primitives(config.as_ref(), &dir.join("config.json"))?;
            Some(Search::new(log.entries, primitives, &search_log)?)
        } else {
            None
        };
        let train = if train_log.is_file() {
            let log = log::read::<TrainEpoch>(&train_log)?;
            warnings.extend(log.warnings);
            Some(log.entries.into_iter().map(|e| e.1).collect())
        } else {
            None
        };

        let genotype_file = dir.join("genotype.json");
        let mut genotype = None;
        if genotype_file.is_file() {
            match Genotype::load(&genotype_file.to_string_lossy()) {
                Ok(g) => genotype = Some((g, "genotype.json".to_string())),
                Err(e) => warnings.push(format!("genotype.json could not be read: {e}")),
            }
        }
        if genotype.is_none() {
            let last = search.as_ref().and_then(|s| {
                let e = s.epochs.iter().rev().find(|e| e.genotype.is_some())?;
                Some((
                    e.genotype.clone()?,
                    format!("search.jsonl, epoch {}", e.epoch),
                ))
            });
            genotype = last;
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Run {
            name,
            search,
            train,
            genotype,
            config,
            results,
            warnings,
        })
    }
}

impl Search {
    /// Checks every epoch's alphas: one column per primitive, a row count that some number of
    /// steps gives (`steps (steps + 3) / 2`), the same for both cells and all epochs.
    fn new(
        entries: Vec<(usize, SearchEpoch)>,
        primitives: Vec<Primitive>,
        path: &Path,
    ) -> Result<Search> {
        let mut steps = None;
        for (line, e) in &entries {
            let cells = [
                ("alphas_normal", &e.alphas_normal),
                ("alphas_reduce", &e.alphas_reduce),
            ];
            for (field, rows) in cells {
                let Some(rows) = rows else { continue };
                let bad =
                    |msg: String| Err(Error::data(path, format!("line {line}: {field} {msg}")));
                if let Some(row) = rows.iter().find(|r| r.len() != primitives.len()) {
                    return bad(format!(
                        "has a row of {} weights, but the run searched {} primitives ({}); \
                         config.json's `primitives` gives the column order",
                        row.len(),
                        primitives.len(),
                        names(&primitives)
                    ));
                }
                let Some(s) = steps_for_edges(rows.len()) else {
                    return bad(format!(
                        "has {} rows; a cell with n intermediate nodes has n (n + 3) / 2 edges \
                         (14 for 4 nodes)",
                        rows.len()
                    ));
                };
                match steps {
                    Some(prev) if prev != s => {
                        return bad(format!(
                            "has {} rows ({s} nodes) but earlier alphas had {prev} nodes",
                            rows.len()
                        ))
                    }
                    _ => steps = Some(s),
                }
            }
        }
        Ok(Search {
            epochs: entries.into_iter().map(|e| e.1).collect(),
            primitives,
            steps,
        })
    }
}

/// The alpha column order: `config.json`'s `primitives` (an array of names, or one
/// comma-separated string), else the DARTS search space.
fn primitives(config: Option<&Value>, path: &Path) -> Result<Vec<Primitive>> {
    let Some(list) = config.and_then(|c| c.get("primitives")) else {
        return Ok(DARTS_PRIMITIVES.to_vec());
    };
    let text = match list {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let names = names
                .ok_or_else(|| Error::data(path, "`primitives` must list op names as strings"))?;
            names.join(",")
        }
        other => {
            return Err(Error::data(
                path,
                format!("`primitives` must be an array of op names, got {other}"),
            ))
        }
    };
    parse_primitive_list(&text).map_err(|e| Error::data(path, format!("`primitives`: {e}")))
}

fn names(primitives: &[Primitive]) -> String {
    primitives
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON file the report can do without: absent is fine, unreadable is a warning on the page.
fn read_json(path: &Path, warnings: &mut Vec<String>) -> Option<Value> {
    if !path.is_file() {
        return None;
    }
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("not valid JSON ({e})")));
    parsed
        .map_err(|e| warnings.push(format!("{}: {e}; left out", path.display())))
        .ok()
}
