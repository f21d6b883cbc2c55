//! Runs started from the dashboard, and the live state of every run on the host.
//!
//! A run is `havoc run` of the dashboard's own executable, in the background, with the YAML in a
//! file under `<state dir>/dashboard/<job>/` and its own report directory
//! `<state dir>/reports/<job>/`, so its report shows up in the list like any other. The dashboard
//! holds no fault itself: halting a run is SIGUSR1 to the run's process (as `havoc halt` does),
//! and the run recovers and reports verdict `aborted`.
//!
//! Live progress comes from what is on disk: the live stream of each run in progress
//! (`<state dir>/runs/*.live.jsonl`, [`crate::live`]: phase, each fault's measured window, probe
//! samples), its journal (`<state dir>/runs/*.json`: the faults in effect on each target, written
//! before each is applied and forgotten when it is recovered; a run of a `havoc` without live
//! streams shows only this), and the report directory once the run ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// SIGUSR1: a run recovers everything and ends with verdict `aborted`.
const SIGUSR1: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("failed to prepare {path} for the run")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no run in progress named {0:?}")]
    NotFound(String),
    #[error("failed to signal pid {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: havoc_sys::SysError,
    },
}

/// What the dashboard knows of one run it started.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub pid: i32,
    pub experiment: String,
    pub started_at_unix_ms: u64,
    /// `None` while the process runs; its exit code (or -signal) afterwards.
    pub exit_code: Option<i32>,
    /// The report's key in the run list (`/runs/<key>`).
    pub report_key: String,
    pub has_report: bool,
    /// The last lines the run printed (its errors, when it failed before reporting).
    pub output_tail: String,
}

/// The runs this dashboard started.
#[derive(Debug, Default, Clone)]
pub struct Jobs {
    inner: Arc<Mutex<BTreeMap<String, Job>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn job_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("dashboard").join(id)
}

