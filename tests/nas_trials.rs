//! Training trials as child processes: `darts nas --space darts` with 2 workers end to end, a
//! killed job resumed without training its finished trials again, `darts hpo` with successive
//! halving, and bad input. Tiny proxy budgets (C = 4, 2 cells, a few steps) on the built-in
//! dataset, so every test runs in CI.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-trials-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn darts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = darts(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Exit code 1 and one line on stderr that contains `want`.
fn fails_with(args: &[&str], want: &str) {
    let out = darts(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(want), "{args:?}: {stderr}");
}

const TINY: [&str; 10] = [
    "--proxy-epochs",
    "1",
    "--max-steps",
    "3",
    "--channels",
    "4",
    "--layers",
    "2",
    "--batch-size",
    "16",
];

/// Trial folders under `dir/trials` whose `results.json` is written.
fn finished(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("trials")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("results.json").exists())
        .collect()
}

/// Runs `darts ARGS` and kills it, with every trial process it started, once `n` trials under
/// `dir/trials` have finished.
fn kill_after(args: &[&str], dir: &Path, n: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(args)
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while finished(dir).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not {n} trials finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The whole group, so that no trial of the killed job goes on writing.
    let group = format!("-{}", child.id());
    Command::new("kill")
        .args(["-9", "--", &group])
        .status()
        .unwrap();
    child.wait().unwrap();
}

