//! The live stream of a run in progress: what `havoc run` appends as it happens, and what the
//! dashboard folds it into.
//!
//! One file per run next to its journal: `<state dir>/runs/<run id>.live.jsonl`, one JSON object
//! per line, appended (never rewritten) by the run's observer, each line with one `write`:
//!
//! - `run` (always first): who runs it (pid and start time, so a dead writer is recognised),
//!   the plan (faults, targets, planned windows) and the probes;
//! - `phase`: baseline, chaos, recovery, as the run enters each;
//! - `inEffect` / `recovered`: one fault on one target, with the *measured* time (seconds from
//!   the start of the run, the report's origin: the same numbers as the report's
//!   `injectedAtSeconds` and `recoveredAtSeconds`);
//! - `failed`, `skipped`, `stopping`: what went wrong, and why the run stops early;
//! - `sample`: one probe sample (time, phase, pass/fail, latency, value, error); at most
//!   [`MAX_SAMPLES_PER_PROBE`] per probe, after which a `capped` line says the live chart stops
//!   there (the report keeps every sample). So the file stays small: a few hundred bytes per
//!   target and at most that many samples per probe.
//!
//! Lifecycle: the file is created when the run starts and removed by the run once its report is
//! written (the report is the durable record). A run that dies first (SIGKILL, a crash) leaves
//! it behind with a dead writer: readers ignore such a file, and [`sweep`] removes it, which every
//! start of `havoc run`, `havoc recover` and `havoc dashboard` does, as they replay stale
//! journals. The stream is a view, never a record: it is not fsynced, and a run whose stream
//! cannot be written runs on without it.
//!
//! A reader may see the last line half written: [`Tail`] keeps an incomplete line until its
//! newline arrives, and skips (and counts) a complete line it cannot parse.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The most samples of one probe a live stream holds.
pub const MAX_SAMPLES_PER_PROBE: usize = 2000;

/// The file name's end: `<run id>.live.jsonl`.
pub const SUFFIX: &str = ".live.jsonl";

/// The live stream of run `run_id`.
pub fn path(state_dir: &Path, run_id: &str) -> PathBuf {
    havoc_engine::journal::runs_dir(state_dir).join(format!("{run_id}{SUFFIX}"))
}

/// The first line: the run and its plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHeader {
    pub run_id: String,
    pub experiment: String,
    pub pid: i32,
    /// The writer's start time (clock ticks since boot, as in /proc/PID/stat): with the pid,
    /// it tells a live writer from a reused pid.
    pub pid_start_time: u64,
    pub started_at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_dir: Option<PathBuf>,
    pub baseline_seconds: f64,
    /// When the last fault is planned to end, baseline included.
    pub length_seconds: f64,
    pub sample_cap: usize,
    pub faults: Vec<PlannedFault>,
    pub probes: Vec<ProbeInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFault {
    pub name: String,
    pub kind: String,
    pub requested: String,
    /// Planned start, from the start of the run (baseline + `after`).
    pub start_seconds: f64,
    pub duration_seconds: f64,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeInfo {
    pub name: String,
    /// `http`, `tcp`, `cmd` or `prometheus`.
    pub kind: String,
    pub interval_ms: f64,
}

/// One probe sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleRecord {
    pub probe: String,
    /// Seconds from the start of the run.
    pub t: f64,
    pub phase: String,
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Record {
    Run(RunHeader),
    Phase {
        phase: String,
        at: f64,
    },
    InEffect {
        fault: String,
        target: String,
        at: f64,
        effect: String,
    },
    Recovered {
        fault: String,
        target: String,
        at: f64,
        effect: String,
    },
    Failed {
        fault: String,
        target: String,
        error: String,
    },
    Skipped {
        fault: String,
        target: String,
        reason: String,
    },
    Sample(SampleRecord),
    Capped {
        probe: String,
        cap: usize,
    },
    Stopping {
        reason: String,
    },
    /// A line of a later version: skipped.
    #[serde(other)]
    Unknown,
}

/// Appends a run's stream. Writing never fails the run: the first error is logged and the
/// stream stops.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: Option<File>,
    cap: usize,
    samples: BTreeMap<String, usize>,
}

