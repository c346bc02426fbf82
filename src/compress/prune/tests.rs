//! The dependency analysis on known cells, and pruning checked exactly: the pruned network
//! computes what the full one computes with the removed channels zeroed at their source.

use std::collections::BTreeSet;

use super::allocate;
use super::graph::{walk, Pass, Space, Units};
use super::plan::{self, Analysis, Method};
use crate::infer::tests::network;
use crate::nas::genotype::Genotype;
use crate::nas::network::Network;
use crate::nas::operations::{Op, Preprocess};
use crate::nas::space::skeleton::{AuxiliaryHead, Block, Cell};
use crate::nas::space::Arch;
use crate::nn::{BatchNorm2d, Conv2d, Ctx, Linear, Module};
use crate::tensor::Tensor;

/// Where a tensor lives: the network is not moved between the walk and the look-ups.
fn address(t: &Tensor) -> usize {
    t as *const Tensor as usize
}

/// Records the channel nodes of every BN and conv output, by the address of its weight.
#[derive(Default)]
struct Recorder(Vec<(usize, Space)>);

impl Pass for Recorder {
    fn conv(&mut self, conv: &mut Conv2d, _: &Space, output: &Space) -> crate::Result<()> {
        self.0.push((address(&conv.weight), output.clone()));
        Ok(())
    }
    fn bn(&mut self, bn: &mut BatchNorm2d, space: &Space) -> crate::Result<()> {
        self.0.push((address(gamma(bn)), space.clone()));
        Ok(())
    }
    fn linear(&mut self, _: &mut Linear, _: &Space) -> crate::Result<()> {
        Ok(())
    }
    fn auxiliary(&mut self, _: &mut AuxiliaryHead, _: &Space) -> crate::Result<()> {
        Ok(())
    }
}

struct Analysed {
    rec: Recorder,
    units: Units,
}

impl Analysed {
    fn of(net: &mut Network) -> Analysed {
        let mut rec = Recorder::default();
        let units = walk(net, &mut rec).unwrap().units();
        Analysed { rec, units }
    }

    /// The units of the channels `weight` (a BN's γ or a conv's filters) writes, in order.
    fn units_of(&self, weight: &Tensor) -> Vec<usize> {
        let (_, space) = self
            .rec
            .0
            .iter()
            .find(|(at, _)| *at == address(weight))
            .expect("a recorded layer");
        space.iter().map(|&n| self.units.of_node[n]).collect()
    }

    /// The group holding unit `u`.
    fn group_of(&self, u: usize) -> &Vec<usize> {
        self.units.groups.iter().find(|g| g.contains(&u)).unwrap()
    }
}

fn cell(net: &Network, i: usize) -> &Cell<Op> {
    match &net.body.blocks[i] {
        Block::Cell(c) => c,
        Block::Residual(_) => panic!("block {i} is not a cell"),
    }
}

fn gamma(bn: &BatchNorm2d) -> &Tensor {
    bn.weight.as_ref().unwrap()
}

/// The last BN of an edge's op.
fn edge_bn(op: &Op) -> &BatchNorm2d {
    match op {
        Op::SepConv(b) => &b[1].bn,
        Op::DilConv(b) => &b.bn,
        Op::NorConv(b) => &b.bn,
        Op::Reduce(r) => &r.bn,
        _ => panic!("an op without BN"),
    }
}

fn preprocess_bn(p: &Preprocess) -> &BatchNorm2d {
    match p {
        Preprocess::Conv(b) => &b.bn,
        Preprocess::Reduce(r) => &r.bn,
    }
}

fn disjoint(a: &[usize], b: &[usize]) -> bool {
    let a: BTreeSet<_> = a.iter().collect();
    b.iter().all(|u| !a.contains(u))
}

fn darts_v2(layers: usize) -> Network {
    network(Arch::Darts(Genotype::named("DARTS_V2").unwrap()), layers, 9)
}

