//! Search spaces as data: one skeleton (`skeleton.rs`) and, per space, which edges, ops and
//! blocks fill it (`darts.rs`, `nb201.rs`).

pub mod darts;
pub mod nb201;
pub mod skeleton;

use serde::{Deserialize, Serialize};

/// Which search space a run searches or trains in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// DARTS (Liu et al., 2019): 8 ops, cells of 4 nodes with 2 inputs each, reduction cells.
    #[default]
    Darts,
    /// NAS-Bench-201 (Dong & Yang, 2020): 5 ops, 6 edges, residual reduction blocks.
    Nb201,
}