impl Writer {
    /// Creates the stream of a new run (the runs directory too) and writes its header.
    pub fn create(state_dir: &Path, header: RunHeader) -> std::io::Result<Writer> {
        let path = path(state_dir, &header.run_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        let mut w = Writer {
            path,
            file: Some(file),
            cap: header.sample_cap,
            samples: BTreeMap::new(),
        };
        w.append(&Record::Run(header))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a sample past the cap is dropped, the first with a `capped` line).
    pub fn write(&mut self, rec: &Record) {
        if let Record::Sample(s) = rec {
            let n = self.samples.entry(s.probe.clone()).or_default();
            *n += 1;
            if *n > self.cap {
                if *n == self.cap + 1 {
                    let capped = Record::Capped {
                        probe: s.probe.clone(),
                        cap: self.cap,
                    };
                    self.write_or_stop(&capped);
                }
                return;
            }
        }
        self.write_or_stop(rec);
    }

    fn write_or_stop(&mut self, rec: &Record) {
        if self.file.is_none() {
            return;
        }
        if let Err(e) = self.append(rec) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "cannot write the live stream of this run; the dashboard will not follow it live");
            self.file = None;
        }
    }

    fn append(&mut self, rec: &Record) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)
    }

    /// Removes the stream: the run's report is written.
    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A fault's window on one target, as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub fault: String,
    pub target: String,
    /// When it was in effect (seconds from the start of the run).
    pub start: f64,
    /// When its recovery ended; `None` while it is in effect.
    pub end: Option<f64>,
    pub effect: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseAt {
    pub phase: String,
    pub at: f64,
}

/// One probe's samples so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeLive {
    pub name: String,
    pub kind: String,
    pub interval_ms: f64,
    pub sample_count: usize,
    /// The stream reached its cap for this probe: later samples are only in the report.
    pub capped: bool,
    /// Left out of the summaries the event stream sends (its `samples` events carry them).
    pub samples: Vec<SampleRecord>,
}

/// Everything a stream says about its run, folded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveRun {
    #[serde(flatten)]
    pub header: RunHeader,
    /// The current phase (`None` before the first: a run without probes and baseline starts in
    /// chaos at once).
    pub phase: Option<String>,
    pub phases: Vec<PhaseAt>,
    pub windows: Vec<Window>,
    #[serde(rename = "probeSamples")]
    pub probe_samples: Vec<ProbeLive>,
    /// Failures, skipped targets, in words.
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    /// Complete lines that could not be parsed (skipped).
    pub bad_lines: usize,
}

impl LiveRun {
    fn new(header: RunHeader) -> LiveRun {
        let probe_samples = header
            .probes
            .iter()
            .map(|p| ProbeLive {
                name: p.name.clone(),
                kind: p.kind.clone(),
                interval_ms: p.interval_ms,
                sample_count: 0,
                capped: false,
                samples: Vec::new(),
            })
            .collect();
        LiveRun {
            header,
            phase: None,
            phases: Vec::new(),
            windows: Vec::new(),
            probe_samples,
            notes: Vec::new(),
            stopping: None,
            bad_lines: 0,
        }
    }

    /// True if the process writing the stream is still running.
    pub fn owner_alive(&self) -> bool {
        havoc_faults::procinfo::ProcInfo::is_same(self.header.pid, self.header.pid_start_time)
    }

    /// The same without the samples (their counts stay).
    pub fn summary(&self) -> LiveRun {
        LiveRun {
            header: self.header.clone(),
            phase: self.phase.clone(),
            phases: self.phases.clone(),
            windows: self.windows.clone(),
            probe_samples: self
                .probe_samples
                .iter()
                .map(|p| ProbeLive {
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                    interval_ms: p.interval_ms,
                    sample_count: p.sample_count,
                    capped: p.capped,
                    samples: Vec::new(),
                })
                .collect(),
            notes: self.notes.clone(),
            stopping: self.stopping.clone(),
            bad_lines: self.bad_lines,
        }
    }

