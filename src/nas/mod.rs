//! The DARTS layer: search space, genotypes, the supernet, the bilevel architect and the search driver.

pub mod architect;
pub mod bench;
pub mod genotype;
pub mod margins;
pub mod network;
pub mod operations;
pub mod primitives;
pub mod search;
mod search_config;
pub mod space;
pub mod strategy;
pub mod supernet;

pub use genotype::Genotype;
pub use primitives::Primitive;
