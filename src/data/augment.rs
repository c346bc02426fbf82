//! Per-image preprocessing, in the order of the reference DARTS code: random crop with zero
//! padding, horizontal flip, per-channel normalisation, cutout. Crop and flip work on pixel
//! values in [0, 1] (so padding is black, as torchvision pads the PIL image); cutout comes after
//! normalisation and zeroes the normalised values, as the reference `Cutout` does on the tensor.
//!
//! Images here are one C×H×W f32 slice; `dims` is `(C, H, W)`.

use rand::rngs::StdRng;
use rand::Rng;

use super::Dataset;
use crate::error::{Error, Result};

/// Per-channel normalisation `x ↦ (x − mean[c]) / std[c]`, with x the pixel value in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Given statistics; every std must be positive and finite.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Normalize> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "normalisation needs one mean and one std per channel, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "normalisation std must be positive and finite, got {s}"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "normalisation mean must be finite, got {m}"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// The statistics the reference code uses for CIFAR-10 (computed on its 50,000 training images).
    pub fn cifar10() -> Normalize {
        Normalize {
            mean: vec![0.491_399_7, 0.482_158_3, 0.446_531_2],
            std: vec![0.247_032_3, 0.243_485_05, 0.261_587_7],
        }
    }

    /// Mean and (population) std per channel over all images of `data`.
    pub fn fit(data: &Dataset) -> Result<Normalize> {
        let c = data.channels;
        let plane = data.height * data.width;
        if data.is_empty() || c == 0 || plane == 0 || data.images.len() != data.len() * c * plane {
            return Err(Error::InvalidArgument(format!(
                "cannot compute statistics of a dataset with {} images of {}x{}x{} and {} pixel bytes",
                data.len(),
                c,
                data.height,
                data.width,
                data.images.len()
            )));
        }
        // Sums in f64 so that millions of pixels do not lose precision.
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for (k, chunk) in data.images.chunks_exact(plane).enumerate() {
            let (s, q) = chunk.iter().fold((0f64, 0f64), |(s, q), &v| {
                let x = f64::from(v) / 255.0;
                (s + x, q + x * x)
            });
            sum[k % c] += s;
            sq[k % c] += q;
        }
        let count = (data.len() * plane) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        // A constant channel has std 0; one grey level keeps the division finite and maps the
        // channel to 0, which is what normalisation would give it anyway.
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| {
                let m = s / count;
                ((q / count - m * m).max(0.0).sqrt() as f32).max(1.0 / 255.0)
            })
            .collect();
        Ok(Normalize { mean, std })
    }

    /// Normalises one image in place; `self` must have `dims.0` channels ([`super::loader::Loader`]
    /// checks this).
    pub fn apply(&self, img: &mut [f32], dims: (usize, usize, usize)) {
        let plane = dims.1 * dims.2;
        let stats = self.mean.iter().zip(&self.std);
        for (chunk, (&m, &s)) in img.chunks_exact_mut(plane).zip(stats) {
            let inv = 1.0 / s;
            chunk.iter_mut().for_each(|x| *x = (*x - m) * inv);
        }
    }
}

/// Random training-time augmentation. The default does nothing (for evaluation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on every side before a random crop back to H×W; 0 disables cropping.
    pub pad: usize,
    /// Flip horizontally with probability 1/2 (leave off for digits and text).
    pub flip: bool,
    /// Side of the cutout square (the reference's `cutout_length`, 16 for CIFAR); 0 disables it.
    pub cutout: usize,
}

impl Augment {
    /// The reference DARTS CIFAR-10 training augmentation: pad 4, flip, and the given cutout.
    pub fn cifar(cutout: usize) -> Augment {
        Augment {
            pad: 4,
            flip: true,
            cutout,
        }
    }

    /// Checks the settings against an image size: a pad or cutout longer than the image can only
    /// be a mistake.
    pub fn check(&self, height: usize, width: usize) -> Result<()> {
        let side = height.min(width);
        if self.pad > side || self.cutout > 2 * side {
            return Err(Error::InvalidArgument(format!(
                "augmentation pad {} / cutout {} do not fit {height}x{width} images",
                self.pad, self.cutout
            )));
        }
        Ok(())
    }

