//! `havoc-sys`: the only crate of Havoc allowed to use `unsafe`.
//!
//! Everything that touches the kernel below the level of a safe, well-kept crate lives here, so
//! that a reviewer auditing Havoc's unsafe code reads one crate: entering namespaces on a
//! dedicated thread, signals, and the pre-exec glue that ties a helper process's life to ours.
//! It knows nothing about experiments.

pub mod mount;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod process;
pub mod ptrace;
pub mod share;
pub mod vdso;

/// A failed system call, named after the call, with the OS error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed")]
pub struct SysError {
    pub call: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl SysError {
    pub fn new(call: &'static str, source: impl Into<std::io::Error>) -> Self {
        Self {
            call,
            source: source.into(),
        }
    }

    /// The raw errno, when the cause carries one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}
