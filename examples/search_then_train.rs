//! The whole pipeline on the built-in dataset in a few minutes: a short DARTS search, training
//! the found genotype from scratch, and the HTML report of both runs.
//!
//! `cargo run --release --example search_then_train [OUT_DIR]` (default `runs/example`).

use std::path::PathBuf;

use darts::data::{DataSpec, DatasetKind};
use darts::nas::search::{self, SearchConfig};
use darts::nas::space::Space;
use darts::train::{self, TrainConfig};

fn main() -> darts::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("runs/example"), PathBuf::from);
    let data = DataSpec {
        kind: DatasetKind::Builtin,
        dir: None,
    };
    // The built-in dataset's default search, as `darts search` runs it.
    let search_cfg = SearchConfig::recipe(Space::Darts, data.clone());
    let search_dir = root.join("search");
    let found = search::run(search_cfg, Some(&search_dir), false)?;
    eprintln!("found: {}", found.genotype_text);

    let train_cfg = TrainConfig {
        data,
        data_files: Vec::new(),
        genotype: found.genotype.clone(),
        genotype_source: search_dir.join("genotype.json").display().to_string(),
        epochs: 3,
        batch_size: 96,
        channels: 8,
        layers: 5,
        lr: 0.025,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        auxiliary_weight: 0.4,
        drop_path: 0.2,
        cutout: 0,
        seed: 0,
        eval_every_epoch: true,
        max_steps: None,
        valid_fraction: 0.0,
        prune: None,
        distill: None,
        stop_after: None,
        device: darts::Device::Cpu,
    };
    let train_dir = root.join("train");
    let trained = train::run(train_cfg, Some(&train_dir), false)?;

    for dir in [&search_dir, &train_dir] {
        darts::report::write_report(dir, &dir.join("report.html"))?;
    }
    let summary = serde_json::json!({
        "genotype": found.genotype_text,
        "search_val_accuracy": found.val_accuracy,
        "test_accuracy": trained.test_accuracy,
        "params": trained.params,
        "seconds": found.seconds + trained.seconds,
        "reports": [search_dir.join("report.html"), train_dir.join("report.html")],
    });
    println!("{summary}");
    Ok(())
}
