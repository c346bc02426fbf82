//! Compression of trained networks: int8 post-training quantisation on int8 kernels.

pub mod int8;
pub mod observe;
pub mod quantize;
#[cfg(test)]
mod tests;
