use darts::{ops, Tensor};
use rand::Rng;

use crate::common::{parity, ready, rng};

const TOL: f32 = 1e-5;

#[test]
fn softmax_and_log_softmax_match_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(20);
    // Rows 1, 3, 7; classes below, at and above one warp's width; a 3-D input; large logits
    // (the max must be subtracted); rows spanning several blocks.
    let shapes: [(&[usize], f32); 7] = [
        (&[1, 10], 1.0),
        (&[3, 13], 1.0),
        (&[7, 10], 3.0),
        (&[3, 70], 1.0),
        (&[2, 3, 13], 1.0),
        (&[5, 13], 40.0),
        (&[41, 33], 2.0),
    ];
    for (shape, std) in shapes {
        let x = [Tensor::randn(shape, std, &mut r)];
        parity("softmax", &x, TOL, 21, |t| ops::softmax(&t[0]));
        parity("log_softmax", &x, TOL, 22, |t| ops::log_softmax(&t[0]));
    }
}

#[test]
fn cross_entropy_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(23);
    // 300 rows: several blocks of partial losses.
    for (n, k) in [(1, 10), (3, 13), (7, 10), (7, 13), (300, 10)] {
        let x = [Tensor::randn(&[n, k], 2.0, &mut r)];
        let labels: Vec<usize> = (0..n).map(|_| r.random_range(0..k)).collect();
        parity("cross_entropy", &x, TOL, 24, |t| {
            ops::cross_entropy(&t[0], &labels)
        });
        // Through log_softmax as well: the loss's gradient scaled by a non-unit upstream.
        parity("cross_entropy of scaled logits", &x, TOL, 25, |t| {
            ops::cross_entropy(&ops::scale(&t[0], -3.5)?, &labels)
        });
    }
}

#[test]
fn loss_ops_reject_mixed_devices_and_bad_labels_on_the_gpu() {
    if !ready() {
        return;
    }
    let x = Tensor::randn(&[3, 4], 1.0, &mut rng(26))
        .to_device(darts::Device::Cuda)
        .unwrap();
    assert!(ops::cross_entropy(&x, &[0, 4, 1]).is_err());
    assert!(ops::cross_entropy(&x, &[0, 1]).is_err());
    let y = ops::cross_entropy(&x, &[0, 3, 1]).unwrap();
    assert_eq!(y.device(), darts::Device::Cuda);
    assert_eq!(y.shape(), &[] as &[usize]);
}
