//! Every int8 kernel, on every instruction set this CPU has (the scalar and AVX2 paths always
//! among them where the CPU has AVX2), against a reference written the plain way (NCHW, seven
//! loops, padding skipped), bit for bit, on awkward shapes: odd channel counts, reductions not
//! a multiple of 4, stride 2, dilation 2, depthwise, batches of 1 and 3.

use rand::{Rng, RngCore};

use super::elementwise as ew;
use super::gemm::{gemm, Adds, Epilogue, Gemm, PackedW};
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
fn every_isa_this_cpu_has_is_tested() {
    let all = Isa::available();
    assert_eq!(all[0], Isa::Scalar);
    assert!(all.contains(&Isa::detect()));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        assert!(all.contains(&Isa::Avx2));
    }
}

#[test]
fn rounding_is_to_nearest_even() {
    let mut rng = crate::rng(4);
    for _ in 0..10_000 {
        let v: f32 = rng.random_range(-600.0..600.0);
        let want = (v.clamp(-512.0, 512.0).round_ties_even() as i32 + 7).clamp(0, 255) as u8;
        assert_eq!(isa::to_u8(v, 7, 0), want, "{v}");
    }
    assert_eq!(isa::to_u8(2.5, 0, 0), 2);
    assert_eq!(isa::to_u8(3.5, 0, 0), 4);
}

/// The AVX-512 requantisation, shortened to a rounding conversion and a saturating narrowing,
/// against `to_u8` on ties, the ±512 clamp, values past i32 and NaN.
#[test]
fn vector_requantisation_equals_to_u8() {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() >= Isa::Avx512Vnni {
        use std::arch::x86_64::*;
        let mut rng = crate::rng(6);
        let mut vals = vec![
            0.5, 1.5, 2.5, -0.5, -1.5, 511.5, 512.5, -512.5, -513.0, 3e9, -3e9,
        ];
        vals.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            254.5,
            -255.5,
            127.49,
        ]);
        vals.extend((0..4000).map(|_| rng.random_range(-700.0f32..700.0)));
        vals.extend((0..4000).map(|_| rng.random_range(-40i32..40) as f32 + 0.5));
        for chunk in vals.chunks(16) {
            let mut v = [0f32; 16];
            v[..chunk.len()].copy_from_slice(chunk);
            for (zp, lo) in [(0, 0), (128, 0), (37, 37), (255, 255)] {
                // SAFETY: the CPU has AVX-512 (checked above).
                let got: [u8; 16] = unsafe {
                    let rq = isa::x86::Requant16::new(zp, lo);
                    std::mem::transmute(rq.finish(_mm512_loadu_ps(v.as_ptr())))
                };
                let want: Vec<u8> = v.iter().map(|&x| isa::to_u8(x, zp, lo)).collect();
                assert_eq!(got.to_vec(), want, "{v:?} zp {zp} lo {lo}");
            }
        }
    }
}

#[test]
fn gemm_is_exact_on_every_isa() {
    let mut rng = crate::rng(1);
    // Row counts around the tiles: 16 and 2 positions for the paired kernel of eight outputs,
    // 8, 6 and 4 for the others, and their remainders.
    let shapes = [1usize, 3, 4, 9, 13, 16, 64, 67]
        .into_iter()
        .flat_map(|k| [1, 3, 8, 13, 16, 17, 24, 33, 64, 70].map(|n| (k, n)))
        .flat_map(|(k, n)| [1, 2, 7, 17, 35].map(|rows| (k, n, rows)));
    for (k, n, rows) in shapes {
        let kp = k.div_ceil(4) * 4;
        let mut a = bytes(rows * kp, &mut rng);
        let mut w = weights(n * k, &mut rng);
        // The extremes, where vpmaddubsw's i16 pair sums would saturate.
        a[..k.min(2)].fill(255);
        w[..k.min(2)].fill(127);
        let epi = Epilogue {
            bias: (0..n.div_ceil(16) * 16)
                .map(|_| rng.random_range(-9999..9999))
                .collect(),
            mult: (0..n.div_ceil(16) * 16)
                .map(|_| rng.random_range(1e-4..1e-2))
                .collect(),
            zp: rng.random_range(0..256),
            lo: rng.random_range(0..100),
        };
        // Zero to three maps added in the epilogue (a node's sum).
        let maps: Vec<Vec<u8>> = (0..rng.random_range(0..4))
            .map(|_| bytes(rows * n, &mut rng))
            .collect();
        let adds = Adds {
            terms: maps
                .iter()
                .map(|m| (&m[..], rng.random_range(0.1..3.0)))
                .collect(),
            shift: rng.random_range(-300.0..0.0),
        };
        let want: Vec<u8> = (0..rows * n)
            .map(|i| {
                let (p, o) = (i / n, i % n);
                let acc: i32 = (0..k)
                    .map(|j| a[p * kp + j] as i32 * w[o * k + j] as i32)
                    .sum();
                let acc = acc + epi.bias[o];
                if maps.is_empty() {
                    return requant(acc, epi.mult[o], epi.zp, epi.lo);
                }
                let mut v = acc as f32 * epi.mult[o];
                for &(q, a) in &adds.terms {
                    v += a * q[i] as f32;
                }
                isa::to_u8(v + adds.shift, epi.zp, epi.lo)
            })
            .collect();
        let packed = PackedW::new(&w, n, k);
        for isa in Isa::available() {
            let mut got = vec![0u8; rows * n];
            let g = Gemm {
                a: &a,
                lda: kp,
                rows,
                w: &packed,
                epi: &epi,
                adds: &adds,
            };
            gemm(isa, &g, &mut got);
            let terms = maps.len();
            assert_eq!(got, want, "{isa:?} k {k} n {n} rows {rows} terms {terms}");
        }
    }
}

