//! Atomic writes: a temporary name in the destination's folder (so the final rename never
//! crosses file systems), flushed and synced, then renamed over the destination. Temporary
//! names start with `.` and end with `.tmp`, which is how [`remove_temporaries`] knows the ones
//! a killed write left.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{IoError, Result};
use crate::hooks::kill_point;

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Temporary files are created private (0600); what shear writes is for others to read too.
#[cfg(unix)]
fn readable(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(IoError::at(path))
}

#[cfg(not(unix))]
fn readable(_: &Path, _: u32) -> Result<()> {
    Ok(())
}

fn temp_in(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent(path);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(IoError::at(dir))
}

/// Writes `bytes` to `path` so that `path` is either absent, its old content, or complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_path(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(IoError::at(tmp))
    })
}

/// Reads the JSON file `path` as a `T`; a file that does not parse as one is an
/// [`IoError::Json`] naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(IoError::at(path))?;
    serde_json::from_slice(&bytes).map_err(|e| IoError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Writes `value` as pretty-printed JSON to `path`, atomically.
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| IoError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    write_atomic(path, &json)
}

/// Lets `write` fill a temporary file (given by path, for writers that open files themselves,
/// e.g. `safetensors::serialize_to_file`), syncs it and renames it over `path`. The temporary
/// file is removed if `write` fails.
pub fn write_atomic_path<E: From<IoError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let tmp = temp_in(path)?.into_temp_path();
    write(&tmp)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)
        .map_err(IoError::at(&tmp))?;
    file.sync_all().map_err(IoError::at(&tmp))?;
    readable(&tmp, 0o644)?;
    kill_point(|| format!("write:{}:before-rename", file_name(path)));
    tmp.persist(path).map_err(|e| IoError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// A directory built under a temporary name next to its destination and renamed into place by
/// [`AtomicDir::commit`]; dropped without a commit, it is removed.
pub struct AtomicDir {
    tmp: Option<tempfile::TempDir>,
    dest: PathBuf,
}

impl AtomicDir {
    /// Starts a directory that will become `dest` (its parent is created if needed).
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = parent(dest);
        std::fs::create_dir_all(dir).map_err(IoError::at(dir))?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempdir_in(dir)
            .map_err(IoError::at(dir))?;
        Ok(AtomicDir {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        })
    }

    /// Where to write the directory's files.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not yet committed").path()
    }

    /// Syncs every file, replaces `dest` (removing an older one) and returns its path.
    ///
    /// An older `dest` is swapped with the new directory in one step (Linux `renameat2` with
    /// `RENAME_EXCHANGE`), after which the temporary name holds the old directory, which is then
    /// removed. Where the file system or platform has no exchange, the old `dest` is first
    /// renamed aside (`.{name}.old.PID-N.tmp`), the new one renamed into place, and the aside copy
    /// removed. Either way a kill at any point leaves `dest` either complete-old or complete-new,
    /// plus at most one leftover `.*.tmp` entry in the parent folder, which the next run removes
    /// ([`remove_temporaries`], docs/algorithm.md §9).
    pub fn commit(mut self) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("committed once").keep();
        for entry in std::fs::read_dir(&tmp).map_err(IoError::at(&tmp))? {
            let p = entry.map_err(IoError::at(&tmp))?.path();
            if p.is_file() {
                let f = std::fs::File::open(&p).map_err(IoError::at(&p))?;
                f.sync_all().map_err(IoError::at(&p))?;
            }
        }
        readable(&tmp, 0o755)?;
        let name = file_name(&self.dest);
        kill_point(|| format!("commit:{name}:before-replace"));
        // `symlink_metadata`: a `dest` that is a dangling link is replaced too.
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            let old = replace(&tmp, &self.dest)?;
            kill_point(|| format!("commit:{name}:after-replace"));
            remove_any(&old).map_err(IoError::at(&old))?;
        } else {
            std::fs::rename(&tmp, &self.dest).map_err(IoError::at(&self.dest))?;
            kill_point(|| format!("commit:{name}:after-replace"));
        }
        Ok(self.dest.clone())
    }
}

/// Puts `new` in place of the existing `dest` and returns where the old `dest` now is.
#[cfg(target_os = "linux")]
fn replace(new: &Path, dest: &Path) -> Result<PathBuf> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, new, CWD, dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(new.to_path_buf()),
        // A file system without RENAME_EXCHANGE (or a kernel before 3.15).
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => replace_by_renames(new, dest),
        Err(e) => Err(IoError::at(dest)(e.into())),
    }
}

