//! The fused optimiser kernels and gradient clipping against the CPU loops.

use darts::nn::{self, Ctx, Layer, Linear, Module};
use darts::optim::{clip_grad_norm, Adam, Optimizer, Sgd};
use darts::{ops, Device, Tensor};

use crate::common::{assert_close, ready, rng};

/// A Linear layer with odd sizes and its loss on a fixed batch, on `device`.
fn model_and_loss(device: Device) -> (Linear, Tensor, Vec<usize>) {
    let mut m = Linear::new(13, 7, true, &mut rng(20)).unwrap();
    nn::to_device(&mut m, device).unwrap();
    let x = Tensor::randn(&[5, 13], 1.0, &mut rng(21))
        .to_device(device)
        .unwrap();
    (m, x, vec![0, 3, 6, 2, 3])
}

fn steps(device: Device, opt: &mut dyn Optimizer, clip: Option<f32>) -> Vec<Vec<f32>> {
    let (mut m, x, y) = model_and_loss(device);
    for _ in 0..3 {
        let loss = ops::cross_entropy(&m.forward(&x, &mut Ctx::new(true, 0)).unwrap(), &y).unwrap();
        let mut g = loss.backward().unwrap();
        if let Some(c) = clip {
            let norm = clip_grad_norm(&m, &mut g, c).unwrap();
            assert!(norm.is_finite());
        }
        opt.step(&mut m, &g).unwrap();
    }
    let mut out = Vec::new();
    m.visit("", &mut |_, t, _| out.push(t.to_vec()));
    out
}

fn compare(what: &str, gpu: Vec<Vec<f32>>, cpu: Vec<Vec<f32>>) {
    for (g, c) in gpu.into_iter().zip(cpu) {
        let n = g.len();
        let g = Tensor::from_vec(g, &[n])
            .unwrap()
            .to_device(Device::Cuda)
            .unwrap();
        assert_close(what, &g, &Tensor::from_vec(c, &[n]).unwrap(), 1e-5);
    }
}

#[test]
fn sgd_and_adam_steps_match_the_cpu() {
    if !ready() {
        return;
    }
    for (mu, wd, nesterov) in [(0.0, 0.0, false), (0.9, 3e-4, false), (0.9, 1e-3, true)] {
        let sgd = Sgd::new(0.1, mu, wd, nesterov).unwrap();
        let (mut a, mut b) = (sgd.clone(), sgd);
        compare(
            "sgd",
            steps(Device::Cuda, &mut a, Some(0.5)),
            steps(Device::Cpu, &mut b, Some(0.5)),
        );
    }
    let adam = Adam::new(0.01, (0.5, 0.999), 1e-8, 1e-3).unwrap();
    let (mut a, mut b) = (adam.clone(), adam);
    compare(
        "adam",
        steps(Device::Cuda, &mut a, None),
        steps(Device::Cpu, &mut b, None),
    );
    let state = &a.slots.values().next().unwrap().exp_avg;
    assert_eq!(
        state.device(),
        Device::Cuda,
        "optimiser state stays on the GPU"
    );
}
