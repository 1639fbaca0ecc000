//! Gradient bookkeeping across parameter groups: moving one module's gradients out of a joint
//! set, scaling them, and the global L2 norm used for clipping (SPEC §4.2: norm 1.0 over the
//! whole model, masks and multipliers included).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

struct Visit<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    moved: Option<GradientsParams>,
    factor: f64,
    sumsq: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Visit<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let sq = g.clone().powi_scalar(2).sum();
        self.sumsq = Some(match self.sumsq.take() {
            Some(acc) => acc + sq,
            None => sq,
        });
        let g = if self.factor == 1.0 {
            g
        } else {
            g * self.factor
        };
        match &mut self.moved {
            Some(out) => out.register(param.id, g),
            None => self.grads.register(param.id, g),
        }
    }
}

/// Moves the gradients of `module`'s parameters out of `grads`, multiplied by `factor`.
pub fn take<B: AutodiffBackend, M: Module<B>>(
    grads: &mut GradientsParams,
    module: &M,
    factor: f64,
) -> GradientsParams {
    let mut v = Visit::<B> {
        grads,
        moved: Some(GradientsParams::new()),
        factor,
        sumsq: None,
    };
    module.visit(&mut v);
    v.moved.expect("set above")
}

/// Sum of squared gradients of `module`'s parameters, multiplying them by `factor` in place.
pub fn sumsq_and_scale<B: AutodiffBackend, M: Module<B>>(
    grads: &mut GradientsParams,
    module: &M,
    factor: f64,
) -> f64 {
    let mut v = Visit::<B> {
        grads,
        moved: None,
        factor,
        sumsq: None,
    };
    module.visit(&mut v);
    v.sumsq
        .map(|t| t.into_scalar().elem::<f64>())
        .unwrap_or(0.0)
}
