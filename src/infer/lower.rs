//! Lowering a trained network to a [`Program`]: walks the one model skeleton (stem, cells or
//! residual blocks, head) in the order the training path's forward runs it, and emits one step
//! per conv with its BN folded in.

use std::collections::HashMap;

use super::{Program, Slot, Step};
use crate::error::{Error, Result};
use crate::nas::network::Network;
use crate::nas::operations::{DwPwBn, FactorizedReduce, Op, Preprocess, ReluConvBn, ResidualBlock};
use crate::nas::space::skeleton::{Block, Cell};
use crate::nn::{BatchNorm2d, Conv2d, Module};
use crate::tensor::Tensor;

/// The BN's eval-mode map `x·s + t` per channel: `s = γ/√(σ² + ε)`, `t = β − μ·s`.
fn bn_affine(bn: &BatchNorm2d) -> Result<(Vec<f32>, Vec<f32>)> {
    let mean = bn.running_mean.try_to_vec()?;
    let var = bn.running_var.try_to_vec()?;
    let gamma = bn.weight.as_ref().map(|t| t.try_to_vec()).transpose()?;
    let beta = bn.bias.as_ref().map(|t| t.try_to_vec()).transpose()?;
    let scale: Vec<f32> = (0..mean.len())
        .map(|c| gamma.as_ref().map_or(1.0, |g| g[c]) / (var[c] + bn.eps).sqrt())
        .collect();
    let shift = (0..mean.len())
        .map(|c| beta.as_ref().map_or(0.0, |b| b[c]) - mean[c] * scale[c])
        .collect();
    Ok((scale, shift))
}

/// `conv` followed by channels `from..` of `bn` (all of them unless FactorizedReduce splits
/// its BN between two convs) as one conv: weights and bias on the host.
fn fold(conv: &Conv2d, bn: Option<(&BatchNorm2d, usize)>) -> Result<(Tensor, Tensor)> {
    let shape = conv.weight.shape().to_vec();
    let cout = shape[0];
    let mut w = conv.weight.try_to_vec()?;
    let mut b = match &conv.bias {
        Some(t) => t.try_to_vec()?,
        None => vec![0.0; cout],
    };
    if let Some((bn, from)) = bn {
        let (scale, shift) = bn_affine(bn)?;
        if scale.len() < from + cout {
            return Err(Error::InvalidArgument(format!(
                "inference: a BN of {} channels after a conv of {cout}",
                scale.len()
            )));
        }
        let per = w.len() / cout;
        for o in 0..cout {
            let (s, t) = (scale[from + o], shift[from + o]);
            w[o * per..][..per].iter_mut().for_each(|v| *v *= s);
            b[o] = b[o] * s + t;
        }
    }
    Ok((Tensor::from_vec(w, &shape)?, Tensor::from_vec(b, &[cout])?))
}

/// What the edges leaving one state share: its ReLU and its pools, made once.
#[derive(Default)]
struct Shared {
    relu: Option<Slot>,
    pools: Vec<((bool, usize), Slot)>,
}

struct Builder {
    steps: Vec<Step>,
    slots: usize,
    /// Every tensor of the network → its state-dict name.
    tensor_names: HashMap<*const Tensor, String>,
    /// Step index → the state-dict prefix of its layer.
    names: HashMap<usize, String>,
}

impl Builder {
    /// Records that the step about to be pushed carries the weights of the layer owning `t`.
    fn name_next(&mut self, t: &Tensor) {
        if let Some(n) = self.tensor_names.get(&(t as *const Tensor)) {
            let prefix = n.rsplit_once('.').map_or("", |(p, _)| p).to_string();
            self.names.insert(self.steps.len(), prefix);
        }
    }

    fn slot(&mut self) -> Slot {
        self.slots += 1;
        self.slots - 1
    }

