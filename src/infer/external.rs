//! The ratios to beat in `darts bench infer`: the same trained network exported (ONNX, and
//! model.py + safetensors) and timed by `benches/infer_external.py` in onnxruntime (f32, and
//! int8 by its own static quantisation of our file) and PyTorch eager, on the same images, batch
//! sizes and thread count, right after our own rows. The script is compiled into the binary, so
//! the bench needs only a Python that has those packages; what it lacks becomes a note, not an
//! error.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::bench::PathTiming;
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::tensor::Tensor;

const SCRIPT: &str = include_str!("../../benches/infer_external.py");

/// What the script measured, and why rows are missing.
pub struct External {
    pub rows: Vec<PathTiming>,
    pub notes: Vec<String>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    batch1_median_ms: f64,
    batch1_p99_ms: f64,
    batch64_ms: f64,
    batch64_images_per_s: f64,
    batch1_cpu_ms: f64,
    batch64_cpu_ms: f64,
}

#[derive(Deserialize)]
struct Reply {
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// The inputs the script reads, in a fresh folder under the system's temp directory.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_f32(path: &Path, tensors: &[&Tensor]) -> Result<()> {
    let bytes: Vec<u8> = tensors
        .iter()
        .flat_map(|t| t.data().iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Exports `net` (with `torch_config` for model.py), writes `x64` (the timed batch) and the
/// `calibration` batches of 64, and runs the script with `python`, `runs` as for our rows, on
/// as many threads as ours use.
pub fn run(
    python: &Path,
    net: &Network,
    torch_config: &serde_json::Value,
    x64: &Tensor,
    calibration: &[Tensor],
    runs: usize,
) -> Result<External> {
    let dir = std::env::temp_dir().join(format!("darts-bench-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let scratch = Scratch(dir);
    let at = |name: &str| scratch.0.join(name);
    let onnx = crate::export::onnx::model(net, true)?;
    std::fs::write(at("model.onnx"), crate::export::onnx::to_bytes(&onnx))
        .map_err(|e| Error::io(at("model.onnx"), e))?;
    crate::export::torch::write(&at("pytorch_model"), net, torch_config)?;
    write_f32(&at("images.f32"), &[x64])?;
    write_f32(
        &at("calibration.f32"),
        &calibration.iter().collect::<Vec<_>>(),
    )?;
    std::fs::write(at("infer_external.py"), SCRIPT)
        .map_err(|e| Error::io(at("infer_external.py"), e))?;
    let spec = serde_json::json!({
        "onnx": at("model.onnx"),
        "torch_dir": at("pytorch_model"),
        "images": at("images.f32"),
        "calibration": at("calibration.f32"),
        "shape": x64.shape(),
        "runs": runs,
        "threads": rayon::current_num_threads(),
    });
    std::fs::write(at("spec.json"), spec.to_string()).map_err(|e| Error::io(at("spec.json"), e))?;
    let out = match Command::new(python)
        .arg(at("infer_external.py"))
        .arg(at("spec.json"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            return Ok(External {
                rows: vec![],
                notes: vec![format!(
                    "onnxruntime and PyTorch rows skipped: cannot run {} ({e}); give --python",
                    python.display()
                )],
            })
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reply: Reply = match stdout.lines().last().map(serde_json::from_str) {
        Some(Ok(reply)) if out.status.success() => reply,
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().last().unwrap_or("no output");
            return Err(Error::InvalidArgument(format!(
                "bench infer: {} {} failed: {why}",
                python.display(),
                "benches/infer_external.py"
            )));
        }
    };
    Ok(External {
        rows: reply
            .rows
            .into_iter()
            .map(|r| PathTiming {
                name: r.name,
                batch1_median_ms: r.batch1_median_ms,
                batch1_p99_ms: r.batch1_p99_ms,
                batch64_ms: r.batch64_ms,
                batch64_images_per_s: r.batch64_images_per_s,
                batch1_cpu_ms: r.batch1_cpu_ms,
                batch64_cpu_ms: r.batch64_cpu_ms,
                peak_activation_bytes: None,
                peak_rss_growth_bytes: None,
            })
            .collect(),
        notes: reply.notes,
    })
}
