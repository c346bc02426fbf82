//! The DARTS search network ("supernet"): every cell edge is a `MixedOp`, a softmax-weighted sum
//! of all candidate operations, and the architecture is the pair of matrices `alphas_normal`
//! and `alphas_reduce` (edges × operations) shared by all normal and all reduction cells.

use rand::Rng;

use super::operations::{Op, Preprocess, ReluConvBn};
use super::primitives::Primitive;
use crate::error::{Error, Result};
use crate::nn::{join, BatchNorm2d, Conv2d, Ctx, Layer, Linear, Module, ParamKind};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

type Visit<'a> = dyn FnMut(&str, &Tensor, ParamKind) + 'a;
type VisitMut<'a> = dyn FnMut(&str, &mut Tensor, ParamKind) + 'a;

/// Shape of a search network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchSpec {
    /// Initial channels C (16 in the paper).
    pub channels: usize,
    /// Number of cells (8 in the paper); reductions sit at 1/3 and 2/3 of the depth.
    pub layers: usize,
    pub num_classes: usize,
    pub in_channels: usize,
    /// Intermediate nodes per cell (4).
    pub steps: usize,
    /// How many of the last nodes a cell concatenates into its output (4).
    pub multiplier: usize,
    /// Stem width as a multiple of C (3).
    pub stem_multiplier: usize,
    /// Candidate operations, in alpha column order.
    pub primitives: Vec<Primitive>,
}

impl SearchSpec {
    /// The paper's search network for `channels`, `layers` and the dataset's shape.
    pub fn darts(channels: usize, layers: usize, in_channels: usize, num_classes: usize) -> Self {
        SearchSpec {
            channels,
            layers,
            num_classes,
            in_channels,
            steps: 4,
            multiplier: 4,
            stem_multiplier: 3,
            primitives: super::primitives::DARTS_PRIMITIVES.to_vec(),
        }
    }

    /// Number of edges per cell: node i has 2 + i inputs.
    pub fn edges(&self) -> usize {
        (0..self.steps).map(|i| 2 + i).sum()
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("search network: {what}")));
        if self.channels == 0 || self.layers == 0 || self.num_classes == 0 || self.in_channels == 0
        {
            return bad("channels, layers, classes and input channels must all be positive");
        }
        if self.steps == 0
            || self.multiplier == 0
            || self.multiplier > self.steps
            || self.stem_multiplier == 0
        {
            return bad("need 1 <= multiplier <= steps and a positive stem multiplier");
        }
        if self.channels % 2 != 0 {
            return bad("channels must be even (FactorizedReduce splits them in two halves)");
        }
        if self.primitives.is_empty() || self.primitives.iter().all(|p| *p == Primitive::None) {
            return bad("needs at least one primitive other than none");
        }
        Ok(())
    }
}

/// `Σ_k softmax(α_edge)_k · op_k(x)` over the candidate operations of one edge.
pub struct MixedOp {
    ops: Vec<Op>,
}

impl MixedOp {
    fn new(primitives: &[Primitive], c: usize, stride: usize, rng: &mut impl Rng) -> Result<Self> {
        let ops = primitives
            .iter()
            .map(|&p| Op::new(p, c, stride, false, true, rng))
            .collect::<Result<_>>()?;
        Ok(MixedOp { ops })
    }

    /// `weights` is the softmaxed alpha matrix; this edge uses row `edge`.
    fn forward(
        &mut self,
        x: &Tensor,
        weights: &Tensor,
        edge: usize,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let n_ops = self.ops.len();
        let mut outs = Vec::with_capacity(n_ops);
        let mut relu_x = None;
        for (k, op) in self.ops.iter_mut().enumerate() {
            if !op.is_zero() {
                outs.push((edge * n_ops + k, op.forward_shared(x, &mut relu_x, ctx)?));
            }
        }
        let terms: Vec<(usize, &Tensor)> = outs.iter().map(|(i, t)| (*i, t)).collect();
        ops::weighted_sum(&terms, weights)
    }

