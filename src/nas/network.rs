//! The evaluation network built from a genotype (the reference `model.py`, `NetworkCIFAR`): the
//! space's skeleton with one chosen op per edge, drop-path on every non-identity edge while
//! training, and in the DARTS space an optional auxiliary head after the second reduction.
//! The operations are the search network's, built by the same code in `operations.rs` (with
//! affine BN and no BN after pools).

use rand::Rng;

use super::operations::Op;
use super::space::skeleton::{self, Backbone};
use super::space::{darts, nb201, Arch};
use crate::error::{Error, Result};
use crate::nn::{Ctx, Module};
use crate::tensor::Tensor;

/// Shape of an evaluation network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkSpec {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub in_channels: usize,
    /// Height (= width) of the input images; sizes the auxiliary head's pooling.
    pub image_size: usize,
    pub auxiliary: bool,
    /// A DARTS genotype (`layers` cells in all) or a NAS-Bench-201 cell (`layers` per stage).
    pub genotype: Arch,
}

/// The network trained from scratch on a found genotype.
pub struct Network {
    pub spec: NetworkSpec,
    pub(crate) body: Backbone<Op>,
    /// Drop-path probability for the current epoch (ramped by the trainer).
    pub drop_path_prob: f32,
}

impl Network {
    pub fn new(spec: NetworkSpec, rng: &mut impl Rng) -> Result<Self> {
        spec.genotype.validate()?;
        let bad = |msg: &str| Err(Error::InvalidArgument(format!("network: {msg}")));
        if spec.channels == 0 || spec.layers == 0 || spec.num_classes == 0 || spec.in_channels == 0
        {
            return bad("channels, layers, classes and input channels must be positive");
        }
        let body = match &spec.genotype {
            Arch::Darts(g) => {
                if !spec.channels.is_multiple_of(2) {
                    return bad("channels must be even (FactorizedReduce halves them)");
                }
                darts::backbone(
                    spec.channels,
                    spec.layers,
                    3,
                    spec.in_channels,
                    spec.num_classes,
                    spec.auxiliary.then_some(spec.image_size),
                    rng,
                    |shape, rng| darts::eval_cell(g, shape, rng),
                )?
            }
            Arch::Nb201(a) => {
                if spec.auxiliary {
                    return bad(
                        "the NAS-Bench-201 network has no auxiliary head; use --auxiliary-weight 0",
                    );
                }
                nb201::backbone(
                    spec.channels,
                    spec.layers,
                    spec.in_channels,
                    spec.num_classes,
                    rng,
                    |c, rng| nb201::eval_cell(a, c, rng),
                )?
            }
        };
        Ok(Network {
            spec,
            body,
            drop_path_prob: 0.0,
        })
    }

    /// Logits, and the auxiliary head's logits when training with one.
    pub fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Option<Tensor>)> {
        self.body.forward(x, &[], self.drop_path_prob, ctx)
    }

    /// Weights without the auxiliary head (what the paper counts).
    pub fn param_count_without_auxiliary(&self) -> usize {
        skeleton::param_count_without_auxiliary(self)
    }
}

impl Module for Network {
    crate::visitors!(|m, prefix, f| {
        m.body.walk(prefix, f);
    });
}
