//! The CLI's view of a run's progress: a progress bar per loop (hidden when stderr is not a
//! terminal), lines above it for messages, domain-weight updates and loader events.

use indicatif::{ProgressBar, ProgressStyle};
use shear_pipeline::{Event, Observer};

/// Renders [`Event`]s on stderr.
#[derive(Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn say(&self, line: String) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Started { done, total, .. } => {
                self.clear();
                let bar = ProgressBar::new(total as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
                        .expect("valid template"),
                );
                bar.set_position(done as u64);
                self.bar = Some(bar);
            }
            Event::Step { summary, .. } => {
                if let Some(b) = &self.bar {
                    b.set_message(summary.to_string());
                    b.inc(1);
                }
            }
            Event::DomainUpdate(u) => {
                let w: Vec<String> = u
                    .domains
                    .iter()
                    .zip(&u.weights)
                    .map(|(d, w)| format!("{d} {w:.3}"))
                    .collect();
                self.say(format!("step {}: domain weights {}", u.step, w.join(", ")));
            }
            Event::Loader { step, event } => {
                let shear_data::LoaderEvent::NewPass { domain, pass } = event;
                self.say(format!(
                    "step {}: domain `{domain}` used up, starting pass {} in a new order",
                    step + 1,
                    pass + 1
                ));
            }
            Event::Checkpoint(_) => {}
            Event::Finished => self.clear(),
            Event::Message(m) => self.say(m.to_string()),
            Event::Busy(what) => match &self.bar {
                Some(b) => b.set_message(what.to_string()),
                None => {
                    let b = ProgressBar::new_spinner();
                    b.set_message(what.to_string());
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    self.bar = Some(b);
                }
            },
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
