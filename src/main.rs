//! The `darts` command-line tool: parse, run, and turn any error into one line and exit code 1
//! (2 for a malformed command line).

fn main() {
    let (cli, matches) = match darts::cli::parse() {
        Ok(parsed) => parsed,
        // Help and version go to stdout as clap prints them; usage errors become one line.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = darts::cli::run(cli, &matches) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
