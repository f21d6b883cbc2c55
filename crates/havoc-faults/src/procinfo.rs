//! Reading processes from /proc: identity (pid + start time), state, names, cgroups.

use std::path::PathBuf;

use procfs::process::Process;

/// A snapshot of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    /// Start time in clock ticks after boot: with the pid, a unique identity.
    pub start_time: u64,
    pub comm: String,
    pub exe_name: Option<String>,
    pub cmdline: Vec<String>,
    /// One-letter state from /proc/PID/stat (R, S, D, T, t, Z, X, I).
    pub state: char,
    pub kernel_thread: bool,
}

const PF_KTHREAD: u32 = 0x0020_0000;

impl ProcInfo {
    pub fn read(pid: i32) -> Option<ProcInfo> {
        let p = Process::new(pid).ok()?;
        let stat = p.stat().ok()?;
        let cmdline = p.cmdline().unwrap_or_default();
        let exe_name = p
            .exe()
            .ok()
            .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()));
        Some(ProcInfo {
            pid,
            ppid: stat.ppid,
            start_time: stat.starttime,
            comm: stat.comm,
            exe_name,
            kernel_thread: stat.flags & PF_KTHREAD != 0 || pid == 2 || stat.ppid == 2,
            cmdline,
            state: stat.state,
        })
    }

    /// True when `pid` still names the process that started at `start_time`.
    pub fn is_same(pid: i32, start_time: u64) -> bool {
        Self::read(pid).is_some_and(|p| p.start_time == start_time)
    }

    pub fn is_stopped(&self) -> bool {
        self.state == 'T' || self.state == 't'
    }

    pub fn is_dead(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// CPU time used (user + system), in seconds.
    pub fn cpu_seconds(pid: i32) -> Option<f64> {
        let stat = Process::new(pid).ok()?.stat().ok()?;
        Some((stat.utime + stat.stime) as f64 / havoc_sys::process::clock_ticks_per_second() as f64)
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(pid: i32) -> Option<u64> {
        let status = Process::new(pid).ok()?.status().ok()?;
        status.vmrss.map(|kib| kib * 1024)
    }
}

/// Every process visible in /proc, sorted by pid.
pub fn all_processes() -> Vec<ProcInfo> {
    let mut out: Vec<ProcInfo> = procfs::process::all_processes()
        .map(|it| {
            it.filter_map(|p| p.ok())
                .filter_map(|p| ProcInfo::read(p.pid))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|p| p.pid);
    out
}

/// The cgroup memberships of a process: (hierarchy id, controllers, path).
pub fn cgroups_of(pid: i32) -> Vec<(u32, Vec<String>, String)> {
    Process::new(pid)
        .and_then(|p| p.cgroups())
        .map(|cgs| {
            cgs.into_iter()
                .map(|c| (c.hierarchy, c.controllers, c.pathname))
                .collect()
        })
        .unwrap_or_default()
}

/// The ancestors of `pid` (parent, grandparent, ... up to pid 1).
pub fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..4096 {
        match ProcInfo::read(cur) {
            Some(p) if p.ppid > 0 => {
                out.push(p.ppid);
                cur = p.ppid;
            }
            _ => break,
        }
    }
    out
}

/// The network namespace file of a process.
pub fn netns_path(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}
