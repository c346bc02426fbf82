//! The int8 matrix product under every dense convolution, requantised in its epilogue:
//! `out[p·n + o] = requant(Σ_k a[p·lda + k]·w[o][k] + bias[o], mult[o])` for activation rows
//! `a` (uint8: one output position each, its patch in NHWC order) against weights `w` (int8,
//! packed once by [`PackedW::new`]).
//!
//! The micro-kernels hold a tile of MR positions × NR vectors of output channels in registers
//! and walk the reduction in groups of lanes, so no sum is ever horizontal:
//!
//! - AVX-512 VNNI: weights packed `[k/4][o][4]`; each step broadcasts a position's four
//!   activation bytes to all lanes and `vpdpbusd` adds four u8 × i8 products into each of 16
//!   output channels' i32 lanes;
//! - AVX2: weights packed `[k/2][o][2]` as i16; a position's two activations, widened to i16,
//!   are broadcast and `vpmaddwd` adds both products into each of 8 channels' i32 lanes
//!   (`vpmaddubsw` would be twice as wide but saturates its i16 pair sums at 255·127·2);
//! - scalar: the reference, one dot product per output.
//!
//! Every row of `a` must have [`PackedW::kp`] readable bytes (the reduction rounded up to 4);
//! the bytes past `k` meet zero weights.
//!
//! The epilogue can also add uint8 maps laid out like the output ([`Adds`]): a node's sum
//! computed by the conv of its last term, requantised once instead of twice, without a pass
//! of its own.

use super::isa::{requant, to_u8, Isa};
use super::map::{OutQ, QTensor};

/// Weights of `n` outputs over a reduction of `k`, in each kernel's layout.
#[derive(Clone, Debug)]
pub struct PackedW {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of 4: the row length the vector kernels read.
    pub kp: usize,
    scalar: Vec<i8>,
    vnni: Vec<i8>,
    avx2: Vec<i16>,
}

impl PackedW {
    /// From row-major `w[o·k + kk]`.
    pub fn new(w: &[i8], n: usize, k: usize) -> PackedW {
        assert_eq!(w.len(), n * k, "int8 gemm: weights are not n × k");
        let kp = k.div_ceil(4) * 4;
        let (n16, n8) = (n.div_ceil(16) * 16, n.div_ceil(8) * 8);
        let mut vnni = vec![0i8; kp * n16];
        let mut avx2 = vec![0i16; kp * n8];
        for o in 0..n {
            for kk in 0..k {
                let v = w[o * k + kk];
                vnni[(kk / 4 * n16 + o) * 4 + kk % 4] = v;
                if n == 8 {
                    // Lanes 8..15 repeat the eight outputs: the paired kernel computes two
                    // positions per vector (the others never store those lanes).
                    vnni[(kk / 4 * n16 + o + 8) * 4 + kk % 4] = v;
                }
                avx2[(kk / 2 * n8 + o) * 2 + kk % 2] = v as i16;
            }
        }
        PackedW {
            n,
            k,
            kp,
            scalar: w.to_vec(),
            vnni,
            avx2,
        }
    }
}

/// Per output channel i32 bias and f32 multiplier (padded to a multiple of 16 channels), the
/// output zero point and the smallest byte allowed.
pub struct Epilogue {
    pub bias: Vec<i32>,
    pub mult: Vec<f32>,
    pub zp: i32,
    pub lo: i32,
}

/// Maps added to the output in the epilogue, in the output's units: element `i` of the result
/// is `to_u8(acc·mult + Σ_t a_t·q_t[i] + shift)`, the terms in order, each a multiply then an
/// add (no fused multiply-add, so every instruction set rounds alike). No terms: plain
/// [`requant`].
#[derive(Clone, Default)]
pub struct Adds<'a> {
    pub terms: Vec<(&'a [u8], f32)>,
    pub shift: f32,
}

