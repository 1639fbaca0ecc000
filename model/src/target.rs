//! Target shapes (docs/algorithm.md §3.1): the exact size of every prunable dimension of the
//! pruned model, its named presets, the checks that a target can be reached from a source, and
//! the target sparsity of each mask type (§4.1).
//!
//! Written and read as `layers=24,hidden=2048,heads=16,kv_heads=16,intermediate=5504`
//! (`Display` and `FromStr` round-trip; `kv_heads` may be left out and then equals `heads`).

use std::fmt;
use std::str::FromStr;

use crate::config::LlamaConfig;
use crate::masks::kinds::serde_as_string;
use crate::masks::{MaskType, PerType, Prunable, PruneModules};

/// A target shape for pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetShape {
    pub layers: usize,
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (groups); equal to `heads` for multi-head attention.
    pub kv_heads: usize,
    pub intermediate: usize,
}

serde_as_string!(TargetShape);

/// A named target and the source shape it is defined for.
struct Preset {
    name: &'static str,
    source: TargetShape,
    target: TargetShape,
    about: &'static str,
}

const fn shape(layers: usize, hidden: usize, heads: usize, kv: usize, inter: usize) -> TargetShape {
    TargetShape {
        layers,
        hidden,
        heads,
        kv_heads: kv,
        intermediate: inter,
    }
}

const LLAMA2_7B: TargetShape = shape(32, 4096, 32, 32, 11008);
/// Llama-3-8B and Llama-3.1-8B (head_dim 128).
const LLAMA3_8B: TargetShape = shape(32, 4096, 32, 8, 14336);
/// SmolLM2-360M (head_dim 64, tied).
const SMOLLM2_360M: TargetShape = shape(32, 960, 15, 5, 2560);
/// SmolLM2-135M (head_dim 64, tied).
const SMOLLM2_135M: TargetShape = shape(30, 576, 9, 3, 1536);

const PRESETS: &[Preset] = &[
    Preset {
        name: "sheared-1.3b",
        source: LLAMA2_7B,
        target: shape(24, 2048, 16, 16, 5504),
        about: "Llama-2-7B -> Sheared-LLaMA-1.3B",
    },
    Preset {
        name: "sheared-2.7b",
        source: LLAMA2_7B,
        target: shape(32, 2560, 20, 20, 6912),
        about: "Llama-2-7B -> Sheared-LLaMA-2.7B",
    },
    Preset {
        name: "370m",
        source: LLAMA2_7B,
        target: shape(24, 1024, 8, 8, 2816),
        about: "Llama-2-7B -> the reference's 370M shape",
    },
    Preset {
        name: "llama3.2-3b",
        source: LLAMA3_8B,
        target: shape(28, 3072, 24, 8, 8192),
        about: "Llama-3(.1)-8B -> the Llama-3.2-3B shape (3 query heads per group)",
    },
    Preset {
        name: "llama3.2-1b-like",
        source: LLAMA3_8B,
        target: shape(16, 2048, 16, 8, 8192),
        about: "Llama-3(.1)-8B -> Llama-3.2-1B's layers, width and FFN with head_dim 128 kept \
                (16 heads in 8 groups)",
    },
    Preset {
        name: "smollm2-135m",
        source: SMOLLM2_360M,
        target: SMOLLM2_135M,
        about: "SmolLM2-360M -> the SmolLM2-135M shape",
    },
    Preset {
        name: "smollm2-half",
        source: SMOLLM2_135M,
        target: shape(24, 432, 6, 2, 1152),
        about: "SmolLM2-135M -> about half its parameters (6 heads in 2 groups)",
    },
];

impl TargetShape {
    /// The prunable shape of a config.
    pub fn of(config: &LlamaConfig) -> Self {
        TargetShape {
            layers: config.num_hidden_layers,
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            intermediate: config.intermediate_size,
        }
    }

    /// The names of the presets, with what each is for.
    pub fn presets() -> Vec<(&'static str, &'static str)> {
        PRESETS.iter().map(|p| (p.name, p.about)).collect()
    }

