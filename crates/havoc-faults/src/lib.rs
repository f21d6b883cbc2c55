//! `havoc-faults`: what each fault does to a target, and how it is undone.
//!
//! The seam is two traits. A [`Fault`] is a validated spec bound to the machine (it checks a target
//! and injects into it); an [`Injection`] is a live fault on one target: it reports its measured
//! effect and recovers, and dropping it recovers too (best effort). What must be undone if Havoc
//! dies before it can recover is described by [`UndoAction`] records, which the engine writes to
//! its journal *before* injecting and which can be replayed by any later process.
//!
//! Adding a fault kind means one module here, one `FaultSpec` variant in `havoc-spec`, and one
//! arm in [`build`]. This crate never decides when or whom to hit: the engine does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod cgroup;
pub mod dns;
pub mod http;
pub mod io;
pub mod network;
pub mod process;
pub mod procinfo;
pub mod redirect;
pub mod stress;
pub mod syscall;
pub mod time;
pub mod undo;

pub use undo::UndoAction;

/// A concrete thing a fault is applied to, as resolved by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Target {
    /// A process, identified by pid *and* start time so a recycled pid is never mistaken for it.
    #[serde(rename_all = "camelCase")]
    Process {
        pid: i32,
        start_time: u64,
        name: String,
    },
    /// A network namespace by path (`/run/netns/NAME`, `/proc/PID/ns/net`), with a label for reports.
    #[serde(rename_all = "camelCase")]
    Netns { path: PathBuf, label: String },
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Process { pid, name, .. } => format!("pid {pid} ({name})"),
            Target::Netns { label, .. } => format!("netns {label}"),
        }
    }

    /// The pid and start time of a process target that is still the same process; a fault
    /// `kind` that needs a process refuses any other target (`why` says so).
    pub fn live_process(&self, why: &str) -> Result<(i32, u64), FaultError> {
        match self {
            Target::Process {
                pid, start_time, ..
            } => {
                if !procinfo::ProcInfo::is_same(*pid, *start_time) {
                    return Err(FaultError::TargetGone {
                        target: self.label(),
                    });
                }
                Ok((*pid, *start_time))
            }
            other => Err(FaultError::Refused {
                target: other.label(),
                reason: why.into(),
            }),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            Target::Process { pid, .. } => Some(*pid),
            Target::Netns { .. } => None,
        }
    }
}

/// The measured effect of one injection: named numbers plus a one-line summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// e.g. `signals delivered: 2`, `cpu 59.8% of a core per worker over 10.0s`.
    pub summary: String,
    /// Machine-readable measurements, e.g. `signals_delivered`, `cpu_seconds`, `bytes_held`.
    pub metrics: BTreeMap<String, f64>,
}

impl Effect {
    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.to_string(), value);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("target {target} no longer exists")]
    TargetGone { target: String },
    #[error("{target} cannot be targeted: {reason}")]
    Refused { target: String, reason: String },
    /// The target is held by something else in a way this fault cannot share (a process stopped
    /// by someone other than Havoc). Decided per target: the engine skips this target, says so in
    /// the report, and the run's other targets and faults go on.
    #[error("{target} skipped: {reason}")]
    Conflict { target: String, reason: String },
    #[error("failed to {action} {target}")]
    Sys {
        action: &'static str,
        target: String,
        #[source]
        source: havoc_sys::SysError,
    },
    #[error("failed to {action} {target}")]
    Io {
        action: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// What the engine hands to every injection: facts about this run that faults need.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `havoc` executable, re-executed for helper processes (stress workers).
    pub self_exe: PathBuf,
    /// Seed for this fault's random choices.
    pub seed: u64,
    /// How long the fault will be held (helpers size their work by it).
    pub duration: std::time::Duration,
}

/// A validated fault spec, ready to be applied to targets.
pub trait Fault: Send + Sync {
    /// Checks that `target` suits this fault (right kind of target, preconditions met) without
    /// changing anything; the engine checks every target before injecting any.
    fn check(&self, target: &Target) -> Result<(), FaultError>;

    /// The undo records to journal before [`Fault::inject`] runs on `target`.
    fn undo_plan(&self, target: &Target) -> Vec<UndoAction>;

    /// Applies the fault to one target.
    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError>;

    /// What was asked for, for the report: `pause`, `cpu 2x60%`.
    fn requested(&self) -> String;

    /// Called once when a run that will inject this fault starts (never for a dry run): slow
    /// preparation that changes nothing on the machine may begin here, in the background, so
    /// the fault starts on time (the eBPF classifier's verification, for network faults).
    fn prepare(&self) {}
}

/// A fault active on one target.
pub trait Injection: Send {
    /// Called about every 50 ms while the fault is held, for periodic work (repeated signals,
    /// lease renewal, health of helper processes). An error here aborts the experiment.
    fn tick(&mut self) -> Result<(), FaultError> {
        Ok(())
    }

    /// Undo records learned while injecting (e.g. helper process ids), to add to the journal.
    fn late_undo(&self) -> Vec<UndoAction> {
        Vec::new()
    }

    /// When the fault was first observed in effect on its target, if the injection knows better
    /// than "when `inject` returned" (the engine's default). A fault's duration counts from here.
    fn in_effect_since(&self) -> Option<std::time::Instant> {
        None
    }

    /// When the effect ended, if the injection knows better than "when `recover` returned":
    /// before recovery when something else undid it (observed in the target), or during
    /// recovery when its effect was gone before its cleanup was (the jumps to a delay queue
    /// removed, before the chains are). The engine counts the hold up to here.
    fn in_effect_until(&self) -> Option<std::time::Instant> {
        None
    }

    /// The measured effect so far.
    fn effect(&self) -> Effect;

    /// Removes the fault. Idempotent; after it returns Ok the target is as before.
    fn recover(&mut self) -> Result<(), FaultError>;
}

/// Binds a spec to its implementation.
pub fn build(spec: &havoc_spec::FaultSpec) -> Box<dyn Fault> {
    match spec {
        havoc_spec::FaultSpec::ProcessChaos(p) => Box::new(process::ProcessFault::new(p.clone())),
        havoc_spec::FaultSpec::StressChaos(s) => Box::new(stress::StressFault::new(s.clone())),
        havoc_spec::FaultSpec::NetworkChaos(n) => Box::new(network::NetworkFault::new(n.clone())),
        havoc_spec::FaultSpec::IOChaos(f) => Box::new(io::IoFault::new(f.clone())),
        havoc_spec::FaultSpec::TimeChaos(t) => Box::new(time::TimeFault::new(t.clone())),
        havoc_spec::FaultSpec::SyscallChaos(s) => Box::new(syscall::SyscallFault::new(s.clone())),
        havoc_spec::FaultSpec::DNSChaos(d) => Box::new(dns::DnsFault::new(d.clone())),
        havoc_spec::FaultSpec::HTTPChaos(h) => Box::new(http::HttpFault::new(h.clone())),
    }
}
