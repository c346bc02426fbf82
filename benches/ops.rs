//! Op kernel throughput: `cargo bench --bench ops`.
//!
//! Measures, on all cores, the machine's ceilings (FP32 FMA peak from a register-only loop,
//! memory-copy bandwidth over 64 MB, sgemm GFLOP/s at 256³/512³/1024³) and then conv2d forward
//! and backward (dx + dw) for the DARTS supernet's shapes at batch 64, 32×32: GFLOP/s as a
//! fraction of the best sgemm of the same run and, for the memory-bound convs, GB/s (minimal
//! bytes: every operand read once, every result written once) as a fraction of the copy
//! bandwidth. Each figure is the best of several timed repetitions after a warm-up: the machine
//! is shared, and the fastest run is the one least disturbed by other processes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use darts::device::cpu::{sgemm_par, Mat};
use darts::ops::{conv2d, conv2d_backward, Conv2dCfg};
use darts::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

/// Fastest seconds of `f` over repetitions filling about `budget` (at least 3, at most 200).
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64().max(1e-9);
    let reps = ((budget.as_secs_f64() / once) as usize).clamp(3, 200);
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Independent FMA chains per thread: enough to cover the FMA latency on both FMA ports.
const CHAINS: usize = 12;

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); CHAINS];
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    for r in acc {
        let mut l = [0.0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), r);
        lanes.iter_mut().zip(l).for_each(|(s, v)| *s += v);
    }
    lanes.iter().sum()
}

/// The same with 512-bit registers, in assembly (the AVX-512 intrinsics need a newer Rust than
/// the crate's minimum): matrixmultiply picks an AVX-512 kernel where the CPU has one.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn fma_loop_avx512(iters: usize) {
    std::arch::asm!(
        "vxorps xmm0, xmm0, xmm0",
        "vbroadcastss zmm12, xmm0",
        "vmovaps zmm13, zmm12",
        "vmovaps zmm1, zmm12",
        "vmovaps zmm2, zmm12",
        "vmovaps zmm3, zmm12",
        "vmovaps zmm4, zmm12",
        "vmovaps zmm5, zmm12",
        "vmovaps zmm6, zmm12",
        "vmovaps zmm7, zmm12",
        "vmovaps zmm8, zmm12",
        "vmovaps zmm9, zmm12",
        "vmovaps zmm10, zmm12",
        "vmovaps zmm11, zmm12",
        "2:",
        "vfmadd231ps zmm0, zmm12, zmm13",
        "vfmadd231ps zmm1, zmm12, zmm13",
        "vfmadd231ps zmm2, zmm12, zmm13",
        "vfmadd231ps zmm3, zmm12, zmm13",
        "vfmadd231ps zmm4, zmm12, zmm13",
        "vfmadd231ps zmm5, zmm12, zmm13",
        "vfmadd231ps zmm6, zmm12, zmm13",
        "vfmadd231ps zmm7, zmm12, zmm13",
        "vfmadd231ps zmm8, zmm12, zmm13",
        "vfmadd231ps zmm9, zmm12, zmm13",
        "vfmadd231ps zmm10, zmm12, zmm13",
        "vfmadd231ps zmm11, zmm12, zmm13",
        "dec {n}",
        "jnz 2b",
        n = inout(reg) iters => _,
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
        out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _,
        options(nomem, nostack),
    );
}

/// Peak FP32 GFLOP/s of `lanes`-wide FMA loops run on every rayon thread at once.
fn fma_peak(lanes: usize, run: fn(usize)) -> f64 {
    const ITERS: usize = 20_000_000;
    let threads = rayon::current_num_threads();
    let t = time(Duration::from_secs(1), || {
        (0..threads).into_par_iter().for_each(|_| run(ITERS));
    });
    (threads * ITERS * CHAINS * lanes * 2) as f64 / t / 1e9
}

/// The FMA peaks the CPU supports, as (name, GFLOP/s).
fn fma_peaks() -> Vec<(&'static str, f64)> {
    let mut peaks = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were just detected.
            let run = |n| {
                black_box(unsafe { fma_loop_avx2(n) });
            };
            peaks.push(("AVX2 FMA", fma_peak(8, run)));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected.
            peaks.push((
                "AVX-512 FMA",
                fma_peak(16, |n| unsafe { fma_loop_avx512(n) }),
            ));
        }
    }
    peaks
}

/// Copy bandwidth in GB/s (bytes read + written) for a 64 MB buffer, split across threads.
fn copy_bandwidth() -> f64 {
    let n = (64 << 20) / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let t = time(Duration::from_secs(1), || {
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&dst);
    });
    (2 * 4 * n) as f64 / t / 1e9
}

fn sgemm_gflops(n: usize, rng: &mut StdRng) -> f64 {
    let a = Tensor::randn(&[n, n], 1.0, rng).to_vec();
    let b = Tensor::randn(&[n, n], 1.0, rng).to_vec();
    let mut c = vec![0.0; n * n];
    let t = time(Duration::from_millis(1500), || {
        sgemm_par(n, n, n, 1.0, Mat::rm(&a, n), Mat::rm(&b, n), 0.0, &mut c);
        black_box(&c);
    });
    2.0 * (n * n * n) as f64 / t / 1e9
}

