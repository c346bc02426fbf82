//! `darts bench infer`: latency at batch 1 (median and p99 over many runs) and throughput at
//! batch 64 of each way to run a trained network, on the same test images, one after another
//! in one process, with the peak of host tensor memory each one adds.

use std::time::Instant;

use serde::Serialize;

use crate::data::source;
use crate::error::{Error, Result};
use crate::nn::Ctx;
use crate::tensor::Tensor;
use crate::train::in_order_loader;

/// One way of computing logits, with a name for the table.
pub struct Path {
    pub name: String,
    pub forward: Box<dyn FnMut(Tensor) -> Result<Tensor>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PathTiming {
    pub name: String,
    pub batch1_median_ms: f64,
    pub batch1_p99_ms: f64,
    pub batch64_ms: f64,
    pub batch64_images_per_s: f64,
    /// CPU time of the process (all threads) per call, medians: unlike wall time, it hardly
    /// moves when other processes share the cores.
    pub batch1_cpu_ms: f64,
    pub batch64_cpu_ms: f64,
    /// Peak host tensor memory above what was alive before the path ran (activations and
    /// scratch of the tensor paths; the weights were loaded before); unknown for the external
    /// runtimes. The inference paths keep their maps outside tensors: see the next field.
    pub peak_activation_bytes: Option<usize>,
    /// Peak resident memory of the process while the path ran, above the resident size just
    /// before it (after the freed heap was handed back): everything the path touches, its
    /// arenas and int8 maps among them (Linux; unknown elsewhere and for the external runtimes).
    pub peak_rss_growth_bytes: Option<usize>,
}

/// The paths `darts bench infer` compares on the run folder `checkpoint`: the training path's
/// eval-mode forward, the lowered f32 program, and the int8 program calibrated on `batches`
/// training batches; on a quantised folder, its saved int8 program alone.
pub fn paths(
    checkpoint: &std::path::Path,
    batches: usize,
    observer: crate::compress::quantize::Observer,
) -> Result<Vec<Path>> {
    if crate::compress::folder::is_quantized(checkpoint) {
        let (_, q) = crate::compress::folder::load(checkpoint)?;
        return Ok(vec![Path {
            name: format!("int8 saved program ({:?})", q.isa),
            forward: Box::new(move |x| q.forward(x)),
        }]);
    }
    let (cfg, mut net, splits) = crate::evaluate::load_trained(checkpoint, None, None)?;
    let program = super::lower(&net)?;
    let train = std::sync::Arc::new(splits.train);
    let q = crate::compress::quantize::quantize_network(
        &net,
        cfg.data.kind,
        train,
        batches,
        observer,
        0,
    )?;
    let isa = format!("int8 inference path ({:?})", q.isa);
    let mut ctx = Ctx::new(false, 0);
    Ok(vec![
        Path {
            name: "f32 training path (eval mode)".into(),
            forward: Box::new(move |x| crate::no_grad(|| Ok(net.forward(&x, &mut ctx)?.0))),
        },
        Path {
            name: "f32 inference path".into(),
            forward: Box::new(move |x| program.forward(x)),
        },
        Path {
            name: isa,
            forward: Box::new(move |x| q.forward(x)),
        },
    ])
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds of CPU the process has used, all threads together.
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}

/// Wall and CPU milliseconds of one call.
fn time(forward: &mut dyn FnMut(Tensor) -> Result<Tensor>, x: &Tensor) -> Result<(f64, f64)> {
    let (t, c) = (Instant::now(), cpu_ms());
    forward(x.clone())?;
    Ok((t.elapsed().as_secs_f64() * 1e3, cpu_ms() - c))
}

/// `runs` timed calls: sorted wall times and the median CPU time.
fn timed(
    forward: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    x: &Tensor,
    runs: usize,
) -> Result<(Vec<f64>, f64)> {
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..runs)
        .map(|_| time(forward, x))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Ok((wall, percentile(&cpu, 0.5)))
}

/// The first 64 test images of the run's dataset, normalised as in training.
fn timed_batch(checkpoint: &std::path::Path) -> Result<Tensor> {
    let (cfg, splits) = if crate::compress::folder::is_quantized(checkpoint) {
        let (_, cfg, splits, _) =
            crate::compress::quantize_cli::load_with_data(checkpoint, None, None)?;
        (cfg, splits)
    } else {
        let (cfg, _, splits) = crate::evaluate::load_trained(checkpoint, None, None)?;
        (cfg, splits)
    };
    first_test_batch(cfg.data.kind, &splits.train, splits.test)
}

/// The first 64 images of `test`, normalised as `train` is in training.
fn first_test_batch(
    kind: crate::data::DatasetKind,
    train: &crate::data::Dataset,
    test: crate::data::Dataset,
) -> Result<Tensor> {
    let norm = source::default_normalize(kind, train)?;
    let test = std::sync::Arc::new(test);
    Ok(in_order_loader(test, norm, 64)?
        .epoch(0)?
        .next()
        .ok_or_else(|| Error::InvalidArgument("the test set is empty".into()))?
        .images)
}

