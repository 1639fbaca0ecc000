//! How a loop reports progress to its caller: a small trait the CLI renders with a progress bar
//! and a library user may ignore ([`Silent`]).

use std::path::Path;

use shear_data::{LoaderEvent, UpdateRecord};

/// Something a stage or loop reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A loop starts (or resumes) at step `done` of `total`.
    Started {
        what: &'a str,
        done: usize,
        total: usize,
    },
    /// Step `step` (0-based) is done; `summary` is a short line of its figures.
    Step {
        step: usize,
        total: usize,
        summary: &'a str,
    },
    /// The domain weights changed after an evaluation.
    DomainUpdate(&'a UpdateRecord),
    /// A domain ran out during step `step` and started a new pass.
    Loader { step: usize, event: &'a LoaderEvent },
    /// A checkpoint was written.
    Checkpoint(&'a Path),
    /// The loop ended (finished or stopped early).
    Finished,
    /// Anything else worth a line (a stage skipped, a reference loss computed, a warning).
    Message(&'a str),
    /// Something slow without steps (loading, evaluating) begins; `Finished` or the next event
    /// ends it.
    Busy(&'a str),
}

/// Receives [`Event`]s.
pub trait Observer {
    fn event(&mut self, event: Event<'_>);
}

/// Ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&mut self, _: Event<'_>) {}
}

/// Collects the messages, for tests and callers that print at the end.
#[derive(Default)]
pub struct Recorder {
    pub lines: Vec<String>,
}

impl Observer for Recorder {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Message(m) => self.lines.push(m.to_string()),
            Event::DomainUpdate(u) => self.lines.push(format!("update at step {}", u.step)),
            _ => {}
        }
    }
}
