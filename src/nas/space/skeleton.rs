//! The one model skeleton every network of every search space is an instance of. A cell is its
//! inputs' preprocessing, a list of edges (from-state, to-node, stride) and the states its output
//! concatenates; a backbone is the stem, a sequence of cells and residual blocks, and the head.
//! Both are generic over what sits on an edge: a [`MixedOp`] (softmax-weighted candidates) while
//! searching, one chosen [`Op`] when training. The spaces (`darts.rs`, `nb201.rs`) only say
//! which edges, which blocks and which channel counts.

use rand::Rng;

use crate::error::{Error, Result};
use crate::nas::operations::{Op, Preprocess, ResidualBlock, Shared};
use crate::nas::primitives::Primitive;
use crate::nn::{join, BatchNorm2d, Conv2d, Ctx, Layer, Linear, Module, ParamKind, Sequential};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

/// One edge of a cell: it reads state `from` and feeds node state `to` at `stride`. States are
/// numbered inputs first (a DARTS cell's two, a NAS-Bench-201 cell's one), then nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    pub from: usize,
    pub to: usize,
    pub stride: usize,
}

/// What an edge needs besides its input: while searching, its row `edge` of the cell's
/// softmaxed alphas; while training, the drop-path probability.
#[derive(Clone, Copy)]
pub struct EdgeCtx<'a> {
    pub weights: Option<&'a Tensor>,
    pub edge: usize,
    pub drop_prob: f32,
}

/// What sits on an edge.
pub trait Edge: Module {
    /// The edge's output on its source state `x`, or `None` when it adds nothing.
    fn forward(
        &mut self,
        x: &Tensor,
        shared: &mut Shared,
        at: EdgeCtx,
        ctx: &mut Ctx,
    ) -> Result<Option<Tensor>>;
}

/// `Σ_k softmax(α_edge)_k · op_k(x)` over the candidate operations of one edge.
pub struct MixedOp {
    ops: Vec<Op>,
}

impl MixedOp {
    /// The candidates `primitives` on `c` channels at `stride`, as the search builds them (BN
    /// without affine; `pool_bn`: a BN after each pool, as in the DARTS search network).
    pub fn new(
        primitives: &[Primitive],
        c: usize,
        stride: usize,
        pool_bn: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let ops = primitives
            .iter()
            .map(|&p| Op::new(p, c, stride, false, pool_bn, rng))
            .collect::<Result<_>>()?;
        Ok(MixedOp { ops })
    }
}

impl Module for MixedOp {
    crate::visitors!(|m, prefix, f| {
        m.ops.walk(&join(prefix, "_ops"), f);
    });
}

impl Edge for MixedOp {
    fn forward(
        &mut self,
        x: &Tensor,
        shared: &mut Shared,
        at: EdgeCtx,
        ctx: &mut Ctx,
    ) -> Result<Option<Tensor>> {
        let weights = at.weights.ok_or_else(|| {
            Error::InvalidArgument("a MixedOp needs the cell's softmaxed alphas".into())
        })?;
        let n_ops = self.ops.len();
        let mut outs = Vec::with_capacity(n_ops);
        for (k, op) in self.ops.iter_mut().enumerate() {
            if let Some(y) = op.forward_shared(x, shared, ctx)? {
                outs.push((at.edge * n_ops + k, y));
            }
        }
        let terms: Vec<(usize, &Tensor)> = outs.iter().map(|(i, t)| (*i, t)).collect();
        ops::weighted_sum(&terms, weights).map(Some)
    }
}

/// A chosen op: drop-path on every edge but an identity while training, as in the reference.
impl Edge for Op {
    fn forward(
        &mut self,
        x: &Tensor,
        shared: &mut Shared,
        at: EdgeCtx,
        ctx: &mut Ctx,
    ) -> Result<Option<Tensor>> {
        let y = self.forward_shared(x, shared, ctx)?;
        match y {
            Some(y) if ctx.training && at.drop_prob > 0.0 && !matches!(self, Op::Identity) => {
                ops::drop_path(&y, at.drop_prob, &mut ctx.rng).map(Some)
            }
            y => Ok(y),
        }
    }
}

