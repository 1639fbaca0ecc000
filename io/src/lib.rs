//! shear-io: the few file rules every shear crate follows.
//!
//! - A file or directory that shear writes is either complete or absent: it is written under a
//!   temporary name in the same folder and renamed over its final name once complete, so a kill
//!   at any moment never leaves a half-written file behind ([`write_atomic`], [`AtomicDir`]).
//! - Step logs are JSON lines of a typed record; a resumed run cuts its log back to the
//!   checkpoint's step before appending ([`JsonlLog`]), and reading a log names the file and line
//!   of anything that does not parse ([`read_jsonl`]).
//!
//! A crate of its own because the model, data and training crates all write files and none of
//! them depends on another for it.

mod atomic;
mod error;
mod jsonl;

pub use atomic::{write_atomic, write_atomic_path, write_json_atomic, AtomicDir};
pub use error::{IoError, Result};
pub use jsonl::{read_jsonl, JsonlLog, Stepped};
