//! How the steps of `shear prune`, `shear train` and `shear run` execute, declared once for the
//! three: workers per step, recomputation, and the data-parallel peers on this machine
//! (`--devices`) and across machines. None of it changes a run's numbers beyond the order of
//! floating-point sums.

use shear_train::execution::Execution;
use shear_train::peers::{host_port, Nodes, Topology};
use shear_train::zero::ZeroStage;

use crate::backend::DeviceKind;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExecArgs {
    /// Workers per step: the rows of every batch are split over this many copies of the model
    /// and their gradients summed (default: one per core on the CPU, 1 on a GPU).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: Option<usize>,
    /// Keep only the blocks' inputs for the backward pass and recompute each block there: less
    /// memory (docs/algorithm.md §13.2), one more forward pass per step.
    #[arg(long)]
    pub recompute: bool,
    /// Shard the training state over the data-parallel peers, as DeepSpeed's ZeRO stages do
    /// (docs/algorithm.md §4.5): 0 none, 1 AdamW's moments, 2 the moments and the summed
    /// gradients. Each peer then updates its share of the model and sends it to the others.
    #[arg(long, default_value_t = 0, value_name = "0|1|2",
          value_parser = clap::builder::RangedU64ValueParser::<u8>::new().range(0..=2))]
    pub zero_stage: u8,
    #[command(flatten)]
    pub peers: PeerArgs,
}

impl ExecArgs {
    /// The execution of every peer's steps.
    pub fn execution(&self) -> Execution {
        Execution {
            workers: self.workers.unwrap_or(1),
            recompute: self.recompute,
            zero: ZeroStage::from_level(self.zero_stage).expect("checked by clap"),
            ..Execution::default()
        }
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PeerArgs {
    /// Data-parallel peers on this machine, each holding the whole model and its share of every
    /// batch (gradients all-reduced every step): CUDA GPUs 0..N-1 (several peers per GPU when
    /// there are fewer), or N peers sharing the CPU's cores.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub devices: Option<usize>,
    /// Machines of a multi-node run: one shear process per machine, all with the same
    /// arguments but --node-rank.
    #[arg(long, requires_all = ["node_rank", "coordinator"],
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub nodes: Option<usize>,
    /// This machine's rank (0..nodes-1); node 0 runs the coordinator and writes the outputs.
    #[arg(long, requires = "nodes")]
    pub node_rank: Option<usize>,
    /// HOST:PORT of the coordinator (node 0 listens on PORT).
    #[arg(long, requires = "nodes", value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// HOST:PORT where this node listens for the others (default: the coordinator's host and
    /// its port + 1 + node rank).
    #[arg(long, requires = "nodes", value_name = "HOST:PORT")]
    pub node_address: Option<String>,
}

impl PeerArgs {
    /// The nodes of a multi-node run, checked (`None`: one machine).
    pub fn nodes(&self) -> anyhow::Result<Option<Nodes>> {
        let (Some(count), Some(rank), Some(coordinator)) =
            (self.nodes, self.node_rank, self.coordinator.clone())
        else {
            return Ok(None);
        };
        if rank >= count {
            anyhow::bail!("--node-rank {rank}: must be below --nodes {count}");
        }
        let (host, port) = host_port(&coordinator)
            .map_err(|e| anyhow::anyhow!("--coordinator {coordinator}: {e}"))?;
        let address = match &self.node_address {
            Some(a) => {
                host_port(a).map_err(|e| anyhow::anyhow!("--node-address {a}: {e}"))?;
                a.clone()
            }
            None => {
                let p = port as usize + 1 + rank;
                let p = u16::try_from(p).map_err(|_| {
                    anyhow::anyhow!("--coordinator {coordinator}: port {p} of node {rank} is out of range; give --node-address")
                })?;
                format!("{host}:{p}")
            }
        };
        Ok(Some(Nodes {
            count,
            rank,
            coordinator,
            address,
        }))
    }

    /// Peers of a prune or train run on `kind`.
    pub fn topology(&self, kind: DeviceKind) -> anyhow::Result<Topology> {
        Ok(Topology {
            devices: self.devices.unwrap_or(1),
            physical: crate::backend::physical_devices(kind),
            nodes: self.nodes()?,
        })
    }
}
