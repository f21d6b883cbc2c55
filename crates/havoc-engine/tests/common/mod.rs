//! Shared by the engine's tests: the root check, sleepers that are always reaped, process state,
//! and a real fault wrapped to misbehave on purpose (slow, or failing on one target).
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Fault, FaultError, Injection, Target, UndoAction};

/// True when root; without root, fails under CI and otherwise says why the test is skipped.
pub fn root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the engine's tests need root, and CI runs as root"
        );
        eprintln!("SKIPPED: the engine's tests need root");
    }
    root
}

/// A `sleep 300`, resumed, killed and reaped when dropped.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one-letter state of a process from /proc/PID/stat.
pub fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// How a [`Wrapped`] fault misbehaves.
#[derive(Default)]
pub struct Misbehave {
    /// Sleep this long before injecting.
    pub inject_delay: Duration,
    /// Sleep this long before recovering.
    pub recover_delay: Duration,
    /// Fail to inject this pid, after `fail_after`.
    pub fail_pid: Option<i32>,
    pub fail_after: Duration,
}

/// A real fault that misbehaves as told.
pub struct Wrapped {
    pub inner: Box<dyn Fault>,
    pub how: Misbehave,
}

struct WrappedInjection {
    inner: Box<dyn Injection>,
    recover_delay: Duration,
}

impl Fault for Wrapped {
    fn check(&self, t: &Target) -> Result<(), FaultError> {
        self.inner.check(t)
    }
    fn undo_plan(&self, t: &Target) -> Vec<UndoAction> {
        self.inner.undo_plan(t)
    }
    fn inject(&self, t: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        if t.pid().is_some() && t.pid() == self.how.fail_pid {
            std::thread::sleep(self.how.fail_after);
            return Err(FaultError::Other("injected failure for the test".into()));
        }
        std::thread::sleep(self.how.inject_delay);
        Ok(Box::new(WrappedInjection {
            inner: self.inner.inject(t, ctx)?,
            recover_delay: self.how.recover_delay,
        }))
    }
    fn requested(&self) -> String {
        self.inner.requested()
    }
}

impl Injection for WrappedInjection {
    fn in_effect_since(&self) -> Option<Instant> {
        self.inner.in_effect_since()
    }
    fn effect(&self) -> havoc_faults::Effect {
        self.inner.effect()
    }
    fn recover(&mut self) -> Result<(), FaultError> {
        std::thread::sleep(self.recover_delay);
        self.inner.recover()
    }
}

/// Replaces the fault of `f` by itself wrapped to misbehave as told.
pub fn misbehave(f: &mut havoc_engine::run::PlannedFault, how: Misbehave) {
    let inner = std::mem::replace(&mut f.fault, havoc_faults::build(&f.entry.spec));
    f.fault = Box::new(Wrapped { inner, how });
}
