//! How decided a search is: per edge of each alpha matrix, the leading op's softmax weight and
//! its margin over the runner-up, and whether the alphas are still nearly uniform — in which
//! case the derived genotype is an argmax over noise and the user should search longer.

use serde::Serialize;

use super::primitives::Primitive;

/// An edge whose largest weight is below this multiple of uniform (1 / ops) is undecided.
pub const DECIDED_FACTOR: f32 = 1.5;

/// One edge's leading op.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeMargin {
    /// `normal` or `reduce`.
    pub cell: &'static str,
    pub edge: usize,
    pub op: Primitive,
    pub weight: f32,
    pub runner_up: Primitive,
    /// `weight` minus the runner-up's weight.
    pub margin: f32,
}

/// The leading op of every edge (rows of `weights`, softmaxed, `primitives` in column order);
/// with `skip_none` (DARTS, whose genotypes never keep `none`) `none` is left out of the ranking.
pub fn margins(
    cell: &'static str,
    weights: &[f32],
    primitives: &[Primitive],
    skip_none: bool,
) -> Vec<EdgeMargin> {
    let n = primitives.len();
    weights
        .chunks(n)
        .enumerate()
        .filter_map(|(edge, row)| {
            let mut ranked: Vec<usize> = (0..n)
                .filter(|&k| !(skip_none && primitives[k] == Primitive::None))
                .collect();
            ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let (&best, &second) = (ranked.first()?, ranked.get(1)?);
            Some(EdgeMargin {
                cell,
                edge,
                op: primitives[best],
                weight: row[best],
                runner_up: primitives[second],
                margin: row[best] - row[second],
            })
        })
        .collect()
}

/// True when on most edges of the normal cell (more than half) the largest weight of any op is
/// below [`DECIDED_FACTOR`] × uniform.
pub fn nearly_uniform(normal: &[f32], n_ops: usize) -> bool {
    let uniform = 1.0 / n_ops as f32;
    let rows: Vec<&[f32]> = normal.chunks(n_ops).collect();
    let undecided = rows
        .iter()
        .filter(|r| r.iter().cloned().fold(0.0, f32::max) < DECIDED_FACTOR * uniform)
        .count();
    2 * undecided > rows.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::primitives::DARTS_PRIMITIVES;

    #[test]
    fn leading_op_and_margin_per_edge() {
        let p = [
            Primitive::None,
            Primitive::SkipConnect,
            Primitive::SepConv3x3,
        ];
        let w = [0.6, 0.3, 0.1, 0.2, 0.3, 0.5];
        let m = margins("normal", &w, &p, true);
        assert_eq!(m[0].op, Primitive::SkipConnect);
        assert_eq!(m[0].runner_up, Primitive::SepConv3x3);
        assert!((m[0].margin - 0.2).abs() < 1e-6);
        assert_eq!(m[1].op, Primitive::SepConv3x3);
        let with_none = margins("normal", &w, &p, false);
        assert_eq!(with_none[0].op, Primitive::None);
    }

    #[test]
    fn uniform_alphas_are_flagged_and_decided_ones_are_not() {
        let n = DARTS_PRIMITIVES.len();
        let uniform = vec![1.0 / n as f32; 14 * n];
        assert!(nearly_uniform(&uniform, n));
        let mut decided = uniform.clone();
        for row in decided.chunks_mut(n) {
            row.fill(0.5 / (n - 1) as f32);
            row[4] = 0.5;
        }
        assert!(!nearly_uniform(&decided, n));
    }
}
