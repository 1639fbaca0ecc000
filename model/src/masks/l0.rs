//! Hard-concrete (L0) masks, SPEC §2: one learnable `log_alpha` per prunable unit, sampled
//! masks during pruning, expected masks ("scores"), and deterministic masks for evaluation and
//! materialization.
//!
//! Every mask is stored as rows `[rows, n]`: `head` [L, H], `intermediate` [L, m], and the 1-D
//! masks `layer` [1, L] and `hidden` [1, d]. Deterministic masks are computed row by row, which
//! is what makes the pruned architecture uniform across layers (SPEC §2.5).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::Distribution;

/// Constants of the hard-concrete distribution (SPEC §2.1; defaults follow the reference code,
/// SPEC §0.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HardConcrete {
    /// β: 2/3 in the reference code, 0.83 in the paper.
    pub temperature: f64,
    /// γ, lower end of the stretch interval.
    pub limit_l: f64,
    /// ζ, upper end of the stretch interval.
    pub limit_r: f64,
    /// Clamp of the uniform draws and of the CDF.
    pub epsilon: f64,
    /// `log_alpha` is kept in `[-clamp, clamp]` (ln 100).
    pub log_alpha_clamp: f64,
    /// Soft value of a kept unit in a deterministic mask: `sigmoid(log_alpha / β · scale)`.
    pub deterministic_scale: f64,
}

impl Default for HardConcrete {
    fn default() -> Self {
        HardConcrete {
            temperature: 2.0 / 3.0,
            limit_l: -0.1,
            limit_r: 1.1,
            epsilon: 1e-6,
            log_alpha_clamp: 100f64.ln(),
            deterministic_scale: 0.8,
        }
    }
}

impl HardConcrete {
    /// The paper's variant (β = 0.83), selectable by name in a recipe.
    pub fn paper() -> Self {
        HardConcrete {
            temperature: 0.83,
            ..Self::default()
        }
    }

    /// `ℓ0 · β` with `ℓ0 = logit((0 − γ)/(ζ − γ))`: `score = sigmoid(log_alpha − ℓ0·β)` (SPEC §2.4).
    fn score_shift(&self) -> f64 {
        let x = (0.0 - self.limit_l) / (self.limit_r - self.limit_l);
        (x.ln() - (1.0 - x).ln()) * self.temperature
    }

    /// Expected mask `P(z > 0) = 1 − Q(0)` of one entry, on the host (SPEC §2.4).
    pub fn score_of(&self, log_alpha: f64) -> f64 {
        let q0 =
            sigmoid_f64(self.score_shift() - log_alpha).clamp(self.epsilon, 1.0 - self.epsilon);
        1.0 - q0
    }

    /// Soft value of a kept entry in a deterministic mask.
    pub fn soft_of(&self, log_alpha: f64) -> f64 {
        sigmoid_f64(log_alpha / self.temperature * self.deterministic_scale)
    }
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One mask type: a learnable `log_alpha` of shape `[rows, n]`.
#[derive(Module, Debug)]
pub struct Mask<B: Backend> {
    pub log_alpha: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub hc: HardConcrete,
}

impl<B: Backend> Mask<B> {
    /// A mask with `log_alpha ~ Normal(mean, std)` (SPEC §2.2: mean 5, std 0.01).
    pub fn init(
        rows: usize,
        n: usize,
        mean: f64,
        std: f64,
        hc: HardConcrete,
        device: &B::Device,
    ) -> Self {
        Mask {
            log_alpha: Param::from_tensor(Tensor::random(
                [rows, n],
                Distribution::Normal(mean, std),
                device,
            )),
            hc,
        }
    }

    /// A mask with the given `log_alpha` values `[rows, n]`.
    pub fn from_log_alpha(log_alpha: Tensor<B, 2>, hc: HardConcrete) -> Self {
        Mask {
            log_alpha: Param::from_tensor(log_alpha),
            hc,
        }
    }

