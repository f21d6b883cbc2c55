//! `IOChaos`: a FUSE pass-through file system mounted over a directory in the target's mount
//! namespace; the IOChaos rule delays, fails, re-attributes or corrupts the operations it matches.
//!
//! How it is put in place, on a thread that entered the target's mount namespace
//! ([`havoc_sys::mount::MountNs::run`]): the original directory is opened (`O_PATH`) *before*
//! the mount, a FUSE connection is mounted over the directory (any directory, not only a mount
//! point), and the new mount's root is opened too. The file system serves every operation on the
//! original directory through the first descriptor, so the data lands in the real files; the
//! second names exactly this mount for the lazy unmount at recovery, whatever is mounted later.
//!
//! Files the target already had open under the directory keep their descriptors on the original
//! files and are *not* faulted: they are counted and named in the effect. Moving them onto the
//! fault (as Chaos Mesh does by injecting syscalls through ptrace) would stop the target, and a
//! crash halfway would leave its descriptors split between two file systems; a fault that can
//! only be removed by the same risky surgery breaks "nothing lost, nothing left".
//!
//! Removal: recovery stops faulting first, then lazily unmounts (new opens see the original
//! directory at once), then keeps serving files still open through the detached mount as pure
//! pass-through until they are closed (at most [`DRAIN`] inside recovery, then on a background
//! thread for as long as Havoc lives). If Havoc dies, the journal's [`UndoAction::UnmountFuse`]
//! is replayed by the watchdog: it finds the mount by its unique source name in the namespace's
//! mount table and detaches it, so no new access meets a dead connection (ENOTCONN).

mod fs;
pub mod rules;

use std::io::BufRead;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use havoc_spec::io::{normalize, IOChaos, IoAction};
use havoc_sys::mount::{self, MountNs};

use crate::procinfo::ProcInfo;
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

/// The file-system type is `fuse.havoc`; the source names the injection (`havoc-io.…`).
pub const FS_SUBTYPE: &str = "havoc";
/// How long recovery waits for files still open through the detached mount to be closed.
pub const DRAIN: Duration = Duration::from_millis(500);
/// How many open files are named in the effect (all are counted).
const NAMED_MAX: usize = 5;

pub struct IoFault {
    spec: IOChaos,
}

impl IoFault {
    pub fn new(spec: IOChaos) -> Self {
        Self { spec }
    }

    fn volume(&self) -> PathBuf {
        PathBuf::from(normalize(&self.spec.volume_path))
    }
}

/// The mount's source name: unique per Havoc process, target and directory, so the journal can
/// find this very mount (and nothing else) in a mount table.
fn source_name(target_pid: i32, target_start: u64, volume: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in volume.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let me = std::process::id();
    let my_start = ProcInfo::read(me as i32)
        .map(|p| p.start_time)
        .unwrap_or_default();
    format!("havoc-io.{me}-{my_start}.{target_pid}-{target_start}.{h:016x}")
}

fn process_target(target: &Target) -> Result<(i32, u64), FaultError> {
    target.live_process("IOChaos needs a process (its mount namespace is faulted)")
}

/// One line of a mountinfo file.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub id: u64,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table of `pid`'s mount namespace, as `pid` sees it.
pub fn mounts_of(pid: i32) -> std::io::Result<Vec<MountEntry>> {
    let f = std::fs::File::open(format!("/proc/{pid}/mountinfo"))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 2 {
            continue;
        }
        out.push(MountEntry {
            id: l[0].parse().unwrap_or_default(),
            mount_point: unescape(l[4]),
            fstype: r[0].to_string(),
            source: unescape(r[1]),
        });
    }
    Ok(out)
}

/// A live process in the mount namespace with inode `ns_ino`: `pid` if it still is the same
/// process and still there, else any process found in it.
fn process_in_ns(pid: i32, start_time: u64, ns_ino: u64) -> Option<i32> {
    let ino_of = |p: i32| MountNs::of_pid(p).inode().ok();
    if ProcInfo::is_same(pid, start_time) && ino_of(pid) == Some(ns_ino) {
        return Some(pid);
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let p: i32 = e.file_name().to_str()?.parse().ok()?;
        (ino_of(p) == Some(ns_ino)).then_some(p)
    })
}