#[test]
fn darts_normal_cell_ties_the_nodes_that_skips_join() {
    let mut net = darts_v2(3);
    let a = Analysed::of(&mut net);
    let c = cell(&net, 0);
    assert!(!c.reduction);
    // DARTS_V2 normal: n2 = sep(s0) + sep(s1), n3 = sep(s0) + sep(s1),
    // n4 = sep(s1) + skip(s0), n5 = skip(s0) + dil(n2).
    let p0 = a.units_of(gamma(preprocess_bn(&c.preprocess[0])));
    let p1 = a.units_of(gamma(preprocess_bn(&c.preprocess[1])));
    let e = |i: usize| a.units_of(gamma(edge_bn(&c.edges[i])));
    for i in [4, 7] {
        assert_eq!(
            e(i),
            p0,
            "edge {i} must be cut with s0 (skips tie n4 and n5 to it)"
        );
    }
    assert_eq!(e(0), e(1), "the two edges of n2 add");
    assert_eq!(e(2), e(3), "the two edges of n3 add");
    // n2 reaches n5 only through a conv: its channels are free of s0's.
    let groups = [&p0, &p1, &e(0), &e(2)];
    for (i, a) in groups.iter().enumerate() {
        for b in &groups[i + 1..] {
            assert!(disjoint(a, b));
        }
    }
    // s1 only feeds convs: its channels are a group of their own.
    assert_eq!(a.group_of(p1[0]), &p1);
    // Inside a sep_conv (between its halves) is a free group.
    let Op::SepConv(sep) = &c.edges[0] else {
        panic!("edge 0 is a sep_conv")
    };
    let inside = a.units_of(gamma(&sep[0].bn));
    assert_eq!(a.group_of(inside[0]), &inside);
    // The depthwise conv passes its input's channels through.
    assert_eq!(a.units_of(&sep[1].dw.weight), inside);
    // The group of s0: its channels, one unit each, in channel order.
    assert_eq!(a.group_of(p0[0]), &p0);
}

#[test]
fn darts_reduction_cell_with_factorized_reduce() {
    let mut net = darts_v2(3);
    let a = Analysed::of(&mut net);
    // Cells 1 and 2 reduce; cell 2 follows a reduction, so its s0 goes through a
    // FactorizedReduce. DARTS_V2 reduce: max pools and skips tie every node to both inputs.
    let c = cell(&net, 2);
    assert!(c.reduction);
    let Preprocess::Reduce(fr) = &c.preprocess[0] else {
        panic!("cell 2 reads s0 through a FactorizedReduce")
    };
    let p0 = a.units_of(gamma(&fr.bn));
    let p1 = a.units_of(gamma(preprocess_bn(&c.preprocess[1])));
    assert_eq!(p0, p1, "the pools from s0 and s1 add");
    let half = fr.conv_1.weight.shape()[0];
    assert_eq!(a.units_of(&fr.conv_1.weight), p0[..half]);
    assert_eq!(a.units_of(&fr.conv_2.weight), p0[half..]);
    // Each unit comes from one FR half and from s1's conv; the halves are distinct sources.
    let (first, second) = (&a.units.origins[p0[0]], &a.units.origins[p0[half]]);
    assert_eq!(first.len(), 2);
    assert!(first[0] != second[0] && first[1] == second[1]);
    // The next cell's preprocessing reads the concat of 4 nodes, all of this one group.
    assert_eq!(a.group_of(p0[0]).len(), p0.len());
}

#[test]
fn nb201_cells_tie_skips_across_the_stage_and_the_residual_add() {
    let cell_arch =
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|";
    let mut net = network(Arch::Nb201(cell_arch.parse().unwrap()), 1, 8);
    let a = Analysed::of(&mut net);
    let stem = a.units_of(gamma(&net.body.stem.bn));
    let c = cell(&net, 0);
    // n1 = conv3(n0): its own group; n2 = skip(n0); n3 = pool(n0) + conv1(n1) + skip(n2).
    let conv3 = a.units_of(gamma(edge_bn(&c.edges[0])));
    let conv1 = a.units_of(gamma(edge_bn(&c.edges[4])));
    assert_eq!(
        conv1, stem,
        "n3 adds onto the stem's channels through the skips"
    );
    assert_eq!(a.group_of(conv3[0]), &conv3);
    let Block::Residual(r) = &net.body.blocks[1] else {
        panic!("block 1 is the residual block")
    };
    let b = a.units_of(gamma(&r.conv_b.bn));
    assert_eq!(
        a.units_of(&r.downsample.weight),
        b,
        "the shortcut adds onto conv_b"
    );
    assert!(disjoint(&a.units_of(gamma(&r.conv_a.bn)), &b));
    let last = a.units_of(gamma(net.body.lastact.as_ref().unwrap()));
    let Block::Residual(r2) = &net.body.blocks[3] else {
        panic!("block 3 is the second residual block")
    };
    assert_eq!(last, a.units_of(gamma(&r2.conv_b.bn)));
    // The image's channels are fixed.
    assert!(a.units.fixed[0] && !a.units.fixed[stem[0]]);
}