    /// A named target (docs/algorithm.md §3.1), for the source shape it is defined for.
    pub fn preset(name: &str, source: &LlamaConfig) -> Result<Self, String> {
        let p = PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            format!("unknown preset `{name}` (known: {})", names.join(", "))
        })?;
        if Self::of(source) != p.source {
            return Err(format!(
                "preset `{name}` ({}) is defined for a source of shape {}; this source is {}",
                p.about,
                p.source,
                Self::of(source)
            ));
        }
        Ok(p.target)
    }

    /// Checks that this target can be reached from `source` when pruning `modules`; the message
    /// says why not.
    pub fn validate(&self, source: &LlamaConfig, modules: PruneModules) -> Result<(), String> {
        let s = Self::of(source);
        for (name, t, n, p) in [
            ("layers", self.layers, s.layers, Prunable::Layers),
            ("hidden", self.hidden, s.hidden, Prunable::Hidden),
            ("heads", self.heads, s.heads, Prunable::Heads),
            ("kv_heads", self.kv_heads, s.kv_heads, Prunable::Heads),
            (
                "intermediate",
                self.intermediate,
                s.intermediate,
                Prunable::Intermediate,
            ),
        ] {
            if t == 0 {
                return Err(format!(
                    "target {name} is 0; every dimension must keep at least one unit"
                ));
            }
            if t > n {
                return Err(format!("target {name} {t} is bigger than the source's {n}"));
            }
            if !modules.contains(p) && t != n {
                return Err(format!(
                    "target {name} {t} differs from the source's {n}, but `{}` is not pruned \
                     (--prune {modules})",
                    p.name()
                ));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "target heads {} are not a multiple of kv_heads {} (every key/value head serves \
                 the same number of query heads)",
                self.heads, self.kv_heads
            ));
        }
        let (per_group, source_per_group) = (self.heads / self.kv_heads, s.heads / s.kv_heads);
        if per_group > source_per_group {
            return Err(format!(
                "target has {per_group} query heads per key/value head (heads {} / kv_heads {}); \
                 the source has {source_per_group}: pruning cannot add query heads to a group",
                self.heads, self.kv_heads
            ));
        }
        // transformers (5.x) refuses a Llama config whose hidden size is not a multiple of its
        // head count, even with `head_dim` given; such a model could not be loaded back.
        if !self.hidden.is_multiple_of(self.heads) && s.hidden.is_multiple_of(s.heads) {
            let below = self.hidden - self.hidden % self.heads;
            return Err(format!(
                "target hidden {} is not a multiple of heads {}: transformers refuses such a Llama \
                 config (hidden_size % num_attention_heads must be 0); take e.g. hidden {} or {}",
                self.hidden,
                self.heads,
                below,
                below + self.heads
            ));
        }
        Ok(())
    }

    /// The config of the pruned model: the source's with the target's dimensions (a tied
    /// source stays tied, docs/algorithm.md §0.2).
    pub fn config(&self, source: &LlamaConfig) -> LlamaConfig {
        let mut c = source.clone();
        c.num_hidden_layers = self.layers;
        c.hidden_size = self.hidden;
        c.num_attention_heads = self.heads;
        c.num_key_value_heads = self.kv_heads;
        c.intermediate_size = self.intermediate;
        c
    }

    /// Target sparsity per mask type, `1 − target / source` (docs/algorithm.md §4.1): `head`
    /// counts query heads per key/value group when the source groups them (§11), `kv_head` the
    /// groups, and `mlp` shares the layer target.
    pub fn sparsity(&self, source: &LlamaConfig) -> PerType<f64> {
        let s = Self::of(source);
        let f = |t: usize, n: usize| 1.0 - t as f64 / n as f64;
        let grouped = s.kv_heads != s.heads;
        let head = if grouped {
            f(self.heads / self.kv_heads, s.heads / s.kv_heads)
        } else {
            f(self.heads, s.heads)
        };
        [
            (MaskType::Layer, f(self.layers, s.layers)),
            (MaskType::Hidden, f(self.hidden, s.hidden)),
            (MaskType::Head, head),
            (MaskType::KvHead, f(self.kv_heads, s.kv_heads)),
            (MaskType::Intermediate, f(self.intermediate, s.intermediate)),
            (MaskType::Mlp, f(self.layers, s.layers)),
        ]
        .into_iter()
        .collect()
    }
}

impl fmt::Display for TargetShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layers={},hidden={},heads={},kv_heads={},intermediate={}",
            self.layers, self.hidden, self.heads, self.kv_heads, self.intermediate
        )
    }
}

