//! Datasets as raw bytes in memory, where to find them on disk, and normalised batches.
//!
//! Images stay `u8` until a batch is made (60,000 MNIST images are 47 MB as bytes, four times
//! that as f32), and a batch is normalised per channel on the way to a tensor.

pub mod mnist;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use mnist::{fashion_mnist, load_idx, mnist};

/// The environment variable that points at the datasets folder (the one holding `mnist/`).
pub const DATA_DIR_ENV: &str = "DARTS_DATA_DIR";

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// A labelled image dataset held as bytes.
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

/// Per-channel normalisation `(pixel/255 - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// The mean and standard deviation of each channel of `ds` (on the 0..1 scale), which is how
    /// the usual constants (0.1307, 0.3081 for MNIST) were obtained from the training set.
    pub fn fit(ds: &Dataset) -> Normalize {
        let (c, plane) = (ds.channels, ds.height * ds.width);
        let mut sum = vec![0u64; c];
        let mut sq = vec![0u64; c];
        for (i, px) in ds.images.iter().enumerate() {
            let ch = (i / plane) % c;
            sum[ch] += *px as u64;
            sq[ch] += (*px as u64) * (*px as u64);
        }
        let n = (ds.len() * plane).max(1) as f64;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for ch in 0..c {
            let m = sum[ch] as f64 / n / 255.0;
            let var = sq[ch] as f64 / n / (255.0 * 255.0) - m * m;
            mean.push(m as f32);
            std.push(var.max(0.0).sqrt() as f32);
        }
        Normalize { mean, std }
    }
}

impl Dataset {
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
        let c = self.channels;
        if norm.mean.len() != c || norm.std.len() != c || norm.std.iter().any(|s| !(*s > 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "batch: normalisation needs {c} means and {c} positive stds, got {norm:?}"
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
        // One lookup table per channel: 256 entries replace a divide per pixel.
        let lut: Vec<[f32; 256]> = (0..c)
            .map(|ch| std::array::from_fn(|v| (v as f32 / 255.0 - norm.mean[ch]) / norm.std[ch]))
            .collect();
        let (len, plane) = (self.image_len(), self.height * self.width);
        let mut out = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            let img = &self.images[i * len..(i + 1) * len];
            for (ch, px) in img.chunks(plane).enumerate() {
                out.extend(px.iter().map(|&v| lut[ch][v as usize]));
            }
        }
        let labels = indices.iter().map(|&i| self.labels[i] as usize).collect();
        let x = Tensor::from_vec(out, &[indices.len(), c, self.height, self.width])?;
        Ok((x, labels))
    }
}

/// The datasets folder (holding `mnist/`, `fashion-mnist/`, ...): `explicit` if given, else
/// `$DARTS_DATA_DIR`, else the first of `../shared/datasets` and `shared/datasets` (from the
/// current directory) and `shared/datasets` beside this crate's checkout that exists.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let from_env = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty());
    if let Some(dir) = explicit
        .map(Path::to_path_buf)
        .or(from_env.map(PathBuf::from))
    {
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
    let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
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
        let norm = Normalize {
            mean: vec![0.5, 0.0],
            std: vec![0.5, 1.0],
        };
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
        let norm = Normalize::fit(&ds);
        assert!(ds.batch(&[2], &norm).is_err());
        assert!(ds.batch(&[], &norm).is_err());
        let one = Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        };
        assert!(ds.batch(&[0], &one).is_err());
    }

    #[test]
    fn fit_gives_channel_statistics() {
        let n = Normalize::fit(&tiny());
        assert!((n.mean[0] - 0.5).abs() < 1e-6);
        assert!((n.std[0] - 0.5).abs() < 1e-6);
        assert!((n.mean[1] - 25.0 / 255.0).abs() < 1e-6);
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
