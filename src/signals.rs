//! SIGTERM and SIGINT (preemption, Ctrl-C) during `prune`, `train` and `run`: the first asks the
//! run to stop after its current step with a checkpoint (it then exits with
//! [`RESUMABLE`]); a second one exits at once. And the loss of a node of a multi-node run: one
//! line naming it and exit status 1, at once ([`peer_lost`]), with burn-collective's own
//! failures on its runtime threads (an echo of the loss) kept quiet ([`quiet_echo_panics`]).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// Exit status of a run stopped by a signal with a checkpoint (`EX_TEMPFAIL`: try again, with
/// `--resume`).
pub const RESUMABLE: u8 = 75;

/// Exit status when a second signal ends the process at once (128 + SIGINT, as shells report
/// an interrupted command).
const AT_ONCE: i32 = 130;

/// The flag a first SIGTERM or SIGINT sets, with the handlers installed on first use.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The exit is registered first: on the first signal it finds the flag unset, and the
        // second handler sets it; on any later signal it exits.
        signal_hook::flag::register_conditional_shutdown(signal, AT_ONCE, flag.clone())
            .and_then(|_| signal_hook::flag::register(signal, flag.clone()))
            .map_err(|e| anyhow::anyhow!("cannot install the signal handlers: {e}"))?;
    }
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// Reports the line naming a lost node and ends the process with status 1 (the peers' threads
/// may be stuck in a collective operation; checkpoints are whole or absent, so nothing is left
/// half-written). Reports only once, whichever thread comes first.
pub fn peer_lost(line: &str) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !REPORTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}

/// A panic while a node watch runs is first given a moment to turn out an echo of a lost node
/// (burn-collective panics on its threads when a connection to another node breaks): then the
/// loss is reported instead of the panic.
pub fn quiet_echo_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let wait = std::time::Duration::from_secs(3);
        if let Some(line) = shear_pipeline::watch::wait_lost(wait) {
            peer_lost(line);
            // Another thread is reporting it and ends the process.
            std::thread::sleep(wait);
        }
        default(info);
    }));
}
