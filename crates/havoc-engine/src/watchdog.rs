//! The watchdog: a small separate process that undoes a holder's journals if the holder dies.
//!
//! The holder (`havoc run`, or the node agent) starts `havoc __watchdog --journal PATH` in its own
//! session (so a Ctrl-C aimed at the terminal does not reach it) with a pipe on its stdin. The
//! holder keeps the only write end; when it dies, even by SIGKILL or the OOM killer, the kernel
//! closes it and the watchdog reads end of file, then replays what the holder left:
//!
//! - `PATH` a journal file ([`Watchdog::spawn`], one per `havoc run`): that journal, if it still
//!   exists. On a normal end the run removes its journal first, so there is nothing to do.
//! - `PATH` a journal directory ([`Watchdog::spawn_for_owner`], one per agent, which journals each
//!   injection separately): every journal there owned by the holder, named by the first line the
//!   holder writes into the pipe (`owner PID START_TIME`). A holder that recovered everything
//!   writes `disarm` before closing the pipe, and the watchdog exits without touching anything.
//!
//! Each journal is replayed under its [`crate::journal::claim`], so a holder restarted while the
//! watchdog works (and `havoc recover`) waits for it instead of replaying the same journal, and
//! injects again only after the watchdog is done.
//!
//! The watchdog must outlive its holder's out-of-memory death: it is its own process of a few MB,
//! asks for `oom_score_adj` -1000 (granted with CAP_SYS_RESOURCE; otherwise it keeps what it
//! inherited), and a holder that wants to be the first victim raises its own score with
//! [`raise_own_oom_score`] after starting it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::journal::{self, Owner};

pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

fn spawn_on(self_exe: &Path, path: &Path) -> std::io::Result<Watchdog> {
    let mut cmd = Command::new(self_exe);
    cmd.arg("__watchdog").arg("--journal").arg(path);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    havoc_sys::process::new_session(&mut cmd);
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take();
    Ok(Watchdog { child, stdin })
}

impl Watchdog {
    /// Starts the watchdog for the journal at `journal` (one run).
    pub fn spawn(self_exe: &Path, journal: &Path) -> std::io::Result<Watchdog> {
        spawn_on(self_exe, journal)
    }

