//! An advisory lock on an output directory: `DIR/.shear.lock`, locked exclusively and holding
//! the holder's pid, so that two shear processes never write one directory (docs/algorithm.md
//! §9). The kernel releases the lock of a killed process, so a lock left by a kill is simply
//! taken by the next run.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = ".shear.lock";

/// How often [`OutLock::acquire`] opens the lock file again when the file it locked was removed
/// (by a holder ending) between its open and its lock.
const ATTEMPTS: usize = 8;

/// An exclusive advisory lock on a directory, held until dropped.
#[derive(Debug)]
pub struct OutLock {
    file: File,
    path: PathBuf,
    taken_over: Option<u32>,
}

impl OutLock {
    /// Locks the existing directory `dir` for this process, or fails with [`IoError::Locked`]
    /// (naming the holder's pid) when another process, or another `OutLock` of this one, holds
    /// it. It never waits.
    pub fn acquire(dir: &Path) -> Result<OutLock> {
        let path = dir.join(LOCK_FILE);
        for _ in 0..ATTEMPTS {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(IoError::at(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(IoError::Locked {
                        path: dir.to_path_buf(),
                        pid: read_pid(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(IoError::at(&path)(e)),
            }
            // A holder removes the file while it still holds the lock (see `Drop`): if that
            // happened between our open and our lock, we hold a lock on a file no one else will
            // see, so open the new one.
            if !names(&path, &file)? {
                continue;
            }
            let previous = read_pid(&mut file);
            let own = std::process::id();
            file.set_len(0).map_err(IoError::at(&path))?;
            file.rewind().map_err(IoError::at(&path))?;
            writeln!(file, "{own}").map_err(IoError::at(&path))?;
            file.flush().map_err(IoError::at(&path))?;
            let taken_over = previous.filter(|&pid| pid != own && has_ended(pid));
            return Ok(OutLock {
                file,
                path,
                taken_over,
            });
        }
        // The file was replaced under us every time: other processes keep taking and leaving
        // the lock, so the directory is in use.
        Err(IoError::Locked {
            path: dir.to_path_buf(),
            pid: std::fs::File::open(&path)
                .ok()
                .and_then(|mut f| read_pid(&mut f)),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid found in the lock file when it was locked, when that was another process that
    /// is no longer running: a lock left by a killed run (the kernel released its lock), taken
    /// over. `None` also where whether a process runs is unknown (platforms other than Linux).
    pub fn taken_over(&self) -> Option<u32> {
        self.taken_over
    }
}

impl Drop for OutLock {
    /// Removes the lock file while still holding the lock (the lock then goes with the handle),
    /// so a directory a command was refused for, or that it did not change, stays as it was.
    /// Only removes the path while it still names the locked file; failure is ignored.
    fn drop(&mut self) {
        if let Ok(true) = names(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid written in a lock file; `None` when empty (a holder between its lock and its write)
/// or unreadable.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether `path` still names the open `file` (the same device and inode). A missing path is
/// `false`.
#[cfg(unix)]
fn names(path: &Path, file: &File) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().map_err(IoError::at(path))?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IoError::at(path)(e)),
    }
}

/// Without inode numbers in std, only a missing path is told apart.
#[cfg(not(unix))]
fn names(path: &Path, _: &File) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IoError::at(path)(e)),
    }
}

/// Whether process `pid` is known to have ended: on Linux, `/proc/{pid}` is missing while
/// `/proc` is mounted (without `/proc/self`, nothing is known).
#[cfg(target_os = "linux")]
fn has_ended(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn has_ended(_: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_in(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = OutLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.path(), dir.path().join(LOCK_FILE));
        assert_eq!(pid_in(lock.path()), format!("{}\n", std::process::id()));
        assert_eq!(lock.taken_over(), None);

        let e = OutLock::acquire(dir.path()).unwrap_err();
        match &e {
            IoError::Locked { path, pid } => {
                assert_eq!(path, dir.path());
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("not Locked: {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!(
                "{} is in use by another shear process (pid {}); wait for it to end or choose \
                 another output directory",
                dir.path().display(),
                std::process::id()
            )
        );
        // The refused attempt left the holder's file as it was.
        assert_eq!(pid_in(lock.path()), format!("{}\n", std::process::id()));

        let file = lock.path().to_path_buf();
        drop(lock);
        assert!(!file.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let again = OutLock::acquire(dir.path()).unwrap();
        assert_eq!(again.taken_over(), None, "the last holder left no file");
    }

    #[test]
    fn a_removed_or_replaced_lock_file_is_told_apart() {
        // What makes `acquire` open again when a holder removed the file under it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let file = File::create(&path).unwrap();
        assert!(names(&path, &file).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!names(&path, &file).unwrap());
        let _other = File::create(&path).unwrap();
        #[cfg(unix)]
        assert!(!names(&path, &file).unwrap(), "another inode");
    }

    #[test]
    fn without_a_readable_pid_the_message_names_none() {
        let e = IoError::Locked {
            path: PathBuf::from("out"),
            pid: None,
        };
        assert_eq!(
            e.to_string(),
            "out is in use by another shear process; wait for it to end or choose another \
             output directory"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let e = OutLock::acquire(&missing).unwrap_err();
        assert!(matches!(&e, IoError::Io { path, .. } if *path == missing.join(LOCK_FILE)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_file_of_an_ended_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        assert!(child.wait().unwrap().success());
        std::fs::write(dir.path().join(LOCK_FILE), format!("{ended}\n")).unwrap();
        let lock = OutLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over(), Some(ended));
        assert_eq!(pid_in(lock.path()), format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_lock_file_naming_a_running_process_is_not_reported_as_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // This process runs: a file left with its pid (say, its remove failed) is taken quietly.
        std::fs::write(
            dir.path().join(LOCK_FILE),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let lock = OutLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over(), None);
    }

    /// A lock held by another process refuses this one, and once that process is killed with
    /// SIGKILL (no destructor runs, the file stays), the next lock takes it over.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_of_a_killed_process_is_taken_over() {
        const NAME: &str = "lock::tests::a_lock_of_a_killed_process_is_taken_over";
        if let Some(dir) = crate::hooks::child::arg() {
            let dir = Path::new(&dir);
            let _lock = OutLock::acquire(dir).unwrap();
            std::fs::write(dir.join("ready"), b"").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
            panic!("not killed");
        }
        /// Kills the child however the test ends.
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let child = crate::hooks::child::test(NAME, dir.path().to_str().unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Reap(child);
        let holder = child.0.id();
        let start = std::time::Instant::now();
        while !dir.path().join("ready").exists() {
            assert!(
                start.elapsed().as_secs() < 30,
                "the child did not lock: {:?}",
                child.0.try_wait()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        match OutLock::acquire(dir.path()) {
            Err(IoError::Locked { pid, .. }) => assert_eq!(pid, Some(holder)),
            other => panic!("not refused: {other:?}"),
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        assert_eq!(pid_in(&dir.path().join(LOCK_FILE)), format!("{holder}\n"));
        let lock = OutLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over(), Some(holder));
    }
}