/// The full network with the channels `removed` zeroed where they are made: conv filters and
/// BN scale and shift, so that every tensor holds zeros in them.
struct Zeroer<'a>(&'a [bool]);

fn zero_rows(t: &mut Tensor, keep: &[bool]) {
    let mut v = t.to_vec();
    let per = v.len() / keep.len();
    for (o, &k) in keep.iter().enumerate() {
        if !k {
            v[o * per..][..per].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    t.set_data(&Tensor::from_vec(v, t.shape()).unwrap())
        .unwrap();
}

impl Pass for Zeroer<'_> {
    fn conv(&mut self, conv: &mut Conv2d, _: &Space, output: &Space) -> crate::Result<()> {
        let keep: Vec<bool> = output.iter().map(|&n| self.0[n]).collect();
        zero_rows(&mut conv.weight, &keep);
        if let Some(b) = &mut conv.bias {
            zero_rows(b, &keep);
        }
        Ok(())
    }
    fn bn(&mut self, bn: &mut BatchNorm2d, space: &Space) -> crate::Result<()> {
        let keep: Vec<bool> = space.iter().map(|&n| self.0[n]).collect();
        for t in [&mut bn.weight, &mut bn.bias].into_iter().flatten() {
            zero_rows(t, &keep);
        }
        Ok(())
    }
    fn linear(&mut self, _: &mut Linear, _: &Space) -> crate::Result<()> {
        Ok(())
    }
    fn auxiliary(&mut self, _: &mut AuxiliaryHead, _: &Space) -> crate::Result<()> {
        Ok(())
    }
}

fn logits(net: &mut Network, x: &Tensor) -> Vec<f32> {
    crate::no_grad(|| net.forward(x, &mut Ctx::new(false, 0)))
        .unwrap()
        .0
        .to_vec()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{what}: {g} vs {w} (scale {scale})"
        );
    }
}

fn state(net: &Network) -> std::collections::BTreeMap<String, Tensor> {
    let mut s = Default::default();
    crate::checkpoint::module_state(net, "", &mut s);
    s
}

/// Half the channels of every group, by L1 norm.
fn uniform_half(_: &mut Network, analysis: &Analysis) -> Vec<usize> {
    analysis.removed(0.5)
}

/// Half the MACs, allocated globally by L1 norm per MAC.
fn global_half(net: &mut Network, analysis: &Analysis) -> Vec<usize> {
    allocate::global(analysis, &costs(net), 0.5, 0.25).unwrap()
}

/// The cost model of `net`, priced at batch 1.
fn costs(net: &mut Network) -> allocate::Costs {
    let x = image(net);
    allocate::Costs::of(net, &x).unwrap()
}

/// A batch-1 input for `net`.
fn image(net: &Network) -> Tensor {
    let s = net.spec.image_size;
    Tensor::zeros(&[1, net.spec.in_channels, s, s])
}

/// The MACs the counter finds in a forward of `net`.
fn counted_macs(net: &mut Network) -> f64 {
    let x = image(net);
    crate::nn::count_macs(|| logits(net, &x)).0 as f64
}

