use darts::{ops, Device, Tensor};

use crate::common::{parity, ready, rng};

const TOL: f32 = 1e-4;

#[test]
fn matmul_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(400);
    for (i, (m, k, n)) in [(1, 1, 1), (7, 13, 5), (3, 1, 9), (33, 17, 65)]
        .into_iter()
        .enumerate()
    {
        let ab = [
            Tensor::randn(&[m, k], 1.0, &mut r),
            Tensor::randn(&[k, n], 1.0, &mut r),
        ];
        parity(
            &format!("matmul {m}x{k}x{n}"),
            &ab,
            TOL,
            401 + i as u64,
            |t| ops::matmul(&t[0], &t[1]),
        );
    }
}

#[test]
fn linear_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(500);
    for (i, (n, fin, fout)) in [(1, 7, 3), (3, 13, 7), (257, 33, 10)]
        .into_iter()
        .enumerate()
    {
        let x = Tensor::randn(&[n, fin], 1.0, &mut r);
        let w = Tensor::randn(&[fout, fin], 0.3, &mut r);
        let b = Tensor::randn(&[fout], 1.0, &mut r);
        let seed = 501 + 2 * i as u64;
        parity(
            &format!("linear {n}x{fin}->{fout}"),
            &[x.clone(), w.clone()],
            TOL,
            seed,
            |t| ops::linear(&t[0], &t[1], None),
        );
        parity(
            &format!("linear {n}x{fin}->{fout} + bias"),
            &[x, w, b],
            TOL,
            seed + 1,
            |t| ops::linear(&t[0], &t[1], Some(&t[2])),
        );
    }
}

#[test]
fn matmul_operands_on_different_devices_are_an_error() {
    if !ready() {
        return;
    }
    let a = Tensor::ones(&[2, 3]).to_device(Device::Cuda).unwrap();
    let b = Tensor::ones(&[3, 4]);
    assert!(ops::matmul(&a, &b).is_err());
    let w = Tensor::ones(&[4, 3]).to_device(Device::Cuda).unwrap();
    assert!(ops::linear(&a, &w, Some(&Tensor::ones(&[4]))).is_err());
}
