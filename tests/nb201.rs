//! The NAS-Bench-201 space on the skeleton: the benchmark's macro network has exactly the
//! table's parameter counts and FLOPs; search and train run end to end with `--space nb201`.

use std::path::PathBuf;
use std::process::Command;

use darts::bench201::{Bench201, TABLE_FILE};
use darts::nas::network::{Network, NetworkSpec};
use darts::nas::space::nb201::{self, Nb201Arch, Nb201Op};
use darts::nas::space::Arch;
use darts::nas::supernet;
use darts::nn::{self, Ctx};
use darts::Tensor;
use rand::{rngs::StdRng, SeedableRng};

fn table() -> Option<Bench201> {
    let dir = darts::data::test_data(TABLE_FILE)?;
    Some(Bench201::load(dir.join(TABLE_FILE)).unwrap())
}

/// The benchmark's CIFAR-10 network for `arch`: C=16, N=5, 10 classes, 32×32 inputs.
fn network(arch: Nb201Arch) -> Network {
    let spec = NetworkSpec {
        channels: 16,
        layers: 5,
        num_classes: 10,
        in_channels: 3,
        image_size: 32,
        auxiliary: false,
        genotype: Arch::Nb201(arch),
    };
    Network::new(spec, &mut StdRng::seed_from_u64(0)).unwrap()
}

#[test]
fn macro_network_has_the_benchmark_parameter_counts() {
    let Some(t) = table() else { return };
    // All-nor_conv_3x3, all-skip_connect, the best cell, the ResNet cell, row 0.
    for index in [1462, 1835, 6111, 11472, 0] {
        let arch = t.arch(index).unwrap();
        let expected = (t.value(index, "params_m").unwrap() * 1e6).round() as usize;
        assert_eq!(
            nn::param_count(&network(arch)),
            expected,
            "index {index}: {arch}"
        );
    }
    assert_eq!(
        t.arch(1462).unwrap(),
        Nb201Arch::uniform(Nb201Op::NorConv3x3)
    );
    assert_eq!(
        t.arch(1835).unwrap(),
        Nb201Arch::uniform(Nb201Op::SkipConnect)
    );
}

#[test]
fn macro_network_has_the_benchmark_flops() {
    let Some(t) = table() else { return };
    for index in [1462, 1835, 6111] {
        let mut net = network(t.arch(index).unwrap());
        let x = Tensor::zeros(&[1, 3, 32, 32]);
        let mut ctx = Ctx::new(false, 0);
        let (macs, out) = nn::count_macs(|| darts::no_grad(|| net.forward(&x, &mut ctx)));
        out.unwrap();
        // NB201's counter also counts the classifier's 10 bias additions.
        let expected = (t.value(index, "flops_m").unwrap() * 1e6).round() as u64;
        assert_eq!(macs + 10, expected, "index {index}");
    }
}

#[test]
fn search_network_derives_a_cell_of_the_space() {
    let spec = supernet::SearchSpec::nb201(4, 1, 3, 10);
    let mut net = supernet::Network::new(spec, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(net.alphas.normal.shape(), &[6, 5]);
    assert!(net.alphas.reduce.is_none());
    let names: Vec<String> = nn::state(&net).into_iter().map(|(n, _, _)| n).collect();
    assert!(names.contains(&"cells.0.edges.3<-2._ops.3.op.1.weight".to_string()));
    assert!(names.contains(&"cells.1.conv_a.op.1.weight".to_string()));
    assert!(names.contains(&"lastact.0.running_var".to_string()));
    let y = net
        .forward(&Tensor::zeros(&[2, 3, 8, 8]), &mut Ctx::new(true, 0))
        .unwrap();
    assert_eq!(y.shape(), &[2, 10]);
    // Edge 1←0 leans to nor_conv_3x3: the derived cell has it there.
    let mut w = vec![0.0; 30];
    w[3] = 1.0;
    let arch = nb201::derive(&w).unwrap();
    assert_eq!(arch.ops[0], Nb201Op::NorConv3x3);
    assert_eq!(arch.ops[1], Nb201Op::None);
    assert!(nb201::derive(&w[..29]).is_err());
}

fn darts() -> Command {
    Command::new(env!("CARGO_BIN_EXE_darts"))
}

fn last_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-nb201-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn search_scores_the_found_cell_and_train_trains_it() {
    let Some(t) = table() else { return };
    let dir = tmp("search");
    let out = darts()
        .args([
            "search",
            "--space",
            "nb201",
            "--epochs",
            "1",
            "--max-steps",
            "2",
        ])
        .args(["--channels", "4", "--layers", "1", "--json", "--out"])
        .arg(&dir)
        .arg("--benchmark")
        .arg(t.path())
        .output()
        .unwrap();
    let r = last_json(&out);
    let arch: Nb201Arch = r["genotype"].as_str().unwrap().parse().unwrap();
    let index = t.index_of(&arch).unwrap();
    assert_eq!(r["space"], "nb201");
    assert_eq!(r["benchmark_test"], t.value(index, "cifar10_test").unwrap());
    assert_eq!(
        r["benchmark_valid"],
        t.value(index, "cifar10_valid").unwrap()
    );
    assert_eq!(
        r["benchmark_rank"],
        t.rank(index, "cifar10_test").unwrap() as u64
    );
    // The run's genotype.json trains as it is.
    let out = darts()
        .args(["train", "--arch"])
        .arg(dir.join("genotype.json"))
        .args(["--channels", "4", "--layers", "1", "--epochs", "1"])
        .args(["--max-steps", "2", "--json", "--out"])
        .arg(dir.join("train"))
        .output()
        .unwrap();
    let r = last_json(&out);
    assert!(r["test_accuracy"].as_f64().unwrap() >= 0.0);
    let cfg = std::fs::read_to_string(dir.join("train/config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["genotype"], arch.to_string());
    assert_eq!(cfg["nesterov"], true);
    assert_eq!(cfg["lr"].as_f64().unwrap() as f32, 0.1);
    // And evaluates.
    let out = darts()
        .args(["eval", "--json", "--checkpoint"])
        .arg(dir.join("train"))
        .output()
        .unwrap();
    assert!(last_json(&out)["top1"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn space_mismatches_are_one_line_errors() {
    let cases: [&[&str]; 4] = [
        &[
            "train",
            "--space",
            "darts",
            "--arch",
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        ],
        &["train", "--space", "nb201", "--genotype", "DARTS_V2"],
        &[
            "search",
            "--space",
            "nb201",
            "--primitives",
            "none,skip_connect",
        ],
        &["train", "--arch", "|nor_conv_3x3~0|+|nor_conv_3x3~1|"],
    ];
    for args in cases {
        let out = darts().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
