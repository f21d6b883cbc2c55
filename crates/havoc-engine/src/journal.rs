//! The journal: what this run has injected and how to undo it, on disk before it is applied.
//!
//! One JSON file per run under `<state dir>/runs/`, rewritten atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory) each time an entry is added or
//! removed, so after a crash it holds exactly the injections that may still be in effect. A journal
//! whose owner (pid *and* start time) is no longer alive is stale: the watchdog, `havoc recover`
//! and the next start of `havoc run` or the agent replay it.
//!
//! Whoever replays a stale journal first [`claim`]s it: an exclusive `flock` on the journal file,
//! held across the replay and the removal of the file. A second replayer (a restarted agent while
//! the dead agent's watchdog is still at work, `havoc recover` at the same moment) waits for the
//! lock and then finds the file gone, so one journal is replayed by one process at a time, and a
//! restarted holder starts injecting only after the watchdog's replay has ended. The owner itself
//! never locks: it replaces the file by rename, and a claim checks that it holds the file that is
//! in place.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    #[error("journal {path} is being replayed by another process (still locked after {waited:?})")]
    Busy { path: PathBuf, waited: Duration },
}

impl JournalError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            JournalError::Io { path, .. }
            | JournalError::Corrupt { path, .. }
            | JournalError::Busy { path, .. } => path,
        }
    }
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

/// Every journal under `state_dir`; the first one that cannot be read is an error.
pub fn list(state_dir: &Path) -> Result<Vec<Found>, JournalError> {
    let l = list_report(state_dir)?;
    match l.unreadable.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(l.found),
    }
}

/// The journals under a state directory: those read, and those that could not be.
#[derive(Debug, Default)]
pub struct Listing {
    pub found: Vec<Found>,
    /// Journals (or directory entries) that could not be read: what they hold is unknown.
    pub unreadable: Vec<JournalError>,
}

/// Every journal under `state_dir`, going on past the ones that cannot be read. Err only if the
/// directory itself cannot be listed (a missing directory is an empty listing).
pub fn list_report(state_dir: &Path) -> Result<Listing, JournalError> {
    let dir = runs_dir(state_dir);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(io("read journal directory", &dir)(e)),
    };
    let mut out = Listing::default();
    for ent in rd {
        let ent = match ent {
            Ok(e) => e,
            Err(e) => {
                out.unreadable.push(io("read journal directory", &dir)(e));
                continue;
            }
        };
        let path = ent.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match read(&path) {
            Ok(f) => out.found.push(f),
            // Replayed and removed between listing and reading.
            Err(JournalError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.unreadable.push(e),
        }
    }
    out.found.sort_by(|a, b| a.path.cmp(&b.path));
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

/// An exclusive claim on a journal file (an `flock`), held while replaying it; see the module
/// documentation. Dropping the claim releases the lock.
#[derive(Debug)]
pub struct Claim {
    _file: File,
    found: Found,
}

impl Claim {
    /// The journal as read under the lock.
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// Replays the journal, newest entry first, keeping the file.
    pub fn replay_keep(&self) -> Replay {
        replay_keep(&self.found)
    }

    /// Replays the journal twice, [`SETTLE`] apart (what a watchdog does right after its holder
    /// died), keeping the file.
    pub fn replay_twice(&self) -> Replay {
        let first = self.replay_keep();
        std::thread::sleep(SETTLE);
        then(first, self.replay_keep())
    }

    /// Removes the journal file (still under the lock): everything of its run was undone.
    pub fn remove(self) {
        remove(&self.found);
    }
}

/// Claims the journal at `path` for replay, waiting up to `wait` for another replayer's claim.
/// `Ok(None)`: the journal is gone (another process recovered it).
pub fn claim(path: &Path, wait: Duration) -> Result<Option<Claim>, JournalError> {
    let deadline = Instant::now() + wait;
    loop {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open journal", path)(e)),
        };
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(JournalError::Busy {
                        path: path.to_path_buf(),
                        waited: wait,
                    })
                }
                Err(fs::TryLockError::Error(e)) => return Err(io("lock journal", path)(e)),
            }
        }
        // The file we locked must still be the one in place: a replayer that went before us
        // removed it, or its (then live) owner replaced it.
        let ours = file.metadata().map_err(io("stat journal", path))?;
        match fs::metadata(path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => {
                return Err(JournalError::Busy {
                    path: path.to_path_buf(),
                    waited: wait,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("stat journal", path)(e)),
        }
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(io("read journal", path))?;
        let data = serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Some(Claim {
            _file: file,
            found: Found {
                path: path.to_path_buf(),
                data,
            },
        }));
    }
}

