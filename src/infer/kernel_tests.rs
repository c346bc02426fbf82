//! The inference kernels against the training path's ops on awkward shapes: odd channel counts
//! and map sizes, channel counts off the register blocks, stride 2, dilation 2, groups.

use super::kernels::{self, ConvGeom, Epilogue, PoolGeom};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}] {a} vs {b}");
    }
}

/// (Cin, Cout, groups, k, stride, padding, dilation, H, W)
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// One conv of every kind of epilogue: plain, ReLU on the input and the output, and a sum.
fn conv_case(&(cin, cout, groups, k, s, p, d, h, w): &Case) {
    let mut rng = crate::rng(11);
    let x = Tensor::randn(&[1, cin, h, w], 1.0, &mut rng);
    let wt = Tensor::randn(&[cout, cin / groups, k, k], 0.5, &mut rng);
    let b = Tensor::randn(&[cout], 0.5, &mut rng);
    let cfg = Conv2dCfg {
        stride: s,
        padding: p,
        dilation: d,
        groups,
    };
    let plain = ops::conv2d(&x, &wt, Some(&b), cfg).unwrap();
    let on_relu = ops::conv2d(&ops::relu(&x).unwrap(), &wt, Some(&b), cfg).unwrap();
    let (oh, ow) = (plain.shape()[2], plain.shape()[3]);
    let add = Tensor::randn(plain.shape(), 1.0, &mut rng);
    let g = ConvGeom::new((cin, h, w), (cout, k, k), (oh, ow), s, p, d, groups);
    let mut scratch = vec![f32::NAN; g.scratch()];
    let mut out = vec![f32::NAN; cout * oh * ow];
    let run = |relu_in, add: &[&[f32]], relu_out, out: &mut [f32], scratch: &mut [f32]| {
        let epi = Epilogue {
            add,
            lo: kernels::relu_floor(relu_out),
        };
        kernels::conv(
            &g,
            wt.data(),
            b.data(),
            x.data(),
            relu_in,
            out,
            epi,
            scratch,
        );
    };
    run(false, &[], false, &mut out, &mut scratch);
    close(&out, plain.data());
    run(true, &[], true, &mut out, &mut scratch);
    close(&out, ops::relu(&on_relu).unwrap().data());
    run(
        false,
        &[add.data(), add.data()],
        false,
        &mut out,
        &mut scratch,
    );
    let twice = ops::add(&ops::add(&plain, &add).unwrap(), &add).unwrap();
    close(&out, twice.data());
}

#[test]
fn depthwise_convs_match_the_training_path() {
    for case in [
        (5, 5, 5, 3, 1, 1, 1, 7, 9),
        (3, 3, 3, 5, 1, 2, 1, 8, 11),
        (5, 5, 5, 3, 1, 2, 2, 9, 7),
        (3, 3, 3, 5, 2, 2, 1, 9, 8),
        (7, 7, 7, 3, 2, 1, 1, 7, 7),
        (3, 3, 3, 3, 2, 2, 2, 10, 9),
        (3, 6, 3, 3, 1, 1, 1, 5, 6),
    ] {
        conv_case(&case);
    }
}

#[test]
fn dense_and_grouped_convs_match_the_training_path() {
    for case in [
        (1, 24, 1, 3, 1, 1, 1, 9, 7),
        (3, 5, 1, 3, 2, 1, 1, 9, 8),
        (4, 6, 2, 3, 1, 1, 1, 6, 5),
        (5, 3, 1, 1, 1, 1, 1, 5, 5),
    ] {
        conv_case(&case);
    }
}

#[test]
fn pointwise_convs_match_the_training_path() {
    // Channels on and off the 8-output blocks, positions on and off the 16-wide tiles, and
    // FactorizedReduce's stride-2 1×1 on odd maps.
    for case in [
        (5, 11, 1, 1, 1, 0, 1, 7, 5),
        (9, 8, 1, 1, 1, 0, 1, 4, 12),
        (24, 16, 1, 1, 1, 0, 1, 3, 1),
        (5, 3, 1, 1, 2, 0, 1, 9, 7),
        (8, 4, 1, 1, 2, 0, 1, 8, 8),
    ] {
        conv_case(&case);
    }
}

#[test]
fn pools_and_shift_match_the_training_path() {
    let x = Tensor::randn(&[1, 3, 7, 9], 1.0, &mut crate::rng(5));
    for (k, s, p) in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 2, 0), (3, 3, 1)] {
        for max in [true, false] {
            let want = if max {
                ops::max_pool2d(&x, k, s, p)
            } else {
                ops::avg_pool2d(&x, k, s, p)
            }
            .unwrap();
            let (oh, ow) = (want.shape()[2], want.shape()[3]);
            let g = PoolGeom {
                h: 7,
                w: 9,
                oh,
                ow,
                k,
                stride: s,
                pad: p,
            };
            let mut got = vec![f32::NAN; want.numel()];
            let mut scratch = vec![f32::NAN; g.scratch()];
            kernels::pool(&g, x.data(), max, &mut got, &mut scratch);
            close(&got, want.data());
        }
    }
    let mut got = vec![f32::NAN; x.numel()];
    kernels::shift(x.data(), (7, 9), &mut got);
    close(&got, ops::shift(&x, 1, 1).unwrap().data());
}
