//! conv2d against a naive direct convolution in f64, forward and backward, on awkward shapes
//! that reach every kernel path; determinism across thread counts; the shape errors.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::ops;

/// The sizes of one test case: x [n, cin, h, w], w [cout, cin/groups, kh, kw].
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    cfg: Conv2dCfg,
}

fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation,
        groups,
    }
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let c = |n, cin, h, w, cout, kh, kw, cfg| Case { n, cin, h, w, cout, kh, kw, cfg };
    vec![
        c(1, 3, 7, 9, 4, 3, 3, cfg(1, 1, 1, 1)),     // dense, odd sizes, batch 1
        c(3, 4, 7, 9, 6, 3, 2, cfg(2, 1, 1, 2)),     // grouped, non-square, stride 2
        c(5, 4, 9, 7, 4, 3, 3, cfg(1, 2, 2, 1)),     // dilated dense, two dW partials
        c(2, 2, 5, 6, 3, 2, 3, cfg(3, 2, 1, 1)),     // stride 3, padding wider than the kernel
        c(3, 8, 7, 9, 5, 1, 1, cfg(1, 0, 1, 1)),     // narrow pointwise: tiles, tails, 4+1 rows
        c(2, 3, 4, 5, 9, 1, 1, cfg(1, 0, 1, 1)),     // narrow pointwise shorter than a tile
        c(2, 40, 5, 6, 12, 1, 1, cfg(1, 0, 1, 1)),   // wide pointwise: a plain GEMM
        c(2, 6, 7, 9, 4, 1, 1, cfg(2, 0, 1, 2)),     // 1×1 stride 2, grouped: im2col
        c(5, 6, 2, 2, 7, 2, 2, cfg(1, 0, 1, 1)),     // 1×1 output (aux head): batched GEMM
        c(4, 6, 3, 3, 5, 1, 1, cfg(1, 0, 1, 1)),     // pointwise on 3×3 maps: batched regrouping
        c(3, 4, 4, 5, 6, 2, 2, cfg(1, 0, 1, 2)),     // grouped, 3×4 output: batched im2col
        c(3, 6, 7, 9, 6, 3, 3, cfg(1, 1, 1, 6)),     // depthwise 3×3
        c(2, 5, 9, 7, 5, 5, 5, cfg(1, 4, 2, 5)),     // depthwise 5×5, dilation 2
        c(3, 4, 8, 9, 4, 3, 3, cfg(2, 1, 1, 4)),     // depthwise stride 2 (scatter dx)
        c(2, 3, 7, 9, 3, 3, 5, cfg(1, 2, 1, 3)),     // depthwise non-square, mirrored pads differ
        c(2, 3, 5, 5, 3, 3, 3, cfg(1, 3, 1, 3)),     // depthwise padding beyond (k-1)d
        c(2, 3, 7, 9, 6, 3, 3, cfg(1, 1, 1, 3)),     // depthwise, channel multiplier 2
        c(3, 1, 6, 7, 4, 3, 3, cfg(2, 1, 2, 1)),     // one input channel: multiplier 4, strided
        c(1, 2, 33, 35, 2, 3, 3, cfg(1, 1, 1, 2)),   // depthwise, several 32-wide blocks
        c(1, 3, 4, 4, 3, 5, 5, cfg(1, 2, 1, 3)),     // depthwise, kernel larger than the input
        c(2, 3, 9, 7, 3, 5, 5, cfg(2, 4, 2, 3)),     // depthwise 5×5 d2 stride 2, odd sizes (dil_conv)
        c(2, 2, 11, 10, 2, 3, 3, cfg(3, 1, 1, 2)),   // depthwise stride 3: widened dy, uneven
        c(2, 4, 7, 7, 4, 3, 3, cfg(2, 3, 1, 4)),     // depthwise stride 2, padding beyond (k-1)d
    ]
}

fn rand_tensor(shape: &[usize], rng: &mut StdRng) -> Tensor {
    Tensor::randn(shape, 1.0, rng)
}

