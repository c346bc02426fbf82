//! The CUDA C sources, compiled into the binary: `kernels/<family>.cu`, one per op family, and
//! the header they share; and a typed handle, [`Kernel`], for every kernel they define, so that a
//! launcher names a kernel by a constant (a typo does not compile, and a test checks that the
//! constants and the sources list the same kernels).

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

/// One kernel: its family (the file `kernels/<family>.cu`) and its name there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub family: &'static str,
    pub name: &'static str,
}

/// Declares a [`Kernel`] constant per kernel, grouped by family, and [`ALL`] listing them.
macro_rules! kernels {
    ($($family:literal { $($konst:ident = $name:literal;)* })*) => {
        $($(
            #[doc = concat!("`", $name, "` in kernels/", $family, ".cu.")]
            pub const $konst: Kernel = Kernel { family: $family, name: $name };
        )*)*
        /// Every kernel of every family, in source order.
        pub const ALL: &[Kernel] = &[$($($konst,)*)*];
    };
}

kernels! {
    "elementwise" {
        FILL = "fill_f32";
        COPY = "copy_f32";
        ADD_FWD = "add_fwd_f32";
        SUB_FWD = "sub_fwd_f32";
        MUL_FWD = "mul_fwd_f32";
        SCALE_FWD = "scale_fwd_f32";
        AXPY = "axpy_f32";
        RELU_FWD = "relu_fwd_f32";
        RELU_BWD = "relu_bwd_f32";
        KEEP_MASK = "keep_mask_f32";
    }
    "reduce" {
        SUM_PARTIAL = "sum_partial_f32";
        SUM_FINAL = "sum_final_f32";
        BROADCAST = "broadcast_f32";
    }
    "optim" {
        SGD_STEP = "sgd_step_f32";
        ADAM_STEP = "adam_step_f32";
    }
    "conv" {
        CONV_IM2COL = "conv_im2col_f32";
        CONV_COL2IM_BWD = "conv_col2im_bwd_f32";
        CONV_NCHW_FWD = "conv_nchw_fwd_f32";
        CONV_CNHW_BWD = "conv_cnhw_bwd_f32";
        CONV_BIAS_FILL_FWD = "conv_bias_fill_fwd_f32";
        CONV_BIAS_BWD = "conv_bias_bwd_f32";
        DWCONV_FWD = "dwconv_fwd_f32";
        DWCONV_DX_BWD = "dwconv_dx_bwd_f32";
        DWCONV_DW_PARTIAL_BWD = "dwconv_dw_partial_bwd_f32";
        DWCONV_DW_FINAL_BWD = "dwconv_dw_final_bwd_f32";
    }
    "matmul" {
        LINEAR_BIAS_FWD = "linear_bias_fwd_f32";
        LINEAR_BIAS_BWD = "linear_bias_bwd_f32";
    }
    "pool" {
        MAX_POOL_FWD = "max_pool_fwd_f32";
        MAX_POOL_BWD = "max_pool_bwd_f32";
        AVG_POOL_FWD = "avg_pool_fwd_f32";
        AVG_POOL_BWD = "avg_pool_bwd_f32";
        GLOBAL_AVG_POOL_FWD = "global_avg_pool_fwd_f32";
        GLOBAL_AVG_POOL_BWD = "global_avg_pool_bwd_f32";
    }
    "norm" {
        BATCH_NORM_PARTIAL = "batch_norm_partial_f32";
        BATCH_NORM_STATS = "batch_norm_stats_f32";
        BATCH_NORM_FWD = "batch_norm_fwd_f32";
        BATCH_NORM_BWD_PARTIAL = "batch_norm_bwd_partial_f32";
        BATCH_NORM_BWD_COEF = "batch_norm_bwd_coef_f32";
        BATCH_NORM_BWD_DX = "batch_norm_bwd_dx_f32";
    }
    "loss" {
        SOFTMAX_FWD = "softmax_fwd_f32";
        SOFTMAX_BWD = "softmax_bwd_f32";
        LOG_SOFTMAX_BWD = "log_softmax_bwd_f32";
        CROSS_ENTROPY_FWD = "cross_entropy_fwd_f32";
        CROSS_ENTROPY_BWD = "cross_entropy_bwd_f32";
    }
    "movement" {
        CONCAT_FWD = "concat_fwd_f32";
        CONCAT_BWD = "concat_bwd_f32";
        SHIFT_FWD = "shift_fwd_f32";
        WEIGHTED_SUM_FWD = "weighted_sum_fwd_f32";
        WEIGHTED_SUM_BWD = "weighted_sum_bwd_f32";
        WEIGHTED_SUM_DW = "weighted_sum_dw_f32";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_names_a_kernel_of_its_family() {
        for k in ALL {
            let src = source(k.family).unwrap_or_else(|| panic!("no family {:?}", k.family));
            assert!(
                names(src).contains(&k.name),
                "{} is not a kernel of kernels/{}.cu",
                k.name,
                k.family
            );
        }
    }

    #[test]
    fn every_kernel_in_the_sources_has_a_constant() {
        for (family, src) in FAMILIES {
            for name in names(src) {
                let k = Kernel { family, name };
                assert!(
                    ALL.contains(&k),
                    "{name} in kernels/{family}.cu has no constant"
                );
            }
        }
        let total: usize = FAMILIES.iter().map(|(_, s)| names(s).len()).sum();
        assert_eq!(total, ALL.len(), "a kernel has two constants");
    }
}
