use darts::{ops, Tensor};

use crate::common::{assert_close, parity, ready, rng};

const TOL: f32 = 1e-6;

#[test]
fn binary_and_unary_ops_match_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(1);
    for shape in [&[1][..], &[7, 9], &[3, 5, 11, 13], &[70_001]] {
        let a = Tensor::randn(shape, 1.0, &mut r);
        let b = Tensor::randn(shape, 2.0, &mut r);
        let ab = [a.clone(), b.clone()];
        parity("add", &ab, TOL, 2, |x| ops::add(&x[0], &x[1]));
        parity("sub", &ab, TOL, 3, |x| ops::sub(&x[0], &x[1]));
        parity("mul", &ab, TOL, 4, |x| ops::mul(&x[0], &x[1]));
        parity("scale", &ab[..1], TOL, 5, |x| ops::scale(&x[0], -0.37));
        parity("relu", &ab[..1], TOL, 6, |x| ops::relu(&x[0]));
    }
}

#[test]
fn dropout_and_drop_path_draw_the_same_masks_as_the_cpu() {
    if !ready() {
        return;
    }
    let x = Tensor::randn(&[5, 3, 7, 9], 1.0, &mut rng(7));
    for p in [0.2f32, 0.5] {
        parity("dropout", std::slice::from_ref(&x), TOL, 8, |t| {
            ops::dropout(&t[0], p, &mut rng(9))
        });
        parity("drop_path", std::slice::from_ref(&x), TOL, 10, |t| {
            ops::drop_path(&t[0], p, &mut rng(11))
        });
    }
}

#[test]
fn accumulation_fill_and_transfers_round_trip() {
    if !ready() {
        return;
    }
    let mut r = rng(12);
    let a = Tensor::randn(&[33, 17], 1.0, &mut r);
    let b = Tensor::randn(&[33, 17], 1.0, &mut r);
    let mut ga = a.to_device(darts::Device::Cuda).unwrap();
    let shared = ga.clone(); // add_assign must not write through to a shared copy
    ga.add_assign(&b.to_device(darts::Device::Cuda).unwrap())
        .unwrap();
    let mut ca = a.clone();
    ca.add_assign(&b).unwrap();
    assert_close("add_assign", &ga, &ca, TOL);
    assert_close("copy on write", &shared, &a, 0.0);
    let f = Tensor::full_on(&[3, 5], 2.5, darts::Device::Cuda).unwrap();
    assert_eq!(f.to_vec(), vec![2.5; 15]);
    let mut nan = a.to_vec();
    nan[100] = f32::NAN;
    let t = Tensor::from_vec(nan, &[33, 17])
        .unwrap()
        .to_device(darts::Device::Cuda)
        .unwrap();
    assert!(!t.all_finite().unwrap());
    assert!(ga.all_finite().unwrap());
}

#[test]
fn sum_and_mean_match_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(13);
    for shape in [&[1][..], &[255], &[257, 3], &[2, 3, 300, 301]] {
        let x = [Tensor::randn(shape, 1.0, &mut r)];
        parity("sum", &x, 1e-5, 14, |t| ops::sum(&t[0]));
        parity("mean", &x, 1e-5, 15, |t| ops::mean(&t[0]));
    }
}
