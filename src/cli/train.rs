//! `darts train`: its flags and the training config they describe.

use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches};

use super::{check_resume_flags, print_json, resumed_config, set_threads, DataArgs, DeviceArgs};
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::nas::space::{Arch, Space};
use crate::train::TrainConfig;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Search space of the architecture [default: nb201 with --arch, else darts]. With nb201 the
    /// defaults are NAS-Bench-201's training recipe: SGD lr 0.1 with Nesterov momentum 0.9,
    /// weight decay 5e-4, batch 256, 200 epochs, C=16, N=5, no auxiliary head, no drop-path
    /// (the flags marked below); cosine schedule, crop+flip and --grad-clip as in DARTS.
    #[arg(long, value_enum)]
    pub space: Option<Space>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// DARTS genotype: a built-in name (DARTS_V2, DARTS_V1, DARTS) or a JSON / DARTS-text file
    /// (e.g. a search run's genotype.json) [default: DARTS_V2].
    #[arg(long, conflicts_with = "arch")]
    pub genotype: Option<String>,
    /// NAS-Bench-201 cell: its benchmark string
    /// ('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|')
    /// or a file holding one (a search run's genotype.json) [default: the benchmark's best
    /// CIFAR-10 cell, index 6111].
    #[arg(long)]
    pub arch: Option<String>,
    /// Initial channels C [darts: 36; nb201: 16; 8 on the built-in dataset].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Cells [darts: 20 in all; nb201: N = 5 per stage; 5 / 2 on the built-in dataset].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Epochs [darts: 600; nb201: 200; 10 on the built-in dataset].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [darts: 96; nb201: 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Initial learning rate (cosine-annealed to 0, per step) [darts: 0.025; nb201: 0.1].
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Nesterov momentum [darts: off; nb201: on]; `--nesterov false` turns it off.
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// [darts: 3e-4; nb201: 5e-4].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    #[arg(long, default_value_t = 5.0)]
    pub grad_clip: f32,
    /// Weight of the auxiliary head's loss, 0 disables the head [darts: 0.4; nb201: 0, it has
    /// none].
    #[arg(long)]
    pub auxiliary_weight: Option<f32>,
    /// Drop-path probability, ramped linearly from 0 over the epochs [darts: 0.2; nb201: 0].
    #[arg(long)]
    pub drop_path: Option<f32>,
    /// Cutout length (0 = off), on top of the dataset's standard augmentation: random crop
    /// after zero padding (4 pixels on CIFAR-10 and folders, 2 on MNIST and Fashion-MNIST, 1 on
    /// the built-in set) and horizontal flip (not on MNIST's digits).
    #[arg(long, default_value_t = 0)]
    pub cutout: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Evaluate on the test set after every epoch.
    #[arg(long)]
    pub eval_every_epoch: bool,
    /// Stop each epoch after this many batches (quick experiments); the test set is always
    /// evaluated whole.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Hold out this fraction of the training set (seeded) and report its accuracy after every
    /// epoch, the number a tuner may see (0 = no validation set).
    #[arg(long, default_value_t = 0.0)]
    pub valid_fraction: f32,
    /// Stop after this many epochs of the --epochs schedule; `--resume` continues the run.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// A training config JSON (a run's config.json, `darts hpo`'s best_config.json); flags
    /// given explicitly override its fields.
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Run folder: config.json, genotype.json, train.jsonl, model.safetensors, results.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its config.json wins).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run_train(a: TrainArgs, m: &ArgMatches) -> Result<()> {
    if a.resume.is_some() {
        check_resume_flags(&TrainArgs::augment_args(clap::Command::new("train")), m)?;
    }
    set_threads(a.threads)?;
    let device = a.device.start()?;
    let (mut cfg, out, resume) = match (&a.resume, &a.config) {
        (Some(dir), _) => (
            resumed_config(dir, TrainConfig::validate)?,
            Some(dir.clone()),
            true,
        ),
        (None, Some(file)) => (
            crate::train_file::merge(file, train_config(&a)?, m)?,
            a.out.clone(),
            false,
        ),
        (None, None) => (train_config(&a)?, a.out.clone(), false),
    };
    cfg.device = device;
    cfg.stop_after = a.stop_after;
    let result = crate::train::run(cfg, out.as_deref(), resume)?;
    if a.json {
        print_json(&result)
    } else {
        println!(
            "test accuracy {:.2}% | {} params, {:.1} M MACs | {} epochs in {:.0}s ({:.0} img/s)",
            100.0 * result.test_accuracy,
            result.params,
            result.macs as f64 / 1e6,
            result.epochs,
            result.seconds,
            result.images_per_second
        );
        Ok(())
    }
}

