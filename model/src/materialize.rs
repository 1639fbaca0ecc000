//! Materialization (SPEC §5 with the §0.2 decision): deterministic masks folded into the weights
//! once, zeros sliced away, removed layers dropped and the rest renumbered, giving a dense
//! smaller LLaMA whose logits equal the masked model's.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;

use crate::checkpoint::named_tensors;
use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};
use crate::llama::{Llama, ZMasks};
use crate::weights::HfTensors;

/// Deterministic mask values (exact zeros for removed units, soft values for kept ones).
#[derive(Clone, Debug, PartialEq)]
pub struct DeterministicMasks {
    /// `[d]`
    pub hidden: Vec<f64>,
    /// `[layers][heads]`
    pub head: Vec<Vec<f64>>,
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
    /// Reads `z_hidden [d]`, `z_head [L, H]`, `z_intermediate [L, m]`, `z_layer [L]` and, if
    /// present, `z_mlp [L]` from a safetensors file (other tensors are ignored) and checks them
    /// against `config`.
    pub fn from_safetensors(path: &Path, config: &LlamaConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        let (l, h, m, d) = (
            config.num_hidden_layers,
            config.num_attention_heads,
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
            Ok(v)
        };
        let rows = |v: Vec<f64>, n: usize| v.chunks(n).map(<[f64]>::to_vec).collect();
        Ok(DeterministicMasks {
            hidden: get("z_hidden", vec![d])?,
            head: rows(get("z_head", vec![l, h])?, h),
            intermediate: rows(get("z_intermediate", vec![l, m])?, m),
            layer: get("z_layer", vec![l])?,
            mlp: if st.names().contains(&"z_mlp") {
                Some(get("z_mlp", vec![l])?)
            } else {
                None
            },
        })
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
            head: Some(v2(&self.head)),
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

impl MapSource {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
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

impl HfTensors for MapSource {
    fn read_hf(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.take(name, shape)
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
}

fn nonzero(v: &[f64]) -> Vec<usize> {
    (0..v.len()).filter(|&i| v[i] != 0.0).collect()
}

/// Folds `z` into `model` and slices it to the kept units (SPEC §5, §0.2). Every kept layer must
/// keep the same number of heads and intermediate channels, so the result is a uniform LLaMA.
pub fn materialize<B: Backend>(
    model: &Llama<B>,
    z: &DeterministicMasks,
    device: &B::Device,
) -> Result<Llama<B>> {
    let c = &model.config;
    let bad = |m: String| ModelError::InvalidShape(m);
    if c.num_key_value_heads != c.num_attention_heads {
        return Err(bad(
            "materializing grouped-query attention models is not supported yet".into(),
        ));
    }
    let hd = c.head_dim;
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
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let mut out: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut put = |name: String, m: Mat, vector: bool| {
        let shape = if vector {
            vec![m.cols]
        } else {
            vec![m.rows, m.cols]
        };
        out.insert(name, (shape, m.v));
    };

    let embed = take("model.embed_tokens.weight");
    let vocab = embed.rows;
    // The LM head input is not scaled: z_hidden is folded into the final norm only (§0.2). A
    // tied head therefore becomes untied, since the embedding itself is scaled.
    let head = match &model.lm_head {
        Some(_) => take("lm_head.weight"),
        None => Mat {
            rows: embed.rows,
            cols: embed.cols,
            v: embed.v.clone(),
        },
    };
    put(
        "lm_head.weight".into(),
        head.select(&all(vocab), &keep_d),
        false,
    );
    put(
        "model.embed_tokens.weight".into(),
        embed.scale_cols(zh).select(&all(vocab), &keep_d),
        false,
    );
    put(
        "model.norm.weight".into(),
        take("model.norm.weight")
            .scale_cols(zh)
            .select(&[0], &keep_d),
        true,
    );

    let (mut heads_kept, mut inter_kept) = (None, None);
    let mut new_l = 0;
    for l in 0..c.num_hidden_layers {
        // Per-layer scalars of the attention and FFN sub-blocks (the same with one layer mask).
        let zl = z.layer[l];
        let zf = z.mlp.as_ref().map_or(zl, |m| m[l]);
        let p = format!("model.layers.{l}");
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
        let q = format!("model.layers.{new_l}");
        let n = |s: &str| format!("{p}.{s}.weight");
        let o = |s: &str| format!("{q}.{s}.weight");
        // Attention: head mask into V's rows, layer and hidden masks into o_proj's rows.
        let zhead = &z.head[l];
        let heads: Vec<usize> = (0..zhead.len()).filter(|&h| zhead[h] * zl != 0.0).collect();
        let head_rows: Vec<usize> = heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect();
        let v_scale: Vec<f64> = zhead
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, hd))
            .collect();
        let o_scale: Vec<f64> = zh.iter().map(|&s| s * zl).collect();
        for name in ["q_proj", "k_proj"] {
            let m = take(&n(&format!("self_attn.{name}"))).select(&head_rows, &keep_d);
            put(o(&format!("self_attn.{name}")), m, false);
        }
        let vproj = take(&n("self_attn.v_proj")).scale_rows(&v_scale);
        put(
            o("self_attn.v_proj"),
            vproj.select(&head_rows, &keep_d),
            false,
        );
        let oproj = take(&n("self_attn.o_proj")).scale_rows(&o_scale);
        put(
            o("self_attn.o_proj"),
            oproj.select(&keep_d, &head_rows),
            false,
        );
        // MLP: intermediate mask into up_proj's rows, layer and hidden masks into down_proj's.
        let zint = &z.intermediate[l];
        let chans: Vec<usize> = (0..zint.len()).filter(|&i| zint[i] * zf != 0.0).collect();
        let gate = take(&n("mlp.gate_proj")).select(&chans, &keep_d);
        put(o("mlp.gate_proj"), gate, false);
        let up = take(&n("mlp.up_proj"))
            .scale_rows(zint)
            .select(&chans, &keep_d);
        put(o("mlp.up_proj"), up, false);
        let f_scale: Vec<f64> = zh.iter().map(|&s| s * zf).collect();
        let down = take(&n("mlp.down_proj"))
            .scale_rows(&f_scale)
            .select(&keep_d, &chans);
        put(o("mlp.down_proj"), down, false);
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let w = take(&n(norm)).scale_cols(zh).select(&[0], &keep_d);
            put(o(norm), w, true);
        }
        for (what, kept, seen) in [
            ("heads", heads.len(), &mut heads_kept),
            ("intermediate channels", chans.len(), &mut inter_kept),
        ] {
            match seen {
                Some(k) if *k != kept => {
                    return Err(bad(format!(
                        "layer {l} keeps {kept} {what}, an earlier layer {k}: not a uniform model"
                    )))
                }
                Some(_) => {}
                None => *seen = Some(kept),
            }
            if kept == 0 {
                return Err(bad(format!("layer {l} keeps no {what}")));
            }
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
    config.num_attention_heads = heads_kept.unwrap_or(0);
    config.num_key_value_heads = config.num_attention_heads;
    config.intermediate_size = inter_kept.unwrap_or(0);
    config.tie_word_embeddings = false;
    Llama::from_source(&config, &mut MapSource { tensors: out }, device)
}
