//! Cost-aware, global allocation of a MACs budget over the channel groups: instead of one keep
//! ratio for every group, the units are removed one at a time, always the one that loses the
//! least importance per multiply-add it saves, until the network is within the budget.
//!
//! A unit's importance is its score (`plan::Analysis`) divided by the mean score of its group,
//! so that groups whose BN scales (or filter norms) live on different scales compete fairly.
//! Its price is exact: every conv and linear layer costs `per · (kept outputs) · (kept inputs)`
//! multiply-adds, with `per` read from one counted forward of the full network, so removing a
//! unit saves what the MAC counter will find missing — and the savings of its neighbours shrink
//! as they lose inputs or outputs, which the greedy loop accounts for after every removal.

use std::collections::HashMap;

use super::graph::{walk, Pass, Space, Units};
use super::plan::Analysis;
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nas::space::skeleton::AuxiliaryHead;
use crate::nn::{BatchNorm2d, Conv2d, Ctx, Linear};
use crate::tensor::Tensor;

/// One conv or linear layer: `per` multiply-adds for each pair of a kept output and a kept
/// input channel; a side that is `None` (a depthwise conv's input, a linear layer's classes)
/// does not shrink and counts 1.
struct Layer {
    per: f64,
    out: Option<Vec<usize>>,
    inp: Option<Vec<usize>>,
}

/// Records each layer's channel nodes under the address of its weight.
#[derive(Default)]
struct Shapes(Vec<(usize, Option<Space>, Option<Space>)>);

fn address(t: &Tensor) -> usize {
    t as *const Tensor as usize
}

impl Pass for Shapes {
    fn conv(&mut self, conv: &mut Conv2d, input: &Space, output: &Space) -> Result<()> {
        // A depthwise conv's output is its input: its MACs follow its channels, once.
        let inp = (conv.cfg.groups == 1).then(|| input.clone());
        self.0
            .push((address(&conv.weight), Some(output.clone()), inp));
        Ok(())
    }
    fn bn(&mut self, _: &mut BatchNorm2d, _: &Space) -> Result<()> {
        Ok(())
    }
    fn linear(&mut self, linear: &mut Linear, input: &Space) -> Result<()> {
        self.0
            .push((address(&linear.weight), None, Some(input.clone())));
        Ok(())
    }
    fn auxiliary(&mut self, _: &mut AuxiliaryHead, _: &Space) -> Result<()> {
        // Not run at inference, not counted in the MACs.
        Ok(())
    }
}

/// The exact MACs of a network as a function of the units it keeps.
pub struct Costs {
    layers: Vec<Layer>,
    units: usize,
}

impl Costs {
    /// Prices the layers of the full network `net` on an input like `x` (batch 1).
    pub fn of(net: &mut Network, x: &Tensor) -> Result<Costs> {
        let mut shapes = Shapes::default();
        let units = walk(net, &mut shapes)?.units();
        let (counted, out) =
            crate::nn::macs_by_layer(|| crate::no_grad(|| net.forward(x, &mut Ctx::new(false, 0))));
        out?;
        let mut macs: HashMap<usize, u64> = HashMap::new();
        for (at, n) in counted {
            *macs.entry(at).or_default() += n;
        }
        let to_units = |s: Option<Space>| s.map(|s| s.iter().map(|&n| units.of_node[n]).collect());
        let layers = shapes
            .0
            .into_iter()
            .map(|(at, out, inp)| {
                let pairs = out.as_ref().map_or(1, Vec::len) * inp.as_ref().map_or(1, Vec::len);
                Layer {
                    per: macs.get(&at).copied().unwrap_or(0) as f64 / pairs as f64,
                    out: to_units(out),
                    inp: to_units(inp),
                }
            })
            .collect();
        Ok(Costs {
            layers,
            units: units.len(),
        })
    }

    /// MACs with the units `keep` marks.
    pub fn macs(&self, keep: &[bool]) -> f64 {
        let kept = |s: &Option<Vec<usize>>| {
            s.as_ref()
                .map_or(1, |s| s.iter().filter(|&&u| keep[u]).count()) as f64
        };
        self.layers
            .iter()
            .map(|l| l.per * kept(&l.out) * kept(&l.inp))
            .sum()
    }
}

/// Per unit, the layers it appears in: (layer, its channels among the outputs, among the
/// inputs).
fn incidences(costs: &Costs) -> Vec<Vec<(usize, f64, f64)>> {
    let mut inc: Vec<HashMap<usize, (f64, f64)>> = vec![HashMap::new(); costs.units];
    for (l, layer) in costs.layers.iter().enumerate() {
        for &u in layer.out.iter().flatten() {
            inc[u].entry(l).or_default().0 += 1.0;
        }
        for &u in layer.inp.iter().flatten() {
            inc[u].entry(l).or_default().1 += 1.0;
        }
    }
    inc.into_iter()
        .map(|m| {
            let mut v: Vec<_> = m.into_iter().map(|(l, (o, i))| (l, o, i)).collect();
            v.sort_by_key(|&(l, ..)| l);
            v
        })
        .collect()
}