/// The onnxruntime and PyTorch rows for the same network and images (see [`super::external`]),
/// onnxruntime's int8 calibrated on the same `calibration_batches` training batches as our
/// int8 row.
pub fn external(
    checkpoint: &std::path::Path,
    python: &std::path::Path,
    runs: usize,
    calibration_batches: usize,
) -> Result<super::external::External> {
    if crate::compress::folder::is_quantized(checkpoint) {
        return Ok(super::external::External {
            rows: vec![],
            notes: vec![
                "onnxruntime and PyTorch rows left out: they run the f32 network, so give the \
                 `darts train` run folder this int8 folder came from"
                    .into(),
            ],
        });
    }
    let (cfg, net, splits) = crate::evaluate::load_trained(checkpoint, None, None)?;
    let norm = source::default_normalize(cfg.data.kind, &splits.train)?;
    let torch_config = crate::export::torch::config(&net, &norm, &splits.test.class_names);
    let x64 = first_test_batch(cfg.data.kind, &splits.train, splits.test)?;
    let train = std::sync::Arc::new(splits.train);
    let calibration = crate::compress::quantize::calibration_batches(
        train,
        cfg.data.kind,
        calibration_batches,
        0,
    )?;
    super::external::run(python, &net, &torch_config, &x64, &calibration, runs)
}

/// Times each path: `runs` batch-1 calls and `runs / 10` (at least 3) batch-64 calls after two
/// warm-up calls each; test images of the run's dataset.
pub fn run(checkpoint: &std::path::Path, paths: Vec<Path>, runs: usize) -> Result<Vec<PathTiming>> {
    if runs < 10 {
        return Err(Error::InvalidArgument(format!(
            "--runs must be at least 10 (for a p99), got {runs}"
        )));
    }
    let x64 = timed_batch(checkpoint)?;
    let per = x64.numel() / x64.shape()[0];
    let x1 = Tensor::from_vec(
        x64.data()[..per].to_vec(),
        &[&[1], &x64.shape()[1..]].concat(),
    )?;
    let mut out = Vec::new();
    for mut p in paths {
        let live = crate::device::pool::live_bytes();
        crate::device::pool::reset_peak();
        crate::rss::reset_peak();
        let rss = crate::rss::current_mb();
        for _ in 0..2 {
            time(&mut p.forward, &x1)?;
            time(&mut p.forward, &x64)?;
        }
        let (b1, b1_cpu) = timed(&mut p.forward, &x1, runs)?;
        let (b64, b64_cpu) = timed(&mut p.forward, &x64, (runs / 10).max(3))?;
        let ms64 = percentile(&b64, 0.5);
        out.push(PathTiming {
            name: p.name,
            batch1_median_ms: percentile(&b1, 0.5),
            batch1_p99_ms: percentile(&b1, 0.99),
            batch64_ms: ms64,
            batch64_images_per_s: x64.shape()[0] as f64 / ms64 * 1e3,
            batch1_cpu_ms: b1_cpu,
            batch64_cpu_ms: b64_cpu,
            peak_activation_bytes: Some(crate::device::pool::peak_bytes().saturating_sub(live)),
            peak_rss_growth_bytes: (rss > 0.0)
                .then(|| ((crate::rss::peak_mb() - rss).max(0.0) * (1 << 20) as f64) as usize),
        });
    }
    Ok(out)
}

/// The table: one row per path, and each path's speed-up over the first.
pub fn render(rows: &[PathTiming]) -> String {
    let mut s = format!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7}\n",
        "path",
        "b1 ms",
        "b1 p99",
        "b1 cpu",
        "b64 ms",
        "b64 cpu",
        "img/s",
        "tens MiB",
        "RSS+ MiB",
        "b64 ×"
    );
    let mib = |b: Option<usize>| {
        b.map_or("-".into(), |b| {
            format!("{:.2}", b as f64 / (1 << 20) as f64)
        })
    };
    let base = rows.first().map_or(1.0, |r| r.batch64_ms);
    for r in rows {
        s += &format!(
            "{:<40} {:>9.3} {:>9.3} {:>9.3} {:>9.2} {:>9.2} {:>8.0} {:>8} {:>8} {:>7.2}\n",
            r.name,
            r.batch1_median_ms,
            r.batch1_p99_ms,
            r.batch1_cpu_ms,
            r.batch64_ms,
            r.batch64_cpu_ms,
            r.batch64_images_per_s,
            mib(r.peak_activation_bytes),
            mib(r.peak_rss_growth_bytes),
            base / r.batch64_ms
        );
    }
    s
}
