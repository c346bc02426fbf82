//! Batch normalisation of NCHW tensors, with statistics per channel over N, H and W.
//!
//! PyTorch semantics: training normalises with the batch's biased variance and moves the running
//! statistics towards the batch's (with the unbiased variance); evaluation normalises with the
//! running statistics. Statistics are accumulated in f64 in one pass over the deviations from
//! the channel's first element, so a 64×32×32 batch whose mean is large next to its spread stays
//! accurate.
//!
//! Channel `c` of an NCHW tensor is N planes of H·W elements spaced C planes apart, so reductions
//! run in parallel over channels and elementwise passes in parallel over planes.

use std::ops::Range;

use rayon::prelude::*;

use super::{operands, Operands};
use crate::device::pool;
use crate::error::{Error, Result};
use crate::ops::simd::simd_fn;
use crate::tape;
use crate::tensor::Tensor;

mod cuda;

const OP: &str = "batch_norm2d";

/// Below this many elements per task a parallel loop costs more than it saves.
const PAR_MIN: usize = 1 << 15;

/// Settings of [`batch_norm2d`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormCfg {
    /// Normalise with batch statistics and update the running ones (else use the running ones).
    pub training: bool,
    /// Weight of the batch statistic in the running average: `running = (1 − m)·running + m·batch`.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl Default for BatchNormCfg {
    fn default() -> Self {
        BatchNormCfg {
            training: true,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// The sizes of an NCHW tensor seen as channels of N planes.
#[derive(Clone, Copy)]
struct Layout {
    n: usize,
    c: usize,
    hw: usize,
}

impl Layout {
    /// Elements per channel.
    fn m(&self) -> usize {
        self.n * self.hw
    }

    /// The N planes of channel `ch` in `data`.
    fn channel<'a>(&self, data: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| &data[(i * c + ch) * hw..(i * c + ch + 1) * hw])
    }

    /// `f(ch)` for every channel, in parallel when the tensor is large.
    fn per_channel<T: Send>(&self, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
        (0..self.c)
            .into_par_iter()
            .with_min_len(PAR_MIN.div_ceil(self.m().max(1)))
            .map(f)
            .collect()
    }

    /// The data of a new tensor of this layout: plane `p` (of channel `p % C`) is written by
    /// `f(channel, index range of the plane, output plane)`.
    fn map_planes(&self, f: impl Fn(usize, Range<usize>, &mut [f32]) + Sync + Send) -> Vec<f32> {
        let hw = self.hw.max(1);
        let mut out = pool::take(self.n * self.c * self.hw);
        out.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(PAR_MIN.div_ceil(hw))
            .for_each(|(p, o)| f(p % self.c, p * hw..(p + 1) * hw, o));
        out
    }
}

/// Partial sums per lane of the f64 reductions: enough independent additions to hide their
/// latency. Element `i` of a plane always goes to lane `i % LANES`, whatever the code path.
const LANES: usize = 8;

/// Per-lane f64 sums over matching slices: `s[l] += a − sa` and `p[l] += (a − sa)·(b − sb)`,
/// element `i` going to lane `i % LANES`. With `a = b = x` and `sa = sb = K` that is Σd and Σd²
/// of `d = x − K`; with `a = dy`, `b = x`, `sa = 0`, `sb = μ` it is Σdy and Σdy·(x − μ).
///
/// LLVM vectorises only the additions of the portable loop, so AVX2 CPUs take a hand-written
/// copy; both do the same operations in the same order on each lane and agree to the bit.
fn lane_sums(
    a: &[f32],
    b: &[f32],
    (sa, sb): (f64, f64),
    s: &mut [f64; LANES],
    p: &mut [f64; LANES],
) {
    let n = a.len() / LANES * LANES;
    let (body, tail) = ((&a[..n], &b[..n]), (&a[n..], &b[n..b.len()]));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the one feature `lane_sums_avx2` was compiled for.
        unsafe { lane_sums_avx2(body.0, body.1, sa, sb, s, p) };
    } else {
        lane_sums_portable(body.0, body.1, sa, sb, s, p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    lane_sums_portable(body.0, body.1, sa, sb, s, p);
    for (l, (&x, &y)) in tail.0.iter().zip(tail.1).enumerate() {
        let d = x as f64 - sa;
        s[l] += d;
        p[l] += d * (y as f64 - sb);
    }
}

/// [`lane_sums`] over whole chunks of [`LANES`].
fn lane_sums_portable(
    a: &[f32],
    b: &[f32],
    sa: f64,
    sb: f64,
    s: &mut [f64; LANES],
    p: &mut [f64; LANES],
) {
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            let d = ca[l] as f64 - sa;
            s[l] += d;
            p[l] += d * (cb[l] as f64 - sb);
        }
    }
}

