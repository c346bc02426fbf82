//! The built-in dataset: small grayscale images of ten procedurally drawn pattern classes,
//! generated in code from a seed, so a search can run with no files at all.
//!
//! It is made to need spatial structure at several scales. Every image has a random background
//! level and gradient, a random contrast *and polarity* (light on dark or dark on light), and
//! Gaussian noise; shapes sit at random positions, sizes, angles and thicknesses. So the class
//! means are nearly flat and a linear model on pixels does poorly, while the classes differ in
//! ways convolutions see:
//!
//! | label | name | what is drawn | told apart from others by |
//! | --- | --- | --- | --- |
//! | 0 | `bar` | one straight stroke | global layout (one stroke, no junction) |
//! | 1 | `cross` | two strokes crossing near their middles | a junction inside both strokes |
//! | 2 | `corner` | two strokes meeting at an end (L or V) | a junction at the stroke ends |
//! | 3 | `parallel` | two parallel strokes, a gap apart | two strokes, no junction |
//! | 4 | `ring` | a circle outline | a hole of background inside |
//! | 5 | `disc` | a filled circle | a solid blob |
//! | 6 | `checker_fine` | a checkerboard patch, 1-pixel cells | texture at the finest scale |
//! | 7 | `checker_coarse` | a checkerboard patch, 2- or 3-pixel cells | texture at a coarser scale |
//! | 8 | `dots` | 3–6 small separate dots | several small blobs |
//! | 9 | `grating` | a patch of oriented sine stripes, period 2.5–3.5 px | one texture orientation |
//!
//! Lengths are given for 16×16 images and scale with `size`. Strokes and the junction classes need
//! a receptive field spanning most of the image (5×5 and dilated convolutions, reductions), the
//! textures need local detail (3×3 convolutions, no early pooling): the choice of operations
//! matters. Image `i` of a split depends only on `(seed, split, i)`, so a larger dataset extends
//! a smaller one.

use std::f32::consts::PI;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::seed::{derive, mix};
use super::Dataset;
use crate::error::{Error, Result};

/// The class names, indexed by label.
pub const CLASS_NAMES: [&str; 10] = [
    "bar",
    "cross",
    "corner",
    "parallel",
    "ring",
    "disc",
    "checker_fine",
    "checker_coarse",
    "dots",
    "grating",
];

/// Sizes and seed of the built-in dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinConfig {
    /// Training images (default 5,000).
    pub train: usize,
    /// Test images (default 1,000), drawn independently of the training images.
    pub test: usize,
    /// Image side in pixels, 8 to 64 (default 16).
    pub size: usize,
    pub seed: u64,
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        BuiltinConfig {
            train: 5000,
            test: 1000,
            size: 16,
            seed: 0,
        }
    }
}

/// Generates the (train, test) sets. Within each run of ten images every class occurs once.
///
/// ```
/// use darts::data::builtin::{generate, BuiltinConfig};
/// let (train, test) = generate(&BuiltinConfig { train: 20, test: 10, ..Default::default() })?;
/// assert_eq!((train.len(), test.len(), train.channels, train.height), (20, 10, 1, 16));
/// assert_eq!(train.images.len(), 20 * 16 * 16);
/// # Ok::<(), darts::Error>(())
/// ```
pub fn generate(cfg: &BuiltinConfig) -> Result<(Dataset, Dataset)> {
    if !(8..=64).contains(&cfg.size) {
        return Err(Error::InvalidArgument(format!(
            "built-in dataset image size must be 8 to 64 pixels, got {}",
            cfg.size
        )));
    }
    if cfg.train == 0 || cfg.test == 0 {
        return Err(Error::InvalidArgument(format!(
            "built-in dataset needs at least one training and one test image, got {} and {}",
            cfg.train, cfg.test
        )));
    }
    Ok((split(cfg, 0, cfg.train), split(cfg, 1, cfg.test)))
}

fn split(cfg: &BuiltinConfig, which: u64, n: usize) -> Dataset {
    let s = cfg.size;
    let stream = derive(cfg.seed, which);
    let mut labels = Vec::with_capacity(n);
    for block in 0..n.div_ceil(10) {
        let mut perm: Vec<u8> = (0..10).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(derive(stream, block as u64)));
        labels.extend(perm);
    }
    labels.truncate(n);
    let mut images = Vec::with_capacity(n * s * s);
    for (i, &label) in labels.iter().enumerate() {
        // A stream of its own (`mix(stream)`), so no image shares a generator with a permutation.
        let mut rng = StdRng::seed_from_u64(derive(mix(stream), i as u64));
        images.extend(draw(label, s, &mut rng));
    }
    Dataset {
        images,
        labels,
        channels: 1,
        height: s,
        width: s,
        num_classes: CLASS_NAMES.len(),
        class_names: CLASS_NAMES.iter().map(|c| c.to_string()).collect(),
    }
}

