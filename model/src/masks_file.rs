//! The pruning checkpoint's mask file (`masks.safetensors`): every `log_alpha`, the Lagrange
//! multipliers and the step, with the target shape in the metadata. `shear materialize` reads
//! it, or a file of deterministic mask values (`z_hidden`, `z_head`, `z_intermediate`,
//! `z_layer`).

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;

use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};
use crate::masks::{HardConcrete, L0Masks, Mask, TargetShape};
use crate::materialize::DeterministicMasks;

/// Everything in a mask file besides the masks themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskState {
    pub step: usize,
    pub target: TargetShape,
    /// Per mask type, in the order of `masks::MASK_TYPES`.
    pub lambda_1: [f64; 5],
    pub lambda_2: [f64; 5],
}

fn host<B: Backend>(m: &Mask<B>) -> (Vec<usize>, Vec<f32>) {
    let t = m.log_alpha.val();
    let [r, n] = t.dims();
    let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32");
    (if r == 1 { vec![n] } else { vec![r, n] }, v)
}

/// Writes `masks` and `state` to `path` (through a temporary name).
pub fn save_masks<B: Backend>(path: &Path, masks: &L0Masks<B>, state: &MaskState) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, m) in [
        ("layer", Some(&masks.layer)),
        ("hidden", Some(&masks.hidden)),
        ("head", Some(&masks.head)),
        ("intermediate", Some(&masks.intermediate)),
        ("mlp", masks.mlp.as_ref()),
    ] {
        let Some(m) = m else { continue };
        let (shape, v) = host(m);
        tensors.push((format!("log_alpha.{name}"), shape, Dtype::F32.encode(&v)));
    }
    for (name, v) in [("lambda_1", state.lambda_1), ("lambda_2", state.lambda_2)] {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        tensors.push((name.to_string(), vec![5], Dtype::F32.encode(&v)));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("shape matches data");
            (n.clone(), view)
        })
        .collect();
    let t = state.target;
    let metadata = HashMap::from([
        ("format".to_string(), "shear-masks".to_string()),
        ("step".to_string(), state.step.to_string()),
        (
            "target".to_string(),
            format!(
                "layers={},hidden={},heads={},intermediate={}",
                t.layers, t.hidden, t.heads, t.intermediate
            ),
        ),
        ("head_dim".to_string(), masks.head_dim.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    crate::checkpoint::write_atomic(path, &bytes)
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
    if !names.contains(&"log_alpha.hidden") {
        return Err(bad(
            "neither a pruning mask file (log_alpha.*) nor deterministic masks (z_*)".into(),
        ));
    }
    let (l, d, h, m) = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    );
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
    let hc = HardConcrete::default();
    let masks = L0Masks {
        layer: Mask::from_log_alpha(get("log_alpha.layer", 1, l)?, hc),
        mlp: if names.contains(&"log_alpha.mlp") {
            Some(Mask::from_log_alpha(get("log_alpha.mlp", 1, l)?, hc))
        } else {
            None
        },
        hidden: Mask::from_log_alpha(get("log_alpha.hidden", 1, d)?, hc),
        head: Mask::from_log_alpha(get("log_alpha.head", l, h)?, hc),
        intermediate: Mask::from_log_alpha(get("log_alpha.intermediate", l, m)?, hc),
        head_dim: config.head_dim,
    };
    let lam = |name: &str| -> Result<[f64; 5]> {
        let v: Vec<f32> = get(name, 1, 5)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        Ok(std::array::from_fn(|i| v[i] as f64))
    };
    let meta = meta.metadata().clone().unwrap_or_default();
    let target: TargetShape = meta
        .get("target")
        .ok_or_else(|| bad("no `target` in the metadata".into()))?
        .parse()
        .map_err(|e: String| bad(format!("metadata `target`: {e}")))?;
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
