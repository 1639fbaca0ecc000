//! Hugging Face checkpoints in and out: `config.json` + `model.safetensors`, or a sharded set with
//! `model.safetensors.index.json`; tensors stored in f32, bf16 or f16.
//!
//! Why not burn-store: its safetensors adapter loads a tensor in the file's dtype (a bf16 file
//! gives bf16 parameters) and saves in the parameters' dtype, while shear computes in f32 and
//! saves in a dtype the user picks. Reading each tensor straight from a memory map and converting
//! it on the way keeps one copy of the weights in memory, with errors that name the file and
//! tensor.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{io_err, ModelError, Result};
use crate::llama::Llama;
use crate::names::{self, LayerTensor};
use crate::tensor_data::to_vec_f32;
use crate::weights::{transpose, HfTensors};

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// Files that belong with a model but are not weights: copied along when a model is re-saved.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
];

struct TensorInfo {
    file: usize,
    dtype: Option<Dtype>,
    raw_dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// The tensors of a checkpoint directory, memory-mapped (nothing is read until asked for).
pub struct SafetensorsSource {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, TensorInfo>,
    used: BTreeSet<String>,
}

/// The weight files of a checkpoint directory (the shards named by the index, or the one file).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX);
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index.clone(),
                source,
            })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::ConfigKey {
                path: index.clone(),
                key: "weight_map".into(),
                msg: "missing or not an object".into(),
            })?;
        let mut shards = BTreeSet::new();
        for (name, shard) in map {
            let shard = shard.as_str().ok_or_else(|| ModelError::ConfigKey {
                path: index.clone(),
                key: format!("weight_map.{name}"),
                msg: "expected a file name".into(),
            })?;
            shards.insert(shard.to_string());
        }
        shards
            .into_iter()
            .map(|shard| {
                let path = dir.join(&shard);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(ModelError::MissingShard {
                        index: index.clone(),
                        shard,
                    })
                }
            })
            .collect()
    } else if dir.join(SINGLE).is_file() {
        Ok(vec![dir.join(SINGLE)])
    } else {
        Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        })
    }
}

