//! Atomic writes: a temporary name in the destination's folder (so the final rename never
//! crosses file systems), flushed and synced, then renamed over the destination.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};

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
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest).map_err(IoError::at(&self.dest))?;
        }
        std::fs::rename(&tmp, &self.dest).map_err(IoError::at(&self.dest))?;
        Ok(self.dest.clone())
    }
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