/// Replays [`UndoAction::UnmountFuse`]: lazily unmounts the mount with source `source` in the
/// mount namespace `ns_ino` (reached through `pid` or any process still in it). Returns what
/// was done, `Ok(None)` when there is nothing left.
pub fn unmount_journaled(
    pid: i32,
    start_time: u64,
    ns_ino: u64,
    source: &str,
) -> Result<Option<String>, FaultError> {
    let Some(p) = process_in_ns(pid, start_time, ns_ino) else {
        return Ok(None); // the namespace is gone, and its mounts with it
    };
    let mounts = mounts_of(p).map_err(|source| FaultError::Io {
        action: "read the mount table of".into(),
        target: format!("pid {p}"),
        source,
    })?;
    let Some(ours) = mounts.iter().find(|m| m.source == source) else {
        return Ok(None);
    };
    let mp = PathBuf::from(&ours.mount_point);
    let id = ours.id;
    let ns = MountNs::of_pid(p);
    let r = ns
        .run(|| -> Result<(), String> {
            let fd = mount::open_dir_path(&mp).map_err(|e| chain(&e))?;
            let top = mount::mount_id(fd.as_fd()).map_err(|e| chain(&e))?;
            if top != id {
                return Err(format!(
                    "it is covered by another mount (id {top}) at {}: unmount that one first",
                    mp.display()
                ));
            }
            // By path: the server is usually dead, and asking the mount anything (fchdir's
            // permission check) would fail with ENOTCONN. The check above made it ours.
            drop(fd);
            mount::unmount_path_detach(&mp).map_err(|e| chain(&e))
        })
        .map_err(|e| FaultError::Other(chain(&e)))?;
    r.map_err(|e| {
        FaultError::Other(format!(
            "cannot unmount the IOChaos mount at {}: {e}",
            ours.mount_point
        ))
    })?;
    Ok(Some(format!(
        "unmounted the IOChaos mount at {} (lazily)",
        ours.mount_point
    )))
}

impl Fault for IoFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let (pid, _) = process_target(target)?;
        let vol = self.volume();
        let mounts = mounts_of(pid).map_err(|source| FaultError::Io {
            action: "read the mount table of".into(),
            target: target.label(),
            source,
        })?;
        if let Some(m) = mounts
            .iter()
            .find(|m| Path::new(&m.mount_point) == vol && m.fstype == format!("fuse.{FS_SUBTYPE}"))
        {
            return Err(FaultError::Conflict {
                target: target.label(),
                reason: format!(
                    "{} already carries an IOChaos of another Havoc run ({}): two faults on one directory would stack",
                    vol.display(),
                    m.source
                ),
            });
        }
        Ok(())
    }

    fn undo_plan(&self, target: &Target) -> Vec<UndoAction> {
        match target {
            Target::Process {
                pid, start_time, ..
            } => match MountNs::of_pid(*pid).inode() {
                Ok(ns) => vec![UndoAction::UnmountFuse {
                    pid: *pid,
                    start_time: *start_time,
                    mnt_ns: ns,
                    mount_point: self.volume(),
                    source: source_name(*pid, *start_time, &self.volume()),
                }],
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        self.check(target)?;
        let (pid, start_time) = process_target(target)?;
        let vol = self.volume();
        let source = source_name(pid, start_time, &vol);
        let label = target.label();
        let sys = |action: &'static str| {
            let label = label.clone();
            move |source: havoc_sys::SysError| FaultError::Sys {
                action,
                target: label.clone(),
                source,
            }
        };
        // Held for recovery: the namespace stays reachable even if the target exits.
        let ns_file = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|source| {
            FaultError::Io {
                action: "open the mount namespace of".into(),
                target: label.clone(),
                source,
            }
        })?;
        let ns = MountNs::from_path(format!("/proc/{}/fd/{}", std::process::id(), {
            use std::os::fd::AsRawFd;
            ns_file.as_raw_fd()
        }));
        let open_files = open_under(pid, &vol);
        let dev = mount::open_fuse_device().map_err(sys("open /dev/fuse for"))?;
        let (orig, root) = ns
            .run(|| -> Result<(OwnedFd, OwnedFd), FaultError> {
                let orig = mount::open_dir_path(&vol).map_err(|e| FaultError::Refused {
                    target: label.clone(),
                    reason: format!(
                        "volumePath {} is not a directory in its mount namespace: {}",
                        vol.display(),
                        chain(&e)
                    ),
                })?;
                mount::mount_fuse(dev.as_fd(), &vol, &source, FS_SUBTYPE)
                    .map_err(sys("mount FUSE over the volume of"))?;
                match mount::open_dir_path(&vol) {
                    Ok(root) => Ok((orig, root)),
                    Err(e) => Err(FaultError::Other(format!(
                        "mounted over {} but cannot open the mount: {}",
                        vol.display(),
                        chain(&e)
                    ))),
                }
            })
            .map_err(|e| FaultError::Other(format!("{label}: {}", chain(&e))))??;
        let shared = Arc::new(fs::Shared {
            rule: rules::Rule::new(&self.spec, ctx.seed),
            counters: rules::Counters::default(),
            open_handles: AtomicU64::new(0),
        });
        let mut inj = IoInjection {
            label: label.clone(),
            spec: self.spec.clone(),
            ns,
            _ns_file: ns_file,
            root: Some(root),
            session: None,
            shared: shared.clone(),
            open_files,
            in_effect: None,
            started: Instant::now(),
            held: None,
            effect_ended: None,
            still_open_at_recovery: 0,
            recovered: false,
        };
        let passfs = fs::PassFs::new(orig, shared);
        let mut config = fuser::Config::default();
        config.n_threads = Some(4);
        config.clone_fd = true;
        config.acl = fuser::SessionACL::All;
        let session = fuser::Session::from_fd(passfs, dev, fuser::SessionACL::All, config)
            .and_then(|s| s.spawn())
            .map_err(|source| FaultError::Io {
                action: "start the FUSE server for".into(),
                target: label.clone(),
                source,
            });
        match session {
            Ok(s) => inj.session = Some(s),
            Err(e) => {
                let _ = inj.recover();
                return Err(e);
            }
        }
        // Observe the fault from the target's side: its view of the directory is the FUSE mount.
        let seen =
            Path::new(&format!("/proc/{pid}/root")).join(vol.strip_prefix("/").unwrap_or(&vol));
        match rustix::fs::statfs(&seen) {
            Ok(s) if s.f_type as u32 == 0x6573_5546 => {
                self_enable(&inj.shared);
                inj.in_effect = Some(Instant::now());
            }
            Ok(_) => {
                let _ = inj.recover();
                return Err(FaultError::Other(format!(
                    "{label}: {} is not the FUSE mount after mounting",
                    vol.display()
                )));
            }
            Err(e) if e == rustix::io::Errno::SRCH || e == rustix::io::Errno::NOENT => {
                let _ = inj.recover();
                return Err(FaultError::TargetGone { target: label });
            }
            Err(e) => {
                let _ = inj.recover();
                return Err(FaultError::Other(format!(
                    "{label}: cannot observe the mount at {}: {e}",
                    vol.display()
                )));
            }
        }
        inj.started = Instant::now();
        Ok(Box::new(inj))
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}

