//! `darts prune` end to end on the built-in dataset: a briefly trained DARTS network pruned to
//! half its MACs and fine-tuned for a few steps is a run folder that `darts eval` and
//! `darts export --check` accept; magnitude pruning keeps its zeros through fine-tuning; bad
//! input is a one-line error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn darts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_darts"));
    c.stdin(Stdio::null());
    c
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-prune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary, asserting success; returns the last stdout line as JSON.
fn ok(args: &[&str]) -> serde_json::Value {
    let out = darts().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "darts {args:?} failed: {err}");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Fails with one error line naming `needle` (progress lines may come before it on stderr).
fn fails_with(args: &[&str], needle: &str) {
    let out = darts().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert_eq!(err.matches("error").count(), 1, "{args:?}: {err}");
}

/// DARTS_V2 at 4 channels and 3 cells, 4 steps on the built-in dataset.
fn trained(name: &str) -> PathBuf {
    let run = tmp(name);
    ok(&[
        "train",
        "--genotype",
        "DARTS_V2",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--max-steps",
        "4",
        "--threads",
        "2",
        "--out",
        s(&run),
        "--json",
    ]);
    run
}

const FAST: &[&str] = &["--max-steps", "2", "--runs", "10", "--json"];

fn prune(run: &Path, out: &Path, how: &[&str]) -> serde_json::Value {
    let args = [
        &["prune", "--checkpoint", s(run), "--out", s(out)],
        how,
        FAST,
    ]
    .concat();
    ok(&args)
}