impl FromStr for TargetShape {
    type Err = String;
    /// `layers=3,hidden=48,heads=2,kv_heads=2,intermediate=96`; `kv_heads` defaults to `heads`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut l, mut d, mut h, mut m, mut kv) = (None, None, None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected key=value"))?;
            let v: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{}` is not a whole number", v.trim()))?;
            let slot = match k.trim() {
                "layers" => &mut l,
                "hidden" => &mut d,
                "heads" => &mut h,
                "intermediate" => &mut m,
                "kv_heads" | "key_value_heads" => &mut kv,
                other => {
                    return Err(format!(
                        "unknown key `{other}` (expected layers, hidden, heads, kv_heads, \
                         intermediate)"
                    ))
                }
            };
            if slot.replace(v).is_some() {
                return Err(format!("`{}` is given twice", k.trim()));
            }
        }
        let need = |x: Option<usize>, k: &str| x.ok_or_else(|| format!("missing `{k}=`"));
        let heads = need(h, "heads")?;
        Ok(TargetShape {
            layers: need(l, "layers")?,
            hidden: need(d, "hidden")?,
            heads,
            kv_heads: kv.unwrap_or(heads),
            intermediate: need(m, "intermediate")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip_with_kv_heads() {
        let t = shape(24, 2048, 16, 4, 5504);
        let s = t.to_string();
        assert_eq!(
            s,
            "layers=24,hidden=2048,heads=16,kv_heads=4,intermediate=5504"
        );
        assert_eq!(s.parse::<TargetShape>().unwrap(), t);
        let mha: TargetShape = "layers=3,hidden=48,heads=2,intermediate=96"
            .parse()
            .unwrap();
        assert_eq!(mha.kv_heads, 2);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{s}\""));
        assert_eq!(
            serde_json::from_str::<TargetShape>(&format!("\"{s}\"")).unwrap(),
            t
        );
    }

    #[test]
    fn malformed_targets_name_the_part() {
        for (s, want) in [
            ("layers=3,hidden=48,heads=2", "missing `intermediate=`"),
            (
                "layers=x,hidden=48,heads=2,intermediate=9",
                "`x` is not a whole number",
            ),
            ("layers=3,width=48", "unknown key `width`"),
            ("layers=3,layers=4", "given twice"),
            ("layers", "expected key=value"),
        ] {
            let e = s.parse::<TargetShape>().unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn the_paper_presets_have_the_paper_sparsities() {
        let source = LlamaConfig::new(32000, 4096, 11008, 32, 32, 32);
        let t = TargetShape::preset("sheared-1.3b", &source).unwrap();
        let sp = t.sparsity(&source);
        for (k, want) in [
            (MaskType::Head, 0.5),
            (MaskType::Intermediate, 0.5),
            (MaskType::Hidden, 0.5),
            (MaskType::Layer, 0.25),
        ] {
            assert!((sp.get(k).unwrap() - want).abs() < 1e-12, "{k}");
        }
        let t = TargetShape::preset("sheared-2.7b", &source).unwrap();
        let sp = t.sparsity(&source);
        assert!((sp.get(MaskType::Intermediate).unwrap() - 0.372093).abs() < 1e-6);
        let small = LlamaConfig::new(100, 64, 176, 4, 4, 4);
        assert!(TargetShape::preset("sheared-1.3b", &small)
            .unwrap_err()
            .contains("defined for a source of shape"));
    }

    #[test]
    fn grouped_query_presets_fit_their_sources() {
        let mut llama3 = LlamaConfig::new(128256, 4096, 14336, 32, 32, 8);
        llama3.head_dim = 128;
        for name in ["llama3.2-3b", "llama3.2-1b-like"] {
            let t = TargetShape::preset(name, &llama3).unwrap();
            t.validate(&llama3, PruneModules::default()).unwrap();
        }
        let t = TargetShape::preset("llama3.2-3b", &llama3).unwrap();
        // Llama-3.2-3B's shape: 3.21 B parameters with its own (untied here) head.
        assert_eq!(t.config(&llama3).param_counts().total(), 3_606_752_256);
        let mut smol = LlamaConfig::new(49152, 576, 1536, 30, 9, 3);
        smol.head_dim = 64;
        smol.tie_word_embeddings = true;
        let half = TargetShape::preset("smollm2-half", &smol).unwrap();
        half.validate(&smol, PruneModules::default()).unwrap();
        let (s, h) = (
            smol.param_counts().total() as f64,
            half.config(&smol).param_counts().total() as f64,
        );
        assert!((0.45..0.6).contains(&(h / s)), "{h} / {s}");
        assert!(TargetShape::preset("smollm2-135m", &smol)
            .unwrap_err()
            .contains("SmolLM2-360M"));
    }

    #[test]
    fn unreachable_targets_are_refused_before_any_work() {
        let source = LlamaConfig::new(100, 64, 176, 4, 4, 4);
        let all = PruneModules::default();
        let ok = shape(3, 48, 2, 2, 96);
        assert!(ok.validate(&source, all).is_ok());
        for (t, want) in [
            (shape(5, 48, 2, 2, 96), "layers 5 is bigger"),
            (shape(3, 48, 0, 0, 96), "heads is 0"),
            (shape(3, 48, 4, 2, 96), "query heads per key/value head"),
            (shape(3, 48, 3, 2, 96), "not a multiple of kv_heads"),
        ] {
            let e = t.validate(&source, all).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        let only_heads: PruneModules = "heads".parse().unwrap();
        let e = ok.validate(&source, only_heads).unwrap_err();
        assert!(e.contains("`layers` is not pruned"), "{e}");
        assert!(shape(4, 64, 2, 2, 176)
            .validate(&source, only_heads)
            .is_ok());
    }
}
