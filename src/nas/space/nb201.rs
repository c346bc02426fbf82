//! The NAS-Bench-201 space on the skeleton (Dong & Yang, ICLR 2020): a cell of 4 nodes whose
//! node j sums one edge from each earlier node (6 edges, in the benchmark's order 1←0, 2←0,
//! 2←1, 3←0, 3←1, 3←2), ops `none`, `skip_connect`, `nor_conv_1x1`, `nor_conv_3x3`,
//! `avg_pool_3x3`, and the benchmark's macro network: stem 3×3 conv + BN, N cells at C, a
//! residual reduction block, N cells at 2C, another, N cells at 4C, BN-ReLU, global pool, linear.

pub mod arch;

pub use arch::{Nb201Arch, Nb201Op, EDGES, NUM_CELLS};

use rand::Rng;

use super::skeleton::{Backbone, Block, Cell, Edge, EdgeNames, EdgeSpec, MixedOp, Stem};
use crate::error::Result;
use crate::nas::operations::{Op, ResidualBlock};
use crate::nas::primitives::{Primitive, NB201_PRIMITIVES};

/// The cell's edges in the benchmark's order: node j ← node i for i < j, j = 1..3.
pub fn plan() -> Vec<EdgeSpec> {
    (1..4)
        .flat_map(|to| {
            (0..to).map(move |from| EdgeSpec {
                from,
                to,
                stride: 1,
            })
        })
        .collect()
}

fn cell<E: Edge>(edges: Vec<E>) -> Result<Cell<E>> {
    Cell::new(
        false,
        1,
        Vec::new(),
        plan(),
        edges,
        vec![3],
        EdgeNames::Arrows,
    )
}

/// A search cell on `c` channels: a MixedOp of the NB201 ops on every edge (no BN after the
/// pool, as in the benchmark's search cell).
pub fn search_cell(c: usize, rng: &mut impl Rng) -> Result<Cell<MixedOp>> {
    let edges = (0..EDGES.len())
        .map(|_| MixedOp::new(&NB201_PRIMITIVES, c, 1, false, rng))
        .collect::<Result<_>>()?;
    cell(edges)
}

/// The cell of `arch` with one op per edge, as the benchmark trained it.
pub fn eval_cell(arch: &Nb201Arch, c: usize, rng: &mut impl Rng) -> Result<Cell<Op>> {
    let edges = arch
        .ops
        .iter()
        .map(|&op| Op::new(op.into(), c, 1, true, false, rng))
        .collect::<Result<_>>()?;
    cell(edges)
}

/// The cell the alphas choose: on every edge the op of largest weight, `none` included, as in
/// the benchmark's DARTS code. `weights`: the softmaxed (edges × 5) matrix, row-major.
pub fn derive(weights: &[f32]) -> Result<Nb201Arch> {
    let n_ops = Nb201Op::ALL.len();
    if weights.len() != EDGES.len() * n_ops {
        return Err(crate::error::Error::shape(
            "NAS-Bench-201 derive",
            format!("expected {} edges x {n_ops} ops", EDGES.len()),
            &[&[weights.len()]],
        ));
    }
    let mut ops = [Nb201Op::None; 6];
    for (op, row) in ops.iter_mut().zip(weights.chunks(n_ops)) {
        let best = (0..n_ops).fold(0, |b, k| if row[k] > row[b] { k } else { b });
        *op = Nb201Op::ALL[best];
    }
    Ok(Nb201Arch { ops })
}

impl From<Nb201Op> for Primitive {
    fn from(op: Nb201Op) -> Primitive {
        NB201_PRIMITIVES[op.index()]
    }
}

/// The macro network: `n` cells per stage at C, 2C, 4C, built by `cell(channels, rng)`.
pub fn backbone<E: Edge, R: Rng>(
    channels: usize,
    n: usize,
    in_channels: usize,
    num_classes: usize,
    rng: &mut R,
    mut cell: impl FnMut(usize, &mut R) -> Result<Cell<E>>,
) -> Result<Backbone<E>> {
    let stem = Stem::new(in_channels, channels, rng)?;
    let mut blocks = Vec::with_capacity(3 * n + 2);
    let mut c = channels;
    for stage in 0..3 {
        if stage > 0 {
            blocks.push(Block::Residual(Box::new(ResidualBlock::new(
                c,
                2 * c,
                rng,
            )?)));
            c *= 2;
        }
        for _ in 0..n {
            blocks.push(Block::Cell(cell(c, rng)?));
        }
    }
    Backbone::new(stem, blocks, 1, true, c, num_classes, None, rng)
}
