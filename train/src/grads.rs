//! Gradient bookkeeping across parameter groups: moving one module's gradients out of a joint
//! set, scaling them, and the global L2 norm used for clipping (docs/algorithm.md §4.2: norm 1.0 over the
//! whole model, masks and multipliers included).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
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

/// A module's parameters in visiting order — the same on every peer, unlike burn's random
/// parameter ids, which differ between processes: each parameter's id, rank and element count.
/// The order in which gradients are all-reduced and parameters are assigned to shards (zero.rs).
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub params: Vec<LayoutParam>,
}

/// One entry of a [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutParam {
    pub id: ParamId,
    pub rank: usize,
    pub numel: usize,
}

struct LayoutOf<'a>(&'a mut Vec<LayoutParam>);

impl<B: Backend> ModuleVisitor<B> for LayoutOf<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(LayoutParam {
            id: param.id,
            rank: D,
            numel: param.lazy_shape().num_elements(),
        });
    }
}

impl Layout {
    /// The layout of `module`'s float parameters.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut params = Vec::new();
        module.visit(&mut LayoutOf(&mut params));
        Layout { params }
    }

    /// Elements over all parameters.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.numel).sum()
    }
}

/// Removes parameter `p`'s gradient from `grads`, flattened.
pub fn remove_flat<B: Backend>(
    grads: &mut GradientsParams,
    p: &LayoutParam,
) -> Option<Tensor<B, 1>> {
    match p.rank {
        1 => grads.remove::<B, 1>(p.id),
        2 => grads.remove::<B, 2>(p.id).map(|g| g.flatten(0, 1)),
        3 => grads.remove::<B, 3>(p.id).map(|g| g.flatten(0, 2)),
        4 => grads.remove::<B, 4>(p.id).map(|g| g.flatten(0, 3)),
        d => unreachable!("parameters of rank {d}"),
    }
}

/// Registers a flat gradient of parameter `p` with its shape `shape`.
pub fn register_flat<B: Backend>(
    grads: &mut GradientsParams,
    p: &LayoutParam,
    flat: Tensor<B, 1>,
    shape: &[usize],
) {
    match shape.len() {
        1 => grads.register(p.id, flat),
        2 => grads.register(p.id, flat.reshape([shape[0], shape[1]])),
        3 => grads.register(p.id, flat.reshape([shape[0], shape[1], shape[2]])),
        4 => grads.register(p.id, flat.reshape([shape[0], shape[1], shape[2], shape[3]])),
        d => unreachable!("parameters of rank {d}"),
    }
}

/// The shape of parameter `p`'s gradient in `grads`, if it has one.
pub fn grad_shape<B: Backend>(grads: &GradientsParams, p: &LayoutParam) -> Option<Vec<usize>> {
    match p.rank {
        1 => grads.get::<B, 1>(p.id).map(|g| g.dims().to_vec()),
        2 => grads.get::<B, 2>(p.id).map(|g| g.dims().to_vec()),
        3 => grads.get::<B, 3>(p.id).map(|g| g.dims().to_vec()),
        4 => grads.get::<B, 4>(p.id).map(|g| g.dims().to_vec()),
        d => unreachable!("parameters of rank {d}"),
    }
}

/// What is done to each set of gradients before it joins a [`GradSum`]: under ZeRO stage 2,
/// the set is all-reduced over the peers and only this peer's share kept (zero.rs).
pub type Reduce<'a> =
    dyn Fn(GradientsParams, &Layout) -> crate::Result<GradientsParams> + Sync + 'a;

/// The running sum of a step's gradients, filled one set at a time (a micro-batch's, or under
/// `--recompute` one block's): each new gradient is added to the sum and dropped, so the step
/// holds one full set and the new one (docs/algorithm.md §13.3). Unlike burn's
/// `GradientsAccumulator` it is not tied to one module type: the recomputing backward adds the
/// model's gradients, the pruning step the masks' as well, into the same sum.
pub struct GradSum<'a> {
    sum: GradientsParams,
    reduce: Option<&'a Reduce<'a>>,
}

impl<'a> GradSum<'a> {
    pub fn new() -> Self {
        GradSum {
            sum: GradientsParams::new(),
            reduce: None,
        }
    }

    /// A sum whose every new set goes through `reduce` first.
    pub fn reducing(reduce: Option<&'a Reduce<'a>>) -> Self {
        GradSum {
            sum: GradientsParams::new(),
            reduce,
        }
    }

    /// Adds the gradients `new` of `module`'s parameters.
    pub fn add<B: AutodiffBackend, M: Module<B>>(
        &mut self,
        module: &M,
        new: GradientsParams,
    ) -> crate::Result<()> {
        self.add_laid_out::<B>(&Layout::of::<B, M>(module), new)
    }

    /// Adds the gradients `new` of the parameters of `layout`.
    pub fn add_laid_out<B: AutodiffBackend>(
        &mut self,
        layout: &Layout,
        mut new: GradientsParams,
    ) -> crate::Result<()> {
        if let Some(reduce) = self.reduce {
            new = reduce(new, layout)?;
        }
        for p in &layout.params {
            add_one::<B::InnerBackend>(&mut self.sum, &mut new, p);
        }
        Ok(())
    }

    /// The sum (empty when nothing was added).
    pub fn into_grads(self) -> GradientsParams {
        self.sum
    }
}

impl Default for GradSum<'_> {
    fn default() -> Self {
        GradSum::new()
    }
}

fn add_one<B: Backend>(sum: &mut GradientsParams, new: &mut GradientsParams, p: &LayoutParam) {
    fn add<B: Backend, const D: usize>(
        sum: &mut GradientsParams,
        new: &mut GradientsParams,
        id: ParamId,
    ) {
        if let Some(g) = new.remove::<B, D>(id) {
            let g = match sum.remove::<B, D>(id) {
                Some(s) => s + g,
                None => g,
            };
            sum.register(id, g);
        }
    }
    match p.rank {
        1 => add::<B, 1>(sum, new, p.id),
        2 => add::<B, 2>(sum, new, p.id),
        3 => add::<B, 3>(sum, new, p.id),
        4 => add::<B, 4>(sum, new, p.id),
        d => unreachable!("parameters of rank {d}"),
    }
}
