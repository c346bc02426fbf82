//! `darts prune`: structured channel pruning that really shrinks a trained network (smaller
//! tensors, fewer MACs), or unstructured magnitude pruning for comparison, then fine-tuning
//! with the run's training recipe. The channels that sums and concatenations tie together are
//! found by a dependency analysis of the built network (`graph.rs`), ranked by BN scale or
//! filter norm, and cut either with one keep ratio per group (`plan.rs`, the default) or
//! greedily over the whole network, where a channel costs the most MACs per unit of importance
//! (`allocate.rs`).
//!
//! The pruned model is a normal run folder: its `config.json` is the recipe's with a
//! [`Pruning`] record (the removed units), so that building the network from it (train, eval,
//! export, inference lowering) builds the full-width network and removes the same channels
//! before the weights are loaded.

pub mod allocate;
pub mod graph;
pub mod latency;
pub mod magnitude;
pub mod plan;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::data::{source, Dataset};
use crate::distill::Distill;
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nn::Module as _;
use crate::tensor::Tensor;
use crate::train::{self, TrainConfig};

pub use plan::Method;

/// What was removed from a run's network, recorded in its `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pruning {
    /// Channels: the removed units of the dependency analysis of the full network, which had
    /// `units` units (a check that this version analyses it the same way).
    Channels { units: usize, removed: Vec<usize> },
    /// Weights zeroed by magnitude; the zeros are kept by a mask while training.
    Magnitude,
}

impl Pruning {
    /// Turns the full-width network of the recipe into the pruned one (before its weights are
    /// loaded).
    pub fn shape(&self, net: &mut Network) -> Result<()> {
        match self {
            Pruning::Channels { units, removed } => plan::apply(net, removed, *units),
            Pruning::Magnitude => Ok(()),
        }
    }

    /// The mask that keeps a magnitude-pruned network's zeros through training.
    pub fn masks(&self, net: &Network) -> Option<magnitude::Masks> {
        (*self == Pruning::Magnitude).then(|| magnitude::Masks::of(net))
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// A trained, unpruned `darts train` run folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The pruned run folder to write (a normal run folder: eval, export and quantize read it).
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Method::Bn)]
    pub method: Method,
    /// Fraction of each channel group removed (of the weights, for --method magnitude), in (0, 1).
    #[arg(long, conflicts_with = "macs_target")]
    pub sparsity: Option<f32>,
    /// The pruned network's MACs as a fraction of today's, in (0, 1] (1: nothing removed, the
    /// fine-tuning-only baseline), spread over the channel groups as --allocation says.
    #[arg(long)]
    pub macs_target: Option<f32>,
    /// How --macs-target is spread over the channel groups [default: uniform, which fine-tuned
    /// better than global on fm8 (BENCHMARKS.md)].
    #[arg(long, value_enum, conflicts_with = "sparsity")]
    pub allocation: Option<Allocation>,
    /// --allocation global: the fraction of every channel group always kept, in (0, 1]
    /// [default: 0.25].
    #[arg(long, conflicts_with = "sparsity")]
    pub min_keep: Option<f32>,
    /// Magnitude pruning: one threshold per layer instead of one over the whole network.
    #[arg(long)]
    pub per_layer: bool,
    /// Epochs of fine-tuning with the run's recipe (its optimiser and cosine schedule).
    #[arg(long, default_value_t = 1)]
    pub finetune_epochs: usize,
    /// Fine-tuning's starting learning rate [default: the run's].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Fine-tuning's largest drop-path probability (ramped over the epochs). Off by default: the
    /// regularisation the full network was trained with costs the thinner pruned one about
    /// 1.3 points (BENCHMARKS.md, "Structured pruning").
    #[arg(long, default_value_t = 0.0)]
    pub drop_path: f32,
    /// Distil the fine-tuning from the unpruned network at this softmax temperature (soft
    /// targets mixed with the labels, Hinton et al.).
    #[arg(long)]
    pub distill: Option<f32>,
    /// Weight of the soft targets in the distilled loss, in [0, 1).
    #[arg(long, default_value_t = 0.5, requires = "distill")]
    pub distill_weight: f32,
    /// Stop each fine-tuning epoch after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Timed batch-1 turns (one call of each model) in the latency comparison (batch 64: a
    /// tenth).
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Continue an interrupted fine-tuning in --out (the same flags; a finished one is only
    /// measured again).
    #[arg(long)]
    pub resume: bool,
    /// Read the trained dataset from this folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the fine-tuning's data order and augmentation [default: the run's].
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

/// How a MACs budget is spread over the channel groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Greedily over the whole network: first the channels that cost the most MACs per unit of
    /// importance (normalised within their group), down to --min-keep of each group.
    Global,
    /// One keep ratio for every group, the largest that reaches the target (by bisection).
    Uniform,
}

