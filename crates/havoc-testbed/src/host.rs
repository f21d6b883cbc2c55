//! Small host-side helpers: bounded commands, /proc scans, cgroup and mount cleanup. Everything
//! here is best effort where it is used from `Drop`, and says what failed where it is not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Runs `cmd` to completion within `timeout` (killing it after that) and returns its output if
/// it exited 0; otherwise an error with the argv, the exit status and stderr.
pub(crate) fn run_cmd(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let argv = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {argv}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.with_context(|| format!("failed to wait for {argv}"))?,
        Err(_) => {
            let _ = havoc_sys::process::send_signal(pid, libc::SIGKILL);
            bail!("{argv} did not finish within {timeout:?} and was killed");
        }
    };
    if !out.status.success() {
        bail!(
            "{argv} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip ARGS...`, bounded.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_cmd(Command::new("ip").args(args), Duration::from_secs(10)).map(drop)
}

/// Pids of processes whose command line contains `needle` as one argument and whose executable
/// name contains `exe_part` (e.g. the shims of one containerd, found by their `-address`).
pub(crate) fn pids_with_arg(exe_part: &str, needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0);
            let exe_ok = args
                .next()
                .is_some_and(|a| String::from_utf8_lossy(a).contains(exe_part));
            exe_ok && args.any(|a| a == needle.as_bytes())
        })
        .collect()
}

/// Waits until none of `pids` exists (zombies count as gone: they are not ours to reap).
pub(crate) fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let alive = pids.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        });
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points from /proc/self/mountinfo with their filesystem type, in mount order.
pub(crate) fn mounts() -> Vec<(PathBuf, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((
                PathBuf::from(unescape_mountinfo(mount_point)),
                fstype.to_string(),
            ))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Unmounts (lazily if busy) everything mounted at or below `dir`, deepest first.
pub(crate) fn unmount_below(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let mut below: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for mp in below {
        use rustix::mount::{unmount, UnmountFlags};
        if unmount(&mp, UnmountFlags::empty()).is_err() {
            if let Err(e) = unmount(&mp, UnmountFlags::DETACH) {
                errors.push(format!("failed to unmount {}: {e}", mp.display()));
            }
        }
    }
    errors
}

/// The roots of all mounted cgroup hierarchies (v1 controllers, named ones, and v2).
pub(crate) fn cgroup_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, t)| t == "cgroup" || t == "cgroup2")
        .map(|(p, _)| p)
        .collect()
}

/// The cgroup directories of `pid` in every hierarchy, from /proc/PID/cgroup.
pub(crate) fn cgroup_dirs_of(pid: i32) -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("failed to read /proc/{pid}/cgroup"))?;
    let roots = mounts();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let root = roots.iter().find(|(mp, fstype)| {
            if ctrls.is_empty() {
                return fstype == "cgroup2";
            }
            if fstype != "cgroup" {
                return false;
            }
            // v1 mount points are named after their controllers (`cpu`, `systemd` for name=systemd).
            let name = mp
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let want = ctrls.trim_start_matches("name=");
            name == want || name.split(',').eq(want.split(','))
        });
        if let Some((mp, _)) = root {
            dirs.push(mp.join(path.trim_start_matches('/')));
        }
    }
    Ok(dirs)
}

/// Pids listed in `dir/cgroup.procs` (empty if the cgroup is gone).
pub(crate) fn cgroup_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills what is left in the cgroup `dir` and removes it, retrying briefly while it drains.
pub(crate) fn remove_cgroup(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        for pid in cgroup_procs(dir) {
            let _ = havoc_sys::process::send_signal(pid, libc::SIGKILL);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("failed to remove cgroup {}: {e}", dir.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes `dir` if it exists and is empty; other errors are ignored (another user may own it).
pub(crate) fn rmdir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/odd\x"), r"/odd\x");
    }

    #[test]
    fn own_cgroup_dirs_exist() {
        let dirs = cgroup_dirs_of(std::process::id() as i32).expect("own cgroups");
        assert!(!dirs.is_empty(), "at least one hierarchy");
        for d in &dirs {
            assert!(
                d.join("cgroup.procs").exists(),
                "{} is a cgroup",
                d.display()
            );
        }
    }

    #[test]
    fn failing_and_hanging_commands_are_reported() {
        let err = run_cmd(
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .expect_err("exit 3");
        assert!(err.to_string().contains("boom"), "{err}");
        let t = Instant::now();
        let err = run_cmd(Command::new("sleep").arg("5"), Duration::from_millis(200))
            .expect_err("timeout");
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
