//! `SyscallChaos`: make chosen system calls of a running process fail or slow down.
//!
//! `syscalls` names the calls (x86-64 Linux names such as `openat`, `connect`, `read`); `errno`
//! (a name such as `EACCES` or a number) is what a hit call returns, `percent` of the matching
//! calls are hit (100 by default), `delay` holds each hit call that long first, and `path` (a glob
//! such as `/data/**/*.db`) restricts the fault to calls whose path argument matches.

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{clip, HumanDuration, Percent};

/// One system call of the table: x86-64 number, and which arguments are a path and its
/// directory descriptor (for the `*at` calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallDef {
    pub name: &'static str,
    pub nr: u64,
    /// Index of the argument holding a path, if the call takes one.
    pub path_arg: Option<usize>,
    /// Index of the directory descriptor a relative path is resolved against (`*at` calls).
    pub dirfd_arg: Option<usize>,
}

const fn def(name: &'static str, nr: u64) -> SyscallDef {
    SyscallDef {
        name,
        nr,
        path_arg: None,
        dirfd_arg: None,
    }
}

const fn path(name: &'static str, nr: u64, arg: usize) -> SyscallDef {
    SyscallDef {
        name,
        nr,
        path_arg: Some(arg),
        dirfd_arg: None,
    }
}

const fn at(name: &'static str, nr: u64, dirfd: usize, arg: usize) -> SyscallDef {
    SyscallDef {
        name,
        nr,
        path_arg: Some(arg),
        dirfd_arg: Some(dirfd),
    }
}

/// The system calls SyscallChaos knows by name (x86-64 numbers).
pub const SYSCALLS: &[SyscallDef] = &[
    def("read", 0),
    def("write", 1),
    path("open", 2, 0),
    def("close", 3),
    path("stat", 4, 0),
    def("fstat", 5),
    path("lstat", 6, 0),
    def("poll", 7),
    def("lseek", 8),
    def("mmap", 9),
    def("mprotect", 10),
    def("munmap", 11),
    def("brk", 12),
    def("ioctl", 16),
    def("pread64", 17),
    def("pwrite64", 18),
    def("readv", 19),
    def("writev", 20),
    path("access", 21, 0),
    def("pipe", 22),
    def("select", 23),
    def("sched_yield", 24),
    def("madvise", 28),
    def("dup", 32),
    def("dup2", 33),
    def("nanosleep", 35),
    def("getpid", 39),
    def("sendfile", 40),
    def("socket", 41),
    def("connect", 42),
    def("accept", 43),
    def("sendto", 44),
    def("recvfrom", 45),
    def("sendmsg", 46),
    def("recvmsg", 47),
    def("shutdown", 48),
    def("bind", 49),
    def("listen", 50),
    def("socketpair", 53),
    def("setsockopt", 54),
    def("getsockopt", 55),
    def("clone", 56),
    def("fork", 57),
    def("vfork", 58),
    path("execve", 59, 0),
    def("kill", 62),
    def("uname", 63),
    def("fcntl", 72),
    def("flock", 73),
    def("fsync", 74),
    def("fdatasync", 75),
    path("truncate", 76, 0),
    def("ftruncate", 77),
    def("getdents", 78),
    path("chdir", 80, 0),
    def("fchdir", 81),
    path("rename", 82, 0),
    path("mkdir", 83, 0),
    path("rmdir", 84, 0),
    path("creat", 85, 0),
    path("link", 86, 0),
    path("unlink", 87, 0),
    path("symlink", 88, 1),
    path("readlink", 89, 0),
    path("chmod", 90, 0),
    def("fchmod", 91),
    path("chown", 92, 0),
    def("fchown", 93),
    path("lchown", 94, 0),
    def("gettimeofday", 96),
    path("statfs", 137, 0),
    def("fstatfs", 138),
    path("mknod", 133, 0),
    path("chroot", 161, 0),
    path("mount", 165, 1),
    path("umount2", 166, 0),
    path("setxattr", 188, 0),
    path("getxattr", 191, 0),
    def("time", 201),
    def("futex", 202),
    def("getdents64", 217),
    def("clock_gettime", 228),
    def("clock_nanosleep", 230),
    def("epoll_wait", 232),
    def("epoll_ctl", 233),
    at("openat", 257, 0, 1),
    at("mkdirat", 258, 0, 1),
    at("mknodat", 259, 0, 1),
    at("fchownat", 260, 0, 1),
    at("newfstatat", 262, 0, 1),
    at("unlinkat", 263, 0, 1),
    at("renameat", 264, 0, 1),
    at("linkat", 265, 0, 1),
    path("symlinkat", 266, 2),
    at("readlinkat", 267, 0, 1),
    at("fchmodat", 268, 0, 1),
    at("faccessat", 269, 0, 1),
    def("pselect6", 270),
    def("ppoll", 271),
    at("utimensat", 280, 0, 1),
    def("epoll_pwait", 281),
    def("fallocate", 285),
    def("accept4", 288),
    def("eventfd2", 290),
    def("epoll_create1", 291),
    def("dup3", 292),
    def("pipe2", 293),
    def("preadv", 295),
    def("pwritev", 296),
    def("recvmmsg", 299),
    def("sendmmsg", 307),
    at("renameat2", 316, 0, 1),
    def("getrandom", 318),
    def("memfd_create", 319),
    at("execveat", 322, 0, 1),
    def("copy_file_range", 326),
    def("preadv2", 327),
    def("pwritev2", 328),
    at("statx", 332, 0, 1),
    def("io_uring_enter", 426),
    def("io_uring_setup", 425),
    at("openat2", 437, 0, 1),
    at("faccessat2", 439, 0, 1),
];