/// The global allocation's default floor: a quarter of every group stays.
const MIN_KEEP: f32 = 0.25;

/// A model's size and accuracy.
#[derive(Clone, Debug, Serialize)]
pub struct Measures {
    /// Weights without the auxiliary head.
    pub params: usize,
    /// Nonzero weights without the auxiliary head (below `params` after magnitude pruning).
    pub nonzero_params: usize,
    pub macs: u64,
    pub test_accuracy: f32,
}

/// What `darts prune` reports.
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub method: Method,
    /// How --macs-target was spread (channel methods with a MACs target).
    pub allocation: Option<Allocation>,
    /// The global allocation's floor per group.
    pub min_keep: Option<f32>,
    /// The keep ratio of each channel group (uniform allocation, --sparsity).
    pub keep_ratio: Option<f64>,
    /// Channel units removed, of all.
    pub removed_units: usize,
    pub units: usize,
    pub before: Measures,
    /// Pruned, before fine-tuning.
    pub pruned: Measures,
    /// Pruned and fine-tuned (read back from --out).
    pub after: Measures,
    /// Fraction of conv and linear weights that are zero after fine-tuning.
    pub weight_sparsity: f64,
    pub finetune_epochs: usize,
    /// Fine-tuning's starting learning rate.
    pub finetune_lr: f32,
    /// Fine-tuning's largest drop-path probability.
    pub finetune_drop_path: f32,
    /// The fine-tuning's distillation from the unpruned network, if any.
    pub distill: Option<Distill>,
    /// The f32 inference path, unpruned against pruned, timed in turns in this run.
    pub latency: latency::Latency,
    pub out: PathBuf,
}

fn check_args(a: &PruneArgs) -> Result<()> {
    use crate::validate as v;
    match (a.method, a.sparsity, a.macs_target) {
        (_, Some(s), None) => v::open_unit("sparsity", s),
        (Method::Magnitude, _, _) => Err(Error::InvalidArgument(
            "--method magnitude needs --sparsity (the fraction of weights zeroed)".into(),
        )),
        (_, None, Some(t)) if t > 0.0 && t <= 1.0 => Ok(()),
        (_, None, Some(t)) => Err(Error::InvalidArgument(format!(
            "--macs-target must be in (0, 1] (got {t})"
        ))),
        _ => Err(Error::InvalidArgument(
            "say how much to prune: --sparsity S or --macs-target F".into(),
        )),
    }?;
    if let Some(k) = a.min_keep {
        if a.allocation != Some(Allocation::Global) {
            return Err(Error::InvalidArgument(
                "--min-keep is the global allocation's floor; add --allocation global".into(),
            ));
        }
        if !(k > 0.0 && k <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--min-keep must be in (0, 1] (got {k})"
            )));
        }
    }
    if let Some(t) = a.distill {
        Distill {
            teacher: a.checkpoint.clone(),
            temperature: t,
            weight: a.distill_weight,
        }
        .validate()?;
    }
    v::count("finetune-epochs", a.finetune_epochs)?;
    if a.runs < 10 {
        return Err(Error::InvalidArgument(format!(
            "--runs must be at least 10, got {}",
            a.runs
        )));
    }
    Ok(())
}

/// Test accuracy of `net` on its f32 inference path.
fn test_accuracy(
    net: &Network,
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Arc<Dataset>,
) -> Result<f32> {
    let norm = source::default_normalize(cfg.data.kind, train)?;
    let loader = train::in_order_loader(test.clone(), norm, cfg.batch_size)?;
    let mut program = crate::infer::lower(net)?;
    let (_, acc) = train::evaluate(
        &mut program,
        crate::Device::Cpu,
        loader.epoch(0)?,
        |p, x, _| p.forward(x.clone()),
    )?;
    Ok(acc)
}

fn measure(
    net: &mut Network,
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Arc<Dataset>,
) -> Result<Measures> {
    let mut nonzero = 0;
    net.visit("", &mut |name, t, kind| {
        if kind == crate::nn::ParamKind::Weight && !name.starts_with("auxiliary_head.") {
            nonzero += t.to_vec().iter().filter(|&&v| v != 0.0).count();
        }
    });
    Ok(Measures {
        params: net.param_count_without_auxiliary(),
        nonzero_params: nonzero,
        macs: train::count_macs(net, train)?,
        test_accuracy: test_accuracy(net, cfg, train, test)?,
    })
}

