//! Pooling against naive loops, PyTorch's output sizes and tie rules.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

/// The textbook loops over a padded window, as an oracle for the kernels.
fn naive(x: &Tensor, k: usize, s: usize, p: usize, max: bool) -> Vec<f32> {
    let (n, c, h, w) = x.dims4("naive").unwrap();
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let d = x.data();
    let mut out = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut vals = Vec::new();
                for ky in 0..k {
                    for kx in 0..k {
                        let (y, xx) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                            vals.push(d[plane * h * w + y as usize * w + xx as usize]);
                        }
                    }
                }
                out.push(if max {
                    vals.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                } else {
                    vals.iter().sum::<f32>() / vals.len() as f32
                });
            }
        }
    }
    out
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
}

#[test]
fn match_the_naive_loops_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(3);
    // The second shape is large enough to run on several threads.
    for shape in [[2, 3, 7, 9], [4, 20, 33, 31]] {
        // All negative, so a padding treated as 0 instead of −∞ would show.
        let x = Tensor::uniform(&shape, -5.0, -1.0, &mut rng);
        for (k, s, p) in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2), (1, 1, 0)] {
            let m = max_pool2d(&x, k, s, p).unwrap();
            let a = avg_pool2d(&x, k, s, p).unwrap();
            assert!(
                close(m.data(), &naive(&x, k, s, p, true)),
                "max {k} {s} {p}"
            );
            assert!(
                close(a.data(), &naive(&x, k, s, p, false)),
                "avg {k} {s} {p}"
            );
            let oh = (shape[2] + 2 * p - k) / s + 1;
            let ow = (shape[3] + 2 * p - k) / s + 1;
            assert_eq!(m.shape(), [shape[0], shape[1], oh, ow]);
        }
    }
}

#[test]
fn max_propagates_nan() {
    let x = Tensor::from_vec(vec![1.0, f32::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let y = max_pool2d(&x, 2, 1, 1).unwrap().to_vec();
    // Windows holding the NaN (index 1) give NaN; the bottom-left corner sees only 3.0.
    assert!(
        y[0] == 1.0 && y[1].is_nan() && y[2].is_nan() && y[6] == 3.0,
        "{y:?}"
    );
}

#[test]
fn pytorch_output_sizes() {
    let x = Tensor::zeros(&[1, 1, 7, 9]);
    // torch: max_pool2d(ones(1,1,7,9), 3, 2, 1).shape == (1, 1, 4, 5); (2, 2, 0) -> (3, 4)
    assert_eq!(max_pool2d(&x, 3, 2, 1).unwrap().shape(), [1, 1, 4, 5]);
    assert_eq!(avg_pool2d(&x, 2, 2, 0).unwrap().shape(), [1, 1, 3, 4]);
    assert_eq!(avg_pool2d(&x, 3, 1, 1).unwrap().shape(), [1, 1, 7, 9]);
}

#[test]
fn avg_divides_by_in_bounds_count() {
    let x = Tensor::ones(&[1, 1, 3, 3]);
    let y = avg_pool2d(&x, 3, 1, 1).unwrap();
    assert_eq!(y.to_vec(), vec![1.0; 9]);
    let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
    // Top-left window covers 1, 2, 4, 5.
    assert_eq!(avg_pool2d(&x, 3, 1, 1).unwrap().data()[0], 3.0);
}

#[test]
fn max_backward_routes_to_the_argmax() {
    let x = Tensor::from_vec(vec![1.0, 4.0, 3.0, 2.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad();
    let y = crate::ops::sum(&max_pool2d(&x, 2, 1, 1).unwrap()).unwrap();
    // Nine windows: 4 wins four of them, 3 wins three, 1 and 2 only their own corners.
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 4.0, 3.0, 1.0]);
    // On ties the first element in row-major order wins, as in PyTorch.
    let x = Tensor::ones(&[1, 1, 2, 2]).requires_grad();
    let y = crate::ops::sum(&max_pool2d(&x, 2, 1, 0).unwrap()).unwrap();
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 0.0, 0.0, 0.0]);
}

/// Random planes with many ties, −∞ runs and a few NaNs: the cases where an argmax found
/// again by equality could differ from the forward's rule.
fn awkward(shape: &[usize], seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n)
        .map(|_| match rng.random_range(0..20) {
            0..=3 => f32::NEG_INFINITY,
            4 => f32::NAN,
            5 => -0.0,
            r => (r % 4) as f32,
        })
        .collect();
    // One plane entirely −∞, and one entirely −∞ but for a NaN in its middle.
    let hw = shape[2] * shape[3];
    v[..hw].fill(f32::NEG_INFINITY);
    v[hw..2 * hw].fill(f32::NEG_INFINITY);
    v[hw + hw / 2] = f32::NAN;
    Tensor::from_vec(v, shape).unwrap()
}

/// Integer gradients, so that every sum of them is exact whatever its order.
fn int_grads(shape: &[usize], seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|_| rng.random_range(-4..=4) as f32).collect(),
        shape,
    )
    .unwrap()
}

/// The gradient of `Σ g ⊙ max_pool2d(x)` through the tape.
fn max_grad(x: &Tensor, g: &Tensor, k: usize, s: usize, p: usize) -> Vec<f32> {
    let x = x.detach().requires_grad();
    let y = max_pool2d(&x, k, s, p).unwrap();
    let loss = crate::ops::sum(&crate::ops::mul(&y, g).unwrap()).unwrap();
    loss.backward().unwrap().get(&x).unwrap().to_vec()
}

