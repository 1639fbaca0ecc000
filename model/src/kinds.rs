//! The mask types (docs/algorithm.md §1.1), values kept per type, and the choice of what a run
//! prunes: any subset of hidden size, heads, intermediate channels and layers (the reference's
//! `pruning_modules`), with one `layer` mask per block or separate `head_layer` + `mlp` masks.
//!
//! A module of the crate root rather than of `masks`: the target shapes (target.rs) are written
//! in these terms, and the masks (masks/l0.rs) in terms of the target shapes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a mask setting (`--layer-masks`, `--prune`) does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaskSettingError {
    #[error("`{text}` is not a layer-mask kind (expected layer or head-layer-mlp)")]
    UnknownLayerMasks { text: String },
    #[error("`{name}` is not prunable (expected hidden, heads, intermediate, layers)")]
    NotPrunable { name: String },
    #[error("`{name}` is named twice")]
    NamedTwice { name: String },
    #[error("nothing to prune: name at least one of hidden, heads, intermediate, layers")]
    NothingToPrune,
}

/// A kind of hard-concrete mask. The order is that of the Lagrange multipliers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskType {
    /// `[L]`: a whole block (both sub-blocks), or only the attention sub-block (`head_layer`)
    /// when the `mlp` mask exists.
    Layer,
    /// `[d]`: one residual-stream dimension, shared by all layers.
    Hidden,
    /// `[L, H]`: one query head (with its key/value head under multi-head attention).
    Head,
    /// `[L, G]`: one key/value group with all its query heads (grouped-query sources, §11).
    KvHead,
    /// `[L, m]`: one FFN channel.
    Intermediate,
    /// `[L]`: the FFN sub-block (`--layer-masks head-layer-mlp`).
    Mlp,
}

impl MaskType {
    pub const ALL: [MaskType; 6] = [
        MaskType::Layer,
        MaskType::Hidden,
        MaskType::Head,
        MaskType::KvHead,
        MaskType::Intermediate,
        MaskType::Mlp,
    ];

    /// Position in [`MaskType::ALL`] (and in the multiplier vectors).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            MaskType::Layer => "layer",
            MaskType::Hidden => "hidden",
            MaskType::Head => "head",
            MaskType::KvHead => "kv_head",
            MaskType::Intermediate => "intermediate",
            MaskType::Mlp => "mlp",
        }
    }
}

impl fmt::Display for MaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value per mask type present, in [`MaskType`] order; serialises as a map by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerType<T>(BTreeMap<MaskType, T>);

impl<T> PerType<T> {
    pub fn new() -> Self {
        PerType(BTreeMap::new())
    }

    pub fn insert(&mut self, k: MaskType, v: T) {
        self.0.insert(k, v);
    }

    pub fn get(&self, k: MaskType) -> Option<&T> {
        self.0.get(&k)
    }

    pub fn contains(&self, k: MaskType) -> bool {
        self.0.contains_key(&k)
    }

    /// The types present, in order.
    pub fn types(&self) -> Vec<MaskType> {
        self.0.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (MaskType, &T)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> PerType<U> {
        PerType(self.0.into_iter().map(|(k, v)| (k, f(v))).collect())
    }

    /// Only the types for which `keep` holds.
    pub fn filter(self, keep: impl Fn(MaskType) -> bool) -> Self {
        PerType(self.0.into_iter().filter(|(k, _)| keep(*k)).collect())
    }
}

impl<T> FromIterator<(MaskType, T)> for PerType<T> {
    fn from_iter<I: IntoIterator<Item = (MaskType, T)>>(iter: I) -> Self {
        PerType(iter.into_iter().collect())
    }
}

impl<T> IntoIterator for PerType<T> {
    type Item = (MaskType, T);
    type IntoIter = std::collections::btree_map::IntoIter<MaskType, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Which per-layer masks exist (docs/algorithm.md §1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerMasks {
    /// One `layer` mask per block multiplying both sub-blocks (the released recipe).
    #[default]
    Layer,
    /// Separate `head_layer` (attention sub-block) and `mlp` (FFN sub-block) masks.
    HeadLayerMlp,
}

impl fmt::Display for LayerMasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayerMasks::Layer => "layer",
            LayerMasks::HeadLayerMlp => "head-layer-mlp",
        })
    }
}

