//! Host-mode workflows and schedules: the pure decisions of `havoc_spec::workflow` and
//! `havoc_spec::schedule`, driven by threads.
//!
//! A workflow run is a loop over [`Tree::advance`]: each `Start` spawns the node's work on its own
//! thread (a fault through [`crate::plan`] + [`crate::execute`], so every fault keeps its own
//! journal, watchdog and guard; a task's argv; a status check's HTTP probes; a nested schedule),
//! each `Stop` asks that work to stop (a fault recovers, a command is killed), and each finished
//! piece of work is reported back with [`Tree::work_finished`]. A SIGTERM (the caller's
//! [`StopFlag`]) aborts the tree, which stops and recovers everything it started.
//!
//! A schedule run is a loop over [`schedule::due`] and [`schedule::admit`]; each run writes its
//! own report under the schedule's report directory, and at most `historyLimit` finished runs'
//! reports are kept.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havoc_spec::experiment::{Experiment, ExperimentSpec, FaultEntry, Metadata, API_VERSION};
use havoc_spec::schedule::{self, DateTime, ScheduleSpec, ScheduleTarget, Utc};
use havoc_spec::statuscheck::{Record, StatusCheckSpec, Tracker};
use havoc_spec::units::HumanDuration;
use havoc_spec::workflow::{
    fault_duration, Action, NodePhase, NodeState, StopCause, TaskSpec, Template, TemplateKind,
    Tree, WorkOutcome, WorkflowSpec, MAX_STDOUT,
};
use serde::Serialize;

use crate::report::{RunReport, Verdict};
use crate::resolve::Protection;
use crate::run::{Quiet, RunConfig, StopFlag};

/// The longest the loop sleeps between looks at the tree and the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What one node did, beside its state.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetail {
    /// A fault node's run report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// A status check's bounded history.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Record>,
    /// A schedule node's runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ScheduledRun>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    #[serde(flatten)]
    pub state: NodeState,
    #[serde(flatten)]
    pub detail: NodeDetail,
}

/// One report per workflow run, holding the node tree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowReport {
    pub run_id: String,
    pub workflow: String,
    pub phase: NodePhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at_unix_ms: u64,
    pub duration_seconds: f64,
    /// Every fault the run injected was recovered (from each fault's own report).
    pub all_recovered: bool,
    /// Node times (`startedMs`, `finishedMs`, `deadlineMs`) are milliseconds from `startedAtUnixMs`.
    pub nodes: Vec<NodeReport>,
}

impl WorkflowReport {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "workflow {} ({}): {:?} in {:.1}s\n",
            self.workflow, self.run_id, self.phase, self.duration_seconds
        );
        if let Some(r) = &self.reason {
            out.push_str(&format!("  reason: {r}\n"));
        }
        for n in &self.nodes {
            let depth = n.state.path.matches('/').count();
            let span = match (n.state.started_ms, n.state.finished_ms) {
                (Some(a), Some(b)) => format!("{:.2}s..{:.2}s", a as f64 / 1e3, b as f64 / 1e3),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "  {}{} [{}] {:?} {span}{}\n",
                "  ".repeat(depth),
                n.state.template,
                n.state.template_type,
                n.state.phase,
                n.state
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(if self.all_recovered {
            "  all faults recovered\n"
        } else {
            "  WARNING: some faults may still be in effect: run `havoc recover`\n"
        });
        out
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), bytes)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn new_run_id(prefix: &str) -> String {
    format!("{prefix}-{}-{:04x}", unix_ms(), rand::random::<u16>())
}

/// What a host cannot run in a workflow (a container task), as `path: why` lines.
pub fn host_problems(spec: &WorkflowSpec) -> Vec<String> {
    let mut out = Vec::new();
    for t in &spec.templates {
        if let TemplateKind::Task { task, .. } = &t.kind {
            if task.container.is_some() {
                out.push(format!(
                    "template `{}`: task.container runs a pod in Kubernetes; on a host write task.command (an argv)",
                    t.name
                ));
            }
        }
    }
    out
}

