//! A small Gaussian process for Bayesian optimisation: a Matérn-5/2 kernel on squared feature
//! distances, a Cholesky factor grown one row per observation, the log marginal likelihood that
//! picks the hyperparameters from a grid, and expected improvement.

use serde::{Deserialize, Serialize};

/// Kernel hyperparameters; the signal variance is 1 because the targets are standardised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub lengthscale: f64,
    /// Observation noise variance, relative to the (unit) signal variance.
    pub noise: f64,
}

impl Kernel {
    /// Matérn 5/2 of the distance √d2: (1 + √5 r + 5r²/3)·exp(−√5 r) with r = √d2 / ℓ.
    pub fn k(&self, d2: f64) -> f64 {
        let r = 5f64.sqrt() * d2.sqrt() / self.lengthscale;
        (1.0 + r + r * r / 3.0) * (-r).exp()
    }
}

/// Squared Euclidean distance.
pub fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A GP posterior over standardised targets.
#[derive(Clone, Debug)]
pub struct Gp {
    pub kernel: Kernel,
    x: Vec<Vec<f64>>,
    /// Lower Cholesky factor of K + noise·I, row i holding i + 1 entries.
    l: Vec<Vec<f64>>,
    /// (K + noise·I)⁻¹ (y − mean) / std.
    alpha: Vec<f64>,
    mean: f64,
    std: f64,
    /// log |K + noise·I|.
    log_det: f64,
}

/// a·b with four independent sums, which the compiler can keep in vector lanes (one running
/// sum forces every add to wait for the previous one); the triangular solves spend their time
/// here.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0; 4];
    for (x, y) in a4.zip(b4) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Solves L z = b for the lower-triangular factor `l` (row-wise storage).
fn forward(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = Vec::with_capacity(b.len());
    for (i, row) in l.iter().enumerate() {
        let s = dot(&row[..i], &z);
        z.push((b[i] - s) / row[i]);
    }
    z
}

/// Solves Lᵀ z = b.
fn backward(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in (0..l.len()).rev() {
        z[i] /= l[i][i];
        let zi = z[i];
        for (zj, lij) in z[..i].iter_mut().zip(&l[i][..i]) {
            *zj -= lij * zi;
        }
    }
    z
}

impl Gp {
    /// An empty posterior with `kernel`.
    pub fn new(kernel: Kernel) -> Self {
        Gp {
            kernel,
            x: Vec::new(),
            l: Vec::new(),
            alpha: Vec::new(),
            mean: 0.0,
            std: 1.0,
            log_det: 0.0,
        }
    }

    /// How many inputs the posterior holds.
    pub fn points(&self) -> usize {
        self.x.len()
    }

    /// Adds one input: one new row of the Cholesky factor, O(n²). Building a factor this way
    /// row by row is the Cholesky–Banachiewicz order, so a factor grown step by step is the
    /// same, to the bit, as one built at once. False if the matrix stopped being positive
    /// definite (the caller then raises the noise).
    pub fn push(&mut self, x: Vec<f64>) -> bool {
        let k: Vec<f64> = self
            .x
            .iter()
            .map(|xi| self.kernel.k(dist2(xi, &x)))
            .collect();
        let mut row = forward(&self.l, &k);
        let d = 1.0 + self.kernel.noise - dot(&row, &row);
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        row.push(d.sqrt());
        self.log_det += d.ln();
        self.l.push(row);
        self.x.push(x);
        true
    }

    /// Sets the targets (one per input): standardises them and solves for `alpha`.
    pub fn set_targets(&mut self, y: &[f64]) {
        let n = y.len() as f64;
        self.mean = y.iter().sum::<f64>() / n;
        let var = y.iter().map(|v| (v - self.mean).powi(2)).sum::<f64>() / n;
        self.std = if var > 0.0 { var.sqrt() } else { 1.0 };
        let z: Vec<f64> = y.iter().map(|v| (v - self.mean) / self.std).collect();
        self.alpha = backward(&self.l, &forward(&self.l, &z));
    }

    /// log p(y | X, kernel) of the standardised targets, up to the constant −n/2·log 2π.
    pub fn log_likelihood(&self, y: &[f64]) -> f64 {
        let fit: f64 = y
            .iter()
            .zip(&self.alpha)
            .map(|(v, a)| (v - self.mean) / self.std * a)
            .sum();
        -0.5 * fit - 0.5 * self.log_det
    }

    /// Posterior mean and standard deviation at `x`, in standardised units.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let k: Vec<f64> = self
            .x
            .iter()
            .map(|xi| self.kernel.k(dist2(xi, x)))
            .collect();
        let mu = dot(&k, &self.alpha);
        let v = forward(&self.l, &k);
        let var = 1.0 - dot(&v, &v);
        (mu, var.max(1e-12).sqrt())
    }

    /// A target value in the posterior's standardised units.
    pub fn standardise(&self, y: f64) -> f64 {
        (y - self.mean) / self.std
    }
}

/// erfc(x), with fractional error below 1.2e-7 everywhere (the Chebyshev fit of Numerical
/// Recipes, §6.2).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let horner = poly.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let r = t * (-z * z + horner).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// E[max(f − best − xi, 0)] for f ~ N(mu, sigma²).
pub fn expected_improvement(mu: f64, sigma: f64, best: f64, xi: f64) -> f64 {
    let gap = mu - best - xi;
    let z = gap / sigma;
    let cdf = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    gap * cdf + sigma * pdf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (-1.0, 1.842_700_793),
            (2.0, 0.004_677_735),
        ] {
            assert!(
                (erfc(x) - want).abs() < 2e-7 * want.max(1e-3),
                "erfc({x}) = {}",
                erfc(x)
            );
        }
    }

    #[test]
    fn posterior_interpolates_and_the_factor_is_exact() {
        let kernel = Kernel {
            lengthscale: 1.5,
            noise: 1e-6,
        };
        let xs: Vec<Vec<f64>> = (0..6)
            .map(|i| vec![i as f64 * 0.7, (i % 2) as f64])
            .collect();
        let y: Vec<f64> = xs.iter().map(|x| x[0].sin() + x[1]).collect();
        let mut gp = Gp::new(kernel);
        for x in &xs {
            assert!(gp.push(x.clone()));
        }
        gp.set_targets(&y);
        for (x, &t) in xs.iter().zip(&y) {
            let (mu, sd) = gp.predict(x);
            assert!((gp.standardise(t) - mu).abs() < 1e-3, "{mu}");
            assert!(sd < 1e-2);
        }
        // L Lᵀ = K + noise·I.
        for i in 0..6 {
            for j in 0..=i {
                let lij: f64 = (0..=j).map(|k| gp.l[i][k] * gp.l[j][k]).sum();
                let want = kernel.k(dist2(&xs[i], &xs[j])) + if i == j { 1e-6 } else { 0.0 };
                assert!((lij - want).abs() < 1e-12);
            }
        }
        // Far from the data the prior returns: mean 0, unit deviation.
        let (mu, sd) = gp.predict(&[100.0, 0.0]);
        assert!(mu.abs() < 1e-9 && (sd - 1.0).abs() < 1e-9);
        assert!(expected_improvement(0.0, 1.0, 0.0, 0.0) > 0.39);
        assert!(expected_improvement(-5.0, 0.1, 0.0, 0.0) < 1e-12);
    }
}
