//! Run-time selection of AVX2 copies of the CPU kernels' inner loops.
//!
//! The crate targets baseline x86-64 (SSE2); [`simd_fn`] compiles a function body a second time
//! for AVX2 and picks that copy at run time, doubling the vector width. AVX2 does not imply FMA,
//! so products and sums stay separate and both copies round identically.

/// Defines `fn $name` from one body compiled twice: for AVX2, chosen at run time when the CPU has
/// it, and for the baseline target. The body and the `#[inline(always)]` helpers it calls are
/// inlined into each copy, so the loops are vectorised for each instruction set.
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has the one feature `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use simd_fn;
