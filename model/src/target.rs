//! Target shapes (docs/algorithm.md §3.1): the exact size of every prunable dimension of the
//! pruned model, its named presets, the checks that a target can be reached from a source, and
//! the target sparsity of each mask type (§4.1).
//!
//! Written and read as `layers=24,hidden=2048,heads=16,kv_heads=16,intermediate=5504`
//! (`Display` and `FromStr` round-trip; `kv_heads` may be left out and then equals `heads`). A
//! [`TargetSpec`] is what a user gives: such a shape or the name of a [`Preset`], resolved
//! against the source.
//!
//! Every refusal is a [`TargetError`] whose message names the key, preset or dimension at
//! fault.

use std::fmt;
use std::str::FromStr;

use crate::config::LlamaConfig;
use crate::kinds::{serde_as_string, MaskType, PerType, Prunable, PruneModules};

/// Why a target shape or preset cannot be parsed or does not fit the source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown preset `{name}` (known: {})", preset_names())]
    UnknownPreset { name: String },
    #[error(
        "preset `{preset}` ({}) is defined for a source of shape {expected}; this source is \
         {found}",
        .preset.about()
    )]
    PresetForOtherSource {
        preset: Preset,
        /// The source shape the preset is defined for.
        expected: TargetShape,
        /// The shape of the source at hand.
        found: TargetShape,
    },
    #[error(
        "`{text}` is neither a shape (layers=..,hidden=..,heads=..,kv_heads=..,intermediate=..) \
         nor a preset ({})",
        preset_names()
    )]
    NeitherShapeNorPreset { text: String },
    #[error("`{part}`: expected key=value")]
    NotKeyValue { part: String },
    #[error("`{part}`: `{value}` is not a whole number")]
    NotWholeNumber { part: String, value: String },
    #[error("unknown key `{key}` (expected layers, hidden, heads, kv_heads, intermediate)")]
    UnknownKey { key: String },
    #[error("`{key}` is given twice")]
    KeyGivenTwice { key: String },
    #[error("missing `{key}=`")]
    MissingKey { key: &'static str },
    #[error("target {dim} is 0; every dimension must keep at least one unit")]
    ZeroDimension { dim: &'static str },
    #[error("target {dim} {target} is bigger than the source's {of_source}")]
    BiggerThanSource {
        dim: &'static str,
        target: usize,
        of_source: usize,
    },
    #[error(
        "target {dim} {target} differs from the source's {of_source}, but `{}` is not pruned \
         (--prune {modules})",
        .prunable.name()
    )]
    NotPruned {
        dim: &'static str,
        target: usize,
        of_source: usize,
        prunable: Prunable,
        modules: PruneModules,
    },
    #[error(
        "target heads {heads} are not a multiple of kv_heads {kv_heads} (every key/value head \
         serves the same number of query heads)"
    )]
    HeadsNotInGroups { heads: usize, kv_heads: usize },
    #[error(
        "target has {per_group} query heads per key/value head (heads {heads} / kv_heads \
         {kv_heads}); the source has {source_per_group}: pruning cannot add query heads to a \
         group"
    )]
    GroupGrows {
        per_group: usize,
        source_per_group: usize,
        heads: usize,
        kv_heads: usize,
    },
    #[error(
        "target hidden {hidden} is not a multiple of heads {heads}: transformers refuses such a \
         Llama config (hidden_size % num_attention_heads must be 0); take e.g. hidden {below} \
         or {above}"
    )]
    HiddenNotPerHead {
        hidden: usize,
        heads: usize,
        /// The nearest multiple of `heads` below `hidden`.
        below: usize,
        /// The nearest one above.
        above: usize,
    },
}

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

/// A named target shape (docs/algorithm.md §3.1), defined for one source shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// `sheared-1.3b`
    Sheared1_3b,
    /// `sheared-2.7b`
    Sheared2_7b,
    /// `370m`
    M370,
    /// `llama3.2-3b`
    Llama3_2_3b,
    /// `llama3.2-1b-like`
    Llama3_2_1bLike,
    /// `smollm2-135m`
    Smollm2_135m,
    /// `smollm2-half`
    Smollm2Half,
}

