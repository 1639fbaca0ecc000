//! Checkpoints, one module for both loops (docs/algorithm.md §9): step directories
//! `step-NNNNNNNN/` written whole or not at all, the newest one found on resume, burn records
//! for modules and optimizers, and `state.json` with the step, the run's whole configuration,
//! the loop's own state (random stream positions) and the data loader's state.
//!
//! A resumed run takes its configuration from the checkpoint; an option the caller set
//! explicitly to another value is refused ([`reconcile`]).
//!
//! Only the newest K checkpoints are kept ([`Checkpoints::keeping`]), and `state.json` carries a
//! manifest (size and SHA-256 of every other file of the directory): a resume takes the newest
//! checkpoint that passes it and skips the others ([`Checkpoints::newest_usable`]).

use std::collections::BTreeMap;
use std::io::Read;
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
    /// Every other file of the directory (its path there, `/`-separated): size and SHA-256,
    /// checked before a resume uses the checkpoint (docs/algorithm.md §9). `None` in checkpoints
    /// written before manifests existed: those are used unverified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<BTreeMap<String, FileSum>>,
}

/// One manifest entry: a file's size in bytes and its SHA-256 (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub size: u64,
    pub sha256: String,
}

/// The checkpoint directories of one run.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    /// Checkpoints kept after each write (`None`: all).
    keep: Option<usize>,
}

impl Checkpoints {
    /// The checkpoints in `dir`, all kept.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoints {
            dir: dir.into(),
            keep: None,
        }
    }

    /// Keeps only the newest `k` (at least 1) checkpoints: once a checkpoint is committed, older
    /// ones beyond the newest `k` are removed.
    pub fn keeping(mut self, k: usize) -> Self {
        self.keep = Some(k.max(1));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest complete checkpoint (`step-NNNNNNNN` with a `state.json`), unverified.
    pub fn newest(&self) -> Option<PathBuf> {
        self.all()
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| p.join(STATE).is_file())
    }

    /// Every checkpoint directory (`step-N`), newest first, with its step.
    pub fn all(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(usize, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let digits = name.strip_prefix("step-")?;
                let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                Some((digits.parse().ok().filter(|_| ok)?, p))
            })
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found
    }

    /// The newest checkpoint that passes [`check`], with its state: candidates are tried newest
    /// first, and each one that does not pass is given to `skipped` (a
    /// [`TrainError::Unusable`]) before the one before it is tried. `None` when there is no
    /// checkpoint at all; an error naming the newest and why when none passes.
    pub fn newest_usable<C: DeserializeOwned>(
        &self,
        mut skipped: impl FnMut(&TrainError),
    ) -> Result<Option<(PathBuf, CheckpointState<C>)>> {
        let mut first = None;
        for (_, dir) in self.all() {
            match check::<C>(&dir) {
                Ok(state) => return Ok(Some((dir, state))),
                Err(e) => {
                    skipped(&e);
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(None),
            Some(TrainError::Unusable { path, reason }) => Err(TrainError::NoUsableCheckpoint {
                dir: self.dir.clone(),
                newest: path,
                reason,
            }),
            Some(e) => Err(e),
        }
    }

    /// Removes what a write interrupted by a kill left behind (`.step-*.tmp`, docs/algorithm.md
    /// §9); returns how many were removed.
    pub fn remove_temporaries(&self) -> Result<usize> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry.map_err(shear_io::IoError::at(&self.dir))?.path();
            let temporary = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".step-") && n.ends_with(".tmp"));
            if temporary {
                remove_path(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// After the checkpoint of `step` was committed: removes older checkpoints beyond the newest
    /// `keep`, and any newer than `step` (left by a run that resumed from an older checkpoint
    /// because those were unusable). Each is first renamed to a temporary name, so a kill
    /// during the removal leaves nothing that looks like a checkpoint.
    fn remove_old(&self, step: usize) -> Result<()> {
        let Some(keep) = self.keep else {
            return Ok(());
        };
        let mut older = 0;
        for (s, dir) in self.all() {
            let stale = s > step;
            if !stale {
                older += 1;
            }
            if stale || older > keep {
                let aside = self.dir.join(format!(".step-{s:08}.removing.tmp"));
                if aside.exists() {
                    remove_path(&aside)?;
                }
                std::fs::rename(&dir, &aside).map_err(shear_io::IoError::at(&dir))?;
                kill_point(step, "during-cleanup");
                remove_path(&aside)?;
            }
        }
        Ok(())
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
        kill_point(step, "after-records");
        let state = CheckpointState {
            step,
            settings,
            loop_state,
            loader,
            manifest: Some(manifest(dir.path())?),
        };
        shear_io::write_json_atomic(&dir.path().join(STATE), &state)?;
        kill_point(step, "after-state");
        let path = dir.commit()?;
        kill_point(step, "after-commit");
        self.remove_old(step)?;
        Ok(path)
    }
}

/// Test hook (`shear_io::kill_point`): with `SHEAR_TEST_KILL_AT=checkpoint:<step>:<phase>`, the
/// process kills itself with SIGKILL at `phase` of writing the checkpoint of `step`. Phases:
/// `after-records` (records written in the temporary directory, no `state.json` yet),
/// `after-state` (`state.json` written, not yet renamed), `after-commit` (renamed into place,
/// older checkpoints not yet removed), `during-cleanup` (an old checkpoint renamed aside, not yet
/// removed). `tests/kill_anywhere.rs` kills at each of them (docs/algorithm.md §9).
pub const PHASES: [&str; 4] = [
    "after-records",
    "after-state",
    "after-commit",
    "during-cleanup",
];

fn kill_point(step: usize, phase: &str) {
    shear_io::kill_point(|| format!("checkpoint:{step}:{phase}"));
}

/// Removes a file or a directory with everything in it.
fn remove_path(path: &Path) -> Result<()> {
    let r = match path.is_dir() {
        true => std::fs::remove_dir_all(path),
        false => std::fs::remove_file(path),
    };
    Ok(r.map_err(shear_io::IoError::at(path))?)
}

/// The manifest of checkpoint directory `dir`: every file but `state.json`, with its size and
/// SHA-256.
fn manifest(dir: &Path) -> Result<BTreeMap<String, FileSum>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&at).map_err(shear_io::IoError::at(&at))? {
            let path = entry.map_err(shear_io::IoError::at(&at))?.path();
            let name = format!(
                "{prefix}{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if path.is_dir() {
                pending.push((path, format!("{name}/")));
            } else if name != STATE {
                files.insert(name, sum(&path)?);
            }
        }
    }
    Ok(files)
}

