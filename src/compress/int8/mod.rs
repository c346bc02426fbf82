//! int8 kernels for the CPU: u8 × i8 → i32 dot products ([`dot`]) and the layers built on them
//! ([`conv`]), each checked bit for bit against a scalar reference in `tests.rs`.

pub mod conv;
pub mod dot;
#[cfg(test)]
mod tests;

pub use conv::{pool, requant, OutQ, QConv, QTensor};
pub use dot::Isa;
