//! `darts eval`: reload a trained network from its run folder and measure it on the test set —
//! top-1/top-5 accuracy, loss, per-class accuracy and the confusion matrix.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::checkpoint;
use crate::data::{self, source, Dataset};
use crate::error::{Error, Result};
use crate::nas::genotype::Genotype;
use crate::nas::network::Network;
use crate::nas::space::nb201::Nb201Arch;
use crate::nn::{Ctx, Module};
use crate::ops;
use crate::tensor::Tensor;
use crate::train::{build_network, in_order_loader, TrainConfig, MODEL_CONFIG, MODEL_WEIGHTS};

/// The measurements `darts eval` reports.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// What computed the logits: "f32", or "int8" for a quantised network.
    pub precision: &'static str,
    pub samples: usize,
    pub top1: f32,
    /// 95 % bootstrap interval of top-1 over resamplings of the test set.
    pub top1_ci95: [f32; 2],
    pub top5: f32,
    pub loss: f32,
    pub class_names: Vec<String>,
    pub per_class_accuracy: Vec<f32>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Reads a training run's config and rebuilds its network with the saved weights, on the
/// trained dataset unless `kind` names another, read from `dir` when given. Missing, extra or
/// misshapen tensors are errors naming the tensor.
pub fn load_trained(
    run: &Path,
    kind: Option<data::DatasetKind>,
    dir: Option<std::path::PathBuf>,
) -> Result<(TrainConfig, Network, data::Splits)> {
    let mut cfg = read_config(run)?;
    let splits = load_data(&mut cfg, kind, dir)?;
    let net = load_network(run, &cfg, &splits.train.shape())?;
    Ok((cfg, net, splits))
}

/// A training run's `config.json`, checked.
pub fn read_config(run: &Path) -> Result<TrainConfig> {
    crate::compress::folder::reject(run)?;
    let cfg_path = run.join(MODEL_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: TrainConfig = serde_json::from_str(&text).map_err(|e| {
        let why = arch_error(&text).unwrap_or_else(|| e.to_string());
        Error::data(&cfg_path, format!("not a darts training config: {why}"))
    })?;
    cfg.validate()
        .map_err(|e| Error::data(&cfg_path, e.to_string()))?;
    Ok(cfg)
}

/// The network of `run`'s config `cfg` for images of `shape`, with the run's saved weights.
pub fn load_network(run: &Path, cfg: &TrainConfig, shape: &data::ImageShape) -> Result<Network> {
    let cfg_path = run.join(MODEL_CONFIG);
    let mut net = build_network(cfg, shape)?;
    let weights_path = run.join(MODEL_WEIGHTS);
    let (tensors, _) = checkpoint::load(&weights_path)?;
    let mut expected = BTreeSet::new();
    net.visit("", &mut |name, _, _| {
        expected.insert(name.to_string());
    });
    if let Some(extra) = tensors.keys().find(|k| !expected.contains(*k)) {
        return Err(Error::data(
            &weights_path,
            format!(
                "unexpected tensor {extra}: the checkpoint belongs to another architecture than {}",
                cfg_path.display()
            ),
        ));
    }
    checkpoint::load_module_state(&mut net, "", &tensors, &weights_path)?;
    Ok(net)
}

/// The data of a trained run's config: the trained dataset unless `kind` names another, read
/// from `dir` when given (both recorded in `cfg`).
pub fn load_data(
    cfg: &mut TrainConfig,
    kind: Option<data::DatasetKind>,
    dir: Option<std::path::PathBuf>,
) -> Result<data::Splits> {
    if let Some(kind) = kind {
        cfg.data = data::DataSpec { kind, dir: None };
    }
    if dir.is_some() {
        cfg.data.dir = dir;
    }
    crate::validate::data(&cfg.data)?;
    data::load(&cfg.data, cfg.seed)
}

/// Why a config's genotype does not read, which the untagged [`Arch`](crate::nas::space::Arch) cannot say (an op we do
/// not have, by name); `None` when it reads.
fn arch_error(config: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config).ok()?;
    let g = v.get("genotype")?;
    let err = match g.as_str() {
        Some(s) => s.parse::<Nb201Arch>().err()?.to_string(),
        None => serde_json::from_value::<Genotype>(g.clone())
            .err()?
            .to_string(),
    };
    Some(format!("genotype: {err}"))
}

