//! The search driver (the reference `train_search.py`): per batch one architecture step on a
//! validation batch, then one weight step on a training batch; per epoch a JSONL log line, the
//! current genotype, and an atomic checkpoint from which `--resume` continues bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::architect::{Architect, Batch, Order};
use super::genotype::Genotype;
use super::margins::{self, EdgeMargin};
use super::search_config::one;
pub use super::search_config::SearchConfig;
use super::space::{nb201, Arch, Space};
use super::supernet::{Network, SearchSpec};
use crate::bench201::Bench201;
use crate::checkpoint;
use crate::data::{self, source, Batches, ImageShape, Loader, LoaderConfig};
use crate::error::{Error, Result};
use crate::memory;
use crate::nn::{param_count, set_trainable, Ctx};
use crate::optim::{cosine_lr, Optimizer, Sgd};
use crate::progress::Progress;
use crate::tensor::Tensor;
use crate::train::{append_line, evaluate, sgd_step, truncate_lines, Meter};

/// What a finished search reports (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    pub space: Space,
    /// The DARTS genotype, or the NAS-Bench-201 arch string.
    pub genotype: Arch,
    pub genotype_text: String,
    pub val_accuracy: f32,
    pub val_loss: f32,
    pub train_accuracy: f32,
    pub epochs: usize,
    pub seconds: f64,
    pub params: usize,
    /// What the memory check estimated (`None` when skipped), in bytes.
    pub memory_estimate: Option<memory::Estimate>,
    /// The run's peak bytes of tensor storage (on a GPU, of its memory pool).
    pub peak_memory: Option<f64>,
    /// How decided the final alphas are: per edge, the leading op's weight and its margin.
    pub alpha_margins: Vec<EdgeMargin>,
    /// The alphas are still nearly uniform: the genotype is an argmax over noise.
    pub nearly_uniform: bool,
    pub out: Option<PathBuf>,
    /// NAS-Bench-201: the found cell's accuracies in the table (%), and its rank by
    /// `cifar10_test` among the 15,625 (1 = best).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark_valid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark_test: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark_rank: Option<usize>,
}

/// One line of `search.jsonl`.
#[derive(Serialize, Deserialize)]
struct EpochLog {
    epoch: usize,
    lr: f32,
    train_loss: f32,
    train_accuracy: f32,
    val_loss: f32,
    val_accuracy: f32,
    /// The softmax temperature the logged alphas are softmaxed at (the epoch's last).
    #[serde(default = "one")]
    arch_temperature: f32,
    alphas_normal: Vec<Vec<f32>>,
    /// Empty in a space without reduction cells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    alphas_reduce: Vec<Vec<f32>>,
    genotype: Arch,
    genotype_text: String,
    seconds: f64,
}

/// Run state kept in the checkpoint's metadata.
#[derive(Serialize, Deserialize)]
struct RunState {
    epochs_done: usize,
    /// Adam's step count per architecture parameter (its moments are checkpoint tensors).
    adam_steps: BTreeMap<String, u64>,
    seconds: f64,
}

struct Run {
    net: Network,
    architect: Architect,
    sgd: Sgd,
    epochs_done: usize,
    seconds: f64,
}

const CHECKPOINT: &str = "checkpoint.safetensors";

fn rows(v: &[f32], n_ops: usize) -> Vec<Vec<f32>> {
    v.chunks(n_ops).map(<[f32]>::to_vec).collect()
}