/// The greedy removal's state: kept units, each layer's kept outputs and inputs, what each
/// group may still lose, and how many kept units each conv output still has.
struct State<'a> {
    analysis: &'a Analysis,
    costs: &'a Costs,
    inc: Vec<Vec<(usize, f64, f64)>>,
    keep: Vec<bool>,
    kept_out: Vec<f64>,
    kept_in: Vec<f64>,
    group_of: Vec<usize>,
    spare: Vec<usize>,
    per_origin: HashMap<usize, usize>,
    importance: Vec<f64>,
}

impl<'a> State<'a> {
    fn new(analysis: &'a Analysis, costs: &'a Costs, floor: f64) -> State<'a> {
        let units = &analysis.units;
        let n = units.len();
        let (mut group_of, mut importance) = (vec![0; n], vec![0.0; n]);
        let mut spare = Vec::with_capacity(units.groups.len());
        for (g, group) in units.groups.iter().enumerate() {
            let mean = group.iter().map(|&u| analysis.scores[u]).sum::<f64>() / group.len() as f64;
            for &u in group {
                group_of[u] = g;
                importance[u] = if mean > 0.0 {
                    analysis.scores[u] / mean
                } else {
                    0.0
                };
            }
            let min = ((floor * group.len() as f64).ceil() as usize).clamp(1, group.len());
            let fixed = group.iter().any(|&u| units.fixed[u]);
            spare.push(if fixed { 0 } else { group.len() - min });
        }
        let mut per_origin = HashMap::new();
        for o in units.origins.iter().flatten() {
            *per_origin.entry(*o).or_default() += 1;
        }
        let size = |s: &Option<Vec<usize>>| s.as_ref().map_or(1, Vec::len) as f64;
        State {
            analysis,
            costs,
            inc: incidences(costs),
            keep: vec![true; n],
            kept_out: costs.layers.iter().map(|l| size(&l.out)).collect(),
            kept_in: costs.layers.iter().map(|l| size(&l.inp)).collect(),
            group_of,
            spare,
            per_origin,
            importance,
        }
    }

    fn units(&self) -> &Units {
        &self.analysis.units
    }

    /// Whether `u` may go: kept, its group above its floor, and no conv left without outputs.
    fn removable(&self, u: usize) -> bool {
        self.keep[u]
            && self.spare[self.group_of[u]] > 0
            && self.units().origins[u]
                .iter()
                .all(|o| self.per_origin[o] > 1)
    }

    /// The MACs removing `u` saves now.
    fn saving(&self, u: usize) -> f64 {
        self.inc[u]
            .iter()
            .map(|&(l, o, i)| {
                let (ko, ki) = (self.kept_out[l], self.kept_in[l]);
                self.costs.layers[l].per * (ko * ki - (ko - o) * (ki - i))
            })
            .sum()
    }

    /// The removable unit that loses the least importance per MAC saved (ties: the lowest).
    fn cheapest(&self) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64, f64)> = None;
        for u in (0..self.keep.len()).filter(|&u| self.removable(u)) {
            let saving = self.saving(u);
            if saving <= 0.0 {
                continue;
            }
            let price = self.importance[u] / saving;
            if best.is_none_or(|(_, p, _)| price < p) {
                best = Some((u, price, saving));
            }
        }
        best.map(|(u, _, s)| (u, s))
    }

    fn remove(&mut self, u: usize) {
        self.keep[u] = false;
        self.spare[self.group_of[u]] -= 1;
        for o in &self.analysis.units.origins[u] {
            *self.per_origin.get_mut(o).expect("counted") -= 1;
        }
        for &(l, o, i) in &self.inc[u] {
            self.kept_out[l] -= o;
            self.kept_in[l] -= i;
        }
    }
}

/// The units to remove so that the network has at most `target` (a fraction) of its MACs,
/// keeping at least `floor` (a fraction, at least one unit) of every group and one channel of
/// every conv; groups holding the input image are kept whole. Sorted. An error when the
/// floors leave the network above the target.
pub fn global(analysis: &Analysis, costs: &Costs, target: f64, floor: f64) -> Result<Vec<usize>> {
    if costs.units != analysis.units.len() {
        return Err(Error::InvalidArgument(format!(
            "prune: the costs are of a network of {} units, the scores of one of {}",
            costs.units,
            analysis.units.len()
        )));
    }
    let mut state = State::new(analysis, costs, floor);
    let full = costs.macs(&state.keep);
    let mut macs = full;
    while macs > target * full {
        let Some((u, saving)) = state.cheapest() else {
            return Err(Error::InvalidArgument(format!(
                "--macs-target {target:.3} cannot be reached keeping {floor} of every channel group (and a channel of every conv): at best {:.3} of the MACs; lower --min-keep or ask for at least that",
                macs / full
            )));
        };
        state.remove(u);
        macs -= saving;
    }
    Ok((0..state.keep.len()).filter(|&u| !state.keep[u]).collect())
}
