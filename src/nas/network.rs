//! The evaluation network built from a genotype (the reference `model.py`, `NetworkCIFAR`):
//! stem, cells with reductions at 1/3 and 2/3 of the depth, each node the sum of two chosen
//! operations, drop-path on every non-identity edge while training, and an optional auxiliary
//! head after the second reduction. The operations are the search network's, built by the same
//! code in `operations.rs` (with affine BN and no BN after pools).

use rand::Rng;

use super::genotype::Genotype;
use super::operations::{Op, Preprocess, ReluConvBn};
use crate::error::{Error, Result};
use crate::nn::{
    join, AvgPool2d, BatchNorm2d, Conv2d, Ctx, Layer, Linear, Module, ParamKind, ReLU, Sequential,
};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

type Visit<'a> = dyn FnMut(&str, &Tensor, ParamKind) + 'a;
type VisitMut<'a> = dyn FnMut(&str, &mut Tensor, ParamKind) + 'a;

/// Shape of an evaluation network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkSpec {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub in_channels: usize,
    /// Height (= width) of the input images; sizes the auxiliary head's pooling.
    pub image_size: usize,
    pub auxiliary: bool,
    pub genotype: Genotype,
}

/// A discrete cell: node i = op(states[a]) + op(states[b]) for its two genes.
pub struct Cell {
    pub reduction: bool,
    preprocess0: Preprocess,
    preprocess1: ReluConvBn,
    ops: Vec<Op>,
    indices: Vec<usize>,
    concat: Vec<usize>,
}

impl Cell {
    fn new(
        g: &Genotype,
        c_pp: usize,
        c_p: usize,
        c: usize,
        reduction: bool,
        reduction_prev: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let preprocess0 = Preprocess::new(c_pp, c, reduction_prev, true, rng)?;
        let preprocess1 = ReluConvBn::new(c_p, c, 1, 1, 0, true, rng)?;
        let (genes, concat) = if reduction {
            (&g.reduce, &g.reduce_concat)
        } else {
            (&g.normal, &g.normal_concat)
        };
        let mut ops = Vec::with_capacity(genes.len());
        for &(prim, index) in genes {
            let stride = if reduction && index < 2 { 2 } else { 1 };
            ops.push(Op::new(prim, c, stride, true, false, rng)?);
        }
        Ok(Cell {
            reduction,
            preprocess0,
            preprocess1,
            ops,
            indices: genes.iter().map(|g| g.1).collect(),
            concat: concat.clone(),
        })
    }

