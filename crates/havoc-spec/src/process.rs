//! `ProcessChaos`: kill, pause or signal processes.

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{HumanDuration, Signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessAction {
    /// Send `signal` (default SIGKILL) once.
    Kill,
    /// SIGSTOP for the fault's duration, SIGCONT at recovery.
    Pause,
    /// Send `signal` once, or every `interval` while the fault is active.
    Signal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessChaos {
    pub action: ProcessAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// With `action: signal`: repeat the signal at this interval while the fault is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    pub selector: Selector,
}

impl ProcessChaos {
    /// The signal `kill` and `signal` send.
    pub fn effective_signal(&self) -> Signal {
        self.signal.unwrap_or(Signal::KILL)
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        match self.action {
            ProcessAction::Pause => {
                if self.signal.is_some() {
                    p.add(&path.key("signal"), "action pause always uses SIGSTOP/SIGCONT: remove signal, or use action signal");
                }
                if self.interval.is_some() {
                    p.add(
                        &path.key("interval"),
                        "interval only applies to action signal",
                    );
                }
            }
            ProcessAction::Kill => {
                if self.interval.is_some() {
                    p.add(
                        &path.key("interval"),
                        "interval only applies to action signal",
                    );
                }
                if let Some(s) = self.signal {
                    if s == Signal::STOP || s == Signal::CONT {
                        p.add(
                            &path.key("signal"),
                            format!("{s} does not kill: use action pause"),
                        );
                    }
                }
            }
            ProcessAction::Signal => {
                if self.signal.is_none() {
                    p.add(
                        &path.key("signal"),
                        "is required with action signal (e.g. SIGUSR1)",
                    );
                }
                if let Some(s) = self.signal {
                    if s == Signal::STOP {
                        p.add(&path.key("signal"), "SIGSTOP would leave the target stopped: use action pause, which resumes it");
                    }
                }
                if let Some(i) = self.interval {
                    if i.0 < std::time::Duration::from_millis(10) {
                        p.add(
                            &path.key("interval"),
                            format!("must be at least 10ms, got {i}"),
                        );
                    }
                }
            }
        }
    }
}
