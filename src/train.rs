//! Training loops: running loss/accuracy meters, evaluation passes, and `darts train` — the
//! genotype's network trained from scratch with the paper's evaluation recipe (SGD, cosine,
//! auxiliary head, ramped drop-path), per-epoch JSONL, safetensors weights and `--resume`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{
    self, source, Batch, DataSpec, Dataset, ImageShape, Loader, LoaderConfig, Normalize,
};
use crate::distill::Teacher;
use crate::error::{Error, Result};
use crate::memory;
use crate::nas::network::{Network, NetworkSpec};
use crate::nas::space::Arch;
use crate::nn::{Ctx, Module};
use crate::ops;
use crate::optim::{clip_finite_grad_norm, cosine_lr, ensure_finite_loss, Optimizer, Sgd};
use crate::progress::Progress;
use crate::tensor::Tensor;

/// Index of the largest logit in each row.
pub fn argmax_rows(logits: &Tensor) -> Vec<usize> {
    let k = logits.shape().last().copied().unwrap_or(1).max(1);
    logits
        .data()
        .chunks(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > r[best] { i } else { best })
        })
        .collect()
}

/// Running mean loss and accuracy over batches, weighted by batch size.
#[derive(Default, Clone, Debug)]
pub struct Meter {
    loss_sum: f64,
    correct: usize,
    seen: usize,
}

impl Meter {
    /// Adds a batch's logits, labels and mean loss.
    pub fn add(&mut self, logits: &Tensor, labels: &[usize], loss: f32) -> Result<()> {
        let pred = argmax_rows(&logits.to_host()?);
        self.correct += pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        self.loss_sum += loss as f64 * labels.len() as f64;
        self.seen += labels.len();
        Ok(())
    }
    pub fn loss(&self) -> f32 {
        (self.loss_sum / self.seen.max(1) as f64) as f32
    }
    pub fn accuracy(&self) -> f32 {
        self.correct as f32 / self.seen.max(1) as f32
    }
    pub fn seen(&self) -> usize {
        self.seen
    }
    /// "loss 0.123 acc 45.6%", for progress bars.
    pub fn status(&self) -> String {
        format!(
            "loss {:.3} acc {:.1}%",
            self.loss(),
            100.0 * self.accuracy()
        )
    }
}

/// Back-propagates `loss`, clips the gradient norm and takes one SGD step; returns the loss.
pub fn sgd_step(
    model: &mut dyn Module,
    loss: &Tensor,
    sgd: &mut Sgd,
    grad_clip: f32,
) -> Result<f32> {
    let value = loss.item()?;
    ensure_finite_loss(value)?;
    let mut grads = loss.backward()?;
    clip_finite_grad_norm(model, &mut grads, grad_clip)?;
    sgd.step(model, &grads)?;
    Ok(value)
}

/// Batches over a whole dataset in order, without augmentation (evaluation).
pub fn in_order_loader(data: Arc<Dataset>, norm: Normalize, batch_size: usize) -> Result<Loader> {
    let all = (0..data.len()).collect();
    Loader::new(
        data,
        all,
        norm,
        LoaderConfig {
            shuffle: false,
            ..LoaderConfig::new(batch_size)
        },
    )
}

/// Mean loss and accuracy of a model (on `device`) over batches, in evaluation mode and
/// without a tape.
pub fn evaluate<M>(
    model: &mut M,
    device: crate::Device,
    batches: impl Iterator<Item = Batch>,
    mut forward: impl FnMut(&mut M, &Tensor, &mut Ctx) -> Result<Tensor>,
) -> Result<(f32, f32)> {
    let mut ctx = Ctx::new(false, 0);
    let mut meter = Meter::default();
    crate::no_grad(|| {
        for b in batches {
            let logits = forward(model, &b.images_on(device)?, &mut ctx)?;
            let loss = crate::ops::cross_entropy(&logits, &b.labels)?;
            meter.add(&logits, &b.labels, loss.item()?)?;
        }
        Ok(())
    })?;
    Ok((meter.loss(), meter.accuracy()))
}