/// How long a replayer waits for another one's claim before giving up on a journal.
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);

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

/// Replays every stale journal (owner dead), each under its [`claim`]. Returns (run id, replay)
/// pairs; a journal that could not be read or claimed is a failed line of its replay (named by
/// its file), so nothing unknown passes for recovered.
pub fn recover_stale(state_dir: &Path) -> Result<Vec<(String, Replay)>, JournalError> {
    let listing = list_report(state_dir)?;
    let mut out: Vec<(String, Replay)> = listing
        .unreadable
        .iter()
        .map(|e| {
            (
                file_stem(e.path()),
                Replay {
                    failed: vec![crate::error_chain(e)],
                    ..Replay::default()
                },
            )
        })
        .collect();
    for f in listing.found.into_iter().filter(|f| !f.owner_alive()) {
        let run = f.data.run_id.clone();
        match replay_claimed(&f.path) {
            Ok(Some(r)) => out.push((run, r)),
            Ok(None) => {}
            Err(e) => out.push((
                run,
                Replay {
                    failed: vec![crate::error_chain(&e)],
                    ..Replay::default()
                },
            )),
        }
    }
    Ok(out)
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Time between the watchdog's two replays: the pipe to it closes early in its owner's exit,
/// before the tools the owner ran (ip, tc, iptables) get their parent-death signal, so a change
/// such a tool was making can land after the first replay.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Claims `path` and, if its owner is still dead, replays it and removes it when nothing
/// failed. `Ok(None)`: gone (another process recovered it), or owned by a live process.
fn replay_claimed(path: &Path) -> Result<Option<Replay>, JournalError> {
    let Some(c) = claim(path, CLAIM_WAIT)? else {
        return Ok(None);
    };
    let d = &c.found().data;
    if ProcInfo::is_same(d.owner_pid, d.owner_start_time) {
        return Ok(None);
    }
    let r = c.replay_keep();
    if r.failed.is_empty() {
        c.remove();
    }
    Ok(Some(r))
}

/// Two replays of one journal as one: what the first did, what only the second did, and the
/// second's failures (the first's are retried by it).
fn then(first: Replay, second: Replay) -> Replay {
    let mut done = first.done;
    let new: Vec<String> = second
        .done
        .into_iter()
        .filter(|l| !done.contains(l))
        .collect();
    done.extend(new);
    Replay {
        done,
        nothing_left: second.nothing_left,
        failed: second.failed,
    }
}

/// The owner of a set of journals: a process, by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Owner {
        let pid = std::process::id() as i32;
        Owner {
            pid,
            start_time: ProcInfo::read(pid)
                .map(|p| p.start_time)
                .unwrap_or_default(),
        }
    }

    fn owns(&self, d: &JournalData) -> bool {
        d.owner_pid == self.pid && d.owner_start_time == self.start_time
    }
}

