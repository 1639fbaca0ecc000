//! Materialization (docs/algorithm.md §5, with the §0.2 decision and §11 for grouped-query
//! attention): deterministic masks folded into the weights once, zeros sliced away, removed
//! layers dropped and the rest renumbered, giving a dense smaller LLaMA whose logits equal the
//! masked model's.
//!
//! Where each mask is folded:
//! - `z_hidden`: into the norm weights and the output rows of `o_proj` and `down_proj`; into the
//!   embedding too when the head is untied (the masked forward then masks the embedding output),
//!   never into a tied embedding, which therefore stays tied (§0.2).
//! - `z_head`: into the rows of `v_proj` under multi-head attention (as the reference does); into
//!   the input columns of `o_proj` when query heads share key/value heads, with the group mask
//!   `z_kv_head` folded into `v_proj`'s rows (§11).
//! - `z_layer` / `z_mlp`: into the output rows of `o_proj` / `down_proj`.
//! - `z_intermediate`: into the rows of `up_proj`.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;

use crate::checkpoint::named_tensors;
use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};
use crate::llama::{Llama, ZMasks};
use crate::names::{self, LayerTensor};
use crate::weights::HfTensors;

/// Deterministic mask values (exact zeros for removed units, soft values for kept ones; 1 for a
/// dimension that was not pruned).
#[derive(Clone, Debug, PartialEq)]
pub struct DeterministicMasks {
    /// `[d]`
    pub hidden: Vec<f64>,
    /// `[layers][heads]`: query heads.
    pub head: Vec<Vec<f64>>,
    /// `[layers][kv_heads]`: key/value groups of a grouped-query source (§11).
    pub kv_head: Option<Vec<Vec<f64>>>,
    /// `[layers][intermediate]`
    pub intermediate: Vec<Vec<f64>>,
    /// `[layers]`: both sub-blocks, or only attention (`head_layer`) when `mlp` is set.
    pub layer: Vec<f64>,
    /// `[layers]`: the FFN sub-block, with separate per-layer masks.
    pub mlp: Option<Vec<f64>>,
}

fn read_f32(
    st: &safetensors::SafeTensors,
    path: &Path,
    name: &str,
) -> Result<(Vec<usize>, Vec<f64>)> {
    let t = st.tensor(name).map_err(|_| ModelError::MissingTensor {
        dir: path.to_path_buf(),
        name: name.to_string(),
    })?;
    let dtype = Dtype::from_safetensors(t.dtype()).ok_or_else(|| ModelError::TensorDtype {
        path: path.to_path_buf(),
        name: name.to_string(),
        dtype: format!("{:?}", t.dtype()),
    })?;
    Ok((
        t.shape().to_vec(),
        dtype.decode(t.data()).into_iter().map(f64::from).collect(),
    ))
}

impl DeterministicMasks {
    /// All ones: the unpruned model.
    pub fn ones(config: &LlamaConfig) -> Self {
        let l = config.num_hidden_layers;
        DeterministicMasks {
            hidden: vec![1.0; config.hidden_size],
            head: vec![vec![1.0; config.num_attention_heads]; l],
            kv_head: None,
            intermediate: vec![vec![1.0; config.intermediate_size]; l],
            layer: vec![1.0; l],
            mlp: None,
        }
    }

