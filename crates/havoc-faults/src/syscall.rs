//! `SyscallChaos`: make chosen system calls of a running process fail or wait.
//!
//! Mechanism (chosen by what this kernel allows, see KERNEL.md rows 6, 7 and 9): a tracer thread
//! seizes every thread of the target with ptrace (`PTRACE_SEIZE`, *without* `PTRACE_O_EXITKILL`,
//! following forks and clones) and runs it from system call stop to system call stop. At the
//! entry of a matching call it rolls a seeded die; a hit is held for `delay`, and with `errno`
//! the call is skipped (`orig_rax = -1`) and its result set to `-errno` at the exit stop. BPF LSM,
//! fmod_ret and kprobes (`bpf_override_return`) do not load here, and a seccomp filter cannot be
//! removed from a process once installed, so neither is used.
//!
//! Recovery is the kernel's: when the tracer thread ends — `recover`, a panic, or Havoc killed by
//! SIGKILL — every tracee is detached and runs on unchanged. Nothing is journaled.
//!
//! Cost: every system call of a traced thread stops twice in the tracer, matching or not (ptrace
//! cannot select calls without a seccomp filter in the target); `benches/syscall_overhead.rs`
//! measures it. A thread stopped at a call waits for the tracer, which polls with a short backoff
//! when all tracees are quiet, so an idle target's next call may wait up to about 1 ms.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use havoc_spec::syscall::{SyscallChaos, SyscallDef};
use havoc_sys::ptrace::{self, Status, SyscallStop};

use crate::procinfo::ProcInfo;
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

const SIGTRAP: i32 = 5;
const STOP_SIGNALS: [i32; 4] = [19, 20, 21, 22]; // SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU
const AT_FDCWD: i32 = -100;

pub struct SyscallFault {
    spec: SyscallChaos,
}

impl SyscallFault {
    pub fn new(spec: SyscallChaos) -> Self {
        Self { spec }
    }
}

fn process_target(target: &Target) -> Result<(i32, u64), FaultError> {
    target.live_process("SyscallChaos needs a process")
}

fn check_untraced(target: &Target, pid: i32) -> Result<(), FaultError> {
    let tids = ptrace::threads(pid).unwrap_or_default();
    for tid in tids {
        match ptrace::tracer_of(tid) {
            Ok(0) | Err(_) => {}
            Ok(t) => {
                return Err(FaultError::Conflict {
                    target: target.label(),
                    reason: format!("thread {tid} is already traced by pid {t} (a debugger, strace, or another SyscallChaos): a thread has one tracer"),
                })
            }
        }
    }
    Ok(())
}

impl Fault for SyscallFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let (pid, _) = process_target(target)?;
        check_untraced(target, pid)
    }

    fn undo_plan(&self, _target: &Target) -> Vec<UndoAction> {
        // The kernel detaches the tracees when the tracer dies: nothing to replay.
        Vec::new()
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        let (pid, start_time) = process_target(target)?;
        check_untraced(target, pid)?;
        let rules = Rules::new(&self.spec, ctx.seed)?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let label = target.label();
        let (c, s) = (counters.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name(format!("havoc-syscall-{pid}"))
            .spawn(move || {
                let mut t = Tracer {
                    rules,
                    tracees: BTreeMap::new(),
                    counters: c,
                    stop: s,
                };
                match t.attach(pid) {
                    Ok(n) => {
                        let _ = ready_tx.send(Ok(n));
                        t.run()
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Ok(())
                    }
                }
            })
            .map_err(|source| FaultError::Io {
                action: "start the tracer thread for".into(),
                target: label.clone(),
                source,
            })?;
        let threads = match ready_rx.recv() {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(FaultError::Other(format!(
                    "the tracer of {label} died while attaching"
                )));
            }
        };
        Ok(Box::new(SyscallInjection {
            pid,
            start_time,
            in_effect: Instant::now(),
            threads,
            counters,
            stop,
            handle: Some(handle),
            requested: self.spec.summary(),
            percent: self.spec.percent.value(),
            errno: self.spec.errno.map(|e| e.to_string()),
            recovered: false,
            tracer_error: None,
        }))
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}

/// What to hit, decided per call at its entry stop.
struct Rules {
    defs: Vec<&'static SyscallDef>,
    path: Option<glob::Pattern>,
    /// Hit when `rng % 1_000_000 < threshold`.
    threshold: u64,
    errno: Option<i32>,
    delay: Option<Duration>,
    rng: SplitMix64,
}

