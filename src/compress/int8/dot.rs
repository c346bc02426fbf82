//! u8 × i8 → i32 matrix-vector products, the inner loop of every int8 convolution: `out[o] =
//! Σ_k x[k] · w[o·k_len + k]` for an activation patch `x` (uint8) against each weight row
//! (int8). Three copies, chosen at run time ([`Isa::detect`]), all exact integer arithmetic, so
//! they agree bit for bit:
//!
//! - scalar: the reference;
//! - AVX2: both operands widened to i16 and multiplied-and-paired by `vpmaddwd` into i32. The
//!   faster `vpmaddubsw` (u8 × i8 pairs summed into *i16*) is not used: 255·127·2 overflows i16
//!   and the instruction saturates, which would make results depend on the instruction set;
//! - AVX-512 VNNI: `vpdpbusd` multiplies u8 × i8 and sums groups of four straight into i32
//!   lanes, no intermediate saturation, 64 products per instruction.
//!
//! Four weight rows are done at once so that each loaded activation vector is used four times.

/// The instruction set the int8 kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    /// The best this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
                return Isa::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run, the scalar one first (for tests).
    pub fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
            }
            if Isa::detect() == Isa::Avx512Vnni {
                all.push(Isa::Avx512Vnni);
            }
        }
        all
    }
}

/// `out[o] = Σ_k x[k]·w[o·x.len() + k]` for `o < out.len()`.
pub fn matvec(isa: Isa, x: &[u8], w: &[i8], out: &mut [i32]) {
    let k = x.len();
    assert_eq!(
        w.len(),
        k * out.len(),
        "int8 matvec: weight rows do not match"
    );
    match isa {
        Isa::Scalar => matvec_scalar(x, w, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` returned these only where the CPU has the features.
        Isa::Avx2 => unsafe { x86::matvec_avx2(x, w, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::matvec_vnni(x, w, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => matvec_scalar(x, w, out),
    }
}

pub fn matvec_scalar(x: &[u8], w: &[i8], out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len().max(1))) {
        *o = x.iter().zip(row).map(|(&a, &b)| a as i32 * b as i32).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    unsafe fn hsum256(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// Rows `w[r·k..]` for the four `r` in `rows` against `x`, in i32, over `0..k16` (a
    /// multiple of 16): u8 and i8 widened to i16, `vpmaddwd` pairs them into i32.
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2<const R: usize>(x: &[u8], w: &[i8], k16: usize) -> [i32; R] {
        let k = x.len();
        let mut acc = [_mm256_setzero_si256(); R];
        let mut i = 0;
        while i < k16 {
            let xv = _mm256_cvtepu8_epi16(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
            for (r, a) in acc.iter_mut().enumerate() {
                let p = w.as_ptr().add(r * k + i) as *const __m128i;
                let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(p));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
            }
            i += 16;
        }
        let mut out = [0; R];
        for r in 0..R {
            out[r] = hsum256(acc[r]);
        }
        out
    }

    fn tail(x: &[u8], row: &[i8], from: usize) -> i32 {
        x[from..]
            .iter()
            .zip(&row[from..])
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum()
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn matvec_avx2(x: &[u8], w: &[i8], out: &mut [i32]) {
        let k = x.len();
        let k16 = k / 16 * 16;
        let mut o = 0;
        while o + 4 <= out.len() {
            let s = rows_avx2::<4>(x, &w[o * k..], k16);
            for r in 0..4 {
                out[o + r] = s[r] + tail(x, &w[(o + r) * k..][..k], k16);
            }
            o += 4;
        }
        while o < out.len() {
            out[o] = rows_avx2::<1>(x, &w[o * k..], k16)[0] + tail(x, &w[o * k..][..k], k16);
            o += 1;
        }
    }

    /// As [`rows_avx2`] with `vpdpbusd`, 64 products per step, the tail by a masked load.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows_vnni<const R: usize>(x: &[u8], w: &[i8]) -> [i32; R] {
        let k = x.len();
        let mut acc = [_mm512_setzero_si512(); R];
        let mut i = 0;
        while i < k {
            let left = k - i;
            let mask: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
            let xv = _mm512_maskz_loadu_epi8(mask, x.as_ptr().add(i) as *const i8);
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_maskz_loadu_epi8(mask, w.as_ptr().add(r * k + i));
                *a = _mm512_dpbusd_epi32(*a, xv, wv);
            }
            i += 64;
        }
        let mut out = [0; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_epi32(acc[r]);
        }
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn matvec_vnni(x: &[u8], w: &[i8], out: &mut [i32]) {
        let k = x.len();
        let mut o = 0;
        while o + 4 <= out.len() {
            out[o..o + 4].copy_from_slice(&rows_vnni::<4>(x, &w[o * k..]));
            o += 4;
        }
        while o < out.len() {
            out[o] = rows_vnni::<1>(x, &w[o * k..])[0];
            o += 1;
        }
    }
}
