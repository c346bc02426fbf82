//! The whole pipeline through the binary with `--device cuda` (the real GPU, or the emulator
//! when there is none): a search finds the CPU's genotype for the same seed, and a GPU-trained
//! checkpoint evaluates on the CPU to the accuracy the GPU reported.

use std::process::Command;

use crate::common::ready;

fn darts(args: &[&str]) -> serde_json::Value {
    // DARTS_BIN: the binary beside a test executable that was built elsewhere (the GPU kit).
    let bin = std::env::var("DARTS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_darts").into());
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--json");
    if darts::device::cuda::emulator_requested() {
        cmd.env("DARTS_CUDA_EMULATOR", "1");
    }
    let out = cmd.output().expect("running darts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "darts {args:?} failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

#[test]
fn search_on_the_gpu_finds_the_cpu_genotype() {
    if !ready() {
        return;
    }
    let args = [
        "search",
        "--channels",
        "2",
        "--layers",
        "3",
        "--batch-size",
        "8",
        "--epochs",
        "1",
    ];
    let more = ["--max-steps", "3", "--seed", "5", "--threads", "1"];
    let run = |device: &str| darts(&[&args[..], &more[..], &["--device", device]].concat());
    let (gpu, cpu) = (run("cuda"), run("cpu"));
    assert_eq!(gpu["genotype"], cpu["genotype"], "genotypes differ");
    let (a, b) = (
        gpu["val_loss"].as_f64().unwrap(),
        cpu["val_loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-3 * b.abs(),
        "validation loss {a} on the GPU, {b} on the CPU"
    );
}

#[test]
fn a_gpu_trained_checkpoint_evaluates_on_the_cpu() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("darts-e2e-cuda-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let train = darts(&[
        "train",
        "--genotype",
        "DARTS_V2",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--device",
        "cuda",
        "--out",
        d,
    ]);
    let eval = darts(&["eval", "--checkpoint", d]);
    let (a, b) = (
        train["test_accuracy"].as_f64().unwrap(),
        eval["top1"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-6,
        "GPU run reported {a}, CPU evaluation {b}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
