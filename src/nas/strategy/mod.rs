//! Search strategies that propose whole architectures and learn from their scores: random
//! search, regularised evolution (with optional crossover: the genetic algorithm), Bayesian
//! optimisation with a Gaussian process, the tree-structured Parzen estimator, and REINFORCE. All speak ask/tell over a
//! [`SearchSpace`] of categorical decisions, and an [`Evaluator`](evaluator::Evaluator) scores
//! what they ask for (the NAS-Bench-201 table today, real training later).
//!
//! Every strategy's state is plain data (serde), and each query draws its randomness from its
//! own generator seeded by (seed, run, query), so a run restored from a checkpoint asks exactly
//! what the uninterrupted run would have asked.

pub mod bo;
pub mod cli;
pub mod evaluator;
pub mod evolution;
pub mod executor;
mod gp;
pub mod hpo;
pub mod hpo_run;
pub mod log;
pub mod reinforce;
pub mod run;
pub mod space;
pub mod tpe;
pub mod trial;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use space::SearchSpace;

/// A point of a space: one option index per decision (see [`SearchSpace::dims`]).
pub type Choices = Vec<usize>;

/// One strategy's contract: propose candidates, then learn their scores (higher is better).
/// `ask` may be called several times in a row (a batch for parallel trials); `tell` then gets
/// back every candidate of the batch, in order, before the next `ask`.
pub trait Strategy {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices;
    fn tell(&mut self, space: &dyn SearchSpace, choices: &[usize], score: f64);
}

/// Which strategy `darts nas --strategy` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// Uniform sampling with replacement (the NB201 paper's RS).
    Random,
    /// Regularised evolution (Real et al., 2019); with --crossover > 0, a genetic algorithm.
    Evolution,
    /// Bayesian optimisation: GP surrogate on the one-hot encoding, expected improvement.
    Bo,
    /// REINFORCE with a per-decision softmax policy and a moving-average baseline.
    Rl,
    /// Tree-structured Parzen estimator: per-decision densities of the best quarter and the
    /// rest, candidates of highest ratio.
    Tpe,
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
            StrategyKind::Bo => "bo",
            StrategyKind::Rl => "rl",
            StrategyKind::Tpe => "tpe",
        })
    }
}

/// The settings of every strategy (each reads its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyParams {
    /// Evolution: population size P.
    pub population: usize,
    /// Evolution: tournament size S.
    pub sample: usize,
    /// Evolution: probability that a child is the uniform crossover of two tournament winners
    /// (then mutated) rather than a mutated copy of one.
    pub crossover: f64,
    /// REINFORCE: Adam learning rate of the policy logits.
    pub lr: f64,
    /// REINFORCE: momentum of the reward's moving-average baseline.
    pub baseline_momentum: f64,
    /// BO and TPE: random queries before the surrogate takes over.
    pub initial: usize,
}

impl Default for StrategyParams {
    /// The NB201 scripts' settings: REA with P = 10, S = 3; REINFORCE with EMA momentum 0.9
    /// and the NATS-Bench learning rate 0.01 (the NB201 v1 script's 0.001 barely moves the
    /// policy within a few hundred queries).
    fn default() -> Self {
        StrategyParams {
            population: 10,
            sample: 3,
            crossover: 0.0,
            lr: 0.01,
            baseline_momentum: 0.9,
            initial: 10,
        }
    }
}

/// Uniform search: every query an independent sample.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RandomSearch;

impl Strategy for RandomSearch {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        space.sample(rng)
    }

    fn tell(&mut self, _: &dyn SearchSpace, _: &[usize], _: f64) {}
}

/// Any strategy, as one serialisable value (what a run checkpoints).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "lowercase")]
pub enum AnyStrategy {
    Random(RandomSearch),
    Evolution(evolution::Evolution),
    Bo(bo::Bo),
    Rl(reinforce::Reinforce),
    Tpe(tpe::Tpe),
}

impl AnyStrategy {
    /// A fresh strategy of `kind` for `space`.
    pub fn new(kind: StrategyKind, params: &StrategyParams, space: &dyn SearchSpace) -> Self {
        match kind {
            StrategyKind::Random => AnyStrategy::Random(RandomSearch),
            StrategyKind::Evolution => AnyStrategy::Evolution(evolution::Evolution::new(params)),
            StrategyKind::Bo => AnyStrategy::Bo(bo::Bo::new(params)),
            StrategyKind::Rl => AnyStrategy::Rl(reinforce::Reinforce::new(params, space)),
            StrategyKind::Tpe => AnyStrategy::Tpe(tpe::Tpe::new(params)),
        }
    }

    pub fn kind(&self) -> StrategyKind {
        match self {
            AnyStrategy::Random(_) => StrategyKind::Random,
            AnyStrategy::Evolution(_) => StrategyKind::Evolution,
            AnyStrategy::Bo(_) => StrategyKind::Bo,
            AnyStrategy::Rl(_) => StrategyKind::Rl,
            AnyStrategy::Tpe(_) => StrategyKind::Tpe,
        }
    }

    fn inner(&mut self) -> &mut dyn Strategy {
        match self {
            AnyStrategy::Random(s) => s,
            AnyStrategy::Evolution(s) => s,
            AnyStrategy::Bo(s) => s,
            AnyStrategy::Rl(s) => s,
            AnyStrategy::Tpe(s) => s,
        }
    }
}

impl Strategy for AnyStrategy {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        self.inner().ask(space, rng)
    }

    fn tell(&mut self, space: &dyn SearchSpace, choices: &[usize], score: f64) {
        self.inner().tell(space, choices, score)
    }
}

/// The generator of query `query` of run `run`: a function of the three numbers only, so a
/// resumed run needs no saved generator state.
pub fn query_rng(seed: u64, run: usize, query: usize) -> StdRng {
    // SplitMix64-style mixing keeps nearby (run, query) pairs from giving related streams.
    let mut x = seed ^ (run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= (query as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
    crate::rng(x ^ (x >> 31))
}

/// A uniform index below `n` (n ≥ 1).
fn pick(rng: &mut StdRng, n: usize) -> usize {
    rng.random_range(0..n)
}
