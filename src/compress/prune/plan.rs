//! Channel pruning plans: score each unit of the dependency analysis (`graph.rs`), keep the
//! best ones of each group, and slice every layer that reads or writes a removed unit.

use clap::ValueEnum;
use ndarray::Axis;
use serde::{Deserialize, Serialize};

use super::graph::{walk, Pass, Space, Units};
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nas::space::skeleton::AuxiliaryHead;
use crate::nn::{BatchNorm2d, Conv2d, Linear, Module};
use crate::tensor::Tensor;

/// How channels (or, for `magnitude`, single weights) are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Network slimming: the sum of |γ| over the BNs of the channel.
    Bn,
    /// The L1 norm of the conv filters writing the channel.
    L1,
    /// The L2 norm of the conv filters writing the channel.
    L2,
    /// Unstructured: the smallest weights zeroed, kept zero by a mask through fine-tuning.
    Magnitude,
}

/// Per channel node: Σ|γ|, Σ|w| and Σw² of the BNs and filters that write it.
#[derive(Default)]
struct Scores {
    bn: Vec<f64>,
    l1: Vec<f64>,
    l2: Vec<f64>,
}

fn add(v: &mut Vec<f64>, i: usize, x: f64) {
    if v.len() <= i {
        v.resize(i + 1, 0.0);
    }
    v[i] += x;
}

impl Pass for Scores {
    fn conv(&mut self, conv: &mut Conv2d, _: &Space, output: &Space) -> Result<()> {
        let w = conv.weight.try_to_vec()?;
        let per = w.len() / output.len();
        for (o, &node) in output.iter().enumerate() {
            let f = &w[o * per..][..per];
            add(
                &mut self.l1,
                node,
                f.iter().map(|v| f64::from(v.abs())).sum(),
            );
            add(&mut self.l2, node, f.iter().map(|v| f64::from(v * v)).sum());
        }
        Ok(())
    }

    fn bn(&mut self, bn: &mut BatchNorm2d, space: &Space) -> Result<()> {
        if let Some(g) = &bn.weight {
            for (&node, v) in space.iter().zip(g.try_to_vec()?) {
                add(&mut self.bn, node, f64::from(v.abs()));
            }
        }
        Ok(())
    }

    fn linear(&mut self, _: &mut Linear, _: &Space) -> Result<()> {
        Ok(())
    }

    fn auxiliary(&mut self, _: &mut AuxiliaryHead, _: &Space) -> Result<()> {
        Ok(())
    }
}

/// A network's units with their scores.
pub struct Analysis {
    pub units: Units,
    /// Per unit, higher is more important.
    pub scores: Vec<f64>,
}

impl Analysis {
    /// Scores the units of `net` by `method` (not `magnitude`, which prunes no channels).
    pub fn of(net: &mut Network, method: Method) -> Result<Self> {
        let mut s = Scores::default();
        let mut graph = walk(net, &mut s)?;
        let units = graph.units();
        let per_node = match method {
            Method::Bn => &s.bn,
            Method::L1 => &s.l1,
            Method::L2 => &s.l2,
            Method::Magnitude => {
                return Err(Error::InvalidArgument(
                    "magnitude pruning removes no channels".into(),
                ))
            }
        };
        let mut scores = vec![0.0; units.len()];
        for (node, &u) in units.of_node.iter().enumerate() {
            scores[u] += per_node.get(node).copied().unwrap_or(0.0);
        }
        if method == Method::L2 {
            scores.iter_mut().for_each(|v| *v = v.sqrt());
        }
        Ok(Analysis { units, scores })
    }

    /// The units removed when every group keeps its best `ratio` of units (rounded, at least
    /// one), plus the best unit of any conv output that would otherwise keep none; groups that
    /// hold the input image are kept whole. Sorted.
    pub fn removed(&self, ratio: f64) -> Vec<usize> {
        let mut keep = vec![false; self.units.len()];
        for group in &self.units.groups {
            if group.iter().any(|&u| self.units.fixed[u]) {
                group.iter().for_each(|&u| keep[u] = true);
                continue;
            }
            let mut ranked = group.clone();
            ranked.sort_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]).then(a.cmp(&b)));
            let k = ((ratio * group.len() as f64).round() as usize).clamp(1, group.len());
            ranked[..k].iter().for_each(|&u| keep[u] = true);
            for &u in &ranked[k..] {
                let starved = self.units.origins[u].iter().any(|o| {
                    !group
                        .iter()
                        .any(|&v| keep[v] && self.units.origins[v].contains(o))
                });
                if starved {
                    keep[u] = true;
                }
            }
        }
        (0..keep.len()).filter(|&u| !keep[u]).collect()
    }
}