/// One benchmarked conv: batch 64, 32×32, "same" padding, stride 1.
struct ConvCase {
    name: &'static str,
    cin: usize,
    cout: usize,
    k: usize,
    dil: usize,
    groups: usize,
    /// Report GB/s too (memory-bound shapes).
    bytes: bool,
}

#[rustfmt::skip]
const CONVS: [ConvCase; 7] = [
    ConvCase { name: "dense 3×3", cin: 16, cout: 16, k: 3, dil: 1, groups: 1, bytes: true },
    ConvCase { name: "dense 3×3", cin: 64, cout: 64, k: 3, dil: 1, groups: 1, bytes: false },
    ConvCase { name: "pointwise 1×1", cin: 48, cout: 16, k: 1, dil: 1, groups: 1, bytes: true },
    ConvCase { name: "depthwise 3×3", cin: 32, cout: 32, k: 3, dil: 1, groups: 32, bytes: true },
    ConvCase { name: "depthwise 5×5", cin: 32, cout: 32, k: 5, dil: 1, groups: 32, bytes: true },
    ConvCase { name: "depthwise 3×3 d2", cin: 32, cout: 32, k: 3, dil: 2, groups: 32, bytes: true },
    ConvCase { name: "depthwise 5×5 d2", cin: 32, cout: 32, k: 5, dil: 2, groups: 32, bytes: true },
];

const N: usize = 64;
const HW: usize = 32;

/// (forward seconds, backward seconds) for one conv.
fn time_conv(c: &ConvCase, rng: &mut StdRng) -> (f64, f64) {
    let cfg = Conv2dCfg {
        padding: c.dil * (c.k - 1) / 2,
        dilation: c.dil,
        groups: c.groups,
        ..Default::default()
    };
    let x = Tensor::randn(&[N, c.cin, HW, HW], 1.0, rng);
    let w = Tensor::randn(&[c.cout, c.cin / c.groups, c.k, c.k], 0.1, rng);
    let budget = Duration::from_millis(1500);
    let fwd = time(budget, || {
        black_box(conv2d(&x, &w, None, cfg).unwrap());
    });
    let dy = conv2d(&x, &w, None, cfg).unwrap();
    let bwd = time(budget, || {
        black_box(conv2d_backward(&x, &w, &dy, cfg, [true, true, false]).unwrap());
    });
    (fwd, bwd)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(0);
    let threads = rayon::current_num_threads();
    println!("darts op kernels: {threads} rayon threads, batch {N}, {HW}×{HW} maps\n");

    let peaks = fma_peaks();
    let peak = peaks.iter().map(|p| p.1).fold(0.0, f64::max);
    let copy = copy_bandwidth();
    for (name, gf) in &peaks {
        println!("FP32 FMA peak ({name}, register-only loop): {gf:.1} GFLOP/s");
    }
    println!("memory copy, 64 MB (read + write): {copy:.1} GB/s\n");

    println!("| sgemm (sgemm_par) | GFLOP/s | % FMA peak |");
    println!("|---|---:|---:|");
    let mut best = 0.0f64;
    for n in [256, 512, 1024] {
        let gf = sgemm_gflops(n, &mut rng);
        best = best.max(gf);
        let of_peak = if peak > 0.0 {
            format!("{:.0}%", 100.0 * gf / peak)
        } else {
            "-".into()
        };
        println!("| {n}³ | {gf:.1} | {of_peak} |");
    }

    let cols = ["ms", "GFLOP/s", "% sgemm", "GB/s", "% copy"];
    let head: Vec<String> = ["fwd", "bwd"]
        .iter()
        .flat_map(|pass| cols.iter().map(move |c| format!("{pass} {c}")))
        .collect();
    println!(
        "\n| conv2d, N={N}, {HW}×{HW} | Cin→Cout | {} |",
        head.join(" | ")
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &CONVS {
        let (fwd, bwd) = time_conv(c, &mut rng);
        let (x, y) = (N * c.cin * HW * HW, N * c.cout * HW * HW);
        let w = c.cout * c.cin / c.groups * c.k * c.k;
        let flops = 2.0 * (y * c.cin / c.groups * c.k * c.k) as f64;
        // Forward reads x and w and writes y; backward reads x, w and dy, writes dx and dw.
        let bytes = [4 * (x + w + y), 4 * (2 * x + y + 2 * w)];
        let runs = [(fwd, flops, bytes[0]), (bwd, 2.0 * flops, bytes[1])];
        let cols = runs.map(|(t, f, b)| {
            let gf = f / t / 1e9;
            let mem = if c.bytes {
                let gb = b as f64 / t / 1e9;
                format!("{gb:.1} | {:.0}%", 100.0 * gb / copy)
            } else {
                "- | -".into()
            };
            format!(
                "{:.2} | {gf:.1} | {:.0}% | {mem}",
                t * 1e3,
                100.0 * gf / best
            )
        });
        println!(
            "| {} | {}→{} | {} | {} |",
            c.name, c.cin, c.cout, cols[0], cols[1]
        );
    }
}