fn self_enable(shared: &fs::Shared) {
    shared.rule.enabled.store(true, Ordering::SeqCst);
}

/// Descriptors (and the working directory) of `pid` that point under `vol`: they stay on the
/// original files and are not faulted.
fn open_under(pid: i32, vol: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let inside = |p: &Path| p == vol || p.starts_with(vol);
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        if inside(&cwd) {
            out.push(format!("cwd {}", cwd.display()));
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(p) = std::fs::read_link(e.path()) {
                if inside(&p) {
                    out.push(format!(
                        "fd {} {}",
                        e.file_name().to_string_lossy(),
                        p.display()
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

struct IoInjection {
    label: String,
    spec: IOChaos,
    ns: MountNs,
    _ns_file: std::fs::File,
    /// The FUSE mount's root, opened in the target's namespace right after mounting.
    root: Option<OwnedFd>,
    session: Option<fuser::BackgroundSession>,
    shared: Arc<fs::Shared>,
    open_files: Vec<String>,
    in_effect: Option<Instant>,
    started: Instant,
    held: Option<Duration>,
    /// When recovery stopped faulting (before the unmount and the drain of open files).
    effect_ended: Option<Instant>,
    still_open_at_recovery: u64,
    recovered: bool,
}

impl Injection for IoInjection {
    fn in_effect_since(&self) -> Option<Instant> {
        self.in_effect
    }

    /// The fault ends when recovery turns the rules off; the lazy unmount and the wait for
    /// files still open through the detached mount (up to [`DRAIN`]) are cleanup, served
    /// unfaulted, and count in the recovery latency, not in the hold.
    fn in_effect_until(&self) -> Option<Instant> {
        self.effect_ended
    }

    fn effect(&self) -> Effect {
        let c = &self.shared.counters;
        let seen = c.seen.load(Ordering::Relaxed);
        let matched = c.matched.load(Ordering::Relaxed);
        let injected = c.injected.load(Ordering::Relaxed);
        let pct = |n: u64| {
            if matched == 0 {
                0.0
            } else {
                n as f64 * 100.0 / matched as f64
            }
        };
        let mut e = Effect::default()
            .metric("ops_seen", seen as f64)
            .metric("ops_matched", matched as f64)
            .metric("ops_injected", injected as f64)
            .metric("open_files_unaffected", self.open_files.len() as f64);
        let mut what =
            match self.spec.action {
                IoAction::Latency => {
                    let n = c.delayed.load(Ordering::Relaxed);
                    let mean = if n == 0 {
                        0.0
                    } else {
                        c.delay_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e6
                    };
                    let req = self
                        .spec
                        .delay
                        .map(|d| d.0.as_secs_f64() * 1e3)
                        .unwrap_or_default();
                    e = e
                        .metric("ops_delayed", n as f64)
                        .metric("delay_mean_ms", mean)
                        .metric("delay_mean_ms_requested", req)
                        .metric("delayed_percent", pct(n))
                        .metric("delayed_percent_requested", self.spec.percent as f64);
                    format!("{n} operations delayed, mean +{mean:.2} ms (requested {req:.2} ms)")
                }
                IoAction::Fault => {
                    let failed = c.failed_by_errno();
                    let total = c.failed_total();
                    e = e
                        .metric("ops_failed", total as f64)
                        .metric("fault_percent", pct(total))
                        .metric("fault_percent_requested", self.spec.percent as f64);
                    let mut parts = Vec::new();
                    for (errno, n) in &failed {
                        let name = havoc_spec::io::Errno(*errno).to_string();
                        e = e.metric(&format!("failed_{name}"), *n as f64);
                        parts.push(format!("{n} {name}"));
                    }
                    format!(
                    "{total} operations failed ({}), {:.1}% of {matched} matching (requested {}%)",
                    if parts.is_empty() { "none".into() } else { parts.join(", ") },
                    pct(total),
                    self.spec.percent
                )
                }
                IoAction::AttrOverride => {
                    let n = c.attrs_overridden.load(Ordering::Relaxed);
                    e = e.metric("attrs_overridden", n as f64);
                    format!("attributes overridden in {n} replies")
                }
                IoAction::Mistake => {
                    let n = c.bytes_altered.load(Ordering::Relaxed);
                    let occ = c.mistake_occurrences.load(Ordering::Relaxed);
                    e = e
                        .metric("bytes_altered", n as f64)
                        .metric("mistake_occurrences", occ as f64);
                    format!("{n} bytes altered in {occ} runs")
                }
            };
        what.push_str(&format!(
            " under {}; {seen} operations seen, {matched} matching",
            self.spec.volume_path
        ));
        if !self.open_files.is_empty() {
            let named: Vec<&str> = self
                .open_files
                .iter()
                .take(NAMED_MAX)
                .map(String::as_str)
                .collect();
            what.push_str(&format!(
                "; {} already open by the target and not faulted: {}{}",
                self.open_files.len(),
                named.join(", "),
                if self.open_files.len() > NAMED_MAX {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        if let Some(h) = self.held {
            e = e.metric("held_seconds", h.as_secs_f64());
        }
        if self.still_open_at_recovery > 0 {
            e = e.metric(
                "open_through_fault_at_recovery",
                self.still_open_at_recovery as f64,
            );
            what.push_str(&format!(
                "; {} files opened during the fault were still open at recovery (served unfaulted until closed)",
                self.still_open_at_recovery
            ));
        }
        e.summary = what;
        e
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        self.shared.rule.enabled.store(false, Ordering::SeqCst);
        self.effect_ended.get_or_insert_with(Instant::now);
        self.held = Some(self.started.elapsed());
        if let Some(root) = self.root.take() {
            let r = self
                .ns
                .run(|| mount::unmount_root_detach(root.as_fd()))
                .map_err(|e| FaultError::Other(format!("{}: {}", self.label, chain(&e))))?;
            if let Err(source) = r {
                self.root = Some(root);
                return Err(FaultError::Sys {
                    action: "unmount the IOChaos mount of",
                    target: self.label.clone(),
                    source,
                });
            }
        }
        if let Some(session) = self.session.take() {
            // Serve what is still open through the detached mount until it is closed.
            let deadline = Instant::now() + DRAIN;
            while !session.guard.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !session.guard.is_finished() {
                self.still_open_at_recovery = self.shared.open_handles.load(Ordering::Relaxed);
                std::thread::spawn(move || {
                    let _ = session.join();
                });
            } else {
                let _ = session.join();
            }
        }
        self.recovered = true;
        Ok(())
    }
}

impl Drop for IoInjection {
    fn drop(&mut self) {
        if let Err(e) = self.recover() {
            tracing::error!(target = %self.label, error = %e, "failed to recover IOChaos on drop");
        }
    }
}

/// An error and its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}
