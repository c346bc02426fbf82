//! The instruction sets the int8 kernels are built for, chosen once at run time, and
//! [`for_each_isa`], which compiles a plain loop for each of them.
//!
//! Every kernel computes the same exact integer sums and the same IEEE float epilogue (no fused
//! multiply-add, rounding by the 1.5·2²³ trick rather than a library call), so the instruction
//! set changes the speed and never a byte of the result: `tests.rs` checks that on each.

/// The instruction set the int8 kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// u8/i8 widened to i16, multiplied and paired into i32 by `vpmaddwd`.
    Avx2,
    /// `vpdpbusd`: four u8 × i8 products summed into each i32 lane.
    Avx512Vnni,
    /// [`Isa::Avx512Vnni`] with `vpermt2b` (AVX-512 VBMI), which lets the depthwise convs
    /// gather three or four taps of a lane into one `vpdpbusd`.
    Avx512Vbmi,
}

impl Isa {
    /// The best this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                return if is_x86_feature_detected!("avx512vbmi") {
                    Isa::Avx512Vbmi
                } else {
                    Isa::Avx512Vnni
                };
            }
            if is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run, the scalar one first (for tests).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        let all = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Avx512Vbmi];
        let rank = |i: Isa| all.iter().position(|&a| a == i).unwrap_or(0);
        // Each one includes the ones before it, AVX2 among them.
        all.into_iter().take(rank(best) + 1).collect()
    }
}

/// Defines `fn $name(isa: Isa, args…)` that runs `$body` compiled for `isa`: the body is an
/// `#[inline(always)]` function inlined into one copy per target-feature set, so LLVM
/// vectorises its plain loops for those registers (a closure passed to a target-feature
/// function is not reliably inlined, which leaves the loops scalar). Unlike
/// `ops::simd::simd_fn` the caller picks the copy, so tests can run each, and there is an
/// AVX-512 one.
macro_rules! for_each_isa {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name(isa: $crate::compress::int8::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::detect` names these only where the CPU has the features.
                $crate::compress::int8::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::compress::int8::isa::Isa::Avx512Vnni
                | $crate::compress::int8::isa::Isa::Avx512Vbmi => unsafe { avx512($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(super) use for_each_isa;

/// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude below 2²² to the nearest integer,
/// ties to even, in two additions that vectorise (`f32::round_ties_even` may be a call).
pub(super) const ROUND: f32 = 12_582_912.0;

/// `clamp(round(v) + zp, lo, 255)`, the one requantisation every kernel ends in; `v` is
/// clamped to ±512 first (past that the result saturates anyway) so that it stays exact.
/// `max` then `min` (not `clamp`) so that a NaN becomes −512 and ends at `lo`, as in the
/// vector kernels, and the conversion needs no saturating checks (which keep loops scalar).
#[inline(always)]
#[allow(clippy::manual_clamp)]
pub fn to_u8(v: f32, zp: i32, lo: i32) -> u8 {
    let r = (v.max(-512.0).min(512.0) + ROUND) - ROUND;
    // SAFETY: `r` is a finite integer in [−512, 512].
    let r: i32 = unsafe { r.to_int_unchecked() };
    (r + zp).clamp(lo, 255) as u8
}

/// An i32 accumulator times its channel's multiplier, requantised: [`to_u8`]`(acc·m)`.
#[inline(always)]
pub fn requant(acc: i32, m: f32, zp: i32, lo: i32) -> u8 {
    to_u8(acc as f32 * m, zp, lo)
}

/// [`requant`] on sixteen lanes at once, for the hand-written AVX-512 kernels.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    /// The constants of one epilogue, broadcast once per call.
    #[derive(Clone, Copy)]
    pub struct Requant16 {
        hi: __m512,
        zp: __m512i,
        qlo: __m512i,
    }

    impl Requant16 {
        #[target_feature(enable = "avx512f")]
        pub fn new(zp: i32, lo: i32) -> Requant16 {
            Requant16 {
                hi: _mm512_set1_ps(512.0),
                zp: _mm512_set1_epi32(zp),
                qlo: _mm512_set1_epi32(lo),
            }
        }

        /// `requant(acc[l], mult[l], zp, lo)` for each of the sixteen lanes, as bytes.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub fn bytes(&self, acc: __m512i, mult: __m512) -> __m128i {
            self.finish(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), mult))
        }

        /// [`to_u8`](super::to_u8) of each of the sixteen lanes, as bytes, in fewer steps
        /// with the same result: `vcvtps2dq` rounds to nearest even (the default rounding
        /// mode) as the 1.5·2²³ trick does; values below −512 (and NaN, which converts to
        /// i32::MIN) end at `lo` either way, so only the top is clamped in floats; and the
        /// unsigned saturating narrowing clamps at 255.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub fn finish(&self, f: __m512) -> __m128i {
            // `vminps` returns its second operand when one is NaN: the NaN, as in `to_u8`.
            let r = _mm512_cvtps_epi32(_mm512_min_ps(self.hi, f));
            let r = _mm512_max_epi32(_mm512_add_epi32(r, self.zp), self.qlo);
            _mm512_cvtusepi32_epi8(r)
        }
    }
}