/// Replays every journal under `state_dir` owned by `owner` (which has ended), each claimed and
/// replayed twice [`SETTLE`] apart: the watchdog of a holder of many journals (the agent).
/// Returns (run id, replay) pairs, unreadable or unclaimable journals as failed lines.
pub fn recover_owned(
    state_dir: &Path,
    owner: Owner,
) -> Result<Vec<(String, Replay)>, JournalError> {
    let listing = list_report(state_dir)?;
    let mine: Vec<Found> = listing
        .found
        .into_iter()
        .filter(|f| owner.owns(&f.data))
        .collect();
    let mut out: Vec<(String, Replay)> = listing
        .unreadable
        .iter()
        .map(|e| {
            (
                file_stem(e.path()),
                Replay {
                    failed: vec![crate::error_chain(e)],
                    ..Replay::default()
                },
            )
        })
        .collect();
    if mine.is_empty() {
        return Ok(out);
    }
    // Each journal is replayed as soon as it is claimed; the settle pause is paid once, for all.
    let mut firsts = Vec::new();
    for f in &mine {
        match claim(&f.path, CLAIM_WAIT) {
            Ok(Some(c)) if owner.owns(&c.found().data) => {
                let first = c.replay_keep();
                firsts.push((c, first));
            }
            Ok(_) => {}
            Err(e) => out.push((
                f.data.run_id.clone(),
                Replay {
                    failed: vec![crate::error_chain(&e)],
                    ..Replay::default()
                },
            )),
        }
    }
    std::thread::sleep(SETTLE);
    for (c, first) in firsts {
        let r = then(first, c.replay_keep());
        let run = c.found().data.run_id.clone();
        if r.failed.is_empty() {
            c.remove();
        }
        out.push((run, r));
    }
    Ok(out)
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

    fn dead_journal(dir: &Path, run: &str, owner: Owner) -> PathBuf {
        let mut j = Journal::create(dir, run, "exp").expect("create");
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
        let mut found = read(&path).expect("read");
        found.data.owner_pid = owner.pid;
        found.data.owner_start_time = owner.start_time;
        std::fs::write(&path, serde_json::to_vec(&found.data).expect("json")).expect("write");
        path
    }

    #[test]
    fn a_claimed_journal_makes_a_second_replayer_wait_then_find_it_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dead_journal(
            dir.path(),
            "r3",
            Owner {
                pid: 1,
                start_time: 2,
            },
        );
        let first = claim(&path, CLAIM_WAIT).expect("claim").expect("present");
        assert!(
            matches!(
                claim(&path, Duration::from_millis(50)),
                Err(JournalError::Busy { .. })
            ),
            "a claimed journal is busy for others"
        );
        let p2 = path.clone();
        let second = std::thread::spawn(move || {
            let t = Instant::now();
            (claim(&p2, CLAIM_WAIT).map(|c| c.is_none()), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        first.remove();
        let (gone, waited) = second.join().expect("thread");
        assert!(gone.expect("no error"), "the second replayer finds it gone");
        assert!(
            waited >= Duration::from_millis(150),
            "it waited for the first: {waited:?}"
        );
    }

    #[test]
    fn recover_owned_replays_only_the_owners_journals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = Owner {
            pid: i32::MAX - 2,
            start_time: 7,
        };
        let mine = dead_journal(dir.path(), "mine", dead);
        let other = dead_journal(
            dir.path(),
            "other",
            Owner {
                pid: i32::MAX - 3,
                start_time: 7,
            },
        );
        let r = recover_owned(dir.path(), dead).expect("recover");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "mine");
        assert!(r[0].1.failed.is_empty());
        assert!(!mine.exists(), "replayed and removed");
        assert!(other.exists(), "another holder's journal is left alone");
    }

    #[test]
    fn an_unreadable_journal_is_named_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = runs_dir(dir.path());
        std::fs::create_dir_all(runs.join("broken.json"))
            .expect("a directory named like a journal");
        let l = list_report(dir.path()).expect("the directory lists");
        assert_eq!(l.unreadable.len(), 1);
        assert_eq!(l.unreadable[0].path(), runs.join("broken.json"));
        let r = recover_stale(dir.path()).expect("recover");
        assert_eq!(r.len(), 1);
        assert!(r[0].1.failed[0].contains("broken.json"), "{:?}", r[0].1);
    }
}