/// One image of class `label`, as bytes.
fn draw(label: u8, s: usize, rng: &mut StdRng) -> Vec<u8> {
    let k = s as f32 / 16.0;
    let mask = match label {
        0..=3 => strokes(label, s, k, rng),
        4 | 5 => circle(label == 4, s, k, rng),
        6 | 7 => {
            let cell = if label == 6 {
                1
            } else {
                rng.random_range(2..=3)
            };
            let cell = ((cell as f32 * k).round() as usize).max(1);
            let lo = if label == 6 { 6.0 } else { 8.0 };
            let (x0, y0, x1, y1) = patch(s, k, lo, lo + 5.0, rng);
            let phase = rng.random_range(0..2);
            field(s, |x, y| {
                let inside = x >= x0 && x < x1 && y >= y0 && y < y1;
                let on = (x / cell + y / cell + phase) % 2 == 1;
                f32::from(u8::from(inside && on))
            })
        }
        8 => dots(s, k, rng),
        _ => {
            // At least ~2.5 periods across the patch, so it never reads as two parallel strokes.
            let (x0, y0, x1, y1) = patch(s, k, 9.0, 13.0, rng);
            let period = rng.random_range(2.5..3.5) * k;
            let theta = rng.random_range(0.0..PI);
            let phase = rng.random_range(0.0..2.0 * PI);
            let (c, sn) = (theta.cos(), theta.sin());
            field(s, |x, y| {
                if !(x >= x0 && x < x1 && y >= y0 && y < y1) {
                    return 0.0;
                }
                let u = (x as f32 * c + y as f32 * sn) * 2.0 * PI / period;
                0.5 + 0.5 * (u + phase).cos()
            })
        }
    };
    render(&mask, s, rng)
}