    /// Starts the watchdog of every journal this process writes under `state_dir` (the agent).
    pub fn spawn_for_owner(self_exe: &Path, state_dir: &Path) -> std::io::Result<Watchdog> {
        let dir = journal::runs_dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let mut w = spawn_on(self_exe, &dir)?;
        let me = Owner::this_process();
        let line = format!("owner {} {}\n", me.pid, me.start_time);
        if let Err(e) = w
            .stdin
            .as_mut()
            .expect("piped stdin")
            .write_all(line.as_bytes())
        {
            w.kill();
            return Err(e);
        }
        Ok(w)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The watchdog's exit status if it has ended (it must not while its holder lives).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Ends the watchdog after a normal recovery (the journal must already be removed).
    pub fn disarm(mut self) {
        if let Some(mut s) = self.stdin.take() {
            // An owner watchdog leaves the journals alone after this; a run's ignores it.
            let _ = s.write_all(b"disarm\n");
        }
        self.reap(Duration::from_secs(2));
    }

    fn reap(&mut self, within: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's `oom_score_adj` to at least `adj` (raising needs no privilege), so that
/// under memory pressure it is killed before its watchdog and, where `adj` is high, before the
/// workloads it injects into. Returns the value in effect.
pub fn raise_own_oom_score(adj: i32) -> std::io::Result<i32> {
    let path = "/proc/self/oom_score_adj";
    let now: i32 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
    if now >= adj {
        return Ok(now);
    }
    std::fs::write(path, adj.to_string())?;
    Ok(adj)
}

/// Lowers this process's `oom_score_adj` as far as allowed: -1000 (never chosen) with
/// CAP_SYS_RESOURCE, else the inherited value stays. Returns the value in effect.
fn lower_own_oom_score() -> i32 {
    let path = "/proc/self/oom_score_adj";
    let _ = std::fs::write(path, "-1000");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// What the holder said through the pipe before it closed.
#[derive(Debug, Default, PartialEq)]
struct Said {
    owner: Option<Owner>,
    disarmed: bool,
}

fn parse_said(text: &str) -> Said {
    let mut said = Said::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("owner") => {
                let pid = w.next().and_then(|p| p.parse().ok());
                let start_time = w.next().and_then(|p| p.parse().ok());
                if let (Some(pid), Some(start_time)) = (pid, start_time) {
                    said.owner = Some(Owner { pid, start_time });
                }
            }
            Some("disarm") => said.disarmed = true,
            _ => {}
        }
    }
    said
}

/// Reads stdin until the holder's end of the pipe closes; returns what it wrote (bounded).
fn wait_for_holder() -> String {
    let mut said = Vec::new();
    let mut buf = [0u8; 256];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if said.len() < 4096 {
                    said.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// The body of the watchdog process. Returns its exit code.
pub fn watchdog_main(journal: PathBuf) -> i32 {
    // Survive the terminal: only the pipe tells us when to act.
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGPIPE,
    ] {
        let _ = signal_hook::flag::register(sig, ignored.clone());
    }
    lower_own_oom_score();
    let said = parse_said(&wait_for_holder());
    if journal.is_dir() {
        owner_mode(&journal, said)
    } else {
        run_mode(&journal)
    }
}

/// The agent's watchdog: every journal of the dead holder.
fn owner_mode(runs: &Path, said: Said) -> i32 {
    if said.disarmed {
        return 0;
    }
    let Some(owner) = said.owner else {
        eprintln!(
            "havoc watchdog: the holder of {} closed the pipe without naming itself: nothing to do",
            runs.display()
        );
        return 0;
    };
    let state_dir = runs.parent().unwrap_or(Path::new("/"));
    match journal::recover_owned(state_dir, owner) {
        Ok(replays) => {
            let mut failed = false;
            for (run, r) in &replays {
                for line in &r.done {
                    eprintln!(
                        "havoc watchdog: holder pid {} died holding {run}: {line}",
                        owner.pid
                    );
                }
                for line in &r.failed {
                    failed = true;
                    eprintln!("havoc watchdog: FAILED to undo {run}: {line} (run `havoc recover`)");
                }
            }
            i32::from(failed)
        }
        Err(e) => {
            eprintln!("havoc watchdog: {}", crate::error_chain(&e));
            1
        }
    }
}

/// The watchdog of one `havoc run`: its journal, and the run's crash report.
fn run_mode(journal: &Path) -> i32 {
    let claim = match journal::claim(journal, journal::CLAIM_WAIT) {
        Ok(Some(c)) => c,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("havoc watchdog: {}", crate::error_chain(&e));
            return 1;
        }
    };
    let r = claim.replay_twice();
    let found = claim.found();
    if let Some(dir) = &found.data.report_dir {
        let report = crate::report::crash_report(&found.data, &r, "the watchdog");
        if let Err(e) = crate::report::write(&report, dir) {
            eprintln!(
                "havoc watchdog: cannot write the report to {}: {e}",
                dir.display()
            );
        }
    }
    let run_id = found.data.run_id.clone();
    // Last: the journal's absence tells everyone (havoc recover, tests) that we are done.
    if r.failed.is_empty() {
        claim.remove();
    }
    for line in r.done.iter() {
        eprintln!("havoc watchdog: run {run_id} ended without recovering: {line}");
    }
    for line in r.failed.iter() {
        eprintln!("havoc watchdog: FAILED to undo: {line} (run `havoc recover`)");
    }
    i32::from(!r.failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_names_itself_and_may_disarm() {
        assert_eq!(
            parse_said("owner 42 1234\n"),
            Said {
                owner: Some(Owner {
                    pid: 42,
                    start_time: 1234
                }),
                disarmed: false
            }
        );
        assert!(parse_said("owner 42 1234\ndisarm\n").disarmed);
        assert_eq!(parse_said(""), Said::default());
        assert_eq!(parse_said("owner x y\n").owner, None);
    }
}
