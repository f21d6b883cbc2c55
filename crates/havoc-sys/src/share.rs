//! Liveness held by the kernel: a holder of something shared (a pause of a process, delay rules in
//! a namespace) keeps a shared `flock` on a lock file named after it for as long as it holds it.
//! The kernel drops the lock when the holder dies, however it dies, so anyone can ask "does a live
//! Havoc process still hold this?" by trying to take the lock exclusively. The last holder to let
//! go removes the file while it holds the lock exclusively, so files do not pile up; takers check
//! that the file they locked is still the one at the path, so a removal never splits holders.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// A live share of `dir/name.lock`.
#[derive(Debug)]
pub struct Share {
    file: File,
    path: PathBuf,
    /// No other holder existed when this share was taken.
    pub first: bool,
}

/// The exclusive lock of the last holder (or of a replayer when no live holder is left). Dropping
/// it removes the lock file (still under the lock) and releases it.
#[derive(Debug)]
pub struct Last {
    _file: Option<File>,
    path: Option<PathBuf>,
}

impl Last {
    /// Nothing was ever locked (no lock file): nobody else holds it either.
    pub const NOBODY: Last = Last {
        _file: None,
        path: None,
    };
}

impl Drop for Last {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

/// Whether `file` is still the file at `path` (a last holder may have removed it meanwhile).
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Share {
    /// Takes a share of `dir/name.lock`, creating it (and `dir`) if needed.
    pub fn take(dir: &Path, name: &str) -> std::io::Result<Share> {
        std::fs::create_dir_all(dir)?;
        let path = lock_path(dir, name);
        for _ in 0..100 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            let first = flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
            // EX -> SH is not atomic; a taker in the gap sees no holder and takes a share too,
            // which is what it should do.
            flock(&file, FlockOperation::LockShared)?;
            if still_linked(&file, &path) {
                return Ok(Share { file, path, first });
            }
        }
        Err(std::io::Error::other(format!(
            "the lock {} keeps being replaced",
            path.display()
        )))
    }

    /// Gives up this share: the exclusive lock if this was the last holder (the caller undoes
    /// the shared thing, then drops it), `None` if another holder remains.
    pub fn release(self) -> Option<Last> {
        let _ = flock(&self.file, FlockOperation::Unlock);
        exclusive(self.file, self.path)
    }
}

fn exclusive(file: File, path: PathBuf) -> Option<Last> {
    flock(&file, FlockOperation::NonBlockingLockExclusive)
        .ok()
        .map(|()| Last {
            _file: Some(file),
            path: Some(path),
        })
}

/// Whether a live process holds a share of `dir/name.lock`.
pub fn held(dir: &Path, name: &str) -> bool {
    match File::open(lock_path(dir, name)) {
        Ok(f) => flock(&f, FlockOperation::NonBlockingLockExclusive).is_err(),
        Err(_) => false,
    }
}

/// For replays and sweeps: the exclusive lock when no live holder is left (`Last::NOBODY` when
/// there is no lock file at all), `None` when one still holds a share.
pub fn take_if_unheld(dir: &Path, name: &str) -> Option<Last> {
    let path = lock_path(dir, name);
    match File::open(&path) {
        Ok(file) => exclusive(file, path),
        Err(_) => Some(Last::NOBODY),
    }
}

/// Removes every lock file in `dir` that no live process holds (holders that died leave theirs
/// behind: the kernel drops the lock, not the file). Returns how many were removed.
pub fn remove_unheld(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".lock") else {
            continue;
        };
        if let Some(last) = take_if_unheld(dir, stem) {
            if last.path.is_some() {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_holder_is_told_and_removes_the_file() {
        let d = tempfile_dir();
        let a = Share::take(&d, "x").expect("a");
        let b = Share::take(&d, "x").expect("b");
        assert!(a.first && !b.first);
        assert!(held(&d, "x"));
        assert!(take_if_unheld(&d, "x").is_none());
        assert!(a.release().is_none(), "b still holds");
        let last = b.release().expect("b was last");
        drop(last);
        assert!(!d.join("x.lock").exists());
        assert!(!held(&d, "x"));
        assert!(take_if_unheld(&d, "x").is_some());
        // A holder that died leaves its file; the sweep removes it, and only it.
        drop(Share::take(&d, "dead").expect("dead"));
        let live = Share::take(&d, "live").expect("live");
        assert_eq!(remove_unheld(&d), 1);
        assert!(!d.join("dead.lock").exists() && d.join("live.lock").exists());
        drop(live.release());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("havoc-share-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }
}
