//! The DARTS space on the skeleton: cells with two preprocessed inputs (c_{k-2}, c_{k-1}) and
//! `steps` nodes, reduction cells at 1/3 and 2/3 of the depth that double the channels and
//! halve the map (stride 2 on the edges from the inputs), a stem of `stem_multiplier`·C, and in
//! the evaluation network an auxiliary head after the second reduction.

use rand::Rng;

use super::skeleton::{
    AuxiliaryHead, Backbone, Block, Cell, Edge, EdgeNames, EdgeSpec, MixedOp, Stem,
};
use crate::error::Result;
use crate::nas::genotype::Genotype;
use crate::nas::operations::{Op, Preprocess};
use crate::nas::primitives::Primitive;

/// Where a cell sits in the macro network: its input and own channel counts.
#[derive(Clone, Copy, Debug)]
pub struct CellShape {
    pub c_pp: usize,
    pub c_p: usize,
    pub c: usize,
    pub reduction: bool,
    pub reduction_prev: bool,
}

/// The stride of an edge from state `from`: 2 from a reduction cell's inputs.
fn stride(shape: CellShape, from: usize) -> usize {
    if shape.reduction && from < 2 {
        2
    } else {
        1
    }
}

/// c_{k-2} through a FactorizedReduce after a reduction (it is twice as large), else a 1×1
/// ReLU-Conv-BN; c_{k-1} through a 1×1 ReLU-Conv-BN.
fn preprocess(shape: CellShape, affine: bool, rng: &mut impl Rng) -> Result<Vec<Preprocess>> {
    Ok(vec![
        Preprocess::new(shape.c_pp, shape.c, shape.reduction_prev, affine, rng)?,
        Preprocess::new(shape.c_p, shape.c, false, affine, rng)?,
    ])
}

/// A search cell: node i sums a MixedOp over every earlier state; the output concatenates the
/// last `multiplier` nodes.
pub fn search_cell(
    primitives: &[Primitive],
    steps: usize,
    multiplier: usize,
    shape: CellShape,
    rng: &mut impl Rng,
) -> Result<Cell<MixedOp>> {
    let pre = preprocess(shape, false, rng)?;
    let mut plan = Vec::new();
    let mut edges = Vec::new();
    for i in 0..steps {
        for from in 0..2 + i {
            let stride = stride(shape, from);
            plan.push(EdgeSpec {
                from,
                to: 2 + i,
                stride,
            });
            edges.push(MixedOp::new(primitives, shape.c, stride, true, rng)?);
        }
    }
    let output = (2 + steps - multiplier..2 + steps).collect();
    Cell::new(
        shape.reduction,
        2,
        pre,
        plan,
        edges,
        output,
        EdgeNames::List,
    )
}

/// An evaluation cell: node i = the sum of its two genes' ops; the output concatenates the
/// genotype's concat states.
pub fn eval_cell(genotype: &Genotype, shape: CellShape, rng: &mut impl Rng) -> Result<Cell<Op>> {
    let pre = preprocess(shape, true, rng)?;
    let (genes, concat) = if shape.reduction {
        (&genotype.reduce, &genotype.reduce_concat)
    } else {
        (&genotype.normal, &genotype.normal_concat)
    };
    let mut plan = Vec::with_capacity(genes.len());
    let mut edges = Vec::with_capacity(genes.len());
    for (g, &(prim, from)) in genes.iter().enumerate() {
        let stride = stride(shape, from);
        plan.push(EdgeSpec {
            from,
            to: 2 + g / 2,
            stride,
        });
        edges.push(Op::new(prim, shape.c, stride, true, false, rng)?);
    }
    Cell::new(
        shape.reduction,
        2,
        pre,
        plan,
        edges,
        concat.clone(),
        EdgeNames::List,
    )
}

/// The DARTS macro network of `layers` cells built by `cell`; `auxiliary`: the image size, to
/// put the auxiliary head after the second reduction.
#[allow(clippy::too_many_arguments)]
pub fn backbone<E: Edge, R: Rng>(
    channels: usize,
    layers: usize,
    stem_multiplier: usize,
    in_channels: usize,
    num_classes: usize,
    auxiliary: Option<usize>,
    rng: &mut R,
    mut cell: impl FnMut(CellShape, &mut R) -> Result<Cell<E>>,
) -> Result<Backbone<E>> {
    let c_stem = stem_multiplier * channels;
    let stem = Stem::new(in_channels, c_stem, rng)?;
    let (mut c_pp, mut c_p, mut c) = (c_stem, c_stem, channels);
    let (mut reduction_prev, mut map) = (false, auxiliary.unwrap_or(0));
    let mut blocks = Vec::with_capacity(layers);
    let mut head = None;
    for i in 0..layers {
        let reduction = i == layers / 3 || i == 2 * layers / 3;
        if reduction {
            c *= 2;
            map = map.div_ceil(2);
        }
        let shape = CellShape {
            c_pp,
            c_p,
            c,
            reduction,
            reduction_prev,
        };
        let built = cell(shape, rng)?;
        (c_pp, c_p) = (c_p, built.output_len() * c);
        blocks.push(Block::Cell(built));
        reduction_prev = reduction;
        if i == 2 * layers / 3 && auxiliary.is_some() {
            head = Some((i, AuxiliaryHead::new(c_p, map, num_classes, rng)?));
        }
    }
    Backbone::new(stem, blocks, 2, false, c_p, num_classes, head, rng)
}
