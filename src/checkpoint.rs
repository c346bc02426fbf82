//! Checkpoints: named f32 tensors in one safetensors file (readable by the `safetensors` Python
//! package and PyTorch) with our run state as JSON in its metadata, written atomically
//! (temp file, fsync, rename) so a killed run never leaves a torn checkpoint behind.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::{Adam, AdamSlot, Sgd};
use crate::tensor::Tensor;

/// The metadata key holding our JSON run state.
const META_KEY: &str = "darts";

/// Writes `bytes` to `path` atomically: a sibling temp file, fsync, then rename over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // A full disk must not leave a half-written temp file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Deletes `path` if it exists (a fresh run's old log); any other failure is an error, since
/// keeping the old file would mix two runs' lines.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Every tensor of a module (weights and buffers) under `prefix`, by dotted name.
pub fn module_state(m: &dyn Module, prefix: &str, out: &mut BTreeMap<String, Tensor>) {
    m.visit(prefix, &mut |name, t, _| {
        out.insert(name.to_string(), t.detach());
    });
}

/// Loads every tensor of `m` from `tensors` (names under `prefix`). A missing tensor or one of
/// another shape is an error naming it; nothing is changed unless everything fits.
pub fn load_module_state(
    m: &mut dyn Module,
    prefix: &str,
    tensors: &BTreeMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    let mut problems = Vec::new();
    m.visit(prefix, &mut |name, t, _| match tensors.get(name) {
        None => problems.push(format!("missing tensor {name}")),
        Some(v) if v.shape() != t.shape() => problems.push(format!(
            "tensor {name} has shape {:?}, the model needs {:?}",
            v.shape(),
            t.shape()
        )),
        Some(_) => {}
    });
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            format!(" (and {} more problems)", problems.len() - 1)
        } else {
            String::new()
        };
        return Err(Error::data(
            source,
            format!("checkpoint does not fit this model: {first}{more}"),
        ));
    }
    let mut result = Ok(());
    m.visit_mut(prefix, &mut |name, t, _| {
        if let (Some(v), true) = (tensors.get(name), result.is_ok()) {
            // Shapes were checked above; what can still fail (a device copy) is reported.
            result = t
                .set_data(v)
                .map_err(|e| Error::data(source, format!("loading tensor {name}: {e}")));
        }
    });
    result
}

/// Where SGD momentum buffers live in a checkpoint: under this prefix, by parameter name.
const MOMENTUM_PREFIX: &str = "optim.momentum_buffer.";

/// Adds the SGD momentum buffers to a checkpoint's tensors (flat, as the optimiser keeps them
/// by name).
pub fn sgd_state(sgd: &Sgd, out: &mut BTreeMap<String, Tensor>) -> Result<()> {
    for (name, buf) in &sgd.momentum_buffers {
        out.insert(
            format!("{MOMENTUM_PREFIX}{name}"),
            buf.reshape(&[buf.numel()])?.detach(),
        );
    }
    Ok(())
}

/// Restores the SGD momentum buffers saved by [`sgd_state`] (moved to each parameter's device
/// at its next step).
pub fn load_sgd_state(sgd: &mut Sgd, tensors: &BTreeMap<String, Tensor>) {
    sgd.momentum_buffers = with_prefix(tensors, MOMENTUM_PREFIX).collect();
}

fn with_prefix<'a>(
    tensors: &'a BTreeMap<String, Tensor>,
    prefix: &'a str,
) -> impl Iterator<Item = (String, Tensor)> + 'a {
    tensors
        .iter()
        .filter_map(move |(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
}

/// Where Adam's moment estimates live in a checkpoint.
const ADAM_M_PREFIX: &str = "optim.adam.exp_avg.";
const ADAM_V_PREFIX: &str = "optim.adam.exp_avg_sq.";

/// Adds Adam's moment estimates to a checkpoint's tensors; returns the per-parameter step
/// counts, which go into the JSON state.
pub fn adam_state(adam: &Adam, out: &mut BTreeMap<String, Tensor>) -> BTreeMap<String, u64> {
    let mut steps = BTreeMap::new();
    for (name, s) in &adam.slots {
        out.insert(format!("{ADAM_M_PREFIX}{name}"), s.exp_avg.detach());
        out.insert(format!("{ADAM_V_PREFIX}{name}"), s.exp_avg_sq.detach());
        steps.insert(name.clone(), s.step);
    }
    steps
}

/// Restores what [`adam_state`] saved; a step count without both moments is an error naming
/// the file.
pub fn load_adam_state(
    adam: &mut Adam,
    tensors: &BTreeMap<String, Tensor>,
    steps: &BTreeMap<String, u64>,
    path: &Path,
) -> Result<()> {
    adam.slots.clear();
    for (name, &step) in steps {
        let get = |prefix: &str| {
            tensors
                .get(&format!("{prefix}{name}"))
                .cloned()
                .ok_or_else(|| {
                    Error::data(
                        path,
                        format!("Adam state for {name} is missing its moments"),
                    )
                })
        };
        let slot = AdamSlot {
            step,
            exp_avg: get(ADAM_M_PREFIX)?,
            exp_avg_sq: get(ADAM_V_PREFIX)?,
        };
        adam.slots.insert(name.clone(), slot);
    }
    Ok(())
}

/// Serialises tensors and a JSON state into safetensors bytes.
pub fn to_bytes(tensors: &BTreeMap<String, Tensor>, meta: &serde_json::Value) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            let values = t.try_to_vec()?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((k.clone(), t.shape().to_vec(), bytes))
        })
        .collect::<Result<_>>()?;
    let views = raw
        .iter()
        .map(|(k, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.as_str(), v))
                .map_err(|e| Error::InvalidArgument(format!("checkpoint tensor {k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([(META_KEY.to_string(), meta.to_string())]);
    safetensors::serialize(views, Some(info))
        .map_err(|e| Error::InvalidArgument(format!("writing checkpoint: {e}")))
}

/// Saves tensors and state atomically.
pub fn save(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    meta: &serde_json::Value,
) -> Result<()> {
    write_atomic(path, &to_bytes(tensors, meta)?)
}

/// Reads a checkpoint written by [`save`]: its tensors and its JSON state (`Null` when the file
/// is a plain safetensors file without our metadata).
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, serde_json::Value)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| {
        Error::data(
            path,
            format!("not a readable safetensors checkpoint: {msg}"),
        )
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
        Some(s) => serde_json::from_str(s).map_err(|e| bad(format!("metadata: {e}")))?,
        None => serde_json::Value::Null,
    };
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name.clone(), Tensor::from_vec(data, view.shape())?);
    }
    Ok((tensors, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("darts-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        let mut m = BTreeMap::new();
        m.insert(
            "a.weight".to_string(),
            Tensor::from_vec(vec![1.5, -2.0, 3.25], &[3, 1]).unwrap(),
        );
        save(&path, &m, &serde_json::json!({"epoch": 3})).unwrap();
        let (t, meta) = load(&path).unwrap();
        assert_eq!(t["a.weight"].to_vec(), vec![1.5, -2.0, 3.25]);
        assert_eq!(t["a.weight"].shape(), &[3, 1]);
        assert_eq!(meta["epoch"], 3);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("c.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
