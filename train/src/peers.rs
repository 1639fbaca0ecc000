//! Data parallelism over devices and machines (docs/algorithm.md §4.4, "Peers"), on
//! burn-collective: one peer per device, every peer holding the whole model, its optimizers and
//! its own share of every batch's rows. After each peer's forward and backward passes the
//! gradients (model, masks, multipliers) and the step's figures are all-reduced, so every peer
//! clips and steps with the same numbers and keeps identical weights, masks and multipliers.
//!
//! The collective operations are burn-collective's (its local server for the peers of one
//! process, its global layer — a coordinator and one process per node — across machines). What
//! is written here is only which tensors go through them, in which order:
//!
//! - A peer's share of a global batch of `rows` rows is [`Peer::rows`]. Each peer's gradients
//!   are of its rows' mean loss, so they are weighted by the share before the sum: the sum is the
//!   mean over the global batch, whatever the shares.
//! - Gradients are packed in the module's visiting order (the same on every peer, unlike burn's
//!   random parameter ids, which differ between processes) into buckets of at most
//!   [`BUCKET`] values, one all-reduce per bucket.
//! - A failed peer resets the local collective ([`abort`]), so the others return an error
//!   instead of waiting for it forever.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use burn::module::{AutodiffModule, ParamId};

use crate::grads::{grad_shape, register_flat, remove_flat, Layout, LayoutParam};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorPrimitive;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Values per all-reduce (1 GiB of f32): fewer, larger transfers than one per parameter, and no
/// copy of all gradients at once on a large model.
pub const BUCKET: usize = 1 << 28;

/// How long a peer waits for the others to join before giving up.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a run's peers are: `devices` in this process, on each of the nodes when there are
/// several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Peers (devices) in this process.
    pub devices: usize,
    /// Distinct devices of the backend's kind on this machine: local peer `k` runs on device
    /// `k mod physical` (several peers share a device when there are fewer; 1 on the CPU).
    pub physical: usize,
    /// The machines of a multi-node run.
    pub nodes: Option<Nodes>,
}

/// A multi-node run: this process is node `rank` of `count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    pub count: usize,
    pub rank: usize,
    /// `HOST:PORT` of the coordinator (node 0 starts it on PORT).
    pub coordinator: String,
    /// `HOST:PORT` where this node's data service listens for the others.
    pub address: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            devices: 1,
            physical: 1,
            nodes: None,
        }
    }
}