    fn forward(
        &mut self,
        s0: &Tensor,
        s1: &Tensor,
        drop_prob: f32,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let s0 = self.preprocess0.forward(s0, ctx)?;
        let mut states = vec![s0, self.preprocess1.forward(s1, ctx)?];
        // A pool without BN has no parameters, so the same pool of the same state is the same
        // map: it is computed once (DARTS_V2's reduction cell max-pools c_{k-1} three times and
        // c_{k-2} twice). Drop-path below still draws one mask per edge.
        let mut pooled: Vec<((bool, usize, usize), Tensor)> = Vec::new();
        // Likewise the convs on one state share its ReLU.
        let mut relus: Vec<Option<Tensor>> = vec![None; 2 + self.ops.len() / 2];
        for pair in 0..self.ops.len() / 2 {
            let mut h = [None, None];
            for (k, slot) in h.iter_mut().enumerate() {
                let i = 2 * pair + k;
                let (op, x) = (&mut self.ops[i], &states[self.indices[i]]);
                let mut y = match op {
                    Op::Pool {
                        max,
                        stride,
                        bn: None,
                    } => {
                        let key = (*max, *stride, self.indices[i]);
                        match pooled.iter().find(|(k, _)| *k == key) {
                            Some((_, y)) => y.clone(),
                            None => {
                                let y = op.forward(x, ctx)?;
                                pooled.push((key, y.clone()));
                                y
                            }
                        }
                    }
                    _ => op.forward_shared(x, &mut relus[self.indices[i]], ctx)?,
                };
                if ctx.training && drop_prob > 0.0 && !matches!(op, Op::Identity) {
                    y = ops::drop_path(&y, drop_prob, &mut ctx.rng)?;
                }
                *slot = Some(y);
            }
            let [Some(a), Some(b)] = h else {
                unreachable!("both slots filled above")
            };
            states.push(ops::add(&a, &b)?);
        }
        let out: Vec<&Tensor> = self.concat.iter().map(|&i| &states[i]).collect();
        ops::concat(&out)
    }

    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.preprocess0.visit(&join(prefix, "preprocess0"), f);
        self.preprocess1.visit(&join(prefix, "preprocess1"), f);
        for (i, op) in self.ops.iter().enumerate() {
            op.visit(&join(prefix, &format!("_ops.{i}")), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.preprocess0.visit_mut(&join(prefix, "preprocess0"), f);
        self.preprocess1.visit_mut(&join(prefix, "preprocess1"), f);
        for (i, op) in self.ops.iter_mut().enumerate() {
            op.visit_mut(&join(prefix, &format!("_ops.{i}")), f);
        }
    }
}

/// The reference `AuxiliaryHeadCIFAR`, with its pooling sized so any map of at least 3×3 ends
/// at 2×2 (8×8 maps: 5×5 stride 3 as in the paper; 7×7 maps of 28×28 inputs: 5×5 stride 2).
struct AuxiliaryHead {
    features: Sequential,
    classifier: Linear,
}

impl AuxiliaryHead {
    fn new(c: usize, map: usize, num_classes: usize, rng: &mut impl Rng) -> Result<Self> {
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
    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.features.visit(&join(prefix, "features"), f);
        self.classifier.visit(&join(prefix, "classifier"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.features.visit_mut(&join(prefix, "features"), f);
        self.classifier.visit_mut(&join(prefix, "classifier"), f);
    }
}

/// The network trained from scratch on a found genotype.
pub struct Network {
    pub spec: NetworkSpec,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
    cells: Vec<Cell>,
    auxiliary_head: Option<AuxiliaryHead>,
    classifier: Linear,
    /// Drop-path probability for the current epoch (ramped by the trainer).
    pub drop_path_prob: f32,
}

impl Network {
    pub fn new(spec: NetworkSpec, rng: &mut impl Rng) -> Result<Self> {
        let steps = spec.genotype.normal.len() / 2;
        spec.genotype.validate(steps)?;
        if spec.channels == 0 || spec.layers == 0 || spec.num_classes == 0 || spec.in_channels == 0
        {
            return Err(Error::InvalidArgument(
                "network: channels, layers, classes and input channels must be positive".into(),
            ));
        }
        if spec.channels % 2 != 0 {
            return Err(Error::InvalidArgument(
                "network: channels must be even (FactorizedReduce halves them)".into(),
            ));
        }
        let c_stem = 3 * spec.channels;
        let stem_conv = Conv2d::new(
            spec.in_channels,
            c_stem,
            3,
            Conv2dCfg {
                padding: 1,
                ..Conv2dCfg::default()
            },
            false,
            rng,
        )?;
        let stem_bn = BatchNorm2d::new(c_stem, true)?;
        let (mut c_pp, mut c_p, mut c) = (c_stem, c_stem, spec.channels);
        let mut cells = Vec::with_capacity(spec.layers);
        let (mut reduction_prev, mut map) = (false, spec.image_size);
        let mut aux = None;
        for i in 0..spec.layers {
            let reduction = i == spec.layers / 3 || i == 2 * spec.layers / 3;
            if reduction {
                c *= 2;
                map = map.div_ceil(2);
            }
            let cell = Cell::new(&spec.genotype, c_pp, c_p, c, reduction, reduction_prev, rng)?;
            let multiplier = cell.concat.len();
            cells.push(cell);
            reduction_prev = reduction;
            (c_pp, c_p) = (c_p, multiplier * c);
            if i == 2 * spec.layers / 3 && spec.auxiliary {
                aux = Some(AuxiliaryHead::new(c_p, map, spec.num_classes, rng)?);
            }
        }
        let classifier = Linear::new(c_p, spec.num_classes, true, rng)?;
        Ok(Network {
            spec,
            stem_conv,
            stem_bn,
            cells,
            auxiliary_head: aux,
            classifier,
            drop_path_prob: 0.0,
        })
    }

    /// Logits, and the auxiliary head's logits when training with one.
    pub fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Option<Tensor>)> {
        let stem = self
            .stem_bn
            .forward(&self.stem_conv.forward(x, ctx)?, ctx)?;
        let (mut s0, mut s1) = (stem.clone(), stem);
        let mut aux = None;
        let aux_at = 2 * self.spec.layers / 3;
        for (i, cell) in self.cells.iter_mut().enumerate() {
            let s2 = cell.forward(&s0, &s1, self.drop_path_prob, ctx)?;
            (s0, s1) = (s1, s2);
            if i == aux_at && ctx.training {
                if let Some(head) = &mut self.auxiliary_head {
                    aux = Some(head.forward(&s1, ctx)?);
                }
            }
        }
        Ok((
            self.classifier.forward(&ops::global_avg_pool(&s1)?, ctx)?,
            aux,
        ))
    }

    /// Weights without the auxiliary head (what the paper counts).
    pub fn param_count_without_auxiliary(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |name, t, kind| {
            if kind == ParamKind::Weight && !name.starts_with("auxiliary_head.") {
                n += t.numel();
            }
        });
        n
    }
}

impl Module for Network {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.stem_conv.visit(&join(prefix, "stem.0"), f);
        self.stem_bn.visit(&join(prefix, "stem.1"), f);
        for (i, cell) in self.cells.iter().enumerate() {
            cell.visit(&join(prefix, &format!("cells.{i}")), f);
        }
        if let Some(h) = &self.auxiliary_head {
            h.visit(&join(prefix, "auxiliary_head"), f);
        }
        self.classifier.visit(&join(prefix, "classifier"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.stem_conv.visit_mut(&join(prefix, "stem.0"), f);
        self.stem_bn.visit_mut(&join(prefix, "stem.1"), f);
        for (i, cell) in self.cells.iter_mut().enumerate() {
            cell.visit_mut(&join(prefix, &format!("cells.{i}")), f);
        }
        if let Some(h) = &mut self.auxiliary_head {
            h.visit_mut(&join(prefix, "auxiliary_head"), f);
        }
        self.classifier.visit_mut(&join(prefix, "classifier"), f);
    }
}