    fn conv(
        &mut self,
        src: Slot,
        conv: &Conv2d,
        bn: Option<(&BatchNorm2d, usize)>,
        relu: bool,
    ) -> Result<Slot> {
        let (w, b) = fold(conv, bn)?;
        let dst = self.slot();
        self.name_next(&conv.weight);
        self.steps.push(Step::Conv {
            src,
            dst,
            w,
            b,
            cfg: conv.cfg,
            relu,
        });
        Ok(dst)
    }

    fn relu(&mut self, src: Slot) -> Slot {
        let dst = self.slot();
        self.steps.push(Step::Relu { src, dst });
        dst
    }

    fn shared_relu(&mut self, x: Slot, shared: &mut Shared) -> Slot {
        match shared.relu {
            Some(r) => r,
            None => *shared.relu.insert(self.relu(x)),
        }
    }

    fn pool(&mut self, src: Slot, max: bool, kernel: usize, stride: usize, pad: usize) -> Slot {
        let dst = self.slot();
        self.steps.push(Step::Pool {
            src,
            dst,
            max,
            kernel,
            stride,
            padding: pad,
        });
        dst
    }

    fn many(&mut self, srcs: Vec<Slot>, concat: bool) -> Slot {
        if let [one] = srcs.as_slice() {
            return *one;
        }
        let dst = self.slot();
        self.steps.push(if concat {
            Step::Concat { srcs, dst }
        } else {
            Step::Sum { srcs, dst }
        });
        dst
    }

    /// ReLU (given) → conv → BN.
    fn relu_conv_bn(&mut self, relu_x: Slot, b: &ReluConvBn) -> Result<Slot> {
        self.conv(relu_x, &b.conv, Some((&b.bn, 0)), false)
    }

    /// ReLU (given) → depthwise → pointwise → BN, the ReLU after it fused when `relu`.
    fn dw_pw_bn(&mut self, relu_x: Slot, b: &DwPwBn, relu: bool) -> Result<Slot> {
        let y = self.conv(relu_x, &b.dw, None, false)?;
        self.conv(y, &b.pw, Some((&b.bn, 0)), relu)
    }

    fn factorized_reduce(&mut self, x: Slot, fr: &FactorizedReduce) -> Result<Slot> {
        let r = self.relu(x);
        let half = fr.conv_1.weight.shape()[0];
        let a = self.conv(r, &fr.conv_1, Some((&fr.bn, 0)), false)?;
        let shifted = self.slot();
        self.steps.push(Step::Shift {
            src: r,
            dst: shifted,
        });
        let b = self.conv(shifted, &fr.conv_2, Some((&fr.bn, half)), false)?;
        Ok(self.many(vec![a, b], true))
    }

    fn preprocess(&mut self, x: Slot, p: &Preprocess) -> Result<Slot> {
        match p {
            Preprocess::Reduce(fr) => self.factorized_reduce(x, fr),
            Preprocess::Conv(b) => {
                let r = self.relu(x);
                self.relu_conv_bn(r, b)
            }
        }
    }

    /// One edge's op on state `x`; `None` for `none`.
    fn op(&mut self, op: &Op, x: Slot, shared: &mut Shared) -> Result<Option<Slot>> {
        Ok(Some(match op {
            Op::Zero => return Ok(None),
            Op::Identity => x,
            Op::Pool { max, stride, bn } => {
                let key = (*max, *stride);
                let p = match shared.pools.iter().find(|(k, _)| *k == key) {
                    Some(&(_, p)) => p,
                    None => {
                        let p = self.pool(x, *max, 3, *stride, 1);
                        shared.pools.push((key, p));
                        p
                    }
                };
                match bn {
                    Some(bn) => self.affine(p, bn, false)?,
                    None => p,
                }
            }
            Op::SepConv(b) => {
                let r = self.shared_relu(x, shared);
                let y = self.dw_pw_bn(r, &b[0], true)?;
                self.dw_pw_bn(y, &b[1], false)?
            }
            Op::DilConv(b) => {
                let r = self.shared_relu(x, shared);
                self.dw_pw_bn(r, b, false)?
            }
            Op::Reduce(fr) => self.factorized_reduce(x, fr)?,
            Op::NorConv(b) => {
                let r = self.shared_relu(x, shared);
                self.relu_conv_bn(r, b)?
            }
        }))
    }