    /// Reads `z_hidden [d]`, `z_head [L, H]`, `z_intermediate [L, m]`, `z_layer [L]` and, if
    /// present, `z_kv_head [L, G]` and `z_mlp [L]` from a safetensors file (other tensors are
    /// ignored) and checks them against `config`; every value must be finite and in [0, 1].
    pub fn from_safetensors(path: &Path, config: &LlamaConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        let (l, h, g, m, d) = (
            config.num_hidden_layers,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.intermediate_size,
            config.hidden_size,
        );
        let get = |name: &str, expected: Vec<usize>| -> Result<Vec<f64>> {
            let (shape, v) = read_f32(&st, path, name)?;
            if shape != expected {
                return Err(ModelError::Shape {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    found: shape,
                    expected,
                });
            }
            if let Some(bad) = v.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                return Err(ModelError::NonFinite {
                    what: format!("{}: mask `{name}`", path.display()),
                    value: *bad,
                });
            }
            Ok(v)
        };
        let rows = |v: Vec<f64>, n: usize| v.chunks(n).map(<[f64]>::to_vec).collect();
        let has = |n: &str| st.names().contains(&n);
        Ok(DeterministicMasks {
            hidden: get("z_hidden", vec![d])?,
            head: rows(get("z_head", vec![l, h])?, h),
            kv_head: if has("z_kv_head") {
                Some(rows(get("z_kv_head", vec![l, g])?, g))
            } else {
                None
            },
            intermediate: rows(get("z_intermediate", vec![l, m])?, m),
            layer: get("z_layer", vec![l])?,
            mlp: if has("z_mlp") {
                Some(get("z_mlp", vec![l])?)
            } else {
                None
            },
        })
    }

    /// Writes the masks as `z_hidden`, `z_head`, `z_intermediate`, `z_layer` (and `z_kv_head`,
    /// `z_mlp` when present), f32, the file [`DeterministicMasks::from_safetensors`] and
    /// `shear materialize` read (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let flat = |rows: &[Vec<f64>]| -> (Vec<usize>, Vec<f64>) {
            let n = rows.first().map_or(0, Vec::len);
            (
                vec![rows.len(), n],
                rows.iter().flatten().copied().collect(),
            )
        };
        let mut tensors = vec![
            ("z_hidden", vec![self.hidden.len()], self.hidden.clone()),
            ("z_layer", vec![self.layer.len()], self.layer.clone()),
        ];
        for (name, rows) in [
            ("z_head", &self.head),
            ("z_intermediate", &self.intermediate),
        ] {
            let (shape, v) = flat(rows);
            tensors.push((name, shape, v));
        }
        if let Some(kv) = &self.kv_head {
            let (shape, v) = flat(kv);
            tensors.push(("z_kv_head", shape, v));
        }
        if let Some(m) = &self.mlp {
            tensors.push(("z_mlp", vec![m.len()], m.clone()));
        }
        let bytes: Vec<(&str, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s, v)| {
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                (n, s, Dtype::F32.encode(&f))
            })
            .collect();
        let views: Vec<(&str, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .expect("shape matches data");
                (*n, view)
            })
            .collect();
        let out = safetensors::serialize(views, None).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(shear_io::write_atomic(path, &out)?)
    }

    /// Query-head values times their group's value `[layers][heads]`: the factor each head's
    /// context is multiplied by in the masked forward.
    pub fn effective_heads(&self) -> Vec<Vec<f64>> {
        match &self.kv_head {
            None => self.head.clone(),
            Some(kv) => self
                .head
                .iter()
                .zip(kv)
                .map(|(h, g)| {
                    let per = h.len() / g.len();
                    h.iter().enumerate().map(|(i, x)| x * g[i / per]).collect()
                })
                .collect(),
        }
    }

    /// The masks as tensors for [`Llama::forward_masked`].
    pub fn to_z<B: Backend>(&self, device: &B::Device) -> ZMasks<B> {
        let v1 = |v: &[f64]| {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(f, [v.len()]), device)
        };
        let v2 = |rows: &[Vec<f64>]| {
            let n = rows.first().map_or(0, Vec::len);
            let f: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
            Tensor::<B, 2>::from_data(TensorData::new(f, [rows.len(), n]), device)
        };
        ZMasks {
            hidden: Some(v1(&self.hidden)),
            head: Some(v2(&self.effective_heads())),
            intermediate: Some(v2(&self.intermediate)),
            layer: Some(v1(&self.layer)),
            mlp: self.mlp.as_deref().map(v1),
        }
    }
}

/// Tensors in Hugging Face layout, served by name to [`Llama::from_source`].
struct MapSource {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl HfTensors for MapSource {
    fn read_hf(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: "(materialized model)".into(),
                name: name.to_string(),
            })?;
        if s != shape {
            return Err(ModelError::Shape {
                path: "(materialized model)".into(),
                name: name.to_string(),
                found: s,
                expected: shape.to_vec(),
            });
        }
        Ok(v)
    }
}

/// A row-major `[rows, cols]` matrix on the host.
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f32>,
}

impl Mat {
    /// Multiplies row i by `s[i]`.
    fn scale_rows(mut self, s: &[f64]) -> Self {
        for (r, &f) in s.iter().enumerate() {
            self.v[r * self.cols..(r + 1) * self.cols]
                .iter_mut()
                .for_each(|x| *x = (*x as f64 * f) as f32);
        }
        self
    }
    /// Multiplies column j by `s[j]`.
    fn scale_cols(mut self, s: &[f64]) -> Self {
        for row in self.v.chunks_mut(self.cols) {
            row.iter_mut()
                .zip(s)
                .for_each(|(x, &f)| *x = (*x as f64 * f) as f32);
        }
        self
    }
    /// Keeps rows `r` and columns `c`, in order.
    fn select(self, r: &[usize], c: &[usize]) -> Self {
        let mut v = Vec::with_capacity(r.len() * c.len());
        for &i in r {
            v.extend(c.iter().map(|&j| self.v[i * self.cols + j]));
        }
        Mat {
            rows: r.len(),
            cols: c.len(),
            v,
        }
    }
    fn all_rows(&self) -> Vec<usize> {
        (0..self.rows).collect()
    }
}

