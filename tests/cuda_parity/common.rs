//! The parity harness: pick the backend once, run an op on both devices, compare.

use std::sync::Once;

use darts::{ops, Device, Result, Tensor};
use rand::rngs::StdRng;

static PICK: Once = Once::new();

/// Chooses the backend before the first CUDA call: the real GPU when one is usable, else the
/// emulator. Returns false (and says why) when neither can run.
pub fn ready() -> bool {
    PICK.call_once(|| {
        let forced = std::env::var("DARTS_PARITY_BACKEND").unwrap_or_default();
        if forced == "emulator" {
            std::env::set_var("DARTS_CUDA_EMULATOR", "1");
        } else if forced != "driver" && !driver_usable() {
            eprintln!(
                "cuda_parity: no usable CUDA GPU here; running the kernels under the CPU emulator"
            );
            std::env::set_var("DARTS_CUDA_EMULATOR", "1");
        }
    });
    match darts::device::cuda::gpu() {
        Ok(g) => {
            eprintln!("cuda_parity: {}", g.describe());
            true
        }
        Err(e) if std::env::var("DARTS_PARITY_BACKEND").is_ok() => panic!("{e}"),
        Err(e) => {
            eprintln!("cuda_parity: skipped: {e}");
            false
        }
    }
}

fn driver_usable() -> bool {
    // The same probe darts uses; a failure here only means "use the emulator".
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

pub fn rng(seed: u64) -> StdRng {
    darts::rng(seed)
}

/// Largest |a - b| relative to the largest |b| (at least `floor`), so that values near zero
/// in a tensor of large values do not dominate.
pub fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0f32, f32::max);
    worst / scale
}

pub fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f32) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shapes differ");
    assert_eq!(gpu.device(), Device::Cuda, "{what}: result not on the GPU");
    let (g, c) = (gpu.to_vec(), cpu.to_vec());
    let e = rel_err(&g, &c, 1e-3);
    assert!(
        e <= tol,
        "{what}: relative error {e:.2e} > {tol:.0e}\n gpu {:?}\n cpu {:?}",
        &g[..g.len().min(8)],
        &c[..c.len().min(8)]
    );
}

/// Runs `f` on CPU copies and on GPU copies of `inputs` (all tracking gradients), then compares
/// the output and every input's gradient of `sum(f(x) ⊙ r)` for a random `r`.
pub fn parity(
    what: &str,
    inputs: &[Tensor],
    tol: f32,
    seed: u64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let run = |device: Device, r: &Tensor| -> (Tensor, Vec<Tensor>) {
        let xs: Vec<Tensor> = inputs
            .iter()
            .map(|x| x.to_device(device).unwrap().requires_grad())
            .collect();
        let y = f(&xs).unwrap_or_else(|e| panic!("{what} on {device}: {e}"));
        let loss = ops::sum(&ops::mul(&y, &r.to_device(device).unwrap()).unwrap()).unwrap();
        let grads = loss
            .backward()
            .unwrap_or_else(|e| panic!("{what} backward on {device}: {e}"));
        let gs = xs
            .iter()
            .map(|x| match grads.get(x) {
                Some(g) => g.clone(),
                None => x.zeros_like().unwrap(),
            })
            .collect();
        (y, gs)
    };
    // The output's shape comes from a CPU run; r is drawn for it.
    let probe = f(inputs).unwrap_or_else(|e| panic!("{what} on cpu: {e}"));
    let r = Tensor::randn(probe.shape(), 1.0, &mut rng(seed));
    let (yc, gc) = run(Device::Cpu, &r);
    let (yg, gg) = run(Device::Cuda, &r);
    assert_close(&format!("{what} forward"), &yg, &yc, tol);
    for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
        assert_close(&format!("{what} gradient of input {i}"), g, c, tol);
    }
}
