//! Compression of trained networks: channel and magnitude pruning, int8 post-training
//! quantisation on int8 kernels.

pub mod int8;
pub mod prune;
pub mod quantize;
mod run;
#[cfg(test)]
mod tests;
