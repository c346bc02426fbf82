//! The DARTS layer: search space, genotypes, and (later) the supernet and architect.

pub mod genotype;
pub mod primitives;

pub use genotype::Genotype;
pub use primitives::Primitive;