/// Everything that defines a training run of a genotype; saved as `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: DataSpec,
    /// The data files the run read, filled in when it starts (configs written before this was
    /// recorded have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_files: Vec<PathBuf>,
    /// A DARTS genotype or a NAS-Bench-201 cell (its string in JSON).
    pub genotype: Arch,
    /// Where the genotype came from (a built-in name or a file), for the record.
    pub genotype_source: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub channels: usize,
    pub layers: usize,
    pub lr: f32,
    pub momentum: f32,
    /// Nesterov momentum (NAS-Bench-201's recipe; configs from before it have none).
    #[serde(default)]
    pub nesterov: bool,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub auxiliary_weight: f32,
    pub drop_path: f32,
    pub cutout: usize,
    pub seed: u64,
    /// Evaluate on the test set after every epoch, not only at the end.
    pub eval_every_epoch: bool,
    /// Stop each epoch after this many steps (quick experiments and tests); the test set is
    /// always evaluated whole.
    pub max_steps: Option<usize>,
    /// Fraction of the training set held out (seeded) as a validation set, scored after every
    /// epoch: the signal a search or a tuner may see, so that the test set stays unseen.
    #[serde(default)]
    pub valid_fraction: f32,
    /// What `darts prune` removed from the recipe's network (none in an unpruned run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<crate::compress::prune::Pruning>,
    /// A teacher whose softened predictions join the hard labels (`darts prune --distill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<crate::distill::Distill>,
    /// Stop after this many epochs of the `epochs`-long schedule, checkpointed so `--resume`
    /// continues it (successive halving's rungs): a choice of this process, not of the run.
    #[serde(skip, default)]
    pub stop_after: Option<usize>,
    /// Where to compute (`--device`): a choice of this process, not part of the saved run.
    #[serde(skip, default)]
    pub device: crate::Device,
}

impl TrainConfig {
    /// Every value a training run needs in range; called by [`run`], so flags and a resumed
    /// `config.json` are checked alike.
    pub fn validate(&self) -> Result<()> {
        use crate::validate as v;
        v::data(&self.data)?;
        self.genotype.validate()?;
        v::count("epochs", self.epochs)?;
        v::count("batch-size", self.batch_size)?;
        v::count("channels", self.channels)?;
        v::count("layers", self.layers)?;
        if let Some(s) = self.max_steps {
            v::count("max-steps", s)?;
        }
        v::positive("lr", self.lr)?;
        if let Some(s) = self.stop_after {
            v::count("stop-after", s)?;
        }
        if self.valid_fraction != 0.0 {
            v::open_unit("valid-fraction", self.valid_fraction)?;
        }
        v::unit("momentum", self.momentum)?;
        v::non_negative("weight-decay", self.weight_decay)?;
        v::positive("grad-clip", self.grad_clip)?;
        v::non_negative("auxiliary-weight", self.auxiliary_weight)?;
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        v::unit("drop-path", self.drop_path)
    }
}

/// What `darts train` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainResult {
    /// On the held-out part of the training set (`valid_fraction`), after the last epoch run.
    pub valid_accuracy: Option<f32>,
    pub test_accuracy: f32,
    pub test_loss: f32,
    pub train_accuracy: f32,
    pub params: usize,
    pub macs: u64,
    pub epochs: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// What the memory check estimated (`None` when skipped), in bytes.
    pub memory_estimate: Option<memory::Estimate>,
    /// The run's peak bytes of tensor storage (on a GPU, of its memory pool).
    pub peak_memory: Option<f64>,
    pub out: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct TrainEpochLog {
    epoch: usize,
    lr: f32,
    drop_path: f32,
    train_loss: f32,
    train_accuracy: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_accuracy: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_accuracy: Option<f32>,
    images_per_second: f64,
    seconds: f64,
}

/// The run state kept beside the weights for `--resume`.
#[derive(Serialize, Deserialize)]
struct TrainState {
    epochs_done: usize,
    seconds: f64,
    images: u64,
}

/// Files of a training run folder.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
pub const MODEL_CONFIG: &str = "config.json";
const TRAIN_STATE: &str = "train_state.safetensors";

/// Builds the evaluation network a training config describes, for a dataset's shape.
pub fn build_network(cfg: &TrainConfig, shape: &ImageShape) -> Result<Network> {
    if shape.height != shape.width {
        return Err(Error::InvalidArgument(format!(
            "square images expected, got {}×{}",
            shape.height, shape.width
        )));
    }
    let spec = NetworkSpec {
        channels: cfg.channels,
        layers: cfg.layers,
        num_classes: shape.num_classes,
        in_channels: shape.channels,
        image_size: shape.height,
        auxiliary: cfg.auxiliary_weight > 0.0,
        genotype: cfg.genotype.clone(),
    };
    let mut net = Network::new(spec, &mut crate::rng(cfg.seed))?;
    if let Some(p) = &cfg.prune {
        p.shape(&mut net)?;
    }
    Ok(net)
}

