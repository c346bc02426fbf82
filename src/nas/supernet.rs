//! The search network ("supernet") of a space: the skeleton with a `MixedOp`, a softmax-weighted
//! sum of all candidate operations, on every edge. The architecture is one (edges × operations)
//! matrix per cell type, shared by all cells of that type: `alphas_normal` and `alphas_reduce`
//! in the DARTS space, `alphas_normal` alone in NAS-Bench-201 (it has no reduction cells).

use rand::Rng;

use super::primitives::Primitive;
use super::space::skeleton::{Backbone, MixedOp};
use super::space::{darts, nb201, Space};
use crate::error::{Error, Result};
use crate::nn::{join, Ctx, Module, ParamKind};
use crate::ops;
use crate::tensor::Tensor;

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
    /// The space whose skeleton this is; `layers` is then the cells per stage (N) and the cell
    /// shape (`steps`, `multiplier`, `stem_multiplier`) is the space's own.
    #[serde(default)]
    pub space: Space,
}

/// Intermediate nodes of a DARTS cell, all of them concatenated into its output.
pub const DARTS_STEPS: usize = 4;

impl SearchSpec {
    /// The paper's search network for `channels`, `layers` and the dataset's shape.
    pub fn darts(channels: usize, layers: usize, in_channels: usize, num_classes: usize) -> Self {
        SearchSpec {
            channels,
            layers,
            num_classes,
            in_channels,
            steps: DARTS_STEPS,
            multiplier: DARTS_STEPS,
            stem_multiplier: 3,
            primitives: super::primitives::DARTS_PRIMITIVES.to_vec(),
            space: Space::Darts,
        }
    }

    /// The NAS-Bench-201 search network: C channels, `n` cells per stage, the 5 benchmark ops.
    pub fn nb201(channels: usize, n: usize, in_channels: usize, num_classes: usize) -> Self {
        SearchSpec {
            channels,
            layers: n,
            num_classes,
            in_channels,
            steps: 3,
            multiplier: 1,
            stem_multiplier: 1,
            primitives: super::primitives::NB201_PRIMITIVES.to_vec(),
            space: Space::Nb201,
        }
    }

    /// Number of edges per cell: in DARTS node i has 2 + i inputs; NB201 has 6.
    pub fn edges(&self) -> usize {
        match self.space {
            Space::Darts => (0..self.steps).map(|i| 2 + i).sum(),
            Space::Nb201 => nb201::EDGES.len(),
        }
    }

    /// Alpha matrices: normal and reduction cells in DARTS, one in NB201.
    fn cell_types(&self) -> usize {
        match self.space {
            Space::Darts => 2,
            Space::Nb201 => 1,
        }
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
        if self.space == Space::Darts && !self.channels.is_multiple_of(2) {
            return bad("channels must be even (FactorizedReduce splits them in two halves)");
        }
        if self.space == Space::Nb201 && self.primitives != super::primitives::NB201_PRIMITIVES {
            return bad("the NAS-Bench-201 space searches its own 5 ops; drop --primitives");
        }
        if self.primitives.is_empty() || self.primitives.iter().all(|p| *p == Primitive::None) {
            return bad("needs at least one primitive other than none");
        }
        Ok(())
    }
}

/// The architecture parameters: one (edges × primitives) matrix per cell type, initialised to
/// 1e-3·N(0, 1) as in the reference.
pub struct Alphas {
    pub normal: Tensor,
    /// `None` in a space without reduction cells.
    pub reduce: Option<Tensor>,
    /// The softmax temperature τ: the mixing weights are softmax(α / τ). 1 in the paper; a
    /// search may anneal it (`SearchConfig::arch_temperature`). Not a parameter: the search
    /// sets it from its schedule before every step, so a checkpoint need not hold it.
    pub temperature: f32,
}

impl Alphas {
    pub fn new(edges: usize, n_ops: usize, cell_types: usize, rng: &mut impl Rng) -> Self {
        let mut draw = || Tensor::randn(&[edges, n_ops], 1e-3, rng).requires_grad();
        let normal = draw();
        let reduce = (cell_types > 1).then(draw);
        Alphas {
            normal,
            reduce,
            temperature: 1.0,
        }
    }

    /// The mixing weights of each matrix: the row-wise softmax(α / τ), in the graph.
    pub fn weights(&self) -> Result<Vec<Tensor>> {
        (self.matrices().into_iter())
            .map(|a| {
                // τ = 1 skips the scale, so the paper's search stays bit for bit as it was.
                if self.temperature == 1.0 {
                    ops::softmax(a)
                } else {
                    ops::softmax(&ops::scale(a, 1.0 / self.temperature)?)
                }
            })
            .collect()
    }

    /// The matrices in cell-type order (normal, then reduce).
    pub fn matrices(&self) -> Vec<&Tensor> {
        std::iter::once(&self.normal).chain(&self.reduce).collect()
    }

    /// The mixing weights ([`Alphas::weights`]) as plain host vectors (for genotypes and
    /// logs); the reduction one is empty in a space without reduction cells.
    pub fn softmaxed(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::no_grad(|| {
            let mut host = (self.weights()?.iter())
                .map(Tensor::try_to_vec)
                .collect::<Result<Vec<_>>>()?
                .into_iter();
            let normal = host.next().unwrap_or_default();
            Ok((normal, host.next().unwrap_or_default()))
        })
    }
}

impl Module for Alphas {
    crate::visitors!(|m, prefix, f| {
        m.normal
            .leaf(&join(prefix, "alphas_normal"), ParamKind::Weight, f);
        m.reduce
            .leaf(&join(prefix, "alphas_reduce"), ParamKind::Weight, f);
    });
}

/// The search network. Its `Module` view holds the network weights only; the alphas are a
/// separate module with their own optimiser, as in the bilevel formulation.
pub struct Network {
    pub spec: SearchSpec,
    body: Backbone<MixedOp>,
    pub alphas: Alphas,
}

impl Network {
    pub fn new(spec: SearchSpec, rng: &mut impl Rng) -> Result<Self> {
        spec.validate()?;
        let body = match spec.space {
            Space::Darts => darts::backbone(
                spec.channels,
                spec.layers,
                spec.stem_multiplier,
                spec.in_channels,
                spec.num_classes,
                None,
                rng,
                |shape, rng| {
                    darts::search_cell(&spec.primitives, spec.steps, spec.multiplier, shape, rng)
                },
            )?,
            Space::Nb201 => nb201::backbone(
                spec.channels,
                spec.layers,
                spec.in_channels,
                spec.num_classes,
                rng,
                nb201::search_cell,
            )?,
        };
        let alphas = Alphas::new(spec.edges(), spec.primitives.len(), spec.cell_types(), rng);
        Ok(Network { spec, body, alphas })
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`.
    pub fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let weights = self.alphas.weights()?;
        Ok(self.body.forward(x, &weights, 0.0, ctx)?.0)
    }

    /// Mean cross-entropy on a batch.
    pub fn loss(&mut self, x: &Tensor, labels: &[usize], ctx: &mut Ctx) -> Result<Tensor> {
        let logits = self.forward(x, ctx)?;
        ops::cross_entropy(&logits, labels)
    }
}

impl Module for Network {
    crate::visitors!(|m, prefix, f| {
        m.body.walk(prefix, f);
    });
}
