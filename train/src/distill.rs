//! Logit distillation from a frozen teacher, as pruning and training use it (docs/algorithm.md
//! §7.1): the teacher's forward on the same tokens, then the fused head loss
//! `CE + weight · T² · KL(teacher_T ‖ student_T)` (shear_model::distill_loss). The teacher is
//! on the inner backend, so no graph is built for it, and it is reloaded on resume, never
//! checkpointed.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use shear_model::distill_loss::{DistillFigures, Distillation};
use shear_model::Llama;

use crate::error::TrainError;

/// A teacher and how its term weighs in.
#[derive(Clone, Debug)]
pub struct Teacher<B: Backend> {
    pub model: Llama<B>,
    pub distill: Distillation,
}

impl<B: Backend> Teacher<B> {
    /// A teacher that adds something: `None` when the weight is 0, so that a run with weight 0
    /// is the run without a teacher, bit for bit.
    pub fn active(model: Llama<B>, distill: Distillation) -> Option<Self> {
        (distill.weight != 0.0).then_some(Teacher { model, distill })
    }

    /// The teacher on `device` (one per data-parallel peer).
    pub fn fork(self, device: &B::Device) -> Self {
        Teacher {
            model: self.model.fork(device),
            ..self
        }
    }
}

/// The distilled loss of a student's final hidden states `h [batch, seq, d]` for `input_ids
/// [batch, seq]` -> `[1]` and its parts.
pub fn distilled_head_loss<B: AutodiffBackend>(
    student: &Llama<B>,
    h: Tensor<B, 3>,
    input_ids: &Tensor<B, 2, Int>,
    teacher: &Teacher<B::InnerBackend>,
) -> (Tensor<B, 1>, DistillFigures) {
    let t = &teacher.model;
    let t_h = t.hidden_masked(input_ids.clone().inner(), None);
    let (t_w, t_layout) = t.head_weight();
    student.head_distill_loss(
        h,
        input_ids.clone(),
        Tensor::from_inner(t_h),
        (Tensor::from_inner(t_w), t_layout),
        teacher.distill,
    )
}

/// Checks a weight and a temperature; the message names the setting.
pub fn validate(weight: f64, temperature: f64) -> crate::Result<()> {
    if !weight.is_finite() || weight < 0.0 {
        return Err(TrainError::Invalid(format!(
            "distill_weight {weight}: must be a finite number ≥ 0"
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TrainError::Invalid(format!(
            "distill_temperature {temperature}: must be a positive number"
        )));
    }
    Ok(())
}
