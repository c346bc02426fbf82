//! The candidate operations of the DARTS and NAS-Bench-201 search spaces, named exactly as in
//! their reference code (`genotypes.py`, NB201's `cell_operations.py`), so genotypes, arch
//! strings and primitive lists move between them and us unchanged.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One candidate operation on an edge of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Primitive {
    /// The zero op: the edge is absent. Searched over, but never kept in a derived genotype.
    #[serde(rename = "none")]
    None,
    #[serde(rename = "max_pool_3x3")]
    MaxPool3x3,
    #[serde(rename = "avg_pool_3x3")]
    AvgPool3x3,
    /// Identity, or a factorized reduce on a stride-2 edge.
    #[serde(rename = "skip_connect")]
    SkipConnect,
    #[serde(rename = "sep_conv_3x3")]
    SepConv3x3,
    #[serde(rename = "sep_conv_5x5")]
    SepConv5x5,
    #[serde(rename = "dil_conv_3x3")]
    DilConv3x3,
    #[serde(rename = "dil_conv_5x5")]
    DilConv5x5,
    /// NAS-Bench-201's ReLU → 1×1 conv → BN.
    #[serde(rename = "nor_conv_1x1")]
    NorConv1x1,
    /// NAS-Bench-201's ReLU → 3×3 conv → BN.
    #[serde(rename = "nor_conv_3x3")]
    NorConv3x3,
}

/// The DARTS search space in the paper's order; this order is the column order of the alphas.
pub const DARTS_PRIMITIVES: [Primitive; 8] = [
    Primitive::None,
    Primitive::MaxPool3x3,
    Primitive::AvgPool3x3,
    Primitive::SkipConnect,
    Primitive::SepConv3x3,
    Primitive::SepConv5x5,
    Primitive::DilConv3x3,
    Primitive::DilConv5x5,
];

/// The NAS-Bench-201 cell operations in the benchmark's order (the alpha column order there).
pub const NB201_PRIMITIVES: [Primitive; 5] = [
    Primitive::None,
    Primitive::SkipConnect,
    Primitive::NorConv1x1,
    Primitive::NorConv3x3,
    Primitive::AvgPool3x3,
];

/// Every primitive, for parsing names: the DARTS ones, then NAS-Bench-201's convs.
fn all() -> impl Iterator<Item = Primitive> {
    DARTS_PRIMITIVES
        .into_iter()
        .chain([Primitive::NorConv1x1, Primitive::NorConv3x3])
}

impl Primitive {
    /// The name used by the DARTS reference code, e.g. `"sep_conv_3x3"`.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::None => "none",
            Primitive::MaxPool3x3 => "max_pool_3x3",
            Primitive::AvgPool3x3 => "avg_pool_3x3",
            Primitive::SkipConnect => "skip_connect",
            Primitive::SepConv3x3 => "sep_conv_3x3",
            Primitive::SepConv5x5 => "sep_conv_5x5",
            Primitive::DilConv3x3 => "dil_conv_3x3",
            Primitive::DilConv5x5 => "dil_conv_5x5",
            Primitive::NorConv1x1 => "nor_conv_1x1",
            Primitive::NorConv3x3 => "nor_conv_3x3",
        }
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Primitive {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        all().find(|p| p.name() == s).ok_or_else(|| {
            let valid: Vec<_> = all().map(|p| p.name()).collect();
            Error::InvalidArgument(format!(
                "unknown primitive '{s}'; valid names: {}",
                valid.join(", ")
            ))
        })
    }
}

/// Parses a comma-separated search space such as `"sep_conv_3x3, skip_connect, none"`.
///
/// The order is kept: it is the column order of the alphas. Unknown names, duplicates (which
/// would make two alpha columns mean the same op) and an empty list are errors.
pub fn parse_primitive_list(text: &str) -> Result<Vec<Primitive>> {
    if text.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "empty primitive list; give comma-separated names such as 'sep_conv_3x3,skip_connect'"
                .into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut list = Vec::new();
    for (i, name) in text.split(',').map(str::trim).enumerate() {
        if name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "primitive list '{text}': entry {} is empty",
                i + 1
            )));
        }
        let p: Primitive = name.parse()?;
        if !seen.insert(p) {
            return Err(Error::InvalidArgument(format!(
                "primitive list '{text}': '{name}' appears more than once"
            )));
        }
        list.push(p);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for p in all() {
            assert_eq!(p.name().parse::<Primitive>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Primitive>(&json).unwrap(), p);
        }
    }

    #[test]
    fn paper_order() {
        let names: Vec<_> = DARTS_PRIMITIVES.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "none",
                "max_pool_3x3",
                "avg_pool_3x3",
                "skip_connect",
                "sep_conv_3x3",
                "sep_conv_5x5",
                "dil_conv_3x3",
                "dil_conv_5x5"
            ]
        );
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let msg = "sep_conv_7x7".parse::<Primitive>().unwrap_err().to_string();
        assert!(msg.contains("unknown primitive 'sep_conv_7x7'"), "{msg}");
        assert!(msg.contains("none, max_pool_3x3,"), "{msg}");
        assert!(msg.contains("dil_conv_5x5"), "{msg}");
    }

    #[test]
    fn primitive_list() {
        assert_eq!(
            parse_primitive_list(" sep_conv_3x3 ,skip_connect,\tnone ").unwrap(),
            [
                Primitive::SepConv3x3,
                Primitive::SkipConnect,
                Primitive::None
            ]
        );
        let err = |s| parse_primitive_list(s).unwrap_err().to_string();
        assert!(err("  ").contains("empty primitive list"));
        assert!(err("none,,skip_connect").contains("entry 2 is empty"));
        assert!(err("none,conv_1x1").contains("unknown primitive 'conv_1x1'"));
        assert!(err("none,skip_connect,none").contains("'none' appears more than once"));
    }
}
