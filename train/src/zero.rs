//! Sharded optimizer state and gradients over data-parallel peers, ZeRO stages 1 and 2
//! (`--zero-stage`, docs/algorithm.md §4.5).
//!
//! Every peer still holds the whole model, but the model's parameters are split into one
//! balanced share per peer ([`Shards`]): consecutive parameters in the module's visiting order
//! (the same on every peer), cut where the running element count crosses `k / peers` of the
//! total, so a share differs from the mean by at most half a tensor on either side. Each peer
//!
//! - keeps AdamW's moments only for its share (stage 1): after the gradients are all-reduced
//!   it drops the others' gradients, so burn's optimizer, which keeps state only for the
//!   parameters it gets a gradient for, never creates theirs;
//! - under stage 2, also reduces the gradients as they are made (each micro-batch's, or under
//!   `--recompute` each block's) and keeps only its share in the running sum, so the step
//!   holds its share of the summed gradients rather than a second full set;
//! - updates its share, then sends the new values to the others ([`gather`]).
//!
//! The global gradient norm for clipping is the sum over peers of each share's squared norm.
//! The masks and multipliers of a pruning run are a few thousand values: every peer keeps and
//! updates them whole, as without sharding.
//!
//! Everything goes through the one collective operation burn-collective implements both within
//! a process and across nodes, the all-reduce: sending a share is an all-reduce to which the
//! other peers contribute zeros (`x + 0 = x` exactly, so every peer gets the owner's bits). It
//! moves twice the bytes of a broadcast; across nodes burn-collective 0.21 has no broadcast
//! (vendor/README.md).

use std::collections::{HashMap, HashSet};

/// The map of burn's optimizer records (`OptimizerAdaptor::Record`).
type RecordMap<X> = hashbrown::HashMap<ParamId, X>;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::grads::Layout;
use crate::peers::{Peer, BUCKET};

/// How much of the training state is split over the data-parallel peers (DeepSpeed's ZeRO
/// stages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ZeroStage {
    /// Stage 0: every peer holds everything (the default, today's arithmetic bit for bit).
    #[default]
    Off,
    /// Stage 1: AdamW's moments are sharded.
    Optimizer,
    /// Stage 2: the moments and the summed gradients are sharded.
    Gradients,
}

impl ZeroStage {
    /// The stage of DeepSpeed's `zero_optimization.stage` (0, 1 or 2).
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(ZeroStage::Off),
            1 => Some(ZeroStage::Optimizer),
            2 => Some(ZeroStage::Gradients),
            _ => None,
        }
    }

    pub fn level(self) -> u8 {
        match self {
            ZeroStage::Off => 0,
            ZeroStage::Optimizer => 1,
            ZeroStage::Gradients => 2,
        }
    }
}

/// Which peer owns each of a model's parameters (see the module documentation).
#[derive(Clone, Debug)]
pub struct Shards {
    pub rank: usize,
    pub count: usize,
    /// The model's layout, and the owner of each of its parameters.
    pub layout: Layout,
    owner: Vec<usize>,
    index: HashMap<ParamId, usize>,
}

impl Shards {
    /// The shares of `count` peers in the parameters of `layout`; this peer is `rank`.
    pub fn new(layout: Layout, rank: usize, count: usize) -> Self {
        let total = layout.numel().max(1) as u128;
        let count = count.max(1);
        let mut before = 0u128;
        let owner = layout
            .params
            .iter()
            .map(|p| {
                // The peer whose share holds the tensor's middle element.
                let middle = before + p.numel as u128 / 2;
                before += p.numel as u128;
                ((middle * count as u128 / total) as usize).min(count - 1)
            })
            .collect();
        let index = layout
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        Shards {
            rank,
            count,
            layout,
            owner,
            index,
        }
    }

    /// The owner of parameter `i` of the layout.
    pub fn owner(&self, i: usize) -> usize {
        self.owner[i]
    }

    /// Whether this peer keeps `id`'s gradient and optimizer state: a parameter of its share,
    /// or one outside the sharded model (masks, multipliers).
    pub fn keeps(&self, id: ParamId) -> bool {
        self.index
            .get(&id)
            .is_none_or(|&i| self.owner[i] == self.rank)
    }

    /// Elements of peer `rank`'s share.
    pub fn share_numel(&self, rank: usize) -> usize {
        self.layout
            .params
            .iter()
            .zip(&self.owner)
            .filter(|(_, &o)| o == rank)
            .map(|(p, _)| p.numel)
            .sum()
    }
}

/// The values of a module's parameters, flattened (inner backend), by id.
struct Values<'a, B: AutodiffBackend> {
    wanted: &'a HashSet<ParamId>,
    out: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Values<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.wanted.contains(&param.id) {
            let v = param.val().inner();
            self.out.insert(param.id, v.flatten(0, D - 1));
        }
    }
}

