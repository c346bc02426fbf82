//! The main job must find something: `darts search` with no arguments ends with every normal
//! edge decided (the kept op at least 2x uniform), and a search too short to decide says so.

use std::process::{Command, Output, Stdio};

fn search(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_darts"))
        .arg("search")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "darts search {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn result(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

/// The kept op's weight on each edge of the normal cell.
fn normal_weights(r: &serde_json::Value) -> Vec<f64> {
    (r["alpha_margins"].as_array().unwrap().iter())
        .filter(|m| m["cell"] == "normal")
        .map(|m| m["weight"].as_f64().unwrap())
        .collect()
}

const WARNING: &str = "warning: the alphas are still nearly uniform";

#[test]
fn the_default_search_decides_every_normal_edge() {
    let out = search(&[]);
    let r = result(&out);
    let weights = normal_weights(&r);
    assert_eq!(weights.len(), 14, "a 4-node cell has 14 edges");
    let uniform = 1.0 / 8.0;
    let weakest = weights.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        weakest >= 2.0 * uniform,
        "the weakest normal edge keeps its op at {weakest:.3}, below 2x uniform; all: {weights:.3?}"
    );
    assert_eq!(r["nearly_uniform"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(WARNING), "{stderr}");
}

#[test]
fn a_search_too_short_to_decide_warns() {
    let out = search(&["--epochs", "1", "--max-steps", "10"]);
    let r = result(&out);
    assert_eq!(r["nearly_uniform"], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(WARNING), "no warning in: {stderr}");
}
