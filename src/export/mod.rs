//! Deployment: a trained run folder as an ONNX model (`onnx.rs`, checked by `check.rs`) or as
//! PyTorch weights plus `model.py` (`torch.rs`). Both read the run the way `darts eval` does,
//! so what is exported is exactly the network `darts eval` measures.

pub mod builder;
pub mod check;
pub mod onnx;
pub mod proto;
pub mod qdq;
pub mod torch;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::data::source;
use crate::error::{Error, Result};
use crate::train::MODEL_WEIGHTS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An ONNX model (opset 17): input `images` [batch, C, H, W], output `logits`.
    Onnx,
    /// A folder with model.safetensors (PyTorch state-dict names) and model.py.
    #[value(alias = "safetensors")]
    Torch,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A training run folder (holding config.json and model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Onnx)]
    pub format: Format,
    /// Output file (onnx) or folder (torch) [default: RUN/model.onnx, RUN/torch].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Keep BatchNormalization nodes instead of folding each BN into the conv before it.
    #[arg(long)]
    pub no_fold: bool,
    /// Re-read the written ONNX file and run our structural checks on it (every input defined,
    /// shapes inferred to the output).
    #[arg(long)]
    pub check: bool,
    /// Read the trained dataset (for the input shape and normalisation) from this folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// A run folder must hold trained weights before anything else is read.
pub fn require_weights(run: &Path) -> Result<()> {
    let weights = run.join(MODEL_WEIGHTS);
    if weights.is_file() {
        Ok(())
    } else {
        Err(Error::data(
            &weights,
            "no trained weights: export and predict need a `darts train --out` run folder",
        ))
    }
}

pub fn run(a: &ExportArgs) -> Result<()> {
    if crate::compress::folder::is_quantized(&a.checkpoint) {
        return run_quantized(a);
    }
    require_weights(&a.checkpoint)?;
    if a.format == Format::Torch && (a.no_fold || a.check) {
        return Err(Error::InvalidArgument(
            "--no-fold and --check apply to --format onnx only".into(),
        ));
    }
    let (cfg, net, splits) =
        crate::evaluate::load_trained(&a.checkpoint, None, a.data_dir.clone())?;
    if a.format == Format::Torch
        && matches!(
            cfg.prune,
            Some(crate::compress::prune::Pruning::Channels { .. })
        )
    {
        // model.py builds the recipe's full-width layers; the ONNX graph reads the tensors.
        return Err(Error::InvalidArgument(
            "--format torch does not support channel-pruned run folders; use --format onnx".into(),
        ));
    }
    let mut result = serde_json::json!({ "format": format!("{:?}", a.format).to_lowercase() });
    match a.format {
        Format::Onnx => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| a.checkpoint.join("model.onnx"));
            let model = onnx::model(&net, !a.no_fold)?;
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            crate::checkpoint::write_atomic(&out, &onnx::to_bytes(&model))?;
            result["out"] = serde_json::json!(out);
            if a.check {
                let bytes = std::fs::read(&out).map_err(|e| Error::io(&out, e))?;
                let report = check::check(&onnx::from_bytes(&bytes, &out)?)
                    .map_err(|e| Error::data(&out, format!("ONNX check failed: {e}")))?;
                let dims: Vec<String> = report
                    .output_shape
                    .iter()
                    .map(|d| d.map_or("batch".into(), |d| d.to_string()))
                    .collect();
                eprintln!(
                    "check: {} nodes, {} initializers ({} parameters), output {}",
                    report.nodes,
                    report.initializers,
                    report.parameters,
                    dims.join("×")
                );
                result["check"] = serde_json::json!(report);
            }
        }
        Format::Torch => {
            let out = a.out.clone().unwrap_or_else(|| a.checkpoint.join("torch"));
            let norm = source::default_normalize(cfg.data.kind, &splits.train)?;
            let config = torch::config(&net, &norm, &splits.test.class_names);
            result["files"] = serde_json::json!(torch::write(&out, &net, &config)?);
            result["out"] = serde_json::json!(out);
        }
    }
    if a.json {
        crate::cli::print_json(&result)
    } else {
        println!("{}", result["out"].as_str().unwrap_or_default());
        Ok(())
    }
}

/// A quantised run folder as a QDQ ONNX model [default: RUN/model.int8.onnx].
fn run_quantized(a: &ExportArgs) -> Result<()> {
    if a.format != Format::Onnx || a.no_fold || a.check {
        return Err(Error::InvalidArgument(
            "an int8 run folder exports as --format onnx (QDQ) only, BN folded, without \
             --check (check it with onnx.checker)"
                .into(),
        ));
    }
    let (run, _, splits, q) =
        crate::compress::quantize_cli::load_with_data(&a.checkpoint, None, a.data_dir.clone())?;
    let shape = splits.train.shape();
    let model = qdq::model(&run, &q, shape.channels, shape.height)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.checkpoint.join("model.int8.onnx"));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::checkpoint::write_atomic(&out, &onnx::to_bytes(&model))?;
    if a.json {
        crate::cli::print_json(&serde_json::json!({ "format": "onnx-qdq", "out": out }))
    } else {
        println!("{}", out.display());
        Ok(())
    }
}
