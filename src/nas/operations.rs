//! The candidate operations of the DARTS search space, as in the reference `operations.py`:
//! ReLU-Conv-BN ordering, separable convs applied twice, dilated convs at dilation 2, and
//! FactorizedReduce for stride-2 identities and for preprocessing after a reduction cell; and
//! NAS-Bench-201's (`nor_conv_k×k` = ReLU-Conv-BN, average pool without BN, and its residual
//! reduction block). Parameter names follow the reference module trees (`op.1.weight`,
//! `conv_1.weight`, `conv_a.op.1.weight`, ...), so a state dict of ours lines up key for key with
//! one of the PyTorch code.

use rand::Rng;

use super::primitives::Primitive;
use crate::error::{Error, Result};
use crate::nn::{BatchNorm2d, Conv2d, Ctx, Layer, Module};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

use crate::nn::join;

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

/// ReLU → Conv → BN (`op.1` conv, `op.2` BN), padded to keep the map size at stride 1.
pub struct ReluConvBn {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm2d,
}

impl ReluConvBn {
    /// The DARTS block: a bias-free conv.
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        affine: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Self::with_bias(cin, cout, k, stride, affine, false, rng)
    }

    /// NAS-Bench-201's block, whose conv has a bias exactly when its BN has no affine one.
    pub fn nb201(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        affine: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Self::with_bias(cin, cout, k, stride, affine, !affine, rng)
    }

    fn with_bias(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        affine: bool,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let c = cfg(stride, (k - 1) / 2, 1, 1);
        Ok(ReluConvBn {
            conv: Conv2d::new(cin, cout, k, c, bias, rng)?,
            bn: BatchNorm2d::new(cout, affine)?,
        })
    }

    /// The block after its ReLU, given `relu(x)`.
    fn forward_relued(&mut self, relu_x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv.forward(relu_x, ctx)?;
        self.bn.forward(&y, ctx)
    }
}

impl Module for ReluConvBn {
    crate::visitors!(|m, prefix, f| {
        m.conv.walk(&join(prefix, "op.1"), f);
        m.bn.walk(&join(prefix, "op.2"), f);
    });
}

impl Layer for ReluConvBn {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_relued(&ops::relu(x)?, ctx)
    }
}

/// One ReLU → depthwise k×k (stride, dilation) → pointwise 1×1 → BN block, named with the
/// reference's Sequential indices from `at` on (a SepConv's second block starts at 4).
pub struct DwPwBn {
    pub(crate) dw: Conv2d,
    pub(crate) pw: Conv2d,
    pub(crate) bn: BatchNorm2d,
    at: usize,
}

impl DwPwBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        affine: bool,
        at: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let padding = dilation * (k - 1) / 2;
        Ok(DwPwBn {
            dw: conv(cin, cin, k, cfg(stride, padding, dilation, cin), rng)?,
            pw: conv(cin, cout, 1, cfg(1, 0, 1, 1), rng)?,
            bn: BatchNorm2d::new(cout, affine)?,
            at,
        })
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

impl Module for DwPwBn {
    crate::visitors!(|m, prefix, f| {
        let at = m.at;
        m.dw.walk(&join(prefix, &format!("op.{}", at + 1)), f);
        m.pw.walk(&join(prefix, &format!("op.{}", at + 2)), f);
        m.bn.walk(&join(prefix, &format!("op.{}", at + 3)), f);
    });
}

/// FactorizedReduce: halves the map with two stride-2 1×1 convs, the second offset by one pixel,
/// concatenated (`conv_1`, `conv_2`, `bn`).
pub struct FactorizedReduce {
    pub(crate) conv_1: Conv2d,
    pub(crate) conv_2: Conv2d,
    pub(crate) bn: BatchNorm2d,
}

impl FactorizedReduce {
    pub fn new(cin: usize, cout: usize, affine: bool, rng: &mut impl Rng) -> Result<Self> {
        if !cout.is_multiple_of(2) {
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
    crate::visitors!(|m, prefix, f| {
        m.conv_1.walk(&join(prefix, "conv_1"), f);
        m.conv_2.walk(&join(prefix, "conv_2"), f);
        m.bn.walk(&join(prefix, "bn"), f);
    });
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
            Preprocess::Conv(ReluConvBn::new(cin, cout, 1, 1, affine, rng)?)
        })
    }
}

impl Module for Preprocess {
    crate::visitors!(|m, prefix, f| {
        match m {
            Preprocess::Reduce(r) => r.walk(prefix, f),
            Preprocess::Conv(p) => p.walk(prefix, f),
        }
    });
}

impl Layer for Preprocess {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Preprocess::Reduce(r) => r.forward(x, ctx),
            Preprocess::Conv(p) => p.forward(x, ctx),
        }
    }
}

/// What the edges leaving one state compute alike, computed once per state and forward pass:
/// the ReLU every conv op applies first, and each parameter-free pool (a DARTS normal cell
/// reads each state on up to four edges, each with its own convs and pools).
#[derive(Default)]
pub struct Shared {
    relu: Option<Tensor>,
    pools: Vec<((bool, usize), Tensor)>,
}

impl Shared {
    fn relu(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.relu.is_none() {
            self.relu = Some(ops::relu(x)?);
        }
        Ok(self.relu.clone().expect("set above"))
    }

    fn pool(&mut self, x: &Tensor, max: bool, stride: usize) -> Result<Tensor> {
        if let Some((_, y)) = self.pools.iter().find(|(k, _)| *k == (max, stride)) {
            return Ok(y.clone());
        }
        let y = if max {
            ops::max_pool2d(x, 3, stride, 1)?
        } else {
            ops::avg_pool2d(x, 3, stride, 1)?
        };
        self.pools.push(((max, stride), y.clone()));
        Ok(y)
    }
}

