//! How a step runs, as opposed to what it computes: the workers that share its rows, its place
//! among data-parallel peers, whether blocks are recomputed in the backward pass, and the test
//! hook of the non-finite guard. Both steppers (pruning and training) hold one [`Execution`];
//! none of it changes a run's numbers beyond the order of floating-point sums
//! (docs/algorithm.md §4.4, §13.2).

use crate::grads::Layout;
use crate::peers::Peer;
use crate::zero::{Shards, ZeroStage};

/// Test hook, not an option: `SHEAR_TEST_POISON_STEPS=2,4` makes the loss of steps 2 and 4
/// NaN, `3@1` only on data-parallel peer 1 (so that tests reach the non-finite guard through
/// the binary, docs/algorithm.md §9).
pub const POISON_STEPS: &str = "SHEAR_TEST_POISON_STEPS";

/// How a stepper runs its steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// Workers per step (workers.rs): the rows of every micro-batch split over this many copies
    /// of the model, their gradients summed (0 counts as 1).
    pub workers: usize,
    /// This stepper's place among data-parallel peers (peers.rs).
    pub peer: Peer,
    /// Keep only the blocks' inputs for the backward pass and recompute each block there
    /// (recompute.rs): less memory, one more forward pass.
    pub recompute: bool,
    /// How much of the optimizer state and gradients is sharded over the data-parallel peers
    /// (zero.rs); without peers, nothing is.
    pub zero: ZeroStage,
    /// Steps whose loss is made NaN (tests of the non-finite guard; see [`POISON_STEPS`]).
    pub poisoned: Vec<usize>,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            workers: 1,
            peer: Peer::solo(),
            recompute: false,
            zero: ZeroStage::Off,
            poisoned: Vec::new(),
        }
    }
}

impl Execution {
    /// Workers per step, at least 1.
    pub fn workers(&self) -> usize {
        self.workers.max(1)
    }

    /// The ZeRO stage in effect: none for a peer alone.
    pub fn zero(&self) -> ZeroStage {
        match self.peer.count {
            1 => ZeroStage::Off,
            _ => self.zero,
        }
    }

    /// The shares of the model's parameters (`layout`) over the peers in a step of this
    /// execution (`None`: unsharded, stage 0 or a peer alone; zero.rs).
    pub fn shards(&self, layout: &Layout) -> Option<Shards> {
        match self.zero() {
            ZeroStage::Off => None,
            _ => Some(Shards::new(layout.clone(), self.peer.rank, self.peer.count)),
        }
    }

    /// Whether the loss of `step` is to be made NaN.
    pub fn poisons(&self, step: usize) -> bool {
        self.poisoned.contains(&step)
    }

    /// This execution for data-parallel `peer`, with the steps [`POISON_STEPS`] poisons there.
    pub fn for_peer(&self, peer: Peer) -> Self {
        let mut poisoned = self.poisoned.clone();
        poisoned.extend(poisoned_from_env(peer.rank));
        Execution {
            peer,
            poisoned,
            ..self.clone()
        }
    }
}

/// The steps [`POISON_STEPS`] poisons on the peer of global rank `rank` (an entry that does
/// not parse is ignored: the hook is for tests only).
fn poisoned_from_env(rank: usize) -> Vec<usize> {
    let Ok(v) = std::env::var(POISON_STEPS) else {
        return Vec::new();
    };
    v.split(',')
        .filter_map(|entry| {
            let (step, peer) = match entry.trim().split_once('@') {
                Some((s, p)) => (s, Some(p.parse::<usize>().ok()?)),
                None => (entry.trim(), None),
            };
            let step = step.parse::<usize>().ok()?;
            peer.is_none_or(|p| p == rank).then_some(step)
        })
        .collect()
}
