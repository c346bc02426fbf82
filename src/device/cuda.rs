//! The CUDA device: one process-wide [`Gpu`] (context, stream, compiled kernels, cuBLAS) and
//! [`GpuBuf`], the device memory behind `Storage::Cuda`.
//!
//! Two backends run the same kernels (`kernels/*.cu`) through the same launchers:
//! - the **driver** (cudarc, libraries loaded at run time, kernels compiled by NVRTC for the
//!   device's architecture), used by `--device cuda`;
//! - the **emulator** (g++-compiled kernels run as fibers on the CPU), chosen with
//!   `DARTS_CUDA_EMULATOR=1`, so that every launcher and kernel is checked against its CPU twin
//!   on machines without a GPU (`tests/cuda_parity`).
//!
//! Ops never see which one runs: they call [`Gpu::launch`] and [`Gpu::gemm`].

mod driver;
mod emulator;
pub mod kernels;
mod nvrtc;

use std::sync::OnceLock;

use crate::error::{Error, Result};

pub use kernels::Kernel;
pub use nvrtc::{compile_all as nvrtc_compile_all, version as nvrtc_version};

/// Threads per block for the one-thread-per-element kernels; block reductions assume a multiple
/// of 32.
pub const BLOCK: u32 = 256;

/// A kernel argument, passed by value as CUDA's kernel parameters are.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer (`float*`), from [`GpuBuf::ptr`].
    Ptr(u64),
    I32(i32),
    F32(f32),
    U64(u64),
}

impl Arg {
    /// An `int` argument: the kernels count and index with 32-bit integers, so a value outside
    /// i32 is an error naming `what` (the one place kernel arguments are range checked).
    pub fn int<T>(what: &'static str, v: T) -> Result<Arg>
    where
        T: TryInto<i32> + std::fmt::Display + Copy,
    {
        v.try_into().map(Arg::I32).map_err(|_| Error::KernelArg {
            what,
            value: v.to_string(),
        })
    }

    /// An `int` flag: 1 for true, 0 for false.
    pub fn flag(on: bool) -> Arg {
        Arg::I32(on as i32)
    }

    /// The value's bytes in a u64, low bytes first: CUDA copies each parameter's own size from
    /// the address it is given, so a pointer to these bits serves 4- and 8-byte parameters
    /// alike (x86-64 is little-endian). Both backends pass arguments this way.
    fn bits(&self) -> u64 {
        match *self {
            Arg::Ptr(p) | Arg::U64(p) => p,
            Arg::I32(i) => i as u32 as u64,
            Arg::F32(x) => x.to_bits() as u64,
        }
    }

    fn size(&self) -> u32 {
        match self {
            Arg::Ptr(_) | Arg::U64(_) => 8,
            Arg::I32(_) | Arg::F32(_) => 4,
        }
    }
}

/// A grid and block shape.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl Launch {
    /// Enough [`BLOCK`]-thread blocks for one thread per element (grid-stride loops cover the
    /// rest beyond the cap).
    pub fn elems(n: usize) -> Launch {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535 * 8) as u32;
        Launch {
            grid: (blocks, 1, 1),
            block: (BLOCK, 1, 1),
            shared_bytes: 0,
        }
    }

    /// `blocks` blocks of [`BLOCK`] threads, one block per row or channel.
    pub fn rows(blocks: usize) -> Launch {
        Launch {
            grid: (blocks.max(1) as u32, 1, 1),
            block: (BLOCK, 1, 1),
            shared_bytes: 0,
        }
    }
}

/// Device memory holding `len` f32 values.
pub struct GpuBuf {
    len: usize,
    mem: Mem,
}

enum Mem {
    Driver(cudarc::driver::CudaSlice<f32>),
    /// Emulator memory: plain host memory that the emulated kernels address directly.
    Host(Box<[f32]>),
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf({} f32)", self.len)
    }
}

impl GpuBuf {
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address, for kernel arguments.
    pub fn ptr(&self) -> u64 {
        match &self.mem {
            Mem::Driver(s) => driver::ptr(s),
            Mem::Host(b) => b.as_ptr() as u64,
        }
    }

