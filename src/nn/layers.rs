//! The layers that own parameters: Conv2d, BatchNorm2d and Linear, with PyTorch's default
//! initialisation and names (`weight`, `bias`, `running_mean`, `running_var`).

use rand::Rng;

use super::{join, positive, Ctx, Layer, Module, ParamKind};
use crate::error::{Error, Result};
use crate::ops::{self, BatchNormCfg, Conv2dCfg};
use crate::tensor::Tensor;

/// PyTorch's default for conv and linear layers: `kaiming_uniform_(a=√5)` on the weight, which
/// works out to U(-1/√fan_in, 1/√fan_in), and the same bound for the bias.
fn pytorch_default_init(
    shape: &[usize],
    fan_in: usize,
    bias: Option<usize>,
    rng: &mut impl Rng,
) -> (Tensor, Option<Tensor>) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = Tensor::uniform(shape, -bound, bound, rng).requires_grad();
    let b = bias.map(|n| Tensor::uniform(&[n], -bound, bound, rng).requires_grad());
    (w, b)
}

/// 2-D convolution, weight `[out, in/groups, k, k]`, optional bias `[out]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub cfg: Conv2dCfg,
}

impl Conv2d {
    /// A `kernel`×`kernel` convolution from `in_channels` to `out_channels` with PyTorch's
    /// default initialisation (fan_in = in/groups · k²).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv2dCfg,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        positive(
            "Conv2d",
            &[
                ("in_channels", in_channels),
                ("out_channels", out_channels),
                ("kernel", kernel),
                ("stride", cfg.stride),
                ("dilation", cfg.dilation),
                ("groups", cfg.groups),
            ],
        )?;
        if !in_channels.is_multiple_of(cfg.groups) || !out_channels.is_multiple_of(cfg.groups) {
            return Err(Error::InvalidArgument(format!(
                "Conv2d: groups ({}) must divide in_channels ({in_channels}) and out_channels ({out_channels})",
                cfg.groups
            )));
        }
        let per_group = in_channels / cfg.groups;
        let (weight, bias) = pytorch_default_init(
            &[out_channels, per_group, kernel, kernel],
            per_group * kernel * kernel,
            bias.then_some(out_channels),
            rng,
        );
        Ok(Conv2d { weight, bias, cfg })
    }
}

impl Module for Conv2d {
    crate::visitors!(|m, prefix, f| {
        m.weight.leaf(&join(prefix, "weight"), ParamKind::Weight, f);
        m.bias.leaf(&join(prefix, "bias"), ParamKind::Weight, f);
    });
}

impl Layer for Conv2d {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        let y = ops::conv2d(x, &self.weight, self.bias.as_ref(), self.cfg)?;
        // Each output value costs one multiply-add per weight of its filter.
        let per_output = self.weight.numel() / self.weight.shape()[0];
        super::macs::add_layer(&self.weight, (y.numel() * per_output) as u64);
        Ok(y)
    }
}

/// Batch normalisation over N, H, W per channel. `weight` (γ, ones) and `bias` (β, zeros) exist
/// when affine; the running statistics (mean 0, variance 1) are buffers. PyTorch's
/// `num_batches_tracked` is not kept: it only matters with `momentum=None`.
pub struct BatchNorm2d {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNorm2d {
    /// PyTorch's defaults: momentum 0.1, eps 1e-5. DARTS's search uses `affine = false`.
    pub fn new(channels: usize, affine: bool) -> Result<Self> {
        positive("BatchNorm2d", &[("channels", channels)])?;
        let affine_param = |v: f32| affine.then(|| Tensor::full(&[channels], v).requires_grad());
        Ok(BatchNorm2d {
            weight: affine_param(1.0),
            bias: affine_param(0.0),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::ones(&[channels]),
            momentum: 0.1,
            eps: 1e-5,
        })
    }
}

impl Module for BatchNorm2d {
    crate::visitors!(|m, prefix, f| {
        m.weight.leaf(&join(prefix, "weight"), ParamKind::Weight, f);
        m.bias.leaf(&join(prefix, "bias"), ParamKind::Weight, f);
        m.running_mean
            .leaf(&join(prefix, "running_mean"), ParamKind::Buffer, f);
        m.running_var
            .leaf(&join(prefix, "running_var"), ParamKind::Buffer, f);
    });
}

impl Layer for BatchNorm2d {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let cfg = BatchNormCfg {
            training: ctx.training,
            momentum: self.momentum,
            eps: self.eps,
        };
        ops::batch_norm2d(
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            &mut self.running_mean,
            &mut self.running_var,
            cfg,
        )
    }
}

/// A fully connected layer `y = x·Wᵀ + b`, `x: [N, in]`, `W: [out, in]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation (U(±1/√in) for weight and bias).
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        positive(
            "Linear",
            &[("in_features", in_features), ("out_features", out_features)],
        )?;
        let (weight, bias) = pytorch_default_init(
            &[out_features, in_features],
            in_features,
            bias.then_some(out_features),
            rng,
        );
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    crate::visitors!(|m, prefix, f| {
        m.weight.leaf(&join(prefix, "weight"), ParamKind::Weight, f);
        m.bias.leaf(&join(prefix, "bias"), ParamKind::Weight, f);
    });
}

