//! A NAS-Bench-201 cell as a value, and the benchmark's own string format both ways:
//! `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`
//! lists, for nodes 1, 2 and 3 in turn, each input `i` of that node as `op~i`; nodes are joined
//! by `+`. Node 0 is the cell's input, node 3 its output (the sum of its three edges).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One edge's operation, in the NB201 search-space order (which is also the alpha column order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Nb201Op {
    /// The zero operation: the edge is absent.
    None,
    SkipConnect,
    /// ReLU, 1×1 conv, BN.
    NorConv1x1,
    /// ReLU, 3×3 conv, BN.
    NorConv3x3,
    AvgPool3x3,
}

impl Nb201Op {
    /// All five, in the search-space order.
    pub const ALL: [Nb201Op; 5] = [
        Nb201Op::None,
        Nb201Op::SkipConnect,
        Nb201Op::NorConv1x1,
        Nb201Op::NorConv3x3,
        Nb201Op::AvgPool3x3,
    ];

    /// The benchmark's name, e.g. `nor_conv_3x3`.
    pub fn name(self) -> &'static str {
        match self {
            Nb201Op::None => "none",
            Nb201Op::SkipConnect => "skip_connect",
            Nb201Op::NorConv1x1 => "nor_conv_1x1",
            Nb201Op::NorConv3x3 => "nor_conv_3x3",
            Nb201Op::AvgPool3x3 => "avg_pool_3x3",
        }
    }

    /// Position in [`Nb201Op::ALL`] (the op's alpha column).
    pub fn index(self) -> usize {
        self as usize
    }
}

fn op_names() -> String {
    Nb201Op::ALL.map(Nb201Op::name).join(", ")
}

impl fmt::Display for Nb201Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nb201Op {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Nb201Op::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown NB201 op `{s}`; expected one of {}",
                    op_names()
                ))
            })
    }
}

impl TryFrom<String> for Nb201Op {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Nb201Op> for String {
    fn from(op: Nb201Op) -> String {
        op.name().to_string()
    }
}

/// The cell's edges as (from, to) node pairs, in the benchmark's order: node 1's input, node
/// 2's two inputs, node 3's three inputs. `Nb201Arch::ops[e]` is the op on `EDGES[e]`.
pub const EDGES: [(usize, usize); 6] = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)];

/// Cells in the space: 5 ops on each of 6 edges.
pub const NUM_CELLS: usize = 15_625;

/// "1 node", "2 nodes".
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// Position in [`EDGES`] of the edge `from → to` (edges are grouped by target node, 1 then 2
/// then 3, and by source within a group).
const fn edge_index(from: usize, to: usize) -> usize {
    to * (to - 1) / 2 + from
}

/// The form an arch string must have, quoted in every parse error.
const EXPECTED_FORM: &str = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|";

/// A NAS-Bench-201 cell: the op on each edge of [`EDGES`]. Serialises as the benchmark string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nb201Arch {
    pub ops: [Nb201Op; 6],
}

impl Nb201Arch {
    /// The (from, to) node pair of each edge, in the order of `ops`.
    pub fn edges() -> [(usize, usize); 6] {
        EDGES
    }

    /// The same op on every edge.
    pub fn uniform(op: Nb201Op) -> Self {
        Nb201Arch { ops: [op; 6] }
    }

    /// Every cell of the space, each once: all [`NUM_CELLS`] of them, counting edge 0's op
    /// slowest (so the order is lexicographic in [`Nb201Op::ALL`]'s order, not the table's index).
    pub fn all() -> impl ExactSizeIterator<Item = Nb201Arch> {
        (0..NUM_CELLS).map(|mut code| {
            let mut ops = [Nb201Op::None; 6];
            for op in ops.iter_mut().rev() {
                *op = Nb201Op::ALL[code % 5];
                code /= 5;
            }
            Nb201Arch { ops }
        })
    }

    /// The op on the edge from node `from` into node `to`, if the cell has that edge.
    pub fn op(&self, from: usize, to: usize) -> Option<Nb201Op> {
        (from < to && to <= 3).then(|| self.ops[edge_index(from, to)])
    }