/// Replaces the values of some parameters (same ids, same `require_grad`).
struct Replace<B: AutodiffBackend> {
    new: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(flat) = self.new.remove(&param.id) else {
            return param;
        };
        let (id, old, mapper) = param.consume();
        let shape: [usize; D] = old.dims();
        let grad = old.is_require_grad();
        drop(old);
        let mut t = Tensor::<B, D>::from_inner(flat.reshape(shape));
        if grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// After each peer updated its share: every parameter of the model gets its owner's new value
/// (one all-reduce per bucket of consecutive parameters, the non-owners contributing zeros).
pub fn gather<B: AutodiffBackend, M: AutodiffModule<B>>(
    mut module: M,
    shards: &Shards,
    peer: &Peer,
) -> Result<M> {
    if peer.count == 1 {
        return Ok(module);
    }
    let params = &shards.layout.params;
    let mut start = 0;
    while start < params.len() {
        let mut end = start;
        let mut len = 0;
        while end < params.len() && (end == start || len + params[end].numel <= BUCKET) {
            len += params[end].numel;
            end += 1;
        }
        let mine: HashSet<ParamId> = (start..end)
            .filter(|&i| shards.owner(i) == shards.rank)
            .map(|i| params[i].id)
            .collect();
        let mut values = Values::<B> {
            wanted: &mine,
            out: HashMap::new(),
        };
        module.visit(&mut values);
        let device = device_of::<B, M>(&module);
        let parts: Vec<_> = (start..end)
            .map(|i| match values.out.remove(&params[i].id) {
                Some(v) => v,
                None => Tensor::zeros([params[i].numel], &device),
            })
            .collect();
        let flat = peer.sum(Tensor::cat(parts, 0))?;
        let mut new = HashMap::new();
        let mut at = 0;
        for p in &params[start..end] {
            new.insert(p.id, flat.clone().narrow(0, at, p.numel));
            at += p.numel;
        }
        drop(flat);
        module = module.map(&mut Replace::<B> { new });
        start = end;
    }
    Ok(module)
}

/// The global gradient norm of a sharded step: `local` is the sum of squares of this peer's
/// share, `replicated` that of what every peer holds whole (the masks and multipliers).
pub fn global_norm<B: Backend>(
    local: f64,
    replicated: f64,
    peer: &Peer,
    device: &B::Device,
) -> Result<f64> {
    Ok((peer.sum_host::<B>(&[local], device)?[0] + replicated).sqrt())
}

/// The device of a module's parameters.
pub fn device_of<B: AutodiffBackend, M: Module<B>>(
    module: &M,
) -> burn::tensor::Device<B::InnerBackend> {
    module
        .devices()
        .into_iter()
        .next()
        .expect("a module with parameters")
}

/// The file of peer `rank`'s share of optimizer state `name` among `count` shards.
pub fn shard_file(name: &str, rank: usize, count: usize) -> String {
    format!("{name}-shard-{rank}-of-{count}")
}

/// The shard files of optimizer state `name` in checkpoint `dir`: their count (the peers of
/// the run that wrote them), or `None` when `dir` has none.
pub fn shard_count(dir: &Path, name: &str) -> Result<Option<usize>> {
    let prefix = format!("{name}-shard-");
    let mut counts = HashSet::new();
    let entries = std::fs::read_dir(dir).map_err(shear_io::IoError::at(dir))?;
    for entry in entries {
        let file = entry.map_err(shear_io::IoError::at(dir))?.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let count = rest
            .strip_suffix(".mpk")
            .and_then(|r| r.split_once("-of-"))
            .and_then(|(_, n)| n.parse::<usize>().ok());
        match count {
            Some(n) => counts.insert(n),
            None => {
                return Err(TrainError::Checkpoint {
                    path: dir.join(file),
                    msg: "not a shard file name (`NAME-shard-R-of-N.mpk`)".into(),
                })
            }
        };
    }
    match counts.len() {
        0 => Ok(None),
        1 => Ok(counts.into_iter().next()),
        _ => Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            msg: format!("shards of `{name}` from runs of different peer counts {counts:?}"),
        }),
    }
}

/// An optimizer record keyed by position in `layout` instead of by parameter id (ids differ
/// between processes; positions do not): what a shard file holds.
pub fn by_position<R>(record: RecordMap<R>, layout: &Layout) -> RecordMap<R> {
    let mut record = record;
    layout
        .params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| record.remove(&p.id).map(|r| (ParamId::from(i as u64), r)))
        .collect()
}

