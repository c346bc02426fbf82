use super::*;
use crate::ops;

/// One weight `w` and one buffer, enough to see which tensors an optimiser touches.
struct Toy {
    w: Tensor,
    buf: Tensor,
}

impl Module for Toy {
    crate::visitors!(|m, prefix, f| {
        m.w.leaf(&crate::nn::join(prefix, "w"), ParamKind::Weight, f);
        m.buf
            .leaf(&crate::nn::join(prefix, "buf"), ParamKind::Buffer, f);
    });
}

fn toy() -> Toy {
    Toy {
        w: Tensor::from_vec(vec![1.0, -2.0], &[2])
            .unwrap()
            .requires_grad(),
        buf: Tensor::from_vec(vec![7.0, 7.0], &[2])
            .unwrap()
            .requires_grad(),
    }
}

/// Gradients of `sum(w ⊙ c) + sum(buf)`: exactly `c = [0.5, -1]` for `w` whatever its
/// value, and a gradient for the buffer too, which optimisers must ignore.
fn grads_of(m: &Toy) -> Grads {
    let c = Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap();
    let wc = ops::sum(&ops::mul(&m.w, &c).unwrap()).unwrap();
    ops::add(&wc, &ops::sum(&m.buf).unwrap())
        .unwrap()
        .backward()
        .unwrap()
}

fn run(opt: &mut dyn Optimizer, steps: usize) -> Toy {
    let mut m = toy();
    for _ in 0..steps {
        let g = grads_of(&m);
        opt.step(&mut m, &g).unwrap();
    }
    m
}

fn close(got: &[f32], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

// Expected values: torch.optim's documented algorithms evaluated by hand (in f64) for
// p0 = [1, -2] and a constant gradient [0.5, -1], three steps.

#[test]
fn sgd_momentum_weight_decay_matches_pytorch() {
    let m = run(&mut Sgd::new(0.1, 0.9, 0.01, false).unwrap(), 3);
    close(m.w.data(), &[0.714134749, -1.428269498]);
    assert_eq!(m.buf.data(), &[7.0, 7.0], "buffers are never optimised");
}

#[test]
fn sgd_nesterov_matches_pytorch() {
    let m = run(&mut Sgd::new(0.1, 0.9, 0.01, true).unwrap(), 3);
    close(m.w.data(), &[0.590209958191, -1.180419916382]);
}

#[test]
fn plain_sgd_keeps_no_state() {
    let mut opt = Sgd::new(0.1, 0.0, 0.0, false).unwrap();
    let m = run(&mut opt, 3);
    close(m.w.data(), &[0.85, -1.7]);
    assert!(opt.momentum_buffers.is_empty());
}

#[test]
fn adam_matches_pytorch() {
    let mut opt = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.1).unwrap();
    let m = run(&mut opt, 3);
    close(m.w.data(), &[0.9700016073598313, -1.9700007999158509]);
    assert_eq!(opt.slots["w"].step, 3);
}

#[test]
fn state_round_trips_through_a_checkpoint() {
    let mut opt = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.1).unwrap();
    run(&mut opt, 2);
    let mut tensors = BTreeMap::new();
    let steps = crate::checkpoint::adam_state(&opt, &mut tensors);
    let bytes = crate::checkpoint::to_bytes(&tensors, &serde_json::json!(steps)).unwrap();
    let path = std::env::temp_dir().join(format!("darts-adam-{}.st", std::process::id()));
    crate::checkpoint::write_atomic(&path, &bytes).unwrap();
    let (tensors, meta) = crate::checkpoint::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let steps = serde_json::from_value(meta).unwrap();
    let mut back = Adam::new(0.01, (0.9, 0.999), 1e-8, 0.1).unwrap();
    crate::checkpoint::load_adam_state(&mut back, &tensors, &steps, &path).unwrap();
    assert_eq!(
        back.slots["w"].exp_avg.to_vec(),
        opt.slots["w"].exp_avg.to_vec()
    );
    // Resuming from the restored state gives the uninterrupted trajectory.
    let (mut a, mut b) = (opt, back);
    let (mut ma, mut mb) = (toy(), toy());
    for (opt, m) in [(&mut a, &mut ma), (&mut b, &mut mb)] {
        let g = grads_of(m);
        opt.step(m, &g).unwrap();
    }
    assert_eq!(ma.w.data(), mb.w.data());
}