impl Run {
    fn new(cfg: SearchConfig, in_channels: usize, num_classes: usize) -> Result<Run> {
        let mut rng = crate::rng(cfg.seed);
        let spec = match cfg.space {
            Space::Darts => SearchSpec {
                primitives: cfg.primitives.clone(),
                ..SearchSpec::darts(cfg.channels, cfg.layers, in_channels, num_classes)
            },
            Space::Nb201 => SearchSpec::nb201(cfg.channels, cfg.layers, in_channels, num_classes),
        };
        let mut net = Network::new(spec, &mut rng)?;
        crate::nn::to_device(&mut net, cfg.device)?;
        crate::nn::to_device(&mut net.alphas, cfg.device)?;
        let architect = Architect::new(cfg.order, cfg.arch_lr, cfg.arch_weight_decay)?;
        let sgd = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay, false)?;
        Ok(Run {
            net,
            architect,
            sgd,
            epochs_done: 0,
            seconds: 0.0,
        })
    }

    /// One search step: the architecture step on `val` (`None` in a warm-up epoch), then the
    /// weight step on `train`; returns the weight step's logits and loss.
    fn step(
        &mut self,
        train: &Batch,
        val: Option<&Batch>,
        lr: f32,
        grad_clip: f32,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, f32)> {
        if let Some(val) = val {
            self.architect
                .step(&mut self.net, train, val, lr, &self.sgd, ctx)?;
        }
        // The weight step differentiates the weights only.
        set_trainable(&mut self.net.alphas, false);
        let logits = self.net.forward(train.images, ctx)?;
        let loss = crate::ops::cross_entropy(&logits, train.labels)?;
        let value = sgd_step(&mut self.net, &loss, &mut self.sgd, grad_clip)?;
        Ok((logits, value))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        checkpoint::module_state(&self.net, "", &mut tensors);
        checkpoint::module_state(&self.net.alphas, "", &mut tensors);
        checkpoint::sgd_state(&self.sgd, &mut tensors)?;
        let adam_steps = checkpoint::adam_state(&self.architect.optimizer, &mut tensors);
        let state = RunState {
            epochs_done: self.epochs_done,
            adam_steps,
            seconds: self.seconds,
        };
        let meta = serde_json::to_value(&state)
            .map_err(|e| Error::InvalidArgument(format!("checkpoint state: {e}")))?;
        checkpoint::save(&dir.join(CHECKPOINT), &tensors, &meta)
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT);
        let (tensors, meta) = checkpoint::load(&path)?;
        let state: RunState = serde_json::from_value(meta)
            .map_err(|e| Error::data(&path, format!("run state: {e}")))?;
        checkpoint::load_module_state(&mut self.net, "", &tensors, &path)?;
        checkpoint::load_module_state(&mut self.net.alphas, "", &tensors, &path)?;
        checkpoint::load_sgd_state(&mut self.sgd, &tensors);
        checkpoint::load_adam_state(
            &mut self.architect.optimizer,
            &tensors,
            &state.adam_steps,
            &path,
        )?;
        self.epochs_done = state.epochs_done;
        self.seconds = state.seconds;
        Ok(())
    }

    /// The architecture the alphas choose now.
    fn genotype(&self) -> Result<Arch> {
        let (wn, wr) = self.net.alphas.softmaxed()?;
        let s = &self.net.spec;
        Ok(match s.space {
            Space::Darts => {
                Genotype::derive(&wn, &wr, &s.primitives, s.steps, s.multiplier)?.into()
            }
            Space::Nb201 => nb201::derive(&wn)?.into(),
        })
    }
}

/// Validation batches without end: the architecture half is reshuffled whenever it runs out
/// (the reference draws a fresh batch from a new shuffled iterator each step).
struct Cycle<'a> {
    loader: &'a Loader,
    epoch: usize,
    round: u64,
    batches: Option<Batches>,
}

impl Cycle<'_> {
    fn next_batch(&mut self) -> Result<data::Batch> {
        loop {
            if let Some(b) = self.batches.as_mut().and_then(Iterator::next) {
                return Ok(b);
            }
            // Distinct loader epochs per (search epoch, round) keep every order reproducible.
            let e = (self.epoch as u64) << 20 | self.round;
            self.round += 1;
            self.batches = Some(self.loader.epoch(e)?);
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))
}