#[test]
fn darts_space_evolution_with_two_workers_then_train_the_best() {
    let dir = tmp("evolution");
    let d = dir.to_str().unwrap();
    let base = [
        "nas",
        "--space",
        "darts",
        "--strategy",
        "evolution",
        "--population",
        "2",
        "--sample",
        "1",
        "--budget",
        "4",
        "--workers",
        "2",
        "--out",
        d,
        "--json",
    ];
    let v = ok_json(&[&base[..], &TINY[..]].concat());
    assert_eq!(v["queries"], 4);
    let test = v["best_test_accuracy"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&test), "{v}");
    let best = PathBuf::from(v["best_trial"].as_str().unwrap());
    assert!(best.join("train.jsonl").exists() && best.join("stderr.log").exists());
    let n = finished(&dir).len();
    assert!((1..=4).contains(&n), "{n} trial folders");
    let log = std::fs::read_to_string(dir.join("queries.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    // The strategy saw validation accuracy, not test: the trial's numbers say which is which.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(best.join("results.json")).unwrap()).unwrap();
    let valid = 100.0 * results["valid_accuracy"].as_f64().unwrap();
    assert!((v["per_run"][0]["best_signal"].as_f64().unwrap() - valid).abs() < 1e-3);
    let genotype = best.join("genotype.json");
    let t = ok_json(&[
        "train",
        "--genotype",
        genotype.to_str().unwrap(),
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--channels",
        "4",
        "--layers",
        "2",
        "--json",
    ]);
    assert!(t["test_accuracy"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_job_resumes_without_training_finished_trials_again() {
    let dir = tmp("resume");
    let d = dir.to_str().unwrap();
    let base = [
        "nas",
        "--space",
        "darts",
        "--strategy",
        "random",
        "--budget",
        "6",
        "--workers",
        "1",
        "--out",
        d,
    ];
    kill_after(&[&base[..], &TINY[..]].concat(), &dir, 1);
    let done = finished(&dir);
    assert!(done.len() < 6, "the job ended before it was killed");
    let mtimes: Vec<_> = done
        .iter()
        .map(|p| {
            std::fs::metadata(p.join("results.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let v = ok_json(&["nas", "--resume", d, "--json"]);
    assert_eq!(v["queries"], 6);
    for (p, t) in done.iter().zip(mtimes) {
        let now = std::fs::metadata(p.join("results.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(now, t, "{} was trained again", p.display());
        let attempts = std::fs::read_to_string(p.join("stdout.log")).unwrap();
        assert_eq!(attempts.lines().count(), 1, "{} ran twice", p.display());
    }
    let log = std::fs::read_to_string(dir.join("queries.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_trial_process_is_run_again_not_lost() {
    let dir = tmp("killed-trial");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("killed-once");
    let out = dir.join("run");
    let args = [
        &[
            "nas",
            "--retries",
            "1",
            "--space",
            "darts",
            "--budget",
            "3",
            "--strategy",
            "random",
            "--workers",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ][..],
        &TINY[..],
    ]
    .concat();
    let run = Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(&args)
        .env(darts::nas::strategy::executor::KILL_ONCE_ENV, &marker)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(marker.exists(), "the hook killed no trial");
    // The retry is logged, naming the signal that ended the first attempt.
    let retry = stderr
        .lines()
        .find(|l| l.contains("running it again"))
        .unwrap_or_else(|| panic!("no retry logged: {stderr}"));
    assert!(retry.contains("SIGKILL"), "{retry}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&run.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["queries"], 3);
    // Every queried arch has its finished trial: the killed one was trained again.
    let log = std::fs::read_to_string(out.join("queries.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    let trials = finished(&out);
    assert_eq!(trials.len(), v["distinct_archs"].as_u64().unwrap() as usize);
    let killed: Vec<&PathBuf> = trials
        .iter()
        .filter(|p| retry.contains(p.to_str().unwrap()))
        .collect();
    assert_eq!(killed.len(), 1, "{retry}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed[0].join("results.json")).unwrap())
            .unwrap();
    assert!(results["valid_accuracy"].as_f64().is_some(), "{results}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A `darts hpo` job of 6 tiny trials on `workers` workers, rungs of 1 and 3 epochs: its
/// arguments (the space file written into `dir`) and its folder `dir/run`.
fn hpo_job(dir: &Path, workers: &str) -> (Vec<String>, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let space = dir.join("space.json");
    std::fs::write(
        &space,
        r#"{"channels": {"type": "choice", "values": [4]},
            "layers": {"type": "choice", "values": [2]},
            "batch_size": {"type": "choice", "values": [16, 32]}}"#,
    )
    .unwrap();
    let out = dir.join("run");
    let args = [
        "hpo",
        "--budget",
        "6",
        "--workers",
        workers,
        "--proxy-epochs",
        "3",
        "--grace-period",
        "1",
        "--reduction-factor",
        "3",
        "--max-steps",
        "3",
        "--space-file",
        space.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    (args.iter().map(|s| s.to_string()).collect(), out)
}

#[test]
fn a_killed_hpo_job_resumes_without_training_finished_trials_again() {
    let dir = tmp("hpo-resume");
    let (args, out) = hpo_job(&dir, "1");
    let o = out.to_str().unwrap();
    kill_after(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &out,
        2,
    );
    assert!(
        !out.join("hpo.jsonl").exists(),
        "the job ended before it was killed"
    );
    // Each `darts train` a trial ran wrote one line to its stdout.log.
    let runs_of = |p: &Path| {
        std::fs::read_to_string(p.join("stdout.log"))
            .unwrap()
            .lines()
            .count()
    };
    let done: Vec<(PathBuf, String)> = finished(&out)
        .into_iter()
        .map(|p| {
            let first = std::fs::read_to_string(p.join("stdout.log")).unwrap();
            (p, first)
        })
        .collect();
    // The saved job decides; a flag that would change it is a usage error.
    let clash = darts(&["hpo", "--resume", o, "--budget", "3"]);
    assert_eq!(clash.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("cannot be used with"));
    let v = ok_json(&["hpo", "--resume", o, "--json"]);
    assert_eq!(v["trials"], 6);
    let lines = std::fs::read_to_string(out.join("hpo.jsonl")).unwrap();
    let rungs: Vec<(PathBuf, usize)> = lines
        .lines()
        .map(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap();
            let dir = PathBuf::from(l["dir"].as_str().unwrap());
            (dir, l["rungs"].as_array().unwrap().len())
        })
        .collect();
    for (p, before) in done {
        // Trained once per rung it reached, and its first runs are the ones before the kill.
        let (_, reached) = rungs
            .iter()
            .find(|(d, _)| d.canonicalize().unwrap() == p.canonicalize().unwrap())
            .unwrap_or_else(|| panic!("{} is no trial of the job", p.display()));
        assert_eq!(runs_of(&p), *reached, "{} was trained again", p.display());
        let now = std::fs::read_to_string(p.join("stdout.log")).unwrap();
        assert!(now.starts_with(&before), "{}", p.display());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hpo_stops_most_trials_early_and_writes_a_config_train_accepts() {
    let dir = tmp("hpo");
    let (args, out) = hpo_job(&dir, "2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = ok_json(&[&args[..], &["--json"]].concat());
    assert_eq!(v["trials"], 6);
    let stopped = v["stopped_early"].as_u64().unwrap();
    assert!(stopped >= 3, "{v}");
    assert!(v["default_valid_accuracy"].as_f64().is_some());
    let lines = std::fs::read_to_string(out.join("hpo.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    for line in lines.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        // A stopped trial keeps its folder and the log of the epochs it trained.
        let log = Path::new(l["dir"].as_str().unwrap()).join("train.jsonl");
        let epochs = std::fs::read_to_string(log).unwrap().lines().count();
        let want = if l["stopped_early"] == true { 1 } else { 3 };
        assert_eq!(epochs, want, "{l}");
    }
    let best = out.join("best_config.json");
    let t = ok_json(&[
        "train",
        "--config",
        best.to_str().unwrap(),
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--json",
    ]);
    assert!(t["test_accuracy"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.join("run");
    let d = d.to_str().unwrap();
    for (text, want) in [
        (
            r#"{"lr": {"type": "log_uniform", "low": 0.1, "high": 0.01}}"#,
            "entry `lr`: empty or inverted range",
        ),
        (
            r#"{"drop_path": {"type": "uniform", "low": 0.2, "high": 0.2}}"#,
            "entry `drop_path`: empty or inverted range",
        ),
        (
            r#"{"batch_size": {"type": "choice", "values": []}}"#,
            "entry `batch_size`: an empty choice",
        ),
        (
            r#"{"momentum": {"type": "uniform", "low": 0.1, "high": 0.9}}"#,
            "unknown entry `momentum`",
        ),
    ] {
        let file = dir.join("space.json");
        std::fs::write(&file, text).unwrap();
        fails_with(
            &["hpo", "--space-file", file.to_str().unwrap(), "--out", d],
            want,
        );
    }
    fails_with(&["hpo", "--budget", "0", "--out", d], "--budget");
    fails_with(
        &["nas", "--space", "darts", "--budget", "0", "--out", d],
        "--budget must be at least 1",
    );
    fails_with(
        &["nas", "--space", "darts", "--evaluator", "table"],
        "--space darts has no table",
    );
    fails_with(&["nas", "--space", "darts"], "need --out");
    let _ = std::fs::remove_dir_all(dir);
}
