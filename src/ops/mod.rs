//! The differentiable primitives. This list is the backend contract: every op here has a forward,
//! a backward, a finite-difference test (`tests/gradcheck.rs`), and one kernel per device.
//! Composite layers (separable convs, MixedOp, cells) are built from these and get their
//! gradients for free.

mod elementwise;

pub(crate) use elementwise::map;
pub use elementwise::{add, drop_path, dropout, mul, mul_mask, relu, scale, sub};
mod loss;
mod matmul;
mod movement;
mod reduce;

pub use loss::{cross_entropy, log_softmax, softmax};
pub use matmul::{linear, matmul};
pub use movement::{concat, shift, weighted_sum};
pub use reduce::{mean, sum};

// Planned families and their signatures (each lands with forward, backward and gradcheck):
// conv.rs      conv2d(x[N,Cin,H,W], w[Cout,Cin/groups,kh,kw], bias: Option<&Tensor>[Cout], Conv2dCfg{stride,padding,dilation,groups})
// norm.rs      batch_norm2d(x, gamma: Option<&Tensor>, beta: Option<&Tensor>, running_mean: &mut Tensor, running_var: &mut Tensor, BatchNormCfg{training,momentum,eps})
// pool.rs      max_pool2d(x, kernel, stride, padding), avg_pool2d(x, kernel, stride, padding) (count_include_pad = false), global_avg_pool(x) -> [N,C]
