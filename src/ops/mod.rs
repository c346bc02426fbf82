//! The differentiable primitives. This list is the backend contract: every op here has a forward,
//! a backward, a finite-difference test (`tests/gradcheck.rs`), and one kernel per device.
//! Composite layers (separable convs, MixedOp, cells) are built from these and get their
//! gradients for free.

mod conv;
mod elementwise;
mod loss;
mod matmul;
mod movement;
mod norm;
mod pool;
pub mod prof;
mod reduce;
mod simd;

pub use conv::{conv2d, conv2d_backward, Conv2dCfg, Conv2dGrads};
pub use elementwise::{add, drop_path, dropout, mul, mul_mask, relu, scale, sub};
pub use loss::{cross_entropy, log_softmax, softmax};
pub use matmul::{linear, matmul};
pub use movement::{concat, shift, weighted_sum};
pub use norm::{batch_norm2d, BatchNormCfg};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
pub use reduce::{mean, sum};