/// Per-node work in flight.
struct Work {
    stop: Arc<AtomicBool>,
    fault_stop: Option<StopFlag>,
    handle: JoinHandle<()>,
}

type Done = (usize, WorkOutcome, NodeDetail);

/// Runs a workflow to its end (or until `stop` aborts it), in the foreground.
pub fn run_workflow(
    spec: &WorkflowSpec,
    name: &str,
    cfg: &RunConfig,
    stop: &StopFlag,
) -> WorkflowReport {
    let run_id = new_run_id(name);
    let dir = cfg.report_dir_for(&run_id);
    let started_unix = unix_ms();
    let t0 = Instant::now();
    let now_ms = || t0.elapsed().as_millis() as u64;
    let mut tree = Tree::new(spec);
    let mut details: BTreeMap<usize, NodeDetail> = BTreeMap::new();
    let mut work: BTreeMap<usize, Work> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<Done>();
    let mut result_phase = None;
    loop {
        if tree.abort_reason().is_none() {
            if let Some((_, why)) = stop.check() {
                tree.abort(why);
            }
        }
        for a in tree.advance(spec, now_ms()) {
            match a {
                Action::Start(i) => {
                    let t = spec
                        .template(&tree.nodes[i].template)
                        .expect("node of a template")
                        .clone();
                    let node_dir = dir.join("nodes").join(tree.nodes[i].path.replace('/', "_"));
                    let w = start_work(i, &t, name, cfg, node_dir, tx.clone());
                    work.insert(i, w);
                }
                Action::Stop(i, cause) => {
                    if let Some(w) = work.get(&i) {
                        w.stop.store(true, Ordering::SeqCst);
                        if let Some(f) = &w.fault_stop {
                            f.request(match cause {
                                StopCause::Deadline => {
                                    "the workflow node's deadline passed".to_string()
                                }
                                StopCause::Abort => format!(
                                    "the workflow was aborted: {}",
                                    tree.abort_reason().unwrap_or("requested")
                                ),
                            });
                        }
                    }
                }
                Action::Finished(p) => result_phase = Some(p),
            }
        }
        if let Some(p) = result_phase {
            for (_, w) in std::mem::take(&mut work) {
                let _ = w.handle.join();
            }
            while let Ok((i, _, d)) = rx.try_recv() {
                details.insert(i, d);
            }
            return finish_report(run_id, name, p, &tree, details, started_unix, t0);
        }
        let wait = tree
            .next_deadline_ms()
            .map(|d| Duration::from_millis(d.saturating_sub(now_ms())))
            .unwrap_or(TICK)
            .min(TICK);
        if let Ok((i, outcome, detail)) = rx.recv_timeout(wait) {
            details.insert(i, detail);
            if let Some(w) = work.remove(&i) {
                let _ = w.handle.join();
            }
            tree.work_finished(spec, i, outcome, now_ms());
        }
    }
}

fn finish_report(
    run_id: String,
    name: &str,
    phase: NodePhase,
    tree: &Tree,
    mut details: BTreeMap<usize, NodeDetail>,
    started_unix: u64,
    t0: Instant,
) -> WorkflowReport {
    let nodes: Vec<NodeReport> = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(i, s)| NodeReport {
            state: s.clone(),
            detail: details.remove(&i).unwrap_or_default(),
        })
        .collect();
    let all_recovered = nodes.iter().all(|n| {
        n.detail.fault.as_ref().is_none_or(|f| f.all_recovered)
            && n.detail.runs.iter().all(|r| r.all_recovered)
    });
    WorkflowReport {
        run_id,
        workflow: name.to_string(),
        phase,
        reason: tree.abort_reason().map(str::to_string),
        started_at_unix_ms: started_unix,
        duration_seconds: t0.elapsed().as_secs_f64(),
        all_recovered,
        nodes,
    }
}

