//! A lock file per running run, held by the process that drives it.
//!
//! The operating system releases a file lock when its process dies, however
//! it dies (`kill -9` and the OOM killer included). So the next command on
//! the same machine sees at once that a run's driver is gone and marks the
//! run failed, instead of leaving it `running` until its heartbeat lapses
//! ([`STALE_AFTER`](crate::metadata::STALE_AFTER)). Runs driven from other
//! machines are judged by their heartbeats, by the store's clock.
//!
//! The files are `<project>/.zenflow/runs/<run id>.lock`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Where the lock files live, under the project root.
pub const DIR: &str = ".zenflow/runs";

/// What a run whose driver died on this machine records as its error.
pub(crate) const DEAD_ERROR: &str =
    "the process running it on this machine stopped without finishing (killed or crashed): \
                              it no longer holds the run's lock; re-run to resume from the cache";

/// A held run lock: released (and its file removed) when dropped, and by
/// the operating system when the process dies.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
    /// Leave the file when dropped ([`RunLock::abandon`]).
    keep_file: bool,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if !self.keep_file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl RunLock {
    /// Lets go of the lock but leaves its file, as a process that dies
    /// does: for a run whose end could not be recorded (the database was
    /// away), so that the next command on this machine finds the run
    /// [`abandoned`] and closes it at once instead of leaving it `running`.
    pub fn abandon(mut self) {
        self.keep_file = true;
    }
}

fn lock_path(root: &Path, run_id: &str) -> PathBuf {
    root.join(DIR).join(format!("{run_id}.lock"))
}

/// Takes the lock of run `run_id` for this process.
pub fn hold(root: &Path, run_id: &str) -> io::Result<RunLock> {
    let dir = root.join(DIR);
    std::fs::create_dir_all(&dir)?;
    // Locked under a private name, then renamed into place (the lock stays
    // with the open file): no other process ever sees it unlocked.
    let staging = dir.join(format!(".{run_id}.{}.lock", std::process::id()));
    let file = OpenOptions::new().create(true).truncate(true).write(true).open(&staging)?;
    if !try_lock(&file)? {
        return Err(io::Error::other(format!("{} is locked by another process", staging.display())));
    }
    let path = lock_path(root, run_id);
    std::fs::rename(&staging, &path)?;
    Ok(RunLock { path, _file: file, keep_file: false })
}

/// The runs whose lock file no process holds: their driver died (or
/// finished without removing it). Each file is removed only by
/// [`forget`], once the run's record says it ended.
pub fn abandoned(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(DIR)) else { return Vec::new() };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")).filter(|n| !n.starts_with('.')) else {
            continue;
        };
        let Ok(file) = OpenOptions::new().write(true).open(entry.path()) else { continue };
        // Held: its driver lives. Free: nobody holds it (this probe lets
        // go when `file` is dropped).
        if try_lock(&file).unwrap_or(false) {
            ids.push(id.to_string());
        }
    }
    ids.sort();
    ids
}

/// Takes `file`'s exclusive lock if free (`Ok(false)`: another open file
/// holds it). `flock`: the lock belongs to the open file, and the kernel
/// drops it when the last descriptor closes, at exit or on a kill.
#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: `flock` on a descriptor `file` owns, for as long as it lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere there is no run lock: dead runs are found by their heartbeat.
#[cfg(not(unix))]
fn try_lock(_: &File) -> io::Result<bool> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "run locks need flock (a Unix system)"))
}

/// Removes the lock file of run `run_id` (it ended).
pub fn forget(root: &Path, run_id: &str) {
    let _ = std::fs::remove_file(lock_path(root, run_id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_lock_is_left_for_the_next_command() {
        let dir = tempfile::tempdir().unwrap();
        hold(dir.path(), "run-c").unwrap().abandon();
        assert_eq!(abandoned(dir.path()), ["run-c"], "free, and its file is still there");
        forget(dir.path(), "run-c");
        assert!(abandoned(dir.path()).is_empty());
    }

    #[test]
    fn a_held_lock_is_alive_and_a_dropped_one_is_abandoned_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let held = hold(dir.path(), "run-a").unwrap();
        let gone = hold(dir.path(), "run-b").unwrap();
        // What the OS does when a process dies: the lock is released, the
        // file stays.
        let path = gone.path.clone();
        drop(gone);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(abandoned(dir.path()), ["run-b"]);
        assert_eq!(abandoned(dir.path()), ["run-b"], "looking does not take it");
        forget(dir.path(), "run-b");
        assert!(abandoned(dir.path()).is_empty());
        drop(held);
        assert!(!lock_path(dir.path(), "run-a").exists(), "a finished run leaves no file");
        assert!(abandoned(dir.path()).is_empty());
    }
}