impl<'a> Adds<'a> {
    /// The terms that add the maps `xs` in `out`'s units: `a_t = s_t/s_y`, and the shift
    /// `−Σ_t a_t·zp_t` (the unfused sum's arithmetic, in the same order).
    pub fn of(xs: &[&'a QTensor], out: OutQ) -> Adds<'a> {
        let terms: Vec<(&[u8], f32)> = xs
            .iter()
            .map(|x| (&x.data[..], x.scale / out.scale))
            .collect();
        let shift = -terms
            .iter()
            .zip(xs)
            .map(|(t, x)| t.1 * x.zp as f32)
            .sum::<f32>();
        Adds { terms, shift }
    }

    /// The terms' rows `p0..p0 + rows` of `n` channels, for a block of output positions.
    pub fn rows(&self, p0: usize, rows: usize, n: usize) -> Adds<'_> {
        Adds {
            terms: self
                .terms
                .iter()
                .map(|&(q, a)| (&q[p0 * n..][..rows * n], a))
                .collect(),
            shift: self.shift,
        }
    }

    /// Element `i` of the result from its scaled accumulator `v = acc·mult`.
    #[inline(always)]
    fn finish(&self, v: f32, i: usize, zp: i32, lo: i32) -> u8 {
        let v = self.terms.iter().fold(v, |v, &(q, a)| v + a * q[i] as f32);
        to_u8(v + self.shift, zp, lo)
    }
}

/// One product: `rows` positions of `a` (row stride `lda`) through `w`, requantised by `epi`
/// with the maps of `adds` added.
pub struct Gemm<'a> {
    pub a: &'a [u8],
    pub lda: usize,
    pub rows: usize,
    pub w: &'a PackedW,
    pub epi: &'a Epilogue,
    pub adds: &'a Adds<'a>,
}

