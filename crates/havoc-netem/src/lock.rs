//! One host-wide lock around Havoc's own changes to iptables tables and tc objects.
//!
//! Any number of runs (and agent injections) may add and remove rules in the same namespace at
//! the same time. Every object is found by identity (chain name, rule spec, comment, handle),
//! never by position, but some decisions read state and then act on it: "is the `mangle` table
//! there, or must we create it (and mark it as ours)?", "is it empty now, so we delete it?",
//! "which `hvifb<n>` name is free?". Holding this lock across each such read-then-act sequence
//! makes them atomic with respect to every other Havoc process. It is an `flock(2)` on
//! [`LOCK_PATH`]: the kernel releases it when its holder dies, so a crash never wedges it.

use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// The lock file.
pub const LOCK_PATH: &str = "/run/havoc/netem.lock";
/// How long a change waits for the lock before it fails.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("failed to open the lock file {path}")]
    Open {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock {path}")]
    Lock {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {waited:?} waiting for {path} (another Havoc process holds it)")]
    Timeout {
        path: &'static str,
        waited: Duration,
    },
}

/// Held while it lives; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct EditLock {
    _file: File,
}

/// Takes the lock, waiting at most [`LOCK_WAIT`]. Not re-entrant: a holder must not take it
/// again (each open file description is a separate lock owner).
pub fn edit_lock() -> Result<EditLock, LockError> {
    let dir = std::path::Path::new(LOCK_PATH)
        .parent()
        .expect("lock path has a parent");
    std::fs::create_dir_all(dir).map_err(|source| LockError::Open {
        path: LOCK_PATH,
        source,
    })?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(LOCK_PATH)
        .map_err(|source| LockError::Open {
            path: LOCK_PATH,
            source,
        })?;
    let start = Instant::now();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(EditLock { _file: file }),
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(LockError::Timeout {
                        path: LOCK_PATH,
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(LockError::Lock {
                    path: LOCK_PATH,
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED a_second_holder_waits_for_the_first: /run/havoc needs root");
            return;
        }
        let first = edit_lock().expect("first lock");
        let t = std::thread::spawn(|| {
            let start = Instant::now();
            let _second = edit_lock().expect("second lock");
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
        let waited = t.join().expect("second holder");
        assert!(
            waited >= Duration::from_millis(90),
            "waited only {waited:?}"
        );
    }
}
