//! Gradient bookkeeping across parameter groups: moving one module's gradients out of a joint
//! set, scaling them, and the global L2 norm used for clipping (docs/algorithm.md §4.2: norm 1.0 over the
//! whole model, masks and multipliers included).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

/// Moves a module's gradients into another set, scaled.
struct Take<'a> {
    grads: &'a mut GradientsParams,
    moved: GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let g = if self.factor == 1.0 {
                g
            } else {
                g * self.factor
            };
            self.moved.register(param.id, g);
        }
    }
}

/// Sums the squared gradients of a module's parameters (one value on the device).
struct SumSq<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumSq<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
    }
}

/// Moves the gradients of `module`'s parameters out of `grads`, multiplied by `factor`.
pub fn take<B: AutodiffBackend, M: Module<B>>(
    grads: &mut GradientsParams,
    module: &M,
    factor: f64,
) -> GradientsParams {
    let mut v = Take {
        grads,
        moved: GradientsParams::new(),
        factor,
    };
    module.visit(&mut v);
    v.moved
}

/// Sum of squared gradients of `module`'s parameters (one host read).
pub fn sumsq<B: AutodiffBackend, M: Module<B>>(grads: &GradientsParams, module: &M) -> f64 {
    let mut v = SumSq::<B> { grads, total: None };
    module.visit(&mut v);
    v.total
        .map(|t| t.into_scalar().elem::<f64>())
        .unwrap_or(0.0)
}

/// Global-norm clipping of a module's gradients (docs/algorithm.md §4.2, §7: max norm 1.0): returns the
/// gradients, scaled by `max_norm / (norm + 1e-6)` when the norm exceeds `max_norm` (0: no
/// clipping), and the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: Module<B>>(
    mut grads: GradientsParams,
    module: &M,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = sumsq::<B, M>(&grads, module).sqrt();
    if max_norm > 0.0 && norm > max_norm {
        grads = take::<B, M>(&mut grads, module, max_norm / (norm + 1e-6));
    }
    (grads, norm)
}
