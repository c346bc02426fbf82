use darts::ops::{self, Conv2dCfg};
use darts::{Device, Tensor};

use crate::common::{assert_close, parity, ready, rng};

const TOL: f32 = 1e-4;

/// One parity case: x [n, cin, h, w], w [cout, cin/groups, k, k], an optional bias.
struct Case {
    what: &'static str,
    n: usize,
    cin: usize,
    cout: usize,
    hw: (usize, usize),
    k: usize,
    cfg: Conv2dCfg,
    bias: bool,
}

fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation,
        groups,
    }
}

fn run(cases: &[Case], seed: u64) {
    let mut r = rng(seed);
    for (i, c) in cases.iter().enumerate() {
        let x = Tensor::randn(&[c.n, c.cin, c.hw.0, c.hw.1], 1.0, &mut r);
        let w = Tensor::randn(&[c.cout, c.cin / c.cfg.groups, c.k, c.k], 0.5, &mut r);
        let mut inputs = vec![x, w];
        if c.bias {
            inputs.push(Tensor::randn(&[c.cout], 1.0, &mut r));
        }
        let cfg = c.cfg;
        parity(c.what, &inputs, TOL, seed + i as u64, |t| {
            ops::conv2d(&t[0], &t[1], t.get(2), cfg)
        });
    }
}

#[test]
fn dense_and_grouped_convs_match_the_cpu() {
    if !ready() {
        return;
    }
    #[rustfmt::skip]
    let cases = [
        Case { what: "3x3 pad 1", n: 3, cin: 3, cout: 4, hw: (7, 9), k: 3, cfg: cfg(1, 1, 1, 1), bias: true },
        Case { what: "3x3 pad 1 stride 2", n: 1, cin: 3, cout: 5, hw: (11, 5), k: 3, cfg: cfg(2, 1, 1, 1), bias: true },
        Case { what: "3x3 unpadded, no bias", n: 1, cin: 2, cout: 3, hw: (7, 9), k: 3, cfg: cfg(1, 0, 1, 1), bias: false },
        Case { what: "1x1", n: 3, cin: 4, cout: 5, hw: (7, 9), k: 1, cfg: cfg(1, 0, 1, 1), bias: true },
        Case { what: "1x1 one sample", n: 1, cin: 5, cout: 3, hw: (11, 5), k: 1, cfg: cfg(1, 0, 1, 1), bias: false },
        Case { what: "1x1 one sample, bias", n: 1, cin: 5, cout: 3, hw: (11, 5), k: 1, cfg: cfg(1, 0, 1, 1), bias: true },
        Case { what: "1x1 stride 2", n: 3, cin: 4, cout: 4, hw: (7, 9), k: 1, cfg: cfg(2, 0, 1, 1), bias: false },
        Case { what: "5x5 dilation 2", n: 3, cin: 2, cout: 3, hw: (11, 9), k: 5, cfg: cfg(1, 4, 2, 1), bias: true },
        Case { what: "5x5 dilation 2 stride 2", n: 1, cin: 3, cout: 2, hw: (13, 11), k: 5, cfg: cfg(2, 3, 2, 1), bias: false },
        Case { what: "groups 2", n: 3, cin: 4, cout: 6, hw: (7, 9), k: 3, cfg: cfg(1, 1, 1, 2), bias: true },
        Case { what: "groups 2 stride 2", n: 1, cin: 4, cout: 2, hw: (11, 5), k: 3, cfg: cfg(2, 1, 1, 2), bias: false },
        Case { what: "1x1 groups 2", n: 3, cin: 4, cout: 6, hw: (5, 3), k: 1, cfg: cfg(1, 0, 1, 2), bias: true },
    ];
    run(&cases, 100);
}