    /// Whether the output (node 3) depends on the input (node 0) through non-`none` edges; a
    /// cell that is not connected outputs zeros whatever its input, so a strategy can skip it.
    pub fn is_connected(&self) -> bool {
        // EDGES is in topological order of the target node, so one pass settles every node.
        let mut reached = [true, false, false, false];
        for (&(from, to), &op) in EDGES.iter().zip(&self.ops) {
            if op != Nb201Op::None && reached[from] {
                reached[to] = true;
            }
        }
        reached[3]
    }

    /// The 24 cells that differ from this one on exactly one edge (the mutations of regularised
    /// evolution and of local search).
    pub fn neighbours(&self) -> Vec<Nb201Arch> {
        let mut out = Vec::with_capacity(24);
        for e in 0..6 {
            for op in Nb201Op::ALL {
                if op != self.ops[e] {
                    let mut next = *self;
                    next.ops[e] = op;
                    out.push(next);
                }
            }
        }
        out
    }
}

impl fmt::Display for Nb201Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for node in 1..=3 {
            if node > 1 {
                f.write_str("+")?;
            }
            for input in 0..node {
                write!(f, "|{}~{input}", self.ops[edge_index(input, node)])?;
            }
            f.write_str("|")?;
        }
        Ok(())
    }
}

impl FromStr for Nb201Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: String| {
            Error::InvalidArgument(format!(
                "NB201 arch `{s}`: {what}; expected the form {EXPECTED_FORM} with each op one \
                 of {}",
                op_names()
            ))
        };
        let nodes: Vec<&str> = s.split('+').collect();
        if nodes.len() != 3 {
            return Err(bad(format!(
                "{} separated by `+`, expected 3",
                count(nodes.len(), "node")
            )));
        }
        let mut ops = [Nb201Op::None; 6];
        for (node, text) in (1..=3).zip(nodes) {
            let inner = text
                .strip_prefix('|')
                .and_then(|t| t.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node {node} `{text}` must start and end with `|`")))?;
            let inputs: Vec<&str> = inner.split('|').collect();
            if inputs.len() != node {
                return Err(bad(format!(
                    "node {node} has {}, expected {node}",
                    count(inputs.len(), "input")
                )));
            }
            for (i, input) in inputs.into_iter().enumerate() {
                let (name, from) = input
                    .split_once('~')
                    .ok_or_else(|| bad(format!("node {node} input `{input}` has no `~`")))?;
                if from != i.to_string() {
                    return Err(bad(format!(
                        "node {node} input `{input}` comes from `{from}`, expected {i}"
                    )));
                }
                let op = name
                    .parse::<Nb201Op>()
                    .map_err(|_| bad(format!("unknown op `{name}` in node {node}")))?;
                ops[edge_index(i, node)] = op;
            }
        }
        // Three nodes with 1, 2 and 3 inputs each set one edge: all six are set.
        Ok(Nb201Arch { ops })
    }
}

impl TryFrom<String> for Nb201Arch {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Nb201Arch> for String {
    fn from(arch: Nb201Arch) -> String {
        arch.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const BEST: &str =
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";

    #[test]
    fn parses_and_prints_the_benchmark_string() {
        let arch: Nb201Arch = BEST.parse().unwrap();
        use Nb201Op::*;
        assert_eq!(
            arch.ops,
            [
                NorConv3x3,
                NorConv3x3,
                NorConv3x3,
                SkipConnect,
                NorConv3x3,
                NorConv1x1
            ]
        );
        assert_eq!(arch.op(2, 3), Some(NorConv1x1));
        assert_eq!(arch.op(0, 3), Some(SkipConnect));
        assert_eq!(arch.op(3, 0), Option::None);
        assert_eq!(arch.to_string(), BEST);
        assert_eq!(Nb201Arch::edges()[2], (1, 2));
        for (e, &(from, to)) in EDGES.iter().enumerate() {
            assert_eq!(edge_index(from, to), e);
        }
    }

    #[test]
    fn serde_is_the_string() {
        let arch: Nb201Arch = BEST.parse().unwrap();
        let json = serde_json::to_string(&arch).unwrap();
        assert_eq!(json, format!("\"{BEST}\""));
        assert_eq!(serde_json::from_str::<Nb201Arch>(&json).unwrap(), arch);
        assert_eq!(
            serde_json::to_string(&Nb201Op::AvgPool3x3).unwrap(),
            "\"avg_pool_3x3\""
        );
        let err = serde_json::from_str::<Nb201Arch>("\"|none~0|\"").unwrap_err();
        assert!(err.to_string().contains("1 node separated"), "{err}");
    }

    #[test]
    fn op_order_is_the_search_space_order() {
        let names = Nb201Op::ALL.map(Nb201Op::name);
        let want = [
            "none",
            "skip_connect",
            "nor_conv_1x1",
            "nor_conv_3x3",
            "avg_pool_3x3",
        ];
        assert_eq!(names, want);
        for (i, op) in Nb201Op::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(op.name().parse::<Nb201Op>().unwrap(), op);
            // `Primitive::from` indexes NB201_PRIMITIVES (the supernet's alpha columns) by
            // position: the two lists must name the same op at each position.
            let primitive = crate::nas::primitives::Primitive::from(op);
            assert_eq!(primitive.name(), op.name());
        }
    }