    fn open_window(&mut self, fault: &str, target: &str) -> Option<&mut Window> {
        self.windows
            .iter_mut()
            .rev()
            .find(|w| w.end.is_none() && w.fault == fault && w.target == target)
    }

    fn probe(&mut self, name: &str) -> &mut ProbeLive {
        let at = match self.probe_samples.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                self.probe_samples.push(ProbeLive {
                    name: name.into(),
                    kind: String::new(),
                    interval_ms: 0.0,
                    sample_count: 0,
                    capped: false,
                    samples: Vec::new(),
                });
                self.probe_samples.len() - 1
            }
        };
        &mut self.probe_samples[at]
    }

    fn apply(&mut self, rec: Record) {
        match rec {
            // A second header is not expected; the first one stands.
            Record::Run(_) | Record::Unknown => {}
            Record::Phase { phase, at } => {
                self.phase = Some(phase.clone());
                self.phases.push(PhaseAt { phase, at });
            }
            Record::InEffect {
                fault,
                target,
                at,
                effect,
            } => self.windows.push(Window {
                fault,
                target,
                start: at,
                end: None,
                effect,
                error: None,
            }),
            Record::Recovered {
                fault,
                target,
                at,
                effect,
            } => {
                if let Some(w) = self.open_window(&fault, &target) {
                    w.end = Some(at);
                    w.effect = effect;
                }
            }
            Record::Failed {
                fault,
                target,
                error,
            } => {
                self.notes.push(format!("{fault} on {target}: {error}"));
                if let Some(w) = self.open_window(&fault, &target) {
                    w.error = Some(error);
                }
            }
            Record::Skipped {
                fault,
                target,
                reason,
            } => self
                .notes
                .push(format!("{fault} on {target} skipped: {reason}")),
            Record::Sample(s) => {
                let cap = self.header.sample_cap.min(MAX_SAMPLES_PER_PROBE);
                let p = self.probe(&s.probe);
                if p.samples.len() < cap {
                    p.samples.push(s);
                    p.sample_count = p.samples.len();
                } else {
                    p.capped = true;
                }
            }
            Record::Capped { probe, .. } => self.probe(&probe).capped = true,
            Record::Stopping { reason } => self.stopping = Some(reason),
        }
    }
}

/// Follows one stream: each [`Tail::poll`] reads what was appended since the last.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    run: Option<LiveRun>,
    /// Lines before the header (none are expected) and lines that do not parse.
    bad_lines: usize,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            pending: Vec::new(),
            run: None,
            bad_lines: 0,
        }
    }

    /// The run as far as it has been read (`None` until the header is).
    pub fn run(&self) -> Option<&LiveRun> {
        self.run.as_ref()
    }

    /// Reads and folds what was appended. A last line without its newline waits for the next poll.
    pub fn poll(&mut self) -> std::io::Result<()> {
        let mut f = File::open(&self.path)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            // Not this stream any more (streams only grow): start over.
            *self = Tail::new(std::mem::take(&mut self.path));
        }
        if len == self.offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        let Some(last_nl) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.pending.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        for line in complete.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match (serde_json::from_slice::<Record>(line), self.run.as_mut()) {
                (Ok(Record::Run(h)), None) => {
                    let mut run = LiveRun::new(h);
                    run.bad_lines = self.bad_lines;
                    self.run = Some(run);
                }
                (Ok(rec), Some(run)) => run.apply(rec),
                (Ok(_), None) | (Err(_), None) => self.bad_lines += 1,
                (Err(_), Some(run)) => run.bad_lines += 1,
            }
        }
        Ok(())
    }
}

/// The stream of one run, read whole (`Ok(None)`: there is none, or it has no header yet).
pub fn read(state_dir: &Path, run_id: &str) -> std::io::Result<Option<LiveRun>> {
    let mut t = Tail::new(path(state_dir, run_id));
    match t.poll() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(()) => Ok(t.run),
    }
}