impl Rules {
    fn new(spec: &SyscallChaos, seed: u64) -> Result<Rules, FaultError> {
        let path =
            match &spec.path {
                Some(p) => Some(glob::Pattern::new(p).map_err(|e| {
                    FaultError::Other(format!("invalid path glob `{p}`: {}", e.msg))
                })?),
                None => None,
            };
        Ok(Rules {
            defs: spec.defs(),
            path,
            threshold: (spec.percent.value() * 10_000.0).round() as u64,
            errno: spec.errno.map(|e| e.0),
            delay: spec.delay.map(|d| d.0),
            rng: SplitMix64(seed ^ 0x5eed_5eed_5eed_5eed),
        })
    }
}

/// A small, seeded generator (SplitMix64): the same seed hits the same calls in the same order.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Default)]
struct Counters {
    /// Calls of the listed system calls (any path).
    calls: AtomicU64,
    /// Of those, calls whose path matched (all of them without `path`).
    matched: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
    /// Threads and processes traced so far (including forks and clones).
    traced: AtomicU64,
}

#[derive(Default)]
struct TraceeState {
    /// Set at entry of a hit call: the errno to return at its exit stop.
    fail_with: Option<i32>,
    /// A hit call held at its entry stop until then.
    release_at: Option<Instant>,
}

