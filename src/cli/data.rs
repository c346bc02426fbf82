//! `darts data fetch` and `darts nb201 lookup`: getting datasets and reading the benchmark table.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::print_json;
use crate::data::fetch::{self, FetchName};
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a dataset's official files into the datasets folder, check their published
    /// checksums, and unpack tarballs where `--dataset` looks; files already there and verified
    /// are not downloaded again.
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[arg(value_enum)]
    pub name: FetchName,
    /// The datasets folder to fill, created if missing (default: $DARTS_DATA_DIR, else
    /// ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download from this base URL instead of the official sources: it must serve the same
    /// files as `<URL>/<NAME>/<file>`, e.g. `<URL>/mnist/train-images-idx3-ubyte.gz` or
    /// `<URL>/cifar10/cifar-10-binary.tar.gz` [env: DARTS_DATA_MIRROR].
    #[arg(long)]
    pub mirror: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Nb201Command {
    /// Print a cell's row of the NAS-Bench-201 table (accuracies in %, params, FLOPs) and its
    /// ranks by cifar10_test and cifar10_valid.
    Lookup(Nb201LookupArgs),
}

#[derive(Args, Debug)]
pub struct Nb201LookupArgs {
    /// An arch index (0..=15624), or an arch string such as
    /// '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'.
    pub arch: String,
    /// The table (default: $DARTS_DATA_DIR/nb201/nb201.csv, else ../shared/datasets/nb201/nb201.csv).
    #[arg(long)]
    pub benchmark: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run_fetch(a: FetchArgs) -> Result<()> {
    let root = crate::data::data_dir_to_fill(a.data_dir.as_deref())?;
    let from_env = std::env::var(fetch::MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty());
    let mirror = a.mirror.or(from_env);
    let report = fetch::fetch(&fetch::official(a.name), &root, mirror.as_deref())?;
    if a.json {
        return print_json(&report);
    }
    for f in &report.files {
        let status = match f.status {
            fetch::Status::Downloaded => "downloaded",
            fetch::Status::AlreadyPresent => "present",
        };
        println!(
            "{status:<10} {}  {}",
            f.sha256,
            report.folder.join(&f.name).display()
        );
    }
    Ok(())
}