/// Every stream of a state directory, each followed from where the last poll left it.
#[derive(Debug, Default)]
pub struct Tails {
    tails: BTreeMap<PathBuf, Tail>,
}

impl Tails {
    /// Reads what was appended to every stream and forgets the streams that are gone. Returns the
    /// runs whose writer is alive, by run id.
    pub fn poll(&mut self, state_dir: &Path) -> Vec<&LiveRun> {
        let paths = streams(state_dir);
        self.tails.retain(|p, _| paths.contains(p));
        for p in paths {
            let t = self
                .tails
                .entry(p.clone())
                .or_insert_with(|| Tail::new(p.clone()));
            if let Err(e) = t.poll() {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %p.display(), error = %e, "cannot read a live stream");
                }
            }
        }
        let mut runs: Vec<&LiveRun> = self
            .tails
            .values()
            .filter_map(Tail::run)
            .filter(|r| r.owner_alive())
            .collect();
        runs.sort_by(|a, b| a.header.run_id.cmp(&b.header.run_id));
        runs
    }

    /// The run `run_id` as last polled.
    pub fn get(&self, run_id: &str) -> Option<&LiveRun> {
        self.tails
            .values()
            .filter_map(Tail::run)
            .find(|r| r.header.run_id == run_id)
    }
}

fn streams(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(havoc_engine::journal::runs_dir(state_dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX))
        })
        .collect()
}