/// The product `g` into `out[p·n + o]`.
pub fn gemm(isa: Isa, g: &Gemm, out: &mut [u8]) {
    let Gemm {
        a,
        lda,
        rows,
        w,
        epi,
        adds,
    } = *g;
    if rows == 0 {
        return;
    }
    assert!(
        lda >= w.kp && a.len() >= (rows - 1) * lda + w.kp && out.len() >= rows * w.n,
        "int8 gemm: buffers too small"
    );
    assert!(epi.bias.len() >= w.n.div_ceil(16) * 16 && epi.mult.len() == epi.bias.len());
    assert!(
        adds.terms.iter().all(|t| t.0.len() >= rows * w.n),
        "int8 gemm: an added map is smaller than the output"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` names these only where the CPU has the features; the sizes
        // were checked above.
        Isa::Avx512Vnni | Isa::Avx512Vbmi => unsafe { x86::gemm_vnni(g, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::gemm_avx2(g, out) },
        _ => gemm_scalar(g, out),
    }
}

fn gemm_scalar(g: &Gemm, out: &mut [u8]) {
    let (a, w, epi, adds) = (g.a, g.w, g.epi, g.adds);
    let (n, k) = (w.n, w.k);
    for p in 0..g.rows {
        let row = &a[p * g.lda..][..k];
        for o in 0..n {
            let wr = &w.scalar[o * k..][..k];
            let acc: i32 = row.iter().zip(wr).map(|(&x, &v)| x as i32 * v as i32).sum();
            let acc = acc + epi.bias[o];
            out[p * n + o] = if adds.terms.is_empty() {
                requant(acc, epi.mult[o], epi.zp, epi.lo)
            } else {
                adds.finish(acc as f32 * epi.mult[o], p * n + o, epi.zp, epi.lo)
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::isa::x86::Requant16;
    use super::{Adds, Epilogue, Gemm, PackedW};

    /// What every tile of one call shares.
    struct Job<'a> {
        a: *const u8,
        lda: usize,
        w: &'a PackedW,
        epi: &'a Epilogue,
        adds: &'a Adds<'a>,
        out: *mut u8,
    }

    impl<'a> Job<'a> {
        fn new(g: &'a Gemm<'a>, out: &mut [u8]) -> Job<'a> {
            Job {
                a: g.a.as_ptr(),
                lda: g.lda,
                w: g.w,
                epi: g.epi,
                adds: g.adds,
                out: out.as_mut_ptr(),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn gemm_vnni(g: &Gemm, out: &mut [u8]) {
        let (job, w, rows) = (Job::new(g, out), g.w, g.rows);
        if w.n == 8 {
            // Eight outputs fill half a vector: two positions share one instead.
            let mut p = 0;
            while p + 16 <= rows {
                tile_pairs::<8>(&job, p);
                p += 16;
            }
            while p + 2 <= rows {
                tile_pairs::<1>(&job, p);
                p += 2;
            }
            if p < rows {
                tile_vnni::<1, 1>(&job, p, 0);
            }
            return;
        }
        let vecs = w.n.div_ceil(16);
        let mut v0 = 0;
        while v0 < vecs {
            let nr = (vecs - v0).min(4);
            match nr {
                1 => rows_vnni::<8, 1>(&job, rows, v0),
                2 => rows_vnni::<6, 2>(&job, rows, v0),
                3 => rows_vnni::<4, 3>(&job, rows, v0),
                _ => rows_vnni::<4, 4>(&job, rows, v0),
            }
            v0 += nr;
        }
    }

    /// All rows against output vectors `v0..v0 + NR`: tiles of MR rows, then single rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn rows_vnni<const MR: usize, const NR: usize>(job: &Job, rows: usize, v0: usize) {
        let mut p = 0;
        while p + MR <= rows {
            tile_vnni::<MR, NR>(job, p, v0);
            p += MR;
        }
        while p < rows {
            tile_vnni::<1, NR>(job, p, v0);
            p += 1;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_vnni<const MR: usize, const NR: usize>(job: &Job, p: usize, v0: usize) {
        let w = job.w;
        let n16 = w.n.div_ceil(16) * 16;
        let a = job.a.add(p * job.lda);
        let wv = w.vnni.as_ptr().add(v0 * 64);
        let mut acc = [[_mm512_setzero_si512(); NR]; MR];
        for q in 0..w.kp / 4 {
            let wq = wv.add(q * n16 * 4);
            let mut ws = [_mm512_setzero_si512(); NR];
            for (j, v) in ws.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wq.add(j * 64) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let quad = (a.add(i * job.lda + q * 4) as *const i32).read_unaligned();
                let b = _mm512_set1_epi32(quad);
                for (c, v) in row.iter_mut().zip(&ws) {
                    *c = _mm512_dpbusd_epi32(*c, b, *v);
                }
            }
        }
        let rq = Requant16::new(job.epi.zp, job.epi.lo);
        for j in 0..NR {
            let o = (v0 + j) * 16;
            let bias = _mm512_loadu_si512(job.epi.bias.as_ptr().add(o) as *const _);
            let mult = _mm512_loadu_ps(job.epi.mult.as_ptr().add(o));
            let cnt = (w.n - o).min(16);
            let mask: __mmask16 = if cnt == 16 { !0 } else { (1 << cnt) - 1 };
            for (i, row) in acc.iter().enumerate() {
                let at = (p + i) * w.n + o;
                store(job, &rq, _mm512_add_epi32(row[j], bias), mult, at, mask);
            }
        }
    }

    /// `MP` pairs of positions from `p` against the eight outputs (`n == 8`): lanes 0..7 are
    /// position `p + 2i`, lanes 8..15 position `p + 2i + 1`, which are also the next 16 bytes
    /// of the output.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_pairs<const MP: usize>(job: &Job, p: usize) {
        let w = job.w;
        let a = job.a.add(p * job.lda);
        let mut acc = [_mm512_setzero_si512(); MP];
        for q in 0..w.kp / 4 {
            let wq = _mm512_loadu_si512(w.vnni.as_ptr().add(q * 64) as *const _);
            for (i, c) in acc.iter_mut().enumerate() {
                let row = |r: usize| (a.add(r * job.lda + q * 4) as *const i32).read_unaligned();
                let b =
                    _mm512_mask_set1_epi32(_mm512_set1_epi32(row(2 * i)), 0xFF00, row(2 * i + 1));
                *c = _mm512_dpbusd_epi32(*c, b, wq);
            }
        }
        let rq = Requant16::new(job.epi.zp, job.epi.lo);
        // The eight outputs' bias and multipliers in both halves (AVX-512F broadcasts).
        let bias = _mm512_broadcast_i64x4(_mm256_loadu_si256(job.epi.bias.as_ptr() as *const _));
        let mult = _mm256_loadu_si256(job.epi.mult.as_ptr() as *const _);
        let mult = _mm512_castsi512_ps(_mm512_broadcast_i64x4(mult));
        for (i, c) in acc.iter().enumerate() {
            store(
                job,
                &rq,
                _mm512_add_epi32(*c, bias),
                mult,
                (p + 2 * i) * 8,
                !0,
            );
        }
    }

    /// Sixteen accumulators (bias added) requantised, with the added maps, into the output
    /// bytes `at..` that `mask` selects.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store(
        job: &Job,
        rq: &Requant16,
        acc: __m512i,
        mult: __m512,
        at: usize,
        mask: __mmask16,
    ) {
        let r = if job.adds.terms.is_empty() {
            rq.bytes(acc, mult)
        } else {
            let mut f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), mult);
            for &(q, a) in &job.adds.terms {
                let x = _mm_maskz_loadu_epi8(mask, q.as_ptr().add(at) as *const i8);
                let x = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x));
                f = _mm512_add_ps(f, _mm512_mul_ps(_mm512_set1_ps(a), x));
            }
            rq.finish(_mm512_add_ps(f, _mm512_set1_ps(job.adds.shift)))
        };
        _mm_mask_storeu_epi8(job.out.add(at) as *mut i8, mask, r);
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gemm_avx2(g: &Gemm, out: &mut [u8]) {
        let (job, w, rows) = (Job::new(g, out), g.w, g.rows);
        let vecs = w.n.div_ceil(8);
        let mut v0 = 0;
        while v0 < vecs {
            let nr = (vecs - v0).min(2);
            match nr {
                1 => rows_avx2::<1>(&job, rows, v0),
                _ => rows_avx2::<2>(&job, rows, v0),
            }
            v0 += nr;
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2<const NR: usize>(job: &Job, rows: usize, v0: usize) {
        let mut p = 0;
        while p + 4 <= rows {
            tile_avx2::<4, NR>(job, p, v0);
            p += 4;
        }
        while p < rows {
            tile_avx2::<1, NR>(job, p, v0);
            p += 1;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2<const MR: usize, const NR: usize>(job: &Job, p: usize, v0: usize) {
        let w = job.w;
        let n8 = w.n.div_ceil(8) * 8;
        let a = job.a.add(p * job.lda);
        let wv = w.avx2.as_ptr().add(v0 * 16);
        let mut acc = [[_mm256_setzero_si256(); NR]; MR];
        for q in 0..w.kp / 2 {
            let wq = wv.add(q * n8 * 2);
            let mut ws = [_mm256_setzero_si256(); NR];
            for (j, v) in ws.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(wq.add(j * 16) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let x = a.add(i * job.lda + q * 2);
                let b = _mm256_set1_epi32(*x as i32 | (*x.add(1) as i32) << 16);
                for (c, v) in row.iter_mut().zip(&ws) {
                    *c = _mm256_add_epi32(*c, _mm256_madd_epi16(b, *v));
                }
            }
        }
        let (lo, hi) = (_mm256_set1_ps(-512.0), _mm256_set1_ps(512.0));
        let round = _mm256_set1_ps(super::super::isa::ROUND);
        let zp = _mm256_set1_epi32(job.epi.zp);
        let (qlo, qhi) = (_mm256_set1_epi32(job.epi.lo), _mm256_set1_epi32(255));
        for j in 0..NR {
            let o = (v0 + j) * 8;
            let bias = _mm256_loadu_si256(job.epi.bias.as_ptr().add(o) as *const _);
            let mult = _mm256_loadu_ps(job.epi.mult.as_ptr().add(o));
            let cnt = (w.n - o).min(8);
            for (i, row) in acc.iter().enumerate() {
                let at = (p + i) * w.n + o;
                let f = _mm256_cvtepi32_ps(_mm256_add_epi32(row[j], bias));
                let mut f = _mm256_mul_ps(f, mult);
                if !job.adds.terms.is_empty() {
                    for &(q, a) in &job.adds.terms {
                        let mut x = [0u8; 16];
                        x[..cnt].copy_from_slice(&q[at..][..cnt]);
                        let x = _mm256_cvtepu8_epi32(_mm_loadu_si128(x.as_ptr() as *const _));
                        f = _mm256_add_ps(
                            f,
                            _mm256_mul_ps(_mm256_set1_ps(a), _mm256_cvtepi32_ps(x)),
                        );
                    }
                    f = _mm256_add_ps(f, _mm256_set1_ps(job.adds.shift));
                }
                let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
                let f = _mm256_sub_ps(_mm256_add_ps(f, round), round);
                let r = _mm256_add_epi32(_mm256_cvttps_epi32(f), zp);
                let r = _mm256_min_epi32(_mm256_max_epi32(r, qlo), qhi);
                let r16 =
                    _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
                let bytes: [u8; 16] = std::mem::transmute(_mm_packus_epi16(r16, r16));
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), job.out.add(at), cnt);
            }
        }
    }
}