/// Size and SHA-256 of the file at `path`.
fn sum(path: &Path) -> Result<FileSum> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(shear_io::IoError::at(path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(shear_io::IoError::at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileSum { size, sha256 })
}

/// Reads `state.json` of checkpoint `dir` and checks every file of its manifest (present, of
/// the recorded size and SHA-256). Anything wrong is a [`TrainError::Unusable`] naming `dir`
/// and the reason.
pub fn check<C: DeserializeOwned>(dir: &Path) -> Result<CheckpointState<C>> {
    let unusable = |reason: String| TrainError::Unusable {
        path: dir.to_path_buf(),
        reason,
    };
    let path = dir.join(STATE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable(format!("{STATE} is missing")))
        }
        Err(e) => return Err(unusable(format!("{STATE}: {e}"))),
    };
    let state: CheckpointState<C> = serde_json::from_str(&text)
        .map_err(|e| unusable(format!("{STATE} does not parse: {e}")))?;
    for (name, want) in state.manifest.iter().flatten() {
        let file = dir.join(name);
        let have = match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => m.len(),
            _ => return Err(unusable(format!("{name} is missing"))),
        };
        if have != want.size {
            return Err(unusable(format!(
                "{name} has {have} bytes, the manifest says {}",
                want.size
            )));
        }
        let got = sum(&file).map_err(|e| unusable(e.to_string()))?;
        if got.sha256 != want.sha256 {
            return Err(unusable(format!(
                "{name}: SHA-256 {} differs from the manifest's {}",
                short(&got.sha256),
                short(&want.sha256)
            )));
        }
    }
    Ok(state)
}

/// The first 12 hex digits of a digest, for messages.
fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
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
        .map_err(|e| write_error(dir, name, e))
}

