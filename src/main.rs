//! The `darts` command-line tool.

fn main() {
    println!("darts {}", env!("CARGO_PKG_VERSION"));
}