impl Jobs {
    /// Starts `exe --state-dir STATE run FILE --report-dir <state>/reports/<job>` in the
    /// background, in its own process group (it outlives the dashboard: halt it, or let it end).
    pub fn start(
        &self,
        exe: &Path,
        state_dir: &Path,
        yaml: &str,
        experiment: &str,
    ) -> Result<Job, JobError> {
        let id = format!("dash-{}-{:08x}", now_ms(), rand::random::<u32>());
        let dir = job_dir(state_dir, &id);
        let prep = |path: &Path| {
            let p = path.to_path_buf();
            move |source| JobError::Prepare { path: p, source }
        };
        std::fs::create_dir_all(&dir).map_err(prep(&dir))?;
        let file = dir.join("experiment.yaml");
        std::fs::write(&file, yaml).map_err(prep(&file))?;
        let log_path = dir.join("output.log");
        let log = std::fs::File::create(&log_path).map_err(prep(&log_path))?;
        let log2 = log.try_clone().map_err(prep(&log_path))?;
        let report_dir = crate::runs::reports_dir(state_dir).join(&id);
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--state-dir")
            .arg(state_dir)
            .arg("run")
            .arg(&file)
            .arg("--report-dir")
            .arg(&report_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| JobError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
        let pid = child.id().map_or(-1, |p| p as i32);
        let job = Job {
            id: id.clone(),
            pid,
            experiment: experiment.into(),
            started_at_unix_ms: now_ms(),
            exit_code: None,
            report_key: id.clone(),
            has_report: false,
            output_tail: String::new(),
        };
        self.lock().insert(id.clone(), job.clone());
        let jobs = self.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    st.code().or(st.signal().map(|s| -s)).unwrap_or(-1)
                }
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot wait for a run");
                    -1
                }
            };
            if let Some(j) = jobs.lock().get_mut(&id) {
                j.exit_code = Some(code);
            }
        });
        Ok(job)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runs started here, with whether each has its report yet and the end of its output.
    pub fn snapshot(&self, state_dir: &Path) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.lock().values().cloned().collect();
        for j in &mut jobs {
            j.has_report = crate::runs::reports_dir(state_dir)
                .join(&j.report_key)
                .join("report.json")
                .exists();
            // The output matters only when a run ended without a report (it failed to start).
            if j.exit_code.is_some() && !j.has_report {
                j.output_tail = tail(&job_dir(state_dir, &j.id).join("output.log"));
            }
        }
        jobs.reverse();
        jobs
    }

    fn running_pid(&self, id: &str) -> Option<i32> {
        self.lock()
            .get(id)
            .filter(|j| j.exit_code.is_none())
            .map(|j| j.pid)
    }

    fn running_pids(&self) -> Vec<i32> {
        self.lock()
            .values()
            .filter(|j| j.exit_code.is_none())
            .map(|j| j.pid)
            .collect()
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One run in progress on the host (whoever started it), from its journal.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRun {
    pub run_id: String,
    pub experiment: String,
    pub pid: i32,
    pub started_at_unix_ms: u64,
    /// The report directory's name when it is under `<state dir>/reports/`.
    pub report_key: Option<String>,
    /// Faults in effect now, one per target, from the journal (empty once every fault is
    /// recovered, while the probes wait for the steady state).
    pub in_effect: Vec<InEffect>,
    /// The run's live stream, if it writes one: phase, measured fault windows, probe samples
    /// (left out of the event stream's `state`, which sends samples as `samples` events).
    pub live: Option<crate::live::LiveRun>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InEffect {
    pub fault: String,
    pub target: String,
}

/// Every run in progress on the host (journal or live stream with its owner alive), with the
/// samples of their live streams, and the journals that cannot be read.
pub fn active(state_dir: &Path) -> (Vec<ActiveRun>, Vec<String>) {
    active_with(state_dir, &mut crate::live::Tails::default(), true)
}

/// [`active`], reading the live streams through `tails` (from where its last poll left them),
/// with or without their samples.
pub fn active_with(
    state_dir: &Path,
    tails: &mut crate::live::Tails,
    samples: bool,
) -> (Vec<ActiveRun>, Vec<String>) {
    let (found, broken) = match havoc_engine::journal::list_report(state_dir) {
        Ok(l) => (
            l.found,
            l.unreadable
                .iter()
                .map(|e| crate::runs::error_chain(e))
                .collect(),
        ),
        Err(e) => (Vec::new(), vec![crate::runs::error_chain(&e)]),
    };
    let reports = crate::runs::reports_dir(state_dir);
    let report_key = |run_id: &str, dir: Option<&Path>| match dir {
        // `havoc run` without --report-dir writes to <state dir>/reports/<run id>.
        None => Some(run_id.to_owned()),
        Some(d) => d
            .parent()
            .filter(|p| *p == reports.as_path())
            .and(d.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_owned),
    };
    let mut runs: BTreeMap<String, ActiveRun> = BTreeMap::new();
    for f in found.into_iter().filter(|f| f.owner_alive()) {
        let d = f.data;
        runs.insert(
            d.run_id.clone(),
            ActiveRun {
                report_key: report_key(&d.run_id, d.report_dir.as_deref()),
                run_id: d.run_id,
                experiment: d.experiment,
                pid: d.owner_pid,
                started_at_unix_ms: d.started_at_unix_ms,
                in_effect: d
                    .entries
                    .into_iter()
                    .map(|e| InEffect {
                        fault: e.fault,
                        target: e.target,
                    })
                    .collect(),
                live: None,
            },
        );
    }
    for l in tails.poll(state_dir) {
        let h = &l.header;
        let live = if samples { l.clone() } else { l.summary() };
        runs.entry(h.run_id.clone())
            .or_insert_with(|| ActiveRun {
                run_id: h.run_id.clone(),
                experiment: h.experiment.clone(),
                pid: h.pid,
                started_at_unix_ms: h.started_at_unix_ms,
                report_key: report_key(&h.run_id, h.report_dir.as_deref()),
                in_effect: Vec::new(),
                live: None,
            })
            .live = Some(live);
    }
    (runs.into_values().collect(), broken)
}

/// Halts one run: `id` is a run id (from its journal) or the id of a run started here. Returns
/// the pid signalled.
pub fn halt(jobs: &Jobs, state_dir: &Path, id: &str) -> Result<i32, JobError> {
    let (runs, _) = active(state_dir);
    let pid = runs
        .iter()
        .find(|r| r.run_id == id || r.report_key.as_deref() == Some(id))
        .map(|r| r.pid)
        .or_else(|| jobs.running_pid(id))
        .ok_or_else(|| JobError::NotFound(id.into()))?;
    signal(pid)?;
    Ok(pid)
}

/// Halts every run in progress on the host and every run started here. Returns the pids
/// signalled and the errors.
pub fn halt_all(jobs: &Jobs, state_dir: &Path) -> (Vec<i32>, Vec<String>) {
    let (runs, _) = active(state_dir);
    let mut pids: Vec<i32> = runs.iter().map(|r| r.pid).collect();
    pids.extend(jobs.running_pids());
    pids.sort_unstable();
    pids.dedup();
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for pid in pids {
        match signal(pid) {
            Ok(()) => done.push(pid),
            Err(e) => errors.push(crate::runs::error_chain(&e)),
        }
    }
    (done, errors)
}

fn signal(pid: i32) -> Result<(), JobError> {
    havoc_sys::process::send_signal(pid, SIGUSR1).map_err(|source| JobError::Signal { pid, source })
}
