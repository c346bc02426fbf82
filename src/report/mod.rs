//! `darts report`: one self-contained HTML page (inline CSS and SVG, no JavaScript) for a search
//! or training run folder, or comparing the strategies of `darts nas` folders
//! ([`nas_report_html`]), and the genotype drawings it uses.
//!
//! A search folder holds `search.jsonl` (one JSON object per epoch: metrics, softmaxed alphas,
//! the genotype derived so far), `config.json` and `genotype.json`; a training folder holds
//! `train.jsonl`, `genotype.json` and maybe `results.json`. The page shows the run's final
//! numbers, the cells as graphs, the final alphas as heatmaps, how the alphas moved, and the
//! loss, accuracy and learning-rate curves. Runs in either search space read: a DARTS genotype
//! has a normal and a reduction cell and is logged as an object; a NAS-Bench-201 cell is one
//! 4-node DAG, logged as its benchmark string, with one 6-row alpha matrix.

mod alphas;
mod cell;
mod chart;
mod edges;
mod html;
mod layout;
mod log;
mod nas_runs;
mod nb201;
mod svg;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use cell::{cell_svg, genotype_svg};
pub use nb201::{nb201_cell_svg, nb201_svg};

use crate::error::{Error, Result};
use crate::nas::primitives::{parse_primitive_list, Primitive, DARTS_PRIMITIVES, NB201_PRIMITIVES};
use crate::nas::space::nb201::EDGES;
use crate::nas::space::{Arch, Space};
use edges::Edges;
use log::{SearchEpoch, TrainEpoch};

pub use nas_runs::is_nas_run;

/// Writes the report on `runs` to `out` (see [`write_html`]): the page of one search or
/// training run ([`report_html`]), or the comparison of one or more `darts nas` folders
/// ([`nas_report_html`]).
pub fn write_reports(runs: &[PathBuf], out: &Path) -> Result<()> {
    match runs {
        [one] if !is_nas_run(one) => write_report(one, out),
        _ => write_html(&nas_report_html(runs)?, out),
    }
}

/// Writes the report on the run in `run_dir` to `out` (see [`write_html`] and [`report_html`]).
pub fn write_report(run_dir: &Path, out: &Path) -> Result<()> {
    write_html(&report_html(run_dir)?, out)
}

/// Writes `html` to `out`, creating `out`'s folder if needed.
fn write_html(html: &str, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(out, html).map_err(|e| Error::io(out, e))
}

/// The comparison of the `darts nas` folders `runs` as one self-contained HTML document: per
/// strategy, the mean best-so-far test accuracy over runs against queries in a ±1 std band, and
/// a table of final accuracies. A folder that is not a finished `darts nas` job is an
/// [`Error::Data`] that says so.
pub fn nas_report_html(runs: &[PathBuf]) -> Result<String> {
    if runs.is_empty() {
        return Err(Error::InvalidArgument(
            "give at least one run folder".into(),
        ));
    }
    nas_runs::render(runs)
}

/// The report on the run in `run_dir` as one self-contained HTML document.
///
/// A folder with neither `search.jsonl` nor `train.jsonl` is an [`Error::Data`]; so is a log
/// line that is not valid JSON, except a cut-short last line (a killed run), which is left out
/// with a warning shown on the page. Alphas whose shape does not fit the run's primitives (from
/// `config.json`, else those of its search space) or its cell are an error naming the line.
pub fn report_html(run_dir: &Path) -> Result<String> {
    Ok(html::render(&Run::load(run_dir)?))
}

/// An architecture drawn as one self-contained SVG document: both cells of a DARTS genotype
/// ([`genotype_svg`]) or the NAS-Bench-201 cell ([`nb201_svg`]), above a legend of their ops.
/// An invalid genotype is an error as for [`cell_svg`].
pub fn arch_svg(arch: &Arch) -> Result<String> {
    match arch {
        Arch::Darts(g) => genotype_svg(g),
        Arch::Nb201(a) => Ok(nb201_svg(a)),
    }
}