/// [`lane_sums_portable`] with AVX2: lanes 0–3 and 4–7 in one register each, no FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lane_sums_avx2(
    a: &[f32],
    b: &[f32],
    sa: f64,
    sb: f64,
    s: &mut [f64; LANES],
    p: &mut [f64; LANES],
) {
    use std::arch::x86_64::*;
    // SAFETY (all loads and stores): each pointer is to 8 f32 of a whole chunk, or to 4 f64
    // of an 8-element array.
    unsafe {
        let (va, vb) = (_mm256_set1_pd(sa), _mm256_set1_pd(sb));
        let (mut s0, mut s1) = (
            _mm256_loadu_pd(s.as_ptr()),
            _mm256_loadu_pd(s.as_ptr().add(4)),
        );
        let (mut p0, mut p1) = (
            _mm256_loadu_pd(p.as_ptr()),
            _mm256_loadu_pd(p.as_ptr().add(4)),
        );
        for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
            let (xa, xb) = (_mm256_loadu_ps(ca.as_ptr()), _mm256_loadu_ps(cb.as_ptr()));
            let lo = |v| _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            let hi = |v| _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
            let (a0, a1) = (_mm256_sub_pd(lo(xa), va), _mm256_sub_pd(hi(xa), va));
            let (b0, b1) = (_mm256_sub_pd(lo(xb), vb), _mm256_sub_pd(hi(xb), vb));
            s0 = _mm256_add_pd(s0, a0);
            s1 = _mm256_add_pd(s1, a1);
            p0 = _mm256_add_pd(p0, _mm256_mul_pd(a0, b0));
            p1 = _mm256_add_pd(p1, _mm256_mul_pd(a1, b1));
        }
        _mm256_storeu_pd(s.as_mut_ptr(), s0);
        _mm256_storeu_pd(s.as_mut_ptr().add(4), s1);
        _mm256_storeu_pd(p.as_mut_ptr(), p0);
        _mm256_storeu_pd(p.as_mut_ptr().add(4), p1);
    }
}

/// The mean and biased variance of channel `ch` in f64, in one pass: the sums of `d = x − K`
/// and `d²`, where `K` (the channel's first element) is close enough to the mean that the
/// variance `(Σd² − (Σd)²/m)/m` loses no more than a two-pass one would to cancellation.
fn channel_stats(lay: &Layout, x: &[f32], ch: usize) -> (f64, f64) {
    let m = lay.m() as f64;
    let k = x[ch * lay.hw] as f64;
    let (mut s, mut ss) = ([0.0; LANES], [0.0; LANES]);
    for p in lay.channel(x, ch) {
        lane_sums(p, p, (k, k), &mut s, &mut ss);
    }
    let (s, ss) = (s.iter().sum::<f64>(), ss.iter().sum::<f64>());
    let mean = s / m;
    (k + mean, ((ss - s * mean) / m).max(0.0))
}

/// `(Σ dy, Σ dy·(x − μ))` over channel `ch` in f64.
fn channel_grad_sums(lay: &Layout, dy: &[f32], x: &[f32], ch: usize, mu: f64) -> (f64, f64) {
    let (mut s, mut sx) = ([0.0; LANES], [0.0; LANES]);
    for (d, v) in lay.channel(dy, ch).zip(lay.channel(x, ch)) {
        lane_sums(d, v, (0.0, mu), &mut s, &mut sx);
    }
    (s.iter().sum(), sx.iter().sum())
}

simd_fn! {
    /// `o = (x − μ)·a + b`.
    fn normalize(o: &mut [f32], x: &[f32], mu: f32, a: f32, b: f32) {
        o.iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = (v - mu) * a + b);
    }
}

simd_fn! {
    /// `o = a·(dy − s − (x − μ)·is·sx)` with `[μ, is, a, s, sx]` = `k`: dx of a training batch
    /// norm, with `a = γ/σ`, `is = 1/σ`, `s = mean(dy)` and `sx = mean(dy·x̂)`.
    fn training_dx(o: &mut [f32], dy: &[f32], x: &[f32], k: [f32; 5]) {
        let [mu, is, a, s, sx] = k;
        o.iter_mut()
            .zip(dy.iter().zip(x))
            .for_each(|(o, (&d, &v))| *o = a * (d - s - (v - mu) * is * sx));
    }
}

