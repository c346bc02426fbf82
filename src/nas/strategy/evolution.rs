//! Regularised evolution (Real, Aggarwal, Huang, Le, AAAI 2019): a population of the P most
//! recent members; each child comes from a tournament of S members drawn with replacement,
//! its winner mutated in one decision; the oldest member dies (aging), not the worst. With
//! probability `crossover` the child is instead the uniform crossover of two tournament
//! winners, then mutated — the genetic algorithm.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{pick, Choices, SearchSpace, Strategy, StrategyParams};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evolution {
    population_size: usize,
    sample: usize,
    crossover: f64,
    /// Oldest first.
    population: VecDeque<(Choices, f64)>,
}

impl Evolution {
    pub fn new(p: &StrategyParams) -> Self {
        Evolution {
            population_size: p.population,
            sample: p.sample,
            crossover: p.crossover,
            population: VecDeque::new(),
        }
    }

    /// The best of `sample` members drawn with replacement (the first drawn wins ties).
    fn tournament(&self, rng: &mut StdRng) -> &Choices {
        let mut best: Option<&(Choices, f64)> = None;
        for _ in 0..self.sample {
            let m = &self.population[pick(rng, self.population.len())];
            if best.is_none_or(|b| m.1 > b.1) {
                best = Some(m);
            }
        }
        // `sample` ≥ 1 and the population is full here, so a member was drawn.
        &best.unwrap_or(&self.population[0]).0
    }
}

impl Strategy for Evolution {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        if self.population.len() < self.population_size {
            return space.sample(rng);
        }
        let parent = self.tournament(rng).clone();
        let child = if self.crossover > 0.0 && rng.random_bool(self.crossover) {
            let other = self.tournament(rng).clone();
            space.crossover(&parent, &other, rng)
        } else {
            parent
        };
        space.mutate(&child, rng)
    }

    fn tell(&mut self, _: &dyn SearchSpace, choices: &[usize], score: f64) {
        self.population.push_back((choices.to_vec(), score));
        if self.population.len() > self.population_size {
            self.population.pop_front();
        }
    }
}
