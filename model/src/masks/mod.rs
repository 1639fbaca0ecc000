//! Hard-concrete (L0) pruning masks (docs/algorithm.md §1–§3): the distribution and one learnable
//! mask ([`hard_concrete`]) and the set of masks of one pruning run with its expected size
//! ([`l0`]). The mask types and which of them a run prunes are [`crate::kinds`], at the crate
//! root because the target shapes (target.rs) need them too and the masks need the target
//! shapes; they are re-exported here under their old paths.

pub mod hard_concrete;
pub mod l0;

pub use crate::kinds::{LayerMasks, MaskSettingError, MaskType, PerType, Prunable, PruneModules};
pub use hard_concrete::{HardConcrete, HardConcreteError, Mask};
pub use l0::{ExpectedShape, L0Masks, MaskNoise};
