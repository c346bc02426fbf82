//! Which dataset a run uses and how to get it: the `--dataset` / `--data-dir` choice, loading
//! the train and test sets, and each dataset's default normalisation and augmentation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::{Augment, Normalize};
use super::{builtin, cifar, folder, mnist, split, Dataset, Split};
use crate::error::{Error, Result};

/// The datasets darts reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Generated in code (16×16, 10 pattern classes): needs no files.
    Builtin,
    Mnist,
    FashionMnist,
    Cifar10,
    /// `root/<class>/*.png|jpg`, optionally with `train/` and `test/` sub-folders.
    Folder,
}

/// A dataset choice as given on the command line and saved in run configs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub kind: DatasetKind,
    /// Explicit data folder; otherwise `$DARTS_DATA_DIR` or `../shared/datasets`.
    pub dir: Option<PathBuf>,
}

/// The training and test sets of a dataset.
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// Fraction of an image folder held out as test set when it has no `test/` sub-folder.
const FOLDER_TEST_FRACTION: f64 = 0.2;

/// Loads the dataset `spec` names. `seed` only matters for folders without a test split.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Splits> {
    let root = || super::data_dir(spec.dir.as_deref());
    let (train, test) = match spec.kind {
        DatasetKind::Builtin => builtin::generate(&builtin::BuiltinConfig::default())?,
        DatasetKind::Mnist => {
            let r = root()?;
            (
                mnist::mnist(&r, Split::Train)?,
                mnist::mnist(&r, Split::Test)?,
            )
        }
        DatasetKind::FashionMnist => {
            let r = root()?;
            (
                mnist::fashion_mnist(&r, Split::Train)?,
                mnist::fashion_mnist(&r, Split::Test)?,
            )
        }
        DatasetKind::Cifar10 => {
            let base = root()?;
            let dir = [
                "cifar-10-subset",
                "cifar-10-batches-bin",
                "cifar10",
                "cifar-10",
            ]
            .iter()
            .map(|d| base.join(d))
            .find(|d| d.is_dir())
            .unwrap_or(base);
            let c = cifar::load(&dir)?;
            (c.train, c.test)
        }
        DatasetKind::Folder => {
            let dir = spec.dir.clone().ok_or_else(|| {
                Error::InvalidArgument(
                    "--dataset folder needs --data-dir pointing at the image folder".into(),
                )
            })?;
            let f = folder::load(&dir)?;
            match f.test {
                Some(test) => (f.train, test),
                None => split::train_test_split(&f.train, FOLDER_TEST_FRACTION, seed)?,
            }
        }
    };
    Ok(Splits { train, test })
}

/// The default training augmentation: random crop with padding, and horizontal flip except for
/// digits (a mirrored 2 is no digit).
pub fn default_augment(kind: DatasetKind, cutout: usize) -> Augment {
    match kind {
        DatasetKind::Cifar10 | DatasetKind::Folder => Augment {
            pad: 4,
            flip: true,
            cutout,
        },
        DatasetKind::FashionMnist => Augment {
            pad: 2,
            flip: true,
            cutout,
        },
        DatasetKind::Mnist => Augment {
            pad: 2,
            flip: false,
            cutout,
        },
        DatasetKind::Builtin => Augment {
            pad: 1,
            flip: true,
            cutout,
        },
    }
}

/// Per-channel normalisation: the reference constants for CIFAR-10, else fitted on `train`.
pub fn default_normalize(kind: DatasetKind, train: &Dataset) -> Result<Normalize> {
    match kind {
        DatasetKind::Cifar10 => Ok(Normalize::cifar10()),
        _ => Normalize::fit(train),
    }
}