/// The inverse of [`by_position`], keeping only the entries `keep` accepts (by position).
pub fn by_id<R>(
    record: RecordMap<R>,
    layout: &Layout,
    keep: impl Fn(usize) -> bool,
) -> RecordMap<R> {
    let mut record = record;
    layout
        .params
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .filter_map(|(i, p)| record.remove(&ParamId::from(i as u64)).map(|r| (p.id, r)))
        .collect()
}

/// Where the peers of a sharded run put their shard files of the checkpoint of `step` before
/// peer 0 moves them into the checkpoint (a `.step-*.tmp` name: what a kill leaves there is
/// removed on resume like any unfinished checkpoint).
pub fn staging_dir(checkpoints: &Path, step: usize) -> PathBuf {
    checkpoints.join(format!(".step-{step:08}.shards.tmp"))
}

/// Writes this peer's share of an optimizer's state (`record`, keyed by parameter id) into
/// `staging` as `name-shard-R-of-N.mpk`, keyed by position, then waits until every peer has
/// written its own; returns the file names of all shards.
pub fn save_shard<B, X>(
    record: RecordMap<X>,
    shards: &Shards,
    staging: &Path,
    name: &str,
    peer: &Peer,
    device: &burn::tensor::Device<B::InnerBackend>,
) -> Result<Vec<String>>
where
    B: AutodiffBackend,
    RecordMap<X>: burn::record::Record<B>,
{
    std::fs::create_dir_all(staging).map_err(shear_io::IoError::at(staging))?;
    let file = shard_file(name, shards.rank, shards.count);
    crate::checkpoint::save_record::<B, _>(by_position(record, &shards.layout), staging, &file)?;
    // Every peer's file is there before peer 0 moves them into the checkpoint.
    peer.sum::<B::InnerBackend>(Tensor::zeros([1], device))?;
    Ok((0..shards.count)
        .map(|r| format!("{}.mpk", shard_file(name, r, shards.count)))
        .collect())
}

/// Moves the shard files `names` from `staging` into checkpoint directory `dir`, then removes
/// `staging`. A missing file is an error that says where it was expected (the nodes of a
/// sharded run write into one run directory: a file system they share).
pub fn move_shards(staging: &Path, names: &[String], dir: &Path) -> Result<()> {
    for name in names {
        let from = staging.join(name);
        if !from.is_file() {
            return Err(TrainError::Checkpoint {
                path: from,
                msg: "a peer's optimizer shard is missing: the nodes of a sharded run must \
                      write into one run directory (a file system they share)"
                    .into(),
            });
        }
        std::fs::rename(&from, dir.join(name)).map_err(shear_io::IoError::at(&from))?;
    }
    if !names.is_empty() {
        std::fs::remove_dir_all(staging).map_err(shear_io::IoError::at(staging))?;
    }
    Ok(())
}

/// The optimizer state a peer resumes with from checkpoint `dir`, which holds it as shard
/// files `name-shard-R-of-N.mpk`: this peer's share under `shards` (`None`: all of it), keyed
/// by the ids of `layout`. When the checkpoint's peer count differs from this run's, the
/// state is re-sharded (every shard file read, this peer's part kept) and the returned line
/// says so.
pub fn load_shards<B, X>(
    dir: &Path,
    name: &str,
    layout: &Layout,
    shards: Option<&Shards>,
    device: &B::Device,
) -> Result<(RecordMap<X>, Option<String>)>
where
    B: AutodiffBackend,
    RecordMap<X>: burn::record::Record<B>,
{
    let Some(saved) = shard_count(dir, name)? else {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            msg: format!("neither {name}.mpk nor its shards ({name}-shard-R-of-N.mpk)"),
        });
    };
    let count = shards.map_or(1, |s| s.count);
    let keep = |i: usize| shards.is_none_or(|s| s.owner(i) == s.rank);
    let files: Vec<usize> = match shards {
        Some(s) if saved == s.count => vec![s.rank],
        _ => (0..saved).collect(),
    };
    let mut out = RecordMap::new();
    for r in files {
        let record: RecordMap<X> =
            crate::checkpoint::load_record::<B, _>(dir, &shard_file(name, r, saved), device)?;
        out.extend(by_id(record, layout, keep));
    }
    let notice = (saved != count).then(|| {
        format!(
            "re-sharding the optimizer state of {}: saved by {saved} peers, resumed by {count}",
            dir.display()
        )
    });
    Ok((out, notice))
}

/// An optimizer state saved whole (an unsharded checkpoint) reduced to this peer's share; the
/// returned line says that the state is now sharded.
pub fn keep_share<X>(record: RecordMap<X>, shards: &Shards, dir: &Path) -> (RecordMap<X>, String) {
    let mut record = record;
    record.retain(|id, _| shards.keeps(*id));
    let line = format!(
        "sharding the optimizer state of {} (saved by one peer or unsharded) over {} peers",
        dir.display(),
        shards.count
    );
    (record, line)
}
