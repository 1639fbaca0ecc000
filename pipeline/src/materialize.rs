//! `materialize`: a source model and a mask file (a pruning run's `masks.safetensors`, or
//! deterministic mask values) to the smaller dense model (docs/algorithm.md §5).

use std::path::Path;

use burn::tensor::backend::Backend;
use shear_model::masks_file::{load_masks, MaskFile};
use shear_model::{materialize, Dtype, LlamaConfig, TargetShape};

use crate::error::{Context, PipelineError, Result};
use crate::stage::save_with_tokenizer;

/// Materializes `source` with `masks` into `out`: at `target` (default: the mask file's) for a
/// pruning mask file, with the temperature the masks were trained with. Returns the new config.
pub fn materialize_masks<B: Backend>(
    source: &Path,
    masks: &Path,
    target: Option<TargetShape>,
    out: &Path,
    dtype: Dtype,
    device: &B::Device,
) -> Result<LlamaConfig> {
    let config = LlamaConfig::from_file(source)?;
    let z = match load_masks::<B>(masks, &config, device)? {
        MaskFile::Deterministic(z) => z,
        MaskFile::LogAlpha(l0, state) => {
            let target = target.unwrap_or(state.target);
            target
                .validate(&config, l0.modules())
                .map_err(|e| PipelineError::Invalid(format!("invalid target ({target}): {e}")))?;
            l0.clamp_log_alpha()
                .deterministic(Some(&target))
                .context(format!("{}", masks.display()))?
        }
    };
    let model = shear_model::load_llama::<B>(source, device)
        .context(format!("cannot load model {}", source.display()))?;
    let small = materialize(&model, &z, device).context("cannot materialize")?;
    let _lock = crate::out::create_locked(out)?;
    save_with_tokenizer(&small, out, dtype, source)?;
    Ok(small.config.clone())
}