/// The 2.5 and 97.5 percentiles of the accuracy over 1000 resamplings (with replacement) of
/// per-image hits: how much the test set's luck could move top-1.
pub fn bootstrap_ci95(hits: &[bool], seed: u64) -> [f32; 2] {
    use rand::Rng;
    let n = hits.len();
    if n == 0 {
        return [0.0, 0.0];
    }
    let mut rng = crate::rng(seed);
    let mut accs: Vec<f32> = (0..1000)
        .map(|_| (0..n).filter(|_| hits[rng.random_range(0..n)]).count() as f32 / n as f32)
        .collect();
    accs.sort_by(f32::total_cmp);
    [accs[25], accs[974]]
}

/// Evaluates the model whose logits `forward` computes for a batch of images on `test`, with
/// the training set's normalisation; `seed` drives the bootstrap interval.
pub fn evaluate_network(
    forward: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    cfg: &TrainConfig,
    train: &Dataset,
    test: std::sync::Arc<Dataset>,
    seed: u64,
) -> Result<EvalReport> {
    let norm = source::default_normalize(cfg.data.kind, train)?;
    let k = test.num_classes;
    let loader = in_order_loader(test.clone(), norm, cfg.batch_size)?;
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut top5, mut loss_sum, mut n) = (0usize, 0f64, 0usize);
    let mut hits = Vec::with_capacity(test.len());
    crate::no_grad(|| -> Result<()> {
        for b in loader.epoch(0)? {
            let logits = forward(b.images_on(cfg.device)?)?;
            loss_sum +=
                ops::cross_entropy(&logits, &b.labels)?.item()? as f64 * b.labels.len() as f64;
            for (row, &label) in logits.try_to_vec()?.chunks(k).zip(&b.labels) {
                let mut order: Vec<usize> = (0..k).collect();
                order.sort_by(|&a, &c| row[c].total_cmp(&row[a]).then(a.cmp(&c)));
                confusion[label][order[0]] += 1;
                hits.push(order[0] == label);
                top5 += order.iter().take(5).any(|&c| c == label) as usize;
            }
            n += b.labels.len();
        }
        Ok(())
    })?;
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| row[c] as f32 / row.iter().sum::<usize>().max(1) as f32)
        .collect();
    Ok(EvalReport {
        precision: "f32",
        samples: n,
        top1: correct as f32 / n.max(1) as f32,
        top1_ci95: bootstrap_ci95(&hits, seed),
        top5: top5 as f32 / n.max(1) as f32,
        loss: (loss_sum / n.max(1) as f64) as f32,
        class_names: test.class_names.clone(),
        per_class_accuracy: per_class,
        confusion,
    })
}

/// The forward `darts eval` measures: on the CPU the inference path lowered from `net`, on a
/// GPU the training path's eval-mode forward.
pub fn eval_forward(
    net: Network,
    device: crate::Device,
) -> Result<Box<dyn FnMut(Tensor) -> Result<Tensor>>> {
    if device == crate::Device::Cpu {
        let program = crate::infer::lower(&net)?;
        return Ok(Box::new(move |x| program.forward(x)));
    }
    let (mut net, mut ctx) = (net, Ctx::new(false, 0));
    Ok(Box::new(move |x| Ok(net.forward(&x, &mut ctx)?.0)))
}

/// A plain-text rendering: summary, per-class accuracy, confusion matrix.
pub fn render(r: &EvalReport) -> String {
    let mut s = format!(
        "{} test images ({}): top-1 {:.2}% (95% CI {:.2}-{:.2}%)  top-5 {:.2}%  loss {:.4}\n\nper-class accuracy:\n",
        r.samples,
        r.precision,
        100.0 * r.top1,
        100.0 * r.top1_ci95[0],
        100.0 * r.top1_ci95[1],
        100.0 * r.top5,
        r.loss
    );
    for (name, acc) in r.class_names.iter().zip(&r.per_class_accuracy) {
        s += &format!("  {name:>12}  {:6.2}%\n", 100.0 * acc);
    }
    s += "\nconfusion matrix (rows: true class, columns: predicted):\n";
    s += &format!("{:>6}", "");
    for c in 0..r.confusion.len() {
        s += &format!("{c:>6}");
    }
    s += "\n";
    for (t, row) in r.confusion.iter().enumerate() {
        s += &format!("{t:>6}");
        for v in row {
            s += &format!("{v:>6}");
        }
        s += "\n";
    }
    s
}
