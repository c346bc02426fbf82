//! A search space as a list of categorical decisions, so that sampling, mutation, crossover
//! and the feature encoding are written once for every space: NAS-Bench-201 cells (six edges,
//! five ops each) and DARTS genotypes (per cell and node: two distinct inputs and their ops).

use rand::rngs::StdRng;
use rand::Rng;

use super::{pick, Choices};
use crate::nas::genotype::Genotype;
use crate::nas::primitives::{Primitive, DARTS_PRIMITIVES};
use crate::nas::space::nb201::{Nb201Arch, Nb201Op};

/// What a strategy may do with a space: it sees only decisions and their option counts.
pub trait SearchSpace: Sync {
    /// How many options each decision has (every entry ≥ 1).
    fn dims(&self) -> &[usize];

    /// A uniform sample: each decision independently.
    fn sample(&self, rng: &mut StdRng) -> Choices {
        self.dims().iter().map(|&n| pick(rng, n)).collect()
    }

    /// `c` with one decision (uniform among those with a choice) set to a different option.
    fn mutate(&self, c: &[usize], rng: &mut StdRng) -> Choices {
        let free: Vec<usize> = (0..c.len()).filter(|&d| self.dims()[d] > 1).collect();
        let mut out = c.to_vec();
        if free.is_empty() {
            return out;
        }
        let d = free[pick(rng, free.len())];
        // Draw among the other n - 1 options: skip over the current one.
        let other = pick(rng, self.dims()[d] - 1);
        out[d] = if other >= c[d] { other + 1 } else { other };
        out
    }

    /// Uniform crossover: each decision from either parent with probability ½.
    fn crossover(&self, a: &[usize], b: &[usize], rng: &mut StdRng) -> Choices {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| if rng.random_bool(0.5) { x } else { y })
            .collect()
    }

    /// Every point that differs from `c` in exactly one decision.
    fn neighbours(&self, c: &[usize]) -> Vec<Choices> {
        let mut out = Vec::new();
        for (d, &n) in self.dims().iter().enumerate() {
            for option in (0..n).filter(|&o| o != c[d]) {
                let mut next = c.to_vec();
                next[d] = option;
                out.push(next);
            }
        }
        out
    }

    /// The one-hot encoding: one block per decision, a 1 at the chosen option. The squared
    /// distance of two encodings is twice the number of decisions they differ in.
    fn features(&self, c: &[usize]) -> Vec<f64> {
        let mut out = vec![0.0; self.dims().iter().sum()];
        let mut offset = 0;
        for (&n, &x) in self.dims().iter().zip(c) {
            out[offset + x] = 1.0;
            offset += n;
        }
        out
    }
}

/// A space whose points are architectures of type `Arch`.
pub trait ArchSpace: SearchSpace {
    type Arch: Clone + std::fmt::Display + Send;
    fn decode(&self, c: &[usize]) -> Self::Arch;
}

/// NAS-Bench-201: decision `e` is the op on edge `EDGES[e]`, options in [`Nb201Op::ALL`] order.
pub struct Nb201Space;

impl SearchSpace for Nb201Space {
    fn dims(&self) -> &[usize] {
        &[5; 6]
    }
}

impl ArchSpace for Nb201Space {
    type Arch = Nb201Arch;

    fn decode(&self, c: &[usize]) -> Nb201Arch {
        let mut ops = [Nb201Op::None; 6];
        for (op, &x) in ops.iter_mut().zip(c) {
            *op = Nb201Op::ALL[x];
        }
        Nb201Arch { ops }
    }
}

impl Nb201Space {
    pub fn encode(arch: &Nb201Arch) -> Choices {
        arch.ops.iter().map(|op| op.index()).collect()
    }
}

/// The DARTS space: a normal and a reduction cell of four nodes; node `i` (0-based) picks two
/// distinct inputs among states `0..i + 2` and an op for each from the 7 DARTS ops other than
/// `none`. Decisions per node: first input, its op, second input (an index among the states
/// left after the first), its op.
pub struct DartsSpace {
    dims: Vec<usize>,
}

/// Intermediate nodes per DARTS cell.
const DARTS_NODES: usize = 4;

fn darts_ops() -> Vec<Primitive> {
    DARTS_PRIMITIVES
        .into_iter()
        .filter(|&p| p != Primitive::None)
        .collect()
}

impl Default for DartsSpace {
    fn default() -> Self {
        let ops = darts_ops().len();
        let cell = (0..DARTS_NODES).flat_map(|i| [i + 2, ops, i + 1, ops]);
        DartsSpace {
            dims: cell.clone().chain(cell).collect(),
        }
    }
}

impl SearchSpace for DartsSpace {
    fn dims(&self) -> &[usize] {
        &self.dims
    }
}

impl ArchSpace for DartsSpace {
    type Arch = Genotype;

    fn decode(&self, c: &[usize]) -> Genotype {
        let ops = darts_ops();
        let cell = |c: &[usize]| -> Vec<(Primitive, usize)> {
            c.chunks(4)
                .flat_map(|n| {
                    let second = if n[2] >= n[0] { n[2] + 1 } else { n[2] };
                    [(ops[n[1]], n[0]), (ops[n[3]], second)]
                })
                .collect()
        };
        let half = self.dims.len() / 2;
        Genotype {
            normal: cell(&c[..half]),
            normal_concat: (2..2 + DARTS_NODES).collect(),
            reduce: cell(&c[half..]),
            reduce_concat: (2..2 + DARTS_NODES).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nb201_decisions_are_the_edges() {
        let space = Nb201Space;
        for arch in Nb201Arch::all().step_by(97) {
            assert_eq!(space.decode(&Nb201Space::encode(&arch)), arch);
        }
        let mut rng = crate::rng(1);
        let c = space.sample(&mut rng);
        let m = space.mutate(&c, &mut rng);
        assert_eq!(c.iter().zip(&m).filter(|(a, b)| a != b).count(), 1);
        assert_eq!(space.neighbours(&c).len(), 24);
        let f = space.features(&c);
        assert_eq!(f.len(), 30);
        assert_eq!(f.iter().sum::<f64>(), 6.0);
    }

    #[test]
    fn darts_decodes_to_valid_genotypes() {
        let space = DartsSpace::default();
        let mut rng = crate::rng(3);
        for _ in 0..200 {
            let c = space.sample(&mut rng);
            let g = space.decode(&c);
            g.validate(DARTS_NODES).unwrap();
            for node in g.normal.chunks(2).chain(g.reduce.chunks(2)) {
                assert_ne!(node[0].1, node[1].1, "{g:?}");
            }
            let m = space.mutate(&c, &mut rng);
            assert_eq!(c.iter().zip(&m).filter(|(a, b)| a != b).count(), 1);
        }
    }
}
