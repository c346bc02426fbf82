//! Bayesian optimisation: after `initial` random queries, a GP on the one-hot encoding
//! (Matérn 5/2, hyperparameters by marginal likelihood over a small grid) scores a pool of
//! candidates — uniform samples plus every one-decision mutation of the best few seen — and
//! the candidate of highest expected improvement is asked next.

use std::collections::HashSet;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::gp::{expected_improvement, Gp, Kernel};
use super::{Choices, SearchSpace, Strategy, StrategyParams};

/// Lengthscales in one-hot distance units: two points differing in h decisions are √(2h) apart.
const LENGTHSCALES: [f64; 6] = [0.75, 1.0, 1.5, 2.0, 3.0, 4.5];
const NOISES: [f64; 4] = [1e-4, 1e-3, 1e-2, 1e-1];
/// Uniform samples in each candidate pool.
const POOL_RANDOM: usize = 100;
/// Whose neighbours join the pool: the best this many seen points.
const POOL_PARENTS: usize = 3;
/// Exploration margin of expected improvement, in standard deviations of the targets.
const XI: f64 = 0.01;

/// Whether the hyperparameters are re-chosen when the GP holds `n` points: at every step while
/// the data are few, then every 20, since each refit costs a factorisation per grid point.
fn refit_due(n: usize) -> bool {
    n <= 20 || n.is_multiple_of(20)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bo {
    initial: usize,
    history: Vec<(Choices, f64)>,
    kernel: Kernel,
    /// The posterior over `history`, grown with it; rebuilt from the history after a restore.
    #[serde(skip)]
    gp: Option<Gp>,
}

impl Bo {
    pub fn new(p: &StrategyParams) -> Self {
        Bo {
            initial: p.initial.max(1),
            history: Vec::new(),
            kernel: Kernel {
                lengthscale: 1.5,
                noise: 1e-2,
            },
            gp: None,
        }
    }

    /// A posterior with `kernel` over the whole history, or `None` if it is not positive
    /// definite.
    fn fit(&self, space: &dyn SearchSpace, kernel: Kernel) -> Option<Gp> {
        let mut gp = Gp::new(kernel);
        for (c, _) in &self.history {
            if !gp.push(space.features(c)) {
                return None;
            }
        }
        let y: Vec<f64> = self.history.iter().map(|h| h.1).collect();
        gp.set_targets(&y);
        Some(gp)
    }

    /// The posterior for the current history: the grid's most likely kernel when a refit is
    /// due, else the previous posterior grown by the new points.
    fn posterior(&mut self, space: &dyn SearchSpace) -> Option<&Gp> {
        let n = self.history.len();
        let grown = self
            .gp
            .take()
            .filter(|gp| !refit_due(n) && gp.kernel == self.kernel);
        let gp = match grown {
            Some(mut gp) => {
                for (c, _) in &self.history[gp.points()..] {
                    if !gp.push(space.features(c)) {
                        return None;
                    }
                }
                let y: Vec<f64> = self.history.iter().map(|h| h.1).collect();
                gp.set_targets(&y);
                gp
            }
            None if refit_due(n) => {
                let y: Vec<f64> = self.history.iter().map(|h| h.1).collect();
                let mut best: Option<(f64, Gp)> = None;
                for lengthscale in LENGTHSCALES {
                    for noise in NOISES {
                        let Some(gp) = self.fit(space, Kernel { lengthscale, noise }) else {
                            continue;
                        };
                        let ll = gp.log_likelihood(&y);
                        if best.as_ref().is_none_or(|(b, _)| ll > *b) {
                            best = Some((ll, gp));
                        }
                    }
                }
                best?.1
            }
            // Restored from a checkpoint between refits: the saved kernel, all points at once.
            None => self.fit(space, self.kernel)?,
        };
        self.kernel = gp.kernel;
        self.gp = Some(gp);
        self.gp.as_ref()
    }
}

impl Strategy for Bo {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        if self.history.len() < self.initial {
            return space.sample(rng);
        }
        let seen: HashSet<&Choices> = self.history.iter().map(|h| &h.0).collect();
        let mut ranked: Vec<&(Choices, f64)> = self.history.iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut pool: Vec<Choices> = (0..POOL_RANDOM).map(|_| space.sample(rng)).collect();
        for (c, _) in ranked.iter().take(POOL_PARENTS) {
            pool.extend(space.neighbours(c));
        }
        let mut fresh = HashSet::new();
        pool.retain(|c| !seen.contains(c) && fresh.insert(c.clone()));
        let best = ranked[0].1;
        let fallback = space.sample(rng);
        let Some(gp) = self.posterior(space) else {
            return fallback;
        };
        let target = gp.standardise(best);
        let mut choice: Option<(f64, Choices)> = None;
        for c in pool {
            let (mu, sd) = gp.predict(&space.features(&c));
            let ei = expected_improvement(mu, sd, target, XI);
            if choice.as_ref().is_none_or(|(b, _)| ei > *b) {
                choice = Some((ei, c));
            }
        }
        choice.map_or(fallback, |(_, c)| c)
    }

    fn tell(&mut self, _: &dyn SearchSpace, choices: &[usize], score: f64) {
        self.history.push((choices.to_vec(), score));
    }
}