    pub fn dims(&self) -> [usize; 2] {
        self.log_alpha.val().dims()
    }

    /// Clamps `log_alpha` into `[-ln 100, ln 100]` in place, outside autodiff (the reference
    /// clamps the parameter's data before every use, SPEC §2.2): the gradient is untouched.
    pub fn clamp_log_alpha(self) -> Self {
        let c = self.hc.log_alpha_clamp;
        let hc = self.hc;
        let log_alpha = self.log_alpha.map(|t| {
            let requires_grad = t.is_require_grad();
            // Clamp, then cut the graph: the result is a fresh leaf.
            let clamped = t.clamp(-c, c).detach();
            if requires_grad {
                clamped.require_grad()
            } else {
                clamped
            }
        });
        Mask { log_alpha, hc }
    }

    /// A hard-concrete sample for the uniform draws `u` (same shape), differentiable in
    /// `log_alpha` (SPEC §2.3): `clamp(sigmoid((ln u − ln(1−u) + log_alpha)/β)·(ζ−γ) + γ, 0, 1)`.
    pub fn sample_with(&self, u: Tensor<B, 2>) -> Tensor<B, 2> {
        let hc = &self.hc;
        let logit_u = u.clone().log() - u.neg().add_scalar(1.0).log();
        let s = sigmoid((logit_u + self.log_alpha.val()) / hc.temperature);
        (s * (hc.limit_r - hc.limit_l) + hc.limit_l).clamp(0.0, 1.0)
    }

    /// A hard-concrete sample with fresh draws `u ~ Uniform(ε, 1 − ε)` from the backend RNG.
    pub fn sample(&self) -> Tensor<B, 2> {
        let e = self.hc.epsilon;
        let la = self.log_alpha.val();
        let u = Tensor::random(la.dims(), Distribution::Uniform(e, 1.0 - e), &la.device());
        self.sample_with(u)
    }

    /// A hard-concrete sample whose uniform draws come from `rng` (host side), so that a
    /// pruning run can save and restore its random stream exactly.
    pub fn sample_from(&self, rng: &mut impl rand::Rng) -> Tensor<B, 2> {
        let e = self.hc.epsilon;
        let [r, n] = self.dims();
        let u: Vec<f32> = (0..r * n)
            .map(|_| rng.random_range(e..1.0 - e) as f32)
            .collect();
        let device = self.log_alpha.val().device();
        self.sample_with(Tensor::from_data(TensorData::new(u, [r, n]), &device))
    }

    /// Expected mask `P(z > 0)` per entry `[rows, n]`, differentiable (SPEC §2.4).
    pub fn score(&self) -> Tensor<B, 2> {
        let hc = &self.hc;
        let q0 = sigmoid(self.log_alpha.val().neg().add_scalar(hc.score_shift()))
            .clamp(hc.epsilon, 1.0 - hc.epsilon);
        q0.neg().add_scalar(1.0)
    }

    /// Expected sparsity per row `[rows]`: `1 − Σ score / n` (SPEC §2.4), computed as
    /// `Σ Q(0) / n` (the same value) so that small sparsities keep their relative precision.
    pub fn expected_sparsity(&self) -> Tensor<B, 1> {
        let hc = &self.hc;
        let n = self.dims()[1] as f64;
        let q0 = sigmoid(self.log_alpha.val().neg().add_scalar(hc.score_shift()))
            .clamp(hc.epsilon, 1.0 - hc.epsilon);
        q0.sum_dim(1).squeeze_dim::<1>(1) / n
    }

