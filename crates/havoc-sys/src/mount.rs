//! Mounts in another process's mount namespace: entering it on a dedicated thread, mounting a
//! FUSE file system over a directory, and lazily unmounting exactly the mount Havoc made.
//!
//! `setns(CLONE_NEWNS)` refuses a thread that shares its file-system context (root, cwd, umask)
//! with other threads, which every thread of a Rust program does. [`MountNs::run`] therefore runs
//! the work on a fresh thread that first gives itself a private context (`unshare(CLONE_FS)`),
//! then enters the namespace; the thread ends with the work, so neither the namespace nor a
//! changed working directory can leak into the rest of Havoc. File descriptors opened there
//! (the original directory, the mount's root) stay valid everywhere afterwards.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::SysError;

#[derive(Debug, thiserror::Error)]
pub enum MountNsError {
    #[error("failed to open mount namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter mount namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: SysError,
    },
    #[error("the thread working in mount namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// A reference to a mount namespace: an nsfs file such as `/proc/PID/ns/mnt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountNs {
    path: PathBuf,
}

impl MountNs {
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The mount namespace of a process.
    pub fn of_pid(pid: i32) -> Self {
        Self::from_path(format!("/proc/{pid}/ns/mnt"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: two references name the same namespace iff these are equal.
    pub fn inode(&self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map(|m| m.ino())
    }

    /// Runs `f` on a dedicated thread with its own file-system context, inside this namespace
    /// (its root and working directory are the namespace's root).
    pub fn run<T, F>(&self, f: F) -> Result<T, MountNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(&self.path).map_err(|source| MountNsError::Open {
            path: self.path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T, MountNsError> {
                // SAFETY: unshare(CLONE_FS) only gives this thread a private copy of its root,
                // cwd and umask; it touches no memory and no other thread.
                let rc = unsafe { libc::unshare(libc::CLONE_FS) };
                if rc != 0 {
                    return Err(MountNsError::Enter {
                        path: self.path.clone(),
                        source: SysError::new("unshare(CLONE_FS)", std::io::Error::last_os_error()),
                    });
                }
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Mount),
                )
                .map_err(|e| MountNsError::Enter {
                    path: self.path.clone(),
                    source: SysError::new("setns(CLONE_NEWNS)", e),
                })?;
                Ok(f())
            });
            handle.join().map_err(|_| MountNsError::Panicked {
                path: self.path.clone(),
            })?
        })
    }
}

fn cstring(call: &'static str, bytes: &[u8]) -> Result<CString, SysError> {
    CString::new(bytes).map_err(|_| {
        SysError::new(
            call,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "contains NUL"),
        )
    })
}

/// Opens `/dev/fuse` for a new FUSE connection (close-on-exec).
pub fn open_fuse_device() -> Result<OwnedFd, SysError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(OwnedFd::from)
        .map_err(|e| SysError::new("open(/dev/fuse)", e))
}

/// Mounts the FUSE connection `dev` over the directory `target` (resolved in the calling
/// thread's mount namespace) as `fuse.SUBTYPE` with source `source`. Any user may use it
/// (`allow_other`), and the kernel checks permissions against the attributes the file system
/// reports (`default_permissions`), as it would for the directory underneath.
pub fn mount_fuse(
    dev: BorrowedFd<'_>,
    target: &Path,
    source: &str,
    subtype: &str,
) -> Result<(), SysError> {
    let src = cstring("mount", source.as_bytes())?;
    let tgt = cstring("mount", target.as_os_str().as_bytes())?;
    let fstype = cstring("mount", format!("fuse.{subtype}").as_bytes())?;
    let data = cstring(
        "mount",
        format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
            dev.as_raw_fd()
        )
        .as_bytes(),
    )?;
    // SAFETY: every pointer is a NUL-terminated string that lives until the call returns; the
    // kernel copies them and keeps no reference.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(SysError::new(
            "mount(fuse)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Lazily unmounts (`MNT_DETACH`) the mount whose root `root` is an open descriptor of, and no
