//! `darts nas` on the NAS-Bench-201 table: every strategy runs and is deterministic by seed,
//! regularised evolution beats random search, a resumed job equals an uninterrupted one, and
//! bad input is a one-line error.

use std::path::{Path, PathBuf};
use std::process::Command;

use darts::bench201::TABLE_FILE;
use darts::nas::space::Space;
use darts::nas::strategy::log::{LOG, RESULT};
use darts::nas::strategy::run::{run, BudgetKind, NasConfig, NasResult};
use darts::nas::strategy::{StrategyKind, StrategyParams};

/// The real table, or `None` (the test skips) on a fresh clone without it.
fn table() -> Option<PathBuf> {
    darts::data::test_data(TABLE_FILE).map(|d| d.join(TABLE_FILE))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-nas-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(
    table: &Path,
    strategy: StrategyKind,
    budget: usize,
    runs: usize,
    seed: u64,
) -> NasConfig {
    NasConfig {
        strategy,
        space: Space::Nb201,
        budget: Some(budget),
        time: None,
        runs,
        seed,
        signal: "cifar10_valid".into(),
        test: "cifar10_test".into(),
        benchmark: Some(table.to_path_buf()),
        trial: None,
        workers: 1,
        params: StrategyParams::default(),
    }
}

const ALL: [StrategyKind; 5] = [
    StrategyKind::Random,
    StrategyKind::Evolution,
    StrategyKind::Bo,
    StrategyKind::Rl,
    StrategyKind::Tpe,
];

/// The result without its wall times, for comparing two runs.
fn timeless(mut r: NasResult) -> NasResult {
    r.seconds = 0.0;
    for run in &mut r.per_run {
        run.seconds = 0.0;
    }
    r
}

#[test]
fn every_strategy_searches_the_table_and_repeats_by_seed() {
    let Some(t) = table() else { return };
    for kind in ALL {
        let cfg = config(&t, kind, 60, 3, 7);
        let a = run(&cfg, None, false).unwrap();
        assert_eq!(a.queries, 180);
        assert_eq!(a.per_run.len(), 3);
        for r in &a.per_run {
            assert_eq!(r.curve.len(), 60);
            // The curve is the test accuracy of the best-by-signal arch so far: it ends at the
            // chosen arch's.
            assert_eq!(*r.curve.last().unwrap(), r.test_accuracy);
            assert!(
                r.best_signal > 85.0 && r.test_accuracy > 88.0,
                "{kind}: {r:?}"
            );
        }
        let b = run(&cfg, None, false).unwrap();
        assert_eq!(
            timeless(a.clone()),
            timeless(b),
            "{kind} is not deterministic"
        );
        let other = run(&config(&t, kind, 60, 3, 8), None, false).unwrap();
        assert_ne!(a.per_run, other.per_run, "{kind} ignores the seed");
    }
}

#[test]
fn evolution_and_tpe_beat_random_search() {
    let Some(t) = table() else { return };
    let mean = |kind| {
        run(&config(&t, kind, 150, 20, 1), None, false)
            .unwrap()
            .mean_test_accuracy
    };
    let rs = mean(StrategyKind::Random);
    for kind in [StrategyKind::Evolution, StrategyKind::Tpe] {
        let m = mean(kind);
        assert!(m > rs, "{kind} {m:.3} vs random {rs:.3}");
    }
}

/// The log's lines sorted by (run, query), as text, without their wall times.
fn log_lines(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(LOG)).unwrap();
    let mut lines: Vec<(u64, u64, String)> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["seconds"] = 0.into();
            (
                v["run"].as_u64().unwrap(),
                v["query"].as_u64().unwrap(),
                v.to_string(),
            )
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|l| l.2).collect()
}