/// Puts `mask` (0 = background, 1 = full foreground) on a random background with random
/// contrast, polarity and noise, and quantises to bytes.
fn render(mask: &[f32], s: usize, rng: &mut StdRng) -> Vec<u8> {
    let contrast = rng.random_range(0.3..0.6);
    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    // Keep background and foreground levels inside [0.05, 0.95] before gradient and noise.
    let base = if sign > 0.0 {
        rng.random_range(0.05..0.95 - contrast)
    } else {
        rng.random_range(0.05 + contrast..0.95)
    };
    let (gx, gy) = (rng.random_range(-0.2..0.2), rng.random_range(-0.2..0.2));
    let sigma = rng.random_range(0.02..0.1);
    let half = s as f32 / 2.0;
    mask.iter()
        .enumerate()
        .map(|(i, &m)| {
            let (x, y) = ((i % s) as f32 - half, (i / s) as f32 - half);
            let bg = base + (gx * x + gy * y) / s as f32;
            let noise: f32 = rng.sample(StandardNormal);
            let v = bg + sign * contrast * m + sigma * noise;
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

/// Classes 0–3: one to two anti-aliased strokes, placed at random where they fit.
fn strokes(label: u8, s: usize, k: f32, rng: &mut StdRng) -> Vec<f32> {
    let theta = rng.random_range(0.0..PI);
    let dir = |a: f32| (a.cos(), a.sin());
    let turn = rng.random_range(55f32..125.0).to_radians();
    let (d0, d1) = (dir(theta), dir(theta + turn));
    let at = |d: (f32, f32), t: f32| (d.0 * t, d.1 * t);
    let mut segs: Vec<[(f32, f32); 2]> = Vec::new();
    match label {
        0 => {
            let l = rng.random_range(7.0..13.0) * k;
            segs.push([at(d0, -l / 2.0), at(d0, l / 2.0)]);
        }
        1 => {
            for d in [d0, d1] {
                let l = rng.random_range(7.0..12.0) * k;
                let u = rng.random_range(0.35..0.65) * l;
                segs.push([at(d, -u), at(d, l - u)]);
            }
        }
        2 => {
            for d in [d0, d1] {
                segs.push([(0.0, 0.0), at(d, rng.random_range(5.0..10.0) * k)]);
            }
        }
        _ => {
            let l = rng.random_range(7.0..12.0) * k;
            let gap = rng.random_range(3.5..6.0) * k;
            let n = (-d0.1 * gap / 2.0, d0.0 * gap / 2.0);
            for (side, shift) in [(1.0, 0.0), (-1.0, rng.random_range(-1.5..1.5) * k)] {
                let c = (n.0 * side + d0.0 * shift, n.1 * side + d0.1 * shift);
                let (a, b) = (at(d0, -l / 2.0), at(d0, l / 2.0));
                segs.push([(c.0 + a.0, c.1 + a.1), (c.0 + b.0, c.1 + b.1)]);
            }
        }
    }
    let half_t = rng.random_range(1.0..2.2) * k / 2.0;
    let points = segs.iter().flatten();
    let (lo_x, hi_x) = bounds(points.clone().map(|p| p.0));
    let (lo_y, hi_y) = bounds(points.map(|p| p.1));
    let ox = place(lo_x - half_t, hi_x + half_t, s, rng);
    let oy = place(lo_y - half_t, hi_y + half_t, s, rng);
    field(s, |x, y| {
        let p = (x as f32 + 0.5 - ox, y as f32 + 0.5 - oy);
        let d = segs
            .iter()
            .map(|[a, b]| segment_distance(p, *a, *b))
            .fold(f32::INFINITY, f32::min);
        (half_t - d + 0.5).clamp(0.0, 1.0)
    })
}

/// Classes 4 and 5: a ring outline or a filled disc.
fn circle(ring: bool, s: usize, k: f32, rng: &mut StdRng) -> Vec<f32> {
    let (r, half_t) = if ring {
        (
            rng.random_range(3.2..6.0) * k,
            rng.random_range(1.0..1.8) * k / 2.0,
        )
    } else {
        (rng.random_range(2.2..5.0) * k, 0.0)
    };
    let extent = r + half_t;
    let cx = place(-extent, extent, s, rng);
    let cy = place(-extent, extent, s, rng);
    field(s, |x, y| {
        let d = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
        let edge = if ring { (d - r).abs() - half_t } else { d - r };
        (0.5 - edge).clamp(0.0, 1.0)
    })
}

/// Class 8: 3–6 dots, kept apart so they stay separate blobs.
fn dots(s: usize, k: f32, rng: &mut StdRng) -> Vec<f32> {
    let n = rng.random_range(3..=6);
    let margin = 1.5 * k;
    let mut centres: Vec<(f32, f32)> = Vec::new();
    // Rejection sampling with a bounded number of tries: a crowded draw just gets fewer dots.
    for _ in 0..100 {
        if centres.len() == n {
            break;
        }
        let c = (
            rng.random_range(margin..s as f32 - margin),
            rng.random_range(margin..s as f32 - margin),
        );
        if centres
            .iter()
            .all(|q| (c.0 - q.0).hypot(c.1 - q.1) >= 3.5 * k)
        {
            centres.push(c);
        }
    }
    let radii: Vec<f32> = centres
        .iter()
        .map(|_| rng.random_range(0.8..1.3) * k)
        .collect();
    field(s, |x, y| {
        let p = (x as f32 + 0.5, y as f32 + 0.5);
        centres
            .iter()
            .zip(&radii)
            .map(|(c, r)| (r - (p.0 - c.0).hypot(p.1 - c.1) + 0.5).clamp(0.0, 1.0))
            .fold(0.0, f32::max)
    })
}

/// A random axis-aligned patch `[x0, x1) × [y0, y1)` with sides in `lo..=hi` (scaled by `k`).
fn patch(s: usize, k: f32, lo: f32, hi: f32, rng: &mut StdRng) -> (usize, usize, usize, usize) {
    let side = |rng: &mut StdRng| {
        let lo = (lo * k).round() as usize;
        let hi = ((hi * k).round() as usize).min(s);
        rng.random_range(lo.min(hi)..=hi)
    };
    let (w, h) = (side(rng), side(rng));
    let x0 = rng.random_range(0..=s - w);
    let y0 = rng.random_range(0..=s - h);
    (x0, y0, x0 + w, y0 + h)
}

/// A random offset that puts the local extent `lo..hi` inside the image (centred if too large).
fn place(lo: f32, hi: f32, s: usize, rng: &mut StdRng) -> f32 {
    let (min, max) = (0.5 - lo, s as f32 - 0.5 - hi);
    if min < max {
        rng.random_range(min..max)
    } else {
        (min + max) / 2.0
    }
}

fn bounds(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

/// An s×s row-major field from a function of the pixel (x, y).
fn field(s: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..s * s).map(|i| f(i % s, i / s)).collect()
}
