//! The int8 network against the f32 inference path on the same folded weights: calibrated on
//! some batches, measured on others.

use super::quantize::{calibrate, Observer, QProgram};
use crate::infer::{lower, tests::network};
use crate::nas::genotype::Genotype;
use crate::nas::space::Arch;
use crate::tensor::Tensor;

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b })
}

fn agreement(arch: Arch, layers: usize, image: usize, observer: Observer) -> f32 {
    let prog = lower(&network(arch, layers, image)).unwrap();
    let mut rng = crate::rng(11);
    let batch = |rng: &mut _| Tensor::randn(&[16, 3, image, image], 1.0, rng);
    let calib: Vec<Tensor> = (0..4).map(|_| batch(&mut rng)).collect();
    let q = QProgram::new(&prog, &calibrate(&prog, &calib, observer).unwrap()).unwrap();
    let x = batch(&mut rng);
    let (want, got) = (prog.forward(x.clone()).unwrap(), q.forward(x).unwrap());
    let (w, g) = (want.to_vec(), got.to_vec());
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = w
        .iter()
        .zip(&g)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err < 0.15 * scale,
        "int8 logits off by {err} (scale {scale})"
    );
    let same = w
        .chunks(10)
        .zip(g.chunks(10))
        .filter(|(a, b)| argmax(a) == argmax(b));
    same.count() as f32 / 16.0
}

#[test]
fn int8_networks_agree_with_f32() {
    for observer in [Observer::Minmax, Observer::Percentile] {
        let darts = Arch::Darts(Genotype::named("DARTS_V2").unwrap());
        assert!(agreement(darts, 3, 9, observer) >= 0.8);
        let cell = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|";
        assert!(agreement(Arch::Nb201(cell.parse().unwrap()), 1, 8, observer) >= 0.8);
    }
}
