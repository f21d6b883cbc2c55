//! The watchdog: a small separate process that undoes this run's journal if `havoc run` dies.
//!
//! `havoc run` starts `havoc __watchdog --journal FILE` in its own session (so a Ctrl-C aimed at
//! the terminal does not reach it) with a pipe on its stdin. `havoc run` holds the only write end;
//! when it dies, even by SIGKILL, the kernel closes it and the watchdog reads end of file. If the
//! journal still exists at that point the run did not finish its own recovery, and the watchdog
//! replays it. On a normal end the run removes its journal first, so the watchdog has nothing to do.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog for the journal at `journal`.
    pub fn spawn(self_exe: &Path, journal: &Path) -> std::io::Result<Watchdog> {
        let mut cmd = Command::new(self_exe);
        cmd.arg("__watchdog").arg("--journal").arg(journal);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        havoc_sys::process::new_session(&mut cmd);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the watchdog after a normal recovery (the journal must already be removed).
    pub fn disarm(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut buf = [0u8; 256];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if !journal.exists() {
        return 0;
    }
    match crate::journal::read(&journal) {
        Ok(found) => {
            // The pipe closes early in the owner's exit, before the tools it ran (ip, tc,
            // iptables) receive their parent-death signal: replay once now, and once more after
            // any change such a tool was making has landed.
            let first = crate::journal::replay_keep(&found);
            std::thread::sleep(Duration::from_millis(500));
            let mut r = crate::journal::replay_keep(&found);
            r.done.extend(first.done);
            if let Some(dir) = &found.data.report_dir {
                let report = crate::report::crash_report(&found.data, &r, "the watchdog");
                if let Err(e) = crate::report::write(&report, dir) {
                    eprintln!(
                        "havoc watchdog: cannot write the report to {}: {e}",
                        dir.display()
                    );
                }
            }
            // Last: the journal's absence tells everyone (havoc recover, tests) that we are done.
            if r.failed.is_empty() {
                crate::journal::remove(&found);
            }
            for line in r.done.iter() {
                eprintln!(
                    "havoc watchdog: run {} ended without recovering: {line}",
                    found.data.run_id
                );
            }
            for line in r.failed.iter() {
                eprintln!("havoc watchdog: FAILED to undo: {line} (run `havoc recover`)");
            }
            i32::from(!r.failed.is_empty())
        }
        Err(e) => {
            eprintln!("havoc watchdog: {}", crate::error_chain(&e));
            1
        }
    }
}