    /// Deterministic mask (SPEC §2.5, tie rule §0.3), row by row: each row keeps `keep` entries
    /// when given (materialization at the target shape), else `n − round(n − Σ score)` (half to
    /// even, as Python's `round`). Kept entries hold `sigmoid(log_alpha/β · 0.8)`, dropped ones 0.
    pub fn deterministic(&self, keep: Option<usize>) -> Vec<Vec<f64>> {
        let [rows, n] = self.dims();
        let la: Vec<f64> = self
            .log_alpha
            .val()
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 data after convert");
        (0..rows)
            .map(|r| deterministic_row(&la[r * n..(r + 1) * n], keep, &self.hc))
            .collect()
    }
}

/// One row of a deterministic mask (see [`Mask::deterministic`]).
pub fn deterministic_row(log_alpha: &[f64], keep: Option<usize>, hc: &HardConcrete) -> Vec<f64> {
    let n = log_alpha.len();
    let num_zeros = match keep {
        Some(k) => n.saturating_sub(k),
        None => {
            let expected_zeros = n as f64 - log_alpha.iter().map(|&a| hc.score_of(a)).sum::<f64>();
            (round_half_even(expected_zeros).max(0.0) as usize).min(n)
        }
    };
    let soft: Vec<f64> = log_alpha.iter().map(|&a| hc.soft_of(a)).collect();
    // Drop the smallest soft values; on equal values the lower index goes first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| soft[a].total_cmp(&soft[b]).then(a.cmp(&b)));
    let mut out = soft;
    for &i in order.iter().take(num_zeros) {
        out[i] = 0.0;
    }
    out
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// A target shape for pruning: the exact size of every prunable dimension (SPEC §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetShape {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
}

/// Per-mask-type values, in the order layer, hidden, head, intermediate, mlp (`MASK_TYPES`).
/// With separate per-layer masks (`LayerMasks::HeadLayerMlp`), `layer` is the `head_layer` mask
/// and `mlp` is present.
#[derive(Clone, Debug)]
pub struct PerType<T> {
    pub layer: T,
    pub hidden: T,
    pub head: T,
    pub intermediate: T,
    pub mlp: Option<T>,
}

impl<T> PerType<T> {
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> PerType<U> {
        PerType {
            layer: f(self.layer),
            hidden: f(self.hidden),
            head: f(self.head),
            intermediate: f(self.intermediate),
            mlp: self.mlp.map(f),
        }
    }

    /// The values present, with their index in `MASK_TYPES`.
    pub fn entries(self) -> Vec<(usize, T)> {
        let mut v = vec![
            (0, self.layer),
            (1, self.hidden),
            (2, self.head),
            (3, self.intermediate),
        ];
        if let Some(m) = self.mlp {
            v.push((4, m));
        }
        v
    }

    /// The value of type `k` (index in `MASK_TYPES`), if present.
    pub fn get(&self, k: usize) -> Option<&T> {
        match k {
            0 => Some(&self.layer),
            1 => Some(&self.hidden),
            2 => Some(&self.head),
            3 => Some(&self.intermediate),
            4 => self.mlp.as_ref(),
            _ => None,
        }
    }
}

/// Mask type names, in the order of `PerType` and of the Lagrange multipliers.
pub const MASK_TYPES: [&str; 5] = ["layer", "hidden", "head", "intermediate", "mlp"];

/// Which per-layer masks exist (SPEC §1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerMasks {
    /// One `layer` mask per block multiplying both sub-blocks (the released recipe).
    #[default]
    Layer,
    /// Separate `head_layer` (attention sub-block) and `mlp` (FFN sub-block) masks.
    HeadLayerMlp,
}

/// The masks of one pruning run, an `L0Module` in the reference's terms (SPEC §1.1): `head`,
/// `intermediate`, `hidden`, and either one `layer` mask or `head_layer` + `mlp`.
#[derive(Module, Debug)]
pub struct L0Masks<B: Backend> {
    /// `[1, L]`; one scalar per layer multiplies both sub-blocks, or only the attention sub-block
    /// (`head_layer`) when `mlp` is present.
    pub layer: Mask<B>,
    /// `[1, L]`: the FFN sub-block's per-layer mask (`LayerMasks::HeadLayerMlp`).
    pub mlp: Option<Mask<B>>,
    /// `[1, d]`
    pub hidden: Mask<B>,
    /// `[L, H]`
    pub head: Mask<B>,
    /// `[L, m]`
    pub intermediate: Mask<B>,
    /// Source head dimension (parameters per head per hidden dimension: `4 · head_dim`).
    pub head_dim: usize,
}

