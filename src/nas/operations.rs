//! The candidate operations of the DARTS search space, as in the reference `operations.py`:
//! ReLU-Conv-BN ordering, separable convs applied twice, dilated convs at dilation 2, and
//! FactorizedReduce for stride-2 identities and for preprocessing after a reduction cell.
//! Parameter names follow the reference module tree (`op.1.weight`, `conv_1.weight`, ...), so a
//! state dict of ours lines up key for key with one of the PyTorch code.

use rand::Rng;

use super::primitives::Primitive;
use crate::error::{Error, Result};
use crate::nn::{BatchNorm2d, Conv2d, Ctx, Layer, Module, ParamKind};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

type Visit<'a> = dyn FnMut(&str, &Tensor, ParamKind) + 'a;
type VisitMut<'a> = dyn FnMut(&str, &mut Tensor, ParamKind) + 'a;

fn join(prefix: &str, name: &str) -> String {
    crate::nn::join(prefix, name)
}

/// A bias-free convolution, as every convolution in the DARTS operations is.
fn conv(cin: usize, cout: usize, k: usize, cfg: Conv2dCfg, rng: &mut impl Rng) -> Result<Conv2d> {
    Conv2d::new(cin, cout, k, cfg, false, rng)
}

fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// ReLU → Conv → BN (`op.1` conv, `op.2` BN).
pub struct ReluConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        affine: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Ok(ReluConvBn {
            conv: conv(cin, cout, k, cfg(stride, padding, 1, 1), rng)?,
            bn: BatchNorm2d::new(cout, affine)?,
        })
    }
}

impl Module for ReluConvBn {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.conv.visit(&join(prefix, "op.1"), f);
        self.bn.visit(&join(prefix, "op.2"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.conv.visit_mut(&join(prefix, "op.1"), f);
        self.bn.visit_mut(&join(prefix, "op.2"), f);
    }
}

impl Layer for ReluConvBn {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv.forward(&ops::relu(x)?, ctx)?;
        self.bn.forward(&y, ctx)
    }
}

/// One ReLU → depthwise k×k (stride, dilation) → pointwise 1×1 → BN block.
pub struct DwPwBn {
    dw: Conv2d,
    pw: Conv2d,
    bn: BatchNorm2d,
}

impl DwPwBn {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        affine: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let padding = dilation * (k - 1) / 2;
        Ok(DwPwBn {
            dw: conv(cin, cin, k, cfg(stride, padding, dilation, cin), rng)?,
            pw: conv(cin, cout, 1, cfg(1, 0, 1, 1), rng)?,
            bn: BatchNorm2d::new(cout, affine)?,
        })
    }

    /// Visits with the reference's Sequential indices, the block starting at index `at`.
    fn visit(&self, prefix: &str, at: usize, f: &mut Visit) {
        self.dw.visit(&join(prefix, &format!("op.{}", at + 1)), f);
        self.pw.visit(&join(prefix, &format!("op.{}", at + 2)), f);
        self.bn.visit(&join(prefix, &format!("op.{}", at + 3)), f);
    }
    fn visit_mut(&mut self, prefix: &str, at: usize, f: &mut VisitMut) {
        self.dw
            .visit_mut(&join(prefix, &format!("op.{}", at + 1)), f);
        self.pw
            .visit_mut(&join(prefix, &format!("op.{}", at + 2)), f);
        self.bn
            .visit_mut(&join(prefix, &format!("op.{}", at + 3)), f);
    }

    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_relued(&ops::relu(x)?, ctx)
    }

    /// The block after its ReLU, given `relu(x)`.
    fn forward_relued(&mut self, relu_x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.dw.forward(relu_x, ctx)?;
        let y = self.pw.forward(&y, ctx)?;
        self.bn.forward(&y, ctx)
    }
}

/// FactorizedReduce: halves the map with two stride-2 1×1 convs, the second offset by one pixel,
/// concatenated (`conv_1`, `conv_2`, `bn`).
pub struct FactorizedReduce {
    conv_1: Conv2d,
    conv_2: Conv2d,
    bn: BatchNorm2d,
}

