//! Checkpoints, one module for both loops (docs/algorithm.md §9): step directories
//! `step-NNNNNNNN/` written whole or not at all, the newest one found on resume, burn records
//! for modules and optimizers, and `state.json` with the step, the run's whole configuration,
//! the loop's own state (random stream positions) and the data loader's state.
//!
//! A resumed run takes its configuration from the checkpoint; an option the caller set
//! explicitly to another value is refused ([`reconcile`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder};
use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shear_data::LoaderState;

use crate::error::{Result, TrainError};

const STATE: &str = "state.json";

/// `state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState<C> {
    /// Optimizer steps done.
    pub step: usize,
    /// The run's configuration (what `--resume` restores).
    pub settings: C,
    /// The loop's own state (e.g. a random stream position, the model's config).
    pub loop_state: Value,
    /// The data loader's state, when batches are not a function of the step alone.
    pub loader: Option<LoaderState>,
}

/// The checkpoint directories of one run.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoints { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest complete checkpoint (`step-NNNNNNNN` with a `state.json`).
    pub fn newest(&self) -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
                    && p.join(STATE).is_file()
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// Writes `step-NNNNNNNN/`: `fill` writes the records into the directory and returns the
    /// loop's state, then `state.json` is written; the directory appears under its name only
    /// once complete.
    pub fn write<C: Serialize>(
        &self,
        step: usize,
        settings: &C,
        loader: Option<LoaderState>,
        fill: impl FnOnce(&Path) -> Result<Value>,
    ) -> Result<PathBuf> {
        let dir = shear_io::AtomicDir::create(&self.dir.join(format!("step-{step:08}")))?;
        let loop_state = fill(dir.path())?;
        let state = CheckpointState {
            step,
            settings,
            loop_state,
            loader,
        };
        shear_io::write_json_atomic(&dir.path().join(STATE), &state)?;
        Ok(dir.commit()?)
    }
}

/// Reads `state.json` of checkpoint `dir`.
pub fn read_state<C: DeserializeOwned>(dir: &Path) -> Result<CheckpointState<C>> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(shear_io::IoError::at(&path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        msg: e.to_string(),
    })
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// Writes a burn record (an optimizer's state) as `dir/name.mpk`.
pub fn save_record<B: Backend, R: Record<B>>(record: R, dir: &Path, name: &str) -> Result<()> {
    recorder()
        .record(record, dir.join(name))
        .map_err(|e| TrainError::Record {
            path: dir.join(format!("{name}.mpk")),
            msg: e.to_string(),
        })
}

/// Reads a burn record written by [`save_record`].
pub fn load_record<B: Backend, R: Record<B>>(
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<R> {
    let path = dir.join(format!("{name}.mpk"));
    recorder()
        .load(path.clone(), device)
        .map_err(|e| TrainError::Record {
            path,
            msg: e.to_string(),
        })
}

/// Writes a module's parameters as `dir/name.mpk` (parameter ids kept, so optimizer state
/// saved alongside still matches).
pub fn save_module<B: Backend, M: Module<B>>(module: &M, dir: &Path, name: &str) -> Result<()> {
    module
        .clone()
        .save_file(dir.join(name), &recorder())
        .map_err(|e| TrainError::Record {
            path: dir.join(format!("{name}.mpk")),
            msg: e.to_string(),
        })
}

/// Loads the parameters written by [`save_module`] into `skeleton` (a module of the same
/// structure).
pub fn load_module<B: Backend, M: Module<B>>(
    skeleton: M,
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<M> {
    skeleton
        .load_file(dir.join(name), &recorder(), device)
        .map_err(|e| TrainError::Record {
            path: dir.join(format!("{name}.mpk")),
            msg: e.to_string(),
        })
}

/// The configuration a resumed run continues with: the checkpoint's (`stored`). A key whose
/// value in `requested` differs is refused when the caller set it explicitly (`explicit` holds
/// top-level key names of the serialised configuration; `"*"` means every key), and otherwise
/// takes the stored value.
pub fn reconcile<C: Serialize + DeserializeOwned>(
    stored: C,
    requested: &C,
    explicit: &[String],
    checkpoint: &Path,
) -> Result<C> {
    let (s, r) = (json(&stored), json(requested));
    let (Value::Object(s), Value::Object(r)) = (s, r) else {
        return Ok(stored);
    };
    let all = explicit.iter().any(|k| k == "*");
    for (key, want) in &r {
        let have = s.get(key).unwrap_or(&Value::Null);
        if have != want && (all || explicit.iter().any(|k| k == key)) {
            return Err(TrainError::Conflict {
                key: key.clone(),
                requested: show(want),
                stored: show(have),
                path: checkpoint.to_path_buf(),
            });
        }
    }
    Ok(stored)
}

fn json<C: Serialize>(c: &C) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(unset)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Settings {
        seed: u64,
        lr: f64,
        steps: usize,
    }

    #[test]
    fn reconcile_keeps_the_stored_settings_and_refuses_explicit_conflicts() {
        let stored = Settings {
            seed: 0,
            lr: 1e-4,
            steps: 10,
        };
        let asked = Settings {
            seed: 5,
            lr: 1e-4,
            steps: 10,
        };
        let p = Path::new("ckpt");
        // A default that differs is not a conflict: the stored value wins.
        assert_eq!(reconcile(stored.clone(), &asked, &[], p).unwrap(), stored);
        let e = reconcile(stored.clone(), &asked, &["seed".into()], p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "seed = 5 conflicts with the checkpoint's seed = 0 (ckpt); resume without it, or \
             start a new run in another directory"
        );
        assert!(reconcile(stored.clone(), &asked, &["*".into()], p).is_err());
        assert!(reconcile(stored.clone(), &stored, &["*".into()], p).is_ok());
    }

    #[test]
    fn the_newest_complete_checkpoint_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path());
        assert!(c.newest().is_none());
        for step in [3usize, 12, 7] {
            c.write(step, &(), None, |_| Ok(Value::Null)).unwrap();
        }
        // A half-written directory (no state.json) does not count.
        std::fs::create_dir_all(dir.path().join("step-00000099")).unwrap();
        assert_eq!(c.newest().unwrap(), dir.path().join("step-00000012"));
        let s: CheckpointState<()> = read_state(&c.newest().unwrap()).unwrap();
        assert_eq!(s.step, 12);
    }
}
