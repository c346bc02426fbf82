//! Out of memory is an error, before it happens: `search` and `train` estimate what a run
//! needs and compare it with what the machine has before they build the network, so a run
//! too large for the machine stops at once with one line naming the flag to lower, instead
//! of an allocator abort minutes later.
//!
//! The estimate comes from small probe networks built and stepped by the run's own code (so it
//! follows every change to the networks, the step or the optimiser):
//! - **weights**: the parameter count of the network at C = 2, 4, 6, which is exactly
//!   quadratic in the initial channels C (convolutions are C_in·C_out, the rest is linear),
//!   extrapolated to the run's C, times the weight-sized copies a step holds at once (the
//!   weights, their gradient, SGD's momentum, and for the second-order search the weights
//!   before the unrolled step and two more gradients);
//! - **activations**: the peak bytes of tensor storage over two real steps at C ∈ {2, 4} and
//!   batch B ∈ {2, 4} on random images of the run's size, less the weights' share; feature
//!   maps and what the tape saves grow linearly in B and in C, so a bilinear fit through the
//!   four points extrapolates them (with a 10% margin).
//!
//! It counts tensor storage, the bulk of a run's memory at the sizes that matter; a process's
//! resident size is 10–30% above it (scratch buffers, the allocator, the binary).
//!
//! The limit is `MemAvailable` of `/proc/meminfo` or the cgroup's remaining limit, whichever is
//! lower; on `--device cuda`, the GPU's free memory. `DARTS_SKIP_MEMORY_CHECK=1` skips the check
//! (a machine that swaps, or an estimate that is wrong for a new kind of network).

use serde::Serialize;

use crate::data::ImageShape;
use crate::device::pool;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::Device;

/// Set to anything but empty or `0` to run without the check.
pub const SKIP_ENV: &str = "DARTS_SKIP_MEMORY_CHECK";

/// The widths the probe networks are built at (even: FactorizedReduce halves C).
const PROBE_CHANNELS: [usize; 3] = [2, 4, 6];
/// The batch sizes the probe networks are stepped at.
const PROBE_BATCHES: [usize; 2] = [2, 4];

/// The fit is exact at the probes, but the moment of a step's peak moves with its size: with
/// the auxiliary head, the fitted activations fell 4–8% short at batches of 64–96
/// (BENCHMARKS.md). They get this factor on top, so that the estimate errs high.
const ACTIVATION_MARGIN: f64 = 1.1;

/// True when [`SKIP_ENV`] asks to skip the check.
pub fn skipped() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What one run needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The parameters with every weight-sized copy a step holds (gradient, optimiser state).
    pub weights: f64,
    /// Feature maps, saved tensors and their gradients during one step.
    pub activations: f64,
    pub batch_size: usize,
    pub height: usize,
    pub width: usize,
    /// How long the probes took.
    pub probe_seconds: f64,
}

impl Estimate {
    pub fn total(&self) -> f64 {
        self.weights + self.activations
    }
}

/// How to measure one network family at any size: `params(c, l)` builds it with `c` channels
/// and `l` cells and counts its parameters; `peak(c, l, b)` builds it so, takes the run's step
/// on a random batch of `b` images and returns the peak bytes of tensor storage (measured
/// with [`step_peak`]); `copies` is how many weight-sized tensors per parameter a step holds
/// at once.
pub struct Probe<P, S> {
    pub params: P,
    pub peak: S,
    pub copies: f64,
}

/// Networks deeper than this are probed at two smaller depths (see [`at_depth`]).
const MAX_PROBED_LAYERS: usize = 11;

/// Extrapolates the probe's measurements to `channels`, `layers` and `batch_size` on images
/// of `shape`.
pub fn estimate<P, S>(
    probe: &Probe<P, S>,
    channels: usize,
    layers: usize,
    batch_size: usize,
    shape: &ImageShape,
) -> Result<Estimate>
where
    P: Fn(usize, usize) -> Result<usize>,
    S: Fn(usize, usize, usize) -> Result<usize>,
{
    let start = std::time::Instant::now();
    let (weights, activations) = at_depth(layers, |l| fit(probe, channels, l, batch_size))?;
    Ok(Estimate {
        weights: weights.max(0.0),
        activations: ACTIVATION_MARGIN * activations.max(0.0),
        batch_size,
        height: shape.height,
        width: shape.width,
        probe_seconds: start.elapsed().as_secs_f64(),
    })
}

