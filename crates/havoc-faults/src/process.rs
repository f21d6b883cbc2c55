//! `ProcessChaos`: kill, pause (SIGSTOP ... SIGCONT) or signal a process.
//!
//! Pauses compose. Several runs (and agents) may pause the same process at once: each holds a
//! shared `flock` on `/run/havoc/pause/<pid>-<start time>.lock` while its pause lasts, and only
//! the last one to let go (the one that can take the lock exclusively) sends SIGCONT. The kernel
//! drops the lock of a holder that dies, so a watchdog replaying a dead run's `Resume` resumes the
//! process only when no other holder is left. A process stopped by someone other than Havoc (job
//! control, a debugger) is a conflict: that target is skipped and the report says why, because
//! pausing it would mean resuming it at recovery.

use std::time::{Duration, Instant};

use havoc_spec::process::{ProcessAction, ProcessChaos};

use crate::procinfo::ProcInfo;
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

pub struct ProcessFault {
    spec: ProcessChaos,
}

impl ProcessFault {
    pub fn new(spec: ProcessChaos) -> Self {
        Self { spec }
    }
}

fn process_target(target: &Target) -> Result<(i32, u64), FaultError> {
    target.live_process("ProcessChaos needs a process")
}

fn send(pid: i32, signo: i32, target: &Target, action: &'static str) -> Result<(), FaultError> {
    havoc_sys::process::send_signal(pid, signo).map_err(|source| {
        if source.errno() == Some(3) {
            FaultError::TargetGone {
                target: target.label(),
            }
        } else {
            FaultError::Sys {
                action,
                target: target.label(),
                source,
            }
        }
    })
}

