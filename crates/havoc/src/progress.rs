//! The live view of a run: a progress bar with each fault's state on a terminal, plain lines
//! otherwise (logs, CI, pipes); and, for `havoc dashboard`, the run's live stream next to its
//! journal (`havoc_dashboard::live`: phase, each fault's measured window, probe samples), removed
//! by [`Display::remove_live`] once the report is written.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use havoc_dashboard::live::{self, Record};
use havoc_engine::{Event, Observer, Plan, RunConfig};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Display {
    bar: Option<ProgressBar>,
    states: BTreeMap<String, String>,
    /// What the live stream's first line needs but the run id, which `Started` brings.
    live_plan: live::RunHeader,
    state_dir: PathBuf,
    report_dir: Option<PathBuf>,
    live: Option<live::Writer>,
}

/// The plan as the live stream's header tells it (run id, pid and start time are filled in when
/// the run starts).
fn live_header(plan: &Plan) -> live::RunHeader {
    let steady = plan.experiment.spec.steady_state.as_ref();
    let baseline = steady.map(|s| s.baseline.0).unwrap_or_default();
    live::RunHeader {
        run_id: String::new(),
        experiment: plan.experiment.metadata.name.clone(),
        pid: std::process::id() as i32,
        pid_start_time: havoc_faults::procinfo::ProcInfo::read(std::process::id() as i32)
            .map(|p| p.start_time)
            .unwrap_or_default(),
        started_at_unix_ms: 0,
        report_dir: None,
        baseline_seconds: baseline.as_secs_f64(),
        length_seconds: (plan.length() + baseline).as_secs_f64(),
        sample_cap: live::MAX_SAMPLES_PER_PROBE,
        faults: plan
            .faults
            .iter()
            .map(|f| live::PlannedFault {
                name: f.entry.name.clone(),
                kind: f.entry.spec.kind().to_string(),
                requested: f.fault.requested(),
                start_seconds: (baseline + f.start).as_secs_f64(),
                duration_seconds: f.duration.as_secs_f64(),
                targets: f.targets.iter().map(|t| t.label()).collect(),
            })
            .collect(),
        probes: steady
            .map(|s| {
                s.probes
                    .iter()
                    .map(|p| live::ProbeInfo {
                        name: p.name.clone(),
                        kind: p.check().map_or("none", |c| c.kind()).into(),
                        interval_ms: p.interval.0.as_secs_f64() * 1000.0,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Display {
    pub fn new(plan: &Plan, cfg: &RunConfig) -> Self {
        let states = plan
            .faults
            .iter()
            .map(|f| (f.entry.name.clone(), "pending".to_string()))
            .collect();
        let bar = std::io::stderr().is_terminal().then(|| {
            let len = plan.length().as_millis().max(1) as u64;
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            bar,
            states,
            live_plan: live_header(plan),
            state_dir: cfg.state_dir.clone(),
            report_dir: cfg.report_dir.clone(),
            live: None,
        }
    }

    /// Removes the live stream: the report, the durable record, is written (or could not be).
    pub fn remove_live(&mut self) {
        if let Some(w) = self.live.take() {
            if let Err(e) = w.remove() {
                self.line(format!("havoc: cannot remove the run's live stream: {e}"));
            }
        }
    }

    fn start_live(&mut self, run_id: &str) {
        let mut header = self.live_plan.clone();
        header.run_id = run_id.to_string();
        header.started_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        header.report_dir = Some(
            self.report_dir
                .clone()
                .unwrap_or_else(|| self.state_dir.join("reports").join(run_id)),
        );
        match live::Writer::create(&self.state_dir, header) {
            Ok(w) => self.live = Some(w),
            Err(e) => self.line(format!(
                "havoc: the dashboard cannot follow this run live (cannot create its stream in {}: {e})",
                havoc_engine::journal::runs_dir(&self.state_dir).display()
            )),
        }
    }

    fn record(&mut self, rec: impl FnOnce() -> Record) {
        if let Some(w) = &mut self.live {
            w.write(&rec());
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn faults_line(&self) -> String {
        self.states
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Display {
    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Started { run_id, length } => {
                self.line(format!(
                    "havoc: run {run_id} started, chaos phase {:.1}s",
                    length.as_secs_f64()
                ));
                self.start_live(run_id);
            }
            Event::Phase { phase, at } => self.record(|| Record::Phase {
                phase: phase.as_str().into(),
                at: at.as_secs_f64(),
            }),
            Event::Injected {
                fault,
                target,
                effect,
                at,
            } => {
                self.states.insert(fault.to_string(), "active".into());
                self.line(format!("havoc: {fault}: injected into {target} {effect}"));
                self.record(|| Record::InEffect {
                    fault: fault.into(),
                    target: target.into(),
                    at: at.as_secs_f64(),
                    effect: effect.into(),
                });
            }
            Event::Recovered {
                fault,
                target,
                effect,
                at,
            } => {
                self.states.insert(fault.to_string(), "recovered".into());
                self.line(format!("havoc: {fault}: recovered {target}: {effect}"));
                self.record(|| Record::Recovered {
                    fault: fault.into(),
                    target: target.into(),
                    at: at.as_secs_f64(),
                    effect: effect.into(),
                });
            }
            Event::ProbeSample { probe, sample } => self.record(|| {
                Record::Sample(live::SampleRecord {
                    probe: probe.into(),
                    t: sample.t_seconds,
                    phase: sample.phase.as_str().into(),
                    ok: sample.ok,
                    latency_ms: sample.latency_ms,
                    value: sample.value,
                    error: sample.error.clone(),
                })
            }),
            Event::Failed {
                fault,
                target,
                error,
            } => {
                self.states.insert(fault.to_string(), "failed".into());
                self.line(format!("havoc: {fault}: {target}: {error}"));
                self.record(|| Record::Failed {
                    fault: fault.into(),
                    target: target.into(),
                    error: error.into(),
                });
            }
            Event::Skipped {
                fault,
                target,
                reason,
            } => {
                self.line(format!("havoc: {fault}: {target} skipped: {reason}"));
                self.record(|| Record::Skipped {
                    fault: fault.into(),
                    target: target.into(),
                    reason: reason.into(),
                });
            }
            Event::Stopping { reason } => {
                self.line(format!("havoc: stopping: {reason}; recovering everything"));
                self.record(|| Record::Stopping {
                    reason: reason.into(),
                });
            }
            Event::Tick {
                elapsed,
                length,
                active,
            } => {
                if let Some(b) = &self.bar {
                    b.set_position(elapsed.as_millis() as u64);
                    b.set_prefix(format!("chaos {active} active"));
                    let left = length.saturating_sub(elapsed).as_secs_f64();
                    b.set_message(format!("{left:.0}s left | {}", self.faults_line()));
                }
            }
        }
    }
}