/// The plain convolution on NCHW bytes: `requant(round(b/(s_x s_w)) + Σ w·(x − zp))`, taps
/// outside skipped.
fn reference(c: &QConv, x: &[u8], [n, cin, h, w]: [usize; 4], xq: (f32, u8), out: OutQ) -> Vec<u8> {
    reference_sum(c, x, [n, cin, h, w], xq, &[], out)
}

/// [`reference`] plus the NCHW maps `adds` (bytes, scale, zero point) in the epilogue:
/// `to_u8(acc·m + Σ_t a_t·q_t − Σ_t a_t·zp_t)`, `a_t = s_t/s_y`.
fn reference_sum(
    c: &QConv,
    x: &[u8],
    [n, cin, h, w]: [usize; 4],
    xq: (f32, u8),
    adds: &[(&[u8], f32, u8)],
    out: OutQ,
) -> Vec<u8> {
    let a: Vec<f32> = adds.iter().map(|t| t.1 / out.scale).collect();
    let shift = -adds
        .iter()
        .zip(&a)
        .map(|(t, &a)| a * t.2 as f32)
        .sum::<f32>();
    let (k, s, p, d) = (c.k, c.cfg.stride, c.cfg.padding, c.cfg.dilation);
    let oh = (h + 2 * p - d * (k - 1) - 1) / s + 1;
    let ow = (w + 2 * p - d * (k - 1) - 1) / s + 1;
    let dw = c.cfg.groups > 1;
    let mut y = Vec::new();
    for b in 0..n {
        for o in 0..c.cout {
            let sb = xq.0 * c.w_scale[o];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias[o];
                    let chans: Vec<usize> = if dw { vec![o] } else { (0..cin).collect() };
                    for (ci, &ch) in chans.iter().enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky * d) as isize - p as isize;
                                let ix = (ox * s + kx * d) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let xv = x[((b * cin + ch) * h + iy as usize) * w + ix as usize];
                                let wv = c.w[((o * chans.len() + ci) * k + ky) * k + kx];
                                acc += wv as i32 * (xv as i32 - xq.1 as i32);
                            }
                        }
                    }
                    let (m, i) = (sb / out.scale, y.len());
                    y.push(if adds.is_empty() {
                        requant(acc, m, out.zp as i32, out.lo())
                    } else {
                        let v = adds
                            .iter()
                            .zip(&a)
                            .fold(acc as f32 * m, |v, (t, &a)| v + a * t.0[i] as f32);
                        isa::to_u8(v + shift, out.zp as i32, out.lo())
                    });
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
        (3, 5, 7, 9, 7, 3, 2, 1, 1, false),
        (1, 37, 6, 5, 5, 1, 1, 0, 1, false),
        (3, 3, 9, 8, 11, 3, 1, 2, 2, false),
        (1, 1, 24, 9, 8, 3, 1, 1, 1, false),
        (3, 13, 33, 6, 5, 1, 1, 0, 1, false),
        (1, 16, 16, 7, 7, 1, 1, 0, 1, false),
        (3, 64, 70, 4, 3, 1, 1, 0, 1, false),
        (1, 70, 5, 3, 4, 1, 2, 0, 1, false),
        (3, 5, 5, 11, 9, 5, 2, 4, 2, true),
        (1, 3, 3, 7, 6, 3, 1, 1, 1, true),
        (3, 13, 13, 9, 9, 3, 1, 2, 2, true),
        (1, 6, 6, 9, 9, 3, 2, 2, 2, true),
        (3, 8, 8, 10, 7, 3, 1, 1, 1, true),
        // Border-only maps, rows of several 64-lane blocks, DARTS's shapes.
        (1, 8, 8, 1, 1, 3, 1, 1, 1, true),
        (3, 5, 5, 2, 2, 3, 2, 1, 1, true),
        (3, 3, 3, 2, 2, 3, 1, 2, 2, true),
        (1, 32, 32, 7, 7, 3, 1, 1, 1, true),
        (3, 16, 16, 14, 14, 3, 2, 1, 1, true),
        (1, 8, 8, 28, 28, 3, 1, 2, 2, true),
        (3, 13, 13, 12, 11, 5, 1, 2, 1, true),
        // The VBMI tap groups: windows past 64 bytes with weights repeating every 16 lanes,
        // a 5-tap row split 4 + 1, groups of two taps at 64 channels.
        (1, 16, 16, 9, 9, 3, 1, 2, 2, true),
        (3, 16, 16, 7, 8, 5, 1, 4, 2, true),
        (1, 64, 64, 5, 5, 3, 1, 1, 1, true),
    ];
    for (n, cin, cout, h, w, k, s, p, d, dw) in cases {
        let per = if dw { 1 } else { cin };
        let cfg = Conv2dCfg {
            stride: s,
            padding: p,
            dilation: d,
            groups: if dw { cin } else { 1 },
        };
        let conv = QConv::new(
            weights(cout * per * k * k, &mut rng),
            (0..cout).map(|_| rng.random_range(0.001..0.02)).collect(),
            (0..cout).map(|_| rng.random_range(-5000..5000)).collect(),
            cin,
            cout,
            k,
            cfg,
        )
        .unwrap();
        let nchw = bytes(n * cin * h * w, &mut rng);
        let xq = (0.03, rng.random());
        let x = QTensor::from_nchw(&nchw, [n, cin, h, w], xq.0, xq.1);
        for relu in [false, true] {
            let out = OutQ {
                scale: 0.05,
                zp: 100,
                relu,
            };
            let want = reference(&conv, &nchw, [n, cin, h, w], xq, out);
            // The ReLU a depthwise conv fuses into its input.
            let rectified: Vec<u8> = nchw.iter().map(|&v| v.max(xq.1)).collect();
            let want_relu_in = reference(&conv, &rectified, [n, cin, h, w], xq, out);
            // A node's other two terms, added by a dense conv's epilogue.
            let [_, oh, ow, _] = conv.forward(Isa::Scalar, &x, out).unwrap().shape;
            let terms: Vec<(Vec<u8>, f32, u8)> = (0..2)
                .map(|_| {
                    (
                        bytes(n * cout * oh * ow, &mut rng),
                        rng.random_range(0.01..0.1),
                        rng.random(),
                    )
                })
                .collect();
            let maps: Vec<QTensor> = terms
                .iter()
                .map(|t| QTensor::from_nchw(&t.0, [n, cout, oh, ow], t.1, t.2))
                .collect();
            let refs: Vec<(&[u8], f32, u8)> = terms.iter().map(|t| (&t.0[..], t.1, t.2)).collect();
            let want_sum = reference_sum(&conv, &nchw, [n, cin, h, w], xq, &refs, out);
            let maps: Vec<&QTensor> = maps.iter().collect();
            for isa in Isa::available() {
                let got = conv.forward(isa, &x, out).unwrap();
                let case =
                    format!("{isa:?} case n{n} {cin}->{cout} {h}x{w} k{k} s{s} d{d} dw {dw}");
                assert_eq!(got.to_nchw(), want, "{case}");
                let got = conv.forward_fused(isa, &x, true, &[], out).unwrap();
                assert_eq!(got.to_nchw(), want_relu_in, "{case}, ReLU in");
                let got = conv.forward_fused(isa, &x, false, &maps, out);
                if dw {
                    assert!(got.is_err(), "{case}: a depthwise conv adds no maps");
                } else {
                    assert_eq!(
                        got.unwrap().to_nchw(),
                        want_sum,
                        "{case}, sum in the epilogue"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_conv_weights_are_an_error() {
    let cfg = Conv2dCfg {
        stride: 1,
        padding: 0,
        dilation: 1,
        groups: 1,
    };
    assert!(QConv::new(vec![0; 5], vec![1.0; 2], vec![0; 2], 3, 2, 1, cfg).is_err());
    let conv = QConv::new(vec![0; 6], vec![1.0; 2], vec![0; 2], 3, 2, 1, cfg).unwrap();
    let x = QTensor::zeros([1, 2, 2, 4], 1.0, 0);
    let out = OutQ {
        scale: 1.0,
        zp: 0,
        relu: false,
    };
    assert!(conv.forward(Isa::Scalar, &x, out).is_err());
}

fn dequant(q: &QTensor) -> Tensor {
    let [n, h, w, c] = q.shape;
    let v = q
        .to_nchw()
        .iter()
        .map(|&b| q.scale * (b as f32 - q.zp as f32))
        .collect();
    Tensor::from_vec(v, &[n, c, h, w]).unwrap()
}

#[test]
fn pools_match_the_float_pools_on_every_isa() {
    let mut rng = crate::rng(3);
    for (n, c, h, w, k, s, p) in [
        (1, 3, 7, 9, 3, 1, 1),
        (3, 16, 8, 5, 3, 2, 1),
        (3, 13, 9, 9, 2, 2, 0),
        // The channel counts with kernels of their own, one past a 64-lane block.
        (1, 8, 6, 7, 3, 1, 1),
        (3, 32, 5, 5, 3, 2, 1),
        (1, 64, 4, 3, 3, 1, 1),
        (1, 70, 4, 4, 3, 2, 1),
    ] {
        let x = QTensor::from_nchw(&bytes(n * c * h * w, &mut rng), [n, c, h, w], 0.1, 17);
        let f = dequant(&x);
        let mx = crate::ops::max_pool2d(&f, k, s, p).unwrap().to_vec();
        let av = crate::ops::avg_pool2d(&f, k, s, p).unwrap().to_vec();
        let first = ew::pool(Isa::Scalar, &x, false, k, s, p).unwrap();
        for isa in Isa::available() {
            assert_eq!(
                dequant(&ew::pool(isa, &x, true, k, s, p).unwrap()).to_vec(),
                mx
            );
            let got = ew::pool(isa, &x, false, k, s, p).unwrap();
            assert_eq!(got, first, "{isa:?}");
            for (a, b) in dequant(&got).to_vec().iter().zip(&av) {
                assert!((a - b).abs() <= 0.05 + 1e-5, "{a} vs {b}");
            }
        }
    }
}

#[test]
fn sums_and_concats_are_exact_on_every_isa_and_close_to_real() {
    let mut rng = crate::rng(5);
    for (n, h, w, c) in [(1, 3, 5, 13), (3, 7, 7, 8), (1, 28, 28, 3)] {
        let a = QTensor::from_nchw(&bytes(n * c * h * w, &mut rng), [n, c, h, w], 0.02, 30);
        let b = QTensor::from_nchw(&bytes(n * c * h * w, &mut rng), [n, c, h, w], 0.05, 200);
        let out = OutQ {
            scale: 0.04,
            zp: 90,
            relu: false,
        };
        let (fa, fb) = (dequant(&a).to_vec(), dequant(&b).to_vec());
        let s0 = ew::sum(Isa::Scalar, &[&a, &b], out).unwrap();
        for (got, (x, y)) in dequant(&s0).to_vec().iter().zip(fa.iter().zip(&fb)) {
            let want = (x + y).clamp(-90.0 * 0.04, 165.0 * 0.04);
            assert!((got - want).abs() <= 0.02 + 1e-4, "{got} vs {want}");
        }
        let c0 = ew::concat(Isa::Scalar, &[&a, &b, &a], out).unwrap();
        assert_eq!(c0.shape, [n, h, w, 3 * c]);
        let cat = dequant(&c0).to_vec();
        let plane = h * w;
        for (i, &b) in fb.iter().enumerate() {
            let (s, r) = (i / (c * plane), i % (c * plane));
            let got = cat[s * 3 * c * plane + c * plane + r];
            let want = b.clamp(-90.0 * 0.04, 165.0 * 0.04);
            assert!((got - want).abs() <= 0.02 + 1e-4, "{got} vs {want}");
        }
        for isa in Isa::available() {
            assert_eq!(ew::sum(isa, &[&a, &b], out).unwrap(), s0, "{isa:?}");
            assert_eq!(ew::concat(isa, &[&a, &b, &a], out).unwrap(), c0, "{isa:?}");
        }
    }
}

#[test]
fn layout_round_trips_and_shift_moves_one_pixel() {
    let mut rng = crate::rng(6);
    let (n, c, h, w) = (3, 5, 4, 6);
    let nchw = bytes(n * c * h * w, &mut rng);
    let x = QTensor::from_nchw(&nchw, [n, c, h, w], 1.0, 9);
    assert_eq!(x.to_nchw(), nchw);
    let y = ew::shift(&x).to_nchw();
    for (i, &v) in y.iter().enumerate() {
        let (yy, xx) = (i / w % h, i % w);
        let want = if yy + 1 < h && xx + 1 < w {
            nchw[i + w + 1]
        } else {
            9
        };
        assert_eq!(v, want);
    }
}
