//! The inference path: a trained [`Network`](crate::nas::network::Network) lowered once into a
//! flat program of steps over numbered slots, run without the tape.
//!
//! Lowering ([`lower`]) folds every BatchNorm into the convolution before it (`W' = W·s`,
//! `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)`), so a ReLU-Conv-BN is one conv; the ReLU that
//! follows a conv (between the two halves of a `sep_conv`, after NAS-Bench-201's `lastact`) is
//! applied in place on the conv's fresh output instead of as a new tensor; the ReLU each conv
//! edge applies to its input is computed once per state, as the training path does.
//!
//! Running it: [`Program::forward`] goes through a [`plan`] made once per input size, which
//! removes whole passes (ReLUs read through by their convs, sums added in convs' epilogues,
//! concats written in place by their parts) and runs each image on one core over an arena laid
//! out by liveness. [`Program::forward_observed`] (int8 calibration) runs the steps as they
//! are, one tensor per slot: each slot is freed right after its last reader, so its storage
//! goes back to the free list of `device::pool`; a node's sum accumulates in place into its
//! first term when that term has no other reader.

pub mod bench;
pub mod external;
mod kernels;
mod lower;
mod plan;

pub use lower::lower;

use crate::error::{Error, Result};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The most images per parallel task of [`by_chunks`]: enough to amortise a step's fixed cost,
/// few enough that a chunk's maps stay in a core's L2 (int8 on fm8, one thread, batch 64: 16
/// images a chunk 5 % faster than 8 or 32, 12 % faster than 4).
const CHUNK: usize = 16;

/// Logits `[N, classes]` of the images `data` of `shape` `[N, C, H, W]`: the batch is cut into
/// chunks of up to [`CHUNK`] images, fewer where that leaves a thread of the pool idle, and
/// `run` (the logits of one chunk of the given shape) runs each in parallel on the pool, so
/// that a chunk's activations stay in cache from one step to the next and the threads meet
/// once per batch instead of once per step.
pub(crate) fn by_chunks(
    data: &[f32],
    shape: [usize; 4],
    run: impl Fn(&[f32], [usize; 4]) -> Result<Vec<f32>> + Sync,
) -> Result<Tensor> {
    let [n, c, h, w] = shape;
    let per = c * h * w;
    let chunk = n.div_ceil(rayon::current_num_threads()).clamp(1, CHUNK);
    let logits = data
        .par_chunks(chunk * per.max(1))
        .map(|part| run(part, [part.len() / per.max(1), c, h, w]))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let classes = logits.len() / n.max(1);
    Tensor::from_vec(logits, &[n, classes])
}

/// Index of a value of the program; slot 0 is the input images.
pub type Slot = usize;