fn start_work(
    i: usize,
    t: &Template,
    wf_name: &str,
    cfg: &RunConfig,
    node_dir: PathBuf,
    tx: mpsc::Sender<Done>,
) -> Work {
    let stop = Arc::new(AtomicBool::new(false));
    let fault_stop = StopFlag::new();
    let (s2, f2) = (stop.clone(), fault_stop.clone());
    let t = t.clone();
    let cfg = cfg.clone();
    let wf_name = wf_name.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("wf-{}", t.name))
        .spawn(move || {
            let (outcome, detail) = match &t.kind {
                TemplateKind::Chaos(f) => {
                    let mut f = (**f).clone();
                    f.duration = Some(HumanDuration(fault_duration(&t, &f)));
                    let mut c = cfg.clone();
                    c.report_dir = Some(node_dir);
                    run_fault(&wf_name, f, &c, &f2)
                }
                TemplateKind::Task { task, .. } => run_task(task, &s2),
                TemplateKind::StatusCheck { check, .. } => run_check(check, &s2),
                TemplateKind::Schedule(s) => {
                    let mut c = cfg.clone();
                    c.report_dir = Some(node_dir);
                    let runs = run_schedule(s, &t.name, &c, &f2, &mut |_| {});
                    let ok = runs.iter().all(|r| r.all_recovered);
                    let outcome = if ok {
                        WorkOutcome::Succeeded
                    } else {
                        WorkOutcome::Failed("a scheduled run left a fault behind".into())
                    };
                    (
                        outcome,
                        NodeDetail {
                            runs,
                            ..Default::default()
                        },
                    )
                }
                _ => (WorkOutcome::Succeeded, NodeDetail::default()),
            };
            let _ = tx.send((i, outcome, detail));
        })
        .expect("spawn a workflow worker thread");
    Work {
        stop,
        fault_stop: Some(fault_stop),
        handle,
    }
}

/// Runs one fault as an experiment of its own (plan, inject, hold, recover) and writes its report.
pub fn run_fault(
    name: &str,
    entry: FaultEntry,
    cfg: &RunConfig,
    stop: &StopFlag,
) -> (WorkOutcome, NodeDetail) {
    let exp = Experiment {
        api_version: API_VERSION.to_string(),
        kind: "Experiment".to_string(),
        metadata: Metadata {
            name: name.to_string(),
            namespace: None,
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec: ExperimentSpec {
            seed: None,
            duration: None,
            faults: vec![entry],
            steady_state: None,
            abort: None,
        },
    };
    // The apply latency of a node's fault counts from the node's start, not the command's.
    let mut cfg = cfg.clone();
    cfg.command_started = Instant::now();
    let cfg = &cfg;
    let protect = Protection::for_this_process(&[]);
    let plan = match crate::plan(&exp, rand::random(), &protect) {
        Ok(p) => p,
        Err(e) => {
            return (
                WorkOutcome::Failed(format!("{} (nothing was injected)", crate::error_chain(&e))),
                NodeDetail::default(),
            )
        }
    };
    let report = crate::execute(plan, cfg, stop, &mut Quiet);
    if let Some(dir) = &cfg.report_dir {
        if let Err(e) = crate::report::write(&report, dir) {
            tracing::warn!(dir = %dir.display(), "cannot write a node report: {e}");
        }
    }
    let outcome = match report.verdict {
        Verdict::Failed => WorkOutcome::Failed(
            report
                .reason
                .clone()
                .or_else(|| report.errors.first().cloned())
                .unwrap_or_else(|| "the fault failed".into()),
        ),
        _ if !report.all_recovered => WorkOutcome::Failed("not every fault was recovered".into()),
        _ => WorkOutcome::Succeeded,
    };
    (
        outcome,
        NodeDetail {
            fault: Some(report),
            ..Default::default()
        },
    )
}

/// Runs a task's argv (no shell), keeping the first [`MAX_STDOUT`] bytes of its output; killed
/// when `stop` is set.
fn run_task(task: &TaskSpec, stop: &AtomicBool) -> (WorkOutcome, NodeDetail) {
    let Some(argv) = task.command.as_ref().filter(|a| !a.is_empty()) else {
        return (
            WorkOutcome::Failed(
                "a container task needs Kubernetes: on a host write task.command".into(),
            ),
            NodeDetail::default(),
        );
    };
    let mut child = match std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return (
                WorkOutcome::Failed(format!("cannot start `{}`: {e}", argv[0])),
                NodeDetail::default(),
            )
        }
    };
    let mut out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut out).take(MAX_STDOUT as u64).read_to_end(&mut buf);
        // Drain the rest so the command never blocks on a full pipe.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
        buf
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if stop.load(Ordering::SeqCst) => {
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let buf = reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&buf)
        .trim_end_matches('\n')
        .to_string();
    let exit_code = status.and_then(|s| s.code()).map_or(-1, i64::from);
    (
        WorkOutcome::TaskExited {
            exit_code,
            stdout: stdout.clone(),
        },
        NodeDetail {
            exit_code: Some(exit_code),
            stdout: Some(havoc_spec::units::clip(&stdout).into_owned()),
            ..Default::default()
        },
    )
}

