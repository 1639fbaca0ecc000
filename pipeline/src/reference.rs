//! Reference losses of dynamic batch loading (docs/algorithm.md §6.4): given per domain, from a
//! scaling law, or the eval losses of a reference model — the source being pruned by default;
//! continued pre-training must name it, since the model being trained is no reference for itself.

use std::path::Path;

use burn::tensor::backend::Backend;
use shear_data::{ReferenceLoss, Split};
use shear_model::Llama;
use shear_train::eval::eval_domains;
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::{DataOptions, Feed};

/// The reference loss of every domain of `feed` (empty for a token stream, which has no
/// dynamic loading). `default_model` is the model a `Source` reference means when
/// `opts.reference_model` does not name one (`loaded` is that model, if already in memory).
pub(crate) fn reference_losses<B: Backend>(
    feed: &Feed,
    opts: &DataOptions,
    target_params: f64,
    default_model: &Path,
    loaded: Option<Llama<B>>,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Vec<f64>> {
    let Feed::Prepared(data) = feed else {
        return Ok(vec![]);
    };
    let domains = data.domains();
    if opts.dynamic.update_rule == shear_data::UpdateRule::Constant {
        // A static mixture never compares losses with a reference.
        return Ok(vec![0.0; domains.len()]);
    }
    let losses = match feed.fixed_reference(opts, target_params)? {
        Some(r) => r,
        None => {
            let dir = opts.reference_model.as_deref().unwrap_or(default_model);
            let model = match loaded.filter(|_| dir == default_model) {
                Some(m) => m,
                None => shear_model::load_llama::<B>(dir, device)
                    .context(format!("reference model {}", dir.display()))?,
            };
            observer.event(Event::Busy(&format!(
                "reference losses: evaluating {}",
                dir.display()
            )));
            eval_domains(
                &model,
                None,
                &domains,
                &data.shards(Split::Eval)?,
                opts.dynamic.eval_batch,
                opts.dynamic.eval_sequences,
            )
            .into_iter()
            .map(|d| d.loss)
            .collect()
        }
    };
    if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
        return invalid!(
            "the reference loss of domain `{}` is {} (a domain without eval sequences?)",
            domains[i],
            losses[i]
        );
    }
    let show = |v: &[f64]| -> String {
        domains
            .iter()
            .zip(v)
            .map(|(n, x)| format!("{n} {x:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let how = match &opts.dynamic.reference {
        ReferenceLoss::Source => " (source)",
        ReferenceLoss::Scaling(_) => " (scaling law)",
        ReferenceLoss::Values(_) => "",
    };
    observer.event(Event::Message(&format!(
        "reference losses{how}: {}",
        show(&losses)
    )));
    Ok(losses)
}