/// How a cell names its edges: the DARTS reference's list (`_ops.{e}`), or NAS-Bench-201's
/// dictionary keyed by the edge (`edges.{to}<-{from}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeNames {
    List,
    Arrows,
}

impl EdgeNames {
    fn name(self, e: usize, spec: EdgeSpec) -> String {
        match self {
            EdgeNames::List => format!("_ops.{e}"),
            EdgeNames::Arrows => format!("edges.{}<-{}", spec.to, spec.from),
        }
    }
}

/// A cell: each input preprocessed (or used as it is when there is no preprocessing), each node
/// the sum of the edges into it, the output the concatenation of the `output` states.
pub struct Cell<E> {
    /// A reduction cell reads the second alpha matrix (and halves the map).
    pub reduction: bool,
    pub(crate) preprocess: Vec<Preprocess>,
    pub(crate) plan: Vec<EdgeSpec>,
    pub(crate) edges: Vec<E>,
    pub(crate) output: Vec<usize>,
    names: EdgeNames,
}

impl<E: Edge> Cell<E> {
    /// Checks that the plan is a DAG in node order: edges grouped by target node, each node
    /// right after the states before it, each edge from an earlier state, the outputs existing.
    pub fn new(
        reduction: bool,
        inputs: usize,
        preprocess: Vec<Preprocess>,
        plan: Vec<EdgeSpec>,
        edges: Vec<E>,
        output: Vec<usize>,
        names: EdgeNames,
    ) -> Result<Self> {
        let bad = |msg: String| Err(Error::InvalidArgument(format!("cell: {msg}")));
        if !preprocess.is_empty() && preprocess.len() != inputs {
            return bad(format!(
                "{} preprocessing blocks for {inputs} inputs",
                preprocess.len()
            ));
        }
        if plan.len() != edges.len() {
            return bad(format!(
                "{} edges for a plan of {}",
                edges.len(),
                plan.len()
            ));
        }
        let mut states = inputs;
        for e in &plan {
            if e.to == states {
                states += 1;
            }
            if e.to + 1 != states || e.from >= e.to || e.stride == 0 {
                return bad(format!("edge {e:?} is out of node order"));
            }
        }
        if output.is_empty() || output.iter().any(|&o| o >= states) {
            return bad(format!("output states {output:?} of {states}"));
        }
        Ok(Cell {
            reduction,
            preprocess,
            plan,
            edges,
            output,
            names,
        })
    }

    /// The cell on its input states; `weights` are its softmaxed alphas when it searches.
    pub fn forward(
        &mut self,
        inputs: &[&Tensor],
        weights: Option<&Tensor>,
        drop_prob: f32,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let mut states: Vec<Tensor> = if self.preprocess.is_empty() {
            inputs.iter().map(|&t| t.clone()).collect()
        } else {
            let mut pre = Vec::with_capacity(inputs.len());
            for (p, x) in self.preprocess.iter_mut().zip(inputs) {
                pre.push(p.forward(x, ctx)?);
            }
            pre
        };
        let mut shared: Vec<Shared> = states.iter().map(|_| Shared::default()).collect();
        let mut e = 0;
        while e < self.plan.len() {
            let node = self.plan[e].to;
            let first = self.plan[e];
            let mut sum: Option<Tensor> = None;
            while e < self.plan.len() && self.plan[e].to == node {
                let from = self.plan[e].from;
                let at = EdgeCtx {
                    weights,
                    edge: e,
                    drop_prob,
                };
                let y = self.edges[e].forward(&states[from], &mut shared[from], at, ctx)?;
                if let Some(y) = y {
                    sum = Some(match sum {
                        Some(s) => ops::add(&s, &y)?,
                        None => y,
                    });
                }
                e += 1;
            }
            let value = match sum {
                Some(s) => s,
                // Every edge into the node is `none` (NAS-Bench-201 allows it): zeros.
                None => {
                    let (n, c, h, w) = states[first.from].dims4("Cell")?;
                    let s = first.stride;
                    let shape = [n, c, h.div_ceil(s), w.div_ceil(s)];
                    Tensor::full_on(&shape, 0.0, states[first.from].device())?
                }
            };
            states.push(value);
            shared.push(Shared::default());
        }
        match self.output.as_slice() {
            [one] => Ok(states[*one].clone()),
            many => ops::concat(&many.iter().map(|&i| &states[i]).collect::<Vec<_>>()),
        }
    }

