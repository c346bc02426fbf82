//! `darts::report` on fake run folders: the page must parse as XML (so every inline SVG is
//! well-formed), show the drawings, and cope with short, killed and odd-shaped runs.
//! The pages are kept under the target folder (`report/*.html`) so they can be looked at.

use std::path::{Path, PathBuf};

use darts::nas::primitives::{Primitive, DARTS_PRIMITIVES};
use darts::nas::Genotype;
use darts::report::{cell_svg, genotype_svg, report_html, write_report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// A search log whose alphas drift like a real search's: `none` and a favourite op per edge
/// grow, the rest fade. Returns the lines and the last genotype.
fn search_lines(
    epochs: usize,
    steps: usize,
    primitives: &[Primitive],
    seed: u64,
) -> (Vec<String>, Genotype) {
    let mut rng = StdRng::seed_from_u64(seed);
    let edges = steps * (steps + 3) / 2;
    let n = primitives.len();
    let mut logits: Vec<Vec<Vec<f64>>> = vec![vec![vec![0.0; n]; edges]; 2];
    let drift: Vec<Vec<Vec<f64>>> = (0..2)
        .map(|_| {
            (0..edges)
                .map(|_| (0..n).map(|_| rng.random_range(-0.04..0.06)).collect())
                .collect()
        })
        .collect();
    let mut lines = Vec::new();
    let mut genotype = None;
    for epoch in 1..=epochs {
        for (cell, cell_drift) in logits.iter_mut().zip(&drift) {
            for (row, d) in cell.iter_mut().zip(cell_drift) {
                for (l, d) in row.iter_mut().zip(d) {
                    *l += d + rng.random_range(-0.02..0.02);
                }
            }
        }
        let alphas: Vec<Vec<Vec<f64>>> = logits
            .iter()
            .map(|c| c.iter().map(|r| softmax(r)).collect())
            .collect();
        let flat = |c: &Vec<Vec<f64>>| c.iter().flatten().map(|&x| x as f32).collect::<Vec<f32>>();
        let g = Genotype::derive(
            &flat(&alphas[0]),
            &flat(&alphas[1]),
            primitives,
            steps,
            steps.min(4),
        )
        .unwrap();
        let t = epoch as f64;
        lines.push(
            json!({
                "epoch": epoch,
                "lr": 0.025 * (0.5 + 0.5 * (std::f64::consts::PI * t / epochs as f64).cos()),
                "train_loss": 2.3 * (-t / 12.0).exp() + 0.35 + rng.random_range(0.0..0.05),
                "train_accuracy": 0.9 - 0.8 * (-t / 10.0).exp(),
                "val_loss": 2.3 * (-t / 14.0).exp() + 0.5 + rng.random_range(0.0..0.08),
                "val_accuracy": 0.85 - 0.75 * (-t / 12.0).exp() + rng.random_range(-0.01..0.01),
                "alphas_normal": alphas[0],
                "alphas_reduce": alphas[1],
                "genotype": g,
                "genotype_text": g.to_string(),
                "seconds": 61.5,
            })
            .to_string(),
        );
        genotype = Some(g);
    }
    (lines, genotype.unwrap())
}

/// Parses the page as XML and returns the number of `<svg>` elements and all its text.
fn check_page(html: &str) -> (usize, String) {
    // `<!DOCTYPE html>` is the only DTD and declares nothing.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(html, options)
        .unwrap_or_else(|e| panic!("page is not well-formed XML: {e}"));
    let svgs = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    let text: String = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ");
    (svgs, text)
}

#[test]
fn report_search_run() {
    let dir = fresh_dir("search");
    let (mut lines, g) = search_lines(30, 4, &DARTS_PRIMITIVES, 1);
    // killed while writing epoch 31
    lines.push("{\"epoch\": 31, \"lr\": 0.001, \"train_lo".into());
    std::fs::write(dir.join("search.jsonl"), lines.join("\n")).unwrap();
    let primitives: Vec<&str> = DARTS_PRIMITIVES.iter().map(|p| p.name()).collect();
    let config = json!({"dataset": "cifar10", "epochs": 50, "batch_size": 64, "primitives": primitives, "seed": 2});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("genotype.json"),
        serde_json::to_string(&g).unwrap(),
    )
    .unwrap();
    let out = dir.join("report.html");
    write_report(&dir, &out).unwrap();
    let html = std::fs::read_to_string(&out).unwrap();
    let (svgs, text) = check_page(&html);
    // 2 cells, 3 curves, 2 heatmaps, 2 evolutions
    assert_eq!(svgs, 9);
    for needle in [
        "search run",
        "normal cell",
        "reduction cell",
        "sep_conv_3x3",
        "line 31 is incomplete",
        "cifar10",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    assert!(!html.contains("<script"), "the page needs no JavaScript");
}

#[test]
fn report_one_epoch_without_config_or_genotype_file() {
    let dir = fresh_dir("one-epoch");
    let (lines, _) = search_lines(1, 4, &DARTS_PRIMITIVES, 2);
    std::fs::write(dir.join("search.jsonl"), format!("{}\n", lines[0])).unwrap();
    // The output folder is created as needed.
    let out = dir.join("html/nested/report.html");
    write_report(&dir, &out).unwrap();
    let (svgs, text) = check_page(&std::fs::read_to_string(out).unwrap());
    assert_eq!(svgs, 9);
    assert!(text.contains("From search.jsonl, epoch 1."), "{text}");
}

#[test]
fn report_other_search_spaces() {
    // 3 nodes and 5 ops without `none`, given as a comma-separated string
    let dir = fresh_dir("small-space");
    let ops = [
        Primitive::SkipConnect,
        Primitive::SepConv3x3,
        Primitive::MaxPool3x3,
        Primitive::DilConv5x5,
        Primitive::AvgPool3x3,
    ];
    let (lines, _) = search_lines(5, 3, &ops, 3);
    std::fs::write(dir.join("search.jsonl"), lines.join("\n") + "\n").unwrap();
    let names: Vec<&str> = ops.iter().map(|p| p.name()).collect();
    std::fs::write(
        dir.join("config.json"),
        json!({"primitives": names.join(",")}).to_string(),
    )
    .unwrap();
    write_report(&dir, &dir.join("report.html")).unwrap();
    let (svgs, _) = check_page(&std::fs::read_to_string(dir.join("report.html")).unwrap());
    assert_eq!(svgs, 9);

    // The same log read with the default 8 primitives does not fit: an error naming the line.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(
        e.contains("search.jsonl: line 1: alphas_normal has a row of 5 weights"),
        "{e}"
    );
    assert!(e.contains("searched 8 primitives"), "{e}");
}

