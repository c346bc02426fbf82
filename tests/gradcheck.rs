//! Finite-difference checks of every differentiable op's backward.
//!
//! For an op `f` and inputs `x`, the loss is `L = Σ r ⊙ f(x)` with a fixed random `r` whose
//! entries are bounded away from zero (so no output's gradient is hidden by a tiny weight). The
//! analytic gradient comes from the tape; the numeric one is the central difference
//! `(L(x + h) − L(x − h)) / 2h` on each input element in turn, with the f32 forward run under
//! `no_grad` and `L` summed in f64. `h` is the step actually taken in f32, not the nominal one.
//!
//! Inputs are awkward on purpose (odd H×W, 3 and 5 channels, batch 1 and 3, stride 2), and kinks
//! are kept out of reach of the step: max-pool inputs are distinct values spaced 0.1 apart and
//! relu inputs stay away from 0.

use darts::{no_grad, ops, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Nominal finite-difference step: large enough that f32 rounding of `L` is small next to it,
/// small enough that the truncation error (second order for central differences) is too.
const STEP: f32 = 1e-2;
/// Accept `|analytic − numeric| ≤ ATOL + RTOL · max(|analytic|, |numeric|)`.
const RTOL: f64 = 1e-2;
const ATOL: f64 = 1e-3;

/// One gradient element that failed the tolerance.
struct Mismatch {
    input: usize,
    index: Vec<usize>,
    analytic: f64,
    numeric: f64,
    excess: f64,
}

/// The position of flat index `i` in a row-major tensor of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (d, &s) in idx.iter_mut().zip(shape).rev() {
        *d = i % s;
        i /= s;
    }
    idx
}

/// `L = Σ r ⊙ f(xs)` in f64, without recording.
fn loss_f64(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], r: &Tensor) -> f64 {
    no_grad(|| {
        let y = f(xs).expect("forward succeeded once, so it succeeds on perturbed inputs");
        y.data()
            .iter()
            .zip(r.data())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    })
}

/// Compares the tape's gradient of `Σ r ⊙ analytic(xs)` with central differences of
/// `Σ r ⊙ numeric(xs)`; the two are the same op except in the checker's own tests. Returns the
/// worst `|a − n| / tolerance` on success, a report of the worst mismatches on failure.
fn compare(
    inputs: &[&Tensor],
    analytic: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    numeric: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> std::result::Result<f64, String> {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().requires_grad()).collect();
    let out = analytic(&leaves).map_err(|e| format!("forward failed: {e}"))?;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let r: Vec<f32> = (0..out.numel())
        .map(|_| rng.random_range(0.5..1.5) * if rng.random() { 1.0 } else { -1.0 })
        .collect();
    let r = Tensor::from_vec(r, out.shape()).unwrap();
    let loss = ops::sum(&ops::mul(&out, &r).unwrap()).unwrap();
    let grads = loss
        .backward()
        .map_err(|e| format!("backward failed: {e}"))?;

    let mut xs: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let (mut bad, mut worst, mut checked) = (Vec::new(), 0.0f64, 0);
    for (i, leaf) in leaves.iter().enumerate() {
        let g = grads
            .get(leaf)
            .ok_or_else(|| format!("input {i} {:?} got no gradient", leaf.shape()))?;
        if g.shape() != leaf.shape() {
            return Err(format!("input {i}: gradient shape {:?}", g.shape()));
        }
        for j in 0..leaf.numel() {
            let x0 = inputs[i].data()[j];
            let (xp, xm) = (x0 + STEP, x0 - STEP);
            xs[i].data_mut()[j] = xp;
            let lp = loss_f64(numeric, &xs, &r);
            xs[i].data_mut()[j] = xm;
            let lm = loss_f64(numeric, &xs, &r);
            xs[i].data_mut()[j] = x0;
            let n = (lp - lm) / (xp as f64 - xm as f64);
            let a = g.data()[j] as f64;
            let (err, tol) = ((a - n).abs(), ATOL + RTOL * a.abs().max(n.abs()));
            checked += 1;
            // `<=` is false when either side is NaN, which then counts as a mismatch.
            if err <= tol {
                worst = worst.max(err / tol);
                continue;
            }
            bad.push(Mismatch {
                input: i,
                index: unravel(j, leaf.shape()),
                analytic: a,
                numeric: n,
                excess: if err.is_nan() {
                    f64::INFINITY
                } else {
                    err / tol
                },
            });
        }
    }
    if bad.is_empty() {
        return Ok(worst);
    }
    bad.sort_by(|a, b| b.excess.total_cmp(&a.excess));
    let mut msg = format!(
        "{} of {checked} gradient elements differ (|a − n| > {ATOL} + {RTOL}·max(|a|, |n|)); worst:",
        bad.len()
    );
    for m in bad.iter().take(5) {
        msg += &format!(
            "\n  input {} at {:?}: analytic {:.6}, numeric {:.6} ({:.1}× the tolerance)",
            m.input, m.index, m.analytic, m.numeric, m.excess
        );
    }
    Err(msg)
}

