//! The int8 network against the f32 inference path on the same folded weights: calibrated on
//! some batches, measured on others; the quantised folder written and read back.

use std::path::{Path, PathBuf};

use super::folder::{
    encode, load, write, Calibration, Encoded, StepSpec, CONFIG, VERSION, WEIGHTS,
};
use super::packed::Packed;
use super::quantize::{calibrate, quantize_weights, Observer, QProgram, QStep};
use crate::data::{DataSpec, DatasetKind};
use crate::infer::{lower, tests::network};
use crate::nas::genotype::Genotype;
use crate::nas::space::Arch;
use crate::tensor::Tensor;
use crate::train::TrainConfig;

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

/// DARTS_V2's normal cells end every node in a separable or dilated conv, so the plan computes
/// each of their sums in that conv's epilogue; the reduction cells' sums of pools stay steps.
/// Each cell's concat then only copies bytes: the sums it joins were given its parameters.
#[test]
fn node_sums_run_in_conv_epilogues_and_concats_copy() {
    let arch = Arch::Darts(Genotype::named("DARTS_V2").unwrap());
    let prog = lower(&network(arch, 3, 9)).unwrap();
    let mut rng = crate::rng(5);
    let calib = vec![Tensor::randn(&[8, 3, 9, 9], 1.0, &mut rng)];
    let q = QProgram::new(&prog, &calibrate(&prog, &calib, Observer::Minmax).unwrap()).unwrap();
    let sums: Vec<usize> = (0..q.steps.len())
        .filter(|&i| matches!(q.steps[i], QStep::Sum { .. }))
        .collect();
    let fused = sums.iter().filter(|&&i| q.plan.skip[i]).count();
    // Three cells of four nodes: the first normal, the other two reductions (at 1/3 and 2/3).
    assert_eq!((sums.len(), fused), (12, 4));
    for (i, step) in q.steps.iter().enumerate() {
        if let QStep::Sum { dst, .. } = step {
            let writer = q.plan.io.iter().rposition(|io| io.1 == *dst).unwrap();
            assert!(writer == i || matches!(q.steps[writer], QStep::Conv { .. }));
        }
        if let QStep::Concat { srcs, dst } = step {
            let shared = srcs
                .iter()
                .filter(|&&s| q.params[s] == q.params[*dst])
                .count();
            assert_eq!(
                shared,
                srcs.len(),
                "step {i}: a concat part in its own parameters"
            );
        }
    }
}

/// `net` quantised on random images of `image`×`image` and encoded as a folder (its training
/// config a made-up builtin-data run: only its fields, not its data, are read back).
fn encoded(net: &crate::nas::network::Network, image: usize) -> (QProgram, Encoded) {
    let prog = lower(net).unwrap();
    let mut rng = crate::rng(3);
    let calib = vec![Tensor::randn(&[8, 3, image, image], 1.0, &mut rng)];
    let q = QProgram::new(&prog, &calibrate(&prog, &calib, Observer::Minmax).unwrap()).unwrap();
    let train = TrainConfig {
        data: DataSpec {
            kind: DatasetKind::Builtin,
            dir: None,
        },
        data_files: Vec::new(),
        genotype: Arch::Darts(Genotype::named("DARTS_V2").unwrap()),
        genotype_source: "DARTS_V2".into(),
        epochs: 1,
        batch_size: 8,
        channels: 4,
        layers: 3,
        lr: 0.025,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        auxiliary_weight: 0.0,
        drop_path: 0.0,
        cutout: 0,
        seed: 0,
        eval_every_epoch: false,
        max_steps: None,
        valid_fraction: 0.0,
        prune: None,
        distill: None,
        stop_after: None,
        device: Default::default(),
    };
    let calibration = Calibration {
        observer: Observer::Minmax,
        batches: 1,
        seed: 3,
    };
    let e = encode(&q, &prog, Path::new("run"), &train, calibration).unwrap();
    (q, e)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("darts-qfolder-{}-{name}", std::process::id()))
}

fn darts_v2() -> crate::nas::network::Network {
    network(Arch::Darts(Genotype::named("DARTS_V2").unwrap()), 3, 9)
}

