//! The data-parallel peers of a stage (docs/algorithm.md §4.4): one loop per local peer, on its
//! own thread and device, joined into one collective; a peer that fails or panics wakes the
//! others from their collective operations, and the failure reported is the first that is not
//! only the echo of another's.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use burn::tensor::backend::Backend;
use shear_train::peers::{self, Peer, Topology};
use shear_train::{Observer, Silent};

use crate::error::{invalid, PipelineError, Result};
use crate::watch::{wait_lost, OnLost, Watch};

/// Refuses data-parallel peers that cannot run (checked before any work).
pub(crate) fn check(topology: &Topology, batch: usize) -> Result<()> {
    topology.validate()?;
    if batch < topology.peers() {
        return invalid!(
            "batch {batch}: {} data-parallel peers need at least one sequence each",
            topology.peers()
        );
    }
    Ok(())
}

/// Runs `peer_run(peer, device, observer)` once per local peer of `topology`: local peer 0 on
/// this thread with `observer`, the others on their own threads, silent, on the devices of
/// [`Topology::local_devices`] from `first`; node 0 of a multi-node run starts the coordinator.
/// Returns local peer 0's result.
/// In a multi-node run a liveness watch ([`crate::watch`]) runs beside the peers: a node that
/// goes away is reported as [`PipelineError::PeerLost`] naming it (and given to `on_lost`).
pub(crate) fn run_peers<B, R>(
    topology: &Topology,
    batch: usize,
    first: &B::Device,
    observer: &mut dyn Observer,
    on_lost: Option<OnLost>,
    peer_run: impl Fn(Peer, &B::Device, &mut dyn Observer) -> Result<R> + Sync,
) -> Result<R>
where
    B: Backend,
{
    check(topology, batch)?;
    if topology.peers() == 1 {
        return peer_run(Peer::solo(), first, observer);
    }
    let _session = peers::session::<B>();
    if let Some(n) = topology.nodes.as_ref().filter(|n| n.rank == 0) {
        let (_, port) = peers::host_port(&n.coordinator)?;
        peers::start_coordinator(port)?;
    }
    let watch = match &topology.nodes {
        Some(n) => Some(Watch::start(n, on_lost, Box::new(peers::abort::<B>))?),
        None => None,
    };
    let result = local_peers::<B, R>(topology, batch, first, observer, peer_run);
    let Some(watch) = watch else {
        return result;
    };
    // A failure right after a node went away is its echo: the loss is what to report.
    let lost = match &result {
        Err(_) => wait_lost(Duration::from_secs(3)),
        Ok(_) => None,
    };
    watch.done();
    match lost {
        Some(line) => Err(PipelineError::PeerLost(line.to_string())),
        None => result,
    }
}

/// The local peers of [`run_peers`], each on its thread.
fn local_peers<B, R>(
    topology: &Topology,
    batch: usize,
    first: &B::Device,
    observer: &mut dyn Observer,
    peer_run: impl Fn(Peer, &B::Device, &mut dyn Observer) -> Result<R> + Sync,
) -> Result<R>
where
    B: Backend,
{
    let devices = topology.local_devices(first);
    let one = |local: usize, observer: &mut dyn Observer| -> Result<R> {
        let device = &devices[local];
        let rank = topology.rank_of(local);
        // A panic is a failure like any other: the other peers must not wait for this one.
        let out = catch_unwind(AssertUnwindSafe(|| {
            let peer = Peer::join::<B>(topology, local, device)?.with_batch(batch);
            let r = peer_run(peer.clone(), device, observer)?;
            peer.leave::<B>(device)?;
            Ok(r)
        }))
        .unwrap_or_else(|_| invalid!("data-parallel peer {rank} panicked"));
        if out.is_err() {
            peers::abort::<B>();
        }
        out
    };
    let (first_result, others) = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..topology.devices)
            .map(|local| {
                let one = &one;
                std::thread::Builder::new()
                    .name(format!("shear-peer-{local}"))
                    .stack_size(16 << 20)
                    .spawn_scoped(scope, move || one(local, &mut Silent).map(|_| ()))
            })
            .collect();
        let first_result = one(0, observer);
        let others: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| invalid!("a peer thread panicked")),
                Err(e) => invalid!("cannot start a peer thread: {e}"),
            })
            .collect();
        (first_result, others)
    });
    let (result, mut errors) = match first_result {
        Ok(r) => (Some(r), Vec::new()),
        Err(e) => (None, vec![e]),
    };
    errors.extend(others.into_iter().filter_map(|r| r.err()));
    match result {
        Some(r) if errors.is_empty() => Ok(r),
        _ => {
            let i = errors.iter().position(|e| !e.is_collective()).unwrap_or(0);
            Err(errors.swap_remove(i))
        }
    }
}
