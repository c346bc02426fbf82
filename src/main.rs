//! The `darts` command-line tool: parse, run, and turn any error into one line and exit code 1.

use clap::Parser;

fn main() {
    let cli = darts::cli::Cli::parse();
    if let Err(e) = darts::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
