//! What defines a search run (`config.json` of its folder): the paper's recipe, the built-in
//! dataset's shorter one, and their validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::architect::Order;
use super::primitives::{Primitive, DARTS_PRIMITIVES, NB201_PRIMITIVES};
use super::space::Space;
use crate::data::{DataSpec, DatasetKind};
use crate::error::{Error, Result};

pub(super) fn one() -> f32 {
    1.0
}

/// The built-in dataset's short search (see [`SearchConfig::recipe`]).
const BUILTIN_EPOCHS: usize = 3;
const BUILTIN_WARMUP: usize = 1;
const BUILTIN_ARCH_LR: f32 = 0.03;
const BUILTIN_TEMPERATURE: f32 = 0.2;
const BUILTIN_BATCH_SIZE: usize = 32;

/// Everything that defines a search run; saved as `config.json` in the run folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchConfig {
    /// The search space (configs written before there was a choice are DARTS).
    #[serde(default)]
    pub space: Space,
    pub data: DataSpec,
    /// The data files the run read, filled in when it starts (configs written before this was
    /// recorded have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_files: Vec<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub channels: usize,
    pub layers: usize,
    pub order: Order,
    pub seed: u64,
    pub primitives: Vec<Primitive>,
    pub train_portion: f32,
    pub lr: f32,
    pub lr_min: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub arch_lr: f32,
    pub arch_weight_decay: f32,
    /// The softmax temperature of the alphas at the end of the search: it anneals
    /// geometrically from 1 over the search epochs (after the warm-up), step by step, so the
    /// supernet's mixture sharpens towards the discrete cell that will be derived from it (as in
    /// ASAP, Noy et al. 2020, and SNAS). 1 = the paper's fixed softmax (configs written
    /// before this have 1).
    #[serde(default = "one")]
    pub arch_temperature: f32,
    /// Epochs at the start that train the weights only, the alphas frozen: an untrained
    /// supernet favours the parameter-free ops, so alphas stepped from epoch 1 of a short search
    /// learn that bias rather than which op helps (configs written before this have none).
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Stop each epoch after this many steps (quick experiments and tests); `None` = full epoch.
    pub max_steps: Option<usize>,
    /// The NAS-Bench-201 table that scores the found cell (`--space nb201`); `None`: the one in
    /// the datasets folder when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<PathBuf>,
    /// Where to compute (`--device`): a choice of this process, not part of the saved run.
    #[serde(skip, default)]
    pub device: crate::Device,
}

impl SearchConfig {
    /// The default search of `space` on `data`: the DARTS paper's recipe (50 epochs, 8 cells at
    /// C=16, batch 64, Adam 3e-4 for the alphas), which NAS-Bench-201 also uses at N=5; on the
    /// built-in dataset a 3-epoch search that still decides: 5 cells at C=8, batch 32, one
    /// weight-only warm-up epoch, arch lr 0.03 and the softmax temperature annealed to 0.2, so
    /// that every normal edge's op reaches 2x uniform in under three minutes on two cores
    /// (each choice measured in BENCHMARKS.md).
    pub fn recipe(space: Space, data: DataSpec) -> SearchConfig {
        let builtin = data.kind == DatasetKind::Builtin;
        let (layers, primitives) = match space {
            Space::Darts => (if builtin { 5 } else { 8 }, DARTS_PRIMITIVES.to_vec()),
            Space::Nb201 => (if builtin { 2 } else { 5 }, NB201_PRIMITIVES.to_vec()),
        };
        SearchConfig {
            space,
            data,
            data_files: Vec::new(),
            epochs: if builtin { BUILTIN_EPOCHS } else { 50 },
            batch_size: if builtin { BUILTIN_BATCH_SIZE } else { 64 },
            channels: if builtin { 8 } else { 16 },
            layers,
            order: Order::First,
            seed: 2,
            primitives,
            train_portion: 0.5,
            lr: 0.025,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            arch_lr: if builtin { BUILTIN_ARCH_LR } else { 3e-4 },
            arch_weight_decay: 1e-3,
            warmup_epochs: if builtin { BUILTIN_WARMUP } else { 0 },
            arch_temperature: if builtin { BUILTIN_TEMPERATURE } else { 1.0 },
            max_steps: None,
            benchmark: None,
            device: crate::Device::Cpu,
        }
    }

    /// The alphas' softmax temperature `progress` (0..=1) of the way through `epoch`: 1 in the
    /// warm-up, then `arch_temperature^p` where `p` is the fraction of the search epochs done.
    ///
    /// ```
    /// use darts::data::{DataSpec, DatasetKind};
    /// use darts::nas::{search::SearchConfig, space::Space};
    /// let data = DataSpec { kind: DatasetKind::Builtin, dir: None };
    /// let cfg = SearchConfig { epochs: 3, warmup_epochs: 1, arch_temperature: 0.25, ..SearchConfig::recipe(Space::Darts, data) };
    /// assert_eq!(cfg.temperature_at(0, 1.0), 1.0);
    /// assert_eq!(cfg.temperature_at(2, 0.0), 0.5);
    /// assert_eq!(cfg.temperature_at(2, 1.0), 0.25);
    /// ```
    pub fn temperature_at(&self, epoch: usize, progress: f32) -> f32 {
        let searched = epoch as f32 + progress - self.warmup_epochs as f32;
        let span = (self.epochs - self.warmup_epochs).max(1) as f32;
        self.arch_temperature
            .powf((searched / span).clamp(0.0, 1.0))
    }

    /// Every value a search needs in range; called by [`run`], so flags and a resumed
    /// `config.json` are checked alike.
    pub fn validate(&self) -> Result<()> {
        use crate::validate as v;
        v::data(&self.data)?;
        v::count("epochs", self.epochs)?;
        v::count("batch-size", self.batch_size)?;
        v::count("channels", self.channels)?;
        v::count("layers", self.layers)?;
        if let Some(s) = self.max_steps {
            v::count("max-steps", s)?;
        }
        if self.primitives.is_empty() {
            return Err(Error::InvalidArgument(
                "--primitives must name at least one operation".into(),
            ));
        }
        v::open_unit("train-portion", self.train_portion)?;
        v::positive("lr", self.lr)?;
        v::floor("lr-min", self.lr_min, "lr", self.lr)?;
        v::unit("momentum", self.momentum)?;
        v::non_negative("weight-decay", self.weight_decay)?;
        v::positive("grad-clip", self.grad_clip)?;
        v::positive("arch-lr", self.arch_lr)?;
        if self.warmup_epochs >= self.epochs {
            return Err(Error::InvalidArgument(format!(
                "--warmup-epochs ({}) must be below --epochs ({}), or the alphas never train",
                self.warmup_epochs, self.epochs
            )));
        }
        if !(self.arch_temperature > 0.0 && self.arch_temperature <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--arch-temperature must be in (0, 1] (got {})",
                self.arch_temperature
            )));
        }
        v::non_negative("arch-weight-decay", self.arch_weight_decay)
    }
}