impl FactorizedReduce {
    pub fn new(cin: usize, cout: usize, affine: bool, rng: &mut impl Rng) -> Result<Self> {
        if cout % 2 != 0 {
            return Err(Error::InvalidArgument(format!(
                "FactorizedReduce needs an even channel count, got {cout}"
            )));
        }
        Ok(FactorizedReduce {
            conv_1: conv(cin, cout / 2, 1, cfg(2, 0, 1, 1), rng)?,
            conv_2: conv(cin, cout / 2, 1, cfg(2, 0, 1, 1), rng)?,
            bn: BatchNorm2d::new(cout, affine)?,
        })
    }
}

impl Module for FactorizedReduce {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.conv_1.visit(&join(prefix, "conv_1"), f);
        self.conv_2.visit(&join(prefix, "conv_2"), f);
        self.bn.visit(&join(prefix, "bn"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.conv_1.visit_mut(&join(prefix, "conv_1"), f);
        self.conv_2.visit_mut(&join(prefix, "conv_2"), f);
        self.bn.visit_mut(&join(prefix, "bn"), f);
    }
}

impl Layer for FactorizedReduce {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let x = ops::relu(x)?;
        let a = self.conv_1.forward(&x, ctx)?;
        let b = self.conv_2.forward(&ops::shift(&x, 1, 1)?, ctx)?;
        self.bn.forward(&ops::concat(&[&a, &b])?, ctx)
    }
}

/// How a cell adapts its first input `c_{k-2}`: after a reduction cell it is twice as large,
/// so it is halved by a FactorizedReduce; otherwise a 1×1 ReLU-Conv-BN.
pub enum Preprocess {
    Reduce(FactorizedReduce),
    Conv(ReluConvBn),
}

impl Preprocess {
    pub fn new(
        cin: usize,
        cout: usize,
        reduction_prev: bool,
        affine: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Ok(if reduction_prev {
            Preprocess::Reduce(FactorizedReduce::new(cin, cout, affine, rng)?)
        } else {
            Preprocess::Conv(ReluConvBn::new(cin, cout, 1, 1, 0, affine, rng)?)
        })
    }
}

impl Module for Preprocess {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        match self {
            Preprocess::Reduce(r) => r.visit(prefix, f),
            Preprocess::Conv(p) => p.visit(prefix, f),
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        match self {
            Preprocess::Reduce(r) => r.visit_mut(prefix, f),
            Preprocess::Conv(p) => p.visit_mut(prefix, f),
        }
    }
}

impl Layer for Preprocess {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Preprocess::Reduce(r) => r.forward(x, ctx),
            Preprocess::Conv(p) => p.forward(x, ctx),
        }
    }
}

/// One candidate operation on a cell edge.
pub enum Op {
    /// `none`: contributes nothing (MixedOp skips it; it only takes part in the softmax).
    Zero { stride: usize },
    /// `skip_connect` at stride 1.
    Identity,
    /// 3×3 max or average pool, in search followed by a BN without affine (`1.*`).
    Pool {
        max: bool,
        stride: usize,
        bn: Option<Box<BatchNorm2d>>,
    },
    /// `sep_conv_k×k`: the depthwise-separable block applied twice.
    SepConv(Box<[DwPwBn; 2]>),
    /// `dil_conv_k×k`: one depthwise-separable block at dilation 2.
    DilConv(Box<DwPwBn>),
    /// `skip_connect` at stride 2.
    Reduce(Box<FactorizedReduce>),
}

