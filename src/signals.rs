//! SIGTERM and SIGINT (preemption, Ctrl-C) during `prune`, `train` and `run`: the first asks the
//! run to stop after its current step with a checkpoint (it then exits with
//! [`RESUMABLE`]); a second one exits at once.

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
