//! Where tensor data lives: the `Storage` enum, one variant per backend. Every op picks its
//! kernel with an exhaustive `match` on its operands' storage (`ops::Operands`), so a new
//! variant here makes the compiler list each op that lacks it.

pub mod cpu;
pub mod cuda;
pub mod pool;

use std::sync::Arc;

use pool::Buffer;

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// The host CPU (rayon + matrixmultiply).
    #[default]
    Cpu,
    /// The NVIDIA GPU (or, with `DARTS_CUDA_EMULATOR=1`, the kernels emulated on the CPU).
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            _ => Err(crate::Error::InvalidArgument(format!(
                "unknown device {s:?}; use cpu or cuda"
            ))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda => write!(f, "cuda"),
        }
    }
}

/// The data of a tensor, contiguous, in row-major (NCHW) order.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory, reference counted and copied on write.
    Cpu(Arc<Buffer>),
    /// GPU memory (`device/cuda.rs`); shared like the CPU variant, never written in place
    /// while shared.
    Cuda(Arc<cuda::GpuBuf>),
}

impl Storage {
    /// The device the data lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(_) => Device::Cuda,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(a) => a.as_slice().len(),
            Storage::Cuda(b) => b.len(),
        }
    }

    /// True when the storage holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
