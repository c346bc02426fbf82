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
pub use reduce::{mean, squared_norm, sum};

use crate::device::{cuda::GpuBuf, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// True when every operand is on the GPU, false when all are on the CPU; mixed devices are an
/// error naming `op`.
pub(crate) fn on_gpu(op: &'static str, operands: &[&Tensor]) -> Result<bool> {
    let first = operands[0];
    if let Some(other) = operands.iter().find(|t| t.device() != first.device()) {
        return Err(Error::devices(op, first, other));
    }
    Ok(first.device() == Device::Cuda)
}

/// The device buffer of a tensor that [`on_gpu`] found on the GPU.
pub(crate) fn gpu_buf(t: &Tensor) -> &GpuBuf {
    t.gpu_buf().expect("on_gpu checked the device")
}

/// The device buffer of a tensor that must be on the GPU (an upstream gradient or an operand
/// of a GPU op); a CPU tensor there is an error naming `op`.
pub(crate) fn require_gpu<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a GpuBuf> {
    t.gpu_buf().ok_or_else(|| Error::Device {
        op,
        msg: "a CUDA op got a CPU tensor; move all operands with to_device".into(),
    })
}
