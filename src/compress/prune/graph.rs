//! The channel dependency analysis of a network: which channels must be removed together.
//!
//! Every channel of every tensor the network computes is a node of a union-find. A convolution
//! (or FactorizedReduce half) makes fresh nodes for its outputs; whatever passes a channel
//! through unchanged — ReLU, pools, `skip_connect`, a `none` node's zeros, BN, a depthwise conv
//! — keeps its input's nodes; a node sum (an add) unites the channels it adds, index by index;
//! a cell's output is the concatenation of its states' nodes. A class of the union-find is then
//! one *unit*: removing it removes that channel from every tensor it appears in, so every sum
//! still adds like with like. Units are gathered into *groups*: the units of the conv outputs
//! that sums tie together (a DARTS cell's nodes joined by skips and pools; the inside of a
//! sep_conv is a group of its own), ranked and cut by one keep ratio within each group.
//!
//! The walk over the network mirrors the forwards in `skeleton.rs` and `operations.rs`, and
//! visits each conv, BN and linear layer with the node lists of its input and output, handing
//! them to a [`Pass`]: one pass scores the channels, another slices the layers.

use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nas::operations::{DwPwBn, FactorizedReduce, Op, Preprocess, ReluConvBn, ResidualBlock};
use crate::nas::space::skeleton::{AuxiliaryHead, Block, Cell};
use crate::nn::{BatchNorm2d, Conv2d, Linear};

/// The nodes of a tensor's channels, in channel order.
pub type Space = Vec<usize>;

/// What is done to each layer, given the channel nodes it reads and writes.
pub trait Pass {
    fn conv(&mut self, conv: &mut Conv2d, input: &Space, output: &Space) -> Result<()>;
    fn bn(&mut self, bn: &mut BatchNorm2d, space: &Space) -> Result<()>;
    fn linear(&mut self, linear: &mut Linear, input: &Space) -> Result<()>;
    /// The auxiliary head, which reads `input` (only its first conv depends on it).
    fn auxiliary(&mut self, head: &mut AuxiliaryHead, input: &Space) -> Result<()>;
}

/// A union-find with path halving.
#[derive(Clone, Debug, Default)]
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn push(&mut self) -> usize {
        self.0.push(self.0.len());
        self.0.len() - 1
    }

    fn find(&mut self, mut a: usize) -> usize {
        while self.0[a] != a {
            self.0[a] = self.0[self.0[a]];
            a = self.0[a];
        }
        a
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        // The smaller root wins, so that roots (and unit numbers) follow creation order.
        let (lo, hi) = (a.min(b), a.max(b));
        self.0[hi] = lo;
    }
}

/// The structure the walk builds: channel nodes, the space each was created in, and which
/// nodes are the network's input (never removable).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    channels: UnionFind,
    /// Per node: the fresh space (one conv output, the input image) it was made in.
    origin: Vec<usize>,
    spaces: UnionFind,
    fixed: Vec<bool>,
}

impl Graph {
    fn fresh(&mut self, n: usize, fixed: bool) -> Space {
        let origin = self.spaces.push();
        (0..n)
            .map(|_| {
                self.origin.push(origin);
                self.fixed.push(fixed);
                self.channels.push()
            })
            .collect()
    }

    fn unite(&mut self, a: &Space, b: &Space, what: &str) -> Result<()> {
        if a.len() != b.len() {
            return Err(Error::InvalidArgument(format!(
                "prune: {what} adds {} channels to {}",
                a.len(),
                b.len()
            )));
        }
        for (&x, &y) in a.iter().zip(b) {
            self.channels.union(x, y);
            let (ox, oy) = (self.origin[x], self.origin[y]);
            self.spaces.union(ox, oy);
        }
        Ok(())
    }

    /// Numbers the classes: per node its unit, units in order of their first node.
    pub fn units(&mut self) -> Units {
        let n = self.origin.len();
        let mut number = vec![usize::MAX; n];
        let mut of_node = Vec::with_capacity(n);
        let mut group_number = vec![usize::MAX; self.spaces.0.len()];
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut fixed = Vec::new();
        let mut origins: Vec<Vec<usize>> = Vec::new();
        for node in 0..n {
            let root = self.channels.find(node);
            if number[root] == usize::MAX {
                number[root] = fixed.len();
                fixed.push(false);
                origins.push(Vec::new());
                let g = self.spaces.find(self.origin[root]);
                if group_number[g] == usize::MAX {
                    group_number[g] = groups.len();
                    groups.push(Vec::new());
                }
                groups[group_number[g]].push(number[root]);
            }
            let unit = number[root];
            of_node.push(unit);
            fixed[unit] |= self.fixed[node];
            if !origins[unit].contains(&self.origin[node]) {
                origins[unit].push(self.origin[node]);
            }
        }
        Units {
            of_node,
            groups,
            fixed,
            origins,
        }
    }
}

/// The units of a network: what a plan removes.
#[derive(Clone, Debug)]
pub struct Units {
    /// Per channel node, its unit.
    pub of_node: Vec<usize>,
    /// The units of each group, in unit order.
    pub groups: Vec<Vec<usize>>,
    /// Per unit: it holds an input channel of the network.
    pub fixed: Vec<bool>,
    /// Per unit: the fresh spaces (conv outputs) its channels come from; each must keep one
    /// channel, or a conv would be left with no output.
    pub origins: Vec<Vec<usize>>,
}

impl Units {
    pub fn len(&self) -> usize {
        self.fixed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty()
    }
}

/// Walks `net`, handing each layer to `pass`; returns the graph of its channels.
pub fn walk(net: &mut Network, pass: &mut dyn Pass) -> Result<Graph> {
    let mut w = Walker {
        graph: Graph::default(),
        pass,
    };
    w.network(net)?;
    Ok(w.graph)
}