    /// Turns raw bytes into a normalised, augmented image in `out`; `scratch` is a buffer of the
    /// same length for the crop. Draws from `rng` in a fixed order (crop, flip, cutout), so the
    /// same seed gives the same images.
    pub fn prepare(
        &self,
        raw: &[u8],
        norm: &Normalize,
        dims: (usize, usize, usize),
        rng: &mut StdRng,
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (_, h, w) = dims;
        if self.pad > 0 {
            scratch
                .iter_mut()
                .zip(raw)
                .for_each(|(s, &v)| *s = f32::from(v) / 255.0);
            // rand 0.9 samples no isize (its range is platform dependent); i64 covers any pad.
            let p = self.pad as i64;
            let dy = rng.random_range(-p..=p) as isize;
            let dx = rng.random_range(-p..=p) as isize;
            crop_shift(scratch, out, dims, dy, dx);
        } else {
            out.iter_mut()
                .zip(raw)
                .for_each(|(o, &v)| *o = f32::from(v) / 255.0);
        }
        if self.flip && rng.random_bool(0.5) {
            hflip(out, dims);
        }
        norm.apply(out, dims);
        if self.cutout > 0 {
            let cy = rng.random_range(0..h);
            let cx = rng.random_range(0..w);
            cutout(out, dims, cy, cx, self.cutout);
        }
    }
}