/// One training step: forward (with the auxiliary head's loss when the network has one, and
/// distilled from `teacher` when there is one), backward, clip, SGD; returns the logits and
/// the loss.
fn train_step(
    net: &mut Network,
    sgd: &mut Sgd,
    cfg: &TrainConfig,
    teacher: Option<&Teacher>,
    images: &Tensor,
    labels: &[usize],
    ctx: &mut Ctx,
) -> Result<(Tensor, f32)> {
    let (logits, aux) = net.forward(images, ctx)?;
    let mut loss = match (teacher, &cfg.distill) {
        (Some(t), Some(d)) => crate::distill::loss(&logits, &t.logits(images)?, labels, d)?,
        _ => ops::cross_entropy(&logits, labels)?,
    };
    if let Some(aux) = aux {
        let aux_loss = ops::cross_entropy(&aux, labels)?;
        loss = ops::add(&loss, &ops::scale(&aux_loss, cfg.auxiliary_weight)?)?;
    }
    let value = sgd_step(net, &loss, sgd, cfg.grad_clip)?;
    Ok((logits, value))
}

/// Peak bytes of tensor storage while the network of `cfg`, at `channels`, `layers` and
/// `batch_size`, is built on the CPU and takes one training step, with the optimiser state of
/// a later step and the run's largest drop-path probability, on random images of `shape`: the
/// memory check's probe.
fn probe_peak(
    cfg: &TrainConfig,
    shape: &ImageShape,
    channels: usize,
    layers: usize,
    batch_size: usize,
) -> Result<usize> {
    memory::step_peak(|| {
        // A pruning plan fits only the run's own width and depth; the full network bounds it.
        let cfg = TrainConfig {
            channels,
            layers,
            batch_size,
            prune: None,
            ..cfg.clone()
        };
        let mut net = build_network(&cfg, shape)?;
        net.drop_path_prob = cfg.drop_path;
        let mut sgd = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay, false)?;
        let mut rng = crate::rng(cfg.seed);
        let (x, y) = memory::random_batch(shape, batch_size, &mut rng);
        sgd.init_momentum(&net)?;
        train_step(
            &mut net,
            &mut sgd,
            &cfg,
            None,
            &x,
            &y,
            &mut Ctx::new(true, cfg.seed),
        )?;
        Ok(())
    })
}

/// What training `cfg` on images of `shape` needs in memory (see `memory.rs`).
pub fn memory_estimate(cfg: &TrainConfig, shape: &ImageShape) -> Result<memory::Estimate> {
    let params = |channels, layers| {
        let cfg = TrainConfig {
            channels,
            layers,
            prune: None,
            ..cfg.clone()
        };
        Ok(crate::nn::param_count(&build_network(&cfg, shape)?))
    };
    let probe = memory::Probe {
        params,
        peak: |c, l, b| probe_peak(cfg, shape, c, l, b),
        // Weights, gradient and momentum.
        copies: 3.0,
    };
    memory::estimate(&probe, cfg.channels, cfg.layers, cfg.batch_size, shape)
}

/// Multiply-adds of one forward pass of `net` on one image of `ds`'s size.
pub fn count_macs(net: &mut Network, ds: &Dataset) -> Result<u64> {
    let x = Tensor::zeros(&[1, ds.channels, ds.height, ds.width]);
    let mut ctx = Ctx::new(false, 0);
    let (macs, out) = crate::nn::count_macs(|| crate::no_grad(|| net.forward(&x, &mut ctx)));
    out?;
    Ok(macs)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))
}

fn save_run(dir: &Path, net: &Network, sgd: &Sgd, state: &TrainState) -> Result<()> {
    let mut weights = BTreeMap::new();
    checkpoint::module_state(net, "", &mut weights);
    // The model file alone is what other tools load; the state file carries everything needed
    // to resume bit for bit (it repeats the weights so that one rename makes it consistent).
    let meta = serde_json::json!({ "format": "darts-model", "epochs_done": state.epochs_done });
    checkpoint::save(&dir.join(MODEL_WEIGHTS), &weights, &meta)?;
    let mut all = weights;
    checkpoint::sgd_state(sgd, &mut all)?;
    let meta = serde_json::to_value(state).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    checkpoint::save(&dir.join(TRAIN_STATE), &all, &meta)
}

/// Whether `dir` holds a training checkpoint to resume.
pub fn has_state(dir: &Path) -> bool {
    dir.join(TRAIN_STATE).is_file()
}