/// Visits the layers and nothing else: the graph alone.
struct Structure;

impl Pass for Structure {
    fn conv(&mut self, _: &mut Conv2d, _: &Space, _: &Space) -> Result<()> {
        Ok(())
    }
    fn bn(&mut self, _: &mut BatchNorm2d, _: &Space) -> Result<()> {
        Ok(())
    }
    fn linear(&mut self, _: &mut Linear, _: &Space) -> Result<()> {
        Ok(())
    }
    fn auxiliary(&mut self, _: &mut AuxiliaryHead, _: &Space) -> Result<()> {
        Ok(())
    }
}

/// The units of `net`'s dependency analysis.
pub fn units(net: &mut Network) -> Result<Units> {
    Ok(walk(net, &mut Structure)?.units())
}

/// Per channel node of `units`: kept unless its unit is in `removed`. `removed` must name
/// units of a network with `expected` units, none of them holding input channels.
pub fn node_mask(units: &Units, removed: &[usize], expected: usize) -> Result<Vec<bool>> {
    if units.len() != expected {
        return Err(Error::InvalidArgument(format!(
            "the pruning plan is for a network of {expected} channel units, this one has {}: the run folder was pruned by another version of darts; prune the unpruned run again",
            units.len()
        )));
    }
    let mut keep = vec![true; units.len()];
    for &u in removed {
        if u >= units.len() || units.fixed[u] {
            return Err(Error::InvalidArgument(format!(
                "the pruning plan removes unit {u}, which is not a removable channel of this network"
            )));
        }
        keep[u] = false;
    }
    Ok(units.of_node.iter().map(|&u| keep[u]).collect())
}

/// Removes the units `removed` (of a network with `expected` units) from `net`: every conv,
/// BN, linear layer and the auxiliary head's first conv lose the matching channels.
pub fn apply(net: &mut Network, removed: &[usize], expected: usize) -> Result<()> {
    let keep = node_mask(&units(net)?, removed, expected)?;
    walk(net, &mut Slicer { keep: &keep })?;
    Ok(())
}

/// The positions of a space's kept channels.
fn kept(keep: &[bool], space: &Space) -> Vec<usize> {
    (0..space.len()).filter(|&i| keep[space[i]]).collect()
}

/// Keeps the entries `idx` of `t` along `axis` (a parameter stays a parameter).
pub fn select(t: &mut Tensor, axis: usize, idx: &[usize]) -> Result<()> {
    if idx.len() == t.shape()[axis] {
        return Ok(());
    }
    let host = t.to_host()?;
    let v = host.view().select(Axis(axis), idx);
    let shape = v.shape().to_vec();
    let mut new = Tensor::from_vec(v.iter().copied().collect(), &shape)?.to_device(t.device())?;
    if t.tracks_grad() {
        new = new.requires_grad();
    }
    *t = new;
    Ok(())
}

/// Slices the layers to the kept channel nodes.
struct Slicer<'a> {
    keep: &'a [bool],
}

impl Pass for Slicer<'_> {
    fn conv(&mut self, conv: &mut Conv2d, input: &Space, output: &Space) -> Result<()> {
        let out = kept(self.keep, output);
        if conv.cfg.groups > 1 {
            // Depthwise (the walk accepts no other grouping): one group per kept channel.
            conv.cfg.groups = out.len();
        } else {
            select(&mut conv.weight, 1, &kept(self.keep, input))?;
        }
        select(&mut conv.weight, 0, &out)?;
        if let Some(b) = &mut conv.bias {
            select(b, 0, &out)?;
        }
        Ok(())
    }

    fn bn(&mut self, bn: &mut BatchNorm2d, space: &Space) -> Result<()> {
        let idx = kept(self.keep, space);
        for t in [&mut bn.weight, &mut bn.bias].into_iter().flatten() {
            select(t, 0, &idx)?;
        }
        select(&mut bn.running_mean, 0, &idx)?;
        select(&mut bn.running_var, 0, &idx)
    }

    fn linear(&mut self, linear: &mut Linear, input: &Space) -> Result<()> {
        select(&mut linear.weight, 1, &kept(self.keep, input))
    }

    fn auxiliary(&mut self, head: &mut AuxiliaryHead, input: &Space) -> Result<()> {
        let idx = kept(self.keep, input);
        let mut result = Ok(());
        head.visit_mut("", &mut |name, t, _| {
            // The head's only layer on the cell's channels: ReLU, pool, then this 1×1 conv.
            if name == AuxiliaryHead::INPUT_CONV && result.is_ok() {
                result = select(t, 1, &idx);
            }
        });
        result
    }
}