#[cfg(not(target_os = "linux"))]
fn replace(new: &Path, dest: &Path) -> Result<PathBuf> {
    replace_by_renames(new, dest)
}

/// Two renames: `dest` aside to a temporary name in its folder, then `new` to `dest`. Between
/// them `dest` is missing, but the old one is whole under the aside name.
fn replace_by_renames(new: &Path, dest: &Path) -> Result<PathBuf> {
    let dir = parent(dest);
    let name = file_name(dest);
    let mut n = 0u32;
    let aside = loop {
        let aside = dir.join(format!(".{name}.old.{}-{n}.tmp", std::process::id()));
        if std::fs::symlink_metadata(&aside).is_err() {
            break aside;
        }
        n += 1;
    };
    std::fs::rename(dest, &aside).map_err(IoError::at(dest))?;
    if let Err(e) = std::fs::rename(new, dest) {
        // Put the old one back, so a failed commit leaves `dest` as it was where it can.
        let _ = std::fs::rename(&aside, dest);
        return Err(IoError::at(dest)(e));
    }
    Ok(aside)
}

/// Removes a directory with its contents, or anything else that is not one (without following
/// a link).
fn remove_any(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name().unwrap_or_default().to_string_lossy()
}

/// Removes what killed writes left in `dir`: its entries (files or directories, not looking
/// into subfolders) whose names start with `.` and end with `.tmp`, the temporary names of
/// [`write_atomic`] and [`AtomicDir`]. Returns how many it removed; a missing `dir` has none.
/// Only safe while no other process writes `dir` (under its [`crate::OutLock`]), since a write
/// under way has such a name too.
pub fn remove_temporaries(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(IoError::at(dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(IoError::at(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A bare `.tmp` is nobody's temporary name.
        if name.len() <= ".tmp".len() || !name.starts_with('.') || !name.ends_with(".tmp") {
            continue;
        }
        let path = entry.path();
        match remove_any(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::at(&path)(e)),
        }
    }
    Ok(removed)
}

/// Flushes a writer, naming `path` on failure.
pub(crate) fn flush(w: &mut impl Write, path: &Path) -> Result<()> {
    w.flush().map_err(IoError::at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_neither_file_nor_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"old").unwrap();
        let r: std::result::Result<(), IoError> = write_atomic_path(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(IoError::Json {
                path: tmp.to_path_buf(),
                msg: "stopped".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only x.json remains");
    }

    #[test]
    fn directories_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("step-3");
        {
            let d = AtomicDir::create(&dest).unwrap();
            std::fs::write(d.path().join("a"), b"1").unwrap();
            // dropped without commit
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let d = AtomicDir::create(&dest).unwrap();
        std::fs::write(d.path().join("a"), b"2").unwrap();
        assert_eq!(d.commit().unwrap(), dest);
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"2");
        // A second commit replaces the first.
        let d = AtomicDir::create(&dest).unwrap();
        std::fs::write(d.path().join("b"), b"3").unwrap();
        d.commit().unwrap();
        assert!(!dest.join("a").exists());
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"3");
    }

    /// The entries of `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn read_json_reads_what_write_json_atomic_wrote_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_json_atomic(&path, &vec![1.5f64, -2.0]).unwrap();
        assert_eq!(read_json::<Vec<f64>>(&path).unwrap(), vec![1.5, -2.0]);
        std::fs::write(&path, b"[1.5,").unwrap();
        match read_json::<Vec<f64>>(&path).unwrap_err() {
            IoError::Json { path: p, .. } => assert_eq!(p, path),
            other => panic!("not Json: {other:?}"),
        }
        let missing = dir.path().join("absent.json");
        match read_json::<Vec<f64>>(&missing).unwrap_err() {
            IoError::Io { path: p, source } => {
                assert_eq!(p, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("not Io: {other:?}"),
        }
    }

    #[test]
    fn remove_temporaries_removes_dot_tmp_entries_only_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(remove_temporaries(&d.join("absent")).unwrap(), 0);
        std::fs::write(d.join(".x.json.ab12.tmp"), b"half").unwrap();
        std::fs::create_dir_all(d.join(".step-3.cd34.tmp/inner")).unwrap();
        std::fs::write(d.join(".step-3.cd34.tmp/inner/a"), b"1").unwrap();
        for kept in ["x.tmp", ".shear.lock", ".tmp", ".hidden", "keep"] {
            std::fs::write(d.join(kept), b"").unwrap();
        }
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/.y.tmp"), b"").unwrap();
        assert_eq!(remove_temporaries(d).unwrap(), 2);
        assert_eq!(
            names(d),
            [".hidden", ".shear.lock", ".tmp", "keep", "sub", "x.tmp"]
        );
        assert_eq!(names(&d.join("sub")), [".y.tmp"], "not recursive");
        assert_eq!(remove_temporaries(d).unwrap(), 0);
    }

    #[test]
    fn the_fallback_renames_the_old_directory_aside() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("step-1");
        let new = dir.path().join(".step-1.new.tmp");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("v"), b"old").unwrap();
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("v"), b"new").unwrap();
        let aside = replace_by_renames(&new, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("v")).unwrap(), b"new");
        assert_eq!(std::fs::read(aside.join("v")).unwrap(), b"old");
        let aside_name = aside.file_name().unwrap().to_str().unwrap();
        assert!(aside_name.starts_with(".step-1.old."), "{aside_name}");
        assert_eq!(names(dir.path()), [aside_name, "step-1"]);
        // What a kill before the aside copy's removal leaves, the next run removes.
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 1);
        assert_eq!(names(dir.path()), ["step-1"]);
    }

    #[test]
    fn a_commit_replaces_a_file_or_a_dangling_link_too() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::write(&dest, b"a file").unwrap();
        let d = AtomicDir::create(&dest).unwrap();
        std::fs::write(d.path().join("a"), b"1").unwrap();
        d.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"1");
        assert_eq!(names(dir.path()), ["out"]);
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
            let d = AtomicDir::create(&link).unwrap();
            std::fs::write(d.path().join("b"), b"2").unwrap();
            d.commit().unwrap();
            assert!(std::fs::symlink_metadata(&link).unwrap().is_dir());
            assert_eq!(std::fs::read(link.join("b")).unwrap(), b"2");
            assert_eq!(names(dir.path()), ["link", "out"]);
        }
    }

    /// Kills a child process at each kill point of a write and of a commit over an older
    /// directory: what is left is old or new, whole, plus one temporary that
    /// `remove_temporaries` removes.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_kill_at_any_point_leaves_old_or_new_plus_one_temporary() {
        use std::os::unix::process::ExitStatusExt;
        const NAME: &str =
            "atomic::tests::a_kill_at_any_point_leaves_old_or_new_plus_one_temporary";
        if let Some(dir) = crate::hooks::child::arg() {
            let dir = Path::new(&dir);
            write_atomic(&dir.join("x.json"), b"new").unwrap();
            let d = AtomicDir::create(&dir.join("step-1")).unwrap();
            std::fs::write(d.path().join("v"), b"new").unwrap();
            d.commit().unwrap();
            return;
        }
        // (kill point, x.json after, step-1/v after, what the temporary holds)
        let cases = [
            ("write:x.json:before-rename", "old", "old", "new"),
            ("commit:step-1:before-replace", "new", "old", "new"),
            ("commit:step-1:after-replace", "new", "new", "old"),
        ];
        for (point, x, v, left) in cases {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::write(d.join("x.json"), b"old").unwrap();
            std::fs::create_dir(d.join("step-1")).unwrap();
            std::fs::write(d.join("step-1/v"), b"old").unwrap();
            let out = crate::hooks::child::test(NAME, d.to_str().unwrap())
                .env(crate::KILL_AT, point)
                .output()
                .unwrap();
            assert_eq!(out.status.signal(), Some(9), "{point}: {:?}", out.status);
            assert_eq!(
                std::fs::read(d.join("x.json")).unwrap(),
                x.as_bytes(),
                "{point}"
            );
            assert_eq!(
                std::fs::read(d.join("step-1/v")).unwrap(),
                v.as_bytes(),
                "{point}"
            );
            let all = names(d);
            let temps: Vec<_> = all.iter().filter(|n| n.ends_with(".tmp")).collect();
            assert_eq!(temps.len(), 1, "{point}: {all:?}");
            let temp = d.join(temps[0]);
            let held = match temp.is_dir() {
                true => std::fs::read(temp.join("v")).unwrap(),
                false => std::fs::read(&temp).unwrap(),
            };
            assert_eq!(held, left.as_bytes(), "{point}");
            assert_eq!(remove_temporaries(d).unwrap(), 1);
            assert_eq!(names(d), ["step-1", "x.json"], "{point}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write_atomic(&path, b"1").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