fn nonzero(v: &[f64]) -> Vec<usize> {
    (0..v.len()).filter(|&i| v[i] != 0.0).collect()
}

/// Each of `units` (e.g. heads) repeated `width` times (e.g. its `head_dim` rows).
fn expand(units: &[f64], width: usize) -> Vec<f64> {
    units
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, width))
        .collect()
}

fn rows_of(units: &[usize], width: usize) -> Vec<usize> {
    units
        .iter()
        .flat_map(|&u| u * width..(u + 1) * width)
        .collect()
}

/// A count that must be the same in every kept layer for the result to be a uniform model.
struct Uniform {
    what: &'static str,
    seen: Option<usize>,
}

impl Uniform {
    fn check(&mut self, layer: usize, kept: usize) -> Result<()> {
        if kept == 0 {
            return Err(ModelError::InvalidShape(format!(
                "layer {layer} keeps no {}",
                self.what
            )));
        }
        match self.seen {
            Some(k) if k != kept => Err(ModelError::InvalidShape(format!(
                "layer {layer} keeps {kept} {}, an earlier layer {k}: not a uniform model",
                self.what
            ))),
            _ => {
                self.seen = Some(kept);
                Ok(())
            }
        }
    }
}

/// Folds `z` into `model` and slices it to the kept units (docs/algorithm.md §5, §0.2, §11).
/// Every kept layer must keep the same number of heads, key/value groups and intermediate
/// channels, and every kept group the same number of query heads, so the result is a uniform
/// Hugging Face Llama.
pub fn materialize<B: Backend>(
    model: &Llama<B>,
    z: &DeterministicMasks,
    device: &B::Device,
) -> Result<Llama<B>> {
    let c = &model.config;
    let bad = |m: String| ModelError::InvalidShape(m);
    let hd = c.head_dim;
    let per_group = c.num_attention_heads / c.num_key_value_heads;
    let mut src: HashMap<String, Mat> = named_tensors(model, Dtype::F32)
        .into_iter()
        .map(|(name, t)| {
            let shape = t.shape().to_vec();
            let (rows, cols) = if shape.len() == 2 {
                (shape[0], shape[1])
            } else {
                (1, shape[0])
            };
            let v = t.hf_values();
            (name, Mat { rows, cols, v })
        })
        .collect();
    let mut take = |name: &str| src.remove(name).expect("every model tensor is named");
    let zh = &z.hidden;
    let keep_d = nonzero(zh);
    let mut out: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut put = |name: String, m: Mat, vector: bool| {
        let shape = if vector {
            vec![m.cols]
        } else {
            vec![m.rows, m.cols]
        };
        out.insert(name, (shape, m.v));
    };

    let tied = model.lm_head.is_none();
    let embed = take(names::EMBED);
    let vocab = embed.all_rows();
    if tied {
        // The masked forward leaves a tied embedding unmasked (§0.2): slice it, fold nothing.
        put(names::EMBED.into(), embed.select(&vocab, &keep_d), false);
    } else {
        // The LM head input is not scaled: z_hidden is folded into the final norm only.
        let head = take(names::LM_HEAD);
        put(names::LM_HEAD.into(), head.select(&vocab, &keep_d), false);
        let embed = embed.scale_cols(zh).select(&vocab, &keep_d);
        put(names::EMBED.into(), embed, false);
    }
    put(
        names::NORM.into(),
        take(names::NORM).scale_cols(zh).select(&[0], &keep_d),
        true,
    );

    let mut heads_kept = Uniform {
        what: "attention heads",
        seen: None,
    };
    let mut groups_kept = Uniform {
        what: "key/value heads",
        seen: None,
    };
    let mut per_group_kept = Uniform {
        what: "query heads in a key/value group",
        seen: None,
    };
    let mut inter_kept = Uniform {
        what: "intermediate channels",
        seen: None,
    };
    let z_heads = z.effective_heads();
    let mut new_l = 0;
    for l in 0..c.num_hidden_layers {
        // Per-layer scalars of the attention and FFN sub-blocks (the same with one layer mask).
        let zl = z.layer[l];
        let zf = z.mlp.as_ref().map_or(zl, |m| m[l]);
        if zl == 0.0 && zf == 0.0 {
            continue;
        }
        if zl == 0.0 || zf == 0.0 {
            return Err(bad(format!(
                "layer {l} loses only its {} sub-block; a Hugging Face Llama keeps or removes \
                 layers whole",
                if zl == 0.0 { "attention" } else { "FFN" }
            )));
        }
        let n = |t: LayerTensor| names::layer(l, t);
        let o = |t: LayerTensor| names::layer(new_l, t);

        // Attention. Kept query heads, and kept groups (a group is kept when one of its query
        // heads is; under multi-head attention groups are heads).
        let heads = nonzero(&z_heads[l]);
        let groups: Vec<usize> = (0..c.num_key_value_heads)
            .filter(|g| heads.iter().any(|h| h / per_group == *g))
            .collect();
        heads_kept.check(l, heads.len())?;
        groups_kept.check(l, groups.len())?;
        for g in &groups {
            let n_in = heads.iter().filter(|h| *h / per_group == *g).count();
            per_group_kept.check(l, n_in)?;
        }
        let (v_scale, o_cols) = match &z.kv_head {
            // Multi-head attention: each head's value rows carry its mask.
            None if per_group == 1 => (
                expand(&z.head[l], hd),
                vec![1.0; c.num_attention_heads * hd],
            ),
            // Grouped: the group mask into the value rows, the query-head mask into o_proj.
            None => (
                vec![1.0; c.num_key_value_heads * hd],
                expand(&z.head[l], hd),
            ),
            Some(kv) => (expand(&kv[l], hd), expand(&z.head[l], hd)),
        };
        let (q_rows, kv_rows) = (rows_of(&heads, hd), rows_of(&groups, hd));
        put(
            o(LayerTensor::QProj),
            take(&n(LayerTensor::QProj)).select(&q_rows, &keep_d),
            false,
        );
        put(
            o(LayerTensor::KProj),
            take(&n(LayerTensor::KProj)).select(&kv_rows, &keep_d),
            false,
        );
        let vproj = take(&n(LayerTensor::VProj)).scale_rows(&v_scale);
        put(
            o(LayerTensor::VProj),
            vproj.select(&kv_rows, &keep_d),
            false,
        );
        let o_rows: Vec<f64> = zh.iter().map(|&s| s * zl).collect();
        let oproj = take(&n(LayerTensor::OProj))
            .scale_rows(&o_rows)
            .scale_cols(&o_cols);
        put(o(LayerTensor::OProj), oproj.select(&keep_d, &q_rows), false);
        if c.attention_bias {
            // A bias follows its output rows: sliced with them, scaled as they are.
            let b = |t: LayerTensor| names::layer_bias(l, t);
            let ob = |t: LayerTensor| names::layer_bias(new_l, t);
            let q = take(&b(LayerTensor::QProj)).select(&[0], &q_rows);
            put(ob(LayerTensor::QProj), q, true);
            let k = take(&b(LayerTensor::KProj)).select(&[0], &kv_rows);
            put(ob(LayerTensor::KProj), k, true);
            let v = take(&b(LayerTensor::VProj)).scale_cols(&v_scale);
            put(ob(LayerTensor::VProj), v.select(&[0], &kv_rows), true);
            let out = take(&b(LayerTensor::OProj)).scale_cols(&o_rows);
            put(ob(LayerTensor::OProj), out.select(&[0], &keep_d), true);
        }

        // FFN: intermediate mask into up_proj's rows, layer and hidden masks into down_proj's.
        let zint = &z.intermediate[l];
        let chans: Vec<usize> = (0..zint.len()).filter(|&i| zint[i] * zf != 0.0).collect();
        inter_kept.check(l, chans.len())?;
        let gate = take(&n(LayerTensor::GateProj)).select(&chans, &keep_d);
        put(o(LayerTensor::GateProj), gate, false);
        let up = take(&n(LayerTensor::UpProj))
            .scale_rows(zint)
            .select(&chans, &keep_d);
        put(o(LayerTensor::UpProj), up, false);
        let f_rows: Vec<f64> = zh.iter().map(|&s| s * zf).collect();
        let down = take(&n(LayerTensor::DownProj))
            .scale_rows(&f_rows)
            .select(&keep_d, &chans);
        put(o(LayerTensor::DownProj), down, false);
        for norm in [LayerTensor::InputNorm, LayerTensor::PostNorm] {
            let w = take(&n(norm)).scale_cols(zh).select(&[0], &keep_d);
            put(o(norm), w, true);
        }
        new_l += 1;
    }
    if new_l == 0 || keep_d.is_empty() {
        return Err(bad(
            "the masks remove every layer or every hidden dimension".into(),
        ));
    }
    let mut config = c.clone();
    config.hidden_size = keep_d.len();
    config.num_hidden_layers = new_l;
    config.num_attention_heads = heads_kept.seen.unwrap_or(0);
    config.num_key_value_heads = groups_kept.seen.unwrap_or(0);
    config.intermediate_size = inter_kept.seen.unwrap_or(0);
    Llama::from_source(&config, &mut MapSource { tensors: out }, device)
}