/// MACs of the recipe's network with the units `analysis` removes at `ratio`.
fn macs_at(
    cfg: &TrainConfig,
    train: &Dataset,
    analysis: &plan::Analysis,
    ratio: f64,
) -> Result<u64> {
    let mut net = train::build_network(cfg, &train.shape())?;
    plan::apply(&mut net, &analysis.removed(ratio), analysis.units.len())?;
    train::count_macs(&mut net, train)
}

/// The largest keep ratio whose network has at most `target` MACs, by bisection (the MACs
/// grow with the ratio); an error when even one channel per group is above it.
fn ratio_for_macs(
    cfg: &TrainConfig,
    train: &Dataset,
    analysis: &plan::Analysis,
    target: f64,
    full: u64,
) -> Result<f64> {
    let floor = macs_at(cfg, train, analysis, 0.0)?;
    if floor as f64 > target {
        return Err(Error::InvalidArgument(format!(
            "--macs-target {:.3} cannot be reached: the channel dependencies keep at least one channel of every group, {:.3} of the MACs; ask for at least that",
            target / full as f64,
            floor as f64 / full as f64
        )));
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    if macs_at(cfg, train, analysis, hi)? as f64 <= target {
        return Ok(hi);
    }
    for _ in 0..20 {
        let mid = 0.5 * (lo + hi);
        if macs_at(cfg, train, analysis, mid)? as f64 <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// How `net` was pruned: the record and, as the report gives them, the allocation's settings.
struct Plan {
    pruning: Pruning,
    allocation: Option<Allocation>,
    min_keep: Option<f32>,
    keep_ratio: Option<f64>,
}

/// Prunes `net` (the recipe `cfg`'s network with trained weights) as the flags ask.
fn prune_network(
    a: &PruneArgs,
    cfg: &TrainConfig,
    train: &Dataset,
    net: &mut Network,
    full_macs: u64,
) -> Result<Plan> {
    let mut plan = Plan {
        pruning: Pruning::Magnitude,
        allocation: None,
        min_keep: None,
        keep_ratio: None,
    };
    if a.method == Method::Magnitude {
        let s = f64::from(a.sparsity.expect("checked"));
        magnitude::prune(net, s, a.per_layer)?;
        return Ok(plan);
    }
    let analysis = plan::Analysis::of(net, a.method)?;
    let removed = match (a.sparsity, a.macs_target) {
        (Some(s), _) => {
            plan.keep_ratio = Some(1.0 - f64::from(s));
            analysis.removed(1.0 - f64::from(s))
        }
        (None, Some(t)) => match a.allocation.unwrap_or(Allocation::Uniform) {
            Allocation::Uniform => {
                let target = f64::from(t) * full_macs as f64;
                let ratio = ratio_for_macs(cfg, train, &analysis, target, full_macs)?;
                plan.allocation = Some(Allocation::Uniform);
                plan.keep_ratio = Some(ratio);
                analysis.removed(ratio)
            }
            Allocation::Global => {
                let floor = a.min_keep.unwrap_or(MIN_KEEP);
                let x = Tensor::zeros(&[1, train.channels, train.height, train.width]);
                let costs = allocate::Costs::of(net, &x)?;
                plan.allocation = Some(Allocation::Global);
                plan.min_keep = Some(floor);
                allocate::global(&analysis, &costs, f64::from(t), f64::from(floor))?
            }
        },
        (None, None) => unreachable!("checked"),
    };
    let units = analysis.units.len();
    plan::apply(net, &removed, units)?;
    plan.pruning = Pruning::Channels { units, removed };
    Ok(plan)
}

/// `--resume` continues `dir` only if it holds this very pruning and recipe.
fn same_run(dir: &std::path::Path, tune: &TrainConfig) -> Result<()> {
    let path = dir.join(train::MODEL_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let saved: TrainConfig = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("not a darts training config: {e}")))?;
    let comparable = |c: &TrainConfig| TrainConfig {
        data_files: Vec::new(),
        ..c.clone()
    };
    if comparable(&saved) != comparable(tune) {
        return Err(Error::data(
            &path,
            "holds another pruning or fine-tuning recipe than these flags ask; drop --resume to start over",
        ));
    }
    Ok(())
}

pub fn run(a: &PruneArgs) -> Result<()> {
    check_args(a)?;
    crate::export::require_weights(&a.checkpoint)?;
    let (cfg, mut net, splits) =
        crate::evaluate::load_trained(&a.checkpoint, None, a.data_dir.clone())?;
    if cfg.prune.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{} is already pruned; prune the run it came from",
            a.checkpoint.display()
        )));
    }
    let train = Arc::new(splits.train);
    let test = Arc::new(splits.test);
    let before = measure(&mut net, &cfg, &train, &test)?;
    let unpruned = crate::infer::lower(&net)?;
    eprintln!(
        "before: {} params, {:.2} MMACs, test accuracy {:.2}%",
        before.params,
        before.macs as f64 / 1e6,
        100.0 * before.test_accuracy
    );
    let plan = prune_network(a, &cfg, &train, &mut net, before.macs)?;
    let pruned = measure(&mut net, &cfg, &train, &test)?;
    eprintln!(
        "pruned: {} params, {:.2} MMACs, test accuracy {:.2}% before fine-tuning",
        pruned.params,
        pruned.macs as f64 / 1e6,
        100.0 * pruned.test_accuracy
    );
    let (units, removed_units) = match &plan.pruning {
        Pruning::Channels { units, removed } => (*units, removed.len()),
        Pruning::Magnitude => (0, 0),
    };
    let tune = TrainConfig {
        genotype_source: format!(
            "{} pruned from {}",
            cfg.genotype_source,
            a.checkpoint.display()
        ),
        epochs: a.finetune_epochs,
        lr: a.lr.unwrap_or(cfg.lr),
        drop_path: a.drop_path,
        max_steps: a.max_steps,
        seed: a.seed.unwrap_or(cfg.seed),
        eval_every_epoch: false,
        prune: Some(plan.pruning),
        distill: a
            .distill
            .map(|temperature| -> Result<_> {
                Ok(Distill {
                    teacher: std::fs::canonicalize(&a.checkpoint)
                        .map_err(|e| Error::io(&a.checkpoint, e))?,
                    temperature,
                    weight: a.distill_weight,
                })
            })
            .transpose()?,
        ..cfg.clone()
    };
    if a.resume && train::has_state(&a.out) {
        same_run(&a.out, &tune)?;
    } else {
        train::begin(&a.out, &tune, &net)?;
    }
    train::run(tune, Some(&a.out), true)?;
    let (tuned_cfg, mut tuned, _) =
        crate::evaluate::load_trained(&a.out, None, a.data_dir.clone())?;
    let after = measure(&mut tuned, &tuned_cfg, &train, &test)?;
    let weight_sparsity = magnitude::weight_sparsity(&tuned);
    let pruned_program = crate::infer::lower(&tuned)?;
    let norm = source::default_normalize(cfg.data.kind, &train)?;
    let x64 = train::in_order_loader(test.clone(), norm, 64)?
        .epoch(0)?
        .next()
        .ok_or_else(|| Error::InvalidArgument("the test set is empty".into()))?
        .images;
    let latency = latency::compare(&unpruned, &pruned_program, &x64, a.runs)?;
    let report = PruneReport {
        method: a.method,
        allocation: plan.allocation,
        min_keep: plan.min_keep,
        keep_ratio: plan.keep_ratio,
        removed_units,
        units,
        before,
        pruned,
        after,
        weight_sparsity,
        finetune_epochs: a.finetune_epochs,
        finetune_lr: tuned_cfg.lr,
        finetune_drop_path: tuned_cfg.drop_path,
        distill: tuned_cfg.distill.clone(),
        latency,
        out: a.out.clone(),
    };
    crate::checkpoint::write_atomic(
        &a.out.join("prune.json"),
        serde_json::to_string_pretty(&report)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .as_bytes(),
    )?;
    eprint!("{}", render(&report));
    if a.json {
        crate::cli::print_json(&report)
    } else {
        println!("{}", a.out.display());
        Ok(())
    }
}

/// The before/after table and the latency rows.
fn render(r: &PruneReport) -> String {
    let mut s = format!(
        "{:<22} {:>10} {:>10} {:>10} {:>9}\n",
        "model", "params", "nonzero", "MMACs", "test acc"
    );
    for (name, m) in [
        ("unpruned", &r.before),
        ("pruned", &r.pruned),
        ("pruned + fine-tuned", &r.after),
    ] {
        s += &format!(
            "{:<22} {:>10} {:>10} {:>10.2} {:>8.2}%\n",
            name,
            m.params,
            m.nonzero_params,
            m.macs as f64 / 1e6,
            100.0 * m.test_accuracy
        );
    }
    s + &latency::render(&r.latency)
}