impl Layer for Linear {
    fn forward(&mut self, x: &Tensor, _: &mut Ctx) -> Result<Tensor> {
        let y = ops::linear(x, &self.weight, self.bias.as_ref())?;
        super::macs::add_layer(&self.weight, (y.numel() * self.weight.shape()[1]) as u64);
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn cfg(groups: usize) -> Conv2dCfg {
        Conv2dCfg {
            stride: 1,
            padding: 1,
            dilation: 1,
            groups,
        }
    }

    /// Values lie in ±bound and look uniform there (mean 0, variance bound²/3).
    fn assert_uniform(t: &Tensor, bound: f32) {
        let v = t.data();
        assert!(v.iter().all(|x| x.abs() <= bound), "outside ±{bound}");
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let b = bound as f64;
        assert!(mean.abs() < 0.05 * b, "mean {mean}");
        assert!((var / (b * b / 3.0) - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn conv_init_is_pytorch_default() {
        let mut rng = StdRng::seed_from_u64(0);
        let c = Conv2d::new(16, 32, 3, cfg(1), true, &mut rng).unwrap();
        assert_eq!(c.weight.shape(), &[32, 16, 3, 3]);
        assert_uniform(&c.weight, 1.0 / (16.0f32 * 9.0).sqrt());
        assert!(c
            .bias
            .as_ref()
            .unwrap()
            .data()
            .iter()
            .all(|b| b.abs() <= 1.0 / 12.0));
        assert!(c.weight.tracks_grad());
        // Depthwise: fan_in is in/groups · k².
        let dw = Conv2d::new(64, 64, 5, cfg(64), false, &mut rng).unwrap();
        assert_eq!(dw.weight.shape(), &[64, 1, 5, 5]);
        assert_uniform(&dw.weight, 0.2);
        assert!(dw.bias.is_none());
    }

    #[test]
    fn init_is_fixed_by_the_seed() {
        let make = |seed| Linear::new(20, 10, true, &mut StdRng::seed_from_u64(seed)).unwrap();
        assert_eq!(make(7).weight.data(), make(7).weight.data());
        assert_ne!(make(7).weight.data(), make(8).weight.data());
    }

    #[test]
    fn linear_init_and_forward() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut l = Linear::new(400, 300, true, &mut rng).unwrap();
        assert_uniform(&l.weight, 0.05);
        assert_uniform(l.bias.as_ref().unwrap(), 0.05);
        let y = l
            .forward(&Tensor::ones(&[2, 400]), &mut Ctx::new(true, 0))
            .unwrap();
        assert_eq!(y.shape(), &[2, 300]);
    }

    #[test]
    fn bad_sizes_are_invalid_arguments() {
        let mut rng = StdRng::seed_from_u64(0);
        let bad = [
            Conv2d::new(0, 4, 3, cfg(1), false, &mut rng).err(),
            Conv2d::new(4, 4, 0, cfg(1), false, &mut rng).err(),
            Conv2d::new(6, 4, 3, cfg(4), false, &mut rng).err(),
            Conv2d::new(4, 4, 3, cfg(0), false, &mut rng).err(),
            Linear::new(3, 0, true, &mut rng).err(),
            BatchNorm2d::new(0, true).err(),
        ];
        for e in bad {
            assert!(matches!(e, Some(Error::InvalidArgument(_))), "{e:?}");
        }
    }

    #[test]
    fn batch_norm_init_and_running_stats() {
        let mut bn = BatchNorm2d::new(2, true).unwrap();
        assert_eq!(bn.weight.as_ref().unwrap().data(), &[1.0, 1.0]);
        assert_eq!(bn.bias.as_ref().unwrap().data(), &[0.0, 0.0]);
        assert_eq!(BatchNorm2d::new(2, false).unwrap().weight.map(|_| ()), None);
        // Channel 0 holds 1..4 (mean 2.5, unbiased variance 5/3), channel 1 holds 10.
        let x = Tensor::from_vec(
            vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0],
            &[1, 2, 2, 2],
        )
        .unwrap();
        let y = bn.forward(&x, &mut Ctx::new(true, 0)).unwrap();
        assert_eq!(y.shape(), x.shape());
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(close(bn.running_mean.data()[0], 0.25) && close(bn.running_mean.data()[1], 1.0));
        assert!(close(bn.running_var.data()[0], 0.9 + 0.1 * 5.0 / 3.0));
        assert!(close(bn.running_var.data()[1], 0.9));
        // Evaluation uses and keeps the running statistics.
        let before = bn.running_mean.to_vec();
        let y = bn.forward(&x, &mut Ctx::new(false, 0)).unwrap();
        assert_eq!(bn.running_mean.data(), &before[..]);
        let want = (1.0 - 0.25) / (0.9f32 + 0.5 / 3.0 + 1e-5).sqrt();
        assert!(close(y.data()[0], want), "{} vs {want}", y.data()[0]);
    }
}