/// Naive conv2d forward (f64) and the three gradients for a given dy, by direct loops.
fn reference(c: &Case, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> [Vec<f64>; 4] {
    let Case {
        n,
        cin,
        h,
        w: wd,
        cout,
        kh,
        kw,
        cfg,
    } = *c;
    let (oh, ow) = (
        out_len(h, kh, &cfg).unwrap(),
        out_len(wd, kw, &cfg).unwrap(),
    );
    let (cig, cog) = (cin / cfg.groups, cout / cfg.groups);
    let mut y = vec![0.0f64; n * cout * oh * ow];
    let (mut dx, mut dw) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    let mut db = vec![0.0f64; cout];
    for i in 0..n {
        for o in 0..cout {
            for (oy, ox) in (0..oh).flat_map(|a| (0..ow).map(move |b| (a, b))) {
                let yi = ((i * cout + o) * oh + oy) * ow + ox;
                let mut acc = f64::from(b[o]);
                db[o] += f64::from(dy[yi]);
                for (ci, ky, kx) in (0..cig)
                    .flat_map(|ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ci, ky, kx))))
                {
                    let iy = (oy * cfg.stride + ky * cfg.dilation) as isize - cfg.padding as isize;
                    let ix = (ox * cfg.stride + kx * cfg.dilation) as isize - cfg.padding as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                        continue;
                    }
                    let c_in = o / cog * cig + ci;
                    let xi = ((i * cin + c_in) * h + iy as usize) * wd + ix as usize;
                    let wi = ((o * cig + ci) * kh + ky) * kw + kx;
                    acc += f64::from(w[wi]) * f64::from(x[xi]);
                    dx[xi] += f64::from(w[wi]) * f64::from(dy[yi]);
                    dw[wi] += f64::from(x[xi]) * f64::from(dy[yi]);
                }
                y[yi] = acc;
            }
        }
    }
    [y, dx, dw, db]
}

fn assert_close(what: &str, c: &Case, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} length, {c:?}");
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (1.0 + r.abs());
        assert!(
            (f64::from(g) - r).abs() <= tol,
            "{what}[{i}] = {g}, want {r}, {c:?}"
        );
    }
}

#[test]
fn conv2d_matches_naive_forward_and_backward() {
    let mut rng = StdRng::seed_from_u64(7);
    for c in cases() {
        let x = rand_tensor(&[c.n, c.cin, c.h, c.w], &mut rng);
        let w = rand_tensor(&[c.cout, c.cin / c.cfg.groups, c.kh, c.kw], &mut rng);
        let b = rand_tensor(&[c.cout], &mut rng);
        let y = conv2d(&x, &w, Some(&b), c.cfg).unwrap();
        let dy = rand_tensor(y.shape(), &mut rng);
        let [ry, rdx, rdw, rdb] = reference(&c, x.data(), w.data(), b.data(), dy.data());
        assert_close("y", &c, y.data(), &ry);
        let gr = conv2d_backward(&x, &w, &dy, c.cfg, [true, true, true]).unwrap();
        assert_close("dx", &c, gr.x.unwrap().data(), &rdx);
        assert_close("dw", &c, gr.w.unwrap().data(), &rdw);
        assert_close("db", &c, gr.bias.unwrap().data(), &rdb);
        // Without a bias the output is the same minus b.
        let y0 = conv2d(&x, &w, None, c.cfg).unwrap();
        let ohw = y.numel() / (c.n * c.cout);
        let shifted: Vec<f64> = ry
            .iter()
            .enumerate()
            .map(|(i, v)| v - f64::from(b.data()[i / ohw % c.cout]))
            .collect();
        assert_close("y (no bias)", &c, y0.data(), &shifted);
    }
}

