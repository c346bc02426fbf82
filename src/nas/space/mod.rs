//! Search spaces as data: one skeleton (`skeleton.rs`) and, per space, which edges, ops and
//! blocks fill it (`darts.rs`, `nb201.rs`).

pub mod darts;
pub mod nb201;
pub mod skeleton;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::nas::genotype::Genotype;
use crate::nas::primitives::DARTS_PRIMITIVES;
use crate::nas::supernet::DARTS_STEPS;
use nb201::Nb201Arch;

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

/// A found or given architecture: a DARTS genotype, or a NAS-Bench-201 cell. In JSON a genotype
/// is its object and a NAS-Bench-201 cell its benchmark string, so either reads back unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arch {
    Darts(Genotype),
    Nb201(Nb201Arch),
}

/// NAS-Bench-201's best CIFAR-10 cell (index 6111, 94.37 % test): `--space nb201`'s default.
pub const NB201_BEST: &str =
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";

impl Arch {
    /// Reads an architecture given on the command line: a NAS-Bench-201 string, a file holding
    /// one (as text or as a JSON string, e.g. a search's genotype.json), or what
    /// [`Genotype::load`] reads (a built-in DARTS name, a JSON or DARTS-text file).
    pub fn load(text: &str) -> Result<Arch> {
        fn nb201(s: &str) -> Option<&str> {
            let s = s.trim();
            s.starts_with('|').then_some(s)
        }
        if let Some(s) = nb201(text) {
            return Ok(Arch::Nb201(s.parse()?));
        }
        let path = std::path::Path::new(text);
        if path.is_file() {
            let body = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
            let json_string = serde_json::from_str::<String>(&body).ok();
            if let Some(s) = json_string.as_deref().and_then(nb201).or(nb201(&body)) {
                let arch = s
                    .parse()
                    .map_err(|e| crate::Error::data(path, format!("{e}")))?;
                return Ok(Arch::Nb201(arch));
            }
        }
        Ok(Arch::Darts(Genotype::load(text)?))
    }

    pub fn space(&self) -> Space {
        match self {
            Arch::Darts(_) => Space::Darts,
            Arch::Nb201(_) => Space::Nb201,
        }
    }

    /// Checks a genotype's shape (a NAS-Bench-201 cell is valid by construction).
    pub fn validate(&self) -> Result<()> {
        match self {
            Arch::Darts(g) => g.validate(g.normal.len() / 2),
            Arch::Nb201(_) => Ok(()),
        }
    }
}

/// The `--space` value: `darts` or `nb201`.
impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Space::Darts => "darts",
            Space::Nb201 => "nb201",
        })
    }
}

impl From<Genotype> for Arch {
    fn from(g: Genotype) -> Arch {
        Arch::Darts(g)
    }
}

impl From<Nb201Arch> for Arch {
    fn from(a: Nb201Arch) -> Arch {
        Arch::Nb201(a)
    }
}

/// The DARTS text form (`Genotype(normal=[...], ...)`) or the benchmark string.
impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::Darts(g) => g.fmt(f),
            Arch::Nb201(a) => a.fmt(f),
        }
    }
}

/// `count` architectures drawn uniformly from `space` with `seed`: DARTS genotypes of the
/// paper's 4-node cells over its primitives, or NAS-Bench-201 cells.
pub fn random_archs(space: Space, count: usize, seed: u64) -> Result<Vec<Arch>> {
    let mut rng = crate::rng(seed);
    (0..count)
        .map(|_| match space {
            Space::Darts => Ok(Genotype::random(DARTS_STEPS, &DARTS_PRIMITIVES, &mut rng)?.into()),
            Space::Nb201 => {
                let code = rng.random_range(0..nb201::NUM_CELLS);
                Ok(Arch::Nb201(
                    Nb201Arch::all().nth(code).expect("code < NUM_CELLS"),
                ))
            }
        })
        .collect()
}
