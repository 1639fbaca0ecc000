//! shear-io: the few file rules every shear crate follows.
//!
//! - A file or directory that shear writes is either complete or absent: it is written under a
//!   temporary name (`.NAME.XXXX.tmp`) in the same folder and renamed over its final name once
//!   complete, so a kill at any moment never leaves a half-written file behind ([`write_atomic`],
//!   [`AtomicDir`]). A directory replaces an older one by an atomic exchange (Linux
//!   `RENAME_EXCHANGE`; elsewhere two renames through an aside name), so `dest` is always the
//!   old or the new one, whole; a kill leaves at most one `.*.tmp` entry, which the next run
//!   removes with [`remove_temporaries`].
//! - An output directory has one writer at a time: [`OutLock`] holds an advisory lock on
//!   `DIR/.shear.lock` with the holder's pid; a second process is refused naming it, and a lock
//!   left by a killed process is taken over (the kernel released it).
//! - Step logs are JSON lines of a typed record; a resumed run cuts its log back to the
//!   checkpoint's step before appending ([`JsonlLog`]), dropping a torn last line (a write cut
//!   short) and saying so ([`TornLine`]); any other line that does not parse is an error naming
//!   the file and line, as when reading a log ([`read_jsonl`]).
//! - [`kill_point`] is a test hook: with `SHEAR_TEST_KILL_AT` naming a point of a write, the
//!   process kills itself there, so tests can check the rules above at exact points
//!   (docs/algorithm.md §9).
//!
//! A crate of its own because the model, data and training crates all write files and none of
//! them depends on another for it.

#![forbid(unsafe_code)]

mod atomic;
mod error;
mod hooks;
mod jsonl;
mod lock;

pub use atomic::{
    read_json, remove_temporaries, write_atomic, write_atomic_path, write_json_atomic, AtomicDir,
};
pub use error::{IoError, Result};
pub use hooks::{kill_point, KILL_AT};
pub use jsonl::{read_jsonl, JsonlLog, Stepped, TornLine};
pub use lock::OutLock;