/// Probes until the tracker decides, or until `stop` (the node's deadline or an abort).
fn run_check(spec: &StatusCheckSpec, stop: &AtomicBool) -> (WorkOutcome, NodeDetail) {
    use havoc_probe::check::Check as _;
    let (lo, hi) = spec.http.criteria.range().unwrap_or((200, 299));
    let http = havoc_spec::probe::HttpCheck {
        url: spec.http.url.clone(),
        method: match spec.http.method {
            havoc_spec::statuscheck::HttpMethod::Get => havoc_spec::probe::HttpMethod::Get,
            havoc_spec::statuscheck::HttpMethod::Post => havoc_spec::probe::HttpMethod::Post,
        },
        timeout: HumanDuration(spec.timeout()),
        expect_status: (lo..=hi).collect(),
        headers: spec
            .http
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.join(", ")))
            .collect(),
        body: spec.http.body.clone(),
        body_matches: None,
    };
    let mut probe = havoc_probe::check::HttpProbe::new(&http, None);
    let mut tracker = Tracker::new(spec);
    let verdict = 'outer: loop {
        let o = probe.sample(stop);
        if let Some(v) = tracker.record(Record {
            at_unix_ms: unix_ms(),
            ok: o.ok,
            message: o.error,
        }) {
            break v;
        }
        let until = Instant::now() + spec.interval();
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                break 'outer tracker.at_deadline();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let history: Vec<Record> = tracker.history.iter().cloned().collect();
    let outcome = match verdict {
        havoc_spec::statuscheck::CheckVerdict::Succeeded => WorkOutcome::Succeeded,
        havoc_spec::statuscheck::CheckVerdict::Failed => WorkOutcome::Failed(format!(
            "{} consecutive failures (last: {})",
            tracker.consecutive_failed,
            history
                .last()
                .and_then(|r| r.message.clone())
                .unwrap_or_else(|| "no result before the deadline".into())
        )),
    };
    (
        outcome,
        NodeDetail {
            checks: history,
            ..Default::default()
        },
    )
}

/// One run of a schedule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    pub scheduled_unix_ms: u64,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// `Succeeded`, `Failed`, `Aborted`... (a fault's verdict maps to a phase).
    pub phase: NodePhase,
    pub all_recovered: bool,
    pub report_dir: PathBuf,
}

/// What a schedule loop tells its caller as it goes (for a log line or an event).
#[derive(Debug, Clone)]
pub enum ScheduleEvent {
    Started {
        scheduled: DateTime<Utc>,
        /// How long after its scheduled time the run started.
        late: Duration,
        missed: u32,
        report_dir: PathBuf,
    },
    SkippedForbid {
        scheduled: DateTime<Utc>,
    },
    SkippedLate {
        scheduled: DateTime<Utc>,
    },
    Finished(ScheduledRun),
}

struct Running {
    scheduled: DateTime<Utc>,
    started: u64,
    stop: StopFlag,
    dir: PathBuf,
    handle: JoinHandle<(NodePhase, bool)>,
}