struct Tracer {
    rules: Rules,
    tracees: BTreeMap<i32, TraceeState>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

const OPTIONS: u32 =
    ptrace::O_TRACESYSGOOD | ptrace::O_TRACEFORK | ptrace::O_TRACEVFORK | ptrace::O_TRACECLONE;

impl Tracer {
    /// Seizes every thread of `pid` (rereading the list until no unknown thread appears) and
    /// interrupts each, so it starts stopping at system calls. Returns the number of threads.
    fn attach(&mut self, pid: i32) -> Result<usize, FaultError> {
        for _ in 0..100 {
            let tids = ptrace::threads(pid).map_err(|_| FaultError::TargetGone {
                target: format!("pid {pid}"),
            })?;
            let new: Vec<i32> = tids
                .into_iter()
                .filter(|t| !self.tracees.contains_key(t))
                .collect();
            if new.is_empty() {
                return Ok(self.tracees.len());
            }
            for tid in new {
                match ptrace::seize(tid, OPTIONS) {
                    Ok(()) => {}
                    Err(e) if e.errno() == Some(libc_esrch()) => continue,
                    // Auto-attached already (a clone of a seized thread): ours.
                    Err(e)
                        if e.errno() == Some(1)
                            && ptrace::tracer_of(tid).ok() == Some(std::process::id() as i32) => {}
                    Err(source) => {
                        return Err(FaultError::Sys {
                            action: "trace (PTRACE_SEIZE) a thread of",
                            target: format!("pid {pid} (thread {tid})"),
                            source,
                        })
                    }
                }
                let _ = ptrace::interrupt(tid);
                self.tracees.insert(tid, TraceeState::default());
                self.counters.traced.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(FaultError::Other(format!(
            "the threads of pid {pid} kept changing while attaching"
        )))
    }

    /// Serves stops until asked to stop, then detaches every tracee.
    fn run(&mut self) -> Result<(), FaultError> {
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            self.release_due();
            match ptrace::wait_own_tracee(true) {
                Ok(Some((tid, st))) => {
                    idle = 0;
                    self.on_event(tid, st, false);
                }
                Ok(None) => {
                    idle = idle.saturating_add(1);
                    if idle > 64 {
                        let wait = Duration::from_micros(u64::from(idle.min(1064) - 64));
                        std::thread::sleep(wait.min(self.next_release()));
                    } else {
                        std::thread::yield_now();
                    }
                }
                Err(_) => {
                    // ECHILD: no tracee left (the target exited).
                    if self.tracees.is_empty() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        self.detach_all();
        Ok(())
    }

    fn next_release(&self) -> Duration {
        let now = Instant::now();
        self.tracees
            .values()
            .filter_map(|t| t.release_at)
            .map(|r| r.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(1))
    }

    /// Resumes held calls whose delay is over.
    fn release_due(&mut self) {
        let now = Instant::now();
        let due: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.release_at.is_some_and(|r| r <= now))
            .map(|(tid, _)| *tid)
            .collect();
        for tid in due {
            if let Some(t) = self.tracees.get_mut(&tid) {
                t.release_at = None;
            }
            let _ = ptrace::resume_syscall(tid, 0);
        }
    }

    fn on_event(&mut self, tid: i32, st: Status, draining: bool) {
        match st {
            Status::Exited(_) | Status::Killed(_) => {
                self.tracees.remove(&tid);
            }
            st if st.is_syscall_stop() => {
                let state = self.tracees.entry(tid).or_default();
                match ptrace::syscall_info(tid) {
                    Ok(SyscallStop::Entry { nr, args }) if !draining => {
                        self.on_entry(tid, nr, args);
                    }
                    Ok(SyscallStop::Exit { .. }) => {
                        if let Some(errno) = state.fail_with.take() {
                            if let Ok(mut regs) = ptrace::get_regs(tid) {
                                regs.rax = (-(errno as i64)) as u64;
                                let _ = ptrace::set_regs(tid, &regs);
                            }
                            self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        if draining {
                            let _ = ptrace::detach(tid, 0);
                            self.tracees.remove(&tid);
                        } else {
                            let _ = ptrace::resume_syscall(tid, 0);
                        }
                    }
                    _ if draining && state.fail_with.is_none() => {
                        let _ = ptrace::detach(tid, 0);
                        self.tracees.remove(&tid);
                    }
                    _ => {
                        let _ = ptrace::resume_syscall(tid, 0);
                    }
                }
            }
            Status::Stopped { event, .. }
                if event == ptrace::EVENT_FORK
                    || event == ptrace::EVENT_VFORK
                    || event == ptrace::EVENT_CLONE =>
            {
                if let Ok(child) = ptrace::event_msg(tid) {
                    if let std::collections::btree_map::Entry::Vacant(e) =
                        self.tracees.entry(child as i32)
                    {
                        e.insert(TraceeState::default());
                        self.counters.traced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.resume_or_detach(tid, 0, draining);
            }
            Status::Stopped { sig, event } if event == ptrace::EVENT_STOP => {
                self.tracees.entry(tid).or_default();
                if draining {
                    // Group-stopped tracees stay stopped after detach, as they should.
                    if self
                        .tracees
                        .get(&tid)
                        .is_some_and(|t| t.fail_with.is_none())
                    {
                        let _ = ptrace::detach(tid, 0);
                        self.tracees.remove(&tid);
                    } else {
                        let _ = ptrace::resume_syscall(tid, 0);
                    }
                } else if STOP_SIGNALS.contains(&sig) {
                    let _ = ptrace::listen(tid);
                } else {
                    let _ = ptrace::resume_syscall(tid, 0);
                }
            }
            Status::Stopped { sig, .. } => {
                // A signal on its way to the tracee: deliver it.
                let sig = if sig == SIGTRAP | 0x80 { 0 } else { sig };
                self.resume_or_detach(tid, sig, draining);
            }
        }
    }

    fn resume_or_detach(&mut self, tid: i32, sig: i32, draining: bool) {
        if draining && self.tracees.get(&tid).is_none_or(|t| t.fail_with.is_none()) {
            let _ = ptrace::detach(tid, sig);
            self.tracees.remove(&tid);
        } else {
            let _ = ptrace::resume_syscall(tid, sig);
        }
    }

    fn on_entry(&mut self, tid: i32, nr: u64, args: [u64; 6]) {
        let Some(def) = self.rules.defs.iter().find(|d| d.nr == nr).copied() else {
            let _ = ptrace::resume_syscall(tid, 0);
            return;
        };
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let matched = match (&self.rules.path, def.path_arg) {
            (None, _) => true,
            (Some(glob), Some(arg)) => call_path(tid, def, &args, arg)
                .is_some_and(|p| glob.matches_with(&p, glob_options())),
            (Some(_), None) => false,
        };
        if !matched {
            let _ = ptrace::resume_syscall(tid, 0);
            return;
        }
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        if self.rules.rng.next() % 1_000_000 >= self.rules.threshold {
            let _ = ptrace::resume_syscall(tid, 0);
            return;
        }
        let state = self.tracees.entry(tid).or_default();
        if let Some(errno) = self.rules.errno {
            if let Ok(mut regs) = ptrace::get_regs(tid) {
                regs.orig_rax = u64::MAX; // skip the call; its exit stop sets the result
                if ptrace::set_regs(tid, &regs).is_ok() {
                    state.fail_with = Some(errno);
                }
            }
        }
        match self.rules.delay {
            Some(d) if !d.is_zero() => {
                self.counters.delayed.fetch_add(1, Ordering::Relaxed);
                state.release_at = Some(Instant::now() + d);
            }
            _ => {
                let _ = ptrace::resume_syscall(tid, 0);
            }
        }
    }

    /// Detaches every tracee at a stop where that leaves it unchanged: held calls are released,
    /// calls already skipped get their errno first. Bounded: what is left when the time is up
    /// is detached by the kernel as this thread ends.
    fn detach_all(&mut self) {
        for (tid, t) in self.tracees.iter_mut() {
            if t.release_at.take().is_some() {
                let _ = ptrace::resume_syscall(*tid, 0);
            }
        }
        let tids: Vec<i32> = self.tracees.keys().copied().collect();
        for tid in tids {
            let _ = ptrace::interrupt(tid);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.tracees.is_empty() && Instant::now() < deadline {
            match ptrace::wait_own_tracee(true) {
                Ok(Some((tid, st))) => self.on_event(tid, st, true),
                Ok(None) => std::thread::sleep(Duration::from_micros(100)),
                Err(_) => break,
            }
        }
    }
}

fn libc_esrch() -> i32 {
    3
}

fn glob_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    }
}

/// The path argument of a call, made absolute against its directory descriptor or the caller's
/// working directory.
fn call_path(tid: i32, def: &SyscallDef, args: &[u64; 6], arg: usize) -> Option<String> {
    let raw = ptrace::read_cstr(tid, args[arg], 4096).ok()?;
    let p = String::from_utf8_lossy(&raw).into_owned();
    if p.starts_with('/') {
        return Some(p);
    }
    let base = match def.dirfd_arg.map(|i| args[i] as i32) {
        Some(fd) if fd != AT_FDCWD => std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok()?,
        _ => std::fs::read_link(format!("/proc/{tid}/cwd")).ok()?,
    };
    Some(base.join(p).to_string_lossy().into_owned())
}

struct SyscallInjection {
    pid: i32,
    start_time: u64,
    in_effect: Instant,
    threads: usize,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<(), FaultError>>>,
    requested: String,
    percent: f64,
    errno: Option<String>,
    recovered: bool,
    tracer_error: Option<String>,
}

impl Injection for SyscallInjection {
    fn in_effect_since(&self) -> Option<Instant> {
        Some(self.in_effect)
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        if !self.recovered && !ProcInfo::is_same(self.pid, self.start_time) {
            return Err(FaultError::TargetGone {
                target: format!("pid {}", self.pid),
            });
        }
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) && !self.recovered {
            return Err(FaultError::Other(format!(
                "the tracer of pid {} stopped early: the target runs untraced",
                self.pid
            )));
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let c = &self.counters;
        let calls = c.calls.load(Ordering::Relaxed);
        let matched = c.matched.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        let delayed = c.delayed.load(Ordering::Relaxed);
        let traced = c.traced.load(Ordering::Relaxed);
        let hit = failed.max(delayed);
        let share = if matched > 0 {
            100.0 * hit as f64 / matched as f64
        } else {
            0.0
        };
        let mut summary = format!(
            "{}: {calls} call(s) seen, {matched} matching, {failed} failed{}, {delayed} delayed ({share:.2}% hit, {}% requested); traced {traced} thread(s)/process(es) of pid {} ({} at start); every system call of the target stopped in the tracer",
            self.requested,
            self.errno.as_ref().map(|e| format!(" with {e}")).unwrap_or_default(),
            self.percent,
            self.pid,
            self.threads,
        );
        if let Some(e) = &self.tracer_error {
            summary.push_str(&format!("; tracer: {e}"));
        }
        Effect {
            summary,
            ..Default::default()
        }
        .metric("syscalls_seen", calls as f64)
        .metric("syscalls_matched", matched as f64)
        .metric("syscalls_failed", failed as f64)
        .metric("syscalls_delayed", delayed as f64)
        .metric("threads_traced", traced as f64)
        .metric("hit_percent", share)
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        self.recovered = true;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.tracer_error = Some(e.to_string()),
                // The thread is gone either way, and with it every trace.
                Err(_) => self.tracer_error = Some("the tracer thread panicked".into()),
            }
        }
        Ok(())
    }
}

impl Drop for SyscallInjection {
    fn drop(&mut self) {
        let _ = self.recover();
    }
}

/// The listed calls whose numbers a tracer matches, for tests and reports.
pub fn syscall_numbers(spec: &SyscallChaos) -> HashSet<u64> {
    spec.defs().iter().map(|d| d.nr).collect()
}