    #[test]
    fn malformed_strings_say_what_is_wrong() {
        let cases = [
            ("|none~0|+|none~0|none~1|", "2 nodes separated by `+`"),
            (
                "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|",
                "4 nodes",
            ),
            ("", "1 node separated"),
            (
                "|none~0|+|none~0|+|none~0|none~1|none~2|",
                "node 2 has 1 input, expected 2",
            ),
            (
                "|none~0|+|none~0|none~2|+|none~0|none~1|none~2|",
                "node 2 input `none~2` comes from `2`, expected 1",
            ),
            (
                "|none~0|+|none~0|none~1|+|none~0|none~1|none~02|",
                "comes from `02`, expected 2",
            ),
            (
                "|none~0|+|none~0|conv_3x3~1|+|none~0|none~1|none~2|",
                "unknown op `conv_3x3` in node 2",
            ),
            (
                "|none~0|+|none~0|none1|+|none~0|none~1|none~2|",
                "node 2 input `none1` has no `~`",
            ),
            (
                "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "node 1 `none~0|` must start and end with `|`",
            ),
        ];
        for (s, want) in cases {
            let err = s.parse::<Nb201Arch>().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(want), "{s}: {msg}");
            assert!(msg.contains(EXPECTED_FORM), "{msg}");
            assert!(msg.contains("avg_pool_3x3"), "{msg}");
        }
    }

    #[test]
    fn enumeration_is_the_whole_space_once() {
        let all: Vec<Nb201Arch> = Nb201Arch::all().collect();
        assert_eq!(all.len(), NUM_CELLS);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), NUM_CELLS);
        assert_eq!(all[0], Nb201Arch::uniform(Nb201Op::None));
        assert_eq!(all[NUM_CELLS - 1], Nb201Arch::uniform(Nb201Op::AvgPool3x3));
        for arch in &all {
            assert_eq!(arch.to_string().parse::<Nb201Arch>().unwrap(), *arch);
        }
    }

    #[test]
    fn connected_means_a_path_of_real_ops_from_input_to_output() {
        use Nb201Op::{None as Z, SkipConnect as S};
        assert!(!Nb201Arch::uniform(Z).is_connected());
        assert!(Nb201Arch::uniform(S).is_connected());
        assert!(Nb201Arch {
            ops: [Z, Z, Z, S, Z, Z]
        }
        .is_connected());
        // 0→1 and 2→3 exist but nothing enters node 2.
        assert!(!Nb201Arch {
            ops: [S, Z, Z, Z, Z, S]
        }
        .is_connected());
        assert!(Nb201Arch {
            ops: [S, Z, S, Z, Z, S]
        }
        .is_connected());
        // The four paths from node 0 to node 3, written out, agree on every cell.
        for arch in Nb201Arch::all() {
            let on = |from, to| arch.op(from, to) != Some(Z);
            let paths = on(0, 3)
                || (on(0, 1) && on(1, 3))
                || (on(0, 2) && on(2, 3))
                || (on(0, 1) && on(1, 2) && on(2, 3));
            assert_eq!(arch.is_connected(), paths, "{arch}");
        }
    }

    #[test]
    fn neighbours_differ_on_one_edge() {
        let arch: Nb201Arch = BEST.parse().unwrap();
        let n = arch.neighbours();
        assert_eq!(n.len(), 24);
        assert_eq!(n.iter().collect::<HashSet<_>>().len(), 24);
        for m in &n {
            let diff = m.ops.iter().zip(&arch.ops).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 1, "{m}");
        }
    }
}