/// Peak bytes of tensor storage while a search of `cfg`, at `channels`, `layers` and
/// `batch_size`, is built on the CPU and takes one step, with the optimiser state of a later
/// step, on random images of `shape`: the memory check's probe.
fn probe_peak(
    cfg: &SearchConfig,
    shape: &ImageShape,
    channels: usize,
    layers: usize,
    batch_size: usize,
) -> Result<usize> {
    memory::step_peak(|| {
        let cfg = SearchConfig {
            channels,
            layers,
            batch_size,
            device: crate::Device::Cpu,
            ..cfg.clone()
        };
        let mut run = Run::new(cfg.clone(), shape.channels, shape.num_classes)?;
        let mut rng = crate::rng(cfg.seed);
        let (x, y) = memory::random_batch(shape, batch_size, &mut rng);
        let (xv, yv) = memory::random_batch(shape, batch_size, &mut rng);
        let train = Batch {
            images: &x,
            labels: &y,
        };
        let val = Batch {
            images: &xv,
            labels: &yv,
        };
        run.sgd.init_momentum(&run.net)?;
        run.step(
            &train,
            Some(&val),
            cfg.lr,
            cfg.grad_clip,
            &mut Ctx::new(true, cfg.seed),
        )?;
        Ok(())
    })
}

/// What a search of `cfg` on images of `shape` needs in memory (see `memory.rs`).
pub fn memory_estimate(cfg: &SearchConfig, shape: &ImageShape) -> Result<memory::Estimate> {
    let params = |channels, layers| {
        let cfg = SearchConfig {
            channels,
            layers,
            device: crate::Device::Cpu,
            ..cfg.clone()
        };
        Ok(param_count(
            &Run::new(cfg, shape.channels, shape.num_classes)?.net,
        ))
    };
    let probe = memory::Probe {
        params,
        peak: |c, l, b| probe_peak(cfg, shape, c, l, b),
        // Weights, gradient and momentum; the unrolled step adds the weights before it (w0),
        // and the training gradient it keeps while taking the validation gradient.
        copies: match cfg.order {
            Order::First => 3.0,
            Order::Second => 5.0,
        },
    };
    memory::estimate(&probe, cfg.channels, cfg.layers, cfg.batch_size, shape)
}