/// A preset's name, shapes and description: one row of [`PRESETS`].
struct PresetDef {
    preset: Preset,
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

static PRESETS: [PresetDef; 7] = [
    PresetDef {
        preset: Preset::Sheared1_3b,
        name: "sheared-1.3b",
        source: LLAMA2_7B,
        target: shape(24, 2048, 16, 16, 5504),
        about: "Llama-2-7B -> Sheared-LLaMA-1.3B",
    },
    PresetDef {
        preset: Preset::Sheared2_7b,
        name: "sheared-2.7b",
        source: LLAMA2_7B,
        target: shape(32, 2560, 20, 20, 6912),
        about: "Llama-2-7B -> Sheared-LLaMA-2.7B",
    },
    PresetDef {
        preset: Preset::M370,
        name: "370m",
        source: LLAMA2_7B,
        target: shape(24, 1024, 8, 8, 2816),
        about: "Llama-2-7B -> the reference's 370M shape",
    },
    PresetDef {
        preset: Preset::Llama3_2_3b,
        name: "llama3.2-3b",
        source: LLAMA3_8B,
        target: shape(28, 3072, 24, 8, 8192),
        about: "Llama-3(.1)-8B -> the Llama-3.2-3B shape (3 query heads per group)",
    },
    PresetDef {
        preset: Preset::Llama3_2_1bLike,
        name: "llama3.2-1b-like",
        source: LLAMA3_8B,
        target: shape(16, 2048, 16, 8, 8192),
        about: "Llama-3(.1)-8B -> Llama-3.2-1B's layers, width and FFN with head_dim 128 kept \
                (16 heads in 8 groups)",
    },
    PresetDef {
        preset: Preset::Smollm2_135m,
        name: "smollm2-135m",
        source: SMOLLM2_360M,
        target: SMOLLM2_135M,
        about: "SmolLM2-360M -> the SmolLM2-135M shape",
    },
    PresetDef {
        preset: Preset::Smollm2Half,
        name: "smollm2-half",
        source: SMOLLM2_135M,
        target: shape(24, 432, 6, 2, 1152),
        about: "SmolLM2-135M -> about half its parameters (6 heads in 2 groups)",
    },
];

// `Preset::def` indexes `PRESETS` by the variant: row i must be variant i.
const _: () = {
    let mut i = 0;
    while i < PRESETS.len() {
        assert!(
            PRESETS[i].preset as usize == i,
            "PRESETS is in the order of Preset's variants"
        );
        i += 1;
    }
};

/// The preset names, comma-separated (for messages).
fn preset_names() -> String {
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    names.join(", ")
}

impl Preset {
    /// Every preset, in the order of the table.
    pub fn all() -> impl ExactSizeIterator<Item = Preset> + Clone {
        PRESETS.iter().map(|p| p.preset)
    }

    fn def(self) -> &'static PresetDef {
        &PRESETS[self as usize]
    }

    /// The name it is written as (`sheared-1.3b`).
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// What it is for: the source and the shape it prunes to.
    pub fn about(self) -> &'static str {
        self.def().about
    }

    /// The source shape it is defined for.
    pub fn source(self) -> TargetShape {
        self.def().source
    }

    /// The target shape.
    pub fn target(self) -> TargetShape {
        self.def().target
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        Preset::all()
            .find(|p| p.name() == s)
            .ok_or_else(|| TargetError::UnknownPreset {
                name: s.to_string(),
            })
    }
}

/// What a user names as the target: a shape, or a preset to resolve against the source.
/// Written as the shape (`layers=..,hidden=..`) or the preset's name; serialised as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Shape(TargetShape),
    Preset(Preset),
}

serde_as_string!(TargetSpec);

impl TargetSpec {
    /// The target shape: a shape as it is, a preset's for `source` (refused when `source` is not
    /// the shape the preset is defined for). Whether the shape can be reached from `source` is
    /// [`TargetShape::validate`]'s to say.
    pub fn resolve(&self, source: &LlamaConfig) -> Result<TargetShape, TargetError> {
        match self {
            TargetSpec::Shape(t) => Ok(*t),
            TargetSpec::Preset(p) => TargetShape::preset(*p, source),
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Shape(t) => t.fmt(f),
            TargetSpec::Preset(p) => p.fmt(f),
        }
    }
}