struct Walker<'p> {
    graph: Graph,
    pass: &'p mut dyn Pass,
}

/// A depthwise conv maps channel i to channel i: its output is its input's nodes.
fn is_depthwise(conv: &Conv2d) -> bool {
    let s = conv.weight.shape();
    conv.cfg.groups > 1 && conv.cfg.groups == s[0] && s[1] == 1
}

impl Walker<'_> {
    fn conv(&mut self, conv: &mut Conv2d, x: &Space) -> Result<Space> {
        let cout = conv.weight.shape()[0];
        let y = if is_depthwise(conv) {
            x.clone()
        } else if conv.cfg.groups == 1 {
            self.graph.fresh(cout, false)
        } else {
            return Err(Error::InvalidArgument(format!(
                "prune: a grouped conv ({} groups) that is not depthwise",
                conv.cfg.groups
            )));
        };
        self.pass.conv(conv, x, &y)?;
        Ok(y)
    }

    fn relu_conv_bn(&mut self, b: &mut ReluConvBn, x: &Space) -> Result<Space> {
        let y = self.conv(&mut b.conv, x)?;
        self.pass.bn(&mut b.bn, &y)?;
        Ok(y)
    }

    fn dw_pw_bn(&mut self, b: &mut DwPwBn, x: &Space) -> Result<Space> {
        let y = self.conv(&mut b.dw, x)?;
        let y = self.conv(&mut b.pw, &y)?;
        self.pass.bn(&mut b.bn, &y)?;
        Ok(y)
    }

    fn factorized_reduce(&mut self, fr: &mut FactorizedReduce, x: &Space) -> Result<Space> {
        let mut y = self.conv(&mut fr.conv_1, x)?;
        y.extend(self.conv(&mut fr.conv_2, x)?);
        self.pass.bn(&mut fr.bn, &y)?;
        Ok(y)
    }

    fn op(&mut self, op: &mut Op, x: &Space) -> Result<Option<Space>> {
        Ok(Some(match op {
            Op::Zero => return Ok(None),
            Op::Identity => x.clone(),
            Op::Pool { bn, .. } => {
                if let Some(bn) = bn {
                    self.pass.bn(bn, x)?;
                }
                x.clone()
            }
            Op::SepConv(b) => {
                let y = self.dw_pw_bn(&mut b[0], x)?;
                self.dw_pw_bn(&mut b[1], &y)?
            }
            Op::DilConv(b) => self.dw_pw_bn(b, x)?,
            Op::Reduce(r) => self.factorized_reduce(r, x)?,
            Op::NorConv(b) => self.relu_conv_bn(b, x)?,
        }))
    }

    /// As `Cell::forward`: preprocess, each node the sum of its edges (a `none`-only node is
    /// zeros shaped like its first edge's input), the output the concatenation.
    fn cell(&mut self, cell: &mut Cell<Op>, inputs: &[Space]) -> Result<Space> {
        let mut states: Vec<Space> = if cell.preprocess.is_empty() {
            inputs.to_vec()
        } else {
            let mut pre = Vec::with_capacity(inputs.len());
            for (p, x) in cell.preprocess.iter_mut().zip(inputs) {
                pre.push(match p {
                    Preprocess::Reduce(r) => self.factorized_reduce(r, x)?,
                    Preprocess::Conv(b) => self.relu_conv_bn(b, x)?,
                });
            }
            pre
        };
        let mut e = 0;
        while e < cell.plan.len() {
            let (node, first) = (cell.plan[e].to, cell.plan[e].from);
            let mut sum: Option<Space> = None;
            while e < cell.plan.len() && cell.plan[e].to == node {
                let x = states[cell.plan[e].from].clone();
                if let Some(y) = self.op(&mut cell.edges[e], &x)? {
                    match &sum {
                        Some(s) => self.graph.unite(s, &y, "a cell node")?,
                        None => sum = Some(y),
                    }
                }
                e += 1;
            }
            let value = sum.unwrap_or_else(|| states[first].clone());
            states.push(value);
        }
        Ok(cell
            .output
            .iter()
            .flat_map(|&i| states[i].clone())
            .collect())
    }

    fn residual(&mut self, r: &mut ResidualBlock, x: &Space) -> Result<Space> {
        let a = self.relu_conv_bn(&mut r.conv_a, x)?;
        let b = self.relu_conv_bn(&mut r.conv_b, &a)?;
        let shortcut = self.conv(&mut r.downsample, x)?;
        self.graph.unite(&shortcut, &b, "a residual block")?;
        Ok(b)
    }

    /// As `Backbone::forward`.
    fn network(&mut self, net: &mut Network) -> Result<()> {
        let body = &mut net.body;
        let image = self.graph.fresh(body.stem.conv.weight.shape()[1], true);
        let stem = self.conv(&mut body.stem.conv, &image)?;
        self.pass.bn(&mut body.stem.bn, &stem)?;
        let mut window = vec![stem; body.inputs];
        for (i, block) in body.blocks.iter_mut().enumerate() {
            let out = match block {
                Block::Cell(cell) => self.cell(cell, &window)?,
                Block::Residual(r) => self.residual(r, window.last().expect("inputs >= 1"))?,
            };
            window.remove(0);
            window.push(out);
            if let Some(head) = &mut body.auxiliary_head {
                if i == body.aux_at {
                    self.pass
                        .auxiliary(head, window.last().expect("just pushed"))?;
                }
            }
        }
        let last = window.pop().expect("inputs >= 1");
        if let Some(bn) = &mut body.lastact {
            self.pass.bn(bn, &last)?;
        }
        self.pass.linear(&mut body.classifier, &last)
    }
}