/// Runs a schedule in the foreground until `stop`; running runs are stopped (recovered) then.
/// Reports go to `cfg.report_dir` (else `<state dir>/reports/<name>`), one directory per run;
/// only the newest `historyLimit` finished runs' directories are kept.
pub fn run_schedule(
    spec: &ScheduleSpec,
    name: &str,
    cfg: &RunConfig,
    stop: &StopFlag,
    on_event: &mut dyn FnMut(&ScheduleEvent),
) -> Vec<ScheduledRun> {
    let base = cfg
        .report_dir
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("reports").join(name));
    let mut last = Utc::now();
    let mut running: Vec<Running> = Vec::new();
    let mut finished: Vec<ScheduledRun> = Vec::new();
    let mut seq = 0u32;
    loop {
        let stopping = stop.check().is_some();
        // Reap finished runs.
        let mut i = 0;
        while i < running.len() {
            if running[i].handle.is_finished() || stopping {
                let r = running.remove(i);
                if stopping {
                    r.stop.request("the schedule is stopping");
                }
                let (phase, all_recovered) = r.handle.join().unwrap_or((NodePhase::Failed, false));
                let run = ScheduledRun {
                    scheduled_unix_ms: r.scheduled.timestamp_millis().max(0) as u64,
                    started_unix_ms: r.started,
                    finished_unix_ms: unix_ms(),
                    phase,
                    all_recovered,
                    report_dir: r.dir,
                };
                on_event(&ScheduleEvent::Finished(run.clone()));
                finished.push(run);
                prune_history(&mut finished, spec.history_limit as usize);
            } else {
                i += 1;
            }
        }
        if stopping {
            return finished;
        }
        let now = Utc::now();
        let d = schedule::due(&spec.schedule, last, now, spec.starting_deadline);
        if let Some(m) = d.mark {
            last = m;
        }
        if d.skipped_late {
            if let Some(m) = d.mark {
                on_event(&ScheduleEvent::SkippedLate { scheduled: m });
            }
        }
        if let Some(at) = d.run {
            if schedule::admit(spec.concurrency_policy, running.len()) {
                seq += 1;
                let dir = base.join(format!("{name}-{}-{seq}", at.timestamp()));
                on_event(&ScheduleEvent::Started {
                    scheduled: at,
                    late: (Utc::now() - at).to_std().unwrap_or_default(),
                    missed: d.missed,
                    report_dir: dir.clone(),
                });
                running.push(start_run(spec, name, cfg, at, dir));
            } else {
                on_event(&ScheduleEvent::SkippedForbid { scheduled: at });
            }
        }
        let wait = d
            .next
            .and_then(|n| (n - Utc::now()).to_std().ok())
            .unwrap_or(TICK)
            .min(TICK);
        std::thread::sleep(wait.max(Duration::from_millis(1)));
    }
}

fn start_run(
    spec: &ScheduleSpec,
    name: &str,
    cfg: &RunConfig,
    at: DateTime<Utc>,
    dir: PathBuf,
) -> Running {
    let run_stop = StopFlag::new();
    let s2 = run_stop.clone();
    let target = spec.target.clone();
    let mut c = cfg.clone();
    c.report_dir = Some(dir.clone());
    let name = name.to_string();
    let handle = std::thread::spawn(move || match target {
        ScheduleTarget::Fault(f) => {
            let (o, d) = run_fault(&name, *f, &c, &s2);
            let recovered = d.fault.as_ref().is_none_or(|r| r.all_recovered);
            match o {
                WorkOutcome::Failed(_) => (NodePhase::Failed, recovered),
                _ => (NodePhase::Succeeded, recovered),
            }
        }
        ScheduleTarget::Workflow(w) => {
            let r = run_workflow(&w, &name, &c, &s2);
            if let Some(d) = &c.report_dir {
                let _ = r.write(d);
            }
            (r.phase, r.all_recovered)
        }
    });
    Running {
        scheduled: at,
        started: unix_ms(),
        stop: run_stop,
        dir,
        handle,
    }
}

/// Keeps the newest `limit` finished runs; removes the report directories of older ones.
fn prune_history(finished: &mut Vec<ScheduledRun>, limit: usize) {
    while finished.len() > limit.max(1) {
        let old = finished.remove(0);
        let _ = std::fs::remove_dir_all(&old.report_dir);
    }
}