/// Looks a system call up by name.
pub fn lookup(name: &str) -> Option<&'static SyscallDef> {
    SYSCALLS.iter().find(|d| d.name == name)
}

pub use crate::errno::{Errno, ERRNOS};

/// The longest `delay` a hit call may be held.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

fn hundred() -> Percent {
    Percent(100.0)
}

fn is_hundred(p: &Percent) -> bool {
    p.0 == 100.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyscallChaos {
    /// The calls to fault, by name (`openat`, `connect`).
    pub syscalls: Vec<String>,
    /// What a hit call returns (it is not carried out). Without it a hit call is only delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    /// Share of the matching calls that are hit (100 by default).
    #[serde(default = "hundred", skip_serializing_if = "is_hundred")]
    pub percent: Percent,
    /// Hold each hit call this long before it fails (or runs, without errno).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// Only calls whose path argument matches this glob (`*` within a name, `**` across
    /// directories); relative paths are resolved against the caller's directory first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub selector: Selector,
}

impl SyscallChaos {
    /// The table entries of `syscalls` (names that are not known are left out; validation
    /// reports them).
    pub fn defs(&self) -> Vec<&'static SyscallDef> {
        self.syscalls.iter().filter_map(|s| lookup(s)).collect()
    }

    pub fn summary(&self) -> String {
        let mut s = self.syscalls.join(",");
        if let Some(e) = self.errno {
            s.push_str(&format!(" -> {e}"));
        }
        if let Some(d) = self.delay {
            s.push_str(&format!(" delayed {d}"));
        }
        if !is_hundred(&self.percent) {
            s.push_str(&format!(" on {}% of calls", self.percent));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(" for paths {}", clip(p)));
        }
        s
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        let sp = path.key("syscalls");
        if self.syscalls.is_empty() {
            p.add(&sp, "list at least one system call, e.g. `[openat]`");
        }
        let names: Vec<&str> = SYSCALLS.iter().map(|d| d.name).collect();
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.syscalls.iter().enumerate() {
            match lookup(s) {
                None => {
                    let hint = crate::de::closest(s, &names)
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default();
                    p.add(
                        &sp.index(i),
                        format!(
                            "unknown system call `{}`: {hint}use an x86-64 Linux name such as openat, read, connect",
                            clip(s)
                        ),
                    );
                }
                Some(_) if !seen.insert(s.as_str()) => {
                    p.add(&sp.index(i), format!("`{s}` is listed twice"))
                }
                Some(_) => {}
            }
        }
        if self.errno.is_none() && self.delay.is_none() {
            p.add(
                &path.key("errno"),
                "give errno (what the call returns), delay (how long it is held), or both",
            );
        }
        if self.percent.0 <= 0.0 {
            p.add(&path.key("percent"), "must be greater than 0");
        }
        if let Some(d) = self.delay {
            if d.0 > MAX_DELAY {
                p.add(&path.key("delay"), format!("must be at most 60s, got {d}"));
            }
        }
        if let Some(glob) = &self.path {
            if let Err(e) = glob::Pattern::new(glob) {
                p.add(
                    &path.key("path"),
                    format!("`{}` is not a valid glob: {}", clip(glob), e.msg),
                );
            } else if !glob.starts_with('/') {
                p.add(
                    &path.key("path"),
                    format!(
                        "`{}` must be absolute (start with `/`): relative paths of calls are resolved before matching",
                        clip(glob)
                    ),
                );
            }
            let without: Vec<&str> = self
                .defs()
                .iter()
                .filter(|d| d.path_arg.is_none())
                .map(|d| d.name)
                .collect();
            if !without.is_empty() {
                p.add(
                    &path.key("path"),
                    format!(
                        "{} take(s) no path: list only calls with a path argument (openat, stat, unlink...) or remove path",
                        without.join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_name_or_number() {
        assert_eq!("EACCES".parse::<Errno>().unwrap(), Errno(13));
        assert_eq!("eio".parse::<Errno>().unwrap(), Errno(5));
        assert_eq!("111".parse::<Errno>().unwrap().to_string(), "ECONNREFUSED");
        assert!("EACCESS".parse::<Errno>().unwrap_err().contains("EACCES"));
        assert!("0".parse::<Errno>().is_err());
    }

    #[test]
    fn table_has_unique_names_and_numbers() {
        let mut names = std::collections::HashSet::new();
        let mut nrs = std::collections::HashSet::new();
        for d in SYSCALLS {
            assert!(names.insert(d.name), "{} twice", d.name);
            assert!(nrs.insert(d.nr), "{} twice", d.nr);
        }
        assert_eq!(lookup("openat").unwrap().path_arg, Some(1));
        assert_eq!(lookup("connect").unwrap().nr, 42);
    }
}