    /// The address of element `offset` (in f32 units).
    pub fn ptr_at(&self, offset: usize) -> u64 {
        self.ptr() + 4 * offset as u64
    }

    /// Kernel argument for this buffer.
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr())
    }
}

enum Backend {
    Driver(driver::Driver),
    Emulator(emulator::Emulator),
}

/// The process-wide CUDA device.
pub struct Gpu {
    backend: Backend,
}

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();

/// True when `DARTS_CUDA_EMULATOR` asks for the CPU emulator instead of a real GPU.
pub fn emulator_requested() -> bool {
    std::env::var("DARTS_CUDA_EMULATOR").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The device, started on first use. Fails with a message that says what is missing.
pub fn gpu() -> Result<&'static Gpu> {
    let g = GPU.get_or_init(|| {
        let backend = if emulator_requested() {
            emulator::Emulator::start().map(Backend::Emulator)
        } else {
            driver::Driver::start().map(Backend::Driver)
        };
        backend.map(|backend| Gpu { backend })
    });
    g.as_ref().map_err(|msg| Error::Device {
        op: "cuda",
        msg: msg.clone(),
    })
}

fn dev_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Device {
        op,
        msg: e.to_string(),
    }
}

impl Gpu {
    /// One line on what runs: device name and library versions, or the emulator.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Driver(d) => d.describe(),
            Backend::Emulator(_) => "CUDA emulator on the CPU (DARTS_CUDA_EMULATOR)".into(),
        }
    }

    /// Uninitialised memory for `n` values (kernels that write every element).
    pub fn alloc(&self, n: usize) -> Result<GpuBuf> {
        let mem = match &self.backend {
            Backend::Driver(d) => Mem::Driver(d.alloc(n).map_err(|e| d.oom("alloc", n, e))?),
            Backend::Emulator(_) => Mem::Host(vec![0.0; n].into_boxed_slice()),
        };
        Ok(GpuBuf { len: n, mem })
    }

    /// `n` zeros.
    pub fn zeros(&self, n: usize) -> Result<GpuBuf> {
        self.full(n, 0.0)
    }

    /// `n` copies of `value`.
    pub fn full(&self, n: usize, value: f32) -> Result<GpuBuf> {
        let b = self.alloc(n)?;
        if n > 0 {
            let args = [b.arg(), Arg::F32(value), Arg::int("n", n)?];
            self.launch(kernels::FILL, Launch::elems(n), &args)?;
        }
        Ok(b)
    }

    /// Copies host data to a new device buffer.
    pub fn upload(&self, data: &[f32]) -> Result<GpuBuf> {
        let mem = match &self.backend {
            Backend::Driver(d) => {
                Mem::Driver(d.upload(data).map_err(|e| d.oom("upload", data.len(), e))?)
            }
            Backend::Emulator(_) => Mem::Host(data.to_vec().into_boxed_slice()),
        };
        Ok(GpuBuf {
            len: data.len(),
            mem,
        })
    }

    /// Copies a device buffer to the host (waits for the work that writes it).
    pub fn download(&self, b: &GpuBuf) -> Result<Vec<f32>> {
        match &b.mem {
            Mem::Driver(s) => match &self.backend {
                // The driver buffer may be padded (never empty): keep the tensor's own length.
                Backend::Driver(d) => d
                    .download(s)
                    .map(|mut v| {
                        v.truncate(b.len);
                        v
                    })
                    .map_err(|e| dev_err("download", e)),
                Backend::Emulator(_) => unreachable!("driver memory under the emulator"),
            },
            Mem::Host(h) => Ok(h.to_vec()),
        }
    }

    /// A device-side copy.
    pub fn copy(&self, b: &GpuBuf) -> Result<GpuBuf> {
        let out = self.alloc(b.len)?;
        if b.len > 0 {
            let args = [b.arg(), out.arg(), Arg::int("n", b.len)?];
            self.launch(kernels::COPY, Launch::elems(b.len), &args)?;
        }
        Ok(out)
    }

    /// Launches `kernel` (a constant of [`kernels`]).
    pub fn launch(&self, kernel: Kernel, cfg: Launch, args: &[Arg]) -> Result<()> {
        let _prof = crate::ops::prof::span(kernel.name, false);
        match &self.backend {
            Backend::Driver(d) => d.launch(kernel.family, kernel.name, cfg, args),
            Backend::Emulator(e) => e.launch(kernel.name, cfg, args),
        }
        .map_err(|msg| Error::Device {
            op: kernel.name,
            msg,
        })
    }

    /// Column-major SGEMM as cuBLAS defines it, batched with strides (elements):
    /// `C_i = alpha · op(A_i) · op(B_i) + beta · C_i` for i < batch, `C` m×n, `op(A)` m×k.
    pub fn gemm(&self, g: &Gemm) -> Result<()> {
        let _prof = crate::ops::prof::span("gemm", false);
        match &self.backend {
            Backend::Driver(d) => d.gemm(g),
            Backend::Emulator(_) => {
                emulator::gemm(g);
                Ok(())
            }
        }
        .map_err(|msg| dev_err("gemm", msg))
    }

    /// Waits for all queued work; reports a kernel fault from earlier launches.
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Driver(d) => d.synchronize().map_err(|e| dev_err("synchronize", e)),
            Backend::Emulator(_) => Ok(()),
        }
    }

    /// Allows TF32 tensor cores in cuBLAS GEMMs (`--tf32`); plain FP32 otherwise.
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        match &self.backend {
            Backend::Driver(d) => d.set_tf32(on).map_err(|e| dev_err("tf32", e)),
            Backend::Emulator(_) => Ok(()),
        }
    }

    /// Free device memory in bytes (`cuMemGetInfo`); `None` under the emulator, whose device
    /// memory is host memory.
    pub fn free_memory(&self) -> Result<Option<usize>> {
        match &self.backend {
            Backend::Driver(d) => d
                .free_bytes()
                .map(Some)
                .map_err(|e| dev_err("mem_get_info", e)),
            Backend::Emulator(_) => Ok(None),
        }
    }

    /// Peak bytes allocated from the device's memory pool since the last reset.
    pub fn peak_memory(&self) -> Option<usize> {
        match &self.backend {
            Backend::Driver(d) => d.peak_pool_bytes(),
            Backend::Emulator(_) => None,
        }
    }

    /// Starts a new peak-memory measurement.
    pub fn reset_peak_memory(&self) {
        if let Backend::Driver(d) = &self.backend {
            d.reset_peak();
        }
    }
}

