//! Command check: runs an argv (never a shell string) with a timeout, reads capped stdout.
//!
//! The command gets its own process group, so that a timeout (or the probe set stopping) kills it
//! and whatever it started. stdout is read up to [`STDOUT_LIMIT`] and the rest discarded, so a
//! chatty command never blocks on a full pipe; stderr is kept up to [`STDERR_LIMIT`] for messages.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;

use super::{excerpt, Check, Outcome};
use crate::spec::CmdCheck;

pub const STDOUT_LIMIT: usize = 64 * 1024;
pub const STDERR_LIMIT: usize = 4 * 1024;

/// How often a running command is polled for exit (and for the probe set stopping).
const POLL: Duration = Duration::from_millis(5);
/// How long to wait, after the command exits, for its output to be fully read: a background
/// process it left behind may hold the pipe open.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

pub struct CmdProbe {
    spec: CmdCheck,
    stdout_re: Option<Regex>,
}

impl CmdProbe {
    pub fn new(spec: &CmdCheck, stdout_re: Option<Regex>) -> Self {
        CmdProbe {
            spec: spec.clone(),
            stdout_re,
        }
    }
}

/// Output collected by a reader thread; `done` once the pipe reached end of file.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
    done: bool,
}

fn spawn_reader(mut pipe: impl Read + Send + 'static, limit: usize) -> Arc<Mutex<Captured>> {
    let out = Arc::new(Mutex::new(Captured::default()));
    let shared = Arc::clone(&out);
    // A reader that cannot be spawned leaves `done` false: the output reads as empty.
    let _ = thread::Builder::new()
        .name("havoc-probe-output".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut c = shared.lock().unwrap_or_else(PoisonError::into_inner);
                        let room = limit.saturating_sub(c.bytes.len());
                        c.bytes.extend_from_slice(&buf[..n.min(room)]);
                        c.truncated |= n > room;
                    }
                }
            }
            shared.lock().unwrap_or_else(PoisonError::into_inner).done = true;
        });
    out
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group (process_group(0)), which is still valid: the child
    // has not been reaped yet.
    let pgid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    let _ = child.kill();
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}

enum Ended {
    Exited(ExitStatus),
    TimedOut,
    Stopped,
    WaitFailed(std::io::Error),
}

impl Check for CmdProbe {
    fn sample(&mut self, stop: &AtomicBool) -> Outcome {
        let Some((prog, args)) = self.spec.argv.split_first() else {
            return Outcome::fail("argv is empty");
        };
        let mut child = match Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Outcome::fail(format!("failed to run `{prog}`: {e}")),
        };
        let stdout = child.stdout.take().map(|p| spawn_reader(p, STDOUT_LIMIT));
        let stderr = child.stderr.take().map(|p| spawn_reader(p, STDERR_LIMIT));
        let deadline = Instant::now() + self.spec.timeout.0;
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ended::Exited(status),
                Ok(None) => {}
                Err(e) => {
                    kill_group(&mut child);
                    let _ = child.wait();
                    break Ended::WaitFailed(e);
                }
            }
            let stopping = stop.load(Ordering::Relaxed);
            if stopping || Instant::now() >= deadline {
                kill_group(&mut child);
                let _ = child.wait();
                break if stopping {
                    Ended::Stopped
                } else {
                    Ended::TimedOut
                };
            }
            thread::sleep(POLL);
        };
        let status = match ended {
            Ended::Exited(s) => s,
            Ended::TimedOut => {
                return Outcome::fail(format!(
                    "`{prog}` timed out after {} and was killed",
                    self.spec.timeout
                ))
            }
            Ended::Stopped => return Outcome::fail(format!("`{prog}` was killed: probes stopped")),
            Ended::WaitFailed(e) => {
                return Outcome::fail(format!("waiting for `{prog}` failed: {e}"))
            }
        };
        let grace = Instant::now() + DRAIN_GRACE;
        let collect = |c: &Option<Arc<Mutex<Captured>>>| -> (String, bool) {
            let Some(c) = c else {
                return (String::new(), false);
            };
            loop {
                {
                    let g = c.lock().unwrap_or_else(PoisonError::into_inner);
                    if g.done || Instant::now() >= grace {
                        return (String::from_utf8_lossy(&g.bytes).into_owned(), g.truncated);
                    }
                }
                thread::sleep(POLL);
            }
        };
        let (out, truncated) = collect(&stdout);
        let (err, _) = collect(&stderr);
        let out = out.trim_end();
        let parsed = out.trim().parse::<f64>().ok();
        if status.code() != Some(self.spec.expect.exit_code) {
            let why = excerpt(&err, 200);
            let why = if why.is_empty() {
                String::new()
            } else {
                format!("; stderr: {why}")
            };
            return Outcome::fail_with(
                parsed,
                format!(
                    "`{prog}` {} (expected exit code {}){why}",
                    describe(status),
                    self.spec.expect.exit_code
                ),
            );
        }
        if let Some(re) = &self.stdout_re {
            if !re.is_match(out) {
                let cut = if truncated { " (truncated)" } else { "" };
                return Outcome::fail_with(
                    parsed,
                    format!("stdout{cut} does not match `{re}`: `{}`", excerpt(out, 120)),
                );
            }
        }
        if let Some(cmp) = &self.spec.expect.value {
            return match parsed {
                None => Outcome::fail(format!("stdout is not a number: `{}`", excerpt(out, 120))),
                Some(v) if cmp.holds(v) => Outcome::pass(Some(v)),
                Some(v) => Outcome::fail_with(Some(v), format!("value {v} violates {cmp}")),
            };
        }
        Outcome::pass(parsed)
    }
}
