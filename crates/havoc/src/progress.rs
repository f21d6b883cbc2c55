//! The live view of a run: a progress bar with each fault's state on a terminal, plain lines
//! otherwise (logs, CI, pipes).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use havoc_engine::{Event, Observer, Plan};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Display {
    bar: Option<ProgressBar>,
    states: BTreeMap<String, String>,
}

impl Display {
    pub fn new(plan: &Plan) -> Self {
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
        Self { bar, states }
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
            Event::Started { run_id, length } => self.line(format!(
                "havoc: run {run_id} started, chaos phase {:.1}s",
                length.as_secs_f64()
            )),
            Event::Injected {
                fault,
                target,
                effect,
            } => {
                self.states.insert(fault.to_string(), "active".into());
                self.line(format!("havoc: {fault}: injected into {target} {effect}"));
            }
            Event::Recovered {
                fault,
                target,
                effect,
            } => {
                self.states.insert(fault.to_string(), "recovered".into());
                self.line(format!("havoc: {fault}: recovered {target}: {effect}"));
            }
            Event::Failed {
                fault,
                target,
                error,
            } => {
                self.states.insert(fault.to_string(), "failed".into());
                self.line(format!("havoc: {fault}: {target}: {error}"));
            }
            Event::Skipped {
                fault,
                target,
                reason,
            } => self.line(format!("havoc: {fault}: {target} skipped: {reason}")),
            Event::Stopping { reason } => {
                self.line(format!("havoc: stopping: {reason}; recovering everything"))
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
