//! REINFORCE (Williams, 1992) as the NB201 paper's baseline runs it: one softmax over the
//! options of each decision, logits trained by Adam on −log π(a)·(R − b), where the baseline b
//! is an exponential moving average of the rewards (bias-corrected, and updated with the new
//! reward before it is used, as in the reference script). The reward is the signal accuracy.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Choices, SearchSpace, Strategy, StrategyParams};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reinforce {
    lr: f64,
    momentum: f64,
    /// One logit per option of every decision, decision by decision (the one-hot layout).
    logits: Vec<f64>,
    /// Adam's first and second moments of each logit, and the step count.
    m: Vec<f64>,
    v: Vec<f64>,
    steps: i32,
    /// The moving average's numerator and denominator (so early values are not biased to 0).
    ema_sum: f64,
    ema_weight: f64,
}

impl Reinforce {
    /// Zero logits: the policy starts uniform.
    pub fn new(p: &StrategyParams, space: &dyn SearchSpace) -> Self {
        let n = space.dims().iter().sum();
        Reinforce {
            lr: p.lr,
            momentum: p.baseline_momentum,
            logits: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
            ema_sum: 0.0,
            ema_weight: 0.0,
        }
    }

    /// The softmax of each decision's block of logits, in the same layout.
    fn probs(&self, dims: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.logits.len());
        let mut offset = 0;
        for &n in dims {
            let block = &self.logits[offset..offset + n];
            let max = block.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = block.iter().map(|l| (l - max).exp()).collect();
            let z: f64 = e.iter().sum();
            out.extend(e.iter().map(|x| x / z));
            offset += n;
        }
        out
    }
}

impl Strategy for Reinforce {
    fn ask(&mut self, space: &dyn SearchSpace, rng: &mut StdRng) -> Choices {
        let probs = self.probs(space.dims());
        let mut offset = 0;
        let mut out = Vec::with_capacity(space.dims().len());
        for &n in space.dims() {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            // Inverse-CDF draw; rounding can leave `u` above the last partial sum, hence n - 1.
            let x = (0..n)
                .find(|&i| {
                    acc += probs[offset + i];
                    u < acc
                })
                .unwrap_or(n - 1);
            out.push(x);
            offset += n;
        }
        out
    }

    fn tell(&mut self, space: &dyn SearchSpace, choices: &[usize], reward: f64) {
        self.ema_sum = self.momentum * self.ema_sum + (1.0 - self.momentum) * reward;
        self.ema_weight = self.momentum * self.ema_weight + (1.0 - self.momentum);
        let advantage = reward - self.ema_sum / self.ema_weight;
        // d(−log π(a)·A)/d logit = −A·(onehot(a) − p), block by block.
        let mut grad = self.probs(space.dims());
        for g in &mut grad {
            *g *= advantage;
        }
        let mut offset = 0;
        for (&n, &x) in space.dims().iter().zip(choices) {
            grad[offset + x] -= advantage;
            offset += n;
        }
        self.steps += 1;
        let (c1, c2) = (1.0 - BETA1.powi(self.steps), 1.0 - BETA2.powi(self.steps));
        for (i, g) in grad.into_iter().enumerate() {
            self.m[i] = BETA1 * self.m[i] + (1.0 - BETA1) * g;
            self.v[i] = BETA2 * self.v[i] + (1.0 - BETA2) * g * g;
            self.logits[i] -= self.lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + EPS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::strategy::space::Nb201Space;

    #[test]
    fn rewarded_choices_become_likelier() {
        let space = Nb201Space;
        let mut rl = Reinforce::new(&StrategyParams::default(), &space);
        let mut rng = crate::rng(0);
        // Reward 1 whenever edge 0 carries option 3, else 0.
        for _ in 0..300 {
            let c = rl.ask(&space, &mut rng);
            rl.tell(&space, &c, f64::from(u8::from(c[0] == 3)));
        }
        let p = rl.probs(space.dims());
        assert!(p[3] > 0.5, "{:?}", &p[..5]);
        let total: f64 = p[..5].iter().sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