/// Runs (or, with `resume`, continues) a search. `out` receives the run folder's files.
pub fn run(cfg: SearchConfig, out: Option<&Path>, resume: bool) -> Result<SearchResult> {
    cfg.validate()?;
    // Read (and check) the table before the search, not after it.
    let bench = benchmark_table(&cfg)?;
    let splits = data::load(&cfg.data, cfg.seed)?;
    let cfg = SearchConfig {
        data_files: source::files_to_record(&cfg.data_files, &splits.files, resume),
        ..cfg
    };
    let split = data::search_split(splits.train.len(), cfg.train_portion as f64)?;
    let part = if cfg.train_portion == 0.5 {
        "half"
    } else {
        "part"
    };
    data::split::check_batch_size(
        cfg.batch_size,
        &[
            (&format!("weights {part}"), split.weights.len()),
            (&format!("architecture {part}"), split.arch.len()),
        ],
    )?;
    let ds = Arc::new(splits.train);
    let memory_estimate =
        memory::check_run("search", cfg.device, || memory_estimate(&cfg, &ds.shape()))?;
    let peak = memory::PeakMeter::start(cfg.device)?;
    let mut run = Run::new(cfg.clone(), ds.channels, ds.num_classes)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if resume && dir.join(CHECKPOINT).exists() {
            run.restore(dir)?;
            truncate_lines(&dir.join("search.jsonl"), run.epochs_done)?;
        } else if resume {
            eprintln!(
                "resume: no checkpoint yet in {}; starting from epoch 1",
                dir.display()
            );
            truncate_lines(&dir.join("search.jsonl"), 0)?;
        } else {
            checkpoint::write_atomic(&dir.join("config.json"), to_json(&cfg)?.as_bytes())?;
            checkpoint::remove_if_exists(&dir.join("search.jsonl"))?;
        }
    }
    // Both halves see the training augmentation, as in the reference search.
    let norm = source::default_normalize(cfg.data.kind, &ds)?;
    let loader = |idx: Vec<usize>, seed: u64| {
        let augment = source::default_augment(cfg.data.kind, 0);
        Loader::new(
            ds.clone(),
            idx,
            norm.clone(),
            LoaderConfig {
                seed,
                augment,
                ..LoaderConfig::new(cfg.batch_size)
            },
        )
    };
    let train_loader = loader(split.weights, cfg.seed)?;
    let val_loader = loader(split.arch, data::seed::derive(cfg.seed, 1))?;
    // The temperature schedule runs over full epochs: --max-steps cuts an epoch short but does
    // not compress the anneal, so a run too short to have moved the alphas is not sharpened
    // into looking decided.
    let full = train_loader.num_batches();
    let steps = full.min(cfg.max_steps.unwrap_or(usize::MAX));
    let progress = |step: usize| step as f32 / full as f32;
    // A function of the schedule: a resumed run picks it up where the last epoch left it.
    run.net.alphas.temperature = match run.epochs_done {
        0 => 1.0,
        done => cfg.temperature_at(done - 1, progress(steps)),
    };
    let params = param_count(&run.net);
    let mut last = None;
    for epoch in run.epochs_done..cfg.epochs {
        let start = Instant::now();
        let lr = cosine_lr(cfg.lr, cfg.lr_min, epoch, cfg.epochs);
        run.sgd.set_lr(lr)?;
        let mut ctx = Ctx::new(true, cfg.seed.wrapping_add(epoch as u64));
        let warmup = epoch < cfg.warmup_epochs;
        let mut bar = Progress::new(
            format!(
                "{} {}/{}",
                if warmup { "warm-up" } else { "search" },
                epoch + 1,
                cfg.epochs
            ),
            steps,
            cfg.batch_size,
        );
        let mut meter = Meter::default();
        let mut val_batches = Cycle {
            loader: &val_loader,
            epoch,
            round: 0,
            batches: None,
        };
        for (step, batch) in train_loader.epoch(epoch as u64)?.take(steps).enumerate() {
            run.net.alphas.temperature = cfg.temperature_at(epoch, progress(step + 1));
            let images = batch.images_on(cfg.device)?;
            let train = Batch {
                images: &images,
                labels: &batch.labels,
            };
            let val = (!warmup).then(|| val_batches.next_batch()).transpose()?;
            let val_images = val.as_ref().map(|v| v.images_on(cfg.device)).transpose()?;
            let valb = val
                .as_ref()
                .zip(val_images.as_ref())
                .map(|(v, images)| Batch {
                    images,
                    labels: &v.labels,
                });
            let (logits, value) = run.step(&train, valb.as_ref(), lr, cfg.grad_clip, &mut ctx)?;
            meter.add(&logits, &batch.labels, value)?;
            bar.set(step + 1, &meter.status());
        }
        bar.finish();
        // With --max-steps the evaluation is cut to as many batches, to keep quick runs quick.
        let val_batches = val_loader
            .epoch(epoch as u64)?
            .take(cfg.max_steps.unwrap_or(usize::MAX));
        let (val_loss, val_acc) = evaluate(&mut run.net, cfg.device, val_batches, |n, x, c| {
            n.forward(x, c)
        })?;
        let genotype = run.genotype()?;
        let (wn, wr) = run.net.alphas.softmaxed()?;
        let n_ops = run.net.spec.primitives.len();
        run.epochs_done = epoch + 1;
        let secs = start.elapsed().as_secs_f64();
        run.seconds += secs;
        let log = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: meter.loss(),
            train_accuracy: meter.accuracy(),
            val_loss,
            val_accuracy: val_acc,
            arch_temperature: run.net.alphas.temperature,
            alphas_normal: rows(&wn, n_ops),
            alphas_reduce: rows(&wr, n_ops),
            genotype_text: genotype.to_string(),
            genotype: genotype.clone(),
            seconds: secs,
        };
        eprintln!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}% | {:.1}s\n  {}",
            epoch + 1,
            cfg.epochs,
            log.train_loss,
            100.0 * log.train_accuracy,
            val_loss,
            100.0 * val_acc,
            secs,
            log.genotype_text
        );
        if let Some(dir) = out {
            append_line(&dir.join("search.jsonl"), &to_json(&log)?)?;
            checkpoint::write_atomic(
                &dir.join("genotype.json"),
                serde_json::to_string_pretty(&genotype)
                    .map_err(|e| Error::InvalidArgument(format!("serialising the genotype: {e}")))?
                    .as_bytes(),
            )?;
            checkpoint::write_atomic(
                &dir.join("genotype.txt"),
                format!("{genotype}\n").as_bytes(),
            )?;
            run.save(dir)?;
        }
        last = Some((log.train_accuracy, val_loss, val_acc));
    }
    let genotype = run.genotype()?;
    let (alpha_margins, nearly_uniform) = summarise_alphas(&run)?;
    let scores = match (&bench, &genotype) {
        (Some(table), Arch::Nb201(arch)) => {
            let index = table.index_of(arch)?;
            // Both are required columns: the table does not load without them.
            let valid = table.value(index, "cifar10_valid")?;
            let test = table.value(index, "cifar10_test")?;
            let rank = table.rank(index, "cifar10_test")?;
            eprintln!(
                "NAS-Bench-201: {arch} is index {index}: cifar10_valid {valid:.2}%, cifar10_test {test:.2}% (rank {rank} of {})",
                table.len()
            );
            (Some(valid), Some(test), Some(rank))
        }
        _ => (None, None, None),
    };
    let (train_accuracy, val_loss, val_accuracy) = match last {
        Some(v) => v,
        None => {
            let (l, a) = evaluate(&mut run.net, cfg.device, val_loader.epoch(0)?, |n, x, c| {
                n.forward(x, c)
            })?;
            (f32::NAN, l, a)
        }
    };
    Ok(SearchResult {
        space: cfg.space,
        genotype_text: genotype.to_string(),
        genotype,
        val_accuracy,
        val_loss,
        train_accuracy,
        epochs: run.epochs_done,
        seconds: run.seconds,
        params,
        memory_estimate,
        peak_memory: peak.peak(),
        out: out.map(Path::to_path_buf),
        alpha_margins,
        nearly_uniform,
        benchmark_valid: scores.0,
        benchmark_test: scores.1,
        benchmark_rank: scores.2,
    })
}

