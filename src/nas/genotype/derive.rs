//! From continuous architecture weights to a discrete genotype, exactly as the reference
//! `Network.genotype()` (`_parse` in `model_search.py`) does it.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::Genotype;
use crate::error::{Error, Result};
use crate::nas::primitives::Primitive;

impl Genotype {
    /// Derives the genotype from the softmaxed alphas of the normal and the reduction cell.
    ///
    /// Each weight slice is a row-major `[k, primitives.len()]` matrix, one row per edge, node by
    /// node: node `i` has `i + 2` incoming edges (from states `0..i + 2`), so
    /// `k = Σ_{i<steps} (i + 2)` (14 for 4 steps). Column `c` is the weight of `primitives[c]`.
    ///
    /// For each node the two edges with the strongest non-`none` op are kept (ties: lower input
    /// first), each with that op (ties: first column). The output concatenates the last
    /// `multiplier` nodes, `range(2 + steps - multiplier, steps + 2)`.
    ///
    /// ```
    /// use darts::nas::{primitives::Primitive, Genotype};
    /// let ops = [Primitive::None, Primitive::SkipConnect, Primitive::SepConv3x3];
    /// // one node (steps = 1), two edges; `none` is largest on edge 0 but never chosen
    /// let w = [0.8, 0.15, 0.05, /* edge 1 */ 0.1, 0.3, 0.6];
    /// let g = Genotype::derive(&w, &w, &ops, 1, 1).unwrap();
    /// assert_eq!(g.normal, [(Primitive::SepConv3x3, 1), (Primitive::SkipConnect, 0)]);
    /// assert_eq!(g.normal_concat, [2]);
    /// ```
    pub fn derive(
        weights_normal: &[f32],
        weights_reduce: &[f32],
        primitives: &[Primitive],
        steps: usize,
        multiplier: usize,
    ) -> Result<Genotype> {
        if steps == 0 || multiplier == 0 || multiplier > steps {
            return Err(Error::InvalidArgument(format!(
                "genotype derive: need steps >= 1 and 1 <= multiplier <= steps, \
                 got steps {steps}, multiplier {multiplier}"
            )));
        }
        let mut seen = HashSet::new();
        if let Some(p) = primitives.iter().find(|&&p| !seen.insert(p)) {
            return Err(Error::InvalidArgument(format!(
                "genotype derive: primitive '{p}' appears twice in the list"
            )));
        }
        if primitives.iter().all(|&p| p == Primitive::None) {
            return Err(Error::InvalidArgument(
                "genotype derive: the primitive list needs an op other than 'none'".into(),
            ));
        }
        let normal = derive_cell("weights_normal", weights_normal, primitives, steps)?;
        let reduce = derive_cell("weights_reduce", weights_reduce, primitives, steps)?;
        let concat: Vec<usize> = (2 + steps - multiplier..steps + 2).collect();
        Ok(Genotype {
            normal,
            normal_concat: concat.clone(),
            reduce,
            reduce_concat: concat,
        })
    }
}

/// `_parse` for one cell; `primitives` is non-empty, duplicate-free and not only `none`.
fn derive_cell(
    name: &str,
    weights: &[f32],
    primitives: &[Primitive],
    steps: usize,
) -> Result<Vec<(Primitive, usize)>> {
    let n_ops = primitives.len();
    let edges: usize = (0..steps).map(|i| i + 2).sum();
    if weights.len() != edges * n_ops {
        return Err(Error::shape(
            "genotype derive",
            format!(
                "{name} has {} values, expected {edges} edges x {n_ops} ops for {steps} steps",
                weights.len()
            ),
            &[&[weights.len()], &[edges, n_ops]],
        ));
    }
    if let Some(at) = weights.iter().position(|w| !w.is_finite()) {
        return Err(Error::NonFinite(format!(
            "{name} at edge {}, op '{}' is {}",
            at / n_ops,
            primitives[at % n_ops],
            weights[at]
        )));
    }
    // `none` only says how weak an edge is; choosing it would delete the edge.
    let candidates: Vec<usize> = (0..n_ops)
        .filter(|&c| primitives[c] != Primitive::None)
        .collect();
    let mut rows = weights.chunks_exact(n_ops);
    let mut gene = Vec::with_capacity(2 * steps);
    for node in 0..steps {
        let w: Vec<&[f32]> = rows.by_ref().take(node + 2).collect();
        let best: Vec<usize> = w.iter().map(|row| argmax(row, &candidates)).collect();
        let strength = |j: usize| w[j][best[j]];
        // Strongest edge first; the sort is stable like Python's `sorted`, so ties keep the
        // lower input first.
        let mut inputs: Vec<usize> = (0..node + 2).collect();
        inputs.sort_by(|&a, &b| {
            strength(b)
                .partial_cmp(&strength(a))
                .unwrap_or(Ordering::Equal)
        });
        gene.extend(inputs[..2].iter().map(|&j| (primitives[best[j]], j)));
    }
    Ok(gene)
}