#[test]
fn max_backward_finds_the_forward_argmax_again() {
    let cases = [
        ([2, 3, 7, 9], 3, 1, 1),
        ([2, 3, 7, 9], 3, 2, 1),
        ([2, 3, 8, 6], 2, 2, 0),
        ([1, 4, 9, 11], 5, 3, 2),
        ([2, 2, 5, 6], 2, 1, 1),
        ([1, 3, 20, 19], 17, 1, 8), // past FRAMED_MAX_KERNEL: the direct kernels
        ([8, 8, 28, 28], 3, 1, 1),  // several tasks
        ([8, 8, 28, 28], 3, 2, 1),
    ];
    for (i, (shape, k, s, p)) in cases.into_iter().enumerate() {
        let x = awkward(&shape, i as u64);
        let (planes, win) = Window::new("test", &x, k, s, p).unwrap();
        let (il, ol) = (win.in_len(), win.out_len());
        let y = max_pool2d(&x, k, s, p).unwrap();
        let g = int_grads(y.shape(), 100 + i as u64);
        // The oracle: the direct kernel's values, and its argmaxes for the gradient.
        let mut want_dx = vec![0.0f32; planes * il];
        let (mut best, mut arg, mut scratch) = (vec![0.0; ol], vec![0u32; ol], vec![0.0; ol]);
        for pl in 0..planes {
            max_plane(
                &win,
                &x.data()[pl * il..][..il],
                &mut best,
                &mut arg,
                &mut scratch,
            );
            let got = &y.data()[pl * ol..][..ol];
            for (o, (&a, &b)) in got.iter().zip(&best).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{i} {o}"
                );
                let at = arg[o] as usize;
                assert_eq!(
                    at,
                    window_argmax(&win, &x.data()[pl * il..], o / win.ow, o % win.ow)
                );
                want_dx[pl * il + at] += g.data()[pl * ol + o];
            }
        }
        assert_eq!(
            max_grad(&x, &g, k, s, p),
            want_dx,
            "case {i}: {shape:?} k{k} s{s} p{p}"
        );
    }
}

#[test]
fn avg_backward_matches_a_direct_scatter() {
    let mut rng = StdRng::seed_from_u64(9);
    for (shape, k, s, p) in [
        ([2, 3, 7, 9], 3, 1, 1),
        ([2, 3, 7, 9], 3, 2, 1),
        ([1, 4, 9, 11], 5, 3, 2),
        ([2, 2, 5, 6], 2, 1, 1),
        ([1, 3, 20, 19], 17, 1, 8),
        ([8, 8, 28, 28], 3, 2, 1),
    ] {
        let x = Tensor::uniform(&shape, -1.0, 1.0, &mut rng).requires_grad();
        let y = avg_pool2d(&x, k, s, p).unwrap();
        let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
        let loss = crate::ops::sum(&crate::ops::mul(&y, &g).unwrap()).unwrap();
        let got = loss.backward().unwrap().get(&x).unwrap().to_vec();
        let (planes, win) = Window::new("test", &x, k, s, p).unwrap();
        let (il, ol) = (win.in_len(), win.out_len());
        let mut want = vec![0.0f32; planes * il];
        for pl in 0..planes {
            let mut share = vec![0.0; win.ow];
            let (gp, d) = (&g.data()[pl * ol..][..ol], &mut want[pl * il..][..il]);
            avg_plane_backward(&win, gp, d, &mut share);
        }
        assert!(close(&got, &want), "{shape:?} k{k} s{s} p{p}");
    }
}

#[test]
fn global_avg_pool_shape_and_value() {
    let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[2, 3, 1, 2]).unwrap();
    let y = global_avg_pool(&x).unwrap();
    assert_eq!(y.shape(), [2, 3]);
    assert_eq!(y.to_vec(), vec![0.5, 2.5, 4.5, 6.5, 8.5, 10.5]);
}

#[test]
fn bad_arguments_are_errors() {
    let x = Tensor::zeros(&[1, 2, 5, 5]);
    assert!(max_pool2d(&x, 0, 1, 0).is_err());
    assert!(max_pool2d(&x, 3, 0, 1).is_err());
    assert!(avg_pool2d(&x, 3, 1, 2).is_err(), "padding above kernel/2");
    assert!(avg_pool2d(&x, 7, 1, 0).is_err(), "empty output");
    assert!(max_pool2d(&Tensor::zeros(&[2, 5, 5]), 3, 1, 1).is_err());
    // A kernel as large as it gets, with padding to match: one window over the whole plane.
    let huge = max_pool2d(&x, usize::MAX, 1, usize::MAX / 2).unwrap();
    assert_eq!(huge.shape(), [1, 2, 5, 5]);
    assert!(global_avg_pool(&Tensor::zeros(&[2, 5])).is_err());
    assert!(global_avg_pool(&Tensor::zeros(&[2, 5, 0, 3])).is_err());
    let e = avg_pool2d(&x, 7, 1, 0).unwrap_err().to_string();
    assert!(
        e.contains("avg_pool2d") && e.contains("[1, 2, 5, 5]"),
        "{e}"
    );
}
