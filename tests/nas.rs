//! The DARTS layer end to end on tiny inputs: parameter counts, the supernet's gradients, and the
//! second-order architecture gradient against a direct finite difference.

use darts::nas::architect::{Architect, Batch, Order};
use darts::nas::supernet::{Network, SearchSpec};
use darts::nn::{param_count, set_trainable, Ctx, Module, ParamKind};
use darts::optim::Sgd;
use darts::{no_grad, ops, rng, Tensor};
use rand::Rng;

#[test]
fn search_network_has_the_reference_parameter_count() {
    // The reference model_search.Network(16, 10, 8, criterion) on CIFAR-10.
    let net = Network::new(SearchSpec::darts(16, 8, 3, 10), &mut rng(0)).unwrap();
    assert_eq!(param_count(&net), 1_930_618);
    assert_eq!(net.alphas.normal.shape(), &[14, 8]);
}

#[test]
fn state_names_follow_the_reference_module_tree() {
    let net = Network::new(SearchSpec::darts(4, 3, 1, 10), &mut rng(0)).unwrap();
    let mut names = Vec::new();
    net.visit("", &mut |n, _, _| names.push(n.to_string()));
    for expected in [
        "stem.0.weight",
        "stem.1.weight",
        "stem.1.running_mean",
        "cells.0.preprocess0.op.1.weight",
        "cells.0._ops.0._ops.4.op.1.weight",
        "cells.0._ops.0._ops.4.op.7.running_var",
        "cells.0._ops.0._ops.1.1.running_mean",
        "cells.1._ops.0._ops.3.conv_1.weight",
        "cells.2.preprocess0.conv_2.weight",
        "classifier.bias",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing {expected}; have e.g. {:?}",
            &names[..8]
        );
    }
}

fn tiny() -> (Network, Tensor, Vec<usize>, Tensor, Vec<usize>) {
    let mut r = rng(7);
    let mut spec = SearchSpec::darts(2, 3, 1, 3);
    spec.steps = 2;
    spec.multiplier = 2;
    let net = Network::new(spec, &mut r).unwrap();
    // Alphas away from uniform so that the softmax is not at a symmetric point.
    let mut net = net;
    let an = Tensor::randn(&[5, 8], 0.5, &mut r);
    let ar = Tensor::randn(&[5, 8], 0.5, &mut r);
    net.alphas.normal.set_data(&an).unwrap();
    net.alphas.reduce.as_mut().unwrap().set_data(&ar).unwrap();
    let xt = Tensor::randn(&[4, 1, 8, 8], 1.0, &mut r);
    let xv = Tensor::randn(&[4, 1, 8, 8], 1.0, &mut r);
    let yt = (0..4).map(|_| r.random_range(0..3)).collect();
    let yv = (0..4).map(|_| r.random_range(0..3)).collect();
    (net, xt, yt, xv, yv)
}

/// L_val(w − ξ(μ·buf + ∇w L_train + λw), α) computed directly, weights restored afterwards.
fn unrolled_objective(
    net: &mut Network,
    sgd: &Sgd,
    xi: f32,
    d: &(Tensor, Vec<usize>, Tensor, Vec<usize>),
) -> f64 {
    let mut ctx = Ctx::new(true, 0);
    set_trainable(&mut net.alphas, false);
    let loss = net.loss(&d.0, &d.1, &mut ctx).unwrap();
    let g = loss.backward().unwrap();
    let mut saved = Vec::new();
    net.visit_mut("", &mut |name, w, kind| {
        if kind != ParamKind::Weight {
            return;
        }
        saved.push(w.detach());
        let gw = g
            .get(w)
            .map(|t| t.to_vec())
            .unwrap_or_else(|| vec![0.0; w.numel()]);
        let buf = sgd
            .momentum_buffers
            .get(name)
            .map(|t| t.to_vec())
            .unwrap_or_else(|| vec![0.0; w.numel()]);
        let new: Vec<f32> = w
            .data()
            .iter()
            .zip(gw.iter().zip(&buf))
            .map(|(&p, (&g, &b))| p - xi * (sgd.momentum * b + g + sgd.weight_decay * p))
            .collect();
        w.set_data(&Tensor::from_vec(new, w.shape()).unwrap())
            .unwrap();
    });
    let val = no_grad(|| net.loss(&d.2, &d.3, &mut ctx).unwrap().item().unwrap()) as f64;
    let mut i = 0;
    net.visit_mut("", &mut |_, w, kind| {
        if kind == ParamKind::Weight {
            w.set_data(&saved[i]).unwrap();
            i += 1;
        }
    });
    set_trainable(&mut net.alphas, true);
    val
}