impl FromStr for TargetSpec {
    type Err = TargetError;
    /// A preset's name, or a shape; text with a `=` is taken for a shape, so a malformed one is
    /// refused with the reason [`TargetShape`]'s parser gives.
    fn from_str(s: &str) -> Result<Self, TargetError> {
        if let Ok(p) = s.parse::<Preset>() {
            return Ok(TargetSpec::Preset(p));
        }
        if s.contains('=') {
            return s.parse().map(TargetSpec::Shape);
        }
        Err(TargetError::NeitherShapeNorPreset {
            text: s.to_string(),
        })
    }
}

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

    /// A named target (docs/algorithm.md §3.1), for the source shape it is defined for.
    pub fn preset(p: Preset, source: &LlamaConfig) -> Result<Self, TargetError> {
        let found = Self::of(source);
        if found != p.source() {
            return Err(TargetError::PresetForOtherSource {
                preset: p,
                expected: p.source(),
                found,
            });
        }
        Ok(p.target())
    }

    /// Checks that this target can be reached from `source` when pruning `modules`; the error
    /// says why not.
    pub fn validate(&self, source: &LlamaConfig, modules: PruneModules) -> Result<(), TargetError> {
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
                return Err(TargetError::ZeroDimension { dim: name });
            }
            if t > n {
                return Err(TargetError::BiggerThanSource {
                    dim: name,
                    target: t,
                    of_source: n,
                });
            }
            if !modules.contains(p) && t != n {
                return Err(TargetError::NotPruned {
                    dim: name,
                    target: t,
                    of_source: n,
                    prunable: p,
                    modules,
                });
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(TargetError::HeadsNotInGroups {
                heads: self.heads,
                kv_heads: self.kv_heads,
            });
        }
        let (per_group, source_per_group) = (self.heads / self.kv_heads, s.heads / s.kv_heads);
        if per_group > source_per_group {
            return Err(TargetError::GroupGrows {
                per_group,
                source_per_group,
                heads: self.heads,
                kv_heads: self.kv_heads,
            });
        }
        // transformers (5.x) refuses a Llama config whose hidden size is not a multiple of its
        // head count, even with `head_dim` given; such a model could not be loaded back.
        if !self.hidden.is_multiple_of(self.heads) && s.hidden.is_multiple_of(s.heads) {
            let below = self.hidden - self.hidden % self.heads;
            return Err(TargetError::HiddenNotPerHead {
                hidden: self.hidden,
                heads: self.heads,
                below,
                above: below + self.heads,
            });
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
    type Err = TargetError;
    /// `layers=3,hidden=48,heads=2,kv_heads=2,intermediate=96`; `kv_heads` defaults to `heads`.
    fn from_str(s: &str) -> Result<Self, TargetError> {
        let (mut l, mut d, mut h, mut m, mut kv) = (None, None, None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| TargetError::NotKeyValue {
                    part: part.to_string(),
                })?;
            let v: usize = v.trim().parse().map_err(|_| TargetError::NotWholeNumber {
                part: part.to_string(),
                value: v.trim().to_string(),
            })?;
            let slot = match k.trim() {
                "layers" => &mut l,
                "hidden" => &mut d,
                "heads" => &mut h,
                "intermediate" => &mut m,
                "kv_heads" | "key_value_heads" => &mut kv,
                other => {
                    return Err(TargetError::UnknownKey {
                        key: other.to_string(),
                    })
                }
            };
            if slot.replace(v).is_some() {
                return Err(TargetError::KeyGivenTwice {
                    key: k.trim().to_string(),
                });
            }
        }
        let need = |x: Option<usize>, key: &'static str| x.ok_or(TargetError::MissingKey { key });
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
            let e = s.parse::<TargetShape>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn the_paper_presets_have_the_paper_sparsities() {
        let source = LlamaConfig::new(32000, 4096, 11008, 32, 32, 32);
        let t = TargetShape::preset(Preset::Sheared1_3b, &source).unwrap();
        let sp = t.sparsity(&source);
        for (k, want) in [
            (MaskType::Head, 0.5),
            (MaskType::Intermediate, 0.5),
            (MaskType::Hidden, 0.5),
            (MaskType::Layer, 0.25),
        ] {
            assert!((sp.get(k).unwrap() - want).abs() < 1e-12, "{k}");
        }
        let t = TargetShape::preset(Preset::Sheared2_7b, &source).unwrap();
        let sp = t.sparsity(&source);
        assert!((sp.get(MaskType::Intermediate).unwrap() - 0.372093).abs() < 1e-6);
        let small = LlamaConfig::new(100, 64, 176, 4, 4, 4);
        assert!(TargetShape::preset(Preset::Sheared1_3b, &small)
            .unwrap_err()
            .to_string()
            .contains("defined for a source of shape"));
    }

    #[test]
    fn grouped_query_presets_fit_their_sources() {
        let mut llama3 = LlamaConfig::new(128256, 4096, 14336, 32, 32, 8);
        llama3.head_dim = 128;
        for p in [Preset::Llama3_2_3b, Preset::Llama3_2_1bLike] {
            let t = TargetShape::preset(p, &llama3).unwrap();
            t.validate(&llama3, PruneModules::default()).unwrap();
        }
        let t = TargetShape::preset(Preset::Llama3_2_3b, &llama3).unwrap();
        // Llama-3.2-3B's shape: 3.21 B parameters with its own (untied here) head.
        assert_eq!(t.config(&llama3).param_counts().total(), 3_606_752_256);
        let mut smol = LlamaConfig::new(49152, 576, 1536, 30, 9, 3);
        smol.head_dim = 64;
        smol.tie_word_embeddings = true;
        let half = TargetShape::preset(Preset::Smollm2Half, &smol).unwrap();
        half.validate(&smol, PruneModules::default()).unwrap();
        let (s, h) = (
            smol.param_counts().total() as f64,
            half.config(&smol).param_counts().total() as f64,
        );
        assert!((0.45..0.6).contains(&(h / s)), "{h} / {s}");
        assert!(TargetShape::preset(Preset::Smollm2_135m, &smol)
            .unwrap_err()
            .to_string()
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
            let e = t.validate(&source, all).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
        let only_heads: PruneModules = "heads".parse().unwrap();
        let e = ok.validate(&source, only_heads).unwrap_err().to_string();
        assert_eq!(
            e,
            "target layers 3 differs from the source's 4, but `layers` is not pruned (--prune heads)"
        );
        assert!(shape(4, 64, 2, 2, 176)
            .validate(&source, only_heads)
            .is_ok());
    }

    #[test]
    fn parse_errors_suit_clap_value_parsers() {
        // clap's `value_parser!` takes a `FromStr` whose error is all of these.
        fn usable<T: FromStr<Err = E>, E: std::error::Error + Send + Sync + 'static>() {}
        usable::<TargetShape, _>();
        usable::<TargetSpec, _>();
        usable::<Preset, _>();
        usable::<PruneModules, _>();
        usable::<crate::kinds::LayerMasks, _>();
        usable::<crate::precision::Compute, _>();
    }

    #[test]
    fn messages_read_as_before() {
        let source = LlamaConfig::new(100, 64, 176, 4, 4, 4);
        let all = PruneModules::default();
        for (t, want) in [
            (
                shape(3, 48, 0, 0, 96),
                "target heads is 0; every dimension must keep at least one unit",
            ),
            (
                shape(5, 48, 2, 2, 96),
                "target layers 5 is bigger than the source's 4",
            ),
            (
                shape(3, 48, 3, 2, 96),
                "target heads 3 are not a multiple of kv_heads 2 (every key/value head serves \
                 the same number of query heads)",
            ),
            (
                shape(3, 48, 4, 2, 96),
                "target has 2 query heads per key/value head (heads 4 / kv_heads 2); the source \
                 has 1: pruning cannot add query heads to a group",
            ),
            (
                shape(3, 50, 4, 4, 96),
                "target hidden 50 is not a multiple of heads 4: transformers refuses such a Llama \
                 config (hidden_size % num_attention_heads must be 0); take e.g. hidden 48 or 52",
            ),
        ] {
            assert_eq!(t.validate(&source, all).unwrap_err().to_string(), want);
        }
        assert_eq!(
            "layers=1,x".parse::<TargetShape>().unwrap_err().to_string(),
            "`x`: expected key=value"
        );
        assert_eq!(
            "layers=-1".parse::<TargetShape>().unwrap_err(),
            TargetError::NotWholeNumber {
                part: "layers=-1".into(),
                value: "-1".into()
            }
        );
        assert_eq!(
            "bigger".parse::<Preset>().unwrap_err().to_string(),
            "unknown preset `bigger` (known: sheared-1.3b, sheared-2.7b, 370m, llama3.2-3b, \
             llama3.2-1b-like, smollm2-135m, smollm2-half)"
        );
    }

    #[test]
    fn presets_and_specs_round_trip_through_text_and_json() {
        assert_eq!(Preset::all().len(), 7);
        for p in Preset::all() {
            let s = p.to_string();
            assert_eq!(s.parse::<Preset>().unwrap(), p);
            assert!(!p.about().is_empty());
            let spec = TargetSpec::Preset(p);
            assert_eq!(spec.to_string(), s);
            assert_eq!(s.parse::<TargetSpec>().unwrap(), spec);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), spec);
        }
        assert_eq!(
            Preset::M370.to_string().parse::<TargetSpec>().unwrap(),
            TargetSpec::Preset(Preset::M370)
        );
        let spec = TargetSpec::Shape(shape(24, 2048, 16, 4, 5504));
        let s = spec.to_string();
        assert_eq!(
            s,
            "layers=24,hidden=2048,heads=16,kv_heads=4,intermediate=5504"
        );
        assert_eq!(s.parse::<TargetSpec>().unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), spec);
        // kv_heads may be left out in a spec as in a shape.
        assert_eq!(
            "layers=3,hidden=48,heads=2,intermediate=96"
                .parse::<TargetSpec>()
                .unwrap(),
            TargetSpec::Shape(shape(3, 48, 2, 2, 96))
        );
    }

    #[test]
    fn a_spec_that_is_neither_says_what_it_could_be() {
        let e = "sheared-13b".parse::<TargetSpec>().unwrap_err();
        assert_eq!(
            e,
            TargetError::NeitherShapeNorPreset {
                text: "sheared-13b".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "`sheared-13b` is neither a shape \
             (layers=..,hidden=..,heads=..,kv_heads=..,intermediate=..) nor a preset \
             (sheared-1.3b, sheared-2.7b, 370m, llama3.2-3b, llama3.2-1b-like, smollm2-135m, \
             smollm2-half)"
        );
        // With a `=` it is a shape, and the shape's own parser says what is wrong with it.
        let e = "layers=3,hidden=48,heads=2"
            .parse::<TargetSpec>()
            .unwrap_err();
        assert_eq!(e.to_string(), "missing `intermediate=`");
        let e = serde_json::from_str::<TargetSpec>("\"tiny\"").unwrap_err();
        assert!(e.to_string().contains("`tiny` is neither a shape"), "{e}");
    }

    #[test]
    fn specs_resolve_against_the_source() {
        let llama2_7b = LlamaConfig::new(32000, 4096, 11008, 32, 32, 32);
        let spec: TargetSpec = "sheared-1.3b".parse().unwrap();
        assert_eq!(
            spec.resolve(&llama2_7b).unwrap(),
            shape(24, 2048, 16, 16, 5504)
        );
        let small = LlamaConfig::new(100, 64, 176, 4, 4, 4);
        let e = spec.resolve(&small).unwrap_err();
        assert_eq!(
            e,
            TargetError::PresetForOtherSource {
                preset: Preset::Sheared1_3b,
                expected: shape(32, 4096, 32, 32, 11008),
                found: shape(4, 64, 4, 4, 176),
            }
        );
        assert_eq!(
            e.to_string(),
            "preset `sheared-1.3b` (Llama-2-7B -> Sheared-LLaMA-1.3B) is defined for a source of \
             shape layers=32,hidden=4096,heads=32,kv_heads=32,intermediate=11008; this source is \
             layers=4,hidden=64,heads=4,kv_heads=4,intermediate=176"
        );
        // A shape is returned as it is, even one the source cannot reach (validate says so).
        let big = TargetSpec::Shape(shape(8, 64, 4, 4, 176));
        assert_eq!(big.resolve(&small).unwrap(), shape(8, 64, 4, 4, 176));
        assert!(shape(8, 64, 4, 4, 176)
            .validate(&small, PruneModules::default())
            .is_err());
    }
}