impl SafetensorsSource {
    /// Maps every weight file of `dir` and reads their headers.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut tensors = BTreeMap::new();
        for (i, path) in weight_files(dir)?.into_iter().enumerate() {
            let bad = |msg: String| ModelError::Safetensors {
                path: path.clone(),
                msg,
            };
            let file = File::open(&path).map_err(io_err(&path))?;
            // SAFETY: the file is only read; a concurrent writer would be a user error that
            // safetensors' bounds checks catch as a corrupt file, not memory unsafety in our code.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| bad(e.to_string()))?;
            let base = mmap.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let start = view.data().as_ptr() as usize - base;
                tensors.insert(
                    name,
                    TensorInfo {
                        file: i,
                        dtype: Dtype::from_safetensors(view.dtype()),
                        raw_dtype: format!("{:?}", view.dtype()),
                        shape: view.shape().to_vec(),
                        start,
                        end: start + view.data().len(),
                    },
                );
            }
            drop(st);
            files.push((path, mmap));
        }
        Ok(SafetensorsSource {
            dir: dir.to_path_buf(),
            files,
            tensors,
            used: BTreeSet::new(),
        })
    }

    /// Names, shapes and storage dtypes of every tensor, without reading data.
    pub fn summary(&self) -> Vec<(String, Vec<usize>, String)> {
        self.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone(), t.raw_dtype.clone()))
            .collect()
    }

    /// The storage dtype of the weights (of the first tensor; f32 if it is not a float).
    pub fn stored_dtype(&self) -> Dtype {
        self.tensors
            .values()
            .next()
            .and_then(|t| t.dtype)
            .unwrap_or(Dtype::F32)
    }

    /// Reads tensor `name`, checking its shape, as f32 values in row-major order.
    pub fn read(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let path = &self.files[info.file].0;
        if info.shape != expected {
            return Err(ModelError::Shape {
                path: path.clone(),
                name: name.to_string(),
                found: info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let dtype = info.dtype.ok_or_else(|| ModelError::TensorDtype {
            path: path.clone(),
            name: name.to_string(),
            dtype: info.raw_dtype.clone(),
        })?;
        let bytes = &self.files[info.file].1[info.start..info.end];
        self.used.insert(name.to_string());
        let values = dtype.decode(bytes);
        finite(&values, path, name)?;
        Ok(values)
    }

    /// Checks that every float tensor holds finite values (what [`Self::read`] checks one
    /// tensor at a time while a model is built), so a run can refuse such weights before any
    /// other work. Reads every tensor once.
    pub fn check_finite(&self) -> Result<()> {
        for (name, info) in &self.tensors {
            let Some(dtype) = info.dtype else { continue };
            let (path, map) = &self.files[info.file];
            finite(&dtype.decode(&map[info.start..info.end]), path, name)?;
        }
        Ok(())
    }

    /// After building a model: every tensor in the files must have been used (a tied model's
    /// `lm_head.weight` and rotary `inv_freq` buffers excepted).
    pub fn finish(&self, arch: &str) -> Result<()> {
        for (name, info) in &self.tensors {
            let ignorable = name.ends_with("rotary_emb.inv_freq") || name == names::LM_HEAD;
            if !self.used.contains(name) && !ignorable {
                return Err(ModelError::UnexpectedTensor {
                    path: self.files[info.file].0.clone(),
                    name: name.clone(),
                    arch: arch.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl HfTensors for SafetensorsSource {
    fn read_hf(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.read(name, shape)
    }
}

/// Refuses a weight tensor holding NaN or infinity: such a value spreads through every product
/// (or is hidden by attention's softmax and gives plausible but wrong losses), so it is refused
/// where it is found, by tensor and index (docs/algorithm.md §9).
fn finite(values: &[f32], path: &Path, name: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ModelError::NonFiniteWeight {
            path: path.to_path_buf(),
            name: name.to_string(),
            index,
            value: values[index],
        }),
    }
}

/// Loads a LLaMA from a Hugging Face model directory, weights converted to f32.
pub fn load_llama<B: Backend>(dir: &Path, device: &B::Device) -> Result<Llama<B>> {
    let config = LlamaConfig::from_file(dir)?;
    let mut source = SafetensorsSource::open(dir)?;
    let model = Llama::from_source(&config, &mut source, device)?;
    source.finish("LlamaForCausalLM")?;
    Ok(model)
}

/// One tensor to write, converted to bytes only when the writer asks for it, so saving needs
/// one tensor's worth of extra memory rather than a second copy of the model.
pub(crate) struct LazyTensor<B: Backend> {
    tensor: Tensor<B, 2>,
    /// Burn's `[in, out]` linear layout, written as `[out, in]`.
    transpose: bool,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl<B: Backend> LazyTensor<B> {
    /// The values in Hugging Face layout (row-major over `self.shape`), as f32.
    pub(crate) fn hf_values(&self) -> Vec<f32> {
        let [r, c] = self.tensor.dims();
        let v = to_vec_f32(self.tensor.to_data());
        if self.transpose {
            transpose(&v, r, c)
        } else {
            v
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl<B: Backend> safetensors::View for LazyTensor<B> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.dtype.encode(&self.hf_values()))
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
}

/// Every tensor of `model` under its Hugging Face name.
pub(crate) fn named_tensors<B: Backend>(
    model: &Llama<B>,
    dtype: Dtype,
) -> Vec<(String, LazyTensor<B>)> {
    let mut out = Vec::new();
    let mut push = |name: String, tensor: Tensor<B, 2>, transpose: bool, vector: bool| {
        let [r, c] = tensor.dims();
        let shape = match (vector, transpose) {
            (true, _) => vec![r * c],
            (false, true) => vec![c, r],
            (false, false) => vec![r, c],
        };
        out.push((
            name,
            LazyTensor {
                tensor,
                transpose,
                shape,
                dtype,
            },
        ));
    };
    push(
        names::EMBED.into(),
        model.embed_tokens.weight.val(),
        false,
        false,
    );
    for (i, l) in model.layers.iter().enumerate() {
        let (a, f) = (&l.self_attn, &l.mlp);
        for t in LayerTensor::ALL {
            let (weight, linear) = match t {
                LayerTensor::QProj => (a.q_proj.weight.val(), true),
                LayerTensor::KProj => (a.k_proj.weight.val(), true),
                LayerTensor::VProj => (a.v_proj.weight.val(), true),
                LayerTensor::OProj => (a.o_proj.weight.val(), true),
                LayerTensor::GateProj => (f.gate_proj.weight.val(), true),
                LayerTensor::UpProj => (f.up_proj.weight.val(), true),
                LayerTensor::DownProj => (f.down_proj.weight.val(), true),
                LayerTensor::InputNorm => (l.input_layernorm.weight.val().unsqueeze(), false),
                LayerTensor::PostNorm => {
                    (l.post_attention_layernorm.weight.val().unsqueeze(), false)
                }
            };
            // Linear weights are transposed back to `[out, in]`; norms are vectors.
            push(names::layer(i, t), weight, linear, !linear);
        }
        for (t, lin) in [
            (LayerTensor::QProj, &a.q_proj),
            (LayerTensor::KProj, &a.k_proj),
            (LayerTensor::VProj, &a.v_proj),
            (LayerTensor::OProj, &a.o_proj),
        ] {
            if let Some(b) = &lin.bias {
                push(names::layer_bias(i, t), b.val().unsqueeze(), false, true);
            }
        }
    }
    push(
        names::NORM.into(),
        model.norm.weight.val().unsqueeze(),
        false,
        true,
    );
    if let Some(head) = &model.lm_head {
        push(names::LM_HEAD.into(), head.weight.val(), true, false);
    }
    out
}

/// Saves `model` as a Hugging Face checkpoint in `dir` (created if needed): `model.safetensors`
/// with tensors in `dtype`, then `config.json`. Each file is written under a temporary name and
/// renamed when complete.
pub fn save_llama<B: Backend>(model: &Llama<B>, dir: &Path, dtype: Dtype) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let weights = dir.join(SINGLE);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    shear_io::write_atomic_path(&weights, |tmp| {
        safetensors::serialize_to_file(named_tensors(model, dtype), Some(metadata), tmp).map_err(
            |e| ModelError::Write {
                path: weights.clone(),
                msg: e.to_string(),
            },
        )
    })?;
    // A stale index would make loaders look for shards instead of the file just written.
    let stale = dir.join(INDEX);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(io_err(&stale))?;
    }
    let config = serde_json::to_string_pretty(&model.config.to_hf_json(dtype))
        .expect("a JSON value serializes");
    Ok(shear_io::write_atomic(
        &dir.join("config.json"),
        config.as_bytes(),
    )?)
}

/// Copies the tokenizer and generation files that exist in `from` into `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(io_err(&src))?;
            shear_io::write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}
