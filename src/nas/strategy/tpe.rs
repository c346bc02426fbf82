//! The tree-structured Parzen estimator (Bergstra, Bardenet, Bengio, Kégl, NeurIPS 2011), for
//! categorical decisions: after `initial` random queries, the points seen are split into the
//! best γ and the rest; each side gets, per decision, a categorical density (its counts plus
//! one prior count per option, as hyperopt's categorical prior); candidates are drawn from the
//! good side's density and the one of highest l(x) / g(x) is asked. The decisions are
//! independent given the split, which is TPE's own simplification. A candidate already seen
//! is skipped: our evaluators are deterministic per arch (a table, cached trials), so asking it
//! again would teach nothing — without this, l(x) soon proposes the same few cells over and over.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Choices, SearchSpace, Strategy, StrategyParams};

/// The good side's share of the points seen (hyperopt's default).
const GAMMA: f64 = 0.25;
/// Unseen candidates drawn from l(x) per query (hyperopt's `n_EI_candidates`).
const CANDIDATES: usize = 24;
/// Draws per query at most, seen ones included, before falling back to a uniform sample.
const MAX_DRAWS: usize = 40 * CANDIDATES;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tpe {
    initial: usize,
    history: Vec<(Choices, f64)>,
}

/// Per decision, the probability of each option: (counts + 1) / (n + options).
fn densities(dims: &[usize], points: &[&Choices]) -> Vec<Vec<f64>> {
    dims.iter()
        .enumerate()
        .map(|(d, &n)| {
            let mut counts = vec![1.0; n];
            for c in points {
                counts[c[d]] += 1.0;
            }
            let total: f64 = counts.iter().sum();
            counts.iter().map(|k| k / total).collect()
        })
        .collect()
}

/// An option index drawn with probabilities `p` (summing to 1).
fn draw(p: &[f64], rng: &mut StdRng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, &q) in p.iter().enumerate() {
        acc += q;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

impl Tpe {
    pub fn new(p: &StrategyParams) -> Self {
        Tpe {
            initial: p.initial.max(1),
            history: Vec::new(),
        }
    }

    /// The good and the bad points: the best ⌈γ n⌉ by score (earlier first among equals) and
    /// the rest.
    fn split(&self) -> (Vec<&Choices>, Vec<&Choices>) {
        let mut order: Vec<usize> = (0..self.history.len()).collect();
        order.sort_by(|&a, &b| self.history[b].1.total_cmp(&self.history[a].1));
        let good = ((GAMMA * self.history.len() as f64).ceil() as usize).max(1);
        let pick = |ids: &[usize]| ids.iter().map(|&i| &self.history[i].0).collect();
        (pick(&order[..good]), pick(&order[good..]))
    }
}

impl Strategy for Tpe {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        if self.history.len() < self.initial {
            return space.sample(rng);
        }
        let (good, bad) = self.split();
        let (l, g) = (
            densities(space.dims(), &good),
            densities(space.dims(), &bad),
        );
        let ratio = |c: &Choices| -> f64 {
            c.iter()
                .enumerate()
                .map(|(d, &o)| l[d][o].ln() - g[d][o].ln())
                .sum()
        };
        let seen: HashSet<&Choices> = self.history.iter().map(|h| &h.0).collect();
        let mut best: Option<(f64, Choices)> = None;
        let mut fresh = 0;
        for _ in 0..MAX_DRAWS {
            let c: Choices = l.iter().map(|p| draw(p, rng)).collect();
            if seen.contains(&c) {
                continue;
            }
            let r = ratio(&c);
            if best.as_ref().is_none_or(|b| r > b.0) {
                best = Some((r, c));
            }
            fresh += 1;
            if fresh == CANDIDATES {
                break;
            }
        }
        best.map_or_else(|| space.sample(rng), |b| b.1)
    }

    fn tell(&mut self, _: &dyn SearchSpace, choices: &[usize], score: f64) {
        self.history.push((choices.to_vec(), score));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densities_count_with_one_prior_count_per_option() {
        let (a, b) = (vec![0, 2], vec![0, 1]);
        let p = densities(&[2, 3], &[&a, &b]);
        assert_eq!(p[0], [3.0 / 4.0, 1.0 / 4.0]);
        assert_eq!(p[1], [1.0 / 5.0, 2.0 / 5.0, 2.0 / 5.0]);
    }

    #[test]
    fn the_good_side_is_the_best_quarter() {
        let mut t = Tpe::new(&StrategyParams::default());
        for (i, s) in [3.0, 9.0, 1.0, 7.0, 5.0].into_iter().enumerate() {
            t.history.push((vec![i], s));
        }
        let (good, bad) = t.split();
        assert_eq!(good, [&vec![1], &vec![3]]);
        assert_eq!(bad.len(), 3);
    }
}