/// Per-edge margins of the final alphas, printed as the run's summary; and the warning when they
/// are still nearly uniform.
fn summarise_alphas(run: &Run) -> Result<(Vec<EdgeMargin>, bool)> {
    let (wn, wr) = run.net.alphas.softmaxed()?;
    let spec = &run.net.spec;
    // DARTS genotypes never keep `none`; NAS-Bench-201 cells may.
    let skip_none = spec.space == Space::Darts;
    let mut all = margins::margins("normal", &wn, &spec.primitives, skip_none);
    all.extend(margins::margins("reduce", &wr, &spec.primitives, skip_none));
    let tau = run.net.alphas.temperature;
    let at = if tau == 1.0 {
        String::new()
    } else {
        format!(", softmax at temperature {tau:.2}")
    };
    eprintln!("alphas (kept op, its weight, margin over the runner-up{at}):");
    for m in &all {
        eprintln!(
            "  {} edge {:>2}: {:<13} {:.3}  +{:.3} over {}",
            m.cell, m.edge, m.op, m.weight, m.margin, m.runner_up
        );
    }
    let uniform = margins::nearly_uniform(&wn, spec.primitives.len());
    if uniform {
        eprintln!(
            "warning: the alphas are still nearly uniform (on most normal edges no op reaches \
             {}x uniform), so the genotype is an argmax over noise; search longer (--epochs) or \
             with a larger --arch-lr",
            margins::DECIDED_FACTOR
        );
    }
    Ok((all, uniform))
}

/// The NAS-Bench-201 table a search in that space is scored with: `--benchmark`, else the one in
/// the datasets folder when it is there (without it the search runs unscored, and says so).
fn benchmark_table(cfg: &SearchConfig) -> Result<Option<Bench201>> {
    if cfg.space != Space::Nb201 {
        return Ok(None);
    }
    let path = match &cfg.benchmark {
        Some(p) => p.clone(),
        None => match Bench201::default_path() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("note: the found cell will not be scored: {e}");
                return Ok(None);
            }
        },
    };
    Bench201::load(path).map(Some)
}