impl<B: Backend> L0Masks<B> {
    /// Masks for a source of this shape, `log_alpha ~ Normal(5, 0.01)` (SPEC §2.2).
    pub fn new(config: &crate::config::LlamaConfig, hc: HardConcrete, device: &B::Device) -> Self {
        Self::with_layer_masks(config, hc, LayerMasks::Layer, device)
    }

    /// As [`L0Masks::new`], choosing the per-layer masks.
    pub fn with_layer_masks(
        config: &crate::config::LlamaConfig,
        hc: HardConcrete,
        kind: LayerMasks,
        device: &B::Device,
    ) -> Self {
        let (l, d, h, m) = (
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
        );
        L0Masks {
            layer: Mask::init(1, l, 5.0, 0.01, hc, device),
            mlp: (kind == LayerMasks::HeadLayerMlp)
                .then(|| Mask::init(1, l, 5.0, 0.01, hc, device)),
            hidden: Mask::init(1, d, 5.0, 0.01, hc, device),
            head: Mask::init(l, h, 5.0, 0.01, hc, device),
            intermediate: Mask::init(l, m, 5.0, 0.01, hc, device),
            head_dim: config.head_dim,
        }
    }

    /// Clamps every `log_alpha` (done before each use, SPEC §2.2).
    pub fn clamp_log_alpha(self) -> Self {
        L0Masks {
            layer: self.layer.clamp_log_alpha(),
            mlp: self.mlp.map(Mask::clamp_log_alpha),
            hidden: self.hidden.clamp_log_alpha(),
            head: self.head.clamp_log_alpha(),
            intermediate: self.intermediate.clamp_log_alpha(),
            head_dim: self.head_dim,
        }
    }

    /// A fresh sample of every mask, for one forward pass (SPEC §2.3).
    pub fn sample(&self) -> crate::llama::ZMasks<B> {
        self.sample_each(|m| m.sample())
    }

    /// Like [`L0Masks::sample`], with the uniform draws from `rng` (see [`Mask::sample_from`]).
    pub fn sample_from(&self, rng: &mut impl rand::Rng) -> crate::llama::ZMasks<B> {
        self.sample_each(|m| m.sample_from(rng))
    }

    fn sample_each(&self, mut f: impl FnMut(&Mask<B>) -> Tensor<B, 2>) -> crate::llama::ZMasks<B> {
        let flat = |t: Tensor<B, 2>| {
            let n = t.dims()[1];
            t.reshape([n])
        };
        crate::llama::ZMasks {
            hidden: Some(flat(f(&self.hidden))),
            head: Some(f(&self.head)),
            intermediate: Some(f(&self.intermediate)),
            layer: Some(flat(f(&self.layer))),
            mlp: self.mlp.as_ref().map(|m| flat(f(m))),
        }
    }