/// Prunes `make()`'s network as `plan` says (scored by L1 norm) and checks it against the
/// zeroed full network, its lowered program, and a fresh network shaped by the record and
/// loaded.
fn check_exact(make: impl Fn() -> Network, plan: fn(&mut Network, &Analysis) -> Vec<usize>) {
    let mut full = make();
    let s = full.spec.image_size;
    let x = Tensor::randn(&[3, 3, s, s], 1.0, &mut crate::rng(5));
    let analysis = Analysis::of(&mut full, Method::L1).unwrap();
    let removed = plan(&mut full, &analysis);
    let n = analysis.units.len();
    assert!(!removed.is_empty());
    let keep = plan::node_mask(&analysis.units, &removed, n).unwrap();
    let mut pruned = make();
    plan::apply(&mut pruned, &removed, n).unwrap();
    assert!(pruned.param_count_without_auxiliary() < full.param_count_without_auxiliary() * 9 / 10);
    walk(&mut full, &mut Zeroer(&keep)).unwrap();
    let want = logits(&mut full, &x);
    let got = logits(&mut pruned, &x);
    assert_close(&got, &want, "pruned vs zeroed full network");
    let program = crate::infer::lower(&pruned).unwrap();
    assert_close(
        &program.forward(x.clone()).unwrap().to_vec(),
        &want,
        "lowered",
    );
    // What loading a pruned run folder does: the record on a fresh full network, then weights.
    let mut reloaded = network(pruned.spec.genotype.clone(), pruned.spec.layers, s);
    super::Pruning::Channels { units: n, removed }
        .shape(&mut reloaded)
        .unwrap();
    let path = std::path::Path::new("pruned");
    crate::checkpoint::load_module_state(&mut reloaded, "", &state(&pruned), path).unwrap();
    assert_eq!(logits(&mut reloaded, &x), got);
}

#[test]
fn pruned_darts_network_equals_the_zeroed_full_one() {
    for plan in [uniform_half, global_half] {
        check_exact(|| darts_v2(3), plan);
        check_exact(
            || network(Arch::Darts(Genotype::named("DARTS_V1").unwrap()), 4, 9),
            plan,
        );
    }
}

#[test]
fn pruned_nb201_network_equals_the_zeroed_full_one() {
    for arch in [
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
        "|none~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|none~2|",
    ] {
        for plan in [uniform_half, global_half] {
            check_exact(|| network(Arch::Nb201(arch.parse().unwrap()), 1, 8), plan);
        }
    }
}

#[test]
fn plans_keep_a_channel_of_every_conv_and_reject_foreign_records() {
    let mut net = darts_v2(3);
    let analysis = Analysis::of(&mut net, Method::Bn).unwrap();
    let n = analysis.units.len();
    // The smallest plan: every group down to one channel, yet no conv without outputs.
    plan::apply(&mut net, &analysis.removed(0.0), n).unwrap();
    net.visit("", &mut |name, t, _| {
        assert!(t.shape().iter().all(|&d| d > 0), "{name} {:?}", t.shape())
    });
    logits(&mut net, &Tensor::zeros(&[1, 3, 9, 9]));
    let err = plan::apply(&mut darts_v2(4), &[], n)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another version"), "{err}");
    let err = plan::apply(&mut darts_v2(3), &[0], n)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a removable channel"), "{err}");
}

#[test]
fn magnitude_pruning_zeroes_the_smallest_weights_and_the_mask_keeps_them() {
    use super::magnitude;
    let mut net = darts_v2(3);
    magnitude::prune(&mut net, 0.6, false).unwrap();
    let s = magnitude::weight_sparsity(&net);
    assert!((s - 0.6).abs() < 0.01, "global sparsity {s}");
    let masks = magnitude::Masks::of(&net);
    net.visit_mut("", &mut |_, t, _| {
        let v: Vec<f32> = t.to_vec().iter().map(|x| x + 0.25).collect();
        t.set_data(&Tensor::from_vec(v, t.shape()).unwrap())
            .unwrap();
    });
    masks.apply(&mut net).unwrap();
    assert_eq!(magnitude::weight_sparsity(&net), s);
    let mut layered = darts_v2(3);
    magnitude::prune(&mut layered, 0.5, true).unwrap();
    layered.visit("", &mut |name, t, kind| {
        if kind == crate::nn::ParamKind::Weight && t.shape().len() >= 2 && t.numel() >= 100 {
            let zeros = t.to_vec().iter().filter(|&&v| v == 0.0).count();
            let f = zeros as f64 / t.numel() as f64;
            assert!((f - 0.5).abs() < 0.05, "{name}: {f}");
        }
    });
}

