//! The journal: what this run has injected and how to undo it, on disk before it is applied.
//!
//! One JSON file per run under `<state dir>/runs/`, rewritten atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory) each time an entry is added or
//! removed, so after a crash it holds exactly the injections that may still be in effect. A journal
//! whose owner (pid *and* start time) is no longer alive is stale: the watchdog, `havoc recover`
//! and the next start of `havoc run` replay it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use havoc_faults::procinfo::ProcInfo;
use havoc_faults::undo::UndoOutcome;
use havoc_faults::UndoAction;
use serde::{Deserialize, Serialize};

/// Where Havoc keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/havoc";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: u64,
    pub fault: String,
    pub target: String,
    pub undo: Vec<UndoAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalData {
    pub run_id: String,
    pub experiment: String,
    pub owner_pid: i32,
    pub owner_start_time: u64,
    /// The run's seed, start time and report directory, so that whoever recovers a dead run can
    /// still write its report.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub started_at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_dir: Option<PathBuf>,
    pub entries: Vec<Entry>,
}

/// The journal of the current run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    data: JournalData,
    next_id: u64,
}

pub fn runs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runs")
}

impl Journal {
    /// Creates the journal of a new run owned by this process.
    pub fn create(
        state_dir: &Path,
        run_id: &str,
        experiment: &str,
    ) -> Result<Journal, JournalError> {
        let dir = runs_dir(state_dir);
        fs::create_dir_all(&dir).map_err(io("create journal directory", &dir))?;
        let pid = std::process::id() as i32;
        let start = ProcInfo::read(pid)
            .map(|p| p.start_time)
            .unwrap_or_default();
        let j = Journal {
            path: dir.join(format!("{run_id}.json")),
            data: JournalData {
                run_id: run_id.to_string(),
                experiment: experiment.to_string(),
                owner_pid: pid,
                owner_start_time: start,
                seed: 0,
                started_at_unix_ms: 0,
                report_dir: None,
                entries: Vec::new(),
            },
            next_id: 1,
        };
        j.persist()?;
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the facts a crash report needs.
    pub fn describe_run(
        &mut self,
        seed: u64,
        started_at_unix_ms: u64,
        report_dir: &Path,
    ) -> Result<(), JournalError> {
        self.data.seed = seed;
        self.data.started_at_unix_ms = started_at_unix_ms;
        self.data.report_dir = Some(report_dir.to_path_buf());
        self.persist()
    }

    /// Records undo actions before the injection they undo is applied. Returns the entry id.
    pub fn record(
        &mut self,
        fault: &str,
        target: &str,
        undo: Vec<UndoAction>,
    ) -> Result<u64, JournalError> {
        let id = self.next_id;
        self.next_id += 1;
        self.data.entries.push(Entry {
            id,
            fault: fault.into(),
            target: target.into(),
            undo,
        });
        self.persist()?;
        Ok(id)
    }

    /// Adds undo actions learned after injecting to an existing entry.
    pub fn extend(&mut self, id: u64, more: Vec<UndoAction>) -> Result<(), JournalError> {
        if more.is_empty() {
            return Ok(());
        }
        let mut changed = false;
        if let Some(e) = self.data.entries.iter_mut().find(|e| e.id == id) {
            for a in more {
                if !e.undo.contains(&a) {
                    e.undo.push(a);
                    changed = true;
                }
            }
        }
        if changed {
            self.persist()
        } else {
            Ok(())
        }
    }

    /// Forgets an entry once its injection is recovered.
    pub fn forget(&mut self, id: u64) -> Result<(), JournalError> {
        self.data.entries.retain(|e| e.id != id);
        self.persist()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.data.entries
    }

    /// Removes the journal file: every injection was recovered.
    pub fn finish(self) -> Result<(), JournalError> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove journal", &self.path)(e)),
        }
    }

    fn persist(&self) -> Result<(), JournalError> {
        write_atomic(
            &self.path,
            &serde_json::to_vec_pretty(&self.data).expect("journal serializes"),
        )
    }
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A journal file found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub data: JournalData,
}