/// `f(layers)`, or for a deep network its extrapolation from two shallow ones. The two
/// reduction cells (at ⌊L/3⌋ and ⌊2L/3⌋) split the cells into three stages, and three more
/// layers of the same L mod 3 add one cell to each stage, identical to the stage's other
/// cells past its first two: so the cost is affine in ⌊L/3⌋, and probes at 6 + L mod 3 and
/// 9 + L mod 3 layers (where every stage already has those first cells) give it at any depth.
/// Probing at the full depth would cost as much as the run's own step.
fn at_depth(layers: usize, f: impl Fn(usize) -> Result<(f64, f64)>) -> Result<(f64, f64)> {
    if layers <= MAX_PROBED_LAYERS {
        return f(layers);
    }
    let shallow = 6 + layers % 3;
    let (w0, a0) = f(shallow)?;
    let (w1, a1) = f(shallow + 3)?;
    let thirds = ((layers - shallow) / 3) as f64;
    Ok((w0 + thirds * (w1 - w0), a0 + thirds * (a1 - a0)))
}

/// (weights, activations) at `layers` cells: the parameter count is exactly quadratic in the
/// channels, the activations bilinear in channels and batch.
fn fit<P, S>(
    probe: &Probe<P, S>,
    channels: usize,
    layers: usize,
    batch: usize,
) -> Result<(f64, f64)>
where
    P: Fn(usize, usize) -> Result<usize>,
    S: Fn(usize, usize, usize) -> Result<usize>,
{
    let [c0, c1, c2] = PROBE_CHANNELS.map(|c| c as f64);
    let p = PROBE_CHANNELS
        .iter()
        .map(|&c| (probe.params)(c, layers).map(|n| n as f64))
        .collect::<Result<Vec<_>>>()?;
    // Lagrange's quadratic through the three exact counts.
    let params = |c: f64| {
        p[0] * (c - c1) * (c - c2) / ((c0 - c1) * (c0 - c2))
            + p[1] * (c - c0) * (c - c2) / ((c1 - c0) * (c1 - c2))
            + p[2] * (c - c0) * (c - c1) / ((c2 - c0) * (c2 - c1))
    };
    let weights = |c: f64| probe.copies * 4.0 * params(c);
    let [b0, b1] = PROBE_BATCHES.map(|b| b as f64);
    let mut a = [[0.0; 2]; 2];
    for (i, &c) in PROBE_CHANNELS[..2].iter().enumerate() {
        for (j, &b) in PROBE_BATCHES.iter().enumerate() {
            a[i][j] = (probe.peak)(c, layers, b)? as f64 - weights(c as f64);
        }
    }
    // Bilinear in (C, B) through the four probes.
    let (c, b) = (channels as f64, batch as f64);
    let (u, v) = ((c - c0) / (c1 - c0), (b - b0) / (b1 - b0));
    let activations = a[0][0] * (1.0 - u) * (1.0 - v)
        + a[1][0] * u * (1.0 - v)
        + a[0][1] * (1.0 - u) * v
        + a[1][1] * u * v;
    Ok((weights(c), activations))
}

/// Peak bytes of host tensor storage while `f` runs, above what was alive before it. The
/// counters are process-wide: nothing else may allocate tensors meanwhile (the runs call it
/// before their data loaders start).
pub fn step_peak(f: impl FnOnce() -> Result<()>) -> Result<usize> {
    let before = pool::live_bytes();
    pool::reset_peak();
    f()?;
    Ok(pool::peak_bytes().saturating_sub(before))
}

/// A batch of `batch_size` standard-normal images of `shape` and random labels, for probes.
pub fn random_batch(
    shape: &ImageShape,
    batch_size: usize,
    rng: &mut impl rand::Rng,
) -> (Tensor, Vec<usize>) {
    let dims = [batch_size, shape.channels, shape.height, shape.width];
    let labels = (0..batch_size)
        .map(|_| rng.random_range(0..shape.num_classes.max(1)))
        .collect();
    (Tensor::randn(&dims, 1.0, rng), labels)
}

/// Memory a run may use: how many bytes, and where they are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub bytes: f64,
    /// "are available" (host) or "are free on the GPU".
    pub what: &'static str,
}

fn read_number(path: &str) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The host's limit: `MemAvailable`, or the cgroup's limit less its usage when that is lower
/// (v2 `memory.max`, else v1 `memory.limit_in_bytes`); `None` where neither can be read.
pub fn host_limit() -> Option<f64> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024.0)
        });
    let cgroup = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    .iter()
    // v2 writes "max" for no limit, which does not parse: no cgroup limit then.
    .find_map(|(max, current)| Some(read_number(max)? - read_number(current)?));
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// The limit for a run on `device`: the host's, or on a GPU its free memory (the emulator's
/// "device memory" is host memory).
pub fn limit(device: Device) -> Result<Option<Limit>> {
    let gpu_free = match device {
        Device::Cuda => crate::device::cuda::gpu()?.free_memory()?,
        Device::Cpu => None,
    };
    Ok(match gpu_free {
        Some(free) => Some(Limit {
            bytes: free as f64,
            what: "are free on the GPU",
        }),
        None => host_limit().map(|bytes| Limit {
            bytes,
            what: "are available",
        }),
    })
}