impl Fault for ProcessFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let (pid, start_time) = process_target(target)?;
        if self.spec.action == ProcessAction::Pause {
            if let Some(info) = ProcInfo::read(pid) {
                if info.is_stopped() && !PauseLock::held_by_havoc(pid, start_time) {
                    return Err(FaultError::Conflict {
                        target: target.label(),
                        reason: "it is already stopped by something other than Havoc (job control, a debugger): pausing it would resume it at recovery".into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn undo_plan(&self, target: &Target) -> Vec<UndoAction> {
        match (self.spec.action, target) {
            (
                ProcessAction::Pause,
                Target::Process {
                    pid, start_time, ..
                },
            ) => {
                vec![UndoAction::Resume {
                    pid: *pid,
                    start_time: *start_time,
                }]
            }
            _ => Vec::new(),
        }
    }

    fn inject(&self, target: &Target, _ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        let (pid, start_time) = process_target(target)?;
        let signal = self.spec.effective_signal();
        let mut inj = ProcessInjection {
            target: target.clone(),
            pid,
            start_time,
            action: self.spec.action,
            signo: signal.number(),
            signal_name: signal.name(),
            interval: self.spec.interval.map(|i| i.0),
            delivered: 0,
            started: Instant::now(),
            last_sent: Instant::now(),
            paused_for: None,
            recovered: false,
            lock: None,
            shared_with_other_run: false,
            resumed_by_other: None,
            left_stopped_for_other: false,
            in_effect: None,
        };
        match self.spec.action {
            ProcessAction::Pause => {
                let lock =
                    PauseLock::acquire(pid, start_time).map_err(|source| FaultError::Io {
                        action: "take the pause lock of".into(),
                        target: target.label(),
                        source,
                    })?;
                let stopped = ProcInfo::read(pid).is_some_and(|p| p.is_stopped());
                if stopped && lock.first() {
                    return Err(FaultError::Conflict {
                        target: target.label(),
                        reason: "it is already stopped by something other than Havoc (job control, a debugger): pausing it would resume it at recovery".into(),
                    });
                }
                inj.shared_with_other_run = !lock.first() && stopped;
                inj.lock = Some(lock);
                if !stopped {
                    send(pid, 19, target, "pause")?;
                    inj.delivered += 1;
                }
                // Wait until the kernel shows the stop, so "injected" means "in effect".
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    match ProcInfo::read(pid) {
                        Some(p) if p.is_stopped() => break,
                        Some(p) if p.is_dead() => {
                            return Err(FaultError::TargetGone {
                                target: target.label(),
                            })
                        }
                        None => {
                            return Err(FaultError::TargetGone {
                                target: target.label(),
                            })
                        }
                        _ if Instant::now() >= deadline => {
                            return Err(FaultError::Other(format!(
                                "{} did not stop within 1 s of SIGSTOP",
                                target.label()
                            )))
                        }
                        _ => std::thread::sleep(Duration::from_micros(200)),
                    }
                }
                inj.in_effect = Some(Instant::now());
            }
            ProcessAction::Kill | ProcessAction::Signal => {
                send(pid, inj.signo, target, "signal")?;
                inj.delivered += 1;
            }
        }
        inj.started = Instant::now();
        inj.last_sent = inj.started;
        Ok(Box::new(inj))
    }

    fn requested(&self) -> String {
        havoc_spec::FaultSpec::ProcessChaos(self.spec.clone()).summary()
    }
}

struct ProcessInjection {
    target: Target,
    pid: i32,
    start_time: u64,
    action: ProcessAction,
    signo: i32,
    signal_name: String,
    interval: Option<Duration>,
    delivered: u64,
    started: Instant,
    last_sent: Instant,
    paused_for: Option<Duration>,
    recovered: bool,
    /// The shared pause lock, held while this pause lasts.
    lock: Option<PauseLock>,
    /// Another run had already paused the target: this one joined its pause.
    shared_with_other_run: bool,
    /// When the target was seen running during the hold (someone resumed it), from inject.
    resumed_by_other: Option<Duration>,
    /// At recovery another run still held a pause, so the target was left stopped for it.
    left_stopped_for_other: bool,
    in_effect: Option<Instant>,
}

impl Injection for ProcessInjection {
    fn in_effect_since(&self) -> Option<Instant> {
        self.in_effect
    }

    fn in_effect_until(&self) -> Option<Instant> {
        self.resumed_by_other.map(|r| self.started + r)
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        if self.action == ProcessAction::Pause && !self.recovered && self.resumed_by_other.is_none()
        {
            // Measured in the target: a pause someone else ended is not held, whatever we planned.
            match ProcInfo::read(self.pid) {
                Some(p) if p.start_time == self.start_time && !p.is_stopped() && !p.is_dead() => {
                    self.resumed_by_other = Some(self.started.elapsed());
                }
                _ => {}
            }
        }
        if let (ProcessAction::Signal, Some(every)) = (self.action, self.interval) {
            if self.last_sent.elapsed() >= every && ProcInfo::is_same(self.pid, self.start_time) {
                send(self.pid, self.signo, &self.target, "signal")?;
                self.delivered += 1;
                self.last_sent += every;
            }
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let summary = match self.action {
            ProcessAction::Pause => {
                let held = self.paused_for.unwrap_or_else(|| self.started.elapsed());
                format!("stopped for {:.2}s", held.as_secs_f64())
            }
            _ => format!("{} x {} delivered", self.delivered, self.signal_name),
        };
        let mut e = Effect {
            summary,
            ..Default::default()
        }
        .metric("signals_delivered", self.delivered as f64);
        if self.action == ProcessAction::Pause {
            let held = self.paused_for.unwrap_or_else(|| self.started.elapsed());
            let held = self.resumed_by_other.map_or(held, |r| r.min(held));
            e = e.metric("paused_seconds", held.as_secs_f64());
            if let Some(r) = self.resumed_by_other {
                e.summary = format!(
                    "stopped for {:.2}s, then resumed by someone else (seen running {:.2}s after the pause)",
                    held.as_secs_f64(),
                    r.as_secs_f64()
                );
            }
            if self.shared_with_other_run {
                e.summary
                    .push_str(" (joined a pause another Havoc run already held)");
            }
            if self.left_stopped_for_other {
                e.summary
                    .push_str("; left stopped at recovery: another Havoc run still holds a pause");
            }
        }
        e
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        if self.action == ProcessAction::Pause {
            self.paused_for = Some(self.started.elapsed());
            // Let go of our share; resume only if no other holder is left.
            let last = match self.lock.take() {
                Some(lock) => lock.release_is_last(),
                None => Some(havoc_sys::share::Last::NOBODY),
            };
            match last {
                Some(_guard) if ProcInfo::is_same(self.pid, self.start_time) => {
                    send(self.pid, 18, &self.target, "resume").or_else(|e| match e {
                        FaultError::TargetGone { .. } => Ok(()),
                        e => Err(e),
                    })?;
                    self.delivered += 1;
                }
                Some(_) => {}
                None => self.left_stopped_for_other = true,
            }
        }
        self.recovered = true;
        Ok(())
    }
}

impl Drop for ProcessInjection {
    fn drop(&mut self) {
        if let Err(e) = self.recover() {
            tracing::error!(pid = self.pid, error = %e, "failed to recover process fault on drop");
        }
    }
}

/// Where pause locks live: machine-wide, so runs with different state directories and the agent
/// see each other's pauses.
pub const PAUSE_LOCK_DIR: &str = "/run/havoc/pause";

fn pause_lock_name(pid: i32, start_time: u64) -> String {
    format!("{pid}-{start_time}")
}

/// A share of the pause of one process (see the module documentation).
pub struct PauseLock(havoc_sys::share::Share);

impl PauseLock {
    /// Takes a share of the pause lock of `pid`.
    pub fn acquire(pid: i32, start_time: u64) -> std::io::Result<PauseLock> {
        havoc_sys::share::Share::take(
            std::path::Path::new(PAUSE_LOCK_DIR),
            &pause_lock_name(pid, start_time),
        )
        .map(PauseLock)
    }

    /// No other Havoc holder existed when this share was taken.
    fn first(&self) -> bool {
        self.0.first
    }

    /// Whether some live Havoc process holds a pause of `pid`.
    pub fn held_by_havoc(pid: i32, start_time: u64) -> bool {
        havoc_sys::share::held(
            std::path::Path::new(PAUSE_LOCK_DIR),
            &pause_lock_name(pid, start_time),
        )
    }

    /// Gives up this share: the exclusive lock if this was the last holder (resume, then drop
    /// it), `None` if another holder remains.
    pub fn release_is_last(self) -> Option<havoc_sys::share::Last> {
        self.0.release()
    }
}

/// For replaying a dead holder's `Resume`: the exclusive lock when no live holder remains,
/// `None` when another run still holds a pause of the process.
pub fn take_if_last(pid: i32, start_time: u64) -> Option<havoc_sys::share::Last> {
    havoc_sys::share::take_if_unheld(
        std::path::Path::new(PAUSE_LOCK_DIR),
        &pause_lock_name(pid, start_time),
    )
}
