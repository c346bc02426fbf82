//! Every int8 kernel, on every instruction set this CPU has, against a scalar reference written
//! the plain way (seven loops, padding skipped), bit for bit, on awkward shapes.

use rand::{Rng, RngCore};

use super::*;
use crate::ops::Conv2dCfg;
use crate::tensor::Tensor;

fn bytes(n: usize, rng: &mut impl RngCore) -> Vec<u8> {
    (0..n).map(|_| rng.random::<u8>()).collect()
}

fn weights(n: usize, rng: &mut impl RngCore) -> Vec<i8> {
    (0..n).map(|_| rng.random_range(-127..=127)).collect()
}

#[test]
fn matvec_is_exact_on_every_isa() {
    let mut rng = crate::rng(1);
    for k in [1, 15, 16, 17, 63, 64, 65, 200] {
        for rows in [1, 3, 4, 9] {
            let mut x = bytes(k, &mut rng);
            let mut w = weights(k * rows, &mut rng);
            // The extremes, where vpmaddubsw's i16 pair sums would saturate.
            x[0] = 255;
            w[0] = 127;
            if k > 1 {
                x[1] = 255;
                w[1] = 127;
            }
            let mut want = vec![0; rows];
            dot::matvec_scalar(&x, &w, &mut want);
            let exact: i64 = (0..k).map(|i| x[i] as i64 * w[i] as i64).sum();
            assert_eq!(want[0] as i64, exact);
            for isa in Isa::available() {
                let mut got = vec![0; rows];
                dot::matvec(isa, &x, &w, &mut got);
                assert_eq!(got, want, "{isa:?} k {k} rows {rows}");
            }
        }
    }
}

/// The plain convolution: `requant(round(b/(s_x s_w)) + Σ w·(x − zp))`, taps outside skipped.
fn reference(c: &QConv, x: &QTensor, out: OutQ) -> Vec<u8> {
    let [n, cin, h, w] = x.shape;
    let (k, s, p, d) = (c.k, c.cfg.stride, c.cfg.padding, c.cfg.dilation);
    let oh = (h + 2 * p - d * (k - 1) - 1) / s + 1;
    let ow = (w + 2 * p - d * (k - 1) - 1) / s + 1;
    let dw = c.cfg.groups > 1;
    let mut y = Vec::new();
    for b in 0..n {
        for o in 0..c.cout {
            let sb = x.scale * c.w_scale[o];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = (c.bias[o] / sb).round() as i32;
                    let chans: Vec<usize> = if dw { vec![o] } else { (0..cin).collect() };
                    for (ci, &ch) in chans.iter().enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky * d) as isize - p as isize;
                                let ix = (ox * s + kx * d) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let xv =
                                    x.data[((b * cin + ch) * h + iy as usize) * w + ix as usize];
                                let wv = c.w[((o * chans.len() + ci) * k + ky) * k + kx];
                                acc += wv as i32 * (xv as i32 - x.zp as i32);
                            }
                        }
                    }
                    let lo = if out.relu { out.zp as i32 } else { 0 };
                    y.push(requant(acc, sb / out.scale, out.zp, lo));
                }
            }
        }
    }
    y
}

#[test]
fn convolutions_match_the_reference_bit_for_bit() {
    let mut rng = crate::rng(2);
    // (n, cin, cout, h, w, k, stride, padding, dilation, depthwise)
    let cases = [
        (2, 5, 7, 9, 7, 3, 2, 1, 1, false),
        (1, 37, 6, 5, 5, 1, 1, 0, 1, false),
        (3, 3, 9, 8, 11, 3, 1, 2, 2, false),
        (2, 70, 5, 3, 4, 1, 2, 0, 1, false),
        (2, 5, 5, 11, 9, 5, 2, 4, 2, true),
        (1, 3, 3, 7, 6, 3, 1, 1, 1, true),
        (2, 6, 6, 9, 9, 3, 2, 2, 2, true),
    ];
    for (n, cin, cout, h, w, k, s, p, d, dw) in cases {
        let per = if dw { 1 } else { cin };
        let conv = QConv {
            w: weights(cout * per * k * k, &mut rng),
            w_scale: (0..cout).map(|_| rng.random_range(0.001..0.02)).collect(),
            bias: (0..cout).map(|_| rng.random_range(-1.0..1.0)).collect(),
            cin,
            cout,
            k,
            cfg: Conv2dCfg {
                stride: s,
                padding: p,
                dilation: d,
                groups: if dw { cin } else { 1 },
            },
        };
        let x = QTensor {
            data: bytes(n * cin * h * w, &mut rng),
            shape: [n, cin, h, w],
            scale: 0.03,
            zp: rng.random(),
        };
        for relu in [false, true] {
            let out = OutQ {
                scale: 0.05,
                zp: 100,
                relu,
            };
            let want = reference(&conv, &x, out);
            for isa in Isa::available() {
                let got = conv.forward(isa, &x, out).unwrap();
                assert_eq!(
                    got.data, want,
                    "{isa:?} case {cin}->{cout} k{k} s{s} d{d} dw {dw}"
                );
            }
        }
    }
}

fn dequant(q: &QTensor) -> Tensor {
    let v = q
        .data
        .iter()
        .map(|&b| q.scale * (b as f32 - q.zp as f32))
        .collect();
    Tensor::from_vec(v, &q.shape).unwrap()
}

#[test]
fn pools_match_the_float_pools() {
    let mut rng = crate::rng(3);
    for (h, w, k, s, p) in [(7, 9, 3, 1, 1), (8, 5, 3, 2, 1), (9, 9, 2, 2, 0)] {
        let x = QTensor {
            data: bytes(2 * 3 * h * w, &mut rng),
            shape: [2, 3, h, w],
            scale: 0.1,
            zp: 17,
        };
        let f = dequant(&x);
        let mx = dequant(&pool(&x, true, k, s, p).unwrap()).to_vec();
        assert_eq!(mx, crate::ops::max_pool2d(&f, k, s, p).unwrap().to_vec());
        let av = dequant(&pool(&x, false, k, s, p).unwrap()).to_vec();
        let want = crate::ops::avg_pool2d(&f, k, s, p).unwrap().to_vec();
        for (a, b) in av.iter().zip(&want) {
            assert!((a - b).abs() <= 0.05 + 1e-5, "{a} vs {b}");
        }
    }
}