/// Makes `dir` a run folder of `cfg` whose training starts from `net`'s weights at epoch 0
/// (fine-tuning): `run(cfg, Some(dir), true)` then trains it, and resumes it alike.
pub fn begin(dir: &Path, cfg: &TrainConfig, net: &Network) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    checkpoint::write_atomic(&dir.join(MODEL_CONFIG), to_json(cfg)?.as_bytes())?;
    checkpoint::write_atomic(
        &dir.join("genotype.json"),
        to_json(&cfg.genotype)?.as_bytes(),
    )?;
    checkpoint::remove_if_exists(&dir.join("train.jsonl"))?;
    checkpoint::remove_if_exists(&dir.join("results.json"))?;
    let state = TrainState {
        epochs_done: 0,
        seconds: 0.0,
        images: 0,
    };
    let sgd = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)?;
    save_run(dir, net, &sgd, &state)
}

fn restore_run(dir: &Path, net: &mut Network, sgd: &mut Sgd) -> Result<TrainState> {
    let path = dir.join(TRAIN_STATE);
    let (tensors, meta) = checkpoint::load(&path)?;
    let state: TrainState =
        serde_json::from_value(meta).map_err(|e| Error::data(&path, format!("run state: {e}")))?;
    checkpoint::load_module_state(net, "", &tensors, &path)?;
    checkpoint::load_sgd_state(sgd, &tensors);
    Ok(state)
}