    /// Deterministic masks: at exactly the `target` counts when given (materialization), else
    /// with the expected number of zeros (evaluation during pruning), SPEC §2.5. With separate
    /// `head_layer` and `mlp` masks and a target, the removed layers are chosen jointly (lowest
    /// product of the two soft values, ties: lower index first) so the result stays a uniform
    /// model in which a layer is kept or removed whole.
    pub fn deterministic(
        &self,
        target: Option<&TargetShape>,
    ) -> crate::materialize::DeterministicMasks {
        let one = |m: &Mask<B>, keep: Option<usize>| m.deterministic(keep).remove(0);
        let (layer, mlp) = match (&self.mlp, target) {
            (Some(mlp), Some(t)) => {
                let n = self.layer.dims()[1];
                // Soft values of every layer (keep all), then drop jointly.
                let a = one(&self.layer, Some(n));
                let b = one(mlp, Some(n));
                let joint: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&i, &j| joint[i].total_cmp(&joint[j]).then(i.cmp(&j)));
                let (mut a, mut b) = (a, b);
                for &i in order.iter().take(n.saturating_sub(t.layers)) {
                    a[i] = 0.0;
                    b[i] = 0.0;
                }
                (a, Some(b))
            }
            (Some(mlp), None) => (one(&self.layer, None), Some(one(mlp, None))),
            (None, t) => (one(&self.layer, t.map(|t| t.layers)), None),
        };
        crate::materialize::DeterministicMasks {
            hidden: one(&self.hidden, target.map(|t| t.hidden)),
            head: self.head.deterministic(target.map(|t| t.heads)),
            intermediate: self
                .intermediate
                .deterministic(target.map(|t| t.intermediate)),
            layer,
            mlp,
        }
    }

    /// Expected sparsity per mask type (SPEC §2.4): `[1]` for layer, hidden and mlp, `[L]` for
    /// head and intermediate.
    pub fn expected_sparsity(&self) -> PerType<Tensor<B, 1>> {
        PerType {
            layer: self.layer.expected_sparsity(),
            hidden: self.hidden.expected_sparsity(),
            head: self.head.expected_sparsity(),
            intermediate: self.intermediate.expected_sparsity(),
            mlp: self.mlp.as_ref().map(Mask::expected_sparsity),
        }
    }

    /// Differentiable expected number of prunable parameters (SPEC §3.2):
    /// `Σ s_D · (4 d_h Σ s_L s_H + 3 Σ s_L s_I)`.
    pub fn expected_params(&self) -> Tensor<B, 1> {
        let l = self.layer.dims()[1];
        let s_layer = self.layer.score().reshape([l, 1]); // [L, 1]
        let s_mlp = match &self.mlp {
            Some(m) => m.score().reshape([l, 1]),
            None => s_layer.clone(),
        };
        let heads = (self.head.score() * s_layer).sum(); // [1]
        let inter = (self.intermediate.score() * s_mlp).sum(); // [1]
        let hidden = self.hidden.score().sum(); // [1]
        hidden * (heads * (4 * self.head_dim) as f64 + inter * 3.0)
    }

    /// Expected shape as real numbers: layers, hidden, heads per layer, intermediate per layer.
    pub fn expected_shape(&self) -> [f64; 4] {
        let v = |t: Tensor<B, 1>| -> f64 {
            t.into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0]
        };
        let rows = |m: &Mask<B>| m.dims()[0] as f64;
        [
            v(self.layer.score().sum()),
            v(self.hidden.score().sum()),
            v(self.head.score().sum()) / rows(&self.head),
            v(self.intermediate.score().sum()) / rows(&self.intermediate),
        ]
    }
}

/// Llama-2-7B's prunable shape: the source the named presets are defined for (SPEC §3.1).
const LLAMA2_7B: TargetShape = TargetShape {
    layers: 32,
    hidden: 4096,
    heads: 32,
    intermediate: 11008,
};

impl TargetShape {
    /// The prunable shape of a config.
    pub fn of(config: &crate::config::LlamaConfig) -> Self {
        TargetShape {
            layers: config.num_hidden_layers,
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
        }
    }

    /// A named target of SPEC §3.1 (`sheared-1.3b`, `sheared-2.7b`, `370m`), defined for a
    /// Llama-2-7B-shaped source.
    pub fn preset(name: &str, source: &crate::config::LlamaConfig) -> Result<Self, String> {
        let t = match name {
            "sheared-1.3b" => (24, 2048, 16, 5504),
            "sheared-2.7b" => (32, 2560, 20, 6912),
            "370m" => (24, 1024, 8, 2816),
            _ => {
                return Err(format!(
                    "unknown preset `{name}` (known: sheared-1.3b, sheared-2.7b, 370m)"
                ))
            }
        };
        if Self::of(source) != LLAMA2_7B {
            return Err(format!(
                "preset `{name}` is defined for a Llama-2-7B-shaped source (32 layers, hidden 4096, \
                 32 heads, intermediate 11008); this source has {}",
                Self::of(source)
            ));
        }
        Ok(TargetShape {
            layers: t.0,
            hidden: t.1,
            heads: t.2,
            intermediate: t.3,
        })
    }