/// How old a stream without a readable header must be before [`sweep`] takes it for the remains
/// of a writer that died while creating it.
const HEADERLESS_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the streams whose writer is dead (it crashed or was killed before removing its own).
/// Returns the files removed.
pub fn sweep(state_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in streams(state_dir) {
        let mut t = Tail::new(p.clone());
        let stale = match (t.poll(), t.run()) {
            (Ok(()), Some(run)) => !run.owner_alive(),
            (Ok(()), None) => std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > HEADERLESS_GRACE),
            (Err(_), _) => false,
        };
        if stale && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(run_id: &str, pid: i32, start: u64) -> RunHeader {
        RunHeader {
            run_id: run_id.into(),
            experiment: "exp".into(),
            pid,
            pid_start_time: start,
            started_at_unix_ms: 1,
            report_dir: None,
            baseline_seconds: 0.5,
            length_seconds: 3.5,
            sample_cap: 3,
            faults: vec![],
            probes: vec![ProbeInfo {
                name: "api".into(),
                kind: "http".into(),
                interval_ms: 100.0,
            }],
        }
    }

    fn me() -> (i32, u64) {
        let pid = std::process::id() as i32;
        let start = havoc_faults::procinfo::ProcInfo::read(pid)
            .expect("own /proc entry")
            .start_time;
        (pid, start)
    }

    fn sample(t: f64) -> Record {
        Record::Sample(SampleRecord {
            probe: "api".into(),
            t,
            phase: "chaos".into(),
            ok: t < 1.0,
            latency_ms: 2.0,
            value: None,
            error: (t >= 1.0).then(|| "HTTP 500".into()),
        })
    }

    #[test]
    fn a_half_written_last_line_waits_for_its_newline() {
        let state = tempfile::tempdir().expect("tempdir");
        let (pid, start) = me();
        let mut w = Writer::create(state.path(), header("r1", pid, start)).expect("create");
        w.write(&Record::InEffect {
            fault: "pause".into(),
            target: "pid 7".into(),
            at: 0.61,
            effect: "paused".into(),
        });
        let full = serde_json::to_string(&sample(0.7)).expect("json");
        let mut f = OpenOptions::new()
            .append(true)
            .open(w.path())
            .expect("open");
        f.write_all(&full.as_bytes()[..full.len() / 2])
            .expect("half a line");
        let mut t = Tail::new(w.path().to_path_buf());
        t.poll().expect("poll");
        let run = t.run().expect("header read");
        assert_eq!(run.windows.len(), 1);
        assert_eq!(run.windows[0].start, 0.61);
        assert_eq!(run.windows[0].end, None);
        assert_eq!(run.probe_samples[0].sample_count, 0, "half a line was read");
        assert_eq!(run.bad_lines, 0);
        f.write_all(&full.as_bytes()[full.len() / 2..])
            .expect("the rest");
        f.write_all(b"\n").expect("newline");
        w.write(&Record::Recovered {
            fault: "pause".into(),
            target: "pid 7".into(),
            at: 1.62,
            effect: "resumed".into(),
        });
        t.poll().expect("poll");
        let run = t.run().expect("run");
        assert_eq!(
            run.probe_samples[0].samples,
            vec![match sample(0.7) {
                Record::Sample(s) => s,
                _ => unreachable!(),
            }]
        );
        assert_eq!(run.windows[0].end, Some(1.62));
        assert_eq!(run.windows[0].effect, "resumed");
        assert!(run.owner_alive());
        // The whole file read at once agrees with the tail.
        assert_eq!(read(state.path(), "r1").expect("read").as_ref(), Some(run));
    }

    #[test]
    fn samples_stop_at_the_cap_and_say_so() {
        let state = tempfile::tempdir().expect("tempdir");
        let (pid, start) = me();
        let mut w = Writer::create(state.path(), header("r2", pid, start)).expect("create");
        for i in 0..10 {
            w.write(&sample(i as f64 / 10.0));
        }
        w.write(&Record::Stopping {
            reason: "halted".into(),
        });
        let text = std::fs::read_to_string(w.path()).expect("read");
        assert_eq!(text.lines().count(), 1 + 3 + 1 + 1, "{text}");
        let run = read(state.path(), "r2").expect("read").expect("run");
        assert_eq!(run.probe_samples[0].sample_count, 3);
        assert!(run.probe_samples[0].capped);
        assert_eq!(run.stopping.as_deref(), Some("halted"));
        assert!(run.summary().probe_samples[0].samples.is_empty());
        assert_eq!(run.summary().probe_samples[0].sample_count, 3);
        w.remove().expect("remove");
        assert_eq!(read(state.path(), "r2").expect("read"), None);
    }

    #[test]
    fn unknown_and_broken_lines_are_skipped_and_counted() {
        let state = tempfile::tempdir().expect("tempdir");
        let (pid, start) = me();
        let w = Writer::create(state.path(), header("r3", pid, start)).expect("create");
        let mut f = OpenOptions::new()
            .append(true)
            .open(w.path())
            .expect("open");
        f.write_all(b"{\"type\":\"somethingNew\",\"x\":1}\n{not json\n\n{\"type\":\"phase\",\"phase\":\"chaos\",\"at\":0.5}\n")
            .expect("write");
        let run = read(state.path(), "r3").expect("read").expect("run");
        assert_eq!(run.bad_lines, 1);
        assert_eq!(run.phase.as_deref(), Some("chaos"));
    }

    #[test]
    fn sweep_removes_only_streams_of_dead_writers() {
        let state = tempfile::tempdir().expect("tempdir");
        let (pid, start) = me();
        let mine = Writer::create(state.path(), header("alive", pid, start)).expect("create");
        // A pid that cannot be running with that start time.
        let dead = Writer::create(state.path(), header("dead", pid, start + 1)).expect("create");
        let mut tails = Tails::default();
        let ids: Vec<_> = tails
            .poll(state.path())
            .iter()
            .map(|r| r.header.run_id.clone())
            .collect();
        assert_eq!(ids, ["alive"], "a dead writer's run is not in progress");
        assert_eq!(sweep(state.path()), vec![dead.path().to_path_buf()]);
        assert!(mine.path().exists());
        assert!(!dead.path().exists());
        assert!(tails.poll(state.path()).len() == 1);
        mine.remove().expect("remove");
        assert!(tails.poll(state.path()).is_empty());
        assert!(tails.get("alive").is_none());
    }
}