#[test]
fn the_cost_model_prices_every_plan_as_the_mac_counter_counts_it() {
    const NB201: &str =
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|";
    for make in [(|| darts_v2(3)) as fn() -> Network, || {
        network(Arch::Nb201(NB201.parse().unwrap()), 1, 8)
    }] {
        let mut full = make();
        let analysis = Analysis::of(&mut full, Method::L1).unwrap();
        let costs = costs(&mut full);
        let n = analysis.units.len();
        assert_eq!(costs.macs(&vec![true; n]), counted_macs(&mut full));
        for removed in [
            analysis.removed(0.0),
            analysis.removed(0.3),
            analysis.removed(0.8),
            allocate::global(&analysis, &costs, 0.4, 0.1).unwrap(),
        ] {
            let mut keep = vec![true; n];
            removed.iter().for_each(|&u| keep[u] = false);
            let mut pruned = make();
            plan::apply(&mut pruned, &removed, n).unwrap();
            assert_eq!(costs.macs(&keep), counted_macs(&mut pruned));
        }
    }
}

#[test]
fn global_allocation_reaches_the_target_above_the_floors_deterministically() {
    let mut full = darts_v2(3);
    let analysis = Analysis::of(&mut full, Method::L1).unwrap();
    let costs = costs(&mut full);
    let n = analysis.units.len();
    let macs = counted_macs(&mut full);
    for (target, floor) in [(0.5, 0.25), (0.7, 0.5), (1.0, 0.25)] {
        let removed = allocate::global(&analysis, &costs, target, floor).unwrap();
        assert_eq!(
            removed,
            allocate::global(&analysis, &costs, target, floor).unwrap()
        );
        let mut pruned = darts_v2(3);
        plan::apply(&mut pruned, &removed, n).unwrap();
        let got = counted_macs(&mut pruned) / macs;
        // The last unit removed overshoots by at most one unit's price: a few per cent here.
        assert!(got <= target && got > target - 0.05, "{target}: {got}");
        for group in &analysis.units.groups {
            let kept = group.iter().filter(|u| !removed.contains(u)).count();
            assert!(
                kept as f64 >= (floor * group.len() as f64).ceil(),
                "{group:?}"
            );
            if group.iter().any(|&u| analysis.units.fixed[u]) {
                assert_eq!(kept, group.len());
            }
        }
    }
    assert!(allocate::global(&analysis, &costs, 1.0, 0.25)
        .unwrap()
        .is_empty());
    let err = allocate::global(&analysis, &costs, 0.05, 0.25)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be reached") && err.contains("--min-keep"),
        "{err}"
    );
}

#[test]
fn global_allocation_cuts_where_a_channel_is_cheapest_per_mac() {
    // Two groups of equal importance: the one whose channels cost more MACs loses more.
    let mut full = darts_v2(3);
    let mut analysis = Analysis::of(&mut full, Method::L1).unwrap();
    analysis.scores.iter_mut().for_each(|s| *s = 1.0);
    let costs = costs(&mut full);
    let removed = allocate::global(&analysis, &costs, 0.8, 0.25).unwrap();
    let n = analysis.units.len();
    let price = |u: usize| {
        let mut keep = vec![true; n];
        keep[u] = false;
        costs.macs(&vec![true; n]) - costs.macs(&keep)
    };
    let cut: f64 = removed.iter().map(|&u| price(u)).sum::<f64>() / removed.len() as f64;
    let all: f64 = (0..n)
        .filter(|&u| !analysis.units.fixed[u])
        .map(price)
        .sum::<f64>()
        / (0..n).filter(|&u| !analysis.units.fixed[u]).count() as f64;
    assert!(
        cut > all,
        "removed units save {cut} MACs each, the average one {all}"
    );
}