fn check_vec(name: &str, t: &Tensor, c: usize, x: &Tensor) -> Result<()> {
    if t.shape() != [c] {
        return Err(Error::shape(
            OP,
            format!("{name} must have shape [C] = [{c}]"),
            &[x.shape(), t.shape()],
        ));
    }
    Ok(())
}

/// Batch normalisation: `y = γ·(x − μ_c)/√(σ²_c + eps) + β` per channel `c`.
///
/// `x` is `[N, C, H, W]`; `gamma`, `beta` and the running statistics are `[C]` (`None` for
/// `gamma`/`beta` means 1 and 0, PyTorch's `affine=False`). With `cfg.training`, μ and σ² are the
/// batch's mean and biased variance, and the running statistics are updated in place (outside
/// the graph); otherwise they are read from `running_mean` and `running_var`, which are left as
/// they are.
///
/// ```
/// use darts::ops::{batch_norm2d, BatchNormCfg};
/// use darts::Tensor;
/// let x = Tensor::from_vec(vec![1.0, 3.0, 10.0, 30.0], &[2, 2, 1, 1]).unwrap();
/// let (mut rm, mut rv) = (Tensor::zeros(&[2]), Tensor::ones(&[2]));
/// let cfg = BatchNormCfg { eps: 0.0, ..Default::default() };
/// let y = batch_norm2d(&x, None, None, &mut rm, &mut rv, cfg).unwrap();
/// assert_eq!(y.to_vec(), vec![-1.0, -1.0, 1.0, 1.0]);
/// // channel 0 saw {1, 10}: mean 5.5, unbiased variance 40.5
/// assert!((rm.to_vec()[0] - 0.55).abs() < 1e-6);
/// assert!((rv.to_vec()[0] - (0.9 + 0.1 * 40.5)).abs() < 1e-6);
/// ```
pub fn batch_norm2d(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    cfg: BatchNormCfg,
) -> Result<Tensor> {
    let _prof = super::prof::span("batch_norm2d", false);
    let (n, c, h, w) = x.dims4(OP)?;
    let lay = Layout { n, c, hw: h * w };
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if let Some(t) = t {
            check_vec(name, t, c, x)?;
        }
    }
    check_vec("running_mean", running_mean, c, x)?;
    check_vec("running_var", running_var, c, x)?;
    if !(cfg.eps >= 0.0 && cfg.eps.is_finite() && (0.0..=1.0).contains(&cfg.momentum)) {
        return Err(Error::InvalidArgument(format!(
            "{OP}: eps {} must be finite and non-negative, momentum {} in [0, 1]",
            cfg.eps, cfg.momentum
        )));
    }
    for t in [gamma, beta, Some(&*running_mean), Some(&*running_var)]
        .into_iter()
        .flatten()
    {
        if t.device() != x.device() {
            return Err(Error::devices(OP, x, t));
        }
    }
    let xd = match operands(OP, [x])? {
        Operands::Cpu([xd]) => xd,
        Operands::Cuda([xb]) => {
            return cuda::batch_norm2d(x, xb, gamma, beta, running_mean, running_var, cfg, lay)
        }
    };

    let (mean, invstd): (Vec<f32>, Vec<f32>) = if cfg.training {
        let m = lay.m();
        if m <= 1 {
            return Err(Error::shape(
                OP,
                "training needs more than one value per channel (N·H·W > 1)",
                &[x.shape()],
            ));
        }
        let stats = lay.per_channel(|ch| channel_stats(&lay, xd, ch));
        let mom = cfg.momentum as f64;
        let unbias = m as f64 / (m - 1) as f64;
        let rm = running_mean.data_mut();
        for (r, &(mu, _)) in rm.iter_mut().zip(&stats) {
            *r = ((1.0 - mom) * *r as f64 + mom * mu) as f32;
        }
        let rv = running_var.data_mut();
        for (r, &(_, var)) in rv.iter_mut().zip(&stats) {
            *r = ((1.0 - mom) * *r as f64 + mom * var * unbias) as f32;
        }
        stats
            .iter()
            .map(|&(mu, var)| (mu as f32, (1.0 / (var + cfg.eps as f64).sqrt()) as f32))
            .unzip()
    } else {
        let rv = running_var.data();
        let invstd = rv
            .iter()
            .map(|&v| (1.0 / (v as f64 + cfg.eps as f64).sqrt()) as f32);
        (running_mean.to_vec(), invstd.collect())
    };

    let g: Vec<f32> = gamma.map_or_else(|| vec![1.0; c], |t| t.to_vec());
    let b: Vec<f32> = beta.map_or_else(|| vec![0.0; c], |t| t.to_vec());
    let out = lay.map_planes(|ch, plane, o| {
        normalize(o, &xd[plane], mean[ch], g[ch] * invstd[ch], b[ch]);
    });

    // Inputs are x, then gamma and beta where given; remember where each landed.
    let mut inputs = vec![x];
    let gi = gamma.map(|t| {
        inputs.push(t);
        inputs.len() - 1
    });
    let bi = beta.map(|t| {
        inputs.push(t);
        inputs.len() - 1
    });
    let saved = x.detach();
    let training = cfg.training;
    let out = Tensor::from_parts(out, x.shape());
    Ok(tape::record(OP, out, &inputs, move |dy, needs| {
        let [xd, gd] = operands(OP, [&saved, dy])?.cpu(OP)?;
        // Per channel Σ dy and Σ dy·x̂ with x̂ = (x − μ)/σ: the gradients of β and γ, and the two
        // corrections the batch statistics add to the gradient of x.
        let sums = lay.per_channel(|ch| {
            let (s, sxm) = channel_grad_sums(&lay, gd, xd, ch, mean[ch] as f64);
            (s, sxm * invstd[ch] as f64)
        });
        let mut grads: Vec<Option<Tensor>> = vec![None; needs.len()];
        if needs[0] {
            let m = lay.m() as f32;
            let dx = lay.map_planes(|ch, plane, o| {
                let (mu, is) = (mean[ch], invstd[ch]);
                let a = g[ch] * is;
                let dp = &gd[plane.clone()];
                if training {
                    // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy·x̂))
                    let (s, sx) = (sums[ch].0 as f32 / m, sums[ch].1 as f32 / m);
                    training_dx(o, dp, &xd[plane], [mu, is, a, s, sx]);
                } else {
                    o.iter_mut().zip(dp).for_each(|(o, &d)| *o = a * d);
                }
            });
            grads[0] = Some(Tensor::from_parts(dx, saved.shape()));
        }
        let per_channel = |f: fn((f64, f64)) -> f64| {
            Tensor::from_parts(sums.iter().map(|&s| f(s) as f32).collect(), &[lay.c])
        };
        if let Some(i) = gi.filter(|&i| needs[i]) {
            grads[i] = Some(per_channel(|(_, sx)| sx));
        }
        if let Some(i) = bi.filter(|&i| needs[i]) {
            grads[i] = Some(per_channel(|(s, _)| s));
        }
        Ok(grads)
    }))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn stats_f64(x: &Tensor, ch: usize) -> (f64, f64) {
        let (n, c, h, w) = x.dims4("test").unwrap();
        let lay = Layout { n, c, hw: h * w };
        let v: Vec<f64> = lay
            .channel(x.data(), ch)
            .flatten()
            .map(|&v| v as f64)
            .collect();
        let mu = v.iter().sum::<f64>() / v.len() as f64;
        (
            mu,
            v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / v.len() as f64,
        )
    }

    /// Runs one training-mode batch norm with momentum 1 (so the running statistics become the
    /// batch's) and checks them against f64 statistics: the mean within `mean_tol`, the
    /// unbiased variance within a relative `var_tol`. Returns the output.
    fn check_running_statistics(x: &Tensor, mean_tol: f64, var_tol: f64) -> Tensor {
        let c = x.shape()[1];
        let (mut rm, mut rv) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
        let cfg = BatchNormCfg {
            momentum: 1.0,
            ..Default::default()
        };
        let y = batch_norm2d(x, None, None, &mut rm, &mut rv, cfg).unwrap();
        let m = (x.numel() / c) as f64;
        for ch in 0..c {
            let (mu, var) = stats_f64(x, ch);
            assert!((rm.data()[ch] as f64 - mu).abs() < mean_tol, "mean {ch}");
            let unbiased = var * m / (m - 1.0);
            assert!(
                (rv.data()[ch] as f64 / unbiased - 1.0).abs() < var_tol,
                "var {ch}"
            );
        }
        y
    }

    #[test]
    fn accurate_statistics_on_a_large_offset_batch() {
        // A mean 1000 times the spread: one-pass f32 E[x²] − E[x]² would lose every digit.
        let mut rng = StdRng::seed_from_u64(1);
        let noise = Tensor::randn(&[64, 2, 32, 32], 1.0, &mut rng);
        let x = Tensor::from_parts(
            noise.data().iter().map(|v| 1000.0 + v).collect(),
            noise.shape(),
        );
        let y = check_running_statistics(&x, 1e-4, 1e-5);
        for ch in 0..2 {
            let (ymu, yvar) = stats_f64(&y, ch);
            assert!(
                ymu.abs() < 1e-4 && (yvar - 1.0).abs() < 1e-3,
                "{ymu} {yvar}"
            );
        }
    }

    #[test]
    fn accurate_statistics_when_the_shift_is_an_outlier() {
        // The one-pass sums are taken around each channel's first element; make that element
        // sit a thousand standard deviations away from a mean of 10⁴.
        let mut rng = StdRng::seed_from_u64(2);
        let noise = Tensor::randn(&[16, 3, 9, 7], 1.0, &mut rng);
        let mut v: Vec<f32> = noise.data().iter().map(|v| 1e4 + v).collect();
        for ch in 0..3 {
            v[ch * 63] = 1e4 - 1e3;
        }
        let x = Tensor::from_vec(v, noise.shape()).unwrap();
        check_running_statistics(&x, 1e-3, 1e-6);
    }

    #[test]
    fn running_statistics_follow_pytorch() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 5.0, 4.0, 8.0], &[3, 1, 1, 2]).unwrap();
        let (mut rm, mut rv) = (Tensor::full(&[1], 1.0), Tensor::full(&[1], 2.0));
        let held = rm.clone();
        batch_norm2d(&x, None, None, &mut rm, &mut rv, BatchNormCfg::default()).unwrap();
        // Six values: mean 23/6, unbiased variance Σ(x − μ)²/5.
        let mu = 23.0 / 6.0;
        let var = [1.0, 2.0, 3.0, 5.0, 4.0, 8.0]
            .iter()
            .map(|v: &f64| (v - mu).powi(2))
            .sum::<f64>()
            / 5.0;
        assert!((rm.data()[0] as f64 - (0.9 + 0.1 * mu)).abs() < 1e-6);
        assert!((rv.data()[0] as f64 - (1.8 + 0.1 * var)).abs() < 1e-6);
        assert_eq!(held.to_vec(), vec![1.0], "the update copies on write");
    }

    #[test]
    fn eval_uses_running_statistics_and_leaves_them() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2]).unwrap();
        let (mut rm, mut rv) = (
            Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap(),
            Tensor::from_vec(vec![4.0, 0.25], &[2]).unwrap(),
        );
        let gamma = Tensor::from_vec(vec![2.0, 1.0], &[2]).unwrap();
        let beta = Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap();
        let cfg = BatchNormCfg {
            training: false,
            eps: 0.0,
            ..Default::default()
        };
        let y = batch_norm2d(&x, Some(&gamma), Some(&beta), &mut rm, &mut rv, cfg).unwrap();
        // ch0: 2·(x − 1)/2 + 0.5; ch1: (x − 2)/0.5 − 1
        assert_eq!(y.to_vec(), vec![0.5, 1.5, 1.0, 3.0]);
        assert_eq!(
            (rm.to_vec(), rv.to_vec()),
            (vec![1.0, 2.0], vec![4.0, 0.25])
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros(&[2, 3, 2, 2]);
        let (mut rm, mut rv) = (Tensor::zeros(&[3]), Tensor::ones(&[3]));
        let cfg = BatchNormCfg::default();
        let c4 = Tensor::ones(&[4]);
        assert!(batch_norm2d(&x, Some(&c4), None, &mut rm, &mut rv, cfg).is_err());
        assert!(batch_norm2d(&x, None, Some(&c4), &mut rm, &mut rv, cfg).is_err());
        let mut rm4 = Tensor::zeros(&[4]);
        assert!(batch_norm2d(&x, None, None, &mut rm4, &mut rv, cfg).is_err());
        assert!(batch_norm2d(
            &Tensor::zeros(&[2, 3, 4]),
            None,
            None,
            &mut rm,
            &mut rv,
            cfg
        )
        .is_err());
        // One value per channel: PyTorch refuses in training, accepts in evaluation.
        let one = Tensor::zeros(&[1, 3, 1, 1]);
        let e = batch_norm2d(&one, None, None, &mut rm, &mut rv, cfg).unwrap_err();
        assert!(e.to_string().contains("more than one value"), "{e}");
        let eval = BatchNormCfg {
            training: false,
            ..cfg
        };
        assert!(batch_norm2d(&one, None, None, &mut rm, &mut rv, eval).is_ok());
        let neg = BatchNormCfg { eps: -1.0, ..cfg };
        assert!(batch_norm2d(&x, None, None, &mut rm, &mut rv, neg).is_err());
        assert_eq!(
            rm.to_vec(),
            vec![0.0; 3],
            "failed calls leave the running stats alone"
        );
    }
}
