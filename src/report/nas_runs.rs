//! `darts report` on `darts nas` run folders: one page comparing strategies. Folders of the same
//! job kind (strategy, signal, test column, budget) pool their runs; each kind is one line, the
//! mean over runs of the best-so-far test accuracy after each query, in a ±1 std band, and one
//! row of the table of final accuracies.

use std::path::{Path, PathBuf};

use super::chart::{banded_chart, Band, Chart, Series};
use super::html::{page, section};
use super::svg::{document, esc};
use crate::error::{Error, Result};
use crate::nas::strategy::log::{read_config, CONFIG, LOG, RESULT};
use crate::nas::strategy::run::{curve_stats, mean_std, NasResult};

/// Line colours, one per strategy kind (cycled past eight).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#e6550d", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf",
];

/// Points drawn per line at most: a time-budgeted table run makes many thousands of queries,
/// and a best-so-far curve loses nothing visible when thinned evenly.
const MAX_POINTS: usize = 400;

/// Whether `dir` is a `darts nas` job folder (its config and query log).
pub fn is_nas_run(dir: &Path) -> bool {
    dir.join(CONFIG).is_file() && dir.join(LOG).is_file()
}

/// One strategy kind: its runs from every folder of that kind.
struct Group {
    label: String,
    folders: Vec<String>,
    test: String,
    budget: String,
    curves: Vec<Vec<f64>>,
    finals: Vec<f64>,
    best: (f64, String, f64),
}

/// A finished job's result; errors say what the folder lacks and what to run.
fn load(dir: &Path) -> Result<NasResult> {
    if !is_nas_run(dir) {
        return Err(Error::data(
            dir,
            "is not a `darts nas` run folder (no config.json and queries.jsonl); give folders \
             written by `darts nas --out`",
        ));
    }
    read_config(dir)?;
    let path = dir.join(RESULT);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::data(
            dir,
            format!(
                "has no {RESULT}: the job has not finished; finish it with `darts nas --resume {}`",
                dir.display()
            ),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::data(&path, format!("bad nas result: {e}")))
}

fn budget_text(r: &NasResult) -> String {
    match r.time {
        Some(t) => format!("{t} s per run"),
        None => format!("{} queries per run", r.budget.unwrap_or(0)),
    }
}

/// The runs of `dirs` grouped by job kind, in the order the kinds first appear.
fn groups(dirs: &[PathBuf]) -> Result<Vec<Group>> {
    let mut out: Vec<(String, Group)> = Vec::new();
    for dir in dirs {
        let r = load(dir)?;
        let budget = budget_text(&r);
        let key = format!("{}|{}|{}|{budget}", r.strategy, r.signal, r.test);
        let name = dir.display().to_string();
        let i = match out.iter().position(|g| g.0 == key) {
            Some(i) => i,
            None => {
                out.push((
                    key,
                    Group {
                        label: r.strategy.to_string(),
                        folders: Vec::new(),
                        test: r.test.clone(),
                        budget,
                        curves: Vec::new(),
                        finals: Vec::new(),
                        best: (f64::NEG_INFINITY, String::new(), f64::NAN),
                    },
                ));
                out.len() - 1
            }
        };
        let g = &mut out[i].1;
        g.folders.push(name);
        for run in r.per_run {
            if run.best_signal > g.best.0 {
                g.best = (run.best_signal, run.best_arch.clone(), run.test_accuracy);
            }
            g.finals.push(run.test_accuracy);
            g.curves.push(run.curve);
        }
    }
    let mut groups: Vec<Group> = out.into_iter().map(|g| g.1).collect();
    let labels = labels(&groups);
    for (g, label) in groups.iter_mut().zip(labels) {
        g.label = label;
    }
    Ok(groups)
}

/// Each group's label: its strategy, and when another group shares the strategy (another
/// signal or budget), its first folder and budget.
fn labels(groups: &[Group]) -> Vec<String> {
    groups
        .iter()
        .map(|g| {
            let shared = groups.iter().filter(|o| o.label == g.label).count() > 1;
            if shared {
                format!("{} ({}, {})", g.label, g.folders[0], g.budget)
            } else {
                g.label.clone()
            }
        })
        .collect()
}

/// Every `step`-th query (1-based) and the last, so a long curve draws in few points.
fn thinned(len: usize) -> Vec<usize> {
    let step = len.div_ceil(MAX_POINTS).max(1);
    let mut qs: Vec<usize> = (1..=len).step_by(step).collect();
    if qs.last() != Some(&len) && len > 0 {
        qs.push(len);
    }
    qs
}

fn chart(groups: &[Group]) -> String {
    let mut series = Vec::new();
    let mut bands = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let curves: Vec<&[f64]> = g.curves.iter().map(Vec::as_slice).collect();
        let stats = curve_stats(&curves);
        let qs = thinned(stats.len());
        series.push(Series {
            name: format!("{} ({} runs)", g.label, g.curves.len()),
            colour,
            points: qs.iter().map(|&q| (q as f64, stats[q - 1].0)).collect(),
            dashed: false,
        });
        bands.push(Band {
            colour,
            points: qs
                .iter()
                .map(|&q| {
                    let (m, s) = stats[q - 1];
                    (q as f64, m - s, m + s)
                })
                .collect(),
        });
    }
    let tests: Vec<&str> = groups.iter().map(|g| g.test.as_str()).collect();
    let y_label = if tests.windows(2).all(|w| w[0] == w[1]) {
        format!("{} of the best-by-signal arch (%)", tests[0])
    } else {
        "test accuracy of the best-by-signal arch (%)".into()
    };
    let c = Chart {
        title: "best so far: mean over runs, ±1 std",
        x_label: "queries",
        y_label: &y_label,
        width: 860.0,
        height: 440.0,
        y_range: None,
        legend: true,
        frame: None,
        font: 13.0,
    };
    document(c.width, c.height, &banded_chart(&c, &series, &bands))
}

fn table(groups: &[Group]) -> String {
    let mut rows = String::new();
    for g in groups {
        let (mean, std) = mean_std(&g.finals);
        let queries: Vec<f64> = g.curves.iter().map(|c| c.len() as f64).collect();
        rows += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td><b>{mean:.2} ± {std:.2}</b></td>\
             <td>{:.2}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&g.label),
            esc(&g.budget),
            g.finals.len(),
            mean_std(&queries).0,
            g.best.2,
            esc(&g.best.1),
            esc(&g.folders.join(", "))
        );
    }
    format!(
        "<table><tr><th>strategy</th><th>budget</th><th>runs</th><th>queries per run (mean)</th>\
         <th>final accuracy (%), mean ± std</th><th>best arch by signal: test %</th><th>that arch</th>\
         <th>folders</th></tr>{rows}</table>\
         <p class=\"note\">Each run's final number is the test accuracy of its best arch by the \
         search signal; std is over runs (population). A run that made fewer queries, under a \
         time budget, holds its last value in the curve.</p>"
    )
}

/// The comparison page of the `darts nas` folders `dirs`.
pub fn render(dirs: &[PathBuf]) -> Result<String> {
    let groups = groups(dirs)?;
    let title = format!("NAS strategies ({} folders)", dirs.len());
    let body = format!(
        "<h1>darts report: {}</h1><p class=\"sub\">{}</p>{}{}",
        esc(&title),
        esc(&dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")),
        section("Best-so-far accuracy", &chart(&groups)),
        section("Final accuracy per strategy", &table(&groups)),
    );
    Ok(page(&title, &body))
}
