//! `havoc-engine`: runs experiments.
//!
//! ```text
//! spec ──resolve──▶ plan ──inject (journal first)──▶ live injections ──hold──▶ recover ──▶ report
//! ```
//! The engine owns the lifecycle, the journal and the watchdog that make recovery certain, and the
//! run report. It never talks to Kubernetes and holds no fault-specific logic.

pub mod journal;
mod lifecycle;
pub mod report;
pub mod resolve;
pub mod run;
pub mod watchdog;
pub mod workflow;

pub use report::{RunReport, Verdict};
pub use run::{execute, plan, Event, Observer, Plan, PlanError, RunConfig, StopFlag};

/// Renders an error with its chain of causes: `failed to pause pid 7: kill failed: No such process`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
