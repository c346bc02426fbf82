//! int8 kernels for the CPU on channels-last uint8 maps ([`map`]): the matrix product under the
//! dense convolutions ([`gemm`]), depthwise convolution ([`depthwise`]), the convolution layer
//! that picks between them ([`conv`]) and the other steps ([`elementwise`]), each for every
//! instruction set ([`isa`]) and checked bit for bit against a scalar reference in `tests.rs`.

pub mod conv;
mod depthwise;
pub mod elementwise;
pub mod gemm;
pub mod isa;
pub mod map;
mod padded;
#[cfg(test)]
mod tests;

pub use conv::QConv;
pub use isa::{requant, Isa};
pub use map::{OutQ, QTensor};
