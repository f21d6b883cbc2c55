//! cgroups v1 and v2: finding a process's cgroup directories, joining them, reading limits.
//!
//! Hosts differ: pure v2 (most Kubernetes nodes), pure v1, or hybrid (this project's CI: v1
//! controllers plus an almost empty v2 tree). Everything here works from /proc/PID/cgroup and the
//! mount table, so it follows whatever layout the host has.

use std::path::PathBuf;

use crate::procinfo::cgroups_of;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    pub v2: bool,
    /// v1 controllers (and `name=X` for named hierarchies); empty for v2.
    pub controllers: Vec<String>,
}

/// Every cgroup hierarchy mounted in our mount namespace.
pub fn hierarchies() -> Vec<Hierarchy> {
    let Ok(me) = procfs::process::Process::myself() else {
        return Vec::new();
    };
    let Ok(mounts) = me.mountinfo() else {
        return Vec::new();
    };
    mounts
        .into_iter()
        .filter_map(|m| match m.fs_type.as_str() {
            "cgroup2" => Some(Hierarchy {
                mount_point: m.mount_point,
                v2: true,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let controllers = m
                    .super_options
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) if k == "name" => format!("name={v}"),
                        _ => k.clone(),
                    })
                    .filter(|c| c != "rw" && c != "ro")
                    .collect();
                Some(Hierarchy {
                    mount_point: m.mount_point,
                    v2: false,
                    controllers,
                })
            }
            _ => None,
        })
        .collect()
}

/// The cgroup directories `pid` is in, one per mounted hierarchy: (controllers, directory).
pub fn directories_of(pid: i32) -> Vec<(Vec<String>, PathBuf)> {
    let hs = hierarchies();
    let mut out = Vec::new();
    for (hier, controllers, path) in cgroups_of(pid) {
        let rel = path.trim_start_matches('/');
        let found = if hier == 0 {
            hs.iter().find(|h| h.v2)
        } else {
            hs.iter().find(|h| {
                !h.v2
                    && !controllers.is_empty()
                    && controllers.iter().all(|c| h.controllers.contains(c))
            })
        };
        if let Some(h) = found {
            let dir = h.mount_point.join(rel);
            if dir.is_dir() {
                out.push((controllers, dir));
            }
        }
    }
    out
}

/// Moves `pid` into every cgroup directory that `target` is in, so the target's limits apply to
/// it. Returns the directories joined.
pub fn join_cgroups_of(target: i32, pid: i32) -> Result<Vec<PathBuf>, crate::FaultError> {
    let mut joined = Vec::new();
    for (_, dir) in directories_of(target) {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| crate::FaultError::Io {
            action: format!("move helper pid {pid} into cgroup {}", dir.display()),
            target: format!("pid {target}"),
            source,
        })?;
        joined.push(dir);
    }
    Ok(joined)
}

/// The memory limit that applies to `pid`'s memory cgroup, if any (v2 `memory.max`, v1
/// `memory.limit_in_bytes`).
pub fn memory_limit_of(pid: i32) -> Option<u64> {
    for (controllers, dir) in directories_of(pid) {
        let file = if controllers.is_empty() {
            dir.join("memory.max")
        } else if controllers.iter().any(|c| c == "memory") {
            dir.join("memory.limit_in_bytes")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            let t = text.trim();
            if t == "max" {
                continue;
            }
            if let Ok(v) = t.parse::<u64>() {
                if v < (1 << 62) {
                    return Some(v);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_cgroups_resolve_to_existing_directories() {
        let dirs = directories_of(std::process::id() as i32);
        assert!(!dirs.is_empty(), "at least one cgroup hierarchy is mounted");
        for (_, d) in dirs {
            assert!(
                d.join("cgroup.procs").exists(),
                "{} has cgroup.procs",
                d.display()
            );
        }
    }
}