/// One (strided, batched) column-major GEMM; pointers are device addresses.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: u64,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub ldb: usize,
    pub stride_b: usize,
    pub beta: f32,
    pub c: u64,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

impl Gemm {
    /// Row-major `C[M,N] = alpha · A[M,K] · B[K,N] + beta · C` (`ta`/`tb`: the operand is stored
    /// transposed, A as [K,M], B as [N,K]), as the column-major product `Cᵀ = Bᵀ · Aᵀ`.
    #[allow(clippy::too_many_arguments)]
    pub fn row_major(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &GpuBuf,
        b: &GpuBuf,
        c: &GpuBuf,
        beta: f32,
    ) -> Gemm {
        Gemm {
            trans_a: tb,
            trans_b: ta,
            m: n,
            n: m,
            k,
            alpha: 1.0,
            a: b.ptr(),
            lda: if tb { k } else { n },
            stride_a: 0,
            b: a.ptr(),
            ldb: if ta { m } else { k },
            stride_b: 0,
            beta,
            c: c.ptr(),
            ldc: n,
            stride_c: 0,
            batch: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_arguments_are_range_checked() {
        assert!(matches!(Arg::int("n", 7usize), Ok(Arg::I32(7))));
        assert!(matches!(Arg::int("dy", -3isize), Ok(Arg::I32(-3))));
        let big = i32::MAX as usize + 1;
        let err = Arg::int("n", big).unwrap_err();
        assert!(matches!(&err, Error::KernelArg { what: "n", value } if *value == big.to_string()));
        assert!(err.to_string().contains("n = 2147483648"), "{err}");
    }
}
