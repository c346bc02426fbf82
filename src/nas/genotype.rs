//! A discrete architecture: which op feeds each intermediate node of the normal and the reduction
//! cell, and which nodes are concatenated into the cell output. Mirrors the reference code's
//! `Genotype` namedtuple, in JSON and in its Python text form.

mod derive;
mod text;

use std::collections::HashSet;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::primitives::Primitive;
use crate::error::{Error, Result};

/// A discrete cell pair, as in the DARTS reference code.
///
/// Each cell has two `(op, input)` pairs per intermediate node, node by node. States 0 and 1 are
/// the cell inputs c_{k-2} and c_{k-1}; intermediate node `i` (0-based) is state `i + 2`, so its
/// inputs are states `0..i + 2`. The `*_concat` lists name the states concatenated into the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genotype {
    pub normal: Vec<(Primitive, usize)>,
    pub normal_concat: Vec<usize>,
    pub reduce: Vec<(Primitive, usize)>,
    pub reduce_concat: Vec<usize>,
}

/// The cells of a published genotype; both concat lists are `[2, 3, 4, 5]`.
struct Builtin {
    name: &'static str,
    normal: [(Primitive, usize); 8],
    reduce: [(Primitive, usize); 8],
}

/// Copied from the reference `genotypes.py`. NASNet and AmoebaNet are left out: they use ops
/// (`sep_conv_7x7`, `conv_7x1_1x7`) outside the DARTS search space.
const BUILTINS: [Builtin; 3] = {
    use Primitive::{AvgPool3x3, DilConv3x3, MaxPool3x3, SepConv3x3, SkipConnect};
    const V1: Builtin = Builtin {
        name: "DARTS_V1",
        normal: [
            (SepConv3x3, 1),
            (SepConv3x3, 0),
            (SkipConnect, 0),
            (SepConv3x3, 1),
            (SkipConnect, 0),
            (SepConv3x3, 1),
            (SepConv3x3, 0),
            (SkipConnect, 2),
        ],
        reduce: [
            (MaxPool3x3, 0),
            (MaxPool3x3, 1),
            (SkipConnect, 2),
            (MaxPool3x3, 0),
            (MaxPool3x3, 0),
            (SkipConnect, 2),
            (SkipConnect, 2),
            (AvgPool3x3, 0),
        ],
    };
    const V2: Builtin = Builtin {
        name: "DARTS_V2",
        normal: [
            (SepConv3x3, 0),
            (SepConv3x3, 1),
            (SepConv3x3, 0),
            (SepConv3x3, 1),
            (SepConv3x3, 1),
            (SkipConnect, 0),
            (SkipConnect, 0),
            (DilConv3x3, 2),
        ],
        reduce: [
            (MaxPool3x3, 0),
            (MaxPool3x3, 1),
            (SkipConnect, 2),
            (MaxPool3x3, 1),
            (MaxPool3x3, 0),
            (SkipConnect, 2),
            (SkipConnect, 2),
            (MaxPool3x3, 1),
        ],
    };
    // The reference sets `DARTS = DARTS_V2`.
    [
        V1,
        V2,
        Builtin {
            name: "DARTS",
            ..V2
        },
    ]
};

