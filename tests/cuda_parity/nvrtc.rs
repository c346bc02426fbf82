//! Every kernel family compiles with NVRTC for the H200 (sm_90). Needs only libnvrtc.so.13, no
//! GPU: `.ci/run` installs the `nvidia-cuda-nvrtc` wheel and sets `DARTS_REQUIRE_NVRTC=1`, so
//! in CI a kernel that does not compile fails the build.

#[test]
fn every_kernel_family_compiles_for_sm_90() {
    let Some((maj, min)) = darts::device::cuda::nvrtc_version() else {
        let msg = "no libnvrtc.so found (put the nvidia-cuda-nvrtc wheel's lib directory on LD_LIBRARY_PATH)";
        assert!(std::env::var("DARTS_REQUIRE_NVRTC").is_err(), "{msg}");
        eprintln!("nvrtc: skipped: {msg}");
        return;
    };
    let built = darts::device::cuda::nvrtc_compile_all("sm_90").unwrap_or_else(|e| panic!("{e}"));
    for (family, bytes) in &built {
        eprintln!("nvrtc {maj}.{min}: kernels/{family}.cu -> {bytes} bytes of sm_90 CUBIN");
        assert!(*bytes > 0);
    }
}
