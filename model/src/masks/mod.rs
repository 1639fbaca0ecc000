//! Hard-concrete (L0) pruning masks (docs/algorithm.md §1–§3): the distribution and one learnable
//! mask ([`hard_concrete`]), the mask types and which of them a run prunes ([`kinds`]), and the
//! set of masks of one pruning run with its expected size ([`l0`]).

pub mod hard_concrete;
pub mod kinds;
pub mod l0;

pub use hard_concrete::{HardConcrete, Mask};
pub use kinds::{LayerMasks, MaskType, PerType, Prunable, PruneModules};
pub use l0::{ExpectedShape, L0Masks, MaskNoise};