#[test]
fn conv2d_tape_gives_the_backward_kernels_gradients() {
    let mut rng = StdRng::seed_from_u64(3);
    for c in [cases()[1], cases()[7]] {
        let x = rand_tensor(&[c.n, c.cin, c.h, c.w], &mut rng).requires_grad();
        let w = rand_tensor(&[c.cout, c.cin / c.cfg.groups, c.kh, c.kw], &mut rng).requires_grad();
        let b = rand_tensor(&[c.cout], &mut rng).requires_grad();
        let y = conv2d(&x, &w, Some(&b), c.cfg).unwrap();
        let dy = rand_tensor(y.shape(), &mut rng);
        // d/dy of sum(y ⊙ dy) is dy.
        let grads = ops::sum(&ops::mul_mask(&y, &dy).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let want = conv2d_backward(&x, &w, &dy, c.cfg, [true; 3]).unwrap();
        assert_eq!(grads.get(&x).unwrap().to_vec(), want.x.unwrap().to_vec());
        assert_eq!(grads.get(&w).unwrap().to_vec(), want.w.unwrap().to_vec());
        assert_eq!(grads.get(&b).unwrap().to_vec(), want.bias.unwrap().to_vec());
    }
}

#[test]
fn conv2d_backward_skips_what_is_not_needed() {
    let c = cases()[0];
    let mut rng = StdRng::seed_from_u64(5);
    let x = rand_tensor(&[c.n, c.cin, c.h, c.w], &mut rng);
    let w = rand_tensor(&[c.cout, c.cin, c.kh, c.kw], &mut rng);
    let dy = rand_tensor(&[c.n, c.cout, c.h, c.w], &mut rng);
    let full = conv2d_backward(&x, &w, &dy, c.cfg, [true, true, false]).unwrap();
    let only_w = conv2d_backward(&x, &w, &dy, c.cfg, [false, true, false]).unwrap();
    assert!(only_w.x.is_none() && only_w.bias.is_none() && full.bias.is_none());
    assert_eq!(only_w.w.unwrap().to_vec(), full.w.unwrap().to_vec());
}

/// Every output, dense and depthwise, is bit-identical on 1, 2 and 3 threads (batch 1 also
/// takes the split-GEMM path when the pool has more threads than samples).
#[test]
fn conv2d_is_bit_identical_across_thread_counts() {
    let mut rng = StdRng::seed_from_u64(11);
    for c in cases().into_iter().chain([Case { n: 1, ..cases()[2] }]) {
        let x = rand_tensor(&[c.n, c.cin, c.h, c.w], &mut rng);
        let w = rand_tensor(&[c.cout, c.cin / c.cfg.groups, c.kh, c.kw], &mut rng);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = conv2d(&x, &w, None, c.cfg).unwrap();
                let dy = ops::scale(&y, 0.5).unwrap();
                let gr = conv2d_backward(&x, &w, &dy, c.cfg, [true, true, false]).unwrap();
                [y.to_vec(), gr.x.unwrap().to_vec(), gr.w.unwrap().to_vec()]
            })
        };
        let one = run(1);
        assert_eq!(one, run(2), "{c:?}");
        assert_eq!(one, run(3), "{c:?}");
    }
}

#[test]
fn conv2d_rejects_bad_shapes_and_settings() {
    let x = Tensor::zeros(&[2, 4, 5, 5]);
    let w = Tensor::zeros(&[6, 4, 3, 3]);
    let d = Conv2dCfg::default();
    let bad = |x: &[usize], w: &[usize], cfg: Conv2dCfg| {
        conv2d(&Tensor::zeros(x), &Tensor::zeros(w), None, cfg).is_err()
    };
    assert!(bad(&[4, 5, 5], &[6, 4, 3, 3], d), "3-D input");
    assert!(bad(&[2, 4, 5, 5], &[6, 4, 3], d), "3-D weight");
    assert!(
        bad(&[2, 4, 5, 5], &[6, 3, 3, 3], d),
        "weight channels differ"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 1, 3, 3], cfg(1, 0, 1, 3)),
        "groups ∤ Cin"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 1, 3, 3], cfg(1, 0, 1, 4)),
        "groups ∤ Cout"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 3, 3], cfg(0, 0, 1, 1)),
        "stride 0"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 3, 3], cfg(1, 0, 0, 1)),
        "dilation 0"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 3, 3], cfg(1, 0, 1, 0)),
        "groups 0"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 3, 3], cfg(1, 0, 3, 1)),
        "dilated kernel too big"
    );
    assert!(
        bad(&[2, 4, 2, 5], &[6, 4, 3, 3], d),
        "kernel taller than input"
    );
    assert!(bad(&[0, 4, 5, 5], &[6, 4, 3, 3], d), "empty batch");
    assert!(bad(&[2, 4, 5, 5], &[6, 4, 0, 3], d), "empty kernel");
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 1, 1], cfg(1, usize::MAX, 1, 1)),
        "padding overflows"
    );
    assert!(
        bad(&[2, 4, 5, 5], &[6, 4, 3, 3], cfg(1, 0, usize::MAX, 1)),
        "dilation overflows"
    );
    let b = Tensor::zeros(&[5]);
    assert!(conv2d(&x, &w, Some(&b), d).is_err(), "bias length");
    let dy = Tensor::zeros(&[2, 6, 5, 5]);
    assert!(
        conv2d_backward(&x, &w, &dy, d, [true; 3]).is_err(),
        "dy shape"
    );
    assert!(conv2d(&x, &w, None, d).is_ok());
}
