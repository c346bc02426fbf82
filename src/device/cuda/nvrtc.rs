//! Kernel compilation with NVRTC: each `kernels/<family>.cu` (with `common.cuh` as its one
//! header) becomes a CUBIN for the device's real architecture, so the driver has no PTX to JIT
//! and no PTX-version mismatch to reject.

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::sys;

use super::kernels;

/// The options every family is compiled with.
fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // FMA contraction is allowed, as in nvcc's default; the parity tests' tolerances cover it.
        "--fmad=true".into(),
    ]
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<(), String> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        let msg = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(r)) };
        Err(format!("NVRTC {what}: {}", msg.to_string_lossy()))
    }
}

/// Compiles one family to a CUBIN for `arch` (e.g. `sm_90`); on failure the error holds the
/// compiler log.
pub fn compile(family: &str, arch: &str) -> Result<Vec<u8>, String> {
    if !unsafe { sys::is_culib_present() } {
        return Err(format!(
            "no NVRTC library found (tried {}); put the directory of libnvrtc.so.13 on LD_LIBRARY_PATH",
            cudarc::get_lib_name_candidates("nvrtc").join(", ")
        ));
    }
    let src = kernels::source(family).ok_or_else(|| format!("no kernel family {family}"))?;
    let c = |s: &str| CString::new(s).expect("kernel sources contain no NUL");
    let (src, name) = (c(src), c(&format!("{family}.cu")));
    let (hdr, hdr_name) = (c(kernels::COMMON), c("common.cuh"));
    let headers = [hdr.as_ptr()];
    let include_names = [hdr_name.as_ptr()];
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    unsafe {
        check(
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                1,
                headers.as_ptr(),
                include_names.as_ptr(),
            ),
            "create program",
        )?;
    }
    let opts: Vec<CString> = options(arch).iter().map(|o| c(o)).collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let compiled =
        unsafe { sys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    let result = if compiled == sys::nvrtcResult::NVRTC_SUCCESS {
        cubin(prog)
    } else {
        Err(format!(
            "kernels/{family}.cu does not compile for {arch}:\n{}",
            log(prog)
        ))
    };
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn log(prog: sys::nvrtcProgram) -> String {
    let mut n = 0usize;
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut n) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return "(no log)".into();
    }
    let mut buf = vec![0u8; n.max(1)];
    unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) };
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string()
}

fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut n = 0usize;
    check(
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut n) },
        "CUBIN size",
    )?;
    let mut buf = vec![0u8; n];
    check(
        unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) },
        "get CUBIN",
    )?;
    Ok(buf)
}

/// Compiles every family for `arch`: what CI runs without a GPU so that a kernel that does not
/// compile fails the build. Returns (family, CUBIN bytes) or the first error.
pub fn compile_all(arch: &str) -> Result<Vec<(&'static str, usize)>, String> {
    kernels::FAMILIES
        .iter()
        .map(|(family, _)| compile(family, arch).map(|b| (*family, b.len())))
        .collect()
}

/// The NVRTC version, when the library is present.
pub fn version() -> Option<(i32, i32)> {
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    let (mut maj, mut min) = (0, 0);
    unsafe { sys::nvrtcVersion(&mut maj, &mut min) };
    Some((maj, min))
}