#[test]
fn second_order_alpha_gradient_matches_finite_difference_of_unrolled_objective() {
    let (mut net, xt, yt, xv, yv) = tiny();
    let mut sgd = Sgd::new(0.025, 0.9, 3e-4, false).unwrap();
    // A non-trivial momentum buffer so the unrolled step's momentum term is exercised.
    let mut r = rng(3);
    net.visit("", &mut |name, w, kind| {
        if kind == ParamKind::Weight {
            let b = Tensor::randn(w.shape(), 0.05, &mut r);
            sgd.momentum_buffers.insert(name.to_string(), b);
        }
    });
    // The network is piecewise linear (ReLU, max-pool), so ∇w L_train jumps wherever a unit
    // flips and the unrolled objective is only piecewise smooth; at ξ = 0.01 and a 1e-2 step
    // the finite difference still sees the smooth part clearly, and the second-order term.
    let xi = 0.01;
    let data = (xt.clone(), yt.clone(), xv.clone(), yv.clone());
    let mut ctx = Ctx::new(true, 0);
    let grad = |net: &mut Network, order, ctx: &mut Ctx| {
        let a = Architect::new(order, 3e-4, 1e-3).unwrap();
        let (_, g) = a
            .alpha_gradient(
                net,
                &Batch {
                    images: &xt,
                    labels: &yt,
                },
                &Batch {
                    images: &xv,
                    labels: &yv,
                },
                xi,
                &sgd,
                ctx,
            )
            .unwrap();
        g.iter().flat_map(|t| t.to_vec()).collect::<Vec<f32>>()
    };
    let g2 = grad(&mut net, Order::Second, &mut ctx);
    let g1 = grad(&mut net, Order::First, &mut ctx);

    let eps = 1e-2f32;
    let mut fd = Vec::new();
    for which in 0..2 {
        let n = net.alphas.normal.numel();
        for i in 0..n {
            let value = |delta: f32, net: &mut Network| {
                let t = if which == 0 {
                    &mut net.alphas.normal
                } else {
                    net.alphas.reduce.as_mut().unwrap()
                };
                let mut v = t.to_vec();
                v[i] += delta;
                let nt = Tensor::from_vec(v, t.shape()).unwrap();
                t.set_data(&nt).unwrap();
                let j = unrolled_objective(net, &sgd, xi, &data);
                let t = if which == 0 {
                    &mut net.alphas.normal
                } else {
                    net.alphas.reduce.as_mut().unwrap()
                };
                let mut v = t.to_vec();
                v[i] -= delta;
                t.set_data(&Tensor::from_vec(v, t.shape()).unwrap())
                    .unwrap();
                j
            };
            let (p, m) = (value(eps, &mut net), value(-eps, &mut net));
            fd.push(((p - m) / (2.0 * eps as f64)) as f32);
        }
    }
    let dist = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let norm = dist(&fd, &vec![0.0; fd.len()]);
    let (e2, e1) = (dist(&g2, &fd), dist(&g1, &fd));
    eprintln!("|fd| = {norm:.4e}, second-order error {e2:.4e}, first-order error {e1:.4e}");
    assert!(
        e2 < 0.2 * norm,
        "second-order gradient is off: error {e2} vs norm {norm}"
    );
    assert!(
        e2 < 0.7 * e1,
        "second order ({e2}) should beat first order ({e1})"
    );
}