/// Checks the gradient of `f` with respect to every tensor in `inputs`; panics with the worst
/// mismatches, naming `name`. Constants that should get no gradient are captured by `f`.
fn gradcheck(name: &str, inputs: &[&Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    match compare(inputs, &f, &f) {
        Ok(worst) => println!("{name}: ok, worst error {worst:.3} of the tolerance"),
        Err(msg) => panic!("gradcheck {name}: {msg}"),
    }
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// N(0, 1) entries.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut rng(seed))
}

/// Entries of magnitude in [0.2, 1.5] and random sign: relu's kink stays 20 steps away.
fn off_zero(shape: &[usize], seed: u64) -> Tensor {
    let mut g = rng(seed);
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| g.random_range(0.2f32..1.5) * if g.random() { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// A shuffle of distinct values 0.1 apart, centred on 0: a ±step nudge never changes which
/// element of a window is the max.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.1).collect();
    v.shuffle(&mut rng(seed));
    Tensor::from_vec(v, shape).unwrap()
}

// ---- the checker itself ----

#[test]
fn checker_rejects_a_dropped_factor() {
    let x = randn(&[3, 5], 1);
    let err = compare(&[&x], &|x| ops::scale(&x[0], 2.0), &|x| {
        ops::scale(&x[0], 2.1)
    })
    .expect_err("a gradient 5% too small must fail");
    assert!(err.contains("15 of 15"), "{err}");
}

#[test]
fn checker_rejects_a_gradient_sent_to_the_wrong_element() {
    let x = randn(&[1, 2, 5, 5], 2);
    let err = compare(&[&x], &|x| ops::shift(&x[0], 0, 1), &|x| {
        ops::shift(&x[0], 0, 0)
    });
    assert!(err.is_err());
}

// ---- elementwise ----

#[test]
fn add_sub_mul() {
    let (a, b) = (randn(&[3, 5, 7], 3), randn(&[3, 5, 7], 4));
    gradcheck("add", &[&a, &b], |x| ops::add(&x[0], &x[1]));
    gradcheck("sub", &[&a, &b], |x| ops::sub(&x[0], &x[1]));
    gradcheck("mul", &[&a, &b], |x| ops::mul(&x[0], &x[1]));
    gradcheck("mul by a constant", &[&a], |x| ops::mul(&x[0], &b));
    gradcheck("sub from a constant", &[&a], |x| ops::sub(&b, &x[0]));
}

#[test]
fn an_input_used_twice_accumulates() {
    let a = randn(&[5, 3], 5);
    gradcheck("mul(x, x)", &[&a], |x| ops::mul(&x[0], &x[0]));
    gradcheck("add(x, scale(x))", &[&a], |x| {
        ops::add(&x[0], &ops::scale(&x[0], -3.0)?)
    });
}

#[test]
fn scale_and_relu() {
    gradcheck("scale", &[&randn(&[3, 5, 5], 6)], |x| {
        ops::scale(&x[0], -1.7)
    });
    gradcheck("relu", &[&off_zero(&[3, 5, 7, 9], 7)], |x| ops::relu(&x[0]));
}

#[test]
fn masks_dropout_and_drop_path() {
    let x = randn(&[3, 5, 5, 5], 8);
    let mask = Tensor::from_vec(
        (0..x.numel()).map(|i| (i % 3) as f32 * 0.75).collect(),
        x.shape(),
    )
    .unwrap();
    gradcheck("mul_mask", &[&x], |x| ops::mul_mask(&x[0], &mask));
    // A fresh generator with a fixed seed on every call: the same mask each time.
    gradcheck("dropout", &[&x], |x| ops::dropout(&x[0], 0.3, &mut rng(9)));
    // The first seed whose mask keeps some samples and drops others, so both paths are checked.
    let kept = |seed| -> Vec<bool> {
        let y = ops::drop_path(&x, 0.5, &mut rng(seed)).unwrap();
        y.data()
            .chunks(125)
            .map(|s| s.iter().any(|&v| v != 0.0))
            .collect()
    };
    let seed = (0..100u64)
        .find(|&s| kept(s).contains(&true) && kept(s).contains(&false))
        .expect("some seed mixes kept and dropped samples");
    gradcheck("drop_path", &[&x], |x| {
        ops::drop_path(&x[0], 0.5, &mut rng(seed))
    });
}

// ---- reductions and reshape ----

#[test]
fn sum_mean_reshape() {
    let x = randn(&[3, 5, 7], 11);
    gradcheck("sum", &[&x], |x| ops::sum(&x[0]));
    gradcheck("mean", &[&x], |x| ops::mean(&x[0]));
    gradcheck("reshape", &[&x], |x| x[0].reshape(&[7, 15]));
}

// ---- pooling ----

#[test]
fn max_pool2d() {
    for (shape, k, s, p) in [
        ([3, 5, 7, 9], 3, 2, 1),
        ([1, 3, 5, 5], 3, 1, 1),
        ([3, 3, 7, 9], 2, 2, 0), // floor mode drops the last row: its gradient is 0
        ([1, 5, 5, 5], 5, 3, 2),
    ] {
        gradcheck(
            &format!("max_pool2d {shape:?} k{k} s{s} p{p}"),
            &[&distinct(&shape, 12)],
            |x| ops::max_pool2d(&x[0], k, s, p),
        );
    }
}

#[test]
fn avg_pool2d() {
    for (shape, k, s, p) in [
        ([3, 5, 7, 9], 3, 1, 1),
        ([3, 5, 7, 9], 3, 2, 1),
        ([1, 3, 5, 5], 3, 2, 1),
        ([1, 3, 5, 5], 2, 2, 0),
    ] {
        gradcheck(
            &format!("avg_pool2d {shape:?} k{k} s{s} p{p}"),
            &[&randn(&shape, 13)],
            |x| ops::avg_pool2d(&x[0], k, s, p),
        );
    }
}

#[test]
fn global_avg_pool() {
    gradcheck("global_avg_pool", &[&randn(&[3, 5, 7, 9], 14)], |x| {
        ops::global_avg_pool(&x[0])
    });
}

// ---- batch norm ----

/// Batch norm with fresh running statistics on every call (they are updated in place).
fn bn(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, training: bool) -> Result<Tensor> {
    let c = x.shape()[1];
    let mut rm = Tensor::from_vec((0..c).map(|i| 0.3 * i as f32 - 0.2).collect(), &[c])?;
    let mut rv = Tensor::from_vec((0..c).map(|i| 0.5 + 0.4 * i as f32).collect(), &[c])?;
    let cfg = ops::BatchNormCfg {
        training,
        ..Default::default()
    };
    ops::batch_norm2d(x, gamma, beta, &mut rm, &mut rv, cfg)
}

#[test]
fn batch_norm2d_training() {
    let x = Tensor::from_vec(
        randn(&[3, 5, 7, 9], 15)
            .data()
            .iter()
            .map(|v| 1.5 * v + 0.7)
            .collect(),
        &[3, 5, 7, 9],
    )
    .unwrap();
    let (gamma, beta) = (randn(&[5], 16), randn(&[5], 17));
    gradcheck("batch_norm2d training, affine", &[&x, &gamma, &beta], |x| {
        bn(&x[0], Some(&x[1]), Some(&x[2]), true)
    });
    let small = randn(&[1, 3, 5, 5], 18);
    gradcheck(
        "batch_norm2d training, no affine, batch 1",
        &[&small],
        |x| bn(&x[0], None, None, true),
    );
    let g3 = randn(&[3], 19);
    gradcheck("batch_norm2d training, gamma only", &[&small, &g3], |x| {
        bn(&x[0], Some(&x[1]), None, true)
    });
    gradcheck(
        "batch_norm2d training, constant gamma",
        &[&small, &randn(&[3], 20)],
        |x| bn(&x[0], Some(&g3), Some(&x[1]), true),
    );
}

#[test]
fn batch_norm2d_eval() {
    let x = randn(&[3, 5, 7, 9], 21);
    let (gamma, beta) = (randn(&[5], 22), randn(&[5], 23));
    gradcheck("batch_norm2d eval, affine", &[&x, &gamma, &beta], |x| {
        bn(&x[0], Some(&x[1]), Some(&x[2]), false)
    });
    gradcheck("batch_norm2d eval, no affine", &[&x], |x| {
        bn(&x[0], None, None, false)
    });
}

// ---- matrix products, losses, movement ----

#[test]
fn matmul_and_linear() {
    let (a, b) = (randn(&[3, 5], 24), randn(&[5, 4], 25));
    gradcheck("matmul", &[&a, &b], |x| ops::matmul(&x[0], &x[1]));
    let (x, w, bias) = (randn(&[3, 5], 26), randn(&[4, 5], 27), randn(&[4], 28));
    gradcheck("linear", &[&x, &w, &bias], |x| {
        ops::linear(&x[0], &x[1], Some(&x[2]))
    });
    gradcheck("linear, no bias", &[&x, &w], |x| {
        ops::linear(&x[0], &x[1], None)
    });
    gradcheck("linear, constant weight", &[&x], |x| {
        ops::linear(&x[0], &w, None)
    });
}

#[test]
fn softmax_log_softmax_cross_entropy() {
    let x = randn(&[3, 5], 29);
    gradcheck("softmax", &[&x], |x| ops::softmax(&x[0]));
    gradcheck("log_softmax", &[&x], |x| ops::log_softmax(&x[0]));
    gradcheck("softmax 3-D", &[&randn(&[2, 3, 5], 30)], |x| {
        ops::softmax(&x[0])
    });
    gradcheck("cross_entropy", &[&x], |x| {
        ops::cross_entropy(&x[0], &[0, 4, 2])
    });
    let teacher = randn(&[3, 5], 31);
    let d = darts::distill::Distill {
        teacher: Default::default(),
        temperature: 3.0,
        weight: 0.7,
    };
    gradcheck("distillation loss", &[&x], |x| {
        darts::distill::loss(&x[0], &teacher, &[0, 4, 2], &d)
    });
}

#[test]
fn concat_shift_weighted_sum() {
    let (a, b) = (randn(&[3, 2, 5, 5], 31), randn(&[3, 3, 5, 5], 32));
    gradcheck("concat", &[&a, &b], |x| ops::concat(&[&x[0], &x[1]]));
    gradcheck("concat, repeated", &[&a], |x| ops::concat(&[&x[0], &x[0]]));
    let x = randn(&[2, 3, 5, 7], 33);
    for (dy, dx) in [(1, 1), (-1, 2), (0, -3)] {
        gradcheck(&format!("shift {dy} {dx}"), &[&x], |x| {
            ops::shift(&x[0], dy, dx)
        });
    }
    let (t0, t1, w) = (
        randn(&[2, 3, 5], 34),
        randn(&[2, 3, 5], 35),
        randn(&[4], 36),
    );
    gradcheck("weighted_sum", &[&w, &t0, &t1], |x| {
        ops::weighted_sum(&[(0, &x[1]), (2, &x[2]), (2, &x[1])], &x[0])
    });
}

// ---- a composite ----

/// A small classifier: max-pool, batch norm, a residual average pool, global pooling, a linear
/// head and cross-entropy; gradients must flow through every stage and the reused tensor.
#[test]
fn composite_network() {
    let x = distinct(&[3, 3, 7, 9], 37);
    let (gamma, beta) = (randn(&[3], 38), randn(&[3], 39));
    let (w, b) = (randn(&[4, 3], 40), randn(&[4], 41));
    gradcheck("composite", &[&x, &gamma, &beta, &w, &b], |x| {
        let y = ops::max_pool2d(&x[0], 3, 2, 1)?;
        let y = bn(&y, Some(&x[1]), Some(&x[2]), true)?;
        let y = ops::add(&y, &ops::avg_pool2d(&y, 3, 1, 1)?)?;
        let logits = ops::linear(&ops::global_avg_pool(&y)?, &x[3], Some(&x[4]))?;
        ops::cross_entropy(&logits, &[1, 3, 0])
    });
}

// ---- convolution ----

fn conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    (stride, padding, dilation, groups): (usize, usize, usize, usize),
) -> Result<Tensor> {
    let cfg = ops::Conv2dCfg {
        stride,
        padding,
        dilation,
        groups,
    };
    ops::conv2d(x, w, b, cfg)
}

#[test]
fn conv2d_dense() {
    let (x, w, b) = (
        randn(&[3, 3, 7, 9], 42),
        randn(&[5, 3, 3, 3], 43),
        randn(&[5], 44),
    );
    gradcheck("conv2d 3x3 p1, bias", &[&x, &w, &b], |t| {
        conv(&t[0], &t[1], Some(&t[2]), (1, 1, 1, 1))
    });
    gradcheck("conv2d 3x3, constant weight and bias", &[&x], |t| {
        conv(&t[0], &w, Some(&b), (1, 1, 1, 1))
    });
    let x1 = randn(&[1, 3, 7, 9], 45);
    gradcheck("conv2d 3x3 s2 p1, batch 1", &[&x1, &w], |t| {
        conv(&t[0], &t[1], None, (2, 1, 1, 1))
    });
    gradcheck("conv2d 3x3 d2 p2", &[&x1, &w], |t| {
        conv(&t[0], &t[1], None, (1, 2, 2, 1))
    });
    let w1 = randn(&[4, 3, 1, 1], 46);
    gradcheck("conv2d 1x1", &[&x, &w1], |t| {
        conv(&t[0], &t[1], None, (1, 0, 1, 1))
    });
    gradcheck("conv2d 1x1 s2", &[&x, &w1], |t| {
        conv(&t[0], &t[1], None, (2, 0, 1, 1))
    });
}

#[test]
fn conv2d_grouped() {
    let x = randn(&[3, 5, 7, 9], 47);
    let (w3, w5, b) = (
        randn(&[5, 1, 3, 3], 48),
        randn(&[5, 1, 5, 5], 49),
        randn(&[5], 50),
    );
    gradcheck("depthwise 3x3 p1, bias", &[&x, &w3, &b], |t| {
        conv(&t[0], &t[1], Some(&t[2]), (1, 1, 1, 5))
    });
    gradcheck("depthwise 5x5 s2 p2", &[&x, &w5], |t| {
        conv(&t[0], &t[1], None, (2, 2, 1, 5))
    });
    gradcheck("depthwise 3x3 d2 p2", &[&x, &w3], |t| {
        conv(&t[0], &t[1], None, (1, 2, 2, 5))
    });
    let (x4, wg, bg) = (
        randn(&[3, 4, 5, 5], 51),
        randn(&[6, 2, 3, 3], 52),
        randn(&[6], 53),
    );
    gradcheck("conv2d groups 2, bias", &[&x4, &wg, &bg], |t| {
        conv(&t[0], &t[1], Some(&t[2]), (1, 1, 1, 2))
    });
}

/// DARTS's `sep_conv_3x3` half: relu, depthwise 3×3, pointwise 1×1, batch norm without affine.
#[test]
fn sep_conv_chain() {
    let x = off_zero(&[2, 3, 7, 9], 54);
    let (dw, pw) = (randn(&[3, 1, 3, 3], 55), randn(&[5, 3, 1, 1], 56));
    gradcheck(
        "relu, depthwise, pointwise, batch norm",
        &[&x, &dw, &pw],
        |t| {
            let y = conv(&ops::relu(&t[0])?, &t[1], None, (1, 1, 1, 3))?;
            bn(&conv(&y, &t[2], None, (1, 0, 1, 1))?, None, None, true)
        },
    );
}
