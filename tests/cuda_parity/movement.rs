use darts::{ops, Device, Tensor};

use crate::common::{parity, ready, rng};

#[test]
fn concat_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(30);
    for n in [1, 3] {
        for channels in [&[2, 3][..], &[1, 4, 2], &[3, 1, 5, 2]] {
            let xs: Vec<Tensor> = channels
                .iter()
                .map(|&c| Tensor::randn(&[n, c, 5, 7], 1.0, &mut r))
                .collect();
            parity("concat", &xs, 0.0, 31, |t| {
                ops::concat(&t.iter().collect::<Vec<_>>())
            });
        }
    }
    // 2-D inputs, and one input twice (its gradient is the sum of both slices).
    let a = [
        Tensor::randn(&[3, 4], 1.0, &mut r),
        Tensor::randn(&[3, 7], 1.0, &mut r),
    ];
    parity("concat 2-D", &a, 0.0, 32, |t| ops::concat(&[&t[0], &t[1]]));
    parity("concat repeated", &a, 1e-6, 33, |t| {
        ops::concat(&[&t[0], &t[1], &t[0]])
    });
}

#[test]
fn shift_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(34);
    for shape in [[1, 1, 5, 7], [3, 2, 7, 5], [2, 3, 1, 9]] {
        let x = [Tensor::randn(&shape, 1.0, &mut r)];
        for (dy, dx) in [(1, 1), (-1, -1), (1, -1), (-1, 1), (0, 1), (2, 0), (9, -30)] {
            parity(&format!("shift {dy},{dx}"), &x, 0.0, 35, |t| {
                ops::shift(&t[0], dy, dx)
            });
        }
    }
}

/// `weighted_sum` over `xs[1..]` with weights `xs[0]`, term k taking weight `idx[k]`.
fn weighted(idx: &[usize], xs: &[Tensor]) -> darts::Result<Tensor> {
    let terms: Vec<(usize, &Tensor)> = idx.iter().copied().zip(&xs[1..]).collect();
    ops::weighted_sum(&terms, &xs[0])
}

#[test]
fn weighted_sum_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(36);
    // Weight indices skipped, reordered and repeated; 11 terms take two launches.
    let cases: [&[usize]; 5] = [
        &[2],
        &[4, 0, 2],
        &[7, 6, 5, 3, 1, 0, 2, 4],
        &[1, 1, 9, 0, 3, 3, 8, 2],
        &[3, 0, 9, 1, 4, 6, 2, 7, 8, 5, 0],
    ];
    // 2145 elements: nine blocks of partial dots.
    for shape in [&[1, 3, 5, 7][..], &[3, 5, 13, 11]] {
        for idx in cases {
            let mut xs = vec![ops::softmax(&Tensor::randn(&[2, 5], 1.0, &mut r)).unwrap()];
            xs.extend(idx.iter().map(|_| Tensor::randn(shape, 1.0, &mut r)));
            parity(&format!("weighted_sum {idx:?}"), &xs, 1e-5, 37, |t| {
                weighted(idx, t)
            });
        }
    }
    // The same tensor as several terms: its gradients add up.
    let xs = [
        Tensor::randn(&[4], 1.0, &mut r),
        Tensor::randn(&[3, 5, 7], 1.0, &mut r),
    ];
    parity("weighted_sum, one tensor twice", &xs, 1e-5, 38, |t| {
        ops::weighted_sum(&[(3, &t[1]), (0, &t[1])], &t[0])
    });
}

#[test]
fn movement_ops_reject_mixed_devices() {
    if !ready() {
        return;
    }
    let a = Tensor::ones(&[2, 3]);
    let b = a.to_device(Device::Cuda).unwrap();
    assert!(ops::concat(&[&b, &a]).is_err());
    assert!(ops::concat(&[&a, &b]).is_err());
    assert!(ops::weighted_sum(&[(0, &b)], &Tensor::ones(&[1])).is_err());
    let w = Tensor::ones(&[2]).to_device(Device::Cuda).unwrap();
    assert!(ops::weighted_sum(&[(0, &b), (1, &a)], &w).is_err());
}
