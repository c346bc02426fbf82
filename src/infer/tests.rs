//! The lowered program against the training path's eval-mode forward on the same weights, with
//! BN statistics and affine parameters drawn away from their initial values so folding matters.

use rand::Rng;

use super::lower;
use crate::nas::genotype::Genotype;
use crate::nas::network::{Network, NetworkSpec};
use crate::nas::space::Arch;
use crate::nn::{Ctx, Module};
use crate::tensor::Tensor;

pub(crate) fn network(genotype: Arch, layers: usize, image: usize) -> Network {
    let spec = NetworkSpec {
        channels: 4,
        layers,
        num_classes: 10,
        in_channels: 3,
        image_size: image,
        auxiliary: false,
        genotype,
    };
    let mut rng = crate::rng(7);
    let mut net = Network::new(spec, &mut rng).unwrap();
    net.visit_mut("", &mut |name, t, _| {
        if t.shape().len() != 1 {
            return;
        }
        let n = t.numel();
        let v: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| rng.random_range(0.3..2.0)).collect()
        } else if name.ends_with("weight") {
            (0..n).map(|_| rng.random_range(0.5..1.5)).collect()
        } else {
            (0..n).map(|_| rng.random_range(-0.5..0.5)).collect()
        };
        *t = Tensor::from_vec(v, &[n]).unwrap();
    });
    net
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b })
}

/// Logits within 1e-4 of the largest logit's magnitude, and the same predicted class, at
/// batches of 1, 3 and 5.
fn check(mut net: Network) {
    for n in [1, 3, 5] {
        check_batch(&mut net, n);
    }
}

fn check_batch(net: &mut Network, n: usize) {
    let s = net.spec.image_size;
    let x = Tensor::randn(&[n, 3, s, s], 1.0, &mut crate::rng(3));
    let (want, _) = crate::no_grad(|| net.forward(&x, &mut Ctx::new(false, 0))).unwrap();
    let prog = lower(net).unwrap();
    // Twice: the second run reuses the plan and this thread's arena the first one made.
    for _ in 0..2 {
        let got = prog.forward(x.clone()).unwrap();
        assert_eq!(got.shape(), want.shape());
        let (g, w) = (got.to_vec(), want.to_vec());
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b} (scale {scale})");
        }
        for (rg, rw) in g.chunks(10).zip(w.chunks(10)) {
            assert_eq!(argmax(rg), argmax(rw));
        }
    }
}

#[test]
fn darts_genotypes_match_the_training_path() {
    for name in ["DARTS_V1", "DARTS_V2"] {
        check(network(Arch::Darts(Genotype::named(name).unwrap()), 3, 9));
    }
}

#[test]
fn nb201_cells_match_the_training_path() {
    // Every op, and a node whose only edge is `none` (zeros). 8×8: the residual block's 2×2
    // pool and stride-2 conv disagree on odd maps in the training path too.
    for cell in [
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        "|none~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|",
    ] {
        check(network(Arch::Nb201(cell.parse().unwrap()), 1, 8));
    }
}