#[test]
fn depthwise_convs_match_the_cpu() {
    if !ready() {
        return;
    }
    #[rustfmt::skip]
    let cases = [
        Case { what: "dw 3x3 pad 1", n: 3, cin: 5, cout: 5, hw: (7, 9), k: 3, cfg: cfg(1, 1, 1, 5), bias: false },
        Case { what: "dw 3x3 stride 2", n: 1, cin: 4, cout: 4, hw: (11, 5), k: 3, cfg: cfg(2, 1, 1, 4), bias: true },
        Case { what: "dw 5x5 pad 2", n: 3, cin: 3, cout: 3, hw: (7, 9), k: 5, cfg: cfg(1, 2, 1, 3), bias: true },
        Case { what: "dw 3x3 dilation 2", n: 3, cin: 3, cout: 3, hw: (11, 5), k: 3, cfg: cfg(1, 2, 2, 3), bias: false },
        Case { what: "dw 5x5 dilation 2", n: 1, cin: 5, cout: 5, hw: (9, 13), k: 5, cfg: cfg(1, 4, 2, 5), bias: false },
        Case { what: "dw 5x5 dilation 2 stride 2", n: 3, cin: 2, cout: 2, hw: (11, 5), k: 5, cfg: cfg(2, 4, 2, 2), bias: true },
        Case { what: "dw 3x3 unpadded", n: 1, cin: 3, cout: 3, hw: (7, 9), k: 3, cfg: cfg(1, 0, 1, 3), bias: false },
        Case { what: "dw multiplier 2", n: 3, cin: 3, cout: 6, hw: (7, 9), k: 3, cfg: cfg(1, 1, 1, 3), bias: true },
        Case { what: "dw 7x7 (two groups of taps)", n: 1, cin: 2, cout: 2, hw: (9, 13), k: 7, cfg: cfg(1, 3, 1, 2), bias: false },
        // N·OH·OW > 1024: the weight gradient is summed from several splits.
        Case { what: "dw split sums", n: 3, cin: 2, cout: 2, hw: (19, 19), k: 3, cfg: cfg(1, 1, 1, 2), bias: false },
    ];
    run(&cases, 200);
}

#[test]
fn conv_backward_computes_only_what_is_asked() {
    if !ready() {
        return;
    }
    let mut r = rng(250);
    let on_gpu = |t: &Tensor| t.to_device(Device::Cuda).unwrap();
    // (cin, cout, k, cfg): 1×1, 3×3 grouped, depthwise.
    for (cin, cout, k, c) in [
        (4, 6, 1, cfg(1, 0, 1, 1)),
        (4, 6, 3, cfg(2, 1, 1, 2)),
        (3, 3, 3, cfg(1, 1, 1, 3)),
    ] {
        let x = Tensor::randn(&[3, cin, 7, 9], 1.0, &mut r);
        let w = Tensor::randn(&[cout, cin / c.groups, k, k], 1.0, &mut r);
        let y = ops::conv2d(&x, &w, None, c).unwrap();
        let dy = Tensor::randn(y.shape(), 1.0, &mut r);
        for needs in [
            [true, false, false],
            [false, true, false],
            [false, false, true],
        ] {
            let cpu = ops::conv2d_backward(&x, &w, &dy, c, needs).unwrap();
            let gpu =
                ops::conv2d_backward(&on_gpu(&x), &on_gpu(&w), &on_gpu(&dy), c, needs).unwrap();
            for (what, g, cp) in [
                ("x", gpu.x, cpu.x),
                ("w", gpu.w, cpu.w),
                ("bias", gpu.bias, cpu.bias),
            ] {
                match (g, cp) {
                    (Some(g), Some(cp)) => assert_close(what, &g, &cp, TOL),
                    (None, None) => {}
                    _ => panic!("{what}: computed on one device only ({needs:?})"),
                }
            }
        }
    }
}

#[test]
fn conv_gradients_are_the_same_on_every_run() {
    if !ready() {
        return;
    }
    let mut r = rng(300);
    let x = Tensor::randn(&[3, 2, 19, 19], 1.0, &mut r);
    let on_gpu = |t: &Tensor| t.to_device(Device::Cuda).unwrap();
    for (groups, cout) in [(2, 2), (1, 3)] {
        let w = Tensor::randn(&[cout, 2 / groups, 3, 3], 1.0, &mut r);
        let dy = Tensor::randn(&[3, cout, 19, 19], 1.0, &mut r);
        let c = cfg(1, 1, 1, groups);
        let grads = || {
            let g =
                ops::conv2d_backward(&on_gpu(&x), &on_gpu(&w), &on_gpu(&dy), c, [true; 3]).unwrap();
            [g.x.unwrap(), g.w.unwrap(), g.bias.unwrap()]
        };
        let (a, b) = (grads(), grads());
        for (a, b) in a.iter().zip(&b) {
            assert_close("repeated conv backward", a, b, 0.0);
        }
    }
}

#[test]
fn conv_operands_on_different_devices_are_an_error() {
    if !ready() {
        return;
    }
    let x = Tensor::ones(&[1, 2, 5, 5]).to_device(Device::Cuda).unwrap();
    let w = Tensor::ones(&[3, 2, 3, 3]);
    assert!(ops::conv2d(&x, &w, None, Conv2dCfg::default()).is_err());
    let w = w.to_device(Device::Cuda).unwrap();
    let b = Tensor::ones(&[3]);
    assert!(ops::conv2d(&x, &w, Some(&b), Conv2dCfg::default()).is_err());
}
