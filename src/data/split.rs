//! Splitting datasets: the DARTS search split of the training set into a part for the network
//! weights and a part for the architecture parameters, and a seeded train/test hold-out for
//! folders that come without a test split. The test set is never part of a search split.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::Dataset;
use crate::error::{Error, Result};

/// Indices into one training set: `weights` trains the network weights w, `arch` the
/// architecture parameters α (the paper's D_train and D_val).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchSplit {
    pub weights: Vec<usize>,
    pub arch: Vec<usize>,
}

/// The search split of a training set of `n` samples, as the reference code makes it:
/// `split = floor(train_portion · n)`, weights get indices `0..split` and the architecture
/// `split..n`, both in order (the loaders shuffle each part per epoch). Both parts must be
/// non-empty.
///
/// ```
/// let s = darts::data::split::search_split(10, 0.5).unwrap();
/// assert_eq!((s.weights, s.arch), ((0..5).collect(), (5..10).collect()));
/// ```
pub fn search_split(n: usize, train_portion: f64) -> Result<SearchSplit> {
    if !(train_portion > 0.0 && train_portion < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "train_portion must lie strictly between 0 and 1, got {train_portion}"
        )));
    }
    let split = (train_portion * n as f64).floor() as usize;
    if split == 0 || split == n {
        return Err(Error::InvalidArgument(format!(
            "train_portion {train_portion} of {n} samples leaves one search part empty"
        )));
    }
    Ok(SearchSplit {
        weights: (0..split).collect(),
        arch: (split..n).collect(),
    })
}

/// Checks that a batch fits in every part of the data that batches are drawn from, named for
/// the error (`("weights half", 2500)`): a larger batch would be cut to the part's size
/// silently, so it is an error that says which size is possible.
///
/// ```
/// use darts::data::split::check_batch_size;
/// assert!(check_batch_size(64, &[("training set", 5000)]).is_ok());
/// let e = check_batch_size(6000, &[("training set", 5000)]).unwrap_err();
/// assert!(e.to_string().contains("use --batch-size 5000 or less"));
/// ```
pub fn check_batch_size(batch_size: usize, parts: &[(&str, usize)]) -> Result<()> {
    let Some(smallest) = parts.iter().map(|p| p.1).min() else {
        return Ok(());
    };
    if batch_size <= smallest {
        return Ok(());
    }
    let sizes: Vec<String> = parts
        .iter()
        .map(|(name, n)| format!("the {name} has {n} images"))
        .collect();
    Err(Error::InvalidArgument(format!(
        "--batch-size {batch_size} is larger than the data: {}; use --batch-size {smallest} or less",
        sizes.join(" and ")
    )))
}

/// A copy of the samples at `indices`, in that order.
pub fn subset(data: &Dataset, indices: &[usize]) -> Result<Dataset> {
    let size = data.channels * data.height * data.width;
    if data.images.len() != data.len() * size {
        return Err(Error::InvalidArgument(format!(
            "dataset holds {} pixel bytes, not {} images of {}x{}x{}",
            data.images.len(),
            data.len(),
            data.channels,
            data.height,
            data.width
        )));
    }
    let mut images = Vec::with_capacity(indices.len() * size);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        if i >= data.len() {
            return Err(Error::InvalidArgument(format!(
                "index {i} out of range for a dataset of {} samples",
                data.len()
            )));
        }
        images.extend_from_slice(&data.images[i * size..(i + 1) * size]);
        labels.push(data.labels[i]);
    }
    Ok(Dataset {
        images,
        labels,
        channels: data.channels,
        height: data.height,
        width: data.width,
        num_classes: data.num_classes,
        class_names: data.class_names.clone(),
    })
}

/// Splits `data` into (train, test) after shuffling with `seed`; the test set gets
/// `round(test_fraction · n)` samples. For folders without a test split.
pub fn train_test_split(
    data: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset)> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "test_fraction must lie strictly between 0 and 1, got {test_fraction}"
        )));
    }
    let n = data.len();
    let n_test = (test_fraction * n as f64).round() as usize;
    if n_test == 0 || n_test == n {
        return Err(Error::InvalidArgument(format!(
            "test_fraction {test_fraction} of {n} samples leaves train or test empty"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let (test, train) = order.split_at(n_test);
    Ok((subset(data, train)?, subset(data, test)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Dataset {
        Dataset {
            images: (0..n as u8).flat_map(|i| [i, i]).collect(),
            labels: (0..n as u8).map(|i| i % 3).collect(),
            channels: 1,
            height: 1,
            width: 2,
            num_classes: 3,
            class_names: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn search_split_sizes_follow_the_reference() {
        let s = search_split(5000, 0.5).unwrap();
        assert_eq!((s.weights.len(), s.arch.len()), (2500, 2500));
        assert_eq!((s.weights[2499], s.arch[0]), (2499, 2500));
        let s = search_split(7, 0.5).unwrap();
        assert_eq!((s.weights.len(), s.arch.len()), (3, 4));
        let s = search_split(10, 0.8).unwrap();
        assert_eq!((s.weights.len(), s.arch.len()), (8, 2));
        assert!(search_split(1, 0.5).is_err());
        assert!(search_split(10, 1.0).is_err());
        assert!(search_split(10, f64::NAN).is_err());
    }

    #[test]
    fn a_batch_larger_than_a_part_names_both_parts() {
        let parts = [("weights half", 2500), ("architecture half", 2400)];
        assert!(check_batch_size(2400, &parts).is_ok());
        assert_eq!(
            check_batch_size(100_000_000, &parts)
                .unwrap_err()
                .to_string(),
            "invalid argument: --batch-size 100000000 is larger than the data: the weights half \
             has 2500 images and the architecture half has 2400 images; use --batch-size 2400 or \
             less"
        );
    }

    #[test]
    fn subset_copies_images_and_labels() {
        let d = subset(&tiny(5), &[4, 1]).unwrap();
        assert_eq!((d.images, d.labels), (vec![4, 4, 1, 1], vec![1, 1]));
        assert!(subset(&tiny(5), &[5]).is_err());
    }

    #[test]
    fn train_test_split_is_seeded_and_disjoint() {
        let data = tiny(20);
        let (train, test) = train_test_split(&data, 0.25, 7).unwrap();
        assert_eq!((train.len(), test.len()), (15, 5));
        let mut all: Vec<u8> = train
            .images
            .iter()
            .chain(&test.images)
            .step_by(2)
            .copied()
            .collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<u8>>());
        let (again, _) = train_test_split(&data, 0.25, 7).unwrap();
        assert_eq!(again.images, train.images);
        assert!(train_test_split(&data, 0.0, 7).is_err());
    }
}