    /// Checks that this target can be reached from `source`; the message says why not.
    pub fn validate(&self, source: &crate::config::LlamaConfig) -> Result<(), String> {
        let s = Self::of(source);
        for (name, t, n) in [
            ("layers", self.layers, s.layers),
            ("hidden", self.hidden, s.hidden),
            ("heads", self.heads, s.heads),
            ("intermediate", self.intermediate, s.intermediate),
        ] {
            if t == 0 {
                return Err(format!(
                    "target {name} is 0; every dimension must keep at least one unit"
                ));
            }
            if t > n {
                return Err(format!("target {name} {t} is bigger than the source's {n}"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "target heads {} do not divide target hidden {} (head_dim {} is kept from the source)",
                self.heads, self.hidden, source.head_dim
            ));
        }
        if source.num_key_value_heads != source.num_attention_heads {
            return Err("pruning grouped-query attention sources is not supported yet".into());
        }
        Ok(())
    }

    /// The config of the pruned model: the source's with the target's dimensions (MHA, untied
    /// embeddings, as materialization writes it).
    pub fn config(&self, source: &crate::config::LlamaConfig) -> crate::config::LlamaConfig {
        let mut c = source.clone();
        c.num_hidden_layers = self.layers;
        c.hidden_size = self.hidden;
        c.num_attention_heads = self.heads;
        c.num_key_value_heads = self.heads;
        c.intermediate_size = self.intermediate;
        c.tie_word_embeddings = false;
        c
    }

    /// Target sparsity per mask type, `1 − target / source` (SPEC §4.1); `mlp` shares the
    /// layer target.
    pub fn sparsity(&self, source: &crate::config::LlamaConfig) -> PerType<f64> {
        let s = Self::of(source);
        let f = |t: usize, n: usize| 1.0 - t as f64 / n as f64;
        PerType {
            mlp: Some(f(self.layers, s.layers)),
            layer: f(self.layers, s.layers),
            hidden: f(self.hidden, s.hidden),
            head: f(self.heads, s.heads),
            intermediate: f(self.intermediate, s.intermediate),
        }
    }
}

impl std::fmt::Display for TargetShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layers {}, hidden {}, heads {}, intermediate {}",
            self.layers, self.hidden, self.heads, self.intermediate
        )
    }
}

impl std::str::FromStr for TargetShape {
    type Err = String;
    /// `layers=3,hidden=48,heads=2,intermediate=96`, optionally with `kv_heads=` (equal to
    /// `heads`: sources and targets are multi-head attention until GQA pruning lands).
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut l, mut d, mut h, mut m, mut kv) = (None, None, None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected key=value"))?;
            let v: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{v}` is not a whole number"))?;
            match k.trim() {
                "layers" => l = Some(v),
                "hidden" => d = Some(v),
                "heads" => h = Some(v),
                "intermediate" => m = Some(v),
                "kv_heads" | "key_value_heads" => kv = Some(v),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (expected layers, hidden, heads, kv_heads, \
                         intermediate)"
                    ))
                }
            }
        }
        let need = |x: Option<usize>, k: &str| x.ok_or_else(|| format!("missing `{k}=`"));
        if let (Some(kv), Some(h)) = (kv, h) {
            if kv != h {
                return Err(format!(
                    "kv_heads {kv} differs from heads {h}: grouped-query targets are not \
                     supported yet (a multi-head source keeps kv_heads = heads)"
                ));
            }
        }
        Ok(TargetShape {
            layers: need(l, "layers")?,
            hidden: need(d, "hidden")?,
            heads: need(h, "heads")?,
            intermediate: need(m, "intermediate")?,
        })
    }
}
