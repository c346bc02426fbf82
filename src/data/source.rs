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
    /// The files they were read from (the image folder for `--dataset folder`; none for the
    /// built-in set), for the run's log and `config.json`.
    pub files: Vec<PathBuf>,
}

/// Where `--dataset cifar10` looks under the datasets folder, in order: the full official set
/// (unpacked by `darts data fetch cifar10`, or by hand under one of the usual names) before
/// the partial subset, then the datasets folder itself.
pub const CIFAR10_FOLDERS: [&str; 4] = [
    "cifar-10-batches-bin",
    "cifar10",
    "cifar-10",
    "cifar-10-subset",
];

/// The size of the official CIFAR-10 training set: fewer images mean a partial copy.
const CIFAR10_TRAIN_IMAGES: usize = 50_000;

/// Fraction of an image folder held out as test set when it has no `test/` sub-folder.
const FOLDER_TEST_FRACTION: f64 = 0.2;

/// Loads the dataset `spec` names and says on stderr which files it read. `seed` only matters
/// for folders without a test split.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Splits> {
    let root = || super::data_dir(spec.dir.as_deref());
    let idx_files = |dir: PathBuf| -> Result<Vec<PathBuf>> {
        let mut files = mnist::idx_files(&dir, Split::Train)?.to_vec();
        files.extend(mnist::idx_files(&dir, Split::Test)?);
        Ok(files)
    };
    let (train, test, files) = match spec.kind {
        DatasetKind::Builtin => {
            let (train, test) = builtin::generate(&builtin::BuiltinConfig::default())?;
            (train, test, Vec::new())
        }
        DatasetKind::Mnist => {
            let r = root()?;
            (
                mnist::mnist(&r, Split::Train)?,
                mnist::mnist(&r, Split::Test)?,
                idx_files(r.join("mnist"))?,
            )
        }
        DatasetKind::FashionMnist => {
            let r = root()?;
            (
                mnist::fashion_mnist(&r, Split::Train)?,
                mnist::fashion_mnist(&r, Split::Test)?,
                idx_files(r.join("fashion-mnist"))?,
            )
        }
        DatasetKind::Cifar10 => {
            let base = root()?;
            let dir = CIFAR10_FOLDERS
                .iter()
                .map(|d| base.join(d))
                .find(|d| d.is_dir())
                .unwrap_or(base);
            let c = cifar::load(&dir)?;
            (c.train, c.test, c.files)
        }
        DatasetKind::Folder => {
            let dir = spec.dir.clone().ok_or_else(|| {
                Error::InvalidArgument(
                    "--dataset folder needs --data-dir pointing at the image folder".into(),
                )
            })?;
            let f = folder::load(&dir)?;
            let (train, test) = match f.test {
                Some(test) => (f.train, test),
                None => split::train_test_split(&f.train, FOLDER_TEST_FRACTION, seed)?,
            };
            (train, test, vec![dir])
        }
    };
    let splits = Splits { train, test, files };
    if let Some(line) = describe(spec.kind, &splits) {
        eprintln!("{line}");
    }
    Ok(splits)
}

/// The files a run records in its `config.json`: those just read. A resumed run that reads
/// other files than it started on says so on stderr.
pub fn files_to_record(recorded: &[PathBuf], read: &[PathBuf], resume: bool) -> Vec<PathBuf> {
    if resume && !recorded.is_empty() && recorded != read {
        eprintln!(
            "warning: this run started on {} but now reads {}",
            list(recorded),
            list(read)
        );
    }
    read.to_vec()
}

fn list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

/// One log line naming the files read, or `None` for the built-in set.
fn describe(kind: DatasetKind, s: &Splits) -> Option<String> {
    let first = s.files.first()?;
    let dir = if kind == DatasetKind::Folder {
        first.as_path()
    } else {
        first.parent().unwrap_or(first)
    };
    let names: Vec<String> = s
        .files
        .iter()
        .filter_map(|f| f.strip_prefix(dir).ok())
        .map(|f| f.display().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let partial = kind == DatasetKind::Cifar10 && s.train.len() < CIFAR10_TRAIN_IMAGES;
    Some(format!(
        "data: {} train / {} test images from {}{}{}",
        s.train.len(),
        s.test.len(),
        dir.display(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        },
        if partial {
            "; a PARTIAL CIFAR-10 (the full set has 50000 training images: `darts data fetch \
             cifar10` gets it)"
        } else {
            ""
        }
    ))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A datasets folder with a CIFAR-10 folder per name, each holding `n` training records.
    fn cifar_root(name: &str, folders: &[(&str, usize)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("darts-source-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for &(folder, n) in folders {
            let dir = root.join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            let records = vec![0u8; n * cifar::RECORD_BYTES];
            std::fs::write(dir.join("data_batch_1.bin"), &records).unwrap();
            std::fs::write(dir.join("test_batch.bin"), &records[..cifar::RECORD_BYTES]).unwrap();
        }
        root
    }

    fn cifar(root: &Path) -> Splits {
        let spec = DataSpec {
            kind: DatasetKind::Cifar10,
            dir: Some(root.to_path_buf()),
        };
        load(&spec, 0).unwrap()
    }

    #[test]
    fn cifar10_prefers_the_full_set_to_the_subset_and_names_its_files() {
        let root = cifar_root(
            "both",
            &[("cifar-10-subset", 2), ("cifar-10-batches-bin", 3)],
        );
        let s = cifar(&root);
        assert_eq!(s.train.len(), 3);
        let full = root.join("cifar-10-batches-bin");
        assert_eq!(
            s.files,
            [full.join("data_batch_1.bin"), full.join("test_batch.bin")]
        );
        let line = describe(DatasetKind::Cifar10, &s).unwrap();
        assert!(line.contains("data_batch_1.bin, test_batch.bin"), "{line}");
        std::fs::remove_dir_all(root.join("cifar-10-batches-bin")).unwrap();
        let s = cifar(&root);
        assert_eq!(s.train.len(), 2);
        assert!(s.files[0].starts_with(root.join("cifar-10-subset")));
        let line = describe(DatasetKind::Cifar10, &s).unwrap();
        assert!(line.contains("PARTIAL"), "{line}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resumed_runs_keep_and_compare_the_recorded_files() {
        let a = vec![PathBuf::from("a.bin")];
        let b = vec![PathBuf::from("b.bin")];
        assert_eq!(files_to_record(&[], &a, false), a);
        assert_eq!(files_to_record(&a, &b, true), b);
    }
}
