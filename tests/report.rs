//! `darts::report` on fake run folders: the page must parse as XML (so every inline SVG is
//! well-formed), show the drawings, and cope with short, killed and odd-shaped runs.
//! The pages are kept under the target folder (`report/*.html`) so they can be looked at.

use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};

use darts::nas::primitives::{Primitive, DARTS_PRIMITIVES, NB201_PRIMITIVES};
use darts::nas::space::nb201::{Nb201Arch, Nb201Op};
use darts::nas::space::Arch;
use darts::nas::Genotype;
use darts::report::{arch_svg, cell_svg, genotype_svg, nb201_cell_svg, report_html, write_report};
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

/// A cell with two absent (`none`) edges, so drawings must tell kept and absent edges apart.
const NB201_CELL: &str =
    "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|";

/// An NB201 search log as `darts search --space nb201` writes it: one 6×5 alpha matrix, no
/// reduce matrix, the genotype as its benchmark string. Each edge's weights drift towards the
/// op `target` has there, so the last epochs derive `target`.
fn nb201_lines(epochs: usize, target: &Nb201Arch) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut logits = vec![vec![0.0; 5]; 6];
    (1..=epochs)
        .map(|epoch| {
            for (row, op) in logits.iter_mut().zip(target.ops) {
                for (c, l) in row.iter_mut().enumerate() {
                    let pull = if c == op.index() { 0.08 } else { 0.0 };
                    *l += pull + rng.random_range(-0.01..0.01);
                }
            }
            let alphas: Vec<Vec<f64>> = logits.iter().map(|r| softmax(r)).collect();
            let mut ops = [Nb201Op::None; 6];
            for (op, row) in ops.iter_mut().zip(&alphas) {
                let best = (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                *op = Nb201Op::ALL[best];
            }
            let arch = Nb201Arch { ops }.to_string();
            json!({"epoch": epoch, "lr": 0.025, "train_loss": 2.0 / epoch as f64,
                   "train_accuracy": 0.1 * epoch as f64, "val_loss": 2.1 / epoch as f64,
                   "val_accuracy": 0.09 * epoch as f64, "alphas_normal": alphas,
                   "genotype": arch, "genotype_text": arch, "seconds": 1.5})
            .to_string()
        })
        .collect()
}

fn nb201_config() -> serde_json::Value {
    let names: Vec<&str> = NB201_PRIMITIVES.iter().map(|p| p.name()).collect();
    json!({"space": "nb201", "epochs": 12, "primitives": names})
}

/// The drawing of an NB201 cell: (nodes, labelled edges, dashed `none` edges, labels' text).
fn dag_parts(svg: &roxmltree::Node) -> (usize, usize, usize, Vec<String>) {
    let nodes = svg
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("rx") == Some("6"))
        .count();
    let labels = svg
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("rx") == Some("3"))
        .count();
    let dashed = svg
        .descendants()
        .filter(|n| n.has_tag_name("path") && n.attribute("stroke-dasharray").is_some())
        .count();
    let text = svg
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    (nodes, labels, dashed, text)
}

/// The `<svg>` elements of an HTML page or SVG file whose text contains `title`.
fn svgs_titled(doc: &roxmltree::Document, title: &str) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name("svg"))
        .filter(|n| n.descendants().any(|t| t.text() == Some(title)))
        .count()
}

fn parse(html: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, options).unwrap()
}

#[test]
fn report_nb201_search_run() {
    let dir = fresh_dir("nb201-search");
    let target: Nb201Arch = NB201_CELL.parse().unwrap();
    std::fs::write(
        dir.join("search.jsonl"),
        nb201_lines(12, &target).join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), nb201_config().to_string()).unwrap();
    let html = report_html(&dir).unwrap();
    let (svgs, text) = check_page(&html);
    // the cell, 3 curves, 1 heatmap, 1 evolution: no reduction cell anywhere
    assert_eq!(svgs, 6);
    for needle in [
        "search run",
        "cell, epoch 12",
        "1←0",
        "3←2",
        "From search.jsonl, epoch 12.",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    assert!(!text.contains("reduction cell"), "{text}");
    assert!(text.contains(NB201_CELL), "the cell's string is shown");

    let doc = parse(&html);
    let dag = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("svg")
                && n.descendants()
                    .any(|t| t.text() == Some("NAS-Bench-201 cell"))
        })
        .expect("the page draws the NB201 cell");
    let (nodes, labelled, dashed, labels) = dag_parts(&dag);
    assert_eq!(
        (nodes, labelled, dashed),
        (4, 4, 2),
        "4 nodes, 4 op edges, 2 none edges"
    );
    for op in [
        "nor_conv_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "nor_conv_1x1",
        "input",
        "output",
    ] {
        assert!(labels.iter().any(|l| l == op), "no {op:?} in {labels:?}");
    }
    // The heatmap outlines the one kept op of each of the 6 edges.
    let outlined = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("stroke") == Some("#e8175d"))
        .count();
    assert_eq!(outlined, 6);

    // Without config.json the space comes from the logged cells, the primitives from the space.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_eq!(check_page(&report_html(&dir).unwrap()).0, 6);
}

