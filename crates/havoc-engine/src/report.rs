//! The result of a run: what was hit, when, what it measurably did, and how it ended.
//!
//! Serialized as `report.json` (schema: `havoc_report::SCHEMA`, docs/report-schema.md) and by
//! `--output json`. Times are seconds from the start of the run (the baseline phase, if any, comes
//! first); absolute times are Unix milliseconds.

use havoc_faults::{Effect, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Every fault was injected, held and recovered as planned.
    Completed,
    /// Injection or recovery failed; everything that could be recovered was.
    Failed,
    /// Stopped by a signal (Ctrl-C, SIGTERM, SIGHUP) or a panic; everything was recovered.
    Interrupted,
    /// Stopped because a steady-state probe breached its abort limit; everything was recovered.
    Aborted,
    /// Every fault ran and was recovered, but a steady-state probe failed its tolerance (the
    /// hypothesis did not hold), or a fault was not held as requested on some target (skipped
    /// for a conflict, or its achieved hold differs from the request: see `holdDeviation`).
    Deviated,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub run_id: String,
    pub experiment: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at_unix_ms: u64,
    pub duration_seconds: f64,
    pub faults: Vec<FaultReport>,
    pub errors: Vec<String>,
    /// True when nothing injected by this run remains in effect.
    pub all_recovered: bool,
    pub timing: Timing,
    /// Steady-state probes: phases, series, per-phase verdicts, breaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<havoc_probe::ProbeResults>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// From the start of the command to the first fault in effect (less the baseline phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_latency_ms: Option<f64>,
    /// Longest time one recovery took (from deciding to recover to done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_recover_latency_ms: Option<f64>,
    /// On abort: from the probe breach being seen to the last fault recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_to_recovered_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultReport {
    pub name: String,
    pub kind: String,
    pub requested: String,
    pub start_offset_seconds: f64,
    pub planned_duration_seconds: f64,
    /// How many processes or namespaces matched before `mode` chose.
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    pub target: Target,
    pub label: String,
    /// When the fault was first in effect on this target: its hold counts from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected_at_seconds: Option<f64>,
    /// When its recovery ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_at_seconds: Option<f64>,
    /// From the planned start (baseline + `after`) to in effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_latency_ms: Option<f64>,
    /// From deciding to recover to recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover_latency_ms: Option<f64>,
    /// The hold that was asked for (the fault's duration).
    pub hold_requested_seconds: f64,
    /// The hold that happened: from in effect to when recovery removed the effect (the fault
    /// says when, if before its cleanup ended; else the end of recovery), or to when the effect
    /// ended on its own (the target exited, someone else undid it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_achieved_seconds: Option<f64>,
    /// Set when the achieved hold is short of the request by more than 1 % or 50 ms, or longer
    /// by more than 1 % or 250 ms: what happened, in words. The run is then `deviated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_deviation: Option<String>,
    /// Set when the target was left alone because something else holds it (a conflict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub effect: Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetReport {
    /// A target nothing has happened to yet.
    pub fn new(target: &Target, requested: std::time::Duration) -> TargetReport {
        TargetReport {
            target: target.clone(),
            label: target.label(),
            injected_at_seconds: None,
            recovered_at_seconds: None,
            inject_latency_ms: None,
            recover_latency_ms: None,
            hold_requested_seconds: requested.as_secs_f64(),
            hold_achieved_seconds: None,
            hold_deviation: None,
            skipped: None,
            effect: Effect::default(),
            error: None,
        }
    }
}

impl RunReport {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "experiment {} — {} (seed {}, {:.1}s)\n",
            self.experiment,
            match self.verdict {
                Verdict::Completed => "completed",
                Verdict::Failed => "FAILED",
                Verdict::Interrupted => "interrupted",
                Verdict::Aborted => "ABORTED",
                Verdict::Deviated => "DEVIATED from steady state",
            },
            self.seed,
            self.duration_seconds
        );
        if let Some(r) = &self.reason {
            out.push_str(&format!("  reason: {r}\n"));
        }
        for f in &self.faults {
            out.push_str(&format!("  {} [{}] {}\n", f.name, f.kind, f.requested));
            for t in &f.targets {
                let when = match (t.injected_at_seconds, t.recovered_at_seconds) {
                    (Some(a), Some(b)) => format!("{a:.2}s → {b:.2}s"),
                    (Some(a), None) => format!("{a:.2}s → (not recovered)"),
                    _ => "not injected".into(),
                };
                let held = match t.hold_achieved_seconds {
                    Some(h) => format!(" (held {h:.2}s of {:.2}s)", t.hold_requested_seconds),
                    None => String::new(),
                };
                out.push_str(&format!(
                    "    {}: {when}{held}: {}",
                    t.label, t.effect.summary
                ));
                if let Some(s) = &t.skipped {
                    out.push_str(&format!(" — SKIPPED: {s}"));
                }
                if let Some(d) = &t.hold_deviation {
                    out.push_str(&format!(" — NOT HELD AS ASKED: {d}"));
                }
                if let Some(e) = &t.error {
                    out.push_str(&format!(" — error: {e}"));
                }
                out.push('\n');
            }
        }
        if let Some(ss) = &self.steady_state {
            for v in &ss.verdicts {
                out.push_str(&format!(
                    "  probe {} [{:?}]: {} ({} samples{}{}): {}\n",
                    v.probe,
                    v.phase,
                    if v.pass { "pass" } else { "FAIL" },
                    v.samples,
                    v.success_ratio
                        .map(|r| format!(", success {:.1}%", r * 100.0))
                        .unwrap_or_default(),
                    v.latency_p99_ms
                        .map(|l| format!(", p99 {l:.1} ms"))
                        .unwrap_or_default(),
                    v.reason
                ));
            }
        }
        if let Some(ms) = self.timing.abort_to_recovered_ms {
            out.push_str(&format!(
                "  abort: every fault recovered {ms:.1} ms after the breach was seen\n"
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        out.push_str(if self.all_recovered {
            "  all faults recovered\n"
        } else {
            "  WARNING: some faults may still be in effect: run `havoc recover`\n"
        });
        out
    }
}

/// Writes `report.json` and `report.html` into `dir` (created if needed).
pub fn write(report: &RunReport, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let value = serde_json::to_value(report).map_err(std::io::Error::other)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(dir.join("report.html"), havoc_report::render_html(&value))
}

/// The report of a run that died before it could recover, written by whoever replayed its journal.
pub fn crash_report(
    journal: &crate::journal::JournalData,
    replay: &crate::journal::Replay,
    by: &str,
) -> RunReport {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let undone: Vec<String> = replay
        .done
        .iter()
        .chain(&replay.nothing_left)
        .cloned()
        .collect();
    RunReport {
        run_id: journal.run_id.clone(),
        experiment: journal.experiment.clone(),
        seed: journal.seed,
        verdict: Verdict::Interrupted,
        reason: Some(format!(
            "havoc run (pid {}) died before recovering; {by} replayed its journal: {}",
            journal.owner_pid,
            if undone.is_empty() {
                "nothing was left to undo".to_string()
            } else {
                undone.join("; ")
            }
        )),
        started_at_unix_ms: journal.started_at_unix_ms,
        duration_seconds: now.saturating_sub(journal.started_at_unix_ms) as f64 / 1000.0,
        faults: Vec::new(),
        errors: replay.failed.clone(),
        all_recovered: replay.failed.is_empty(),
        timing: Timing::default(),
        steady_state: None,
    }
}