#[test]
fn a_quantised_folder_reloads_exactly_from_its_packed_tensors() {
    let (q, e) = encoded(&darts_v2(), 9);
    let dir = temp("roundtrip");
    write(&dir, &e).unwrap();
    let (run, loaded) = load(&dir).unwrap();
    let x = Tensor::randn(&[5, 3, 9, 9], 1.0, &mut crate::rng(5));
    let bits = |t: Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(q.forward(x.clone()).unwrap()),
        bits(loaded.forward(x).unwrap())
    );
    assert_eq!(run.params, q.params);

    // Other tools read it: a few 1-D tensors, a one-line JSON, no zero bias stored, a layer's
    // bias in 16 bits exactly where all of it fits.
    let bytes = std::fs::read(dir.join(WEIGHTS)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let known = ["biases", "biases16", "scales", "weights"];
    assert!(names.iter().all(|n| known.contains(n)), "{names:?}");
    assert!(names.contains(&"weights") && names.contains(&"scales"));
    let text = std::fs::read_to_string(dir.join(CONFIG)).unwrap();
    assert_eq!(text.lines().count(), 1, "quantized.json is one line");
    let packed = Packed::from_bytes(&bytes, &dir).unwrap();
    let mut biased = 0;
    for (step, spec) in q.steps.iter().zip(&run.steps) {
        if let (QStep::Conv { conv, .. }, StepSpec::Conv { at, .. }) = (step, spec) {
            let stored = at.b.or(at.b16).is_some();
            assert!(at.b.is_none() || at.b16.is_none(), "one bias per layer");
            assert_eq!(stored, conv.bias.iter().any(|&b| b != 0));
            assert_eq!(
                conv.depthwise(),
                !stored,
                "only the depthwise convs lack a bias"
            );
            let fits = conv.bias.iter().all(|&b| i16::try_from(b).is_ok());
            assert_eq!(at.b16.is_some(), stored && fits);
            biased += if stored { conv.cout } else { 0 };
        }
    }
    let classes = 10;
    assert_eq!(
        packed.biases.len() + packed.biases16.len(),
        biased + classes
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weight_scales_are_exact_f16_values_the_weights_were_rounded_with() {
    let mut rng = crate::rng(9);
    let w: Vec<f32> = Tensor::randn(&[6 * 40], 0.3, &mut rng).to_vec();
    let mut w = w;
    w[40..80].fill(0.0); // an all-zero channel
    w[80..120].iter_mut().for_each(|v| *v *= 1e-4); // below f16's normal range
    let (q, scales) = quantize_weights(&w, 6).unwrap();
    for (o, &s) in scales.iter().enumerate() {
        assert_eq!(
            half::f16::from_f32(s).to_f32(),
            s,
            "scale {s} is not an f16"
        );
        let row = &w[o * 40..][..40];
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            s >= max / 127.0,
            "scale {s} below max/127 = {}",
            max / 127.0
        );
        for (&v, &qv) in row.iter().zip(&q[o * 40..][..40]) {
            assert_eq!(qv as f32, (v / s).round(), "{v} / {s}");
            assert!((v - qv as f32 * s).abs() <= s / 2.0 * 1.0001);
        }
    }
    assert!(quantize_weights(&[1e7], 1).is_err(), "past f16's range");
}

#[test]
fn an_old_or_damaged_folder_is_a_clear_error() {
    let (_, e) = encoded(&darts_v2(), 9);
    let dir = temp("damaged");
    write(&dir, &e).unwrap();
    let config = dir.join(CONFIG);
    let text = std::fs::read_to_string(&config).unwrap();
    let old = text.replacen(&format!("\"version\":{VERSION}"), "\"version\":1", 1);
    std::fs::write(&config, old).unwrap();
    let err = load(&dir).err().unwrap().to_string();
    assert!(
        err.contains("version 1") && err.contains("re-run `darts quantize --checkpoint run`"),
        "{err}"
    );
    // Offsets past the packed tensors' ends.
    let mut run = e.config.clone();
    for spec in &mut run.steps {
        if let StepSpec::Conv { at, .. } = spec {
            at.w += 1 << 20;
        }
    }
    let bad = serde_json::to_string(&run).unwrap();
    std::fs::write(&config, bad).unwrap();
    let err = load(&dir).err().unwrap().to_string();
    assert!(err.contains("of tensor weights"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
