//! Resolving selectors to concrete targets: the one step of a run that looks at the world.
//!
//! Protected processes are never targets: PID 1, kernel threads, Havoc itself, its ancestors
//! (the shell or sudo that started it) and its helpers. A selector that names one of them
//! explicitly is refused with the reason; `mode` then picks among the remaining matches with the
//! run's seeded random generator.

use std::path::PathBuf;

use havoc_faults::procinfo::{self, ProcInfo};
use havoc_faults::Target;
use havoc_spec::selector::{choose, Selector};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResolveError {
    #[error("fault `{fault}`: no process matches the selector ({criteria})")]
    NoMatch { fault: String, criteria: String },
    #[error("fault `{fault}`: {what} is protected and never a target: {why}")]
    Protected {
        fault: String,
        what: String,
        why: String,
    },
    #[error("fault `{fault}`: network namespace `{name}` does not exist ({path})")]
    NoNetns {
        fault: String,
        name: String,
        path: String,
    },
    #[error("fault `{fault}`: {message}")]
    Invalid { fault: String, message: String },
}

/// Who must never be hit.
#[derive(Debug, Clone)]
pub struct Protection {
    pids: Vec<i32>,
}

impl Protection {
    /// Protects PID 1, ourselves, our ancestors, and `extra` (our helpers).
    pub fn for_this_process(extra: &[i32]) -> Self {
        let me = std::process::id() as i32;
        let mut pids = vec![1, me];
        pids.extend(procinfo::ancestors(me));
        pids.extend_from_slice(extra);
        Self { pids }
    }

    /// Why `p` is protected, if it is.
    pub fn reason(&self, p: &ProcInfo) -> Option<&'static str> {
        if p.pid == 1 {
            Some("it is PID 1 (init)")
        } else if p.kernel_thread {
            Some("it is a kernel thread")
        } else if p.pid == std::process::id() as i32 {
            Some("it is havoc itself")
        } else if self.pids.contains(&p.pid) {
            Some("it is an ancestor or helper of havoc")
        } else {
            None
        }
    }
}

fn criteria(sel: &Selector) -> String {
    let mut c = Vec::new();
    if !sel.pids.is_empty() {
        c.push(format!("pids {:?}", sel.pids));
    }
    if !sel.process_names.is_empty() {
        c.push(format!("processNames {:?}", sel.process_names));
    }
    if let Some(r) = &sel.cmdline_regex {
        c.push(format!("cmdlineRegex {r:?}"));
    }
    if !sel.cgroups.is_empty() {
        c.push(format!("cgroups {:?}", sel.cgroups));
    }
    if !sel.container_ids.is_empty() {
        c.push(format!("containerIds {:?}", sel.container_ids));
    }
    c.join(", ")
}

fn container_id(s: &str) -> &str {
    s.split_once("://").map_or(s, |(_, id)| id)
}

fn matches(sel: &Selector, p: &ProcInfo, re: Option<&regex::Regex>) -> bool {
    if !sel.pids.is_empty() && !sel.pids.contains(&p.pid) {
        return false;
    }
    if !sel.process_names.is_empty()
        && !sel
            .process_names
            .iter()
            .any(|n| *n == p.comm || Some(n) == p.exe_name.as_ref())
    {
        return false;
    }
    if let Some(re) = re {
        if !re.is_match(&p.cmdline.join(" ")) {
            return false;
        }
    }
    if !sel.cgroups.is_empty() || !sel.container_ids.is_empty() {
        let cgs = procinfo::cgroups_of(p.pid);
        if !sel.cgroups.is_empty()
            && !cgs.iter().any(|(_, _, path)| {
                sel.cgroups.iter().any(|c| {
                    let c = c.trim_end_matches('/');
                    path == c || path.starts_with(&format!("{c}/")) || c.is_empty()
                })
            })
        {
            return false;
        }
        if !sel.container_ids.is_empty()
            && !cgs.iter().any(|(_, _, path)| {
                sel.container_ids.iter().any(|id| {
                    let id = container_id(id);
                    id.len() >= 12 && path.contains(id)
                })
            })
        {
            return false;
        }
    }
    true
}