impl Topology {
    /// Peers over all nodes.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes.as_ref().map_or(1, |n| n.count)
    }

    /// The devices of the local peers: the index of `first` plus `k mod physical` for local
    /// peer `k`, of `first`'s kind.
    pub fn local_devices<D: burn::tensor::backend::DeviceOps>(&self, first: &D) -> Vec<D> {
        let id = first.to_id();
        (0..self.devices)
            .map(|k| match k % self.physical.max(1) {
                0 => first.clone(),
                i => D::from_id(burn::tensor::backend::DeviceId {
                    type_id: id.type_id,
                    index_id: id.index_id + i as u16,
                }),
            })
            .collect()
    }

    /// Whether this process writes the run's files: not a node other than 0 of a multi-node
    /// run (node 0's peer 0 writes, the others keep the same numbers).
    pub fn writes(&self) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.rank == 0)
    }

    /// The global rank of local peer `local`.
    pub fn rank_of(&self, local: usize) -> usize {
        self.nodes.as_ref().map_or(0, |n| n.rank) * self.devices + local
    }

    /// Refuses a topology that cannot run; the message names the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if self.devices == 0 {
            return bad("devices 0: must be positive".into());
        }
        if let Some(n) = &self.nodes {
            if n.count == 0 || n.rank >= n.count {
                return bad(format!(
                    "node rank {} of {} nodes: the rank must be below the number of nodes",
                    n.rank, n.count
                ));
            }
            for (what, addr) in [
                ("coordinator", &n.coordinator),
                ("node address", &n.address),
            ] {
                host_port(addr).map_err(|e| TrainError::Invalid(format!("{what} {addr}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// `HOST:PORT` split, the port checked.
pub fn host_port(addr: &str) -> Result<(&str, u16)> {
    let bad = |m: String| TrainError::Invalid(m);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT".into()))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(format!("`{port}` is not a port number")))?;
    if host.is_empty() {
        return Err(bad("expected HOST:PORT".into()));
    }
    Ok((host, port))
}

/// One peer of a run: its global rank among `count` peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub rank: usize,
    pub count: usize,
    /// Its id in this process's collective.
    id: u32,
    /// Rows of a global micro-batch (0: unknown, for a solo peer).
    batch: usize,
}

impl Default for Peer {
    fn default() -> Self {
        Peer::solo()
    }
}

/// Serialises the multi-peer runs of one process (a library user's threads, tests run in
/// parallel): burn-collective keeps one local collective per backend type.
static SESSION: Mutex<()> = Mutex::new(());

/// Holds this process's collective for one multi-peer run, cleared of any earlier run's peers.
pub fn session<B: Backend>() -> MutexGuard<'static, ()> {
    let guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    burn_collective::reset_collective::<B>();
    guard
}

/// Wakes the peers waiting in a collective operation with an error (after a peer failed).
pub fn abort<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

/// Starts the coordinator of a multi-node run on `port` (node 0 does), in the background for
/// the rest of the process.
pub fn start_coordinator(port: u16) -> Result<()> {
    // The coordinator logs a failure to listen and returns; trying the port first turns that
    // into an error line.
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| TrainError::Invalid(format!("coordinator port {port}: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| TrainError::Invalid(format!("coordinator: {e}")))?;
    std::thread::Builder::new()
        .name("shear-coordinator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| TrainError::Invalid(format!("coordinator: {e}")))?;
    Ok(())
}

fn collective_error(what: &str, e: burn_collective::CollectiveError) -> TrainError {
    TrainError::Collective(format!("{what} failed ({e:?})"))
}

impl Peer {
    /// The only peer of a run.
    pub fn solo() -> Self {
        Peer {
            rank: 0,
            count: 1,
            id: 0,
            batch: 0,
        }
    }

    /// Global micro-batches of `batch` rows: this peer's steps see [`Peer::rows`] of them.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// This peer's part of a global micro-batch's rows (1 when alone).
    pub fn share(&self) -> f64 {
        match self.count {
            1 => 1.0,
            _ => self.rows(self.batch).len() as f64 / self.batch.max(1) as f64,
        }
    }

    /// Whether this peer writes the run's files (logs, checkpoints, the model): peer 0.
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// This peer's rows of a batch of `rows` (as even as possible, the first peers taking one
    /// more).
    pub fn rows(&self, rows: usize) -> Range<usize> {
        crate::workers::share(rows, self.count, self.rank)
    }

    /// Joins the run as local peer `local` of `topology` on `device` (`B`: the backend the
    /// collective operations run on — the inner one of an autodiff backend). Returns when
    /// every peer of every node has joined.
    pub fn join<B: Backend>(topology: &Topology, local: usize, device: &B::Device) -> Result<Self> {
        let count = topology.peers();
        let rank = topology.rank_of(local);
        let id = local as u32;
        if count == 1 {
            return Ok(Peer {
                rank,
                count,
                id,
                batch: 0,
            });
        }
        let mut config = CollectiveConfig::default().with_num_devices(topology.devices);
        if let Some(n) = &topology.nodes {
            let url = |a: &str| {
                format!("ws://{a}")
                    .parse()
                    .map_err(|e: String| TrainError::Invalid(format!("address {a}: {e}")))
            };
            let (_, data_port) = host_port(&n.address)?;
            config = config
                .with_num_nodes(n.count as u32)
                .with_global_address(url(&n.coordinator)?)
                .with_node_address(url(&n.address)?)
                .with_data_service_port(data_port);
        }
        // Registering blocks until every peer has joined; a peer that never comes must not
        // hold this one forever.
        let (tx, rx) = std::sync::mpsc::channel();
        let device = device.clone();
        std::thread::Builder::new()
            .name(format!("shear-join-{local}"))
            .spawn(move || {
                let _ = tx.send(burn_collective::register::<B>(PeerId(id), device, config));
            })
            .map_err(|e| TrainError::Collective(e.to_string()))?;
        match rx.recv_timeout(JOIN_TIMEOUT) {
            Ok(Ok(())) => Ok(Peer {
                rank,
                count,
                id,
                batch: 0,
            }),
            Ok(Err(e)) => Err(collective_error("joining", e)),
            Err(_) => Err(TrainError::Collective(format!(
                "peer {rank} waited {} s for the other {} peers to join",
                JOIN_TIMEOUT.as_secs(),
                count - 1
            ))),
        }
    }

    /// Leaves the run (after a last all-reduce, so that no peer leaves while others still
    /// need it).
    pub fn leave<B: Backend>(&self, device: &B::Device) -> Result<()> {
        if self.count == 1 {
            return Ok(());
        }
        self.sum::<B>(Tensor::zeros([1], device))?;
        burn_collective::finish_collective::<B>(PeerId(self.id))
            .map_err(|e| collective_error("leaving", e))
    }

    /// The element-wise sum of `values` over all peers (every peer gets the same tensor).
    pub fn sum<B: Backend>(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        if self.count == 1 {
            return Ok(values);
        }
        // burn-collective's ring over nodes splits the tensor in one part per node: pad short
        // ones (a few figures) to a value per peer.
        let n = values.dims()[0];
        let values = match n < self.count {
            true => {
                let device = values.device();
                Tensor::cat(vec![values, Tensor::zeros([self.count - n], &device)], 0)
            }
            false => values,
        };
        let out = burn_collective::all_reduce::<B>(
            PeerId(self.id),
            values.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| collective_error("all-reduce", e))?;
        Ok(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(out)).narrow(0, 0, n))
    }

    /// Whether `local` holds on any peer (every peer gets the same answer).
    pub fn any<B: Backend>(&self, local: bool, device: &B::Device) -> Result<bool> {
        Ok(self.sum_host::<B>(&[f64::from(u8::from(local))], device)?[0] > 0.0)
    }

    /// The sum over peers of host values (through the device, in f32).
    pub fn sum_host<B: Backend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        if self.count == 1 {
            return Ok(values.to_vec());
        }
        let t = Tensor::<B, 1>::from_floats(
            values
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>()
                .as_slice(),
            device,
        );
        let summed = self.sum(t)?.into_data().convert::<f32>();
        Ok(summed
            .to_vec::<f32>()
            .expect("f32 data")
            .into_iter()
            .map(f64::from)
            .collect())
    }

    /// The gradients of the global batch's mean loss, from this peer's (of its rows' mean
    /// loss). `weighted` are this peer's figures averaged like its loss (they become the global
    /// figures); `tokens` are this peer's tokens of the step, returned summed over the peers and
    /// per peer (the log's evidence of who took part).
    pub fn reduce_step<B, M>(
        &self,
        grads: GradientsParams,
        module: &M,
        weighted: &mut [f64],
        tokens: usize,
    ) -> Result<(GradientsParams, StepTokens)>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
    {
        self.reduce_step_keeping::<B>(grads, &Layout::of(module), weighted, tokens, None)
    }

    /// [`Peer::reduce_step`] over the parameters of `layout`. With `keep`, only the gradients
    /// it accepts are kept (ZeRO, zero.rs); `Reduced::Already` when the gradients were reduced
    /// as they were made (ZeRO stage 2): then only the figures are.
    pub fn reduce_step_keeping<B: AutodiffBackend>(
        &self,
        grads: GradientsParams,
        layout: &Layout,
        weighted: &mut [f64],
        tokens: usize,
        keep: Option<(&(dyn Fn(ParamId) -> bool + Sync), Reduced)>,
    ) -> Result<(GradientsParams, StepTokens)> {
        if self.count == 1 {
            let tokens = StepTokens {
                total: tokens,
                per_peer: None,
            };
            return Ok((grads, tokens));
        }
        let Some(device) = layout
            .params
            .iter()
            .find_map(|p| grads_device::<B::InnerBackend>(&grads, p))
        else {
            let tokens = StepTokens {
                total: tokens,
                per_peer: None,
            };
            return Ok((grads, tokens));
        };
        let share = self.share();
        // The weighted figures, then this peer's tokens in its own slot (the sum is exact in
        // f32 up to 2^24 tokens per peer and step).
        let mut figures: Vec<f64> = weighted.iter().map(|v| v * share).collect();
        figures.extend((0..self.count).map(|r| if r == self.rank { tokens as f64 } else { 0.0 }));
        let figures = self.sum_host::<B::InnerBackend>(&figures, &device)?;
        let (w, per_peer) = figures.split_at(weighted.len());
        weighted.copy_from_slice(w);
        let per_peer: Vec<usize> = per_peer.iter().map(|t| t.round() as usize).collect();
        let tokens = StepTokens {
            total: per_peer.iter().sum(),
            per_peer: Some(per_peer),
        };
        let grads = match keep {
            Some((_, Reduced::Already)) => grads,
            Some((keep, Reduced::No)) => {
                self.reduce_grads::<B::InnerBackend>(grads, layout, keep)?
            }
            None => self.reduce_grads::<B::InnerBackend>(grads, layout, &|_| true)?,
        };
        Ok((grads, tokens))
    }

    /// The sum over peers of the share-weighted gradients of `layout`'s parameters, in
    /// buckets of consecutive gradients, each all-reduced as one flat tensor; only those `keep`
    /// accepts are put back (the others are dropped bucket by bucket).
    pub fn reduce_grads<B: Backend>(
        &self,
        mut grads: GradientsParams,
        layout: &Layout,
        keep: &(dyn Fn(ParamId) -> bool + Sync),
    ) -> Result<GradientsParams> {
        if self.count == 1 {
            return Ok(grads);
        }
        let share = self.share();
        // Each gradient leaves `grads` flattened and is dropped once its bucket is packed, so
        // the reduction holds one bucket beside the gradients, not a second set.
        let mut order = Vec::new();
        let mut flats = Vec::new();
        for p in &layout.params {
            if let Some(shape) = grad_shape::<B>(&grads, p) {
                flats.push(remove_flat::<B>(&mut grads, p));
                order.push((*p, shape));
            }
        }
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut len = 0;
            let numel = |i: usize| order[i].1.iter().product::<usize>();
            while end < order.len() && (end == start || len + numel(end) <= BUCKET) {
                len += numel(end);
                end += 1;
            }
            let parts: Vec<Tensor<B, 1>> = flats[start..end]
                .iter_mut()
                .map(|t| t.take().expect("packed once"))
                .collect();
            let flat = self.sum(Tensor::cat(parts, 0) * share)?;
            let mut at = 0;
            for (p, shape) in &order[start..end] {
                let n = shape.iter().product::<usize>();
                if keep(p.id) {
                    register_flat::<B>(&mut grads, p, flat.clone().narrow(0, at, n), shape);
                }
                at += n;
            }
            start = end;
        }
        Ok(grads)
    }
}

/// Whether a step's gradients were already all-reduced as they were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduced {
    No,
    Already,
}

fn grads_device<B: Backend>(grads: &GradientsParams, p: &LayoutParam) -> Option<B::Device> {
    match p.rank {
        1 => grads.get::<B, 1>(p.id).map(|g| g.device()),
        2 => grads.get::<B, 2>(p.id).map(|g| g.device()),
        3 => grads.get::<B, 3>(p.id).map(|g| g.device()),
        4 => grads.get::<B, 4>(p.id).map(|g| g.device()),
        _ => None,
    }
}

/// The tokens of one step: over all peers, and each peer's (`None` in a run of one peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepTokens {
    pub total: usize,
    pub per_peer: Option<Vec<usize>>,
}