/// `dst(y, x) = src(y + dy, x + dx)`, zero outside `src`: a crop of the zero-padded image at
/// offset (pad + dy, pad + dx), which is what torchvision's `RandomCrop(padding=pad)` picks.
pub fn crop_shift(src: &[f32], dst: &mut [f32], dims: (usize, usize, usize), dy: isize, dx: isize) {
    let (_, h, w) = dims;
    let plane = h * w;
    for (s, d) in src.chunks_exact(plane).zip(dst.chunks_exact_mut(plane)) {
        for y in 0..h {
            let row = &mut d[y * w..(y + 1) * w];
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize {
                row.fill(0.0);
                continue;
            }
            let src_row = &s[sy as usize * w..(sy as usize + 1) * w];
            for (x, v) in row.iter_mut().enumerate() {
                let sx = x as isize + dx;
                *v = if sx >= 0 && sx < w as isize {
                    src_row[sx as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Mirrors the image left to right.
pub fn hflip(img: &mut [f32], dims: (usize, usize, usize)) {
    let w = dims.2;
    img.chunks_exact_mut(w).for_each(|row| row.reverse());
}

/// Zeroes rows `cy − L/2 .. cy + L/2` and the same columns around `cx` (clipped to the image,
/// L/2 rounded down) in every channel: the reference `Cutout`, whose square has side
/// 2·⌊L/2⌋.
pub fn cutout(img: &mut [f32], dims: (usize, usize, usize), cy: usize, cx: usize, length: usize) {
    let (_, h, w) = dims;
    let half = length / 2;
    let (y0, y1) = (cy.saturating_sub(half), (cy + half).min(h));
    let (x0, x1) = (cx.saturating_sub(half), (cx + half).min(w));
    for plane in img.chunks_exact_mut(h * w) {
        for y in y0..y1 {
            plane[y * w + x0..y * w + x1].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A 1×3×3 image with values 1..9, row-major.
    fn img() -> Vec<f32> {
        (1..=9).map(|v| v as f32).collect()
    }

    #[test]
    fn crop_shift_moves_content_and_pads_with_zero() {
        let mut out = vec![-1.0; 9];
        crop_shift(&img(), &mut out, (1, 3, 3), 1, -1);
        // out(y, x) = in(y + 1, x - 1)
        assert_eq!(out, vec![0., 4., 5., 0., 7., 8., 0., 0., 0.]);
        crop_shift(&img(), &mut out, (1, 3, 3), 0, 0);
        assert_eq!(out, img());
        crop_shift(&img(), &mut out, (1, 3, 3), -3, 0);
        assert_eq!(out, vec![0.0; 9]);
    }

    #[test]
    fn hflip_mirrors_each_row_of_each_channel() {
        let mut two: Vec<f32> = img().into_iter().chain(img()).collect();
        hflip(&mut two, (2, 3, 3));
        let want = vec![3., 2., 1., 6., 5., 4., 9., 8., 7.];
        assert_eq!(two[..9], want[..]);
        assert_eq!(two[9..], want[..]);
    }

    #[test]
    fn cutout_zeroes_a_clipped_square_in_all_channels() {
        let mut im = vec![1.0; 2 * 16];
        cutout(&mut im, (2, 4, 4), 0, 3, 2);
        // half = 1: rows 0..1, columns 2..4
        let mut want = [1.0; 16];
        want[2] = 0.0;
        want[3] = 0.0;
        assert_eq!(im[..16], want[..]);
        assert_eq!(im[16..], want[..]);
        let mut im = vec![1.0; 16];
        cutout(&mut im, (1, 4, 4), 2, 2, 4);
        assert_eq!(im.iter().filter(|&&v| v == 0.0).count(), 16);
    }

    #[test]
    fn normalize_fit_and_apply() {
        let data = Dataset {
            images: vec![0, 255, 0, 255, 51, 51, 51, 51],
            labels: vec![0],
            channels: 2,
            height: 2,
            width: 2,
            num_classes: 1,
            class_names: vec!["a".into()],
        };
        let n = Normalize::fit(&data).unwrap();
        assert!((n.mean[0] - 0.5).abs() < 1e-6 && (n.std[0] - 0.5).abs() < 1e-6);
        assert!((n.mean[1] - 0.2).abs() < 1e-6 && n.std[1] == 1.0 / 255.0);
        let mut im = vec![0.0, 1.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2];
        n.apply(&mut im, (2, 2, 2));
        assert_eq!(im[..4], [-1.0, 1.0, -1.0, 1.0]);
        assert!(im[4..].iter().all(|v| v.abs() < 1e-4));
        assert!(Normalize::new(vec![0.0], vec![0.0]).is_err());
        assert!(Normalize::new(vec![0.0, 1.0], vec![1.0]).is_err());
    }

    #[test]
    fn prepare_without_augmentation_only_normalises() {
        let norm = Normalize::new(vec![0.5], vec![0.5]).unwrap();
        let raw = [0u8, 255, 255, 0];
        let (mut out, mut scratch) = (vec![0.0; 4], vec![0.0; 4]);
        let mut rng = StdRng::seed_from_u64(0);
        Augment::default().prepare(&raw, &norm, (1, 2, 2), &mut rng, &mut out, &mut scratch);
        assert_eq!(out, vec![-1.0, 1.0, 1.0, -1.0]);
    }

    #[test]
    fn prepare_crop_is_a_shift_within_pad() {
        // A single bright pixel in a 5×5 image; with pad 1 it may move by at most 1 each way,
        // and padding shows up as black (−mean/std after normalisation).
        let mut raw = [0u8; 25];
        raw[12] = 255;
        let norm = Normalize::new(vec![0.0], vec![1.0]).unwrap();
        let aug = Augment {
            pad: 1,
            flip: false,
            cutout: 0,
        };
        let mut seen = std::collections::HashSet::new();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let (mut out, mut scratch) = (vec![0.0; 25], vec![0.0; 25]);
            aug.prepare(&raw, &norm, (1, 5, 5), &mut rng, &mut out, &mut scratch);
            let at = out.iter().position(|&v| v == 1.0).unwrap();
            assert_eq!(out.iter().sum::<f32>(), 1.0);
            let (y, x) = (at / 5, at % 5);
            assert!((1..=3).contains(&y) && (1..=3).contains(&x));
            seen.insert(at);
        }
        assert_eq!(seen.len(), 9, "all nine offsets should occur");
    }
}