#[test]
fn mismatched_state_is_an_error() {
    let mut opt = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    opt.momentum_buffers.insert("w".into(), Tensor::zeros(&[3]));
    let mut m = toy();
    let g = grads_of(&m);
    assert!(matches!(
        opt.step(&mut m, &g),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    assert!(Sgd::new(-0.1, 0.9, 0.0, false).is_err());
    assert!(Sgd::new(0.1, 0.0, 0.0, true).is_err());
    assert!(Adam::new(0.1, (0.9, 1.0), 1e-8, 0.0).is_err());
}

#[test]
fn clipping_scales_to_max_norm() {
    let m = toy();
    let mut g = grads_of(&m);
    // |[0.5, -1]| = √1.25
    let norm = clip_grad_norm(&m, &mut g, 0.5).unwrap();
    assert!((norm - 1.25f32.sqrt()).abs() < 1e-6);
    let coef = 0.5 / (1.25f32.sqrt() + 1e-6);
    close(
        g.get(&m.w).unwrap().data(),
        &[(0.5 * coef) as f64, (-coef) as f64],
    );
    // Below the threshold nothing changes.
    let mut g = grads_of(&m);
    clip_grad_norm(&m, &mut g, 10.0).unwrap();
    assert_eq!(g.get(&m.w).unwrap().data(), &[0.5, -1.0]);
}

#[test]
fn non_finite_values_are_reported() {
    assert!(matches!(
        ensure_finite_loss(f32::NAN),
        Err(Error::NonFinite(_))
    ));
    assert!(ensure_finite_loss(1.0).is_ok());
    let m = toy();
    let mut g = grads_of(&m);
    assert!(ensure_finite_grads(&m, &g).is_ok());
    g.get_mut(&m.w).unwrap().data_mut()[1] = f32::INFINITY;
    let err = ensure_finite_grads(&m, &g).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite(msg) if msg.contains('w')),
        "{err}"
    );
}

#[test]
fn an_overflowing_gradient_of_a_finite_loss_is_an_error_naming_the_weight() {
    // loss = 10·x·w = 3 with x = 3e38: finite, but dloss/dw = 10·x overflows to inf.
    let m = Toy {
        w: Tensor::from_vec(vec![1e-39], &[1]).unwrap().requires_grad(),
        buf: Tensor::zeros(&[1]),
    };
    let x = Tensor::from_vec(vec![3e38], &[1]).unwrap();
    let loss = ops::scale(&ops::sum(&ops::mul(&x, &m.w).unwrap()).unwrap(), 10.0).unwrap();
    assert!(loss.item().unwrap().is_finite());
    let mut g = loss.backward().unwrap();
    let err = clip_finite_grad_norm(&m, &mut g, 5.0).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite(msg) if msg.contains("gradient of w")),
        "{err}"
    );
    let m = toy();
    let mut g = grads_of(&m);
    assert!(clip_finite_grad_norm(&m, &mut g, 5.0).is_ok());
}

#[test]
fn set_lr_rejects_negative_and_nan_rates() {
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    let mut adam = Adam::new(0.1, (0.9, 0.999), 1e-8, 0.0).unwrap();
    for bad in [-0.1, f32::NAN, f32::INFINITY] {
        assert!(sgd.set_lr(bad).is_err(), "{bad}");
        assert!(adam.set_lr(bad).is_err(), "{bad}");
    }
    assert_eq!(sgd.lr(), 0.1, "a rejected rate must not be applied");
    sgd.set_lr(0.0).unwrap();
    assert_eq!(sgd.lr(), 0.0);
}

#[test]
fn cosine_schedule() {
    assert_eq!(cosine_lr(0.1, 0.0, 0, 4), 0.1);
    assert!((cosine_lr(0.1, 0.0, 1, 4) - 0.085_355_34).abs() < 1e-7);
    assert!((cosine_lr(0.1, 0.001, 2, 4) - 0.0505).abs() < 1e-7);
    assert_eq!(cosine_lr(0.1, 0.001, 4, 4), 0.001);
    assert_eq!(cosine_lr(0.1, 0.001, 9, 4), 0.001);
}