    /// How many channel groups the output concatenates.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }
}

impl<E: Edge> Module for Cell<E> {
    crate::visitors!(|m, prefix, f| {
        for i in 0..m.preprocess.len() {
            m.preprocess[i].walk(&join(prefix, &format!("preprocess{i}")), f);
        }
        let names = m.names;
        for e in 0..m.edges.len() {
            let name = names.name(e, m.plan[e]);
            m.edges[e].walk(&join(prefix, &name), f);
        }
    });
}

/// A block of the backbone: a cell, or NAS-Bench-201's residual reduction between stages.
pub enum Block<E> {
    Cell(Cell<E>),
    Residual(Box<ResidualBlock>),
}

impl<E: Edge> Module for Block<E> {
    crate::visitors!(|m, prefix, f| {
        match m {
            Block::Cell(c) => c.walk(prefix, f),
            Block::Residual(r) => r.walk(prefix, f),
        }
    });
}

/// The reference `AuxiliaryHeadCIFAR`, with its pooling sized so any map of at least 3×3 ends
/// at 2×2 (8×8 maps: 5×5 stride 3 as in the paper; 7×7 maps of 28×28 inputs: 5×5 stride 2).
pub struct AuxiliaryHead {
    features: Sequential,
    classifier: Linear,
}

impl AuxiliaryHead {
    /// The name (in the head) of its one layer that reads the cell's channels.
    pub const INPUT_CONV: &'static str = "features.2.weight";

    pub fn new(c: usize, map: usize, num_classes: usize, rng: &mut impl Rng) -> Result<Self> {
        use crate::nn::{AvgPool2d, ReLU};
        if map < 3 {
            return Err(Error::InvalidArgument(format!(
                "the auxiliary head needs maps of at least 3×3 after the second reduction, got {map}×{map}; use a larger image or --no-auxiliary"
            )));
        }
        let (k, s) = if map >= 6 { (5, map - 5) } else { (map - 1, 1) };
        let cfg = Conv2dCfg::default();
        let features = Sequential::new()
            .with(ReLU)
            .with(AvgPool2d::new(k, s, 0)?)
            .with(Conv2d::new(c, 128, 1, cfg, false, rng)?)
            .with(BatchNorm2d::new(128, true)?)
            .with(ReLU)
            .with(Conv2d::new(128, 768, 2, cfg, false, rng)?)
            .with(BatchNorm2d::new(768, true)?)
            .with(ReLU);
        Ok(AuxiliaryHead {
            features,
            classifier: Linear::new(768, num_classes, true, rng)?,
        })
    }

    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.features.forward(x, ctx)?;
        let (n, c, h, w) = y.dims4("AuxiliaryHead")?;
        self.classifier.forward(&y.reshape(&[n, c * h * w])?, ctx)
    }
}

impl Module for AuxiliaryHead {
    crate::visitors!(|m, prefix, f| {
        m.features.walk(&join(prefix, "features"), f);
        m.classifier.walk(&join(prefix, "classifier"), f);
    });
}

/// The stem: a 3×3 conv and a BN. Built before the blocks, so that a seed draws the same
/// initial weights in the same order as the reference code.
pub struct Stem {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm2d,
}

impl Stem {
    pub fn new(in_channels: usize, channels: usize, rng: &mut impl Rng) -> Result<Self> {
        let cfg = Conv2dCfg {
            padding: 1,
            ..Conv2dCfg::default()
        };
        Ok(Stem {
            conv: Conv2d::new(in_channels, channels, 3, cfg, false, rng)?,
            bn: BatchNorm2d::new(channels, true)?,
        })
    }
}

