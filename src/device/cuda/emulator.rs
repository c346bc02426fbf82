//! The CPU emulator backend: every `kernels/*.cu` compiled by g++ against `kernels/emulator.h`
//! into one shared library (built once per set of sources, cached in the temp directory), and
//! cuBLAS's column-major GEMM done by matrixmultiply with the same semantics. Device pointers
//! are host pointers, so the launchers run unchanged.

use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{kernels, Arg, Gemm, Launch};

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    *const u32,
    *const u32,
    u32,
    *const *mut c_void,
    *const u32,
    i32,
    *mut c_char,
    i32,
) -> i32;

pub struct Emulator {
    launch: LaunchFn,
    _lib: libloading::Library,
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

/// The generated translation unit: every family, then the name -> launcher table.
fn unit() -> String {
    let mut s = String::from(
        "#define DARTS_EMULATOR 1\n#include \"emulator.h\"\n#include \"common.cuh\"\n",
    );
    for (family, _) in kernels::FAMILIES {
        s += &format!("#include \"{family}.cu\"\n");
    }
    s += "static const emu::Entry emu_table[] = {\n";
    for (_, src) in kernels::FAMILIES {
        for name in kernels::names(src) {
            s += &format!("  DARTS_EMU_ENTRY({name}),\n");
        }
    }
    s += "};\nstatic const size_t emu_table_len = sizeof(emu_table) / sizeof(emu_table[0]);\nDARTS_EMU_EXPORT\n";
    s
}

fn build(dir: &Path) -> Result<PathBuf, String> {
    let lib = dir.join("libdarts_kernels_emu.so");
    if lib.exists() {
        return Ok(lib);
    }
    let io = |e: std::io::Error| format!("CUDA emulator: writing {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(io);
    write("emulator.h", kernels::EMULATOR)?;
    write("common.cuh", kernels::COMMON)?;
    for (family, src) in kernels::FAMILIES {
        write(&format!("{family}.cu"), src)?;
    }
    write("all.cpp", &unit())?;
    // Build under a private name, then rename: concurrent test processes never load a half file.
    let tmp = dir.join(format!("lib.{}.so.tmp", std::process::id()));
    let out = Command::new("g++")
        .args(["-std=c++20", "-O2", "-fPIC", "-shared", "-w", "-o"])
        .arg(&tmp)
        .arg(dir.join("all.cpp"))
        .output()
        .map_err(|e| {
            format!("the CUDA emulator needs g++ ({e}); install g++ or unset DARTS_CUDA_EMULATOR")
        })?;
    if !out.status.success() {
        return Err(format!(
            "CUDA emulator: g++ rejected the kernels:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &lib).map_err(io)?;
    Ok(lib)
}

impl Emulator {
    pub fn start() -> Result<Emulator, String> {
        let mut parts = vec![kernels::EMULATOR, kernels::COMMON];
        parts.extend(kernels::FAMILIES.iter().map(|(_, s)| *s));
        let dir = std::env::temp_dir().join(format!("darts-cuda-emulator-{:016x}", fnv(&parts)));
        let path = build(&dir)?;
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("CUDA emulator: loading {}: {e}", path.display()))?;
        let launch = unsafe { lib.get::<LaunchFn>(b"darts_emu_launch\0") }
            .map(|f| *f)
            .map_err(|e| format!("CUDA emulator: {e}"))?;
        Ok(Emulator { launch, _lib: lib })
    }

    pub fn launch(&self, kernel: &str, cfg: Launch, args: &[Arg]) -> Result<(), String> {
        // CUDA's convention: an array of pointers to each argument's value.
        let mut vals: Vec<u64> = args.iter().map(Arg::bits).collect();
        let ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let sizes: Vec<u32> = args.iter().map(Arg::size).collect();
        let name = CString::new(kernel).map_err(|e| e.to_string())?;
        let grid = [cfg.grid.0, cfg.grid.1, cfg.grid.2];
        let block = [cfg.block.0, cfg.block.1, cfg.block.2];
        let mut err = vec![0 as c_char; 512];
        let rc = unsafe {
            (self.launch)(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                cfg.shared_bytes,
                ptrs.as_ptr(),
                sizes.as_ptr(),
                args.len() as i32,
                err.as_mut_ptr(),
                err.len() as i32,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        Err(format!("emulated launch failed: {}", msg.to_string_lossy()))
    }
}

/// cuBLAS's strided batched SGEMM, column-major, on host memory.
pub fn gemm(g: &Gemm) {
    // Column-major element (i, j) of a matrix with leading dimension ld sits at i + j·ld.
    let strides = |trans: bool, ld: usize| {
        if trans {
            (ld as isize, 1)
        } else {
            (1, ld as isize)
        }
    };
    let (rsa, csa) = strides(g.trans_a, g.lda);
    let (rsb, csb) = strides(g.trans_b, g.ldb);
    for i in 0..g.batch {
        unsafe {
            matrixmultiply::sgemm(
                g.m,
                g.k,
                g.n,
                g.alpha,
                (g.a as *const f32).add(i * g.stride_a),
                rsa,
                csa,
                (g.b as *const f32).add(i * g.stride_b),
                rsb,
                csb,
                g.beta,
                (g.c as *mut f32).add(i * g.stride_c),
                1,
                g.ldc as isize,
            );
        }
    }
}