    fn visit(&self, prefix: &str, f: &mut Visit) {
        for (k, op) in self.ops.iter().enumerate() {
            op.visit(&join(prefix, &format!("_ops.{k}")), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        for (k, op) in self.ops.iter_mut().enumerate() {
            op.visit_mut(&join(prefix, &format!("_ops.{k}")), f);
        }
    }
}

/// A search cell: two preprocessed inputs, `steps` nodes each summing a MixedOp over every
/// earlier state, output = concatenation of the last `multiplier` nodes.
pub struct SearchCell {
    pub reduction: bool,
    preprocess0: Preprocess,
    preprocess1: ReluConvBn,
    ops: Vec<MixedOp>,
    steps: usize,
    multiplier: usize,
}

impl SearchCell {
    #[allow(clippy::too_many_arguments)]
    fn new(
        spec: &SearchSpec,
        c_pp: usize,
        c_p: usize,
        c: usize,
        reduction: bool,
        reduction_prev: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let preprocess0 = Preprocess::new(c_pp, c, reduction_prev, false, rng)?;
        let preprocess1 = ReluConvBn::new(c_p, c, 1, 1, 0, false, rng)?;
        let mut ops = Vec::new();
        for i in 0..spec.steps {
            for j in 0..2 + i {
                let stride = if reduction && j < 2 { 2 } else { 1 };
                ops.push(MixedOp::new(&spec.primitives, c, stride, rng)?);
            }
        }
        Ok(SearchCell {
            reduction,
            preprocess0,
            preprocess1,
            ops,
            steps: spec.steps,
            multiplier: spec.multiplier,
        })
    }

    fn forward(
        &mut self,
        s0: &Tensor,
        s1: &Tensor,
        weights: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let s0 = self.preprocess0.forward(s0, ctx)?;
        let s1 = self.preprocess1.forward(s1, ctx)?;
        let mut states = vec![s0, s1];
        let mut offset = 0;
        for _ in 0..self.steps {
            let mut sum: Option<Tensor> = None;
            for (j, state) in states.iter().enumerate() {
                let y = self.ops[offset + j].forward(state, weights, offset + j, ctx)?;
                sum = Some(match sum {
                    Some(s) => ops::add(&s, &y)?,
                    None => y,
                });
            }
            offset += states.len();
            states.push(sum.expect("every node has at least two inputs"));
        }
        let last: Vec<&Tensor> = states[states.len() - self.multiplier..].iter().collect();
        ops::concat(&last)
    }

    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.preprocess0.visit(&join(prefix, "preprocess0"), f);
        self.preprocess1.visit(&join(prefix, "preprocess1"), f);
        for (e, op) in self.ops.iter().enumerate() {
            op.visit(&join(prefix, &format!("_ops.{e}")), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.preprocess0.visit_mut(&join(prefix, "preprocess0"), f);
        self.preprocess1.visit_mut(&join(prefix, "preprocess1"), f);
        for (e, op) in self.ops.iter_mut().enumerate() {
            op.visit_mut(&join(prefix, &format!("_ops.{e}")), f);
        }
    }
}

/// The architecture parameters: one (edges × primitives) matrix for normal cells, one for
/// reduction cells, initialised to 1e-3·N(0, 1) as in the reference.
pub struct Alphas {
    pub normal: Tensor,
    pub reduce: Tensor,
}

impl Alphas {
    pub fn new(edges: usize, n_ops: usize, rng: &mut impl Rng) -> Self {
        Alphas {
            normal: Tensor::randn(&[edges, n_ops], 1e-3, rng).requires_grad(),
            reduce: Tensor::randn(&[edges, n_ops], 1e-3, rng).requires_grad(),
        }
    }

    /// Row-wise softmax of both matrices, as plain host vectors (for genotypes and logs).
    pub fn softmaxed(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::no_grad(|| {
            Ok((
                ops::softmax(&self.normal)?.try_to_vec()?,
                ops::softmax(&self.reduce)?.try_to_vec()?,
            ))
        })
    }
}

impl Module for Alphas {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        f(
            &join(prefix, "alphas_normal"),
            &self.normal,
            ParamKind::Weight,
        );
        f(
            &join(prefix, "alphas_reduce"),
            &self.reduce,
            ParamKind::Weight,
        );
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        f(
            &join(prefix, "alphas_normal"),
            &mut self.normal,
            ParamKind::Weight,
        );
        f(
            &join(prefix, "alphas_reduce"),
            &mut self.reduce,
            ParamKind::Weight,
        );
    }
}

/// The search network. Its `Module` view holds the network weights only; the alphas are a
/// separate module with their own optimiser, as in the bilevel formulation.
pub struct Network {
    pub spec: SearchSpec,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
    cells: Vec<SearchCell>,
    classifier: Linear,
    pub alphas: Alphas,
}

impl Network {
    pub fn new(spec: SearchSpec, rng: &mut impl Rng) -> Result<Self> {
        spec.validate()?;
        let c_stem = spec.stem_multiplier * spec.channels;
        let stem_cfg = Conv2dCfg {
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
        };
        let stem_conv = Conv2d::new(spec.in_channels, c_stem, 3, stem_cfg, false, rng)?;
        let stem_bn = BatchNorm2d::new(c_stem, true)?;
        let (mut c_pp, mut c_p, mut c) = (c_stem, c_stem, spec.channels);
        let mut cells = Vec::with_capacity(spec.layers);
        let mut reduction_prev = false;
        for i in 0..spec.layers {
            let reduction = i == spec.layers / 3 || i == 2 * spec.layers / 3;
            if reduction {
                c *= 2;
            }
            cells.push(SearchCell::new(
                &spec,
                c_pp,
                c_p,
                c,
                reduction,
                reduction_prev,
                rng,
            )?);
            reduction_prev = reduction;
            (c_pp, c_p) = (c_p, spec.multiplier * c);
        }
        let classifier = Linear::new(c_p, spec.num_classes, true, rng)?;
        let alphas = Alphas::new(spec.edges(), spec.primitives.len(), rng);
        Ok(Network {
            spec,
            stem_conv,
            stem_bn,
            cells,
            classifier,
            alphas,
        })
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`.
    pub fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let stem = self
            .stem_bn
            .forward(&self.stem_conv.forward(x, ctx)?, ctx)?;
        let w_normal = ops::softmax(&self.alphas.normal)?;
        let w_reduce = ops::softmax(&self.alphas.reduce)?;
        let (mut s0, mut s1) = (stem.clone(), stem);
        for cell in &mut self.cells {
            let w = if cell.reduction { &w_reduce } else { &w_normal };
            let s2 = cell.forward(&s0, &s1, w, ctx)?;
            (s0, s1) = (s1, s2);
        }
        self.classifier.forward(&ops::global_avg_pool(&s1)?, ctx)
    }

    /// Mean cross-entropy on a batch.
    pub fn loss(&mut self, x: &Tensor, labels: &[usize], ctx: &mut Ctx) -> Result<Tensor> {
        let logits = self.forward(x, ctx)?;
        ops::cross_entropy(&logits, labels)
    }
}

impl Module for Network {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.stem_conv.visit(&join(prefix, "stem.0"), f);
        self.stem_bn.visit(&join(prefix, "stem.1"), f);
        for (i, cell) in self.cells.iter().enumerate() {
            cell.visit(&join(prefix, &format!("cells.{i}")), f);
        }
        self.classifier.visit(&join(prefix, "classifier"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.stem_conv.visit_mut(&join(prefix, "stem.0"), f);
        self.stem_bn.visit_mut(&join(prefix, "stem.1"), f);
        for (i, cell) in self.cells.iter_mut().enumerate() {
            cell.visit_mut(&join(prefix, &format!("cells.{i}")), f);
        }
        self.classifier.visit_mut(&join(prefix, "classifier"), f);
    }
}
