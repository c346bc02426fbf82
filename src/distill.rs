//! Knowledge distillation (Hinton et al., 2015): a student trains on the hard labels mixed with
//! a teacher's softened predictions. `darts prune --distill T` fine-tunes the pruned network
//! with the unpruned one as teacher.
//!
//! The loss is `(1 − α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))`, averaged over the
//! batch; the `T²` keeps the soft term's gradients on the hard term's scale as `T` grows. It is
//! built from recorded ops (scale, log-softmax, sub, mul, sum), so its backward is theirs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::ImageShape;
use crate::error::{Error, Result};
use crate::infer::Program;
use crate::ops;
use crate::tensor::Tensor;

/// A distillation recipe, recorded in the student's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distill {
    /// The teacher's run folder (a trained network for the same dataset).
    pub teacher: PathBuf,
    /// Softmax temperature `T` of both sides of the soft term, > 0.
    pub temperature: f32,
    /// Weight `α` of the soft term, in [0, 1).
    pub weight: f32,
}

impl Distill {
    pub fn validate(&self) -> Result<()> {
        crate::validate::positive("distill", self.temperature)?;
        crate::validate::unit("distill-weight", self.weight)
    }

    /// The teacher's f32 inference program for images of `shape` (its forward keeps no tape).
    pub fn teacher(&self, shape: &ImageShape) -> Result<Teacher> {
        let cfg = crate::evaluate::read_config(&self.teacher)?;
        let net = crate::evaluate::load_network(&self.teacher, &cfg, shape)?;
        if net.spec.num_classes != shape.num_classes {
            return Err(Error::InvalidArgument(format!(
                "the teacher {} has {} classes, the data {}; distil from a run of this dataset",
                self.teacher.display(),
                net.spec.num_classes,
                shape.num_classes
            )));
        }
        Ok(Teacher {
            program: crate::infer::lower(&net)?,
        })
    }
}

/// A loaded teacher.
pub struct Teacher {
    program: Program,
}

impl Teacher {
    /// The teacher's logits for `images`, on their device.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        let host = images.to_device(crate::Device::Cpu)?;
        self.program.forward(host)?.to_device(images.device())
    }
}

/// The distillation loss of `student` logits `[n, k]` against `teacher` logits (constants) and
/// the hard `labels`.
pub fn loss(student: &Tensor, teacher: &Tensor, labels: &[usize], d: &Distill) -> Result<Tensor> {
    let hard = ops::cross_entropy(student, labels)?;
    let inv_t = 1.0 / d.temperature;
    let (p, log_p) = crate::no_grad(|| -> Result<_> {
        let t = ops::scale(&teacher.detach(), inv_t)?;
        Ok((ops::softmax(&t)?, ops::log_softmax(&t)?))
    })?;
    let log_q = ops::log_softmax(&ops::scale(student, inv_t)?)?;
    let kl = ops::sum(&ops::mul(&p, &ops::sub(&log_p, &log_q)?)?)?;
    let n = student.shape()[0] as f32;
    let soft = ops::scale(&kl, d.weight * d.temperature * d.temperature / n)?;
    ops::add(&ops::scale(&hard, 1.0 - d.weight)?, &soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(temperature: f32, weight: f32) -> Distill {
        Distill {
            teacher: PathBuf::new(),
            temperature,
            weight,
        }
    }

    fn softmax_rows(x: &[f32], k: usize, t: f32) -> Vec<f32> {
        x.chunks(k)
            .flat_map(|row| {
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b));
                let e: Vec<f32> = row.iter().map(|v| ((v - m) / t).exp()).collect();
                let z: f32 = e.iter().sum();
                e.into_iter().map(move |v| v / z)
            })
            .collect()
    }

    #[test]
    fn the_loss_and_its_gradient_are_hintons() {
        let (n, k, labels) = (3, 5, [0, 4, 2]);
        let s = Tensor::randn(&[n, k], 2.0, &mut crate::rng(1));
        let t = Tensor::randn(&[n, k], 2.0, &mut crate::rng(2));
        let (temp, alpha) = (3.0, 0.7);
        let d = recipe(temp, alpha);
        let leaf = s.detach().requires_grad();
        let l = loss(&leaf, &t, &labels, &d).unwrap();
        // Value: the hard term plus α·T²·KL, by hand.
        let (p, q) = (
            softmax_rows(&t.to_vec(), k, temp),
            softmax_rows(&s.to_vec(), k, temp),
        );
        let kl: f32 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f32>() / n as f32;
        let ce = ops::cross_entropy(&s, &labels).unwrap().to_vec()[0];
        let want = (1.0 - alpha) * ce + alpha * temp * temp * kl;
        assert!(
            (l.to_vec()[0] - want).abs() < 1e-5,
            "{:?} vs {want}",
            l.to_vec()
        );
        // Gradient: (1 − α)(softmax(s) − y)/n + α·T·(softmax(s/T) − softmax(t/T))/n.
        let g = l.backward().unwrap();
        let got = g.get(&leaf).unwrap().to_vec();
        let hard = softmax_rows(&s.to_vec(), k, 1.0);
        for (i, g) in got.iter().enumerate() {
            let y = if labels[i / k] == i % k { 1.0 } else { 0.0 };
            let want = ((1.0 - alpha) * (hard[i] - y) + alpha * temp * (q[i] - p[i])) / n as f32;
            assert!((g - want).abs() < 1e-5, "{i}: {g} vs {want}");
        }
    }

    #[test]
    fn a_student_equal_to_its_teacher_has_only_the_hard_loss() {
        let s = Tensor::randn(&[4, 10], 1.0, &mut crate::rng(3));
        let labels = [1, 2, 3, 9];
        let ce = ops::cross_entropy(&s, &labels).unwrap().to_vec()[0];
        let l = loss(&s, &s, &labels, &recipe(4.0, 0.5)).unwrap().to_vec()[0];
        assert!((l - 0.5 * ce).abs() < 1e-6, "{l} vs {}", 0.5 * ce);
        assert!(recipe(0.0, 0.5).validate().is_err());
        assert!(recipe(4.0, 1.5).validate().is_err());
    }
}
