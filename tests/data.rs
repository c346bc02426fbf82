//! Dataset tests that need real files or a small learning experiment. Test names contain `data`
//! so that `cargo test data` selects them with the unit tests of `src/data`.

use darts::data::builtin::{self, BuiltinConfig};
use darts::data::{cifar, Dataset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn counts(labels: &[u8]) -> Vec<usize> {
    let mut c = vec![0; 10];
    labels.iter().for_each(|&l| c[usize::from(l)] += 1);
    c
}

#[test]
fn cifar_subset_matches_its_dataset_readme() {
    let Some(root) = darts::data::test_data("cifar-10-subset") else {
        return;
    };
    let dir = root.join("cifar-10-subset");
    let c = cifar::load(&dir).unwrap();
    assert_eq!(c.train.len(), 4000);
    assert_eq!(c.test.len(), 1000);
    assert_eq!(
        counts(&c.train.labels),
        [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
    );
    assert_eq!(
        counts(&c.test.labels),
        [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    );
    assert_eq!(c.train.labels[..10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(c.test.labels[..10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    assert_eq!(c.train.class_names[0], "airplane");
    assert_eq!(c.train.images.len(), 4000 * 3 * 32 * 32);
}

#[test]
fn builtin_dataset_is_deterministic_and_balanced() {
    let cfg = BuiltinConfig {
        train: 200,
        test: 50,
        ..Default::default()
    };
    let (a, at) = builtin::generate(&cfg).unwrap();
    let (b, _) = builtin::generate(&cfg).unwrap();
    assert_eq!((&a.images, &a.labels), (&b.images, &b.labels));
    assert_eq!(counts(&a.labels), vec![20; 10]);
    // Train and test come from different streams; a larger set extends a smaller one.
    assert_ne!(a.images[..256], at.images[..256]);
    let (big, _) = builtin::generate(&BuiltinConfig { train: 300, ..cfg }).unwrap();
    assert_eq!(big.images[..a.images.len()], a.images[..]);
    let (other, _) = builtin::generate(&BuiltinConfig { seed: 1, ..cfg }).unwrap();
    assert_ne!(other.images, a.images);
    assert!(builtin::generate(&BuiltinConfig { size: 4, ..cfg }).is_err());
}

/// The sanity experiment: the built-in dataset must defeat pixel-level linear models yet be
/// learnable from local spatial features. Thresholds leave room around the measured numbers
/// (printed; run with `--nocapture`).
#[test]
fn builtin_dataset_is_neither_trivial_nor_impossible() {
    let cfg = BuiltinConfig {
        train: 3000,
        test: 1000,
        ..Default::default()
    };
    let (train, test) = builtin::generate(&cfg).unwrap();

    let (xtr, xte) = (pixels(&train), pixels(&test));
    let ncm = nearest_class_mean(&xtr, &train.labels, &xte, &test.labels);
    let linear = softmax_regression(&xtr, &train.labels, &xte, &test.labels);

    let mut rng = StdRng::seed_from_u64(0);
    let filters: Vec<[f32; 9]> = (0..24)
        .map(|_| std::array::from_fn(|_| rng.sample(StandardNormal)))
        .collect();
    let (ftr, fte) = (
        conv_features(&train, &filters),
        conv_features(&test, &filters),
    );
    let conv = softmax_regression(&ftr, &train.labels, &fte, &test.labels);

    println!(
        "builtin {}x{} ({} train / {} test): nearest class mean {:.1}%, linear on pixels {:.1}%, \
         linear on random 3x3 conv features {:.1}%",
        cfg.size,
        cfg.size,
        cfg.train,
        cfg.test,
        100.0 * ncm,
        100.0 * linear,
        100.0 * conv
    );
    assert!(ncm < 0.35, "nearest class mean too good: {ncm}");
    assert!(linear < 0.5, "linear model too good: {linear}");
    assert!(
        conv > linear + 0.2,
        "spatial features should help: {conv} vs {linear}"
    );
}

/// Pixels in [0, 1], one row per image.
fn pixels(d: &Dataset) -> Vec<Vec<f32>> {
    let size = d.channels * d.height * d.width;
    d.images
        .chunks_exact(size)
        .map(|im| im.iter().map(|&v| f32::from(v) / 255.0).collect())
        .collect()
}

/// Responses of random 3×3 filters (valid convolution, after subtracting the image mean), split
/// into positive and negative parts and averaged over a 4×4 grid of regions: a fixed, untrained
/// one-layer convnet.
fn conv_features(d: &Dataset, filters: &[[f32; 9]]) -> Vec<Vec<f32>> {
    let s = d.width;
    let (o, cell) = (s - 2, (s - 2).div_ceil(4));
    pixels(d)
        .iter()
        .map(|im| {
            let m = im.iter().sum::<f32>() / im.len() as f32;
            let mut f = vec![0f32; filters.len() * 2 * 16];
            for (k, w) in filters.iter().enumerate() {
                for y in 0..o {
                    for x in 0..o {
                        let mut r = 0.0;
                        for (j, wj) in w.iter().enumerate() {
                            r += wj * (im[(y + j / 3) * s + x + j % 3] - m);
                        }
                        let g = (y / cell) * 4 + x / cell;
                        f[(k * 2) * 16 + g] += r.max(0.0);
                        f[(k * 2 + 1) * 16 + g] += (-r).max(0.0);
                    }
                }
            }
            f
        })
        .collect()
}

fn nearest_class_mean(xtr: &[Vec<f32>], ytr: &[u8], xte: &[Vec<f32>], yte: &[u8]) -> f64 {
    let dim = xtr[0].len();
    let mut means = vec![vec![0f32; dim]; 10];
    let n = counts(ytr);
    for (x, &y) in xtr.iter().zip(ytr) {
        for (m, v) in means[usize::from(y)].iter_mut().zip(x) {
            *m += v / n[usize::from(y)] as f32;
        }
    }
    let predict = |x: &[f32]| {
        let dist = |m: &Vec<f32>| m.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        (0..10)
            .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
            .unwrap()
    };
    accuracy(xte, yte, predict)
}

/// Multinomial logistic regression on standardised features, minibatch SGD with momentum.
fn softmax_regression(xtr: &[Vec<f32>], ytr: &[u8], xte: &[Vec<f32>], yte: &[u8]) -> f64 {
    let dim = xtr[0].len();
    let n = xtr.len() as f32;
    let mean: Vec<f32> = (0..dim)
        .map(|j| xtr.iter().map(|x| x[j]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..dim)
        .map(|j| {
            let v = xtr.iter().map(|x| (x[j] - mean[j]).powi(2)).sum::<f32>() / n;
            v.sqrt().max(1e-6)
        })
        .collect();
    let standardise = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .zip(mean.iter().zip(&std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    };
    let xs: Vec<Vec<f32>> = xtr.iter().map(|x| standardise(x)).collect();
    let (mut w, mut vel) = (vec![0f32; 10 * (dim + 1)], vec![0f32; 10 * (dim + 1)]);
    let logits = |w: &[f32], x: &[f32]| -> Vec<f32> {
        (0..10)
            .map(|c| {
                let row = &w[c * (dim + 1)..(c + 1) * (dim + 1)];
                row[dim] + row[..dim].iter().zip(x).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect()
    };
    let (lr, batch, decay) = (0.01f32, 50, 1e-3f32);
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..40 {
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
        for chunk in order.chunks(batch) {
            let mut g = vec![0f32; w.len()];
            for &i in chunk {
                let z = logits(&w, &xs[i]);
                let mx = z.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = z.iter().map(|v| (v - mx).exp()).collect();
                let sum: f32 = e.iter().sum();
                for c in 0..10 {
                    let p = e[c] / sum - f32::from(u8::from(c == usize::from(ytr[i])));
                    let row = &mut g[c * (dim + 1)..(c + 1) * (dim + 1)];
                    row[..dim]
                        .iter_mut()
                        .zip(&xs[i])
                        .for_each(|(gj, xj)| *gj += p * xj);
                    row[dim] += p;
                }
            }
            for ((wj, vj), gj) in w.iter_mut().zip(vel.iter_mut()).zip(&g) {
                *vj = 0.9 * *vj + gj / chunk.len() as f32 + decay * *wj;
                *wj -= lr * *vj;
            }
        }
    }
    accuracy(xte, yte, |x| {
        let z = logits(&w, &standardise(x));
        (0..10).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap()
    })
}

fn accuracy(x: &[Vec<f32>], y: &[u8], predict: impl Fn(&[f32]) -> usize) -> f64 {
    let right = x
        .iter()
        .zip(y)
        .filter(|(x, &y)| predict(x) == usize::from(y))
        .count();
    right as f64 / x.len() as f64
}