/// An error when `need` exceeds `limit`: the one line names the estimate, its parts, the
/// limit and the flags that shrink the larger part.
pub fn check(command: &'static str, need: &Estimate, limit: &Limit) -> Result<()> {
    if need.total() <= limit.bytes {
        return Ok(());
    }
    // Activations grow with batch, width and depth; weights with width (squared) and depth.
    let lower = if need.activations > need.weights {
        "--batch-size, --channels or --layers"
    } else {
        "--channels or --layers"
    };
    Err(Error::OutOfMemory {
        command,
        need: need.total(),
        weights: need.weights,
        activations: need.activations,
        batch_size: need.batch_size,
        height: need.height,
        width: need.width,
        limit: limit.bytes,
        limit_what: limit.what,
        lower,
    })
}

/// The check at the start of a run on `device`: the estimate (unless [`SKIP_ENV`] is set),
/// an error when it exceeds the limit, else the estimate for the run's results.
pub fn check_run(
    command: &'static str,
    device: Device,
    estimate: impl FnOnce() -> Result<Estimate>,
) -> Result<Option<Estimate>> {
    if skipped() {
        return Ok(None);
    }
    let need = estimate()?;
    if let Some(limit) = limit(device)? {
        check(command, &need, &limit)?;
    }
    Ok(Some(need))
}

/// Measures the peak memory of a run from its start: host tensor storage on the CPU (above
/// what was alive at the start), the CUDA memory pool's high-water mark on a GPU.
pub struct PeakMeter {
    device: Device,
    before: usize,
}

impl PeakMeter {
    pub fn start(device: Device) -> Result<PeakMeter> {
        if device == Device::Cuda {
            crate::device::cuda::gpu()?.reset_peak_memory();
        }
        pool::reset_peak();
        Ok(PeakMeter {
            device,
            before: pool::live_bytes(),
        })
    }

    /// Peak bytes so far; `None` where the device does not tell (the emulator).
    pub fn peak(&self) -> Option<f64> {
        match self.device {
            Device::Cpu => Some(pool::peak_bytes().saturating_sub(self.before) as f64),
            Device::Cuda => crate::device::cuda::gpu()
                .ok()?
                .peak_memory()
                .map(|b| b as f64),
        }
    }
}

/// Bytes in binary units: "23.3 GiB".
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape {
        channels: 3,
        height: 16,
        width: 16,
        num_classes: 10,
    };

    #[test]
    fn fits_quadratic_weights_and_bilinear_activations_exactly() {
        // A made-up family: (5c² + 7c + 11)·(⌊l/3⌋ + 2) parameters (affine in ⌊l/3⌋ within
        // one residue), 3 copies, activations (100·b·c + 40·c + 9)·l.
        let params = |c: usize, l: usize| (5 * c * c + 7 * c + 11) * (l / 3 + 2);
        let act = |c: usize, l: usize, b: usize| (100 * b * c + 40 * c + 9) * l;
        let probe = Probe {
            params: |c, l| Ok(params(c, l)),
            peak: |c, l, b| Ok(3 * 4 * params(c, l) + act(c, l, b)),
            copies: 3.0,
        };
        for layers in [5, 20, 1000, 1001, 1002] {
            let e = estimate(&probe, 1000, layers, 64, &SHAPE).unwrap();
            let weights = (12 * params(1000, layers)) as f64;
            assert!((e.weights / weights - 1.0).abs() < 1e-9, "{layers}");
            let activations = ACTIVATION_MARGIN * act(1000, layers, 64) as f64;
            assert!((e.activations / activations - 1.0).abs() < 1e-9, "{layers}");
            assert_eq!((e.batch_size, e.height, e.width), (64, 16, 16));
        }
    }

    #[test]
    fn the_error_names_the_estimate_the_limit_and_the_flag() {
        let gib = 1024f64.powi(3);
        let need = Estimate {
            weights: 2.0 * gib,
            activations: 30.0 * gib,
            batch_size: 100_000,
            height: 16,
            width: 16,
            probe_seconds: 0.0,
        };
        let limit = Limit {
            bytes: 23.3 * gib,
            what: "are available",
        };
        let msg = check("search", &need, &limit).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "darts search needs about 32.0 GiB (weights 2.0 GiB, activations 30.0 GiB for \
                 --batch-size 100000 at 16×16) but 23.3 GiB are available; lower --batch-size, \
                 --channels or --layers"
            ),
            "{msg}"
        );
        let weights_heavy = Estimate {
            weights: 30.0 * gib,
            activations: 2.0 * gib,
            ..need
        };
        let msg = check("train", &weights_heavy, &limit)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("lower --channels or --layers"), "{msg}");
        assert!(check(
            "train",
            &need,
            &Limit {
                bytes: 40.0 * gib,
                ..limit
            }
        )
        .is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_has_a_host_limit() {
        let bytes = host_limit().expect("Linux has /proc/meminfo");
        assert!(bytes > 0.0);
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(559.9 * 1024f64.powi(4)), "559.9 TiB");
    }
}
