//! The batch iterator: per epoch, a seeded shuffle of a list of sample indices, cut into batches
//! that a background thread turns into normalised, augmented `[B, C, H, W]` tensors.
//!
//! Every random draw of an epoch (the shuffle, then each image's augmentation in batch order)
//! comes from one `StdRng` seeded by `(seed, epoch)` and used by one thread, so the batches do not
//! depend on timing, and resuming at epoch k reproduces epoch k exactly. The thread runs ahead by
//! at most `prefetch` batches (a bounded channel), so the trainer never waits while compute is
//! slower than loading, and memory stays bounded when it is faster.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::augment::{Augment, Normalize};
use super::seed::derive;
use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One batch: normalised images `[B, C, H, W]` and their class indices.
#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
}

impl Batch {
    /// The images on `device`: batches are assembled on the host and copied once per batch.
    pub fn images_on(&self, device: crate::Device) -> crate::Result<Tensor> {
        self.images.to_device(device)
    }
}

/// How a [`Loader`] batches and augments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the indices each epoch (training); off keeps their order (evaluation).
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`; otherwise it is yielded as is.
    pub drop_last: bool,
    /// Mixed with the epoch number into the seed of each epoch's random generator.
    pub seed: u64,
    pub augment: Augment,
    /// How many prepared batches may wait in the channel (at least 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Shuffled, last batch kept, seed 0, no augmentation, two batches prefetched.
    pub fn new(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            seed: 0,
            augment: Augment::default(),
            prefetch: 2,
        }
    }
}

/// Batches over a fixed list of samples of one dataset (for the DARTS search, one loader per
/// part of [`super::split::SearchSplit`]).
#[derive(Clone, Debug)]
pub struct Loader {
    data: Arc<Dataset>,
    indices: Arc<[usize]>,
    norm: Arc<Normalize>,
    cfg: LoaderConfig,
}

impl Loader {
    /// A loader over the samples `indices` of `data`; checks the dataset's buffer sizes and
    /// labels, the normalisation's channel count and the augmentation against the image size.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use darts::data::{builtin, loader::{Loader, LoaderConfig}, augment::Normalize};
    /// let (train, _test) = builtin::generate(&builtin::BuiltinConfig { train: 10, test: 1, ..Default::default() })?;
    /// let norm = Normalize::fit(&train)?;
    /// let loader = Loader::new(Arc::new(train), (0..10).collect(), norm, LoaderConfig::new(4))?;
    /// let sizes: Vec<usize> = loader.epoch(0)?.map(|b| b.labels.len()).collect();
    /// assert_eq!(sizes, vec![4, 4, 2]);
    /// # Ok::<(), darts::Error>(())
    /// ```
    pub fn new(
        data: Arc<Dataset>,
        indices: Vec<usize>,
        norm: Normalize,
        cfg: LoaderConfig,
    ) -> Result<Loader> {
        let (c, h, w) = (data.channels, data.height, data.width);
        if c * h * w == 0 || data.images.len() != data.len() * c * h * w {
            return Err(Error::InvalidArgument(format!(
                "dataset holds {} pixel bytes, not {} images of {c}x{h}x{w}",
                data.images.len(),
                data.len()
            )));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(Error::InvalidArgument(format!(
                "index {i} out of range for a dataset of {} samples",
                data.len()
            )));
        }
        if let Some(&l) = indices
            .iter()
            .map(|&i| &data.labels[i])
            .find(|&&l| usize::from(l) >= data.num_classes)
        {
            return Err(Error::InvalidArgument(format!(
                "label {l} out of range for {} classes",
                data.num_classes
            )));
        }
        if norm.mean.len() != c {
            return Err(Error::InvalidArgument(format!(
                "normalisation has {} channels, the images {c}",
                norm.mean.len()
            )));
        }
        cfg.augment.check(h, w)?;
        if cfg.batch_size == 0 || cfg.prefetch == 0 {
            return Err(Error::InvalidArgument(format!(
                "batch_size ({}) and prefetch ({}) must be at least 1",
                cfg.batch_size, cfg.prefetch
            )));
        }
        let loader = Loader {
            data,
            indices: indices.into(),
            norm: Arc::new(norm),
            cfg,
        };
        if loader.num_batches() == 0 {
            return Err(Error::InvalidArgument(format!(
                "{} samples give no batch of {} (drop_last = {})",
                loader.indices.len(),
                cfg.batch_size,
                cfg.drop_last
            )));
        }
        Ok(loader)
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.indices.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples per epoch, before `drop_last`.
    pub fn num_samples(&self) -> usize {
        self.indices.len()
    }

    /// The batches of epoch `epoch`, prepared on a background thread. Dropping the iterator early
    /// stops the thread.
    pub fn epoch(&self, epoch: u64) -> Result<Batches> {
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let job = Job {
            data: Arc::clone(&self.data),
            indices: Arc::clone(&self.indices),
            norm: Arc::clone(&self.norm),
            cfg: self.cfg,
            seed: derive(self.cfg.seed, epoch),
        };
        let worker = std::thread::Builder::new()
            .name("darts-loader".into())
            .spawn(move || job.run(tx))
            .map_err(|e| Error::Device {
                op: "data::Loader",
                msg: format!("cannot start the loading thread: {e}"),
            })?;
        Ok(Batches {
            rx: Some(rx),
            worker: Some(worker),
            dims: [self.data.channels, self.data.height, self.data.width],
            remaining: self.num_batches(),
        })
    }
}

