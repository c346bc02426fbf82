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

pub(crate) use conv::copy_row;
pub use conv::{conv2d, conv2d_backward, conv2d_inference, Conv2dCfg, Conv2dGrads};
pub use elementwise::{add, drop_path, dropout, mul, mul_mask, relu, scale, sub};
pub use loss::{cross_entropy, log_softmax, softmax};
pub use matmul::{linear, matmul};
pub use movement::{concat, shift, weighted_sum};
pub use norm::{batch_norm2d, BatchNormCfg};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
pub use reduce::{mean, squared_norm, sum};

use crate::device::{cuda::GpuBuf, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The data of an op's operands, all on one device: what every op `match`es on to pick its
/// kernel. The match is exhaustive, so a new backend (a variant here and in [`Storage`]) makes
/// the compiler list every op that lacks it. `C` and `G` are arrays (from [`operands`]) or
/// vectors (from [`operand_list`]) of host slices and device buffers.
pub(crate) enum Operands<C, G> {
    /// Host data.
    Cpu(C),
    /// Device buffers.
    Cuda(G),
}

/// A fixed number of operands, as [`operands`] returns them.
pub(crate) type Fixed<'a, const N: usize> = Operands<[&'a [f32]; N], [&'a GpuBuf; N]>;

/// The storage of the first operand once every operand is known to share its device; operands
/// on different devices are an error naming `op`.
fn common<'a>(op: &'static str, ts: &[&'a Tensor]) -> Result<&'a Storage> {
    let first = ts[0];
    if let Some(other) = ts.iter().find(|t| t.device() != first.device()) {
        return Err(Error::devices(op, first, other));
    }
    Ok(first.storage())
}

// The two below read operands that `common` found on their device, so the other arm is
// unreachable.
fn host<'a>(t: &&'a Tensor) -> &'a [f32] {
    match t.storage() {
        Storage::Cpu(a) => a.as_slice(),
        Storage::Cuda(_) => unreachable!("devices checked by `common`"),
    }
}

fn device_buf<'a>(t: &&'a Tensor) -> &'a GpuBuf {
    match t.storage() {
        Storage::Cuda(b) => b,
        Storage::Cpu(_) => unreachable!("devices checked by `common`"),
    }
}

/// The operands' data on their common device.
pub(crate) fn operands<'a, const N: usize>(
    op: &'static str,
    ts: [&'a Tensor; N],
) -> Result<Fixed<'a, N>> {
    Ok(match common(op, &ts)? {
        Storage::Cpu(_) => Operands::Cpu(ts.each_ref().map(host)),
        Storage::Cuda(_) => Operands::Cuda(ts.each_ref().map(device_buf)),
    })
}

/// [`operands`] for a run-time number of operands (at least one).
pub(crate) fn operand_list<'a>(
    op: &'static str,
    ts: &[&'a Tensor],
) -> Result<Operands<Vec<&'a [f32]>, Vec<&'a GpuBuf>>> {
    Ok(match common(op, ts)? {
        Storage::Cpu(_) => Operands::Cpu(ts.iter().map(host).collect()),
        Storage::Cuda(_) => Operands::Cuda(ts.iter().map(device_buf).collect()),
    })
}

impl<C, G> Operands<C, G> {
    /// The host data, for the backward of an op whose forward ran on the CPU; a gradient that
    /// arrives on another device is an error naming `op`.
    pub(crate) fn cpu(self, op: &'static str) -> Result<C> {
        match self {
            Operands::Cpu(s) => Ok(s),
            Operands::Cuda(_) => Err(wrong_device(op, "a CPU op", "CUDA")),
        }
    }

    /// The device buffers, for the backward of an op whose forward ran on the GPU.
    pub(crate) fn cuda(self, op: &'static str) -> Result<G> {
        match self {
            Operands::Cuda(b) => Ok(b),
            Operands::Cpu(_) => Err(wrong_device(op, "a CUDA op", "CPU")),
        }
    }
}

fn wrong_device(op: &'static str, what: &str, got: &str) -> Error {
    Error::Device {
        op,
        msg: format!("{what} got {got} tensors; move all operands with to_device"),
    }
}