#[test]
fn report_train_run() {
    let dir = fresh_dir("train");
    let lines: Vec<String> = (1..=20)
        .map(|e| {
            let t = e as f64;
            json!({"epoch": e, "lr": 0.025, "train_loss": 1.5 / t.sqrt(), "train_accuracy": 0.5 + 0.02 * t,
                   "test_loss": 1.6 / t.sqrt(), "test_accuracy": 0.48 + 0.02 * t, "seconds": 3700.0})
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("train.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(
        dir.join("genotype.json"),
        serde_json::to_string(&Genotype::named("DARTS_V2").unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("results.json"),
        json!({"test_accuracy": 0.8812, "params": 3349342}).to_string(),
    )
    .unwrap();
    write_report(&dir, &dir.join("report.html")).unwrap();
    let (svgs, text) = check_page(&std::fs::read_to_string(dir.join("report.html")).unwrap());
    assert_eq!(svgs, 5, "2 cells and 3 curves");
    for needle in [
        "training run",
        "test accuracy",
        "88.00%",
        "3349342",
        "20h 33m",
        "From genotype.json.",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
}

#[test]
fn report_errors() {
    let dir = fresh_dir("empty");
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(
        e.contains("holds neither search.jsonl nor train.jsonl"),
        "{e}"
    );
    let e = report_html(&dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("not a folder"), "{e}");
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"epoch\": 1}\nnot json\n{\"epoch\": 3}\n",
    )
    .unwrap();
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(e.contains("train.jsonl: line 2:"), "{e}");
}

/// Axis-aligned boxes of the drawn nodes (rx 6) and edge labels (rx 3).
fn boxes(svg: &str) -> Vec<(f64, f64, f64, f64)> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && matches!(n.attribute("rx"), Some("3" | "6")))
        .map(|n| {
            (
                num(&n, "x"),
                num(&n, "y"),
                num(&n, "width"),
                num(&n, "height"),
            )
        })
        .collect()
}

#[test]
fn report_cells_of_any_size_never_overlap() {
    let mut rng = StdRng::seed_from_u64(7);
    for steps in 1..=7 {
        for _ in 0..20 {
            let mut cell = Vec::new();
            for node in 0..steps {
                for _ in 0..2 {
                    let op = DARTS_PRIMITIVES[rng.random_range(1..8)];
                    cell.push((op, rng.random_range(0..node + 2)));
                }
            }
            let concat: Vec<usize> = (2..steps + 1)
                .filter(|_| rng.random_bool(0.7))
                .chain([steps + 1])
                .collect();
            let g = Genotype {
                normal: cell.clone(),
                normal_concat: concat.clone(),
                reduce: cell,
                reduce_concat: concat,
            };
            let svg = cell_svg(&g, false).unwrap();
            let b = boxes(&svg);
            assert_eq!(b.len(), (steps + 3) + 2 * steps, "nodes and labels");
            for (i, p) in b.iter().enumerate() {
                for q in &b[i + 1..] {
                    let apart = p.0 + p.2 <= q.0
                        || q.0 + q.2 <= p.0
                        || p.1 + p.3 <= q.1
                        || q.1 + q.3 <= p.1;
                    assert!(apart, "{p:?} overlaps {q:?} in {g}");
                }
            }
            let both = genotype_svg(&g).unwrap();
            roxmltree::Document::parse(&both).unwrap();
            let samples = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
            // Made here too: on a clean target no other test may have created it yet.
            std::fs::create_dir_all(&samples).unwrap();
            std::fs::write(samples.join(format!("cells-{steps}.svg")), both).unwrap();
        }
    }
}

#[test]
fn report_invalid_cells_are_errors() {
    let mut g = Genotype::named("DARTS_V1").unwrap();
    g.reduce[5] = (Primitive::SepConv3x3, 4);
    assert!(cell_svg(&g, false).is_ok());
    let e = cell_svg(&g, true).unwrap_err().to_string();
    assert!(e.contains("reduce cell: pair 5"), "{e}");
    g.normal.pop();
    let e = genotype_svg(&g).unwrap_err().to_string();
    assert!(e.contains("normal cell: has 7 (op, input) pairs"), "{e}");
}

#[test]
fn report_killed_before_the_first_epoch() {
    let dir = fresh_dir("killed");
    std::fs::write(
        dir.join("search.jsonl"),
        "{\"epoch\": 1, \"alphas_normal\": [[0.1,",
    )
    .unwrap();
    let (svgs, text) = check_page(&report_html(&dir).unwrap());
    assert_eq!(svgs, 0);
    for needle in [
        "no complete epoch yet",
        "line 1 is incomplete",
        "No genotype yet",
        "No epoch logged alphas",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
}
