//! The memory check end to end, through the built binary: its estimate against the peak
//! memory of real short runs, and runs too large for the machine (or batches larger than the
//! data) stopping at once with one line on stderr and exit code 1.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn darts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_darts"));
    c.stdin(Stdio::null()).env_remove("DARTS_SKIP_MEMORY_CHECK");
    c
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-memory-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The `--json` result line of a run that must succeed.
fn json_result(out: &Output, args: &[&str]) -> serde_json::Value {
    assert!(
        out.status.success(),
        "darts {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON results")
}

/// The estimate and measured peak of a short run of `args`, and its results.
fn estimate_and_peak(args: &[&str]) -> (f64, f64, serde_json::Value) {
    let out = darts()
        .args(args)
        .args(["--threads", "2", "--json"])
        .output()
        .unwrap();
    let r = json_result(&out, args);
    let e = &r["memory_estimate"];
    let estimate = e["weights"].as_f64().unwrap() + e["activations"].as_f64().unwrap();
    (estimate, r["peak_memory"].as_f64().unwrap(), r)
}

#[test]
fn the_estimate_is_close_to_the_peak_of_real_runs() {
    let cases: [&[&str]; 5] = [
        &[
            "search",
            "--channels",
            "8",
            "--layers",
            "5",
            "--batch-size",
            "32",
        ],
        &[
            "search",
            "--channels",
            "8",
            "--layers",
            "4",
            "--batch-size",
            "16",
            "--order",
            "2",
        ],
        &[
            "train",
            "--channels",
            "8",
            "--layers",
            "5",
            "--batch-size",
            "64",
        ],
        &[
            "train",
            "--channels",
            "12",
            "--layers",
            "6",
            "--batch-size",
            "32",
            "--auxiliary-weight",
            "0",
        ],
        // Deeper than the probes: extrapolated from 8 and 11 layers.
        &[
            "train",
            "--channels",
            "8",
            "--layers",
            "14",
            "--batch-size",
            "32",
        ],
    ];
    for case in cases {
        // Train: the second epoch has drop-path on (it ramps from 0).
        let short: &[&str] = if case[0] == "search" {
            &["--epochs", "1", "--max-steps", "2"]
        } else {
            &["--epochs", "2", "--max-steps", "1"]
        };
        let args: Vec<&str> = case.iter().chain(short).copied().collect();
        let (estimate, peak, _) = estimate_and_peak(&args);
        // A real step at these sizes holds tens of MiB; far less means nothing was measured.
        assert!(peak > 8e6, "darts {}: peak {peak} bytes", args.join(" "));
        let ratio = estimate / peak;
        assert!(
            (0.8..=1.5).contains(&ratio),
            "darts {}: estimate {estimate} vs peak {peak} bytes (ratio {ratio:.3})",
            args.join(" ")
        );
    }
}

#[test]
fn a_deep_network_is_probed_shallow_and_its_weights_come_out_exact() {
    // 14 layers are probed at 8 and 11; the first-order search holds 3 copies (weights,
    // gradient, momentum) of 4 bytes per parameter.
    let args = [
        "search",
        "--channels",
        "6",
        "--layers",
        "14",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "1",
    ];
    let (estimate, peak, r) = estimate_and_peak(&args);
    let weights = r["memory_estimate"]["weights"].as_f64().unwrap();
    let params = r["params"].as_f64().unwrap();
    assert!(
        (weights / (12.0 * params) - 1.0).abs() < 1e-9,
        "{weights} vs {params} params"
    );
    let ratio = estimate / peak;
    assert!((0.8..=1.5).contains(&ratio), "ratio {ratio:.3}");
}

#[test]
fn skipping_the_check_leaves_no_estimate() {
    let args = [
        "search",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--json",
    ];
    let out = darts()
        .args(args)
        .env("DARTS_SKIP_MEMORY_CHECK", "1")
        .output()
        .unwrap();
    let r = json_result(&out, &args);
    assert!(r["memory_estimate"].is_null(), "{r}");
    assert!(r["peak_memory"].as_f64().unwrap() > 0.0);
}

/// Runs `args`, expecting exit code 1 and one line on stderr containing every `expected`
/// piece, within `limit`; returns that line.
fn fails_at_once(args: &[&str], expected: &[&str], limit: Duration) -> String {
    let start = Instant::now();
    let out = darts().args(args).output().unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cmd = format!("darts {}", args.join(" "));
    assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{cmd}: not one line: {stderr}");
    let line = stderr.trim_end().to_string();
    assert!(line.starts_with("error: "), "{cmd}: {line}");
    for piece in expected {
        assert!(line.contains(piece), "{cmd}: {line:?} lacks {piece:?}");
    }
    assert!(took < limit, "{cmd} took {took:?}");
    assert!(out.stdout.is_empty(), "{cmd} printed to stdout");
    line
}

#[test]
fn runs_too_large_for_the_machine_are_one_line_errors() {
    // The probes take well under a second on a quiet machine; the bound leaves room for a
    // loaded one, and is far below the minutes a run would take to fail by itself.
    let limit = Duration::from_secs(20);
    let line = fails_at_once(
        &["search", "--channels", "100000"],
        &[
            "darts search needs about ",
            " TiB (weights ",
            "for --batch-size 32 at 16×16) but ",
            " are available; lower --channels or --layers",
        ],
        limit,
    );
    eprintln!("{line}");
    let line = fails_at_once(
        &["train", "--channels", "100000"],
        &[
            "darts train needs about ",
            "for --batch-size 96 at 16×16",
            "lower --channels or --layers",
        ],
        limit,
    );
    eprintln!("{line}");
    // A batch this large makes the activations the larger part.
    let line = fails_at_once(
        &["search", "--batch-size", "2500", "--channels", "800"],
        &[
            "darts search needs about ",
            "for --batch-size 2500 at 16×16",
            "lower --batch-size, --channels or --layers",
        ],
        limit,
    );
    eprintln!("{line}");
}

#[test]
fn a_batch_larger_than_the_data_is_an_error_before_any_work() {
    let limit = Duration::from_secs(5);
    fails_at_once(
        &["search", "--batch-size", "100000000"],
        &[
            "--batch-size 100000000 is larger than the data: the weights half has 2500 images \
           and the architecture half has 2500 images; use --batch-size 2500 or less",
        ],
        limit,
    );
    fails_at_once(
        &["train", "--batch-size", "100000000"],
        &[
            "--batch-size 100000000 is larger than the data: the training set has 5000 images; \
           use --batch-size 5000 or less",
        ],
        limit,
    );
}

#[test]
fn a_resumed_run_is_checked_too() {
    let dir = tmp("resume");
    let args = [
        "search",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--max-steps",
        "1",
        "--json",
    ];
    let out = darts().args(args).arg("--out").arg(&dir).output().unwrap();
    json_result(&out, &args);
    // The run's saved config, grown past the machine.
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["channels"] = 100_000.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    fails_at_once(
        &["search", "--resume", dir.to_str().unwrap()],
        &["darts search needs about ", "lower --channels or --layers"],
        Duration::from_secs(20),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