/// One step: reads slots, writes its own `dst` slot.
pub enum Step {
    /// `dst = conv(src; w, b)` with the BN folded into `w` and `b`, then ReLU if `relu`.
    Conv {
        src: Slot,
        dst: Slot,
        w: Tensor,
        b: Tensor,
        cfg: Conv2dCfg,
        relu: bool,
    },
    Relu {
        src: Slot,
        dst: Slot,
    },
    /// Max or average pool (average without the padding, as the training path counts it).
    Pool {
        src: Slot,
        dst: Slot,
        max: bool,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// A BN that follows no conv: `x·scale[c] + shift[c]`, then ReLU if `relu`.
    Affine {
        src: Slot,
        dst: Slot,
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    /// `x[i + 1, j + 1]`, zero past the border (FactorizedReduce's second path).
    Shift {
        src: Slot,
        dst: Slot,
    },
    Sum {
        srcs: Vec<Slot>,
        dst: Slot,
    },
    Concat {
        srcs: Vec<Slot>,
        dst: Slot,
    },
    /// Zeros of `like`'s shape with the map divided by `stride` (a node whose edges are all
    /// `none`).
    Zeros {
        like: Slot,
        stride: usize,
        dst: Slot,
    },
    /// Global average pool and the linear classifier: the logits.
    Head {
        src: Slot,
        dst: Slot,
        w: Tensor,
        b: Option<Tensor>,
    },
}

impl Step {
    fn dst(&self) -> Slot {
        match self {
            Step::Conv { dst, .. }
            | Step::Relu { dst, .. }
            | Step::Pool { dst, .. }
            | Step::Affine { dst, .. }
            | Step::Shift { dst, .. }
            | Step::Sum { dst, .. }
            | Step::Concat { dst, .. }
            | Step::Zeros { dst, .. }
            | Step::Head { dst, .. } => *dst,
        }
    }

    fn srcs(&self) -> Vec<Slot> {
        match self {
            Step::Conv { src, .. }
            | Step::Relu { src, .. }
            | Step::Pool { src, .. }
            | Step::Affine { src, .. }
            | Step::Shift { src, .. }
            | Step::Head { src, .. } => vec![*src],
            Step::Zeros { like, .. } => vec![*like],
            Step::Sum { srcs, .. } | Step::Concat { srcs, .. } => srcs.clone(),
        }
    }
}

/// A lowered network: its steps in execution order and, per slot, the step that reads it last.
pub struct Program {
    pub steps: Vec<Step>,
    /// Per step, the state-dict prefix of the layer whose weights it carries (`cells.0._ops.1.op.1`
    /// for a conv, `classifier` for the head, the BN's for an affine step), empty when it has
    /// none: what a saved quantised network names its tensors after.
    pub names: Vec<String>,
    pub(crate) slots: usize,
    pub(crate) output: Slot,
    pub(crate) last_use: Vec<usize>,
    /// The f32 path's plan for the last input size seen.
    plan: Mutex<Option<Arc<plan::Plan>>>,
}

impl Program {
    /// Closes a program whose logits are in `output`: computes each slot's last reader.
    pub(crate) fn new(steps: Vec<Step>, names: Vec<String>, slots: usize, output: Slot) -> Program {
        let mut last_use = vec![0; slots];
        for (i, s) in steps.iter().enumerate() {
            for src in s.srcs() {
                last_use[src] = i;
            }
        }
        last_use[output] = usize::MAX;
        Program {
            steps,
            names,
            slots,
            output,
            last_use,
            plan: Mutex::new(None),
        }
    }

    /// The plan for images of `input` `[C, H, W]`, made on the first call for that size.
    fn plan(&self, input: [usize; 3]) -> Result<Arc<plan::Plan>> {
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.as_ref().filter(|p| p.input == input) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(plan::Plan::new(self, input)?);
        *cached = Some(Arc::clone(&p));
        Ok(p)
    }

    /// Logits `[N, classes]` for normalised images `[N, C, H, W]` on the CPU, each image run
    /// through the program's [`plan`] on one core.
    pub fn forward(&self, x: Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("inference")?;
        let plan = self.plan([c, h, w])?;
        let x = x.to_host()?;
        let mut logits = vec![0.0; n * plan.classes()];
        plan.forward(x.data(), &mut logits);
        Tensor::from_vec(logits, &[n, plan.classes()])
    }

    /// [`Program::forward`], showing `observe` every slot's value as it is computed (the input
    /// first): what int8 calibration records.
    pub fn forward_observed(
        &self,
        x: Tensor,
        observe: &mut (dyn FnMut(Slot, &Tensor) + Send),
    ) -> Result<Tensor> {
        // Run on a worker of the thread pool, so that each kernel's parallel loop starts there
        // instead of waking the pool from outside (a cross-thread hand-off per op, which costs
        // more than a small conv takes when the cores are busy).
        rayon::scope(|_| self.run_steps(x, observe))
    }

    fn run_steps(
        &self,
        x: Tensor,
        observe: &mut (dyn FnMut(Slot, &Tensor) + Send),
    ) -> Result<Tensor> {
        crate::no_grad(|| {
            observe(0, &x);
            let mut slots: Vec<Option<Tensor>> = (0..self.slots).map(|_| None).collect();
            slots[0] = Some(x);
            for (i, step) in self.steps.iter().enumerate() {
                let out = self.exec(step, i, &mut slots)?;
                observe(step.dst(), &out);
                for src in step.srcs() {
                    if self.last_use[src] == i {
                        slots[src] = None;
                    }
                }
                slots[step.dst()] = Some(out);
            }
            slots[self.output]
                .take()
                .ok_or_else(|| Error::InvalidArgument("inference: no logits computed".into()))
        })
    }

    /// The value of `s` to write into: moved out when step `i` is its last reader and reads it
    /// once (so that writing does not copy), else shared and copied on write.
    fn owned(
        &self,
        s: Slot,
        i: usize,
        srcs: &[Slot],
        slots: &mut [Option<Tensor>],
    ) -> Result<Tensor> {
        let once = srcs.iter().filter(|&&x| x == s).count() == 1;
        let v = if self.last_use[s] == i && once {
            slots[s].take()
        } else {
            slots[s].clone()
        };
        v.ok_or_else(|| Error::InvalidArgument(format!("inference: slot {s} read before set")))
    }

    fn exec(&self, step: &Step, i: usize, slots: &mut [Option<Tensor>]) -> Result<Tensor> {
        let get = |s: Slot, slots: &mut [Option<Tensor>]| {
            slots[s]
                .clone()
                .ok_or_else(|| Error::InvalidArgument(format!("inference: slot {s} unset")))
        };
        Ok(match step {
            Step::Conv {
                src,
                w,
                b,
                cfg,
                relu,
                ..
            } => {
                let mut y = ops::conv2d_inference(&get(*src, slots)?, w, b, *cfg)?;
                if *relu {
                    relu_in_place(y.data_mut());
                }
                y
            }
            Step::Relu { src, .. } => ops::relu(&get(*src, slots)?)?,
            Step::Pool {
                src,
                max,
                kernel,
                stride,
                padding,
                ..
            } => {
                let x = get(*src, slots)?;
                if *max {
                    ops::max_pool2d(&x, *kernel, *stride, *padding)?
                } else {
                    ops::avg_pool2d(&x, *kernel, *stride, *padding)?
                }
            }
            Step::Affine {
                src,
                scale,
                shift,
                relu,
                ..
            } => {
                let mut y = self.owned(*src, i, &[*src], slots)?;
                let (_, c, h, w) = y.dims4("inference affine")?;
                for (k, plane) in y.data_mut().chunks_mut(h * w).enumerate() {
                    let (a, b) = (scale[k % c], shift[k % c]);
                    for v in &mut *plane {
                        *v = *v * a + b;
                    }
                    if *relu {
                        relu_in_place(plane);
                    }
                }
                y
            }
            Step::Shift { src, .. } => ops::shift(&get(*src, slots)?, 1, 1)?,
            Step::Sum { srcs, .. } => {
                let mut acc = self.owned(srcs[0], i, srcs, slots)?;
                for &s in &srcs[1..] {
                    acc.add_assign(&get(s, slots)?)?;
                }
                acc
            }
            Step::Concat { srcs, .. } => {
                let xs = srcs
                    .iter()
                    .map(|&s| get(s, slots))
                    .collect::<Result<Vec<_>>>()?;
                ops::concat(&xs.iter().collect::<Vec<_>>())?
            }
            Step::Zeros { like, stride, .. } => {
                let (n, c, h, w) = get(*like, slots)?.dims4("inference zeros")?;
                Tensor::zeros(&[n, c, h.div_ceil(*stride), w.div_ceil(*stride)])
            }
            Step::Head { src, w, b, .. } => {
                let pooled = ops::global_avg_pool(&get(*src, slots)?)?;
                ops::linear(&pooled, w, b.as_ref())?
            }
        })
    }
}

fn relu_in_place(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
pub(crate) mod tests;