/// The batches of one epoch, in order.
#[derive(Debug)]
pub struct Batches {
    rx: Option<Receiver<RawBatch>>,
    worker: Option<JoinHandle<()>>,
    dims: [usize; 3],
    remaining: usize,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.as_ref()?.recv() {
            Ok((images, labels)) => {
                self.remaining -= 1;
                let [c, h, w] = self.dims;
                let images = Tensor::from_parts(images, &[labels.len(), c, h, w]);
                Some(Batch { images, labels })
            }
            Err(_) => {
                // The worker stopped before sending every batch, which only a panic can cause:
                // pass that panic on instead of silently ending the epoch short.
                self.remaining = 0;
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked in `send` return.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Pixels `[B·C·H·W]` and labels of one prepared batch.
type RawBatch = (Vec<f32>, Vec<usize>);

/// What the loading thread owns for one epoch.
struct Job {
    data: Arc<Dataset>,
    indices: Arc<[usize]>,
    norm: Arc<Normalize>,
    cfg: LoaderConfig,
    seed: u64,
}

impl Job {
    fn run(self, tx: SyncSender<RawBatch>) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut order = self.indices.to_vec();
        if self.cfg.shuffle {
            order.shuffle(&mut rng);
        }
        let d = &self.data;
        let dims = (d.channels, d.height, d.width);
        let size = d.channels * d.height * d.width;
        let mut scratch = vec![0f32; size];
        let b = self.cfg.batch_size;
        for chunk in order.chunks(b) {
            if self.cfg.drop_last && chunk.len() < b {
                break;
            }
            let mut images = vec![0f32; chunk.len() * size];
            for (&i, out) in chunk.iter().zip(images.chunks_exact_mut(size)) {
                let raw = &d.images[i * size..(i + 1) * size];
                let aug = &self.cfg.augment;
                aug.prepare(raw, &self.norm, dims, &mut rng, out, &mut scratch);
            }
            let labels = chunk.iter().map(|&i| usize::from(d.labels[i])).collect();
            if tx.send((images, labels)).is_err() {
                return; // the consumer dropped the iterator
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` 1×2×2 images; image i has all pixels equal to i, label i % 4.
    fn numbered(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            images: (0..n).flat_map(|i| [i as u8; 4]).collect(),
            labels: (0..n).map(|i| (i % 4) as u8).collect(),
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 4,
            class_names: (0..4).map(|i| i.to_string()).collect(),
        })
    }

    /// Identity normalisation on the byte scale, so a pixel reads back as its image number.
    fn bytes() -> Normalize {
        Normalize::new(vec![0.0], vec![1.0 / 255.0]).unwrap()
    }

    fn collect(loader: &Loader, epoch: u64) -> Vec<(Vec<f32>, Vec<usize>)> {
        let batches = loader.epoch(epoch).unwrap();
        batches.map(|b| (b.images.to_vec(), b.labels)).collect()
    }

    #[test]
    fn every_sample_once_per_epoch_last_batch_kept() {
        let cfg = LoaderConfig::new(4);
        let loader = Loader::new(numbered(10), (0..10).collect(), bytes(), cfg).unwrap();
        assert_eq!(loader.num_batches(), 3);
        let mut seen = Vec::new();
        for batch in loader.epoch(0).unwrap() {
            let b = batch.labels.len();
            assert_eq!(batch.images.shape(), &[b, 1, 2, 2]);
            for (k, label) in batch.labels.iter().enumerate() {
                let id = batch.images.data()[k * 4].round() as usize;
                assert_eq!(*label, id % 4);
                seen.push(id);
            }
        }
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn drop_last_and_unshuffled_order() {
        let cfg = LoaderConfig {
            shuffle: false,
            drop_last: true,
            ..LoaderConfig::new(4)
        };
        let loader = Loader::new(numbered(10), (3..10).collect(), bytes(), cfg).unwrap();
        let batches = collect(&loader, 0);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1, vec![3, 0, 1, 2]);
        let too_few = Loader::new(numbered(10), vec![1, 2], bytes(), cfg);
        assert!(too_few.is_err());
    }

    #[test]
    fn same_seed_same_batches_regardless_of_timing() {
        let data = Arc::new(
            super::super::builtin::generate(&super::super::builtin::BuiltinConfig {
                train: 60,
                test: 1,
                ..Default::default()
            })
            .unwrap()
            .0,
        );
        let norm = Normalize::fit(&data).unwrap();
        let cfg = LoaderConfig {
            seed: 42,
            augment: Augment {
                pad: 2,
                flip: true,
                cutout: 4,
            },
            prefetch: 1,
            ..LoaderConfig::new(16)
        };
        let a = Loader::new(Arc::clone(&data), (0..60).collect(), norm.clone(), cfg).unwrap();
        let b = Loader::new(Arc::clone(&data), (0..60).collect(), norm.clone(), cfg).unwrap();
        // A slow consumer lets the worker block on the full channel; the result must not change.
        let slow: Vec<_> = a
            .epoch(3)
            .unwrap()
            .map(|batch| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                (batch.images.to_vec(), batch.labels)
            })
            .collect();
        assert_eq!(slow, collect(&b, 3));
        // Resuming at epoch 3 needs no replay of epochs 0..3, and epochs differ.
        assert_ne!(collect(&b, 4), slow);
        let reseeded = Loader::new(
            data,
            (0..60).collect(),
            norm,
            LoaderConfig { seed: 43, ..cfg },
        );
        assert_ne!(collect(&reseeded.unwrap(), 3), slow);
    }

    #[test]
    fn dropping_an_epoch_early_stops_the_worker() {
        let cfg = LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::new(1)
        };
        let loader = Loader::new(numbered(100), (0..100).collect(), bytes(), cfg).unwrap();
        let mut batches = loader.epoch(0).unwrap();
        assert_eq!(batches.len(), 100);
        assert!(batches.next().is_some());
        drop(batches); // joins the worker; the test would hang if it stayed blocked
    }

    #[test]
    fn rejects_inconsistent_inputs() {
        let cfg = LoaderConfig::new(2);
        assert!(Loader::new(numbered(4), vec![4], bytes(), cfg).is_err());
        let rgb = Normalize::cifar10();
        assert!(Loader::new(numbered(4), vec![0, 1], rgb, cfg).is_err());
        let zero = LoaderConfig::new(0);
        assert!(Loader::new(numbered(4), vec![0, 1], bytes(), zero).is_err());
        let big_pad = LoaderConfig {
            augment: Augment {
                pad: 3,
                ..Augment::default()
            },
            ..cfg
        };
        assert!(Loader::new(numbered(4), vec![0, 1], bytes(), big_pad).is_err());
        let mut bad_label = (*numbered(4)).clone();
        bad_label.labels[1] = 4;
        assert!(Loader::new(Arc::new(bad_label), vec![0, 1], bytes(), cfg).is_err());
    }
}