#[test]
fn channel_pruning_halves_the_macs_and_the_folder_is_a_normal_run() {
    let run = trained("src");
    let out = tmp("half");
    let r = prune(&run, &out, &["--macs-target", "0.5"]);
    let (before, after) = (&r["before"], &r["after"]);
    for m in [before, after] {
        for key in ["params", "macs", "test_accuracy"] {
            assert!(m.get(key).is_some(), "missing {key} in {m}");
        }
    }
    let macs = |m: &serde_json::Value| m["macs"].as_f64().unwrap();
    assert!(macs(after) <= 0.5 * macs(before), "{r}");
    assert!(
        macs(after) >= 0.35 * macs(before),
        "the bisection stopped short: {r}"
    );
    assert!(after["params"].as_u64() < before["params"].as_u64());
    assert!(r["latency"]["batch64_speedup"].as_f64().unwrap() > 0.0);

    // The pruned folder: eval measures what prune reported, export writes a checked model.
    let eval = ok(&["eval", "--checkpoint", s(&out), "--json"]);
    let top1 = eval["top1"].as_f64().unwrap();
    let reported = after["test_accuracy"].as_f64().unwrap();
    assert!(
        (top1 - reported).abs() < 0.01,
        "eval {top1} vs prune {reported}"
    );
    let onnx = out.join("model.onnx");
    let exported = ok(&[
        "export",
        "--checkpoint",
        s(&out),
        "--out",
        s(&onnx),
        "--check",
        "--json",
    ]);
    let params = exported["check"]["parameters"].as_u64().unwrap();
    assert!(params < before["params"].as_u64().unwrap(), "{exported}");
    fails_with(
        &["export", "--checkpoint", s(&out), "--format", "torch"],
        "--format onnx",
    );

    // A finished run resumed with the same flags is only measured again; other flags are refused.
    let again = prune(&run, &out, &["--macs-target", "0.5", "--resume"]);
    assert_eq!(again["after"]["test_accuracy"], after["test_accuracy"]);
    fails_with(
        &[
            &["prune", "--checkpoint", s(&run), "--out", s(&out)][..],
            &["--sparsity", "0.3", "--resume"],
        ]
        .concat(),
        "another pruning",
    );
    // A pruned folder is not pruned again, and a plan of another analysis is named.
    fails_with(
        &[
            "prune",
            "--checkpoint",
            s(&out),
            "--out",
            s(&tmp("twice")),
            "--sparsity",
            "0.5",
        ],
        "already pruned",
    );
    let config = out.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["prune"]["units"] = serde_json::json!(7);
    std::fs::write(&config, v.to_string()).unwrap();
    fails_with(&["eval", "--checkpoint", s(&out)], "another version");
    for d in [&run, &out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn uniform_and_global_allocations_and_a_distilled_fine_tuning() {
    let run = trained("alloc-src");
    let (uniform, global) = (tmp("uniform"), tmp("global"));
    let u = prune(
        &run,
        &uniform,
        &["--macs-target", "0.5", "--allocation", "uniform"],
    );
    assert_eq!(u["allocation"], "uniform");
    assert!(u["keep_ratio"].as_f64().unwrap() < 1.0, "{u}");
    let how = [
        "--macs-target",
        "0.6",
        "--allocation",
        "global",
        "--min-keep",
        "0.4",
        "--distill",
        "3",
    ];
    let g = prune(&run, &global, &how);
    assert_eq!(g["allocation"], "global");
    assert_eq!(g["min_keep"], 0.4);
    assert!(g["keep_ratio"].is_null(), "{g}");
    assert_eq!(g["distill"]["temperature"], 3.0);
    assert_eq!(g["distill"]["weight"], 0.5);
    let macs = |r: &serde_json::Value, m: &str| r[m]["macs"].as_f64().unwrap();
    for (r, target) in [(&u, 0.5), (&g, 0.6)] {
        assert!(macs(r, "after") <= target * macs(r, "before"), "{r}");
        assert!(
            macs(r, "after") > (target - 0.15) * macs(r, "before"),
            "{r}"
        );
    }
    // The recipe, teacher included, is the pruned run's: resuming it asks for the same one.
    let config = std::fs::read_to_string(global.join("config.json")).unwrap();
    assert!(config.contains("\"teacher\""), "{config}");
    let again = prune(&run, &global, &[&how[..], &["--resume"]].concat());
    assert_eq!(again["after"]["test_accuracy"], g["after"]["test_accuracy"]);
    ok(&["eval", "--checkpoint", s(&global), "--json"]);
    for d in [&run, &uniform, &global] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn magnitude_pruning_keeps_its_zeros_and_the_dense_macs() {
    let run = trained("mag-src");
    let out = tmp("mag");
    let r = prune(&run, &out, &["--method", "magnitude", "--sparsity", "0.5"]);
    let sparsity = r["weight_sparsity"].as_f64().unwrap();
    assert!(
        (sparsity - 0.5).abs() < 0.01,
        "fine-tuning lost the mask: {r}"
    );
    assert_eq!(r["after"]["macs"], r["before"]["macs"]);
    assert_eq!(r["after"]["params"], r["before"]["params"]);
    assert!(r["after"]["nonzero_params"].as_u64() < r["before"]["nonzero_params"].as_u64());
    ok(&["eval", "--checkpoint", s(&out), "--json"]);
    for d in [&run, &out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    let run = trained("bad");
    let out = tmp("bad-out");
    let base = ["prune", "--checkpoint", s(&run), "--out", s(&out)];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    for bad in ["0", "1", "1.5", "-0.2"] {
        fails_with(
            &with(&base, &["--sparsity", bad]),
            "--sparsity must be strictly between 0 and 1",
        );
    }
    fails_with(
        &with(&base, &["--macs-target", "1.2"]),
        "--macs-target must be in (0, 1]",
    );
    for allocation in ["uniform", "global"] {
        fails_with(
            &with(
                &base,
                &["--macs-target", "0.001", "--allocation", allocation],
            ),
            "cannot be reached",
        );
    }
    fails_with(&with(&base, &[]), "--sparsity S or --macs-target F");
    for (allocation, keep, message) in [
        ("uniform", "0.3", "global allocation's floor"),
        ("global", "1.5", "--min-keep must be in (0, 1]"),
    ] {
        let how = [
            "--macs-target",
            "0.5",
            "--allocation",
            allocation,
            "--min-keep",
            keep,
        ];
        fails_with(&with(&base, &how), message);
    }
    fails_with(
        &with(&base, &["--macs-target", "0.5", "--distill", "0"]),
        "distill",
    );
    fails_with(
        &with(&base, &["--method", "magnitude", "--macs-target", "0.5"]),
        "needs --sparsity",
    );
    // A search folder is not a trained network.
    let search = tmp("search");
    std::fs::create_dir_all(&search).unwrap();
    std::fs::write(
        search.join("config.json"),
        r#"{"space": "darts", "epochs": 3}"#,
    )
    .unwrap();
    std::fs::copy(
        run.join("model.safetensors"),
        search.join("model.safetensors"),
    )
    .unwrap();
    fails_with(
        &[
            "prune",
            "--checkpoint",
            s(&search),
            "--out",
            s(&out),
            "--sparsity",
            "0.5",
        ],
        "not a darts training config",
    );
    for d in [&run, &search] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