/// `darts train`'s flags with none given, for `space`: what the proxy trials of `darts nas`
/// and `darts hpo` fill in and pass to [`train_config`], so they train with its defaults.
pub(crate) fn default_train_args(space: Space) -> Result<TrainArgs> {
    let cmd = TrainArgs::augment_args(clap::Command::new("train"));
    let space = space.to_string();
    cmd.try_get_matches_from(["train", "--space", space.as_str()])
        .and_then(|m| TrainArgs::from_arg_matches(&m))
        .map_err(|e| Error::InvalidArgument(format!("darts train's defaults: {e}")))
}

/// The training config that `darts train` flags describe, with the chosen space's recipe (and
/// the built-in dataset's smaller defaults) for what they leave out, validated.
pub(crate) fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let builtin = a.data.dataset == DatasetKind::Builtin;
    let space = a.space.unwrap_or(if a.arch.is_some() {
        Space::Nb201
    } else {
        Space::Darts
    });
    let source = match space {
        Space::Darts if a.arch.is_some() => {
            return Err(Error::InvalidArgument(
                "--arch names a NAS-Bench-201 cell; use --genotype with --space darts".into(),
            ))
        }
        Space::Darts => a.genotype.clone().unwrap_or_else(|| "DARTS_V2".into()),
        Space::Nb201 => a
            .arch
            .clone()
            .or(a.genotype.clone())
            .unwrap_or_else(|| crate::nas::space::NB201_BEST.into()),
    };
    let genotype = Arch::load(&source)?;
    if genotype.space() != space {
        return Err(Error::InvalidArgument(format!(
            "'{source}' is a {} architecture, but the space is {space}; pass --space {}",
            genotype.space(),
            genotype.space()
        )));
    }
    let nb201 = space == Space::Nb201;
    // The DARTS value, or NAS-Bench-201's.
    let pick = |darts: f32, nb201_value: f32| if nb201 { nb201_value } else { darts };
    let pick_n = |darts: usize, nb201_value: usize| if nb201 { nb201_value } else { darts };
    let cfg = TrainConfig {
        data: a.data.spec(),
        data_files: Vec::new(),
        genotype,
        genotype_source: source,
        epochs: a
            .epochs
            .unwrap_or(if builtin { 10 } else { pick_n(600, 200) }),
        batch_size: a.batch_size.unwrap_or(pick_n(96, 256)),
        channels: a
            .channels
            .unwrap_or(if builtin { 8 } else { pick_n(36, 16) }),
        layers: a
            .layers
            .unwrap_or(if builtin { pick_n(5, 2) } else { pick_n(20, 5) }),
        lr: a.lr.unwrap_or(pick(0.025, 0.1)),
        momentum: a.momentum,
        nesterov: a.nesterov.unwrap_or(nb201),
        weight_decay: a.weight_decay.unwrap_or(pick(3e-4, 5e-4)),
        grad_clip: a.grad_clip,
        auxiliary_weight: a.auxiliary_weight.unwrap_or(pick(0.4, 0.0)),
        drop_path: a.drop_path.unwrap_or(pick(0.2, 0.0)),
        cutout: a.cutout,
        seed: a.seed,
        eval_every_epoch: a.eval_every_epoch,
        max_steps: a.max_steps,
        valid_fraction: a.valid_fraction,
        prune: None,
        distill: None,
        stop_after: a.stop_after,
        device: crate::Device::Cpu,
    };
    cfg.validate()?;
    Ok(cfg)
}
