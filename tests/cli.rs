//! The `darts` binary end to end: determinism, kill-and-resume, and clean errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn darts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_darts"));
    c.stdin(Stdio::null());
    c
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A tiny search: 4 channels, 3 cells, 3 epochs of 3 steps on the built-in dataset.
const TINY: &[&str] = &[
    "search",
    "--channels",
    "4",
    "--layers",
    "3",
    "--batch-size",
    "16",
    "--epochs",
    "3",
    "--max-steps",
    "3",
    "--threads",
    "2",
    "--seed",
    "5",
];

fn search(out: &Path) -> std::process::Output {
    darts()
        .args(TINY)
        .arg("--out")
        .arg(out)
        .arg("--json")
        .output()
        .unwrap()
}

/// search.jsonl without the wall-clock fields.
fn log_without_timings(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("search.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Starts `args` (a run of `epochs` epochs) writing to `dir`, waits for the first epoch's line
/// in `log` and its `checkpoint` file, then kills the process with SIGKILL at once. Returns the
/// epochs logged at the kill, and fails unless the kill really landed mid-run (a run that had
/// already ended would make the resume test prove nothing).
fn kill_after_first_checkpoint(
    args: &[&str],
    dir: &Path,
    log: &str,
    checkpoint: &str,
    epochs: usize,
) -> usize {
    let mut child = darts()
        .args(args)
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(&dir.join(log)) < 1 || !dir.join(checkpoint).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "first epoch never finished"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run exited before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let at_kill = lines(&dir.join(log));
    assert!(
        !status.success() && at_kill < epochs,
        "not killed mid-run: {status}, {at_kill} of {epochs} epochs logged"
    );
    at_kill
}

#[test]
fn search_is_deterministic_and_resumes_after_sigkill() {
    let (a, b) = (tmp("a"), tmp("b"));
    let out = search(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    for key in [
        "genotype",
        "genotype_text",
        "val_accuracy",
        "epochs",
        "seconds",
        "params",
    ] {
        assert!(result.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(result["epochs"], 3);

    // Same seed and threads, killed during epoch 2, then resumed.
    let lines_at_kill =
        kill_after_first_checkpoint(TINY, &b, "search.jsonl", "checkpoint.safetensors", 3);
    let resumed = darts()
        .arg("search")
        .arg("--resume")
        .arg(&b)
        .arg("--threads")
        .arg("2")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    eprintln!("killed after {lines_at_kill} epoch(s)");

    assert_eq!(
        log_without_timings(&a),
        log_without_timings(&b),
        "resumed run differs from uninterrupted one"
    );
    for f in ["genotype.json", "genotype.txt"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

fn fails_with(args: &[&str], needle: &str) {
    let out = darts().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?}: expected a one-line error, got: {err}"
    );
}

#[test]
fn bad_input_is_a_one_line_error() {
    fails_with(
        &["search", "--primitives", "sep_conv_3x3,conv_9x9"],
        "conv_9x9",
    );
    fails_with(
        &["search", "--channels", "0"],
        "--channels must be at least 1",
    );
    fails_with(&["search", "--channels", "5"], "even");
    fails_with(&["search", "--epochs", "-3"], "-3");
    fails_with(&["search", "--dataset", "imagenet"], "imagenet");
    fails_with(
        &["train", "--batch-size", "0"],
        "--batch-size must be at least 1",
    );
    fails_with(
        &[
            "search",
            "--dataset",
            "mnist",
            "--data-dir",
            "/nonexistent/dir",
        ],
        "/nonexistent/dir",
    );
    fails_with(
        &["search", "--resume", "/nonexistent/run"],
        "/nonexistent/run",
    );
    fails_with(&["genotype", "show", "NOT_A_GENOTYPE"], "NOT_A_GENOTYPE");
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let g = dir.join("g.txt");
    std::fs::write(
        &g,
        "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce=",
    )
    .unwrap();
    fails_with(&["genotype", "show", g.to_str().unwrap()], "g.txt");
    // A corrupt MNIST file is named in the error.
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(mnist.join(f), b"\x00\x00\x08\x03garbage").unwrap();
    }
    fails_with(
        &[
            "search",
            "--dataset",
            "mnist",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "train-images-idx3-ubyte",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every hyper-parameter out of range, on both commands: one line naming the flag, exit 1.
#[test]
fn out_of_range_hyperparameters_name_their_flag() {
    let cases: &[(&str, &str, &str)] = &[
        ("grad-clip", "-1", "--grad-clip must be finite and above 0"),
        ("grad-clip", "nan", "--grad-clip must be finite and above 0"),
        ("grad-clip", "inf", "--grad-clip must be finite and above 0"),
        ("lr", "0", "--lr must be finite and above 0"),
        ("lr", "-0.1", "--lr must be finite and above 0"),
        ("momentum", "1", "--momentum must be in [0, 1)"),
        ("momentum", "-0.5", "--momentum must be in [0, 1)"),
        (
            "weight-decay",
            "-1",
            "--weight-decay must be finite and at least 0",
        ),
        ("max-steps", "0", "--max-steps must be at least 1"),
    ];
    for cmd in ["search", "train"] {
        for (flag, value, needle) in cases {
            fails_with(&[cmd, &format!("--{flag}"), value], needle);
        }
    }
    for (args, needle) in [
        (
            &["search", "--lr-min", "-0.1"][..],
            "--lr-min must be finite and at least 0",
        ),
        (
            &["search", "--lr-min", "0.5"],
            "--lr-min must be at most --lr (0.025)",
        ),
        (
            &["search", "--arch-lr", "0"],
            "--arch-lr must be finite and above 0",
        ),
        (
            &["search", "--arch-weight-decay", "-1"],
            "--arch-weight-decay",
        ),
        (
            &["search", "--train-portion", "1"],
            "--train-portion must be strictly between",
        ),
        (
            &["train", "--drop-path", "1"],
            "--drop-path must be in [0, 1)",
        ),
        (
            &["train", "--auxiliary-weight", "-1"],
            "--auxiliary-weight must be finite",
        ),
        (
            &["search", "--data-dir", "/tmp"],
            "the built-in dataset is generated",
        ),
        (
            &["eval", "--checkpoint", "/nonexistent/run"],
            "/nonexistent/run",
        ),
    ] {
        fails_with(args, needle);
    }
}

/// `--resume` takes the run's config.json: other flags are an error naming them, and a
/// config.json edited out of range is checked like flags are.
#[test]
fn resume_rejects_flags_it_would_ignore_and_validates_the_saved_config() {
    fails_with(
        &[
            "search",
            "--resume",
            "/nonexistent/run",
            "--epochs",
            "9",
            "--lr",
            "0.1",
        ],
        "would override --epochs, --lr",
    );
    fails_with(
        &["train", "--resume", "/nonexistent/run", "--seed", "1"],
        "would override --seed",
    );
    let dir = tmp("resume-config");
    let out = darts()
        .args([
            "search",
            "--channels",
            "2",
            "--layers",
            "2",
            "--batch-size",
            "4",
        ])
        .args([
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["momentum"] = serde_json::json!(1.5);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let d = dir.to_str().unwrap();
    fails_with(&["search", "--resume", d, "--threads", "2"], "config.json");
    fails_with(
        &["search", "--resume", d],
        "--momentum must be in [0, 1) (got 1.5)",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn genotype_show_prints_darts_text_and_json() {
    let out = darts()
        .args(["genotype", "show", "DARTS_V2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Genotype(normal=[('sep_conv_3x3', 0)")
    );
    let out = darts()
        .args(["genotype", "show", "DARTS_V1", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["normal_concat"], serde_json::json!([2, 3, 4, 5]));
}

const TINY_TRAIN: &[&str] = &[
    "train",
    "--genotype",
    "DARTS_V1",
    "--channels",
    "4",
    "--layers",
    "3",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--max-steps",
    "4",
    "--threads",
    "2",
    "--seed",
    "3",
];

#[test]
fn training_resumes_bit_identically_and_eval_reproduces_its_accuracy() {
    let (a, b) = (tmp("train-a"), tmp("train-b"));
    let out = darts()
        .args(TINY_TRAIN)
        .arg("--out")
        .arg(&a)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    for key in ["test_accuracy", "params", "macs", "epochs", "seconds"] {
        assert!(result.get(key).is_some(), "missing {key}");
    }

    let lines_at_kill =
        kill_after_first_checkpoint(TINY_TRAIN, &b, "train.jsonl", "train_state.safetensors", 3);
    let resumed = darts()
        .args(["train", "--threads", "2", "--resume"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    eprintln!("killed after {lines_at_kill} epoch(s)");
    assert_eq!(lines(&b.join("train.jsonl")), 3);
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
        "resumed training ended with other weights"
    );

    let eval = darts()
        .args(["eval", "--json", "--checkpoint"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&eval.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["top1"], result["test_accuracy"],
        "eval disagrees with training's own test accuracy"
    );
    assert_eq!(report["confusion"].as_array().unwrap().len(), 10);

    // Another genotype's config over these weights, and a torn weights file: clear errors.
    let cfg = std::fs::read_to_string(a.join("config.json")).unwrap();
    let v2 = darts()
        .args(["genotype", "show", "DARTS_V2", "--json"])
        .output()
        .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    cfg["genotype"] = serde_json::from_slice(&v2.stdout).unwrap();
    std::fs::write(b.join("config.json"), cfg.to_string()).unwrap();
    let a_dir = a.to_str().unwrap().to_string();
    let b_dir = b.to_str().unwrap().to_string();
    std::fs::copy(a.join("model.safetensors"), b.join("model.safetensors")).unwrap();
    fails_with(&["eval", "--checkpoint", &b_dir], "model.safetensors");
    let bytes = std::fs::read(a.join("model.safetensors")).unwrap();
    std::fs::write(a.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["eval", "--checkpoint", &a_dir], "model.safetensors");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}