impl FromStr for LayerMasks {
    type Err = MaskSettingError;
    fn from_str(s: &str) -> Result<Self, MaskSettingError> {
        match s.trim() {
            "layer" => Ok(LayerMasks::Layer),
            "head-layer-mlp" => Ok(LayerMasks::HeadLayerMlp),
            other => Err(MaskSettingError::UnknownLayerMasks {
                text: other.to_string(),
            }),
        }
    }
}

/// A dimension that pruning can shrink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prunable {
    Hidden,
    Heads,
    Intermediate,
    Layers,
}

impl Prunable {
    pub const ALL: [Prunable; 4] = [
        Prunable::Hidden,
        Prunable::Heads,
        Prunable::Intermediate,
        Prunable::Layers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Prunable::Hidden => "hidden",
            Prunable::Heads => "heads",
            Prunable::Intermediate => "intermediate",
            Prunable::Layers => "layers",
        }
    }
}

/// The dimensions a run prunes (`--prune hidden,heads,intermediate,layers`; all by default). A
/// dimension left out has no mask at all and keeps its source size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneModules {
    pub hidden: bool,
    pub heads: bool,
    pub intermediate: bool,
    pub layers: bool,
}

impl Default for PruneModules {
    fn default() -> Self {
        PruneModules {
            hidden: true,
            heads: true,
            intermediate: true,
            layers: true,
        }
    }
}

impl PruneModules {
    pub fn contains(&self, p: Prunable) -> bool {
        match p {
            Prunable::Hidden => self.hidden,
            Prunable::Heads => self.heads,
            Prunable::Intermediate => self.intermediate,
            Prunable::Layers => self.layers,
        }
    }
}

impl fmt::Display for PruneModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Prunable::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .map(Prunable::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for PruneModules {
    type Err = MaskSettingError;
    /// `hidden,heads,intermediate,layers` or any non-empty subset, in any order.
    fn from_str(s: &str) -> Result<Self, MaskSettingError> {
        let mut m = PruneModules {
            hidden: false,
            heads: false,
            intermediate: false,
            layers: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let slot = match part {
                "hidden" => &mut m.hidden,
                "heads" | "head" => &mut m.heads,
                "intermediate" => &mut m.intermediate,
                "layers" | "layer" => &mut m.layers,
                other => {
                    return Err(MaskSettingError::NotPrunable {
                        name: other.to_string(),
                    })
                }
            };
            if *slot {
                return Err(MaskSettingError::NamedTwice {
                    name: part.to_string(),
                });
            }
            *slot = true;
        }
        if m == (PruneModules {
            hidden: false,
            heads: false,
            intermediate: false,
            layers: false,
        }) {
            return Err(MaskSettingError::NothingToPrune);
        }
        Ok(m)
    }
}

macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_string;

serde_as_string!(PruneModules);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_modules_round_trip_and_refuse_nonsense() {
        for s in [
            "hidden,heads,intermediate,layers",
            "heads,layers",
            "intermediate",
        ] {
            let m: PruneModules = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
        }
        let m: PruneModules = "layers, heads".parse().unwrap();
        assert_eq!(m.to_string(), "heads,layers");
        assert_eq!(
            "".parse::<PruneModules>(),
            Err(MaskSettingError::NothingToPrune)
        );
        assert_eq!(
            "heads,heads"
                .parse::<PruneModules>()
                .unwrap_err()
                .to_string(),
            "`heads` is named twice"
        );
        let e = "width".parse::<PruneModules>().unwrap_err().to_string();
        assert_eq!(
            e,
            "`width` is not prunable (expected hidden, heads, intermediate, layers)"
        );
        assert_eq!(
            "mlp".parse::<LayerMasks>().unwrap_err().to_string(),
            "`mlp` is not a layer-mask kind (expected layer or head-layer-mlp)"
        );
    }

    #[test]
    fn per_type_serialises_by_name_in_mask_order() {
        let p: PerType<f64> = [(MaskType::Head, 0.5), (MaskType::Layer, 0.25)]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"layer":0.25,"head":0.5}"#
        );
        assert_eq!(p.types(), vec![MaskType::Layer, MaskType::Head]);
    }
}
