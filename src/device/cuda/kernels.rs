//! The CUDA C sources, compiled into the binary: `kernels/<family>.cu`, one per op family, and
//! the header they share.

/// `kernels/common.cuh`.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// `kernels/emulator.h`: the CPU emulator's stand-ins for the CUDA built-ins.
pub const EMULATOR: &str = include_str!("../../../kernels/emulator.h");

/// Every family: (name, source).
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("reduce", include_str!("../../../kernels/reduce.cu")),
    ("optim", include_str!("../../../kernels/optim.cu")),
    ("conv", include_str!("../../../kernels/conv.cu")),
    ("matmul", include_str!("../../../kernels/matmul.cu")),
    ("pool", include_str!("../../../kernels/pool.cu")),
    ("norm", include_str!("../../../kernels/norm.cu")),
    ("loss", include_str!("../../../kernels/loss.cu")),
    ("movement", include_str!("../../../kernels/movement.cu")),
];

/// The source of one family.
pub fn source(family: &str) -> Option<&'static str> {
    FAMILIES.iter().find(|(f, _)| *f == family).map(|(_, s)| *s)
}

/// The kernel names a family defines (`extern "C" __global__ void NAME(`).
pub fn names(src: &str) -> Vec<&str> {
    src.split("__global__")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix("void")?.trim_start();
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            Some(&rest[..end])
        })
        .collect()
}