/// One candidate operation on a cell edge.
pub enum Op {
    /// `none`: contributes nothing (a node sums only the other edges; in a MixedOp it only takes
    /// part in the softmax).
    Zero,
    /// `skip_connect` at stride 1.
    Identity,
    /// 3×3 max or average pool, in the DARTS search followed by a BN without affine (`1.*`).
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
    /// `nor_conv_k×k`: NAS-Bench-201's ReLU-Conv-BN.
    NorConv(Box<ReluConvBn>),
}

impl Op {
    /// Builds `prim` on `c` channels. `affine` is false during search (the paper's BN without
    /// learnable scale); `pool_bn` adds the BN the DARTS search network puts after each pool.
    pub fn new(
        prim: Primitive,
        c: usize,
        stride: usize,
        affine: bool,
        pool_bn: bool,
        rng: &mut impl Rng,
    ) -> Result<Op> {
        let pool = |max: bool| -> Result<Op> {
            let bn = pool_bn
                .then(|| BatchNorm2d::new(c, false).map(Box::new))
                .transpose()?;
            Ok(Op::Pool { max, stride, bn })
        };
        let dw = |k: usize, stride: usize, dilation: usize, at: usize, rng: &mut _| {
            DwPwBn::new(c, c, k, stride, dilation, affine, at, rng)
        };
        Ok(match prim {
            Primitive::None => Op::Zero,
            Primitive::MaxPool3x3 => pool(true)?,
            Primitive::AvgPool3x3 => pool(false)?,
            Primitive::SkipConnect if stride == 1 => Op::Identity,
            Primitive::SkipConnect => {
                Op::Reduce(Box::new(FactorizedReduce::new(c, c, affine, rng)?))
            }
            Primitive::SepConv3x3 | Primitive::SepConv5x5 => {
                let k = if prim == Primitive::SepConv3x3 { 3 } else { 5 };
                Op::SepConv(Box::new([dw(k, stride, 1, 0, rng)?, dw(k, 1, 1, 4, rng)?]))
            }
            Primitive::DilConv3x3 | Primitive::DilConv5x5 => {
                let k = if prim == Primitive::DilConv3x3 { 3 } else { 5 };
                Op::DilConv(Box::new(dw(k, stride, 2, 0, rng)?))
            }
            Primitive::NorConv1x1 | Primitive::NorConv3x3 => {
                let k = if prim == Primitive::NorConv1x1 { 1 } else { 3 };
                Op::NorConv(Box::new(ReluConvBn::nb201(c, c, k, stride, affine, rng)?))
            }
        })
    }

    /// The op on `x`, taking the ReLU and the pools that other edges from the same state share
    /// from `shared`; `None` for `none`. `stride` sizes nothing here: a zero edge adds nothing.
    pub fn forward_shared(
        &mut self,
        x: &Tensor,
        shared: &mut Shared,
        ctx: &mut Ctx,
    ) -> Result<Option<Tensor>> {
        Ok(Some(match self {
            Op::Zero => return Ok(None),
            Op::Identity => x.clone(),
            Op::Pool { max, stride, bn } => {
                let y = shared.pool(x, *max, *stride)?;
                match bn {
                    Some(bn) => bn.forward(&y, ctx)?,
                    None => y,
                }
            }
            Op::SepConv(b) => {
                let y = b[0].forward_relued(&shared.relu(x)?, ctx)?;
                b[1].forward(&y, ctx)?
            }
            Op::DilConv(b) => b.forward_relued(&shared.relu(x)?, ctx)?,
            Op::Reduce(r) => r.forward(x, ctx)?,
            Op::NorConv(b) => b.forward_relued(&shared.relu(x)?, ctx)?,
        }))
    }
}

impl Module for Op {
    crate::visitors!(|m, prefix, f| {
        match m {
            Op::Zero | Op::Identity => {}
            Op::Pool { bn, .. } => bn.walk(&join(prefix, "1"), f),
            Op::SepConv(b) => {
                b[0].walk(prefix, f);
                b[1].walk(prefix, f);
            }
            Op::DilConv(b) => b.walk(prefix, f),
            Op::Reduce(r) => r.walk(prefix, f),
            Op::NorConv(b) => b.walk(prefix, f),
        }
    });
}

/// NAS-Bench-201's reduction block between stages (the reference `ResNetBasicblock` at stride
/// 2): two ReLU-Conv-BN 3×3 (the first at stride 2) plus a shortcut of a 2×2 average pool and
/// a bias-free 1×1 conv.
pub struct ResidualBlock {
    pub(crate) conv_a: ReluConvBn,
    pub(crate) conv_b: ReluConvBn,
    pub(crate) downsample: Conv2d,
}

impl ResidualBlock {
    pub fn new(cin: usize, cout: usize, rng: &mut impl Rng) -> Result<Self> {
        Ok(ResidualBlock {
            conv_a: ReluConvBn::nb201(cin, cout, 3, 2, true, rng)?,
            conv_b: ReluConvBn::nb201(cout, cout, 3, 1, true, rng)?,
            downsample: conv(cin, cout, 1, cfg(1, 0, 1, 1), rng)?,
        })
    }
}

impl Module for ResidualBlock {
    crate::visitors!(|m, prefix, f| {
        m.conv_a.walk(&join(prefix, "conv_a"), f);
        m.conv_b.walk(&join(prefix, "conv_b"), f);
        m.downsample.walk(&join(prefix, "downsample.1"), f);
    });
}

impl Layer for ResidualBlock {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv_a.forward(x, ctx)?;
        let y = self.conv_b.forward(&y, ctx)?;
        let shortcut = self
            .downsample
            .forward(&ops::avg_pool2d(x, 2, 2, 0)?, ctx)?;
        ops::add(&shortcut, &y)
    }
}
