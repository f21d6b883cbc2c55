//! One fault on one target, start to finish, on its own thread: wait for its planned start,
//! journal, inject, hold for its duration *counted from when it is in effect*, recover, and
//! measure each of those moments. Lifecycles never wait for one another: a slow injection or
//! recovery moves only its own window. An abort (signal, probe breach, a failed injection
//! elsewhere) wakes every lifecycle at once through [`Abort`].

use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Effect, Fault, FaultError, Target};

use crate::journal::Journal;

/// How often a held injection's `tick` runs.
const TICK: Duration = Duration::from_millis(50);

/// A one-way "stop now" shared by every lifecycle of a run.
#[derive(Debug, Default)]
pub(crate) struct Abort {
    raised: Mutex<bool>,
    cv: Condvar,
}

impl Abort {
    pub fn raise(&self) {
        *self.raised.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    pub fn is_raised(&self) -> bool {
        *self.raised.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps until `until` or an abort, whichever is first. True when aborted.
    pub fn wait_until(&self, until: Instant) -> bool {
        let mut raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *raised {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            raised = self
                .cv
                .wait_timeout(raised, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What every lifecycle of a run shares.
pub(crate) struct Shared {
    pub journal: Mutex<Journal>,
    pub abort: Abort,
}

/// Progress, sent to the thread that watches the run (it owns the observer).
#[derive(Debug)]
pub(crate) enum Msg {
    /// `at`: when the fault was first in effect (its hold counts from here).
    Injected {
        fault: usize,
        target: usize,
        summary: String,
        at: Instant,
    },
    /// `at`: when its recovery ended.
    Recovered {
        fault: usize,
        target: usize,
        summary: String,
        at: Instant,
    },
    /// `fatal`: the run stops (an injection failed, or the journal could not be written).
    Failed {
        fault: usize,
        target: usize,
        error: String,
        fatal: bool,
    },
    Skipped {
        fault: usize,
        target: usize,
        reason: String,
    },
    /// A journal write that failed without stopping the run.
    Error(String),
}

/// One fault on one target, as planned.
pub(crate) struct Lifecycle<'a> {
    pub fault_index: usize,
    pub target_index: usize,
    pub fault_name: &'a str,
    pub fault: &'a dyn Fault,
    pub target: &'a Target,
    /// When to inject.
    pub start_at: Instant,
    /// How long to hold, from when the fault is in effect.
    pub duration: Duration,
    pub ctx: Context,
}

/// What happened, as measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub inject_started: Option<Instant>,
    /// When the fault was first in effect on the target.
    pub in_effect: Option<Instant>,
    /// When the effect ended before recovery (the target exited, someone else undid it).
    pub ended_early: Option<(Instant, String)>,
    /// When recovery removed the effect, if before recovery ended (cleanup came after).
    pub effect_removed: Option<Instant>,
    pub recover_started: Option<Instant>,
    pub recovered: Option<Instant>,
    pub effect: Effect,
    pub error: Option<String>,
    pub skipped: Option<String>,
}

impl Lifecycle<'_> {
    pub fn run(self, shared: &Shared, tx: Sender<Msg>) -> Outcome {
        let (fi, ti) = (self.fault_index, self.target_index);
        let label = self.target.label();
        let mut out = Outcome::default();
        if shared.abort.wait_until(self.start_at) {
            return out;
        }
        let jid = {
            let mut journal = shared.journal.lock().unwrap_or_else(|e| e.into_inner());
            journal.record(self.fault_name, &label, self.fault.undo_plan(self.target))
        };
        let jid = match jid {
            Ok(id) => id,
            Err(e) => {
                let error = format!("cannot journal {label}: {}", crate::error_chain(&e));
                out.error = Some(error.clone());
                let _ = tx.send(Msg::Failed {
                    fault: fi,
                    target: ti,
                    error,
                    fatal: true,
                });
                return out;
            }
        };
        let forget = |jid: u64| {
            let r = shared
                .journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(jid);
            if let Err(e) = r {
                let _ = tx.send(Msg::Error(crate::error_chain(&e)));
            }
        };
        out.inject_started = Some(Instant::now());
        let mut inj = match self.fault.inject(self.target, &self.ctx) {
            Ok(inj) => inj,
            Err(FaultError::Conflict { reason, .. }) => {
                forget(jid);
                out.skipped = Some(reason.clone());
                let _ = tx.send(Msg::Skipped {
                    fault: fi,
                    target: ti,
                    reason,
                });
                return out;
            }
            Err(e) => {
                forget(jid);
                let error = crate::error_chain(&e);
                out.error = Some(error.clone());
                let _ = tx.send(Msg::Failed {
                    fault: fi,
                    target: ti,
                    error,
                    fatal: true,
                });
                return out;
            }
        };
        let in_effect = inj.in_effect_since().unwrap_or_else(Instant::now);
        out.in_effect = Some(in_effect);
        self.extend_journal(shared, &tx, jid, inj.late_undo());
        let _ = tx.send(Msg::Injected {
            fault: fi,
            target: ti,
            summary: inj.effect().summary,
            at: in_effect,
        });

        // Hold, counted from when the fault is in effect. A duration too long to add is held
        // until the run stops (the spec bounds durations, so this is a guard, not a feature).
        let deadline = in_effect.checked_add(self.duration);
        loop {
            match inj.tick() {
                Ok(()) => {}
                Err(FaultError::TargetGone { .. }) => {
                    out.ended_early = Some((Instant::now(), format!("{label} exited")));
                    break;
                }
                Err(e) => {
                    let error = format!("failed while active: {}", crate::error_chain(&e));
                    out.error = Some(error.clone());
                    out.ended_early = Some((Instant::now(), error.clone()));
                    let _ = tx.send(Msg::Failed {
                        fault: fi,
                        target: ti,
                        error,
                        fatal: false,
                    });
                    break;
                }
            }
            self.extend_journal(shared, &tx, jid, inj.late_undo());
            let now = Instant::now();
            let next = match deadline {
                Some(d) if now >= d => break,
                Some(d) => d.min(now + TICK),
                None => now + TICK,
            };
            if shared.abort.wait_until(next) {
                break;
            }
        }

        let began = Instant::now();
        out.recover_started = Some(began);
        let _ = inj.tick();
        let result = inj.recover();
        let done = Instant::now();
        out.effect = inj.effect();
        if out.ended_early.is_none() {
            match inj.in_effect_until() {
                Some(until) if until < began => {
                    out.ended_early = Some((until, "its effect was undone by someone else".into()))
                }
                Some(until) if until < done => out.effect_removed = Some(until),
                _ => {}
            }
        }
        drop(inj);
        match result {
            Ok(()) => {
                out.recovered = Some(done);
                forget(jid);
                let _ = tx.send(Msg::Recovered {
                    fault: fi,
                    target: ti,
                    summary: out.effect.summary.clone(),
                    at: done,
                });
            }
            Err(e) => {
                let error = format!("recovery failed: {}", crate::error_chain(&e));
                let _ = tx.send(Msg::Failed {
                    fault: fi,
                    target: ti,
                    error: error.clone(),
                    fatal: false,
                });
                out.error = Some(match out.error.take() {
                    Some(prev) => format!("{prev}; {error}"),
                    None => error,
                });
            }
        }
        out
    }

    fn extend_journal(
        &self,
        shared: &Shared,
        tx: &Sender<Msg>,
        jid: u64,
        more: Vec<havoc_faults::UndoAction>,
    ) {
        if more.is_empty() {
            return;
        }
        let r = shared
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(jid, more);
        if let Err(e) = r {
            let _ = tx.send(Msg::Error(format!(
                "{}: cannot journal helpers of {}: {}",
                self.fault_name,
                self.target.label(),
                crate::error_chain(&e)
            )));
        }
    }
}

/// How far an achieved hold may fall short of the requested one before the report marks it:
/// 1 % of the request or 50 ms, whichever is smaller.
pub fn shortfall_tolerance(requested: Duration) -> Duration {
    (requested / 100).min(Duration::from_millis(50))
}

/// How far it may run over (recovery is part of the hold): 1 % or 250 ms, whichever is larger.
pub fn overrun_tolerance(requested: Duration) -> Duration {
    (requested / 100).max(Duration::from_millis(250))
}

/// The verdict on one hold: `None` when held as asked, else what went wrong, in words.
pub fn hold_deviation(requested: Duration, achieved: Duration) -> Option<String> {
    if achieved + shortfall_tolerance(requested) < requested {
        let short = requested - achieved;
        Some(format!(
            "held {:.3}s of {:.3}s requested: {:.3}s short ({:.1}%)",
            achieved.as_secs_f64(),
            requested.as_secs_f64(),
            short.as_secs_f64(),
            pct(short, requested)
        ))
    } else if achieved > requested + overrun_tolerance(requested) {
        let over = achieved - requested;
        Some(format!(
            "held {:.3}s of {:.3}s requested: {:.3}s too long ({:.1}%)",
            achieved.as_secs_f64(),
            requested.as_secs_f64(),
            over.as_secs_f64(),
            pct(over, requested)
        ))
    } else {
        None
    }
}

fn pct(part: Duration, of: Duration) -> f64 {
    if of.is_zero() {
        100.0
    } else {
        part.as_secs_f64() / of.as_secs_f64() * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_within_tolerance_is_as_asked() {
        let s = Duration::from_secs(3);
        assert_eq!(hold_deviation(s, s), None);
        assert_eq!(hold_deviation(s, s - Duration::from_millis(29)), None);
        assert_eq!(hold_deviation(s, s + Duration::from_millis(200)), None);
    }

    #[test]
    fn a_short_hold_is_marked() {
        let s = Duration::from_secs(3);
        let d = hold_deviation(s, Duration::from_millis(1240)).expect("short");
        assert!(d.contains("1.760s short"), "{d}");
        // 1 % of 3 s is 30 ms: 31 ms short is marked.
        assert!(hold_deviation(s, s - Duration::from_millis(31)).is_some());
        // Long faults: 50 ms is the bound.
        let m = Duration::from_secs(60);
        assert!(hold_deviation(m, m - Duration::from_millis(51)).is_some());
    }

    #[test]
    fn a_long_hold_is_marked() {
        let s = Duration::from_secs(12);
        let d = hold_deviation(s, Duration::from_secs(19)).expect("long");
        assert!(d.contains("too long"), "{d}");
    }

    #[test]
    fn abort_wakes_a_waiter_at_once() {
        let a = std::sync::Arc::new(Abort::default());
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let aborted = a2.wait_until(Instant::now() + Duration::from_secs(30));
            (aborted, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        a.raise();
        let (aborted, took) = t.join().expect("join");
        assert!(aborted);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(a.is_raised());
    }
}
