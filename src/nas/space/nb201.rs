//! The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): one 4-node cell with 6 edges, each
//! edge one of 5 operations, so 5^6 = 15,625 cells, all of them in the benchmark's table.

pub mod arch;

pub use arch::{Nb201Arch, Nb201Op, EDGES, NUM_CELLS};
