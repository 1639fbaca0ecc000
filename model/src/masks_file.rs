//! The pruning run's mask file (`masks.safetensors`): every `log_alpha` (`log_alpha.{type}`),
//! the Lagrange multipliers (`lambda_1`, `lambda_2`, one entry per mask type in
//! `MaskType::ALL` order), and in the metadata the step, the target shape and the hard-concrete
//! temperature the masks were trained with (docs/algorithm.md §2.1), so that deterministic masks
//! computed from the file use it. `shear materialize` reads it, or a file of deterministic mask
//! values (`z_hidden`, `z_head`, `z_intermediate`, `z_layer`, optionally `z_kv_head`, `z_mlp`).

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;

use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};
use crate::masks::{HardConcrete, L0Masks, Mask, MaskType, PerType};
use crate::materialize::DeterministicMasks;
use crate::target::TargetShape;
use crate::tensor_data::to_vec_f32;

const FORMAT: &str = "shear-masks";

/// Everything in a mask file besides the masks themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskState {
    pub step: usize,
    pub target: TargetShape,
    pub lambda_1: PerType<f64>,
    pub lambda_2: PerType<f64>,
}

fn all_types(v: &PerType<f64>) -> Vec<f32> {
    MaskType::ALL
        .iter()
        .map(|k| v.get(*k).copied().unwrap_or(0.0) as f32)
        .collect()
}

/// Writes `masks` and `state` to `path` (atomically).
pub fn save_masks<B: Backend>(path: &Path, masks: &L0Masks<B>, state: &MaskState) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for k in masks.types() {
        let t = masks.get(k).expect("present").log_alpha.val();
        let [r, n] = t.dims();
        let v = to_vec_f32(t.into_data());
        let shape = if r == 1 { vec![n] } else { vec![r, n] };
        tensors.push((format!("log_alpha.{k}"), shape, Dtype::F32.encode(&v)));
    }
    for (name, v) in [("lambda_1", &state.lambda_1), ("lambda_2", &state.lambda_2)] {
        let v = all_types(v);
        tensors.push((name.to_string(), vec![v.len()], Dtype::F32.encode(&v)));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("shape matches data");
            (n.clone(), view)
        })
        .collect();
    let hc = masks.hard_concrete();
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("target".to_string(), state.target.to_string()),
        ("temperature".to_string(), hc.temperature.to_string()),
        ("head_dim".to_string(), masks.head_dim.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(shear_io::write_atomic(path, &bytes)?)
}

/// What a mask file holds.
pub enum MaskFile<B: Backend> {
    /// A pruning checkpoint: learnable masks and their state.
    LogAlpha(Box<L0Masks<B>>, MaskState),
    /// Deterministic mask values.
    Deterministic(DeterministicMasks),
}

/// Reads a mask file of either kind, checking shapes against the source `config`.
pub fn load_masks<B: Backend>(
    path: &Path,
    config: &LlamaConfig,
    device: &B::Device,
) -> Result<MaskFile<B>> {
    let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
    let bad = |msg: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let names = st.names();
    if names.contains(&"z_hidden") {
        return Ok(MaskFile::Deterministic(
            DeterministicMasks::from_safetensors(path, config)?,
        ));
    }
    if !names.iter().any(|n| n.starts_with("log_alpha.")) {
        return Err(bad(
            "neither a pruning mask file (log_alpha.*) nor deterministic masks (z_*)".into(),
        ));
    }
    let meta = meta.metadata().clone().unwrap_or_default();
    // Files written before the temperature was recorded used the default.
    let temperature = match meta.get("temperature") {
        Some(t) => t
            .parse::<f64>()
            .map_err(|_| bad(format!("metadata `temperature`: `{t}` is not a number")))?,
        None => HardConcrete::default().temperature,
    };
    let hc = HardConcrete::with_temperature(temperature);
    hc.validate()
        .map_err(|e| bad(format!("metadata `temperature`: {e}")))?;
    let get = |name: &str, rows: usize, n: usize| -> Result<Tensor<B, 2>> {
        let t = st.tensor(name).map_err(|_| ModelError::MissingTensor {
            dir: path.to_path_buf(),
            name: name.to_string(),
        })?;
        let n_found: usize = t.shape().iter().product();
        if n_found != rows * n || t.dtype() != safetensors::Dtype::F32 {
            return Err(ModelError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: t.shape().to_vec(),
                expected: if rows == 1 { vec![n] } else { vec![rows, n] },
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(Dtype::F32.decode(t.data()), [rows, n]),
            device,
        ))
    };
    let (l, d, h, g, m) = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.intermediate_size,
    );
    let mask = |k: MaskType, rows: usize, n: usize| -> Result<Option<Mask<B>>> {
        let name = format!("log_alpha.{k}");
        if !names.contains(&name.as_str()) {
            return Ok(None);
        }
        Ok(Some(Mask::from_log_alpha(get(&name, rows, n)?, hc)))
    };
    let masks = L0Masks {
        layer: mask(MaskType::Layer, 1, l)?,
        mlp: mask(MaskType::Mlp, 1, l)?,
        hidden: mask(MaskType::Hidden, 1, d)?,
        head: mask(MaskType::Head, l, h)?,
        kv_head: mask(MaskType::KvHead, l, g)?,
        intermediate: mask(MaskType::Intermediate, l, m)?,
        source: TargetShape::of(config),
        head_dim: config.head_dim,
    };
    let types = masks.types();
    // Multipliers are state for resuming a run, not needed to materialize: 0 when absent.
    let lam = |name: &str| -> Result<PerType<f64>> {
        if !names.contains(&name) {
            return Ok(types.iter().map(|k| (*k, 0.0)).collect());
        }
        let v = to_vec_f32(get(name, 1, MaskType::ALL.len())?.into_data());
        Ok(types
            .iter()
            .copied()
            .map(|k| (k, v[k.index()] as f64))
            .collect())
    };
    let target: TargetShape = meta
        .get("target")
        .ok_or_else(|| bad("no `target` in the metadata".into()))?
        .parse::<TargetShape>()
        .map_err(|e| bad(format!("metadata `target`: {e}")))?;
    let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(MaskFile::LogAlpha(
        Box::new(masks),
        MaskState {
            step,
            target,
            lambda_1: lam("lambda_1")?,
            lambda_2: lam("lambda_2")?,
        },
    ))
}
