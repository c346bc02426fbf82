//! `darts predict`: a trained network on image files (png, jpeg), printing each image's top-k
//! classes with their softmax probabilities under the dataset's class names. Images go through
//! exactly what `darts eval` does to test images (pixels / 255, the training set's
//! normalisation); one of another size or channel count is an error unless `--resize` asks to
//! convert it.

use std::path::{Path, PathBuf};

use clap::Args;
use image::imageops::FilterType;
use image::DynamicImage;

use crate::data::{source, Normalize, Splits};
use crate::error::{Error, Result};
use crate::nn::Ctx;
use crate::tensor::Tensor;
use crate::train::TrainConfig;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A training run folder (holding config.json and model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Image files (.png, .jpg, .jpeg), or folders whose image files are all read.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to print per image (at most the number of classes).
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Resize images to the model's input size and convert grayscale/colour to its channels
    /// (otherwise a mismatch is an error).
    #[arg(long)]
    pub resize: bool,
    /// Read the trained dataset (for its normalisation and class names) from this folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// One JSON object per image, then a summary object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// One image's answer.
#[derive(Debug, serde::Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top: Vec<Class>,
}

#[derive(Debug, serde::Serialize)]
pub struct Class {
    pub index: usize,
    pub class: String,
    pub probability: f32,
}

/// The files `inputs` name: files as given, folders' image files in name order.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        ["png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str())
    };
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if found.is_empty() {
                return Err(Error::data(input, "folder holds no .png/.jpg/.jpeg files"));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// The image as `channels` planes of `size`×`size` pixels in [0, 1], converted only when
/// `resize` allows it.
pub fn read_image(path: &Path, channels: usize, size: usize, resize: bool) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let colour = img.color().has_color();
    if !resize {
        if (w, h) != (size, size) {
            return Err(Error::data(
                path,
                format!("image is {w}x{h} but the model takes {size}x{size}; pass --resize to resize it"),
            ));
        }
        if colour != (channels == 3) {
            let (is, takes) = if colour {
                ("colour", "1 channel")
            } else {
                ("grayscale", "3 channels")
            };
            return Err(Error::data(
                path,
                format!("image is {is} but the model takes {takes}; pass --resize to convert it"),
            ));
        }
    }
    let img = if (w, h) == (size, size) {
        img
    } else {
        img.resize_exact(size as u32, size as u32, FilterType::Triangle)
    };
    Ok(planes(&img, channels))
}

/// Pixels / 255 in planes (C×H×W), as the dataset readers store them.
fn planes(img: &DynamicImage, channels: usize) -> Vec<f32> {
    let scale = |v: &u8| f32::from(*v) / 255.0;
    if channels == 1 {
        return img.to_luma8().as_raw().iter().map(scale).collect();
    }
    let rgb = img.to_rgb8();
    let raw = rgb.as_raw();
    (0..3)
        .flat_map(|c| raw.iter().skip(c).step_by(3).map(scale))
        .collect()
}

/// The `k` most probable classes of one row of logits (softmax in f64), ties by index.
fn top_k(logits: &[f32], k: usize, names: &[String]) -> Vec<Class> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Class {
            index: i,
            class: names.get(i).cloned().unwrap_or_else(|| i.to_string()),
            probability: (exp[i] / total) as f32,
        })
        .collect()
}

type Forward = Box<dyn FnMut(&Tensor) -> Result<Tensor>>;

/// The run's config, data and logits: a quantised folder's int8 program, or a training run's
/// network in evaluation mode.
fn load(a: &PredictArgs) -> Result<(TrainConfig, Splits, Forward)> {
    let dir = a.data_dir.clone();
    if crate::compress::folder::is_quantized(&a.checkpoint) {
        let (_, cfg, splits, q) =
            crate::compress::quantize_cli::load_with_data(&a.checkpoint, None, dir)?;
        eprintln!("int8 run folder: the saved int8 program");
        return Ok((cfg, splits, Box::new(move |x| q.forward(x.clone()))));
    }
    crate::export::require_weights(&a.checkpoint)?;
    let (cfg, mut net, splits) = crate::evaluate::load_trained(&a.checkpoint, None, dir)?;
    let mut ctx = Ctx::new(false, 0);
    let forward = move |x: &Tensor| crate::no_grad(|| Ok(net.forward(x, &mut ctx)?.0));
    Ok((cfg, splits, Box::new(forward)))
}

pub fn run(a: &PredictArgs) -> Result<()> {
    if a.batch_size == 0 || a.top_k == 0 {
        return Err(Error::InvalidArgument(
            "--batch-size and --top-k must be at least 1".into(),
        ));
    }
    let files = image_files(&a.images)?;
    let (cfg, splits, mut forward) = load(a)?;
    let norm: Normalize = source::default_normalize(cfg.data.kind, &splits.train)?;
    let shape = splits.train.shape();
    let (c, size, classes) = (shape.channels, shape.height, splits.test.num_classes);
    let names = &splits.test.class_names;
    let k = a.top_k.min(classes);
    let mut counts = vec![0usize; classes];
    for chunk in files.chunks(a.batch_size) {
        let mut pixels = Vec::with_capacity(chunk.len() * c * size * size);
        for f in chunk {
            let mut img = read_image(f, c, size, a.resize)?;
            norm.apply(&mut img, (c, size, size));
            pixels.extend(img);
        }
        let x = Tensor::from_vec(pixels, &[chunk.len(), c, size, size])?;
        let logits = forward(&x)?;
        for (f, row) in chunk.iter().zip(logits.try_to_vec()?.chunks(classes)) {
            let p = Prediction {
                image: f.clone(),
                top: top_k(row, k, names),
            };
            counts[p.top[0].index] += 1;
            if a.json {
                crate::cli::print_json(&p)?;
            } else {
                let classes: Vec<String> = p
                    .top
                    .iter()
                    .map(|t| format!("{} {:.4}", t.class, t.probability))
                    .collect();
                println!("{}  {}", f.display(), classes.join("  "));
            }
        }
    }
    let by_class: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n > 0)
        .map(|(name, &n)| (name.clone(), n.into()))
        .collect();
    let summary = serde_json::json!({
        "images": files.len(),
        "checkpoint": a.checkpoint,
        "top_k": k,
        "top1_counts": by_class,
    });
    if a.json {
        crate::cli::print_json(&summary)
    } else {
        eprintln!("{} images", files.len());
        Ok(())
    }
}