#[test]
fn a_resumed_job_equals_the_uninterrupted_one() {
    let Some(t) = table() else { return };
    for kind in ALL {
        let full_dir = tmp(&format!("full-{kind}"));
        let cfg = config(&t, kind, 120, 2, 3);
        let full = run(&cfg, Some(&full_dir), false).unwrap();

        // "Killed" after 73 queries: a job of budget 73 leaves checkpoints at 50 and 73; then
        // run 1 loses its lines from query 61 on (so its checkpoint at 73 is ahead of the log and
        // must be ignored), and the log ends in a torn line.
        let dir = tmp(&format!("killed-{kind}"));
        run(&config(&t, kind, 73, 2, 3), Some(&dir), false).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string(&cfg).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(dir.join(RESULT)).unwrap();
        let kept: String = std::fs::read_to_string(dir.join(LOG))
            .unwrap()
            .lines()
            .filter(|l| {
                !(l.contains("\"run\":1,") && {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["query"].as_u64().unwrap() >= 61
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join(LOG), kept + "{\"run\":0,\"que").unwrap();

        let resumed = run(&cfg, Some(&dir), true).unwrap();
        assert_eq!(timeless(resumed), timeless(full), "{kind}");
        assert_eq!(log_lines(&dir), log_lines(&full_dir), "{kind}");
        let saved: NasResult =
            serde_json::from_str(&std::fs::read_to_string(dir.join(RESULT)).unwrap()).unwrap();
        assert_eq!(saved.per_run.len(), 2);
        for d in [dir, full_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Run `run`'s lines of a job folder's log, in query order.
fn run_lines(dir: &Path, run: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(LOG)).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["run"] == run)
        .collect();
    lines.sort_by_key(|v| v["query"].as_u64());
    lines
}

/// Under a time budget, query q started only while the run's clock (at query q - 1's end)
/// was below the budget, and the last query ended past it.
fn check_stopped_in_time(lines: &[serde_json::Value], time: f64) {
    let secs: Vec<f64> = lines
        .iter()
        .map(|l| l["seconds"].as_f64().unwrap())
        .collect();
    let (last, before) = secs.split_last().unwrap();
    assert!(*last >= time, "stopped early at {last} s");
    assert!(
        before.iter().all(|&s| s < time),
        "a query started after the budget"
    );
    assert!(secs.windows(2).all(|w| w[0] <= w[1]), "the clock went back");
}

#[test]
fn a_time_budget_stops_in_time_and_resumes_with_the_time_left() {
    let Some(t) = table() else { return };
    let time = 0.25;
    for kind in [StrategyKind::Evolution, StrategyKind::Bo] {
        let cfg = NasConfig {
            budget: None,
            time: Some(time),
            ..config(&t, kind, 1, 2, 5)
        };
        let dir = tmp(&format!("time-{kind}"));
        let full = run(&cfg, Some(&dir), false).unwrap();
        assert_eq!(full.budget_kind, BudgetKind::Seconds);
        let mut counts = Vec::new();
        for r in 0..2 {
            let lines = run_lines(&dir, r);
            check_stopped_in_time(&lines, time);
            let run = &full.per_run[r as usize];
            assert_eq!(run.curve.len(), lines.len());
            assert_eq!(
                run.seconds,
                lines.last().unwrap()["seconds"].as_f64().unwrap()
            );
            counts.push(lines.len());
        }
        assert!(counts.iter().all(|&n| n >= 2), "{kind}: {counts:?}");
        assert_eq!(full.queries, counts.iter().sum::<usize>());
        assert_eq!(full.mean_curve.len(), *counts.iter().max().unwrap());

        // A finished job resumed makes no query more.
        std::fs::remove_file(dir.join(RESULT)).unwrap();
        let again = run(&cfg, Some(&dir), true).unwrap();
        assert_eq!(timeless(again), timeless(full.clone()), "{kind}");

        // Killed half-way through run 0: the resumed run replays the first half and then
        // spends only the time that was left.
        let half = counts[0] / 2;
        let kept: String = std::fs::read_to_string(dir.join(LOG))
            .unwrap()
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["run"] == 1 || v["query"].as_u64().unwrap() < half as u64
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join(LOG), kept).unwrap();
        std::fs::remove_file(dir.join(RESULT)).unwrap();
        let before = run_lines(&dir, 0);
        let resumed = run(&cfg, Some(&dir), true).unwrap();
        let after = run_lines(&dir, 0);
        assert_eq!(
            after[..half],
            before[..],
            "{kind}: the logged queries changed"
        );
        assert!(after.len() > half, "{kind}: no query after the resume");
        check_stopped_in_time(&after, time);
        assert_eq!(
            run_lines(&dir, 1).len(),
            counts[1],
            "{kind}: run 1 queried again"
        );
        assert_eq!(resumed.per_run[1], full.per_run[1]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_folder_of_another_job_is_refused() {
    let Some(t) = table() else { return };
    let dir = tmp("other");
    let cfg = config(&t, StrategyKind::Random, 20, 1, 1);
    run(&cfg, Some(&dir), false).unwrap();
    let other = config(&t, StrategyKind::Random, 20, 1, 2);
    let err = run(&other, Some(&dir), true).unwrap_err();
    assert!(err.to_string().contains("holds another job"), "{err}");
    // A log edited behind the job's back: replaying it asks something else at that query.
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let log = std::fs::read_to_string(dir.join(LOG)).unwrap();
    let mut lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = lines[5]["choices"][0].as_u64().unwrap();
    lines[5]["choices"][0] = ((c + 1) % 5).into();
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.join(LOG), text).unwrap();
    let err = run(&cfg, Some(&dir), true).unwrap_err();
    assert!(err.to_string().contains("run 0 query 5"), "{err}");
    assert!(
        err.to_string().contains("the log is not this job's"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn darts(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(args)
        .output()
        .unwrap()
}

/// Exit code 1 and one line on stderr that contains `want`.
fn fails_with(args: &[&str], want: &str) {
    let out = darts(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(want), "{args:?}: {stderr}");
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let Some(t) = table() else { return };
    let t = t.to_str().unwrap();
    let cases = [
        (["--budget", "0"], "--budget must be at least 1"),
        (
            ["--strategy", "annealing"],
            "unknown --strategy `annealing`; expected one of random, evolution, bo, rl, tpe",
        ),
        (
            ["--signal", "cifar10_valid_7ep"],
            "has no column `cifar10_valid_7ep`",
        ),
        (["--crossover", "1.5"], "--crossover is a probability"),
    ];
    for (flags, want) in cases {
        fails_with(&[&["nas", "--benchmark", t], &flags[..]].concat(), want);
    }
    fails_with(
        &["nas", "--benchmark", t, "--budget", "10", "--time", "5"],
        "give --budget (queries) or --time (seconds) per run, not both",
    );
    for time in ["0", "-3", "nan"] {
        fails_with(
            &["nas", "--benchmark", t, "--time", time],
            "--time must be a positive number of seconds",
        );
    }
    // A table without the 12-epoch column, asked for protocol B.
    let dir = tmp("columns");
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("small.csv");
    let text = std::fs::read_to_string(t).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != "cifar10_valid_12ep")
        .collect();
    let cut: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",") + "\n"
        })
        .collect();
    std::fs::write(&small, cut).unwrap();
    fails_with(
        &[
            "nas",
            "--benchmark",
            small.to_str().unwrap(),
            "--signal",
            "cifar10_valid_12ep",
        ],
        "has no column `cifar10_valid_12ep`",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_json_line_holds_the_summary() {
    let Some(t) = table() else { return };
    let out = darts(&[
        "nas",
        "--benchmark",
        t.to_str().unwrap(),
        "--strategy",
        "evolution",
        "--budget",
        "50",
        "--runs",
        "4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in [
        "best_arch",
        "mean_test_accuracy",
        "std_test_accuracy",
        "queries",
        "seconds",
        "budget_kind",
    ] {
        assert!(!v[key].is_null(), "{key} missing: {v}");
    }
    assert_eq!(v["queries"], 200);
    assert_eq!(v["budget_kind"], "queries");
    let mean = v["mean_test_accuracy"].as_f64().unwrap();
    assert!((85.0..=94.38).contains(&mean), "{mean}");
}

fn ok(args: &[&str]) -> String {
    let out = darts(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn count(text: &str, pat: &str) -> usize {
    text.matches(pat).count()
}

#[test]
fn report_draws_two_strategies_in_one_chart_and_refuses_other_folders() {
    let Some(t) = table() else { return };
    let dir = tmp("report");
    let job = |strategy: &str| {
        let out = dir.join(strategy);
        ok(&[
            "nas",
            "--benchmark",
            t.to_str().unwrap(),
            "--strategy",
            strategy,
            "--budget",
            "30",
            "--runs",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        out
    };
    let (random, evolution) = (job("random"), job("evolution"));
    let page = dir.join("compare.html");
    let stdout = ok(&[
        "report",
        random.to_str().unwrap(),
        evolution.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["report"], page.to_str().unwrap());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("random (2 runs)"), "no random line");
    assert!(html.contains("evolution (2 runs)"), "no evolution line");
    assert_eq!(count(&html, "<polyline"), 2);
    assert_eq!(count(&html, "<polygon"), 2, "a ±1 std band per strategy");
    // The table: a header row and one row per strategy, with its mean ± std over runs.
    assert_eq!(count(&html, "<tr>"), 3);
    for name in ["random", "evolution"] {
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name).join(RESULT)).unwrap())
                .unwrap();
        let cell = format!(
            "<b>{:.2} ± {:.2}</b>",
            result["mean_test_accuracy"].as_f64().unwrap(),
            result["std_test_accuracy"].as_f64().unwrap()
        );
        assert!(html.contains(&cell), "{name}: no {cell}");
    }
    assert!(!html.contains("<script"), "the page is self-contained");

    // One folder alone, to its default file.
    ok(&["report", evolution.to_str().unwrap()]);
    let one = std::fs::read_to_string(evolution.join("report.html")).unwrap();
    assert_eq!(count(&one, "<polyline"), 1);
    assert!(one.contains("evolution (2 runs)"));

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &[
            "report",
            evolution.to_str().unwrap(),
            empty.to_str().unwrap(),
        ],
        "is not a `darts nas` run folder",
    );
    // A job killed before its result.json.
    std::fs::remove_file(random.join(RESULT)).unwrap();
    fails_with(
        &["report", random.to_str().unwrap()],
        "the job has not finished; finish it with `darts nas --resume",
    );
    let _ = std::fs::remove_dir_all(dir);
}
