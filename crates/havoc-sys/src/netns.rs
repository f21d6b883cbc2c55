//! Running code inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread* only, so every piece of work that must
//! happen inside a namespace runs on a fresh thread that enters it and then dies: the namespace can
//! never leak into a tokio worker or into the caller's thread. File descriptors created inside
//! (netlink sockets, BPF links) stay valid after the thread ends and keep working in the namespace
//! they were created in.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::SysError;

/// A reference to a network namespace: a path to an nsfs file such as `/run/netns/NAME` or
/// `/proc/PID/ns/net`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetNs {
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("failed to open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: SysError,
    },
    #[error("the thread running code in network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

impl NetNs {
    /// The namespace at `path` (nsfs file).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// A named namespace as created by `ip netns add NAME`.
    pub fn named(name: &str) -> Self {
        Self::from_path(Path::new("/run/netns").join(name))
    }

    /// The network namespace of a process.
    pub fn of_pid(pid: i32) -> Self {
        Self::from_path(format!("/proc/{pid}/ns/net"))
    }

    /// The namespace of the calling process (the host namespace when Havoc runs on the host).
    pub fn current() -> Self {
        Self::from_path("/proc/self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: two references name the same namespace iff these are equal.
    pub fn inode(&self) -> Result<u64, NetNsError> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path)
            .map(|m| m.ino())
            .map_err(|source| NetNsError::Open {
                path: self.path.clone(),
                source,
            })
    }

    /// Runs `f` on a dedicated thread that has entered this namespace, and returns its result.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(&self.path).map_err(|source| NetNsError::Open {
            path: self.path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T, NetNsError> {
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| NetNsError::Enter {
                    path: self.path.clone(),
                    source: SysError::new("setns", e),
                })?;
                Ok(f())
            });
            handle.join().map_err(|_| NetNsError::Panicked {
                path: self.path.clone(),
            })?
        })
    }
}