/// A record that could not be written, named by where it was going: the checkpoint directory's
/// final name, not the temporary one it is built under (`.step-N.XXXX.tmp`).
fn write_error(dir: &Path, name: &str, e: impl std::fmt::Display) -> TrainError {
    let shown = match dir.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with('.') && n.ends_with(".tmp") => {
            let inner = &n[1..n.len() - 4];
            let final_name = inner.rsplit_once('.').map_or(inner, |(a, _)| a);
            dir.with_file_name(final_name)
        }
        _ => dir.to_path_buf(),
    };
    TrainError::WriteRecord {
        path: shown.join(format!("{name}.mpk")),
        msg: e.to_string(),
    }
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
        .map_err(|e| write_error(dir, name, e))
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

    /// A checkpoint with one record file `a.mpk` holding `bytes`.
    fn write_one(c: &Checkpoints, step: usize, bytes: &[u8]) -> PathBuf {
        c.write(step, &(), None, |dir| {
            std::fs::write(dir.join("a.mpk"), bytes).unwrap();
            std::fs::create_dir(dir.join("sub")).unwrap();
            std::fs::write(dir.join("sub/b.bin"), [step as u8]).unwrap();
            Ok(Value::Null)
        })
        .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }

    fn reason(e: TrainError) -> String {
        match e {
            TrainError::Unusable { reason, .. } => reason,
            other => panic!("not Unusable: {other}"),
        }
    }

    #[test]
    fn only_the_newest_k_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path()).keeping(2);
        for step in [4, 8, 12, 16] {
            write_one(&c, step, b"x");
        }
        assert_eq!(names(dir.path()), ["step-00000012", "step-00000016"]);
        // A run that resumed from step 12 (16 being unusable) writes 14: 16 belongs to the
        // abandoned continuation and goes, 12 stays as the second newest.
        write_one(&c, 14, b"x");
        assert_eq!(names(dir.path()), ["step-00000012", "step-00000014"]);
        // K may change between runs: a later write keeps the newest K of that run.
        let one = Checkpoints::new(dir.path()).keeping(1);
        write_one(&one, 18, b"x");
        assert_eq!(names(dir.path()), ["step-00000018"]);
        // Without `keeping`, everything stays.
        let all = Checkpoints::new(dir.path());
        write_one(&all, 20, b"x");
        assert_eq!(names(dir.path()), ["step-00000018", "step-00000020"]);
        assert_eq!(
            c.all().iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [20, 18],
            "newest first"
        );
    }

    #[test]
    fn the_manifest_lists_every_file_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path());
        let ckpt = write_one(&c, 3, b"abc");
        let state = check::<()>(&ckpt).unwrap();
        let manifest = state.manifest.unwrap();
        assert_eq!(
            manifest.keys().collect::<Vec<_>>(),
            ["a.mpk", "sub/b.bin"],
            "every file but state.json"
        );
        assert_eq!(
            manifest["a.mpk"],
            FileSum {
                size: 3,
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            }
        );
        let a = ckpt.join("a.mpk");
        // One byte flipped: same size, another digest.
        std::fs::write(&a, b"abd").unwrap();
        let why = reason(check::<()>(&ckpt).unwrap_err());
        assert!(why.starts_with("a.mpk: SHA-256 "), "{why}");
        // Truncated.
        std::fs::write(&a, b"ab").unwrap();
        let e = check::<()>(&ckpt).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "checkpoint {} is unusable: a.mpk has 2 bytes, the manifest says 3",
                ckpt.display()
            )
        );
        std::fs::remove_file(&a).unwrap();
        assert_eq!(reason(check::<()>(&ckpt).unwrap_err()), "a.mpk is missing");
        std::fs::write(ckpt.join(STATE), b"{\"step\": 3, \"sett").unwrap();
        let why = reason(check::<()>(&ckpt).unwrap_err());
        assert!(why.starts_with("state.json does not parse: "), "{why}");
        std::fs::remove_file(ckpt.join(STATE)).unwrap();
        assert_eq!(
            reason(check::<()>(&ckpt).unwrap_err()),
            "state.json is missing"
        );
    }

    /// A checkpoint written before manifests existed is read unverified.
    #[test]
    fn a_checkpoint_without_a_manifest_is_used_unverified() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("step-00000005");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(
            ckpt.join(STATE),
            r#"{"step": 5, "settings": null, "loop_state": null, "loader": null}"#,
        )
        .unwrap();
        let s = check::<()>(&ckpt).unwrap();
        assert_eq!((s.step, s.manifest), (5, None));
    }

    #[test]
    fn a_resume_skips_unusable_checkpoints_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path());
        assert!(c.newest_usable::<()>(|_| panic!()).unwrap().is_none());
        let paths: Vec<PathBuf> = [4, 8, 12].map(|s| write_one(&c, s, b"abc")).to_vec();
        std::fs::write(paths[2].join("a.mpk"), b"xbc").unwrap();
        std::fs::remove_file(paths[1].join("sub/b.bin")).unwrap();
        let mut skipped = Vec::new();
        let (used, state) = c
            .newest_usable::<()>(|e| skipped.push(e.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!((used, state.step), (paths[0].clone(), 4));
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].contains("step-00000012") && skipped[0].contains("a.mpk: SHA-256"));
        assert!(
            skipped[1].contains("step-00000008") && skipped[1].contains("sub/b.bin is missing")
        );
        // None usable: the error names the newest and why.
        std::fs::write(paths[0].join(STATE), b"not json").unwrap();
        let e = c.newest_usable::<()>(|_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("no usable checkpoint in "), "{msg}");
        assert!(
            msg.contains("step-00000012") && msg.contains("a.mpk: SHA-256"),
            "{msg}"
        );
    }

    #[test]
    fn leftovers_of_a_killed_write_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path());
        assert_eq!(c.remove_temporaries().unwrap(), 0, "no directory yet");
        write_one(&c, 4, b"abc");
        let half = dir.path().join(".step-00000008.a1B2c3.tmp");
        std::fs::create_dir(&half).unwrap();
        std::fs::write(half.join("pruner.mpk"), b"half").unwrap();
        std::fs::create_dir(dir.path().join(".step-00000002.removing.tmp")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert_eq!(c.remove_temporaries().unwrap(), 2);
        assert_eq!(names(dir.path()), ["notes.txt", "step-00000004"]);
    }
}
