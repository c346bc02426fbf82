//! Running a [`QProgram`]: the batch split into chunks run in parallel (each chunk's maps stay
//! in the core's cache), the input quantised to a channels-last uint8 map, each step on the
//! int8 kernels as the program's [`Plan`](super::plan::Plan) says (ReLUs read only by depthwise
//! convs done by them, node sums by the conv of their last term), slots freed after their last
//! reader (their buffers kept for the next steps' maps), and the logits from the int8 head.

use super::int8::map::recycle;
use super::int8::{elementwise as ew, OutQ, QTensor};
use super::quantize::{QProgram, QStep};
use crate::error::{Error, Result};
use crate::infer::Slot;
use crate::tensor::Tensor;

impl QProgram {
    /// Logits `[N, classes]` for f32 NCHW images (quantised with the input slot's parameters),
    /// by [`crate::infer::by_chunks`].
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("int8 forward")?;
        crate::infer::by_chunks(&x.try_to_vec()?, [n, c, h, w], |xs, shape| {
            self.run_chunk(xs, shape)
        })
    }

    fn run_chunk(&self, x: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let plan = &self.plan;
        let mut slots: Vec<Option<QTensor>> = vec![None; self.params.len()];
        let p = self.params[0];
        slots[0] = Some(ew::quantize_nchw(x, shape, p.scale, p.zp));
        let mut logits = None;
        for (i, step) in self.steps.iter().enumerate() {
            if plan.skip[i] {
                continue;
            }
            let (srcs, dst) = &plan.io[i];
            let out = match step {
                QStep::Head { src, head, .. } => {
                    logits = Some(head.forward(self.isa, self.get(&slots, *src)?)?);
                    None
                }
                QStep::Relu { src, .. } if plan.last_use[plan.read[*src].0] == i => {
                    let mut y = slots[plan.read[*src].0].take().ok_or_else(|| unset(*src))?;
                    ew::relu(self.isa, &mut y);
                    Some(y)
                }
                QStep::Relu { src, .. } => Some(ew::rectified(self.isa, self.get(&slots, *src)?)),
                _ => Some(self.exec(step, &plan.io[i], &slots)?),
            };
            for &s in srcs {
                let held = plan.read[s].0;
                if plan.last_use[held] == i {
                    if let Some(t) = slots[held].take() {
                        recycle(t.data);
                    }
                }
            }
            slots[*dst] = out;
        }
        slots.into_iter().flatten().for_each(|t| recycle(t.data));
        logits.ok_or_else(|| Error::InvalidArgument("int8: no logits computed".into()))
    }

    /// Slot `s`'s map as held (see [`super::plan::Plan::read`]).
    fn get<'a>(&self, slots: &'a [Option<QTensor>], s: Slot) -> Result<&'a QTensor> {
        slots
            .get(self.plan.read[s].0)
            .and_then(Option::as_ref)
            .ok_or_else(|| unset(s))
    }

    fn out(&self, dst: Slot, relu: bool) -> OutQ {
        let p = self.params[dst];
        OutQ {
            scale: p.scale,
            zp: p.zp,
            relu,
        }
    }

    /// `step`, reading and writing the slots of `io` (its [`Plan::io`](super::plan::Plan)).
    fn exec(
        &self,
        step: &QStep,
        io: &(Vec<Slot>, Slot),
        slots: &[Option<QTensor>],
    ) -> Result<QTensor> {
        let isa = self.isa;
        let many = |srcs: &[Slot]| {
            srcs.iter()
                .map(|&s| self.get(slots, s))
                .collect::<Result<Vec<_>>>()
        };
        match step {
            QStep::Conv {
                src, conv, relu, ..
            } => {
                let relu_in = self.plan.read[*src].1;
                let adds = many(&io.0[1..])?;
                let out = self.out(io.1, *relu);
                conv.forward_fused(isa, self.get(slots, *src)?, relu_in, &adds, out)
            }
            QStep::Pool {
                src,
                max,
                k,
                stride,
                pad,
                ..
            } => ew::pool(isa, self.get(slots, *src)?, *max, *k, *stride, *pad),
            QStep::Shift { src, .. } => Ok(ew::shift(self.get(slots, *src)?)),
            QStep::Affine {
                src,
                dst,
                scale,
                shift,
                relu,
            } => ew::affine(self.get(slots, *src)?, scale, shift, self.out(*dst, *relu)),
            QStep::Sum { srcs, dst } => ew::sum(isa, &many(srcs)?, self.out(*dst, false)),
            QStep::Concat { srcs, dst } => ew::concat(isa, &many(srcs)?, self.out(*dst, false)),
            QStep::Zeros { like, stride, dst } => {
                let [n, h, w, c] = self.get(slots, *like)?.shape;
                let p = self.params[*dst];
                let shape = [n, h.div_ceil(*stride), w.div_ceil(*stride), c];
                Ok(QTensor::zeros(shape, p.scale, p.zp))
            }
            QStep::Relu { .. } | QStep::Head { .. } => {
                unreachable!("run_chunk runs these itself")
            }
        }
    }
}

fn unset(s: Slot) -> Error {
    Error::InvalidArgument(format!("int8: slot {s} read before it was set"))
}
