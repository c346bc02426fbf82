//! Compression of trained networks: int8 post-training quantisation on int8 kernels.

pub mod folder;
pub mod int8;
pub mod observe;
pub mod quantize;
pub mod quantize_cli;
#[cfg(test)]
mod tests;