/// A search log whose alphas have been checked against the primitives and the search space.
pub(crate) struct Search {
    pub epochs: Vec<SearchEpoch>,
    /// The alphas' column order.
    pub primitives: Vec<Primitive>,
    /// The edges the alpha rows weigh (for DARTS, the node count comes from the row count);
    /// `None` if no epoch has alphas.
    pub edges: Option<Edges>,
}

/// Everything the report shows, read from a run folder.
pub(crate) struct Run {
    pub name: String,
    pub search: Option<Search>,
    pub train: Option<Vec<TrainEpoch>>,
    /// The architecture to draw and where it came from.
    pub genotype: Option<(Arch, String)>,
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
                 the folder written by a `darts search`, `darts train` or `darts nas` run",
            ));
        }
        let mut warnings = Vec::new();
        let config = read_json(&dir.join("config.json"), &mut warnings);
        let results = read_json(&dir.join("results.json"), &mut warnings);

        let search = if search_log.is_file() {
            let log = log::read::<SearchEpoch>(&search_log)?;
            warnings.extend(log.warnings);
            let config_file = dir.join("config.json");
            let space = space(config.as_ref(), &log.entries, &config_file)?;
            let primitives = primitives(config.as_ref(), space, &config_file)?;
            Some(Search::new(log.entries, primitives, space, &search_log)?)
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
            match Arch::load(&genotype_file.to_string_lossy()) {
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
    /// Checks every epoch's alphas: one column per primitive; for DARTS a row count that some
    /// number of steps gives (`steps (steps + 3) / 2`), the same for both cells and all epochs;
    /// for NAS-Bench-201 a row per edge of its cell and no reduction cell.
    fn new(
        entries: Vec<(usize, SearchEpoch)>,
        primitives: Vec<Primitive>,
        space: Space,
        path: &Path,
    ) -> Result<Search> {
        let mut edges = None;
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
                if space == Space::Nb201 {
                    if field == "alphas_reduce" {
                        return bad("is logged, but a NAS-Bench-201 search has no reduction \
                                    cell; config.json's `space` says nb201"
                            .into());
                    }
                    if rows.len() != EDGES.len() {
                        return bad(format!(
                            "has {} rows, but the NAS-Bench-201 cell has {} edges",
                            rows.len(),
                            EDGES.len()
                        ));
                    }
                    edges = Some(Edges::Nb201);
                    continue;
                }
                let Some(Edges::Darts(s)) = Edges::darts(rows.len()) else {
                    return bad(format!(
                        "has {} rows; a cell with n intermediate nodes has n (n + 3) / 2 edges \
                         (14 for 4 nodes)",
                        rows.len()
                    ));
                };
                match edges {
                    Some(Edges::Darts(prev)) if prev != s => {
                        return bad(format!(
                            "has {} rows ({s} nodes) but earlier alphas had {prev} nodes",
                            rows.len()
                        ))
                    }
                    _ => edges = Some(Edges::Darts(s)),
                }
            }
        }
        Ok(Search {
            epochs: entries.into_iter().map(|e| e.1).collect(),
            primitives,
            edges,
        })
    }
}

/// The search space of a search run: `config.json`'s `space`, else that of the architectures
/// the log holds (an older run's config has no `space`), else DARTS.
fn space(config: Option<&Value>, entries: &[(usize, SearchEpoch)], path: &Path) -> Result<Space> {
    if let Some(space) = config.and_then(|c| c.get("space")) {
        return serde_json::from_value(space.clone())
            .map_err(|e| Error::data(path, format!("`space`: {e}")));
    }
    let logged = entries.iter().rev().find_map(|e| e.1.genotype.as_ref());
    Ok(logged.map_or(Space::Darts, Arch::space))
}

/// The alpha column order: `config.json`'s `primitives` (an array of names, or one
/// comma-separated string), else the search space's.
fn primitives(config: Option<&Value>, space: Space, path: &Path) -> Result<Vec<Primitive>> {
    let Some(list) = config.and_then(|c| c.get("primitives")) else {
        return Ok(match space {
            Space::Darts => DARTS_PRIMITIVES.to_vec(),
            Space::Nb201 => NB201_PRIMITIVES.to_vec(),
        });
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