/// Trains the network of `cfg.genotype` from scratch (or continues a run folder with `resume`).
pub fn run(cfg: TrainConfig, out: Option<&Path>, resume: bool) -> Result<TrainResult> {
    cfg.validate()?;
    let splits = data::load(&cfg.data, cfg.seed)?;
    let cfg = TrainConfig {
        data_files: source::files_to_record(&cfg.data_files, &splits.files, resume),
        ..cfg
    };
    let (train, valid) = if cfg.valid_fraction > 0.0 {
        let (t, v) =
            data::split::train_test_split(&splits.train, cfg.valid_fraction.into(), cfg.seed)?;
        (t, Some(v))
    } else {
        (splits.train, None)
    };
    data::split::check_batch_size(cfg.batch_size, &[("training set", train.len())])?;
    let memory_estimate = memory::check_run("train", cfg.device, || {
        memory_estimate(&cfg, &train.shape())
    })?;
    let peak = memory::PeakMeter::start(cfg.device)?;
    let train = Arc::new(train);
    let test = Arc::new(splits.test);
    let mut net = build_network(&cfg, &train.shape())?;
    let params = net.param_count_without_auxiliary();
    let macs = count_macs(&mut net, &train)?;
    crate::nn::to_device(&mut net, cfg.device)?;
    let mut sgd = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)?;
    let mut state = TrainState {
        epochs_done: 0,
        seconds: 0.0,
        images: 0,
    };
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if resume && dir.join(TRAIN_STATE).exists() {
            state = restore_run(dir, &mut net, &mut sgd)?;
            truncate_lines(&dir.join("train.jsonl"), state.epochs_done)?;
        } else if resume {
            eprintln!(
                "resume: no checkpoint yet in {}; starting from epoch 1",
                dir.display()
            );
            truncate_lines(&dir.join("train.jsonl"), 0)?;
        } else {
            checkpoint::write_atomic(&dir.join(MODEL_CONFIG), to_json(&cfg)?.as_bytes())?;
            checkpoint::write_atomic(
                &dir.join("genotype.json"),
                to_json(&cfg.genotype)?.as_bytes(),
            )?;
            checkpoint::remove_if_exists(&dir.join("train.jsonl"))?;
        }
    }
    let teacher = cfg
        .distill
        .as_ref()
        .map(|d| d.teacher(&train.shape()))
        .transpose()?;
    // Magnitude pruning's zeros, re-applied after every step.
    let masks = cfg.prune.as_ref().and_then(|p| p.masks(&net));
    let norm = source::default_normalize(cfg.data.kind, &train)?;
    let augment = source::default_augment(cfg.data.kind, cfg.cutout);
    let all: Vec<usize> = (0..train.len()).collect();
    let loader = Loader::new(
        train.clone(),
        all,
        norm.clone(),
        LoaderConfig {
            seed: cfg.seed,
            augment,
            ..LoaderConfig::new(cfg.batch_size)
        },
    )?;
    let valid_loader = valid
        .map(|v| in_order_loader(Arc::new(v), norm.clone(), cfg.batch_size))
        .transpose()?;
    let test_loader = in_order_loader(test.clone(), norm, cfg.batch_size)?;
    let steps = loader
        .num_batches()
        .min(cfg.max_steps.unwrap_or(usize::MAX));
    let total_steps = steps * cfg.epochs;
    let mut last_train_acc = f32::NAN;
    let mut test_result = None;
    let mut valid_accuracy = None;
    let last = cfg.epochs.min(cfg.stop_after.unwrap_or(usize::MAX));
    for epoch in state.epochs_done..last {
        let start = Instant::now();
        net.drop_path_prob = cfg.drop_path * epoch as f32 / cfg.epochs as f32;
        let mut ctx = Ctx::new(true, crate::data::seed::derive(cfg.seed, 1 + epoch as u64));
        let mut bar = Progress::new(
            format!("train {}/{}", epoch + 1, cfg.epochs),
            steps,
            cfg.batch_size,
        );
        let mut meter = Meter::default();
        let mut lr = cfg.lr;
        for (step, batch) in loader.epoch(epoch as u64)?.take(steps).enumerate() {
            // Cosine annealing to zero, per step.
            lr = cosine_lr(cfg.lr, 0.0, epoch * steps + step, total_steps);
            sgd.set_lr(lr)?;
            let images = batch.images_on(cfg.device)?;
            let (logits, value) = train_step(
                &mut net,
                &mut sgd,
                &cfg,
                teacher.as_ref(),
                &images,
                &batch.labels,
                &mut ctx,
            )?;
            if let Some(m) = &masks {
                m.apply(&mut net)?;
            }
            meter.add(&logits, &batch.labels, value)?;
            bar.set(step + 1, &meter.status());
        }
        bar.finish();
        let secs = start.elapsed().as_secs_f64();
        crate::ops::prof::report(steps);
        let last_epoch = epoch + 1 == cfg.epochs;
        if let Some(l) = &valid_loader {
            let acc = evaluate(&mut net, cfg.device, l.epoch(0)?, |n, x, c| {
                Ok(n.forward(x, c)?.0)
            })?;
            valid_accuracy = Some(acc.1);
        }
        let test_now = if cfg.eval_every_epoch || last_epoch {
            let batches = test_loader.epoch(0)?;
            Some(evaluate(&mut net, cfg.device, batches, |n, x, c| {
                Ok(n.forward(x, c)?.0)
            })?)
        } else {
            None
        };
        state.epochs_done = epoch + 1;
        state.seconds += secs;
        state.images += meter.seen() as u64;
        last_train_acc = meter.accuracy();
        let log = TrainEpochLog {
            epoch: epoch + 1,
            lr,
            drop_path: net.drop_path_prob,
            train_loss: meter.loss(),
            train_accuracy: meter.accuracy(),
            valid_accuracy,
            test_loss: test_now.map(|t| t.0),
            test_accuracy: test_now.map(|t| t.1),
            images_per_second: meter.seen() as f64 / secs,
            seconds: secs,
        };
        let test_text = test_now.map_or(String::new(), |(l, a)| {
            format!(" | test loss {l:.4} acc {:.2}%", 100.0 * a)
        });
        eprintln!(
            "epoch {}/{}: train loss {:.4} acc {:.2}%{test_text} | {:.0} img/s, {:.1}s",
            epoch + 1,
            cfg.epochs,
            log.train_loss,
            100.0 * log.train_accuracy,
            log.images_per_second,
            secs
        );
        if let Some(dir) = out {
            let line =
                serde_json::to_string(&log).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            append_line(&dir.join("train.jsonl"), &line)?;
            save_run(dir, &net, &sgd, &state)?;
        }
        test_result = test_now;
    }
    let (test_loss, test_accuracy) = match test_result {
        Some(t) => t,
        None => evaluate(&mut net, cfg.device, test_loader.epoch(0)?, |n, x, c| {
            Ok(n.forward(x, c)?.0)
        })?,
    };
    let result = TrainResult {
        valid_accuracy,
        test_accuracy,
        test_loss,
        train_accuracy: last_train_acc,
        params,
        macs,
        epochs: state.epochs_done,
        seconds: state.seconds,
        images_per_second: state.images as f64 / state.seconds.max(1e-9),
        memory_estimate,
        peak_memory: peak.peak(),
        out: out.map(Path::to_path_buf),
    };
    if let Some(dir) = out {
        checkpoint::write_atomic(&dir.join("results.json"), to_json(&result)?.as_bytes())?;
    }
    Ok(result)
}

/// Keeps the first `n` lines of a log (a kill between log write and checkpoint leaves more).
pub fn truncate_lines(path: &Path, n: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A run killed before its first epoch ended has no log yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let kept: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}

/// Appends one line to a log and syncs it.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}")
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(path, e))
}
