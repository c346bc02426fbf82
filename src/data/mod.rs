//! Datasets as raw bytes in memory, where to find them on disk, and normalised batches.
//!
//! Images stay `u8` until a batch is made (60,000 MNIST images are 47 MB as bytes, four times
//! that as f32), and a batch is normalised per channel on the way to a tensor: synchronously with
//! [`Dataset::batch`], or shuffled, augmented and prefetched by [`loader::Loader`].

pub mod augment;
pub mod builtin;
pub mod cifar;
pub mod fetch;
pub mod folder;
pub mod loader;
pub mod mnist;
pub mod seed;
pub mod source;
pub mod split;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use augment::Normalize;
pub use mnist::{fashion_mnist, load_idx, mnist};

/// The environment variable that points at the datasets folder (the one holding `mnist/`).
pub const DATA_DIR_ENV: &str = "DARTS_DATA_DIR";

/// Set (to anything) in CI: a test whose dataset files are missing fails instead of skipping.
pub const REQUIRE_DATA_ENV: &str = "DARTS_REQUIRE_DATA";

/// For tests of real data: `Some(dir)` when the datasets folder has `sub`; otherwise the test
/// skips (printing why) on a fresh clone, and fails under `$DARTS_REQUIRE_DATA`, so that CI
/// cannot pass without reading the files.
#[doc(hidden)]
pub fn test_data(sub: &str) -> Option<PathBuf> {
    let missing = match data_dir(None) {
        Ok(d) if d.join(sub).exists() => return Some(d),
        Ok(d) => format!("{} has no {sub}", d.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os(REQUIRE_DATA_ENV).is_none(),
        "{REQUIRE_DATA_ENV} is set but the test data is missing: {missing}"
    );
    println!("skipped: {missing} (set {DATA_DIR_ENV})");
    None
}

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}
pub use loader::{Batch, Batches, Loader, LoaderConfig};
pub use source::{load, DataSpec, DatasetKind, Splits};
pub use split::search_split;

/// An image-classification dataset held as raw bytes (N×C×H×W, row-major); normalised per batch.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixels, N×C×H×W, row-major.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

/// What a network needs to know of a dataset to be built: its image and class shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
}

impl Dataset {
    /// The image and class shape, without the images.
    pub fn shape(&self) -> ImageShape {
        ImageShape {
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The images at `indices` as a normalised f32 tensor `[B,C,H,W]`, with their labels.
    pub fn batch(&self, indices: &[usize], norm: &Normalize) -> Result<(Tensor, Vec<usize>)> {
        if norm.mean.len() != self.channels {
            return Err(Error::InvalidArgument(format!(
                "batch: normalisation has {} channels, the images {}",
                norm.mean.len(),
                self.channels
            )));
        }
        if indices.is_empty() {
            return Err(Error::InvalidArgument("batch: no indices".into()));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::InvalidArgument(format!(
                "batch: index {bad} is out of range for a dataset of {} images",
                self.len()
            )));
        }
        let len = self.image_len();
        let dims = (self.channels, self.height, self.width);
        let mut out = vec![0.0f32; indices.len() * len];
        for (&i, img) in indices.iter().zip(out.chunks_exact_mut(len)) {
            let raw = &self.images[i * len..(i + 1) * len];
            img.iter_mut()
                .zip(raw)
                .for_each(|(o, &v)| *o = f32::from(v) / 255.0);
            norm.apply(img, dims);
        }
        let labels = indices
            .iter()
            .map(|&i| usize::from(self.labels[i]))
            .collect();
        let x = Tensor::from_vec(
            out,
            &[indices.len(), self.channels, self.height, self.width],
        )?;
        Ok((x, labels))
    }
}

/// `explicit`, else `$DARTS_DATA_DIR` when set and not empty.
fn chosen_data_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    let from_env = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty());
    explicit
        .map(Path::to_path_buf)
        .or(from_env.map(PathBuf::from))
}

/// The datasets folder to download into: like [`data_dir`], except that a folder given
/// explicitly or by `$DARTS_DATA_DIR` is created when it does not exist yet.
pub fn data_dir_to_fill(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = chosen_data_dir(explicit) {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    data_dir(explicit)
}

/// The datasets folder (holding `mnist/`, `fashion-mnist/`, ...): `explicit` if given, else
/// `$DARTS_DATA_DIR`, else the first of `../shared/datasets` and `shared/datasets` (from the
/// current directory) and `shared/datasets` beside this crate's checkout that exists.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = chosen_data_dir(explicit) {
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::data(dir, "the data directory does not exist"))
        };
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let candidates = [
        cwd.join("../shared/datasets"),
        cwd.join("shared/datasets"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"),
    ];
    if let Some(dir) = candidates.iter().find(|d| d.is_dir()) {
        return Ok(dir.clone());
    }
    let mut tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    tried.dedup();
    Err(Error::InvalidArgument(format!(
        "no datasets folder found (tried {}); pass the folder that holds mnist/ explicitly \
         or set {DATA_DIR_ENV}",
        tried.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // Two 2-channel 1×2 images.
        Dataset {
            images: vec![0, 255, 10, 20, 255, 0, 30, 40],
            labels: vec![1, 0],
            channels: 2,
            height: 1,
            width: 2,
            num_classes: 2,
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn batch_normalises_per_channel() {
        let ds = tiny();
        let norm = Normalize::new(vec![0.5, 0.0], vec![0.5, 1.0]).unwrap();
        let (x, y) = ds.batch(&[1, 0], &norm).unwrap();
        assert_eq!(x.shape(), &[2, 2, 1, 2]);
        assert_eq!(y, vec![0, 1]);
        let want = [
            1.0,
            -1.0,
            30.0 / 255.0,
            40.0 / 255.0,
            -1.0,
            1.0,
            10.0 / 255.0,
            20.0 / 255.0,
        ];
        for (g, w) in x.data().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?}", x.data());
        }
    }

    #[test]
    fn batch_rejects_bad_input() {
        let ds = tiny();
        let norm = Normalize::fit(&ds).unwrap();
        assert!(ds.batch(&[2], &norm).is_err());
        assert!(ds.batch(&[], &norm).is_err());
        let one = Normalize::new(vec![0.0], vec![1.0]).unwrap();
        assert!(ds.batch(&[0], &one).is_err());
    }

    #[test]
    fn explicit_data_dir_must_exist() {
        let missing = Path::new("/nonexistent/darts-data");
        let err = data_dir(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/darts-data"), "{err}");
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(data_dir(Some(here)).unwrap(), here);
    }
}
