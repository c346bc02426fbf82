//! `darts genotype`: draw random architectures, print or draw one.

use std::path::PathBuf;

use clap::Subcommand;

use super::print_json;
use crate::error::{Error, Result};
use crate::nas::space::nb201::EDGES;
use crate::nas::space::{Arch, Space};

#[derive(Subcommand, Debug)]
pub enum GenotypeCommand {
    /// Draw architectures uniformly at random from a space, one per line: the random baseline
    /// that a search has to beat (DARTS: 4-node cells over the 7 ops besides none, two distinct
    /// inputs per node; nb201: one of the 15,625 cells).
    Random {
        #[arg(long, value_enum, default_value_t = Space::Darts)]
        space: Space,
        /// How many to draw.
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write each as DIR/random-<i>.json, which `darts train --genotype` (or `--arch`)
        /// reads.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print {"archs": [...]} as the last stdout line.
        #[arg(long)]
        json: bool,
    },
    /// Print an architecture: a DARTS genotype or a NAS-Bench-201 cell.
    ///
    /// A DARTS genotype is a built-in name such as DARTS_V2, or a JSON / DARTS-text file; a
    /// NAS-Bench-201 cell is its `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` string, or a file
    /// holding one (e.g. an nb201 search's genotype.json), and prints with one line per edge.
    Show {
        /// The genotype or NAS-Bench-201 cell.
        genotype: String,
        /// Also draw it into this SVG file (both DARTS cells, or the NAS-Bench-201 DAG).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print it as JSON (a genotype object, or the NAS-Bench-201 string).
        #[arg(long)]
        json: bool,
    },
}

/// Runs `darts genotype SUB`.
pub(super) fn run(cmd: GenotypeCommand) -> Result<()> {
    match cmd {
        GenotypeCommand::Random {
            space,
            count,
            seed,
            out,
            json,
        } => random(space, count, seed, out, json),
        GenotypeCommand::Show {
            genotype,
            svg,
            json,
        } => show(&genotype, svg, json),
    }
}

fn random(space: Space, count: usize, seed: u64, out: Option<PathBuf>, json: bool) -> Result<()> {
    crate::validate::count("count", count)?;
    let archs = crate::nas::space::random_archs(space, count, seed)?;
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    for (i, arch) in archs.iter().enumerate() {
        println!("{arch}");
        if let Some(dir) = &out {
            let text = serde_json::to_string_pretty(arch)
                .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
            let path = dir.join(format!("random-{i}.json"));
            crate::checkpoint::write_atomic(&path, text.as_bytes())?;
        }
    }
    if json {
        print_json(&serde_json::json!({ "archs": archs }))?;
    }
    Ok(())
}

fn show(genotype: &str, svg: Option<PathBuf>, json: bool) -> Result<()> {
    let arch = Arch::load(genotype)?;
    arch.validate()?;
    if let Some(path) = svg {
        crate::checkpoint::write_atomic(&path, crate::report::arch_svg(&arch)?.as_bytes())?;
    }
    if json {
        return print_json(&arch);
    }
    println!("{arch}");
    if let Arch::Nb201(a) = arch {
        for (&(from, to), op) in EDGES.iter().zip(a.ops) {
            println!("  {to}←{from}  {op}");
        }
    }
    Ok(())
}
