//! `darts search`: its flags and the search config they describe.

use std::path::PathBuf;

use clap::{ArgMatches, Args};

use super::{check_resume_flags, print_json, resumed_config, set_threads, DataArgs, DeviceArgs};
use crate::error::{Error, Result};
use crate::nas::architect::Order;
use crate::nas::primitives::parse_primitive_list;
use crate::nas::search::{self, SearchConfig};
use crate::nas::space::Space;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Search space: darts (the paper's cells) or nb201 (NAS-Bench-201's cell; the found cell
    /// is then looked up in the benchmark's table). Both use the DARTS search recipe below, as
    /// the NAS-Bench-201 paper does.
    #[arg(long, value_enum, default_value_t = Space::Darts)]
    pub space: Space,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Epochs [default: 50; 3 on the built-in dataset, so that a plain `darts search` ends in
    /// about two minutes on two cores].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs at the start that train the weights only, the alphas frozen [default: 0; 1 on
    /// the built-in dataset, unless --epochs is 1].
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Batch size [default: 64; 32 on the built-in dataset].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Initial channels C [default: 16; 8 on the built-in dataset].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Number of cells [darts: 8 in all (5 on the built-in dataset); nb201: N = 5 per stage
    /// (2 on the built-in dataset)].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Architecture gradient: 1 = first order, 2 = second order (unrolled) [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub order: Option<u8>,
    /// Random seed (weights, alphas, data order, augmentation) [default: 2].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Comma-separated candidate operations [default: the 8 DARTS primitives; nb201 searches
    /// its own 5].
    #[arg(long)]
    pub primitives: Option<String>,
    /// Fraction of the training set that trains weights; the rest trains the alphas
    /// [default: 0.5].
    #[arg(long)]
    pub train_portion: Option<f32>,
    /// Weight learning rate, cosine-annealed to --lr-min [default: 0.025].
    #[arg(long)]
    pub lr: Option<f32>,
    /// [default: 0.001]
    #[arg(long)]
    pub lr_min: Option<f32>,
    /// [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f32>,
    /// [default: 3e-4]
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// [default: 5]
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// Architecture (alpha) learning rate for Adam [default: 3e-4, the paper's; 0.03 on the
    /// built-in dataset, whose short search would leave 3e-4 alphas uniform].
    #[arg(long)]
    pub arch_lr: Option<f32>,
    /// [default: 1e-3]
    #[arg(long)]
    pub arch_weight_decay: Option<f32>,
    /// Softmax temperature of the alphas at the end of the search, annealed geometrically from
    /// 1 over the epochs after the warm-up, which sharpens the supernet's mixture towards the
    /// cell it derives [default: 1, the paper's fixed softmax; 0.2 on the built-in dataset].
    #[arg(long)]
    pub arch_temperature: Option<f32>,
    /// Stop each epoch after this many steps (quick experiments).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// nb201: the benchmark table that scores the found cell [default:
    /// $DARTS_DATA_DIR/nb201/nb201.csv, else ../shared/datasets/nb201/nb201.csv, when present].
    #[arg(long)]
    pub benchmark: Option<PathBuf>,
    /// Run folder: search.jsonl, genotype.json/.txt, config.json, checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its config.json wins).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Print the results as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// The search config that `darts search` flags describe (the built-in dataset's smaller
/// defaults included), validated.
pub(crate) fn search_config(a: &SearchArgs) -> Result<SearchConfig> {
    let r = SearchConfig::recipe(a.space, a.data.spec());
    let primitives = match (&a.primitives, a.space) {
        (Some(_), Space::Nb201) => {
            return Err(Error::InvalidArgument(
                "--space nb201 searches the benchmark's own 5 ops; drop --primitives".into(),
            ))
        }
        (Some(list), Space::Darts) => parse_primitive_list(list)?,
        (None, _) => r.primitives.clone(),
    };
    if a.benchmark.is_some() && a.space != Space::Nb201 {
        return Err(Error::InvalidArgument(
            "--benchmark scores NAS-Bench-201 cells; it needs --space nb201".into(),
        ));
    }
    let epochs = a.epochs.unwrap_or(r.epochs);
    let cfg = SearchConfig {
        benchmark: a.benchmark.clone(),
        epochs,
        // A shorter search keeps at least one epoch that trains the alphas.
        warmup_epochs: (a.warmup_epochs)
            .unwrap_or_else(|| r.warmup_epochs.min(epochs.saturating_sub(1))),
        batch_size: a.batch_size.unwrap_or(r.batch_size),
        channels: a.channels.unwrap_or(r.channels),
        layers: a.layers.unwrap_or(r.layers),
        order: match a.order {
            Some(2) => Order::Second,
            Some(_) => Order::First,
            None => r.order,
        },
        seed: a.seed.unwrap_or(r.seed),
        primitives,
        train_portion: a.train_portion.unwrap_or(r.train_portion),
        lr: a.lr.unwrap_or(r.lr),
        lr_min: a.lr_min.unwrap_or(r.lr_min),
        momentum: a.momentum.unwrap_or(r.momentum),
        weight_decay: a.weight_decay.unwrap_or(r.weight_decay),
        grad_clip: a.grad_clip.unwrap_or(r.grad_clip),
        arch_lr: a.arch_lr.unwrap_or(r.arch_lr),
        arch_weight_decay: a.arch_weight_decay.unwrap_or(r.arch_weight_decay),
        arch_temperature: a.arch_temperature.unwrap_or(r.arch_temperature),
        max_steps: a.max_steps,
        ..r
    };
    cfg.validate()?;
    Ok(cfg)
}

pub(super) fn run_search(a: SearchArgs, m: &ArgMatches) -> Result<()> {
    if a.resume.is_some() {
        check_resume_flags(&SearchArgs::augment_args(clap::Command::new("search")), m)?;
    }
    set_threads(a.threads)?;
    let device = a.device.start()?;
    let (mut cfg, out, resume) = match &a.resume {
        Some(dir) => (
            resumed_config(dir, SearchConfig::validate)?,
            Some(dir.clone()),
            true,
        ),
        None => (search_config(&a)?, a.out.clone(), false),
    };
    cfg.device = device;
    let result = search::run(cfg, out.as_deref(), resume)?;
    if a.json {
        print_json(&result)?;
    } else {
        println!("{}", result.genotype_text);
    }
    Ok(())
}
