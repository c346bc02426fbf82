use darts::{ops, Tensor};

use crate::common::{parity, ready, rng};

/// Max pooling picks an element and average pooling adds in the CPU's order: exact up to the
/// last bit in practice; a little slack for FMA contraction.
const TOL: f32 = 1e-6;

/// (kernel, stride, padding): DARTS's 3×3 pools at stride 1 and 2, and the 2×2 downsampler.
const WINDOWS: [(usize, usize, usize); 3] = [(3, 1, 1), (3, 2, 1), (2, 2, 0)];

#[test]
fn max_and_avg_pool_match_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(21);
    for shape in [[1, 2, 7, 9], [3, 2, 5, 11], [3, 1, 13, 4]] {
        // All negative, so a padding read as 0 would show in max pooling.
        let x = [Tensor::uniform(&shape, -5.0, -1.0, &mut r)];
        for (k, s, p) in WINDOWS {
            let what = |op: &str| format!("{op} {shape:?} k{k} s{s} p{p}");
            parity(&what("max_pool2d"), &x, TOL, 22, |t| {
                ops::max_pool2d(&t[0], k, s, p)
            });
            parity(&what("avg_pool2d"), &x, TOL, 23, |t| {
                ops::avg_pool2d(&t[0], k, s, p)
            });
        }
    }
}

#[test]
fn max_pool_ties_and_nan_follow_the_cpu() {
    if !ready() {
        return;
    }
    // Values from {0, 1, 2}: most windows hold ties, and the first maximum in row-major order
    // must win; a NaN wins its windows (its gradient goes to the last NaN, as on the CPU).
    let mut r = rng(24);
    let mut v: Vec<f32> = Tensor::uniform(&[3, 2, 7, 9], 0.0, 3.0, &mut r)
        .to_vec()
        .iter()
        .map(|v| v.floor())
        .collect();
    v[10] = f32::NAN;
    v[12] = f32::NAN;
    v[200] = f32::NAN;
    let x = [Tensor::from_vec(v, &[3, 2, 7, 9]).unwrap()];
    for (k, s, p) in WINDOWS {
        parity(
            &format!("max_pool2d ties k{k} s{s} p{p}"),
            &x,
            // A gradient routed to the wrong tie is off by O(1); what remains is the order in
            // which the CPU and the GPU add the gradients that meet at one input (≤ 1 ulp).
            1e-6,
            25,
            |t| ops::max_pool2d(&t[0], k, s, p),
        );
    }
}

#[test]
fn unusual_windows_match_the_cpu() {
    if !ready() {
        return;
    }
    // A 5×5 window with stride 3, 1×1 windows, even windows with half-kernel padding (an output
    // larger than the input), and a window larger than the plane (clamped by the launcher to
    // int-sized arguments).
    let x = [Tensor::randn(&[2, 3, 7, 6], 1.0, &mut rng(26))];
    for (k, s, p) in [
        (5, 3, 2),
        (1, 1, 0),
        (1, 2, 0),
        (2, 1, 1),
        (4, 3, 2),
        (usize::MAX, 1, usize::MAX / 2),
    ] {
        parity(&format!("max_pool2d k{k} s{s} p{p}"), &x, TOL, 27, |t| {
            ops::max_pool2d(&t[0], k, s, p)
        });
        parity(&format!("avg_pool2d k{k} s{s} p{p}"), &x, TOL, 28, |t| {
            ops::avg_pool2d(&t[0], k, s, p)
        });
    }
}

#[test]
fn global_avg_pool_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(29);
    for shape in [[1, 3, 7, 9], [3, 5, 1, 1], [2, 4, 13, 13], [3, 11, 5, 11]] {
        let x = [Tensor::randn(&shape, 1.0, &mut r)];
        parity(&format!("global_avg_pool {shape:?}"), &x, 1e-5, 30, |t| {
            ops::global_avg_pool(&t[0])
        });
    }
}