impl Genotype {
    /// The names accepted by [`Genotype::named`].
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|b| b.name).collect()
    }

    /// A published genotype by its name in the reference code: `DARTS_V1`, `DARTS_V2`, `DARTS`.
    pub fn named(name: &str) -> Option<Genotype> {
        BUILTINS.iter().find(|b| b.name == name).map(|b| Genotype {
            normal: b.normal.to_vec(),
            normal_concat: vec![2, 3, 4, 5],
            reduce: b.reduce.to_vec(),
            reduce_concat: vec![2, 3, 4, 5],
        })
    }

    /// Parses JSON (`{"normal": [["sep_conv_3x3", 0], ...], ...}`) or the reference's text form
    /// (`Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)`).
    ///
    /// Only the syntax and the op names are checked here; call [`Genotype::validate`] with the
    /// number of steps the network is built with.
    pub fn parse(text: &str) -> Result<Genotype> {
        parse_message(text).map_err(Error::InvalidArgument)
    }

    /// A built-in name (see [`Genotype::named`]) or the path of a file holding JSON or DARTS text.
    pub fn load(arg: &str) -> Result<Genotype> {
        if let Some(g) = Genotype::named(arg) {
            return Ok(g);
        }
        let path = Path::new(arg);
        if !path.exists() {
            return Err(Error::InvalidArgument(format!(
                "genotype '{arg}' is neither a built-in ({}) nor an existing file",
                Genotype::builtin_names().join(", ")
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_message(&text).map_err(|msg| Error::data(path, msg))
    }

    /// A genotype drawn uniformly from the DARTS space of `steps`-node cells over `primitives`
    /// (`none` left out, as a genotype never keeps it): per node two distinct inputs from the
    /// earlier states and an op for each, for both cells; all intermediate nodes concatenated.
    /// The random baseline that a search has to beat.
    pub fn random(steps: usize, primitives: &[Primitive], rng: &mut impl Rng) -> Result<Genotype> {
        let ops: Vec<Primitive> = (primitives.iter().copied())
            .filter(|&op| op != Primitive::None)
            .collect();
        if ops.is_empty() || steps == 0 {
            return Err(Error::InvalidArgument(
                "a random genotype needs at least one op besides none and one node".into(),
            ));
        }
        let mut cell = || -> Vec<(Primitive, usize)> {
            (0..steps)
                .flat_map(|node| {
                    let inputs = rand::seq::index::sample(rng, node + 2, 2);
                    inputs
                        .into_iter()
                        .map(|input| (ops[rng.random_range(0..ops.len())], input))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let normal = cell();
        let reduce = cell();
        let concat: Vec<usize> = (2..steps + 2).collect();
        Ok(Genotype {
            normal,
            normal_concat: concat.clone(),
            reduce,
            reduce_concat: concat,
        })
    }

    /// Checks that the genotype describes cells with `steps` intermediate nodes: two pairs per
    /// node, inputs only from earlier states, no `none` op, concat indices in `0..steps + 2`.
    pub fn validate(&self, steps: usize) -> Result<()> {
        if steps == 0 {
            return Err(Error::InvalidArgument(
                "a cell needs at least one intermediate node (steps >= 1)".into(),
            ));
        }
        validate_cell("normal", &self.normal, steps)?;
        validate_concat("normal_concat", &self.normal_concat, steps)?;
        validate_cell("reduce", &self.reduce, steps)?;
        validate_concat("reduce_concat", &self.reduce_concat, steps)
    }
}

fn parse_message(text: &str) -> std::result::Result<Genotype, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("genotype JSON: {e}"))
    } else {
        text::parse(text)
    }
}

/// Checks one cell's pairs; shared with the report, which draws each cell on its own.
pub(crate) fn validate_cell(cell: &str, pairs: &[(Primitive, usize)], steps: usize) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidArgument(format!("{cell} cell: {msg}")));
    if pairs.len() != 2 * steps {
        return bad(format!(
            "has {} (op, input) pairs, expected {} (2 per node for {steps} steps)",
            pairs.len(),
            2 * steps
        ));
    }
    for (p, &(op, input)) in pairs.iter().enumerate() {
        let node = p / 2;
        if op == Primitive::None {
            return bad(format!(
                "pair {p} ('none', {input}) uses 'none', which a derived genotype cannot contain"
            ));
        }
        if input >= node + 2 {
            return bad(format!(
                "pair {p} ('{op}', {input}) feeds node {node} from state {input}, \
                 but node {node} can only read states 0..={}",
                node + 1
            ));
        }
    }
    Ok(())
}

/// Checks one concat list against a cell with `steps` nodes.
pub(crate) fn validate_concat(field: &str, concat: &[usize], steps: usize) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidArgument(format!("{field}: {msg}")));
    if concat.is_empty() {
        return bad("is empty; the cell output needs at least one state".into());
    }
    let mut seen = HashSet::new();
    for &s in concat {
        if s >= steps + 2 {
            return bad(format!(
                "state {s} out of range: a cell with {steps} steps has states 0..={}",
                steps + 1
            ));
        }
        if !seen.insert(s) {
            return bad(format!("state {s} listed more than once"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn builtins_are_valid_and_darts_is_v2() {
        for name in Genotype::builtin_names() {
            Genotype::named(name).unwrap().validate(4).unwrap();
        }
        assert_eq!(Genotype::named("DARTS"), Genotype::named("DARTS_V2"));
        assert_ne!(Genotype::named("DARTS_V1"), Genotype::named("DARTS_V2"));
        assert_eq!(Genotype::named("NASNet"), None);
    }

    #[test]
    fn json_round_trip() {
        let g = Genotype::named("DARTS_V1").unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert!(json.starts_with(r#"{"normal":[["sep_conv_3x3",1],["sep_conv_3x3",0],"#));
        assert!(json.contains(r#""normal_concat":[2,3,4,5],"reduce":[["max_pool_3x3",0],"#));
        assert_eq!(Genotype::parse(&json).unwrap(), g);
        let pretty = serde_json::to_string_pretty(&g).unwrap();
        assert_eq!(Genotype::parse(&format!("\n  {pretty}")).unwrap(), g);
    }

    #[test]
    fn json_errors_are_specific() {
        let e = Genotype::parse(r#"{"normal": [["sep_conv_7x7", 0]]}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("genotype JSON: unknown variant `sep_conv_7x7`"),
            "{e}"
        );
        let e = Genotype::parse(r#"{"normal": [], "normal_concat": []}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `reduce`"), "{e}");
    }

    #[test]
    fn load_builtin_and_files() {
        assert_eq!(
            Genotype::load("DARTS_V1").unwrap(),
            Genotype::named("DARTS_V1").unwrap()
        );
        let dir = std::env::temp_dir().join(format!("darts-genotype-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Genotype::named("DARTS_V2").unwrap();
        let (text, json, bad) = (dir.join("g.txt"), dir.join("g.json"), dir.join("bad.txt"));
        std::fs::write(&text, g.to_string()).unwrap();
        std::fs::write(&json, serde_json::to_string(&g).unwrap()).unwrap();
        std::fs::write(&bad, "Genotype(normal=[('sep_conv_3x3', 0)").unwrap();
        assert_eq!(Genotype::load(text.to_str().unwrap()).unwrap(), g);
        assert_eq!(Genotype::load(json.to_str().unwrap()).unwrap(), g);
        let e = Genotype::load(bad.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(bad.to_str().unwrap()), "{e}");
        assert!(e.contains("expected ',' or ']'"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        let e = Genotype::load("DARTS_V3").unwrap_err().to_string();
        assert!(
            e.contains("'DARTS_V3' is neither a built-in (DARTS_V1, DARTS_V2, DARTS)"),
            "{e}"
        );
    }

    #[test]
    fn validation_errors_are_specific() {
        let g = Genotype::named("DARTS_V2").unwrap();
        g.validate(4).unwrap();
        assert!(err(g.validate(0)).contains("steps >= 1"));
        assert!(err(g.validate(3)).contains("normal cell: has 8 (op, input) pairs, expected 6"));

        let mut short = g.clone();
        short.reduce.pop();
        assert!(err(short.validate(4)).contains("reduce cell: has 7 (op, input) pairs, expected 8"));

        let mut future = g.clone();
        future.normal[3] = (Primitive::SepConv5x5, 3);
        assert_eq!(
            err(future.validate(4)),
            "invalid argument: normal cell: pair 3 ('sep_conv_5x5', 3) feeds node 1 from state 3, \
             but node 1 can only read states 0..=2"
        );

        let mut none = g.clone();
        none.reduce[6] = (Primitive::None, 1);
        assert!(err(none.validate(4)).contains("reduce cell: pair 6 ('none', 1) uses 'none'"));

        let mut concat = g.clone();
        concat.normal_concat = vec![2, 3, 6];
        assert!(err(concat.validate(4))
            .contains("normal_concat: state 6 out of range: a cell with 4 steps has states 0..=5"));
        concat.normal_concat = vec![2, 2];
        assert!(err(concat.validate(4)).contains("normal_concat: state 2 listed more than once"));
        concat.normal_concat = vec![];
        assert!(err(concat.validate(4)).contains("normal_concat: is empty"));
    }
}