impl Found {
    /// True if the process that owns this journal is still running.
    pub fn owner_alive(&self) -> bool {
        ProcInfo::is_same(self.data.owner_pid, self.data.owner_start_time)
    }
}

/// Every journal under `state_dir`.
pub fn list(state_dir: &Path) -> Result<Vec<Found>, JournalError> {
    let dir = runs_dir(state_dir);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read journal directory", &dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let path = ent.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        out.push(read(&path)?);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub fn read(path: &Path) -> Result<Found, JournalError> {
    let bytes = fs::read(path).map_err(io("read journal", path))?;
    let data = serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Found {
        path: path.to_path_buf(),
        data,
    })
}

/// The result of replaying one journal.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub done: Vec<String>,
    pub nothing_left: Vec<String>,
    pub failed: Vec<String>,
}

/// Carries out every undo action of a journal, newest entry first, and removes the file if all
/// succeeded (a failed action keeps the journal for a later attempt).
pub fn replay(found: &Found) -> Replay {
    let r = replay_keep(found);
    if r.failed.is_empty() {
        remove(found);
    }
    r
}

/// Removes a replayed journal: its absence means everything of its run was undone.
pub fn remove(found: &Found) {
    let _ = fs::remove_file(&found.path);
    // A write cut short by the owner's death leaves its temporary file behind.
    let _ = fs::remove_file(found.path.with_extension("json.tmp"));
}

/// Like [`replay`], but keeps the journal file.
pub fn replay_keep(found: &Found) -> Replay {
    let mut r = Replay::default();
    for entry in found.data.entries.iter().rev() {
        for action in entry.undo.iter().rev() {
            match action.undo() {
                Ok(UndoOutcome::Done(s)) => r.done.push(format!("{}: {s}", entry.fault)),
                Ok(UndoOutcome::NothingLeft(s)) => {
                    r.nothing_left.push(format!("{}: {s}", entry.fault))
                }
                Err(e) => r.failed.push(format!(
                    "{}: {}: {}",
                    entry.fault,
                    action.describe(),
                    crate::error_chain(&e)
                )),
            }
        }
    }
    r
}

/// Replays every stale journal (owner dead). Returns (run id, replay) pairs.
pub fn recover_stale(state_dir: &Path) -> Result<Vec<(String, Replay)>, JournalError> {
    Ok(list(state_dir)?
        .into_iter()
        .filter(|f| !f.owner_alive())
        .map(|f| (f.data.run_id.clone(), replay(&f)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_on_disk_before_and_gone_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::create(dir.path(), "r1", "exp").expect("create");
        let id = j
            .record(
                "f",
                "pid 1",
                vec![UndoAction::Resume {
                    pid: 1,
                    start_time: 0,
                }],
            )
            .expect("record");
        let on_disk = read(j.path()).expect("read");
        assert_eq!(on_disk.data.entries.len(), 1);
        assert!(on_disk.owner_alive(), "we own it");
        j.forget(id).expect("forget");
        assert!(read(j.path()).expect("read").data.entries.is_empty());
        let p = j.path().to_path_buf();
        j.finish().expect("finish");
        assert!(!p.exists());
    }

    #[test]
    fn stale_journal_of_a_dead_owner_is_replayed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::create(dir.path(), "r2", "exp").expect("create");
        // An undo whose process is gone: replay reports nothing left and succeeds.
        j.record(
            "f",
            "pid x",
            vec![UndoAction::Resume {
                pid: i32::MAX - 1,
                start_time: 1,
            }],
        )
        .expect("record");
        let path = j.path().to_path_buf();
        // Pretend the owner died.
        let mut found = read(&path).expect("read");
        found.data.owner_start_time += 1;
        std::fs::write(&path, serde_json::to_vec(&found.data).expect("json")).expect("write");
        let replays = recover_stale(dir.path()).expect("recover");
        assert_eq!(replays.len(), 1);
        assert_eq!(replays[0].1.nothing_left.len(), 1);
        assert!(!path.exists());
    }
}
