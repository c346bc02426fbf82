//! The real GPU through cudarc: libraries loaded at run time (checked before the first call, so
//! a machine without CUDA gets an error, not cudarc's panic), one non-blocking stream without
//! event tracking (a single-stream engine; graph capture needs a non-default stream), kernels
//! compiled per family on first use, cuBLAS bound to the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, PushKernelArg,
};

use super::{Arg, Gemm, Launch};

pub struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

// cuBLAS handles are used from one thread at a time here: every call goes through `&Driver`
// and the ops that call it run on the caller's thread.
unsafe impl Send for Driver {}
unsafe impl Sync for Driver {}

pub fn ptr(s: &CudaSlice<f32>) -> u64 {
    let (p, _guard) = s.device_ptr(s.stream());
    p
}

fn missing(what: &str, lib: &str) -> String {
    let mut tried = cudarc::get_lib_name_candidates(lib);
    tried.dedup();
    format!(
        "no CUDA {what} found (looked for {}); install the NVIDIA driver and the CUDA 13 libraries, put their directory on LD_LIBRARY_PATH, or use --device cpu",
        tried.join(", ")
    )
}

impl Driver {
    pub fn start() -> Result<Driver, String> {
        // cudarc panics on the first call into a library it cannot load: look first.
        if !unsafe { sys::is_culib_present() } {
            return Err(missing("driver", "cuda"));
        }
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(missing("runtime compiler (NVRTC)", "nvrtc"));
        }
        if !unsafe { bsys::is_culib_present() } {
            return Err(missing("cuBLAS", "cublas"));
        }
        let count = CudaContext::device_count()
            .map_err(|e| format!("no usable CUDA device ({e}); use --device cpu"))?;
        if count < 1 {
            return Err("the CUDA driver sees no GPU; use --device cpu".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e}"))?;
        // One stream and no cross-stream hazards: skip the two events cudarc makes per buffer.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| e.to_string())?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e}"))?;
        let (maj, min) = ctx.compute_capability().map_err(|e| e.to_string())?;
        let d = Driver {
            ctx,
            stream,
            blas,
            arch: format!("sm_{maj}{min}"),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        };
        d.keep_pool_memory();
        Ok(d)
    }

    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let mut v = 0;
        unsafe { sys::cuDriverGetVersion(&mut v) };
        let (mut maj, mut min) = (0, 0);
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut maj, &mut min) };
        format!(
            "{name} ({}), driver {}.{}, NVRTC {maj}.{min}",
            self.arch,
            v / 1000,
            (v % 1000) / 10
        )
    }

    pub fn oom(&self, op: &'static str, n: usize, e: impl std::fmt::Display) -> crate::Error {
        let free = self.ctx.mem_get_info().map(|(f, _)| f).unwrap_or(0);
        crate::Error::Device {
            op,
            msg: format!(
                "cannot allocate {:.1} MB on the GPU ({e}; {:.1} MB free): lower --batch-size or --channels",
                (4 * n) as f64 / 1e6,
                free as f64 / 1e6
            ),
        }
    }

    pub fn free_bytes(&self) -> Result<usize, cudarc::driver::DriverError> {
        self.ctx.mem_get_info().map(|(free, _total)| free)
    }

    pub fn alloc(&self, n: usize) -> Result<CudaSlice<f32>, cudarc::driver::DriverError> {
        // Every launcher writes all of its outputs; zeroing here would be a second pass.
        unsafe { self.stream.alloc::<f32>(n.max(1)) }
    }

    pub fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>, cudarc::driver::DriverError> {
        if data.is_empty() {
            return self.alloc(0);
        }
        self.stream.clone_htod(data)
    }

    pub fn download(&self, s: &CudaSlice<f32>) -> Result<Vec<f32>, cudarc::driver::DriverError> {
        let v = self.stream.clone_dtoh(s)?;
        self.stream.synchronize()?;
        self.ctx.check_err()?;
        Ok(v)
    }

    pub fn synchronize(&self) -> Result<(), cudarc::driver::DriverError> {
        self.stream.synchronize()?;
        self.ctx.check_err()
    }

    fn function(&self, family: &'static str, kernel: &'static str) -> Result<CudaFunction, String> {
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kernel)
        {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(family) {
                Some(m) => m.clone(),
                None => {
                    let cubin = super::nvrtc::compile(family, &self.arch)?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                        .map_err(|e| format!("loading kernels/{family}.cu: {e}"))?;
                    modules.insert(family, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(kernel)
            .map_err(|e| format!("kernels/{family}.cu has no kernel {kernel}: {e}"))?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kernel, f.clone());
        Ok(f)
    }

    pub fn launch(
        &self,
        family: &'static str,
        kernel: &'static str,
        cfg: Launch,
        args: &[Arg],
    ) -> Result<(), String> {
        let f = self.function(family, kernel)?;
        // Kernel parameters are read at launch: the values only have to outlive `launch`.
        let vals: Vec<u64> = args.iter().map(Arg::bits).collect();
        let mut b = self.stream.launch_builder(&f);
        for v in &vals {
            b.arg(v);
        }
        let lc = cudarc::driver::LaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: cfg.shared_bytes,
        };
        unsafe { b.launch(lc) }
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn gemm(&self, g: &Gemm) -> Result<(), String> {
        let op = |t: bool| {
            if t {
                bsys::cublasOperation_t::CUBLAS_OP_T
            } else {
                bsys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (g.alpha, g.beta);
        let i = |v: usize| v as std::ffi::c_int;
        unsafe {
            blas::sgemm_strided_batched(
                *self.blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                i(g.m),
                i(g.n),
                i(g.k),
                &alpha,
                g.a as *const f32,
                i(g.lda),
                g.stride_a as i64,
                g.b as *const f32,
                i(g.ldb),
                g.stride_b as i64,
                &beta,
                g.c as *mut f32,
                i(g.ldc),
                g.stride_c as i64,
                i(g.batch),
            )
        }
        .map_err(|e| e.to_string())
    }

    pub fn set_tf32(&self, on: bool) -> Result<(), String> {
        let mode = if on {
            bsys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            bsys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        unsafe { bsys::cublasSetMathMode(*self.blas.handle(), mode) }
            .result()
            .map_err(|e| e.to_string())
    }

    fn pool(&self) -> Option<sys::CUmemoryPool> {
        let mut pool = std::ptr::null_mut();
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()) }
            .result()
            .ok()?;
        Some(pool)
    }

    /// Peak bytes allocated from the default memory pool since the last [`Driver::reset_peak`].
    pub fn peak_pool_bytes(&self) -> Option<usize> {
        let mut v = 0u64;
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let ptr = &mut v as *mut u64 as *mut std::ffi::c_void;
        unsafe { sys::cuMemPoolGetAttribute(self.pool()?, attr, ptr) }
            .result()
            .ok()?;
        Some(v as usize)
    }

    /// Sets a 64-bit attribute of the default memory pool; best effort (statistics, caching).
    fn set_pool_attribute(&self, attr: sys::CUmemPool_attribute, mut value: u64) {
        let Some(pool) = self.pool() else { return };
        let ptr = &mut value as *mut u64 as *mut std::ffi::c_void;
        let _ = unsafe { sys::cuMemPoolSetAttribute(pool, attr, ptr) };
    }

    pub fn reset_peak(&self) {
        self.set_pool_attribute(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0);
    }

    /// Keeps freed memory in the stream-ordered pool instead of returning it to the driver at
    /// each synchronisation: the pool then works as a caching allocator, and a step allocates
    /// nothing from the driver once warm.
    fn keep_pool_memory(&self) {
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
        self.set_pool_attribute(attr, u64::MAX);
    }
}
