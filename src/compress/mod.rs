//! Compression of trained networks: channel and magnitude pruning, int8 post-training
//! quantisation on int8 kernels.

pub mod folder;
pub mod head;
pub mod int8;
pub mod observe;
pub mod packed;
mod plan;
pub mod prune;
pub mod quantize;
pub mod quantize_cli;
mod run;
#[cfg(test)]
mod tests;
