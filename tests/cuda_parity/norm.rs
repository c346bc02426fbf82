use darts::ops::{batch_norm2d, BatchNormCfg};
use darts::{Device, Result, Tensor};

use crate::common::{assert_close, parity, ready, rng};

const TOL: f32 = 1e-4;

/// Batch norm of `xs[0]` with γ = `xs[1]`, β = `xs[2]` where given, and running statistics
/// `(rm, rv)` copied to the input's device.
fn bn(xs: &[Tensor], rm: &Tensor, rv: &Tensor, cfg: BatchNormCfg) -> Result<Tensor> {
    let dev = xs[0].device();
    let (mut rm, mut rv) = (rm.to_device(dev)?, rv.to_device(dev)?);
    batch_norm2d(&xs[0], xs.get(1), xs.get(2), &mut rm, &mut rv, cfg)
}

fn running(c: usize, seed: u64) -> (Tensor, Tensor) {
    let mut r = rng(seed);
    (
        Tensor::randn(&[c], 1.0, &mut r),
        Tensor::uniform(&[c], 0.5, 2.0, &mut r),
    )
}

#[test]
fn training_matches_the_cpu_with_and_without_affine() {
    if !ready() {
        return;
    }
    let mut r = rng(31);
    for shape in [[1, 3, 7, 9], [3, 5, 5, 11], [2, 7, 1, 1], [3, 5, 31, 33]] {
        let c = shape[1];
        let x = Tensor::randn(&shape, 2.0, &mut r);
        let g = Tensor::uniform(&[c], 0.5, 1.5, &mut r);
        let b = Tensor::randn(&[c], 1.0, &mut r);
        let (rm, rv) = running(c, 32);
        let cfg = BatchNormCfg::default();
        let what = format!("batch_norm2d train {shape:?}");
        parity(&what, std::slice::from_ref(&x), TOL, 33, |t| {
            bn(t, &rm, &rv, cfg)
        });
        parity(&format!("{what} affine"), &[x, g, b], TOL, 34, |t| {
            bn(t, &rm, &rv, cfg)
        });
    }
}

#[test]
fn training_is_accurate_on_a_large_offset_batch() {
    if !ready() {
        return;
    }
    // A mean 1000 times the spread, over several blocks per channel.
    let mut r = rng(35);
    let noise = Tensor::randn(&[3, 5, 40, 40], 1.0, &mut r);
    let x = Tensor::from_vec(
        noise.to_vec().iter().map(|v| 1000.0 + v).collect(),
        noise.shape(),
    )
    .unwrap();
    let g = Tensor::uniform(&[5], 0.5, 1.5, &mut r);
    let b = Tensor::randn(&[5], 1.0, &mut r);
    let (rm, rv) = running(5, 36);
    let cfg = BatchNormCfg::default();
    parity("batch_norm2d offset", &[x, g, b], TOL, 37, |t| {
        bn(t, &rm, &rv, cfg)
    });
}

#[test]
fn eval_mode_matches_the_cpu() {
    if !ready() {
        return;
    }
    let mut r = rng(38);
    for shape in [[1, 3, 7, 9], [3, 5, 5, 11], [1, 7, 1, 1]] {
        let c = shape[1];
        let x = Tensor::randn(&shape, 2.0, &mut r);
        let g = Tensor::uniform(&[c], 0.5, 1.5, &mut r);
        let b = Tensor::randn(&[c], 1.0, &mut r);
        let (rm, rv) = running(c, 39);
        let cfg = BatchNormCfg {
            training: false,
            ..Default::default()
        };
        let what = format!("batch_norm2d eval {shape:?}");
        parity(&what, std::slice::from_ref(&x), TOL, 40, |t| {
            bn(t, &rm, &rv, cfg)
        });
        parity(&format!("{what} affine"), &[x, g, b], TOL, 41, |t| {
            bn(t, &rm, &rv, cfg)
        });
    }
}

#[test]
fn running_statistics_follow_the_cpu_on_the_device() {
    if !ready() {
        return;
    }
    let mut r = rng(42);
    let cfg = BatchNormCfg {
        momentum: 0.3,
        ..Default::default()
    };
    for shape in [[3, 5, 5, 11], [2, 3, 1, 1], [3, 5, 40, 40]] {
        let c = shape[1];
        let (rm0, rv0) = running(c, 43);
        let (mut rm_c, mut rv_c) = (rm0.clone(), rv0.clone());
        let (mut rm_g, mut rv_g) = (
            rm0.to_device(Device::Cuda).unwrap(),
            rv0.to_device(Device::Cuda).unwrap(),
        );
        let held = rm_g.clone();
        // Two training steps on different batches (the second offset), then one evaluation.
        for step in 0..3 {
            let offset = if step == 1 { 500.0 } else { 0.0 };
            let x = Tensor::randn(&shape, 1.5, &mut r);
            let x =
                Tensor::from_vec(x.to_vec().iter().map(|v| v + offset).collect(), &shape).unwrap();
            let cfg = BatchNormCfg {
                training: step < 2,
                ..cfg
            };
            let xg = x.to_device(Device::Cuda).unwrap();
            let yc = batch_norm2d(&x, None, None, &mut rm_c, &mut rv_c, cfg).unwrap();
            let yg = batch_norm2d(&xg, None, None, &mut rm_g, &mut rv_g, cfg).unwrap();
            assert_close(&format!("{shape:?} step {step} output"), &yg, &yc, TOL);
            assert_close(
                &format!("{shape:?} step {step} running mean"),
                &rm_g,
                &rm_c,
                1e-6,
            );
            assert_close(
                &format!("{shape:?} step {step} running var"),
                &rv_g,
                &rv_c,
                1e-6,
            );
        }
        assert_close("a clone taken before keeps its values", &held, &rm0, 0.0);
    }
}

#[test]
fn mixed_devices_are_errors() {
    if !ready() {
        return;
    }
    let x = Tensor::ones(&[2, 3, 2, 2]).to_device(Device::Cuda).unwrap();
    let g = Tensor::ones(&[3]);
    let (mut rm, mut rv) = (Tensor::zeros(&[3]), Tensor::ones(&[3]));
    let cfg = BatchNormCfg::default();
    let e = batch_norm2d(&x, None, None, &mut rm, &mut rv, cfg).unwrap_err();
    assert!(e.to_string().contains("batch_norm2d"), "{e}");
    let (mut rm, mut rv) = (
        rm.to_device(Device::Cuda).unwrap(),
        rv.to_device(Device::Cuda).unwrap(),
    );
    assert!(batch_norm2d(&x, Some(&g), None, &mut rm, &mut rv, cfg).is_err());
    assert_eq!(
        rm.to_vec(),
        vec![0.0; 3],
        "failed calls leave the running stats alone"
    );
    let one = Tensor::ones(&[1, 3, 1, 1]).to_device(Device::Cuda).unwrap();
    let e = batch_norm2d(&one, None, None, &mut rm, &mut rv, cfg).unwrap_err();
    assert!(e.to_string().contains("more than one value"), "{e}");
}