#[test]
fn report_nb201_alphas_must_fit_the_cell() {
    let dir = fresh_dir("nb201-bad");
    let target: Nb201Arch = NB201_CELL.parse().unwrap();
    std::fs::write(dir.join("config.json"), nb201_config().to_string()).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(&nb201_lines(1, &target)[0]).unwrap();
    line["alphas_reduce"] = line["alphas_normal"].clone();
    std::fs::write(dir.join("search.jsonl"), format!("{line}\n")).unwrap();
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(
        e.contains(
            "line 1: alphas_reduce is logged, but a NAS-Bench-201 search has no reduction cell"
        ),
        "{e}"
    );

    line.as_object_mut().unwrap().remove("alphas_reduce");
    line["alphas_normal"]
        .as_array_mut()
        .unwrap()
        .push(json!([0.2, 0.2, 0.2, 0.2, 0.2]));
    std::fs::write(dir.join("search.jsonl"), format!("{line}\n")).unwrap();
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(
        e.contains("alphas_normal has 7 rows, but the NAS-Bench-201 cell has 6 edges"),
        "{e}"
    );

    line["alphas_normal"].as_array_mut().unwrap().pop();
    line["genotype"] = json!("|nor_conv_3x3~0|+|");
    std::fs::write(dir.join("search.jsonl"), format!("{line}\n")).unwrap();
    let e = report_html(&dir).unwrap_err().to_string();
    assert!(
        e.contains("search.jsonl: line 1: ") && e.contains("expected 3"),
        "{e}"
    );
}

#[test]
fn nb201_cell_drawings() {
    let arch: Nb201Arch = NB201_CELL.parse().unwrap();
    let alone = nb201_cell_svg(&arch);
    let doc = roxmltree::Document::parse(&alone).unwrap();
    let (nodes, labelled, dashed, _) = dag_parts(&doc.root_element());
    assert_eq!((nodes, labelled, dashed), (4, 4, 2));
    // Every edge an op: 6 labels, none dashed; no two labels or nodes overlap.
    let all = Nb201Arch::uniform(Nb201Op::NorConv3x3);
    let svg = nb201_cell_svg(&all);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let (_, labelled, dashed, _) = dag_parts(&doc.root_element());
    assert_eq!((labelled, dashed), (6, 0));
    let b = boxes(&svg);
    assert_eq!(b.len(), 10);
    for (i, p) in b.iter().enumerate() {
        for q in &b[i + 1..] {
            let apart =
                p.0 + p.2 <= q.0 || q.0 + q.2 <= p.0 || p.1 + p.3 <= q.1 || q.1 + q.3 <= p.1;
            assert!(apart, "{p:?} overlaps {q:?}");
        }
    }
    // With the legend, for either space.
    let figure = arch_svg(&Arch::Nb201(arch)).unwrap();
    let doc = roxmltree::Document::parse(&figure).unwrap();
    assert_eq!(svgs_titled(&doc, "NAS-Bench-201 cell"), 1);
    assert!(figure.contains("none (no edge)"));
    let v2 = Genotype::named("DARTS_V2").unwrap();
    assert_eq!(
        arch_svg(&Arch::Darts(v2.clone())).unwrap(),
        genotype_svg(&v2).unwrap()
    );
}

fn darts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_darts"));
    c.stdin(Stdio::null());
    c
}

#[test]
fn genotype_show_nb201() {
    let dir = fresh_dir("nb201-show");
    let svg = dir.join("cell.svg");
    let out = darts()
        .args([
            "genotype",
            "show",
            NB201_CELL,
            "--svg",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], NB201_CELL);
    assert_eq!(lines.len(), 7, "the string and one line per edge: {stdout}");
    assert_eq!(lines[1].trim(), "1←0  nor_conv_3x3");
    assert_eq!(lines[6].trim(), "3←2  none");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&drawn).unwrap();
    let (nodes, labelled, dashed, _) = dag_parts(&doc.root_element());
    assert_eq!((nodes, labelled, dashed), (4, 4, 2));

    // --json is the string as JSON, and a file holding it (a search's genotype.json) reads too.
    let out = darts()
        .args(["genotype", "show", NB201_CELL, "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, json!(NB201_CELL));
    let file = dir.join("genotype.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let out = darts()
        .args(["genotype", "show", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(NB201_CELL));

    // A malformed string: one line on stderr, exit code 1, nothing drawn.
    let bad = dir.join("bad.svg");
    let out = darts()
        .args([
            "genotype",
            "show",
            "|nor_conv_3x3~0|+|conv_9x9~0|",
            "--svg",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("NB201") && !err.contains("panicked"), "{err}");
    assert!(!bad.exists());
}

/// A real `darts search --space nb201` run folder reports: the files the search writes are the
/// ones the report reads.
#[test]
fn report_of_a_real_nb201_search() {
    let dir = fresh_dir("nb201-real");
    let run = dir.join("run");
    let out = darts()
        .args([
            "search",
            "--space",
            "nb201",
            "--epochs",
            "2",
            "--max-steps",
            "2",
        ])
        .args(["--threads", "2", "--out", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.join("report.html");
    let out = darts()
        .args([
            "report",
            run.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let (svgs, text) = check_page(&html);
    assert_eq!(svgs, 6, "{text}");
    assert!(
        text.contains("From genotype.json.") && text.contains("3←2"),
        "{text}"
    );
    assert!(!text.contains("could not be read"), "{text}");
    assert_eq!(svgs_titled(&parse(&html), "NAS-Bench-201 cell"), 1);
}