impl Op {
    /// Builds `prim` on `c` channels. `affine` is false during search (the paper's BN without
    /// learnable scale); `pool_bn` adds the BN the search network puts after each pool.
    pub fn new(
        prim: Primitive,
        c: usize,
        stride: usize,
        affine: bool,
        pool_bn: bool,
        rng: &mut impl Rng,
    ) -> Result<Op> {
        let pool_bn = || -> Result<Option<Box<BatchNorm2d>>> {
            pool_bn
                .then(|| BatchNorm2d::new(c, false).map(Box::new))
                .transpose()
        };
        Ok(match prim {
            Primitive::None => Op::Zero { stride },
            Primitive::MaxPool3x3 => Op::Pool {
                max: true,
                stride,
                bn: pool_bn()?,
            },
            Primitive::AvgPool3x3 => Op::Pool {
                max: false,
                stride,
                bn: pool_bn()?,
            },
            Primitive::SkipConnect if stride == 1 => Op::Identity,
            Primitive::SkipConnect => {
                Op::Reduce(Box::new(FactorizedReduce::new(c, c, affine, rng)?))
            }
            Primitive::SepConv3x3 | Primitive::SepConv5x5 => {
                let k = if prim == Primitive::SepConv3x3 { 3 } else { 5 };
                Op::SepConv(Box::new([
                    DwPwBn::new(c, c, k, stride, 1, affine, rng)?,
                    DwPwBn::new(c, c, k, 1, 1, affine, rng)?,
                ]))
            }
            Primitive::DilConv3x3 | Primitive::DilConv5x5 => {
                let k = if prim == Primitive::DilConv3x3 { 3 } else { 5 };
                Op::DilConv(Box::new(DwPwBn::new(c, c, k, stride, 2, affine, rng)?))
            }
        })
    }

    /// [`Layer::forward`], where the ReLU that the separable and dilated convs apply first to `x`
    /// comes from `relu_x`, computed on first use: a MixedOp's four such ops then share one
    /// ReLU, forward and backward, instead of each computing its own.
    pub fn forward_shared(
        &mut self,
        x: &Tensor,
        relu_x: &mut Option<Tensor>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let mut shared = || -> Result<Tensor> {
            let r = match relu_x.take() {
                Some(r) => r,
                None => ops::relu(x)?,
            };
            *relu_x = Some(r.clone());
            Ok(r)
        };
        match self {
            Op::SepConv(b) => {
                let y = b[0].forward_relued(&shared()?, ctx)?;
                b[1].forward(&y, ctx)
            }
            Op::DilConv(b) => b.forward_relued(&shared()?, ctx),
            _ => self.forward(x, ctx),
        }
    }

    /// True for `none`, which a MixedOp leaves out of its sum.
    pub fn is_zero(&self) -> bool {
        matches!(self, Op::Zero { .. })
    }
}

impl Module for Op {
    fn visit(&self, prefix: &str, f: &mut Visit) {
        match self {
            Op::Zero { .. } | Op::Identity | Op::Pool { bn: None, .. } => {}
            Op::Pool { bn: Some(bn), .. } => bn.visit(&join(prefix, "1"), f),
            Op::SepConv(b) => {
                b[0].visit(prefix, 0, f);
                b[1].visit(prefix, 4, f);
            }
            Op::DilConv(b) => b.visit(prefix, 0, f),
            Op::Reduce(r) => r.visit(prefix, f),
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        match self {
            Op::Zero { .. } | Op::Identity | Op::Pool { bn: None, .. } => {}
            Op::Pool { bn: Some(bn), .. } => bn.visit_mut(&join(prefix, "1"), f),
            Op::SepConv(b) => {
                b[0].visit_mut(prefix, 0, f);
                b[1].visit_mut(prefix, 4, f);
            }
            Op::DilConv(b) => b.visit_mut(prefix, 0, f),
            Op::Reduce(r) => r.visit_mut(prefix, f),
        }
    }
}

impl Layer for Op {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Op::Zero { stride } => {
                let (n, c, h, w) = x.dims4("Zero")?;
                let shape = [n, c, h.div_ceil(*stride), w.div_ceil(*stride)];
                Tensor::full_on(&shape, 0.0, x.device())
            }
            Op::Identity => Ok(x.clone()),
            Op::Pool { max, stride, bn } => {
                let y = if *max {
                    ops::max_pool2d(x, 3, *stride, 1)?
                } else {
                    ops::avg_pool2d(x, 3, *stride, 1)?
                };
                match bn {
                    Some(bn) => bn.forward(&y, ctx),
                    None => Ok(y),
                }
            }
            Op::SepConv(b) => {
                let y = b[0].forward(x, ctx)?;
                b[1].forward(&y, ctx)
            }
            Op::DilConv(b) => b.forward(x, ctx),
            Op::Reduce(r) => r.forward(x, ctx),
        }
    }
}