/// Resolves a process selector.
pub fn resolve_processes(
    fault: &str,
    sel: &Selector,
    protect: &Protection,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Target>, ResolveError> {
    let re = match &sel.cmdline_regex {
        Some(r) => Some(regex::Regex::new(r).map_err(|e| ResolveError::Invalid {
            fault: fault.into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    // Explicit pids: each must exist and not be protected.
    for pid in &sel.pids {
        match ProcInfo::read(*pid) {
            None => {
                return Err(ResolveError::NoMatch {
                    fault: fault.into(),
                    criteria: format!("pid {pid} does not exist"),
                });
            }
            Some(p) => {
                if let Some(why) = protect.reason(&p) {
                    return Err(ResolveError::Protected {
                        fault: fault.into(),
                        what: format!("pid {pid} ({})", p.comm),
                        why: why.into(),
                    });
                }
            }
        }
    }
    let all = procinfo::all_processes();
    let matched: Vec<&ProcInfo> = all
        .iter()
        .filter(|p| !p.is_dead() && matches(sel, p, re.as_ref()))
        .collect();
    let allowed: Vec<&ProcInfo> = matched
        .iter()
        .copied()
        .filter(|p| protect.reason(p).is_none())
        .collect();
    if allowed.is_empty() {
        if let Some(p) = matched.first() {
            return Err(ResolveError::Protected {
                fault: fault.into(),
                what: format!("every match (e.g. pid {} ({}))", p.pid, p.comm),
                why: protect.reason(p).unwrap_or_default().into(),
            });
        }
        return Err(ResolveError::NoMatch {
            fault: fault.into(),
            criteria: criteria(sel),
        });
    }
    let targets: Vec<Target> = allowed
        .iter()
        .map(|p| Target::Process {
            pid: p.pid,
            start_time: p.start_time,
            name: p.comm.clone(),
        })
        .collect();
    Ok(choose(&targets, sel.mode, sel.value.as_deref(), rng))
}

/// Resolves a network selector: named namespaces, the host, or the namespaces of processes.
pub fn resolve_netns(
    fault: &str,
    sel: &Selector,
    protect: &Protection,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Target>, ResolveError> {
    let mut targets = Vec::new();
    if sel.host {
        targets.push(Target::Netns {
            path: PathBuf::from("/proc/1/ns/net"),
            label: "host".into(),
        });
    }
    for name in &sel.netns {
        let path = if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            PathBuf::from("/run/netns").join(name)
        };
        if !path.exists() {
            return Err(ResolveError::NoNetns {
                fault: fault.into(),
                name: name.clone(),
                path: path.display().to_string(),
            });
        }
        targets.push(Target::Netns {
            path,
            label: name.clone(),
        });
    }
    if sel.selects_processes() {
        let all = Selector {
            mode: havoc_spec::Mode::All,
            value: None,
            ..sel.clone()
        };
        let procs = resolve_processes(fault, &all, protect, rng)?;
        let mut seen = std::collections::HashSet::new();
        for t in procs {
            if let Target::Process { pid, name, .. } = t {
                let path = procinfo::netns_path(pid);
                use std::os::unix::fs::MetadataExt;
                let ino = std::fs::metadata(&path)
                    .map(|m| m.ino())
                    .unwrap_or_default();
                if seen.insert(ino) {
                    targets.push(Target::Netns {
                        path,
                        label: format!("of pid {pid} ({name})"),
                    });
                }
            }
        }
    }
    Ok(choose(&targets, sel.mode, sel.value.as_deref(), rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn pid_one_and_ourselves_are_refused() {
        let protect = Protection::for_this_process(&[]);
        for pid in [1, std::process::id() as i32] {
            let sel = Selector {
                pids: vec![pid],
                ..Default::default()
            };
            let err = resolve_processes("f", &sel, &protect, &mut rng()).expect_err("protected");
            assert!(matches!(err, ResolveError::Protected { .. }), "{err}");
        }
    }

    #[test]
    fn a_missing_pid_is_no_match() {
        let protect = Protection::for_this_process(&[]);
        let sel = Selector {
            pids: vec![i32::MAX - 7],
            ..Default::default()
        };
        assert!(matches!(
            resolve_processes("f", &sel, &protect, &mut rng()),
            Err(ResolveError::NoMatch { .. })
        ));
    }

    #[test]
    fn a_child_is_found_by_name_and_cmdline() {
        let mut child = std::process::Command::new("sleep")
            .arg("30.5")
            .spawn()
            .expect("spawn sleep");
        let protect = Protection::for_this_process(&[]);
        let sel = Selector {
            process_names: vec!["sleep".into()],
            cmdline_regex: Some("30\\.5".into()),
            ..Default::default()
        };
        let t = resolve_processes("f", &sel, &protect, &mut rng()).expect("resolves");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].pid(), Some(child.id() as i32));
    }

    #[test]
    fn missing_netns_is_reported() {
        let protect = Protection::for_this_process(&[]);
        let sel = Selector {
            netns: vec!["havoc-does-not-exist".into()],
            ..Default::default()
        };
        assert!(matches!(
            resolve_netns("f", &sel, &protect, &mut rng()),
            Err(ResolveError::NoNetns { .. })
        ));
    }
}