/// Stem (3×3 conv + BN), blocks, optionally BN-ReLU (NAS-Bench-201's `lastact`), global average
/// pooling and a linear classifier; an auxiliary head may read one block's output in training.
pub struct Backbone<E> {
    pub(crate) stem: Stem,
    pub(crate) blocks: Vec<Block<E>>,
    /// How many of the latest states a cell reads (DARTS: c_{k-2} and c_{k-1}; NB201: one).
    pub(crate) inputs: usize,
    pub(crate) lastact: Option<BatchNorm2d>,
    pub(crate) classifier: Linear,
    pub(crate) auxiliary_head: Option<AuxiliaryHead>,
    /// The block whose output the auxiliary head reads.
    pub(crate) aux_at: usize,
}

impl<E: Edge> Backbone<E> {
    /// A backbone whose classifier reads `out_channels`; `auxiliary`: the auxiliary head and
    /// the block whose output it reads.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stem: Stem,
        blocks: Vec<Block<E>>,
        inputs: usize,
        lastact: bool,
        out_channels: usize,
        num_classes: usize,
        auxiliary: Option<(usize, AuxiliaryHead)>,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Ok(Backbone {
            stem,
            blocks,
            inputs,
            lastact: lastact
                .then(|| BatchNorm2d::new(out_channels, true))
                .transpose()?,
            classifier: Linear::new(out_channels, num_classes, true, rng)?,
            aux_at: auxiliary.as_ref().map_or(0, |a| a.0),
            auxiliary_head: auxiliary.map(|a| a.1),
        })
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`, and the auxiliary logits when training
    /// with a head. `weights`: the softmaxed alphas of normal and reduction cells (searching).
    pub fn forward(
        &mut self,
        x: &Tensor,
        weights: &[Tensor],
        drop_prob: f32,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let stem = self
            .stem
            .bn
            .forward(&self.stem.conv.forward(x, ctx)?, ctx)?;
        let mut window = vec![stem; self.inputs];
        let mut aux = None;
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let out = match block {
                Block::Cell(cell) => {
                    let w = weights.get(usize::from(cell.reduction));
                    let inputs: Vec<&Tensor> = window.iter().collect();
                    cell.forward(&inputs, w, drop_prob, ctx)?
                }
                Block::Residual(r) => r.forward(window.last().expect("inputs >= 1"), ctx)?,
            };
            window.remove(0);
            window.push(out);
            if let Some(head) = &mut self.auxiliary_head {
                if i == self.aux_at && ctx.training {
                    aux = Some(head.forward(window.last().expect("just pushed"), ctx)?);
                }
            }
        }
        let mut last = window.pop().expect("inputs >= 1");
        if let Some(bn) = &mut self.lastact {
            last = ops::relu(&bn.forward(&last, ctx)?)?;
        }
        let logits = self
            .classifier
            .forward(&ops::global_avg_pool(&last)?, ctx)?;
        Ok((logits, aux))
    }
}

impl<E: Edge> Module for Backbone<E> {
    crate::visitors!(|m, prefix, f| {
        m.stem.conv.walk(&join(prefix, "stem.0"), f);
        m.stem.bn.walk(&join(prefix, "stem.1"), f);
        m.blocks.walk(&join(prefix, "cells"), f);
        m.auxiliary_head.walk(&join(prefix, "auxiliary_head"), f);
        m.lastact.walk(&join(prefix, "lastact.0"), f);
        m.classifier.walk(&join(prefix, "classifier"), f);
    });
}

/// Weights outside the auxiliary head (what papers count).
pub fn param_count_without_auxiliary<M: Module>(m: &M) -> usize {
    let mut n = 0;
    m.visit("", &mut |name, t, kind| {
        if kind == ParamKind::Weight && !name.starts_with("auxiliary_head.") {
            n += t.numel();
        }
    });
    n
}