/// The first column among `candidates` holding the row's largest value (the reference's
/// strict `>` keeps the earliest maximum).
fn argmax(row: &[f32], candidates: &[usize]) -> usize {
    candidates
        .iter()
        .copied()
        .reduce(|best, c| if row[c] > row[best] { c } else { best })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::primitives::DARTS_PRIMITIVES;
    use Primitive::{MaxPool3x3, SepConv3x3, SkipConnect};

    const OPS: [Primitive; 3] = [Primitive::None, MaxPool3x3, SkipConnect];

    fn msg(r: Result<Genotype>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn ties_and_a_dominant_none() {
        #[rustfmt::skip]
        let w = [
            // node 0: `none` is largest on edge 0 and max_pool/skip tie there -> max_pool (first)
            0.90, 0.05, 0.05,
            0.00, 0.40, 0.60,
            // node 1: edges 1 and 2 tie at 0.7 -> edge 1 first; edge 0 (0.5) dropped
            0.20, 0.50, 0.30,
            0.00, 0.30, 0.70,
            0.10, 0.70, 0.20,
        ];
        let g = Genotype::derive(&w, &w, &OPS, 2, 2).unwrap();
        let expected = [
            (SkipConnect, 1),
            (MaxPool3x3, 0),
            (SkipConnect, 1),
            (MaxPool3x3, 2),
        ];
        assert_eq!(g.normal, expected);
        assert_eq!(g.reduce, expected);
        assert_eq!(g.normal_concat, [2, 3]);
        g.validate(2).unwrap();

        // All edges equal: the two lowest inputs, each with its first column.
        let flat = [1.0 / 3.0; 15];
        let g = Genotype::derive(&flat, &flat, &OPS, 2, 1).unwrap();
        assert_eq!(
            g.reduce,
            [
                (MaxPool3x3, 0),
                (MaxPool3x3, 1),
                (MaxPool3x3, 0),
                (MaxPool3x3, 1)
            ]
        );
        assert_eq!(g.reduce_concat, [3]);
    }

    #[test]
    fn without_none_every_column_counts() {
        let ops = [SepConv3x3, SkipConnect];
        let w = [0.9, 0.1, 0.3, 0.7];
        let g = Genotype::derive(&w, &w, &ops, 1, 1).unwrap();
        assert_eq!(g.normal, [(SepConv3x3, 0), (SkipConnect, 1)]);
    }

    /// Weights that encode a genotype: each kept pair's op gets a high weight, the first pair of a
    /// node higher than the second, and `none` dominates every edge.
    fn weights_for(cell: &[(Primitive, usize)]) -> Vec<f32> {
        let mut w = Vec::new();
        for node in 0..4 {
            for input in 0..node + 2 {
                let mut row = [0.01; 8];
                row[0] = 0.95;
                for (rank, &(op, j)) in cell[2 * node..2 * node + 2].iter().enumerate() {
                    if j == input {
                        let col = DARTS_PRIMITIVES.iter().position(|&p| p == op).unwrap();
                        row[col] = 0.9 - 0.1 * rank as f32;
                    }
                }
                w.extend(row);
            }
        }
        w
    }

    #[test]
    fn reproduces_published_genotypes() {
        for name in ["DARTS_V1", "DARTS_V2"] {
            let g = Genotype::named(name).unwrap();
            let (wn, wr) = (weights_for(&g.normal), weights_for(&g.reduce));
            assert_eq!(wn.len(), 14 * 8);
            assert_eq!(
                Genotype::derive(&wn, &wr, &DARTS_PRIMITIVES, 4, 4).unwrap(),
                g
            );
        }
    }

    #[test]
    fn errors_are_specific() {
        let w = [0.5; 15];
        assert!(msg(Genotype::derive(&w, &w, &OPS, 2, 3)).contains("got steps 2, multiplier 3"));
        assert!(msg(Genotype::derive(&w, &w, &OPS, 0, 0)).contains("need steps >= 1"));
        assert_eq!(
            msg(Genotype::derive(&w[..14], &w, &OPS, 2, 2)),
            "genotype derive: weights_normal has 14 values, expected 5 edges x 3 ops for 2 steps \
             (got shapes [[14], [5, 3]])"
        );
        assert!(msg(Genotype::derive(&w, &w, &OPS, 1, 1))
            .contains("weights_normal has 15 values, expected 2 edges x 3 ops"));
        let mut nan = w;
        nan[7] = f32::NAN;
        assert!(msg(Genotype::derive(&w, &nan, &OPS, 2, 2))
            .contains("weights_reduce at edge 2, op 'max_pool_3x3' is NaN"));
        let dup = [SkipConnect, MaxPool3x3, SkipConnect];
        assert!(msg(Genotype::derive(&w, &w, &dup, 2, 2))
            .contains("primitive 'skip_connect' appears twice"));
        assert!(
            msg(Genotype::derive(&[], &[], &[], 2, 2)).contains("needs an op other than 'none'")
        );
        let none = [Primitive::None];
        assert!(msg(Genotype::derive(&w[..5], &w[..5], &none, 2, 2))
            .contains("needs an op other than 'none'"));
    }
}
