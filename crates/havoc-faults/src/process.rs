//! `ProcessChaos`: kill, pause (SIGSTOP ... SIGCONT) or signal a process.

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
    match target {
        Target::Process {
            pid, start_time, ..
        } => {
            if !ProcInfo::is_same(*pid, *start_time) {
                return Err(FaultError::TargetGone {
                    target: target.label(),
                });
            }
            Ok((*pid, *start_time))
        }
        other => Err(FaultError::Refused {
            target: other.label(),
            reason: "ProcessChaos needs a process".into(),
        }),
    }
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
        let (pid, _) = process_target(target)?;
        if self.spec.action == ProcessAction::Pause {
            if let Some(info) = ProcInfo::read(pid) {
                if info.is_stopped() {
                    return Err(FaultError::Refused {
                        target: target.label(),
                        reason: "it is already stopped (by someone else): pausing it would resume it at recovery".into(),
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
        };
        match self.spec.action {
            ProcessAction::Pause => {
                send(pid, 19, target, "pause")?;
                inj.delivered += 1;
                // Wait until the kernel shows the stop, so "injected" means "in effect".
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline {
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
                        _ => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
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
}

impl Injection for ProcessInjection {
    fn tick(&mut self) -> Result<(), FaultError> {
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
            e = e.metric("paused_seconds", held.as_secs_f64());
        }
        e
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        if self.action == ProcessAction::Pause {
            self.paused_for = Some(self.started.elapsed());
            if ProcInfo::is_same(self.pid, self.start_time) {
                send(self.pid, 18, &self.target, "resume").or_else(|e| match e {
                    FaultError::TargetGone { .. } => Ok(()),
                    e => Err(e),
                })?;
                self.delivered += 1;
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
