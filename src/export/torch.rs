//! `darts export --format torch`: the weights under PyTorch's state-dict names (the auxiliary
//! head left out, as the exported module has none) and a self-contained `model.py` defining the
//! network of this genotype or NAS-Bench-201 cell, so that `import model; net = model.load()`
//! gives the trained network in PyTorch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nn::Module;

/// The module definitions; `__DARTS_CONFIG__` becomes the network's shape as JSON.
const TEMPLATE: &str = include_str!("model.py");
pub const WEIGHTS: &str = "model.safetensors";
pub const MODULE: &str = "model.py";

/// What `model.py` builds: the space, the architecture, the shape, and the input normalisation.
pub fn config(net: &Network, norm: &Normalize, class_names: &[String]) -> serde_json::Value {
    let s = &net.spec;
    serde_json::json!({
        "space": s.genotype.space().to_string(),
        "genotype": s.genotype,
        "channels": s.channels,
        "layers": s.layers,
        "in_channels": s.in_channels,
        "num_classes": s.num_classes,
        "image_size": s.image_size,
        "mean": norm.mean,
        "std": norm.std,
        "class_names": class_names,
    })
}

/// Writes `dir/model.safetensors` and `dir/model.py`; returns their paths.
pub fn write(dir: &Path, net: &Network, config: &serde_json::Value) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors = BTreeMap::new();
    net.visit("", &mut |name, t, _| {
        if !name.starts_with("auxiliary_head.") {
            tensors.insert(name.to_string(), t.detach());
        }
    });
    let weights = dir.join(WEIGHTS);
    checkpoint::save(&weights, &tensors, config)?;
    let module = dir.join(MODULE);
    // A raw Python string holds the JSON; JSON never needs a triple quote, so nothing escapes.
    let text = TEMPLATE.replace("__DARTS_CONFIG__", &config.to_string());
    checkpoint::write_atomic(&module, text.as_bytes())?;
    Ok(vec![weights, module])
}