    fn affine(&mut self, src: Slot, bn: &BatchNorm2d, relu: bool) -> Result<Slot> {
        let (scale, shift) = bn_affine(bn)?;
        let dst = self.slot();
        self.name_next(&bn.running_mean);
        self.steps.push(Step::Affine {
            src,
            dst,
            scale,
            shift,
            relu,
        });
        Ok(dst)
    }

    fn cell(&mut self, cell: &Cell<Op>, inputs: &[Slot]) -> Result<Slot> {
        let mut states = if cell.preprocess.is_empty() {
            inputs.to_vec()
        } else {
            let mut pre = Vec::with_capacity(inputs.len());
            for (p, &x) in cell.preprocess.iter().zip(inputs) {
                pre.push(self.preprocess(x, p)?);
            }
            pre
        };
        let mut shared: Vec<Shared> = states.iter().map(|_| Shared::default()).collect();
        let mut e = 0;
        while e < cell.plan.len() {
            let first = cell.plan[e];
            let mut terms = Vec::new();
            while e < cell.plan.len() && cell.plan[e].to == first.to {
                let from = cell.plan[e].from;
                if let Some(y) = self.op(&cell.edges[e], states[from], &mut shared[from])? {
                    terms.push(y);
                }
                e += 1;
            }
            let node = if terms.is_empty() {
                let dst = self.slot();
                self.steps.push(Step::Zeros {
                    like: states[first.from],
                    stride: first.stride,
                    dst,
                });
                dst
            } else {
                self.many(terms, false)
            };
            states.push(node);
            shared.push(Shared::default());
        }
        let outs = cell.output.iter().map(|&o| states[o]).collect();
        Ok(self.many(outs, true))
    }

    fn residual(&mut self, x: Slot, r: &ResidualBlock) -> Result<Slot> {
        let ra = self.relu(x);
        let a = self.relu_conv_bn(ra, &r.conv_a)?;
        let rb = self.relu(a);
        let b = self.relu_conv_bn(rb, &r.conv_b)?;
        let p = self.pool(x, false, 2, 2, 0);
        let shortcut = self.conv(p, &r.downsample, None, false)?;
        Ok(self.many(vec![shortcut, b], false))
    }
}

/// The network as a program of folded steps (the auxiliary head, used only in training, is
/// left out). Reads the weights once; later changes to `net` do not reach the program.
pub fn lower(net: &Network) -> Result<Program> {
    let body = &net.body;
    let mut tensor_names = HashMap::new();
    net.visit("", &mut |name, t, _| {
        tensor_names.insert(t as *const Tensor, name.to_string());
    });
    let mut b = Builder {
        steps: Vec::new(),
        slots: 1,
        tensor_names,
        names: HashMap::new(),
    };
    let stem = b.conv(0, &body.stem.conv, Some((&body.stem.bn, 0)), false)?;
    let mut window = vec![stem; body.inputs];
    for block in &body.blocks {
        let out = match block {
            Block::Cell(cell) => b.cell(cell, &window)?,
            Block::Residual(r) => b.residual(*window.last().expect("inputs >= 1"), r)?,
        };
        window.remove(0);
        window.push(out);
    }
    let mut last = *window.last().expect("inputs >= 1");
    if let Some(bn) = &body.lastact {
        last = b.affine(last, bn, true)?;
    }
    let dst = b.slot();
    let cls = &body.classifier;
    b.name_next(&cls.weight);
    b.steps.push(Step::Head {
        src: last,
        dst,
        w: cls.weight.to_host()?,
        b: cls.bias.as_ref().map(|t| t.to_host()).transpose()?,
    });
    let names = (0..b.steps.len())
        .map(|i| b.names.remove(&i).unwrap_or_default())
        .collect();
    Ok(Program::new(b.steps, names, b.slots, dst))
}
