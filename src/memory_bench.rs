//! `darts bench memory`: how close the memory check's estimate comes to what real runs use.
//! Each case is a `darts search` or `darts train` command line, run in this process for two
//! steps on the built-in dataset; the table puts its estimate beside the peak bytes of tensor
//! storage the run reached (on `--device cpu`, the only device measured here).

use clap::Parser;
use serde::Serialize;

use crate::cli::{search_config, train_config, BenchMemoryArgs, Cli, Command};
use crate::error::{Error, Result};
use crate::memory::{human, Estimate};

/// The cases: the built-in defaults, wider and deeper networks, both search orders, training
/// with and without the auxiliary head and drop-path. Two steps each (train: one step in each
/// of two epochs, so the second has drop-path on).
const CASES: [&str; 9] = [
    "search --channels 8 --layers 5 --batch-size 64",
    "search --channels 16 --layers 5 --batch-size 16",
    "search --channels 8 --layers 8 --batch-size 32",
    "search --channels 8 --layers 5 --batch-size 32 --order 2",
    "search --channels 16 --layers 3 --batch-size 16 --order 2",
    "train --channels 8 --layers 5 --batch-size 96",
    "train --channels 16 --layers 8 --batch-size 32",
    "train --channels 16 --layers 8 --batch-size 32 --auxiliary-weight 0",
    "train --channels 8 --layers 5 --batch-size 64 --drop-path 0",
];

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub command: String,
    pub estimate: Estimate,
    /// Peak bytes of tensor storage of the run.
    pub measured: f64,
    /// Estimate / measured.
    pub ratio: f64,
}

/// Runs one case (flags as on the command line) and returns its row.
pub fn measure(case: &str) -> Result<Row> {
    let short = if case.starts_with("search") {
        " --epochs 1 --max-steps 2"
    } else {
        " --epochs 2 --max-steps 1"
    };
    let line = format!("darts {case}{short}");
    let cli = Cli::try_parse_from(line.split_whitespace())
        .map_err(|e| Error::InvalidArgument(format!("{line}: {e}")))?;
    let (estimate, measured) = match cli.command {
        Command::Search(a) => {
            let r = crate::nas::search::run(search_config(&a)?, None, false)?;
            (r.memory_estimate, r.peak_memory)
        }
        Command::Train(a) => {
            let r = crate::train::run(train_config(&a)?, None, false)?;
            (r.memory_estimate, r.peak_memory)
        }
        _ => return Err(Error::InvalidArgument(format!("{case}: not a run"))),
    };
    let (Some(estimate), Some(measured)) = (estimate, measured) else {
        return Err(Error::InvalidArgument(format!(
            "{case}: no estimate or no measurement (is {} set?)",
            crate::memory::SKIP_ENV
        )));
    };
    Ok(Row {
        command: case.to_string(),
        ratio: estimate.total() / measured.max(1.0),
        estimate,
        measured,
    })
}

/// The CPU's name from `/proc/cpuinfo`, for the record.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The `darts bench memory` command: a Markdown table on stdout (or JSON with `--json`).
pub fn run_cli(a: &BenchMemoryArgs) -> Result<()> {
    let rows = CASES
        .iter()
        .map(|c| measure(c))
        .collect::<Result<Vec<_>>>()?;
    let cpu = cpu_model();
    if a.json {
        let threads = rayon::current_num_threads();
        let v = serde_json::json!({ "cpu": cpu, "threads": threads, "rows": rows });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{cpu}, {} threads; two steps per run on the built-in dataset (16×16)\n",
        rayon::current_num_threads()
    );
    println!("| command | estimate (weights + activations) | probe s | measured peak | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| `{}` | {} ({} + {}) | {:.2} | {} | {:.2} |",
            r.command,
            human(r.estimate.total()),
            human(r.estimate.weights),
            human(r.estimate.activations),
            r.estimate.probe_seconds,
            human(r.measured),
            r.ratio
        );
    }
    Ok(())
}