#[test]
fn supernet_backward_reaches_every_alpha_and_weight() {
    let (mut net, xt, yt, _, _) = tiny();
    let mut ctx = Ctx::new(true, 0);
    let loss = net.loss(&xt, &yt, &mut ctx).unwrap();
    let g = loss.backward().unwrap();
    let gn = g.get(&net.alphas.normal).expect("alphas_normal gradient");
    assert!(gn.data().iter().any(|v| *v != 0.0));
    let mut missing = Vec::new();
    net.visit("", &mut |name, t, kind| {
        if kind == ParamKind::Weight && g.get(t).is_none() {
            missing.push(name.to_string());
        }
    });
    assert!(missing.is_empty(), "weights without gradient: {missing:?}");
    let logits = net.forward(&xt, &mut ctx).unwrap();
    assert_eq!(logits.shape(), &[4, 3]);
    let _ = ops::softmax(&logits).unwrap();
}

fn eval_net(
    channels: usize,
    layers: usize,
    in_channels: usize,
    image: usize,
) -> darts::nas::network::Network {
    let spec = darts::nas::network::NetworkSpec {
        channels,
        layers,
        num_classes: 10,
        in_channels,
        image_size: image,
        auxiliary: true,
        genotype: darts::nas::Genotype::named("DARTS_V2").unwrap().into(),
    };
    darts::nas::network::Network::new(spec, &mut rng(0)).unwrap()
}

#[test]
fn evaluation_network_has_the_paper_parameter_counts() {
    // The paper's 3.3 M CIFAR-10 network (the reference code prints 3.349342 MB).
    assert_eq!(
        eval_net(36, 20, 3, 32).param_count_without_auxiliary(),
        3_349_342
    );
    assert_eq!(
        eval_net(8, 5, 1, 28).param_count_without_auxiliary(),
        36_586
    );
}

#[test]
fn evaluation_network_trains_with_auxiliary_head_and_drop_path() {
    let mut net = eval_net(4, 5, 1, 28);
    net.drop_path_prob = 0.2;
    let x = Tensor::randn(&[2, 1, 28, 28], 1.0, &mut rng(1));
    let mut ctx = Ctx::new(true, 0);
    let (logits, aux) = net.forward(&x, &mut ctx).unwrap();
    assert_eq!(logits.shape(), &[2, 10]);
    assert_eq!(
        aux.expect("auxiliary logits while training").shape(),
        &[2, 10]
    );
    let mut eval = Ctx::new(false, 0);
    let (_, aux) = no_grad(|| net.forward(&x, &mut eval)).unwrap();
    assert!(aux.is_none());
}

/// Every tensor of the network (weights, BN statistics, alphas) by value, and whether each
/// weight is tracked.
fn snapshot(net: &Network) -> Vec<(String, Vec<f32>, bool)> {
    let mut out = Vec::new();
    let mut add = |n: &str, t: &Tensor, _: ParamKind| {
        out.push((n.to_string(), t.data().to_vec(), t.tracks_grad()))
    };
    net.visit("", &mut add);
    net.alphas.visit("alphas", &mut add);
    out
}

#[test]
fn a_failed_second_order_step_leaves_the_network_as_it_was() {
    let (mut net, xt, yt, xv, mut yv) = tiny();
    let sgd = Sgd::new(0.025, 0.9, 3e-4, false).unwrap();
    let mut arch = Architect::new(Order::Second, 3e-4, 1e-3).unwrap();
    let mut ctx = Ctx::new(true, 0);
    let before = snapshot(&net);
    // Both failures come after the weights were moved to w′ = w − ξ∇w L_train: a label out of
    // range, and images with two channels for a one-channel stem.
    yv[1] = 3;
    let two_channels = Tensor::zeros(&[4, 2, 8, 8]);
    let good_labels = vec![0; 4];
    for (images, labels) in [(&xv, &yv), (&two_channels, &good_labels)] {
        let err = arch
            .step(
                &mut net,
                &Batch {
                    images: &xt,
                    labels: &yt,
                },
                &Batch { images, labels },
                0.025,
                &sgd,
                &mut ctx,
            )
            .unwrap_err();
        eprintln!("forced error: {err}");
        assert!(
            snapshot(&net) == before,
            "the failed step ({err}) left the network changed"
        );
    }
    // The same step with good data changes the alphas, so the comparison above can fail.
    yv[1] = 0;
    let val = Batch {
        images: &xv,
        labels: &yv,
    };
    let train = Batch {
        images: &xt,
        labels: &yt,
    };
    arch.step(&mut net, &train, &val, 0.025, &sgd, &mut ctx)
        .unwrap();
    assert!(snapshot(&net) != before);
}