/// other: the working directory of the calling thread becomes `root`, then `.` is unmounted.
/// Call it only inside [`MountNs::run`] (the thread's working directory is private there) and in
/// the namespace the mount belongs to.
pub fn unmount_root_detach(root: BorrowedFd<'_>) -> Result<(), SysError> {
    rustix::process::fchdir(root).map_err(|e| SysError::new("fchdir", e))?;
    let dot = cstring("umount2", b".")?;
    // SAFETY: `dot` is a NUL-terminated string alive for the call.
    let rc = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    let err = std::io::Error::last_os_error();
    // Leave the detached tree so this thread holds nothing of it.
    let _ = rustix::process::chdir("/");
    if rc != 0 {
        return Err(SysError::new("umount2(MNT_DETACH)", err));
    }
    Ok(())
}

/// The id of the mount `fd` is on (as in `/proc/PID/mountinfo`'s first column).
pub fn mount_id(fd: BorrowedFd<'_>) -> Result<u64, SysError> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map(|s| s.stx_mnt_id)
        .map_err(|e| SysError::new("statx(STATX_MNT_ID)", e))
}

/// Opens `path` (in the calling thread's mount namespace) without following a final symlink,
/// as an `O_PATH` descriptor of the directory itself.
pub fn open_dir_path(path: &Path) -> Result<OwnedFd, SysError> {
    use rustix::fs::{open, Mode, OFlags};
    open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::new("open(O_PATH|O_DIRECTORY)", e))
}

/// Lazily unmounts the topmost mount at `path` (in the calling thread's mount namespace),
/// without following a final symlink. Works on a FUSE mount whose server is gone: unlike
/// [`unmount_root_detach`] it never asks the file system anything.
pub fn unmount_path_detach(path: &Path) -> Result<(), SysError> {
    let p = cstring("umount2", path.as_os_str().as_bytes())?;
    // SAFETY: `p` is a NUL-terminated string alive for the call.
    let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if rc != 0 {
        return Err(SysError::new(
            "umount2(MNT_DETACH)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Runs `f` on a dedicated thread that sees `dir` as an empty directory: the thread takes a
/// private copy of the mount namespace (`unshare(CLONE_FS | CLONE_NEWNS)`, all mounts made
/// private first so nothing propagates back) and mounts an empty read-only tmpfs over `dir`.
/// The copy dies with the thread; no other thread or process ever sees it.
///
/// For a library that insists on reading a large file Havoc does not need: aya's
/// `EbpfLoader::new()` parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, ~21 ms) before it
/// can be told not to use it, the largest part of a network fault's time to take effect.
pub fn run_with_dir_hidden<T, F>(dir: &Path, f: F) -> Result<T, SysError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let target = cstring("mount", dir.as_os_str().as_bytes())?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<T, SysError> {
                // SAFETY: unshare only changes this thread's file-system context and mount
                // namespace; it touches no memory.
                if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
                    return Err(SysError::new(
                        "unshare(CLONE_FS|CLONE_NEWNS)",
                        std::io::Error::last_os_error(),
                    ));
                }
                let root = cstring("mount", b"/")?;
                let tmpfs = cstring("mount", b"tmpfs")?;
                let opts = cstring("mount", b"size=4k,mode=0555")?;
                // SAFETY: valid NUL-terminated strings that outlive the calls; the mounts
                // change only this thread's private namespace (made private first).
                unsafe {
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(SysError::new(
                            "mount(/, MS_REC|MS_PRIVATE)",
                            std::io::Error::last_os_error(),
                        ));
                    }
                    if libc::mount(
                        tmpfs.as_ptr(),
                        target.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        opts.as_ptr().cast(),
                    ) != 0
                    {
                        return Err(SysError::new(
                            "mount(tmpfs)",
                            std::io::Error::last_os_error(),
                        ));
                    }
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

#[cfg(test)]
mod hidden_dir_tests {
    use super::*;

    /// Needs root (mounts); elsewhere it says so, and fails under CI.
    #[test]
    fn a_hidden_dir_is_empty_for_the_closure_only_and_no_mount_is_left() {
        if !rustix::process::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root under CI");
            eprintln!("SKIPPED: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), b"x").expect("write");
        let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let seen = run_with_dir_hidden(dir.path(), || {
            std::fs::read_dir(dir.path())
                .expect("read the hidden dir")
                .count()
        })
        .expect("hidden");
        assert_eq!(seen, 0, "the closure saw the directory's files");
        assert!(
            dir.path().join("file").exists(),
            "the file is gone for the rest"
        );
        let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert_eq!(mounts_before, mounts_after, "a mount was left behind");
    }
}
