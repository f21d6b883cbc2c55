//! Holding injections: one dedicated thread per injection, and the registry of what is held.
//!
//! An [`havoc_faults::Injection`] is `Send` but not `Sync` and its calls block, so each lives on
//! its own OS thread for its whole life: the thread journals the undo records, injects, ticks
//! about every 50 ms, watches the lease, and recovers. Helpers it starts (stress workers) carry
//! `PR_SET_PDEATHSIG` bound to that thread, which is why inject and recover run on it too.
//! The async side talks to it through a channel and never blocks a runtime worker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Effect, Target};
use havoc_spec::FaultSpec;

use crate::metrics::{EffectLabels, KindLabels, Metrics};

/// How often an injection is ticked.
pub const TICK: Duration = Duration::from_millis(50);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// What to hold.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub id: String,
    pub key: String,
    pub owner: String,
    pub spec: FaultSpec,
    pub target: Target,
    /// The request's target, echoed in List.
    pub api_target: Option<havoc_api::v1::Target>,
    pub pid: i32,
    pub ttl: Duration,
    pub duration: Option<Duration>,
    pub state_dir: PathBuf,
    pub self_exe: PathBuf,
    pub seed: u64,
}

enum Cmd {
    Recover(tokio::sync::oneshot::Sender<Result<String, String>>),
}

/// A live injection as seen from outside its thread.
pub struct Held {
    pub id: String,
    pub key: String,
    pub kind: &'static str,
    pub summary: String,
    pub owner: String,
    pub api_target: Option<havoc_api::v1::Target>,
    pub pid: i32,
    pub injected_unix_ms: i64,
    ttl_ms: AtomicU64,
    expires_unix_ms: AtomicI64,
    effect: Mutex<Effect>,
    cmd: Mutex<mpsc::Sender<Cmd>>,
    /// Why the holder thread stopped holding (set before it recovers), for a Recover that
    /// arrives while or after it recovers on its own (lease expiry, failure, shutdown).
    ending: Mutex<Option<String>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Unix ms at which the lease ends.
    pub fn expires_unix_ms(&self) -> i64 {
        self.expires_unix_ms.load(Ordering::SeqCst)
    }

    /// Extends the lease by `ttl` (or the ttl given at inject) from now; returns the new end.
    pub fn renew(&self, ttl: Option<Duration>) -> i64 {
        if let Some(t) = ttl {
            self.ttl_ms.store(t.as_millis() as u64, Ordering::SeqCst);
        }
        let end = now_ms() + self.ttl_ms.load(Ordering::SeqCst) as i64;
        self.expires_unix_ms.store(end, Ordering::SeqCst);
        end
    }

    /// The measured effect, as of the last sample (about every 500 ms).
    pub fn effect(&self) -> Effect {
        self.effect.lock().expect("effect lock").clone()
    }

    /// Asks the holder thread to recover; resolves when it has. Ok carries the reason.
    pub async fn recover(&self) -> Result<String, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .cmd
            .lock()
            .expect("cmd lock")
            .send(Cmd::Recover(tx))
            .is_ok();
        // The holder thread drops unanswered requests only after its own recovery is done.
        let ended = || {
            Ok(self
                .ending
                .lock()
                .expect("ending lock")
                .clone()
                .filter(|r| r != "recovered")
                .unwrap_or_else(|| "already recovered".into()))
        };
        if !sent {
            return ended();
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => ended(),
        }
    }
}

/// Everything the agent holds, by id and by idempotency key.
#[derive(Default)]
pub struct Registry {
    held: Mutex<HashMap<String, Arc<Held>>>,
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    /// Helper processes (stress workers): never targets.
    helpers: Mutex<HashSet<i32>>,
    /// Why recently ended injections ended, for Recover of an id that is gone.
    ended: Mutex<VecDeque<(String, String)>>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registry {
            metrics,
            ..Default::default()
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Held>> {
        self.held.lock().expect("held lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Held>> {
        let mut v: Vec<Arc<Held>> = self
            .held
            .lock()
            .expect("held lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock serializing Injects with `key`; it holds the id of the key's live injection.
    pub fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<String>>> {
        self.keys
            .lock()
            .expect("keys lock")
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    pub fn helpers(&self) -> Vec<i32> {
        self.helpers
            .lock()
            .expect("helpers lock")
            .iter()
            .copied()
            .collect()
    }

    /// Why `id` ended, if it ended recently.
    pub fn ended_reason(&self, id: &str) -> Option<String> {
        self.ended
            .lock()
            .expect("ended lock")
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
    }

    /// Replaces helper `old` (a watchdog that ended) by `new`.
    fn swap_helper(&self, old: Option<u32>, new: u32) {
        let mut h = self.helpers.lock().expect("helpers lock");
        if let Some(old) = old {
            h.remove(&(old as i32));
        }
        h.insert(new as i32);
    }

    fn insert(&self, h: Arc<Held>) {
        self.metrics
            .active
            .get_or_create(&KindLabels {
                kind: h.kind.into(),
            })
            .inc();
        self.held.lock().expect("held lock").insert(h.id.clone(), h);
    }

    fn remove(&self, id: &str, reason: &str) {
        let Some(h) = self.held.lock().expect("held lock").remove(id) else {
            return;
        };
        self.metrics
            .active
            .get_or_create(&KindLabels {
                kind: h.kind.into(),
            })
            .dec();
        for name in h.effect().metrics.keys() {
            self.metrics.effects.remove(&EffectLabels {
                injection_id: h.id.clone(),
                kind: h.kind.into(),
                metric: name.clone(),
            });
        }
        {
            let mut ended = self.ended.lock().expect("ended lock");
            ended.push_back((id.to_string(), reason.to_string()));
            while ended.len() > 1024 {
                ended.pop_front();
            }
        }
        // Forget the key unless an Inject is waiting on it right now.
        let mut keys = self.keys.lock().expect("keys lock");
        let idle = keys.get(&h.key).is_some_and(|lock| {
            Arc::strong_count(lock) == 1
                && lock
                    .try_lock()
                    .is_ok_and(|g| g.as_deref() == Some(id) || g.is_none())
        });
        if idle {
            keys.remove(&h.key);
        }
    }
}

/// Why an injection could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The fault does not suit the target (refused, target gone).
    #[error("{0}")]
    Precondition(String),
    /// The journal could not be written, or injecting failed.
    #[error("{0}")]
    Failed(String),
}

/// Starts the holder thread of `req`: check, journal, inject. Returns once the fault is active
/// (and registered) or failed.
pub async fn start(req: HoldRequest, registry: Arc<Registry>) -> Result<Arc<Held>, HoldError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = format!("havoc-hold-{}", req.id);
    let spawned = std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || hold(req, registry, tx));
    if let Err(e) = spawned {
        return Err(HoldError::Failed(format!(
            "cannot start the holder thread: {e}"
        )));
    }
    rx.await
        .unwrap_or_else(|_| Err(HoldError::Failed("the holder thread died".into())))
}

fn hold(
    req: HoldRequest,
    registry: Arc<Registry>,
    reply: tokio::sync::oneshot::Sender<Result<Arc<Held>, HoldError>>,
) {
    let kind = req.spec.kind();
    let fault = havoc_faults::build(&req.spec);
    let chain = |e: &dyn std::error::Error| havoc_engine::error_chain(e);
    let t0 = Instant::now();
    if let Err(e) = fault.check(&req.target) {
        let _ = reply.send(Err(HoldError::Precondition(chain(&e))));
        return;
    }
    let mut journal = match havoc_engine::journal::Journal::create(
        &req.state_dir,
        &req.id,
        &format!("agent {} ({})", req.owner, req.key),
    ) {
        Ok(j) => j,
        Err(e) => {
            let _ = reply.send(Err(HoldError::Failed(format!(
                "cannot journal the injection: {}",
                chain(&e)
            ))));
            return;
        }
    };
    let label = req.target.label();
    let entry = match journal.record(kind, &label, fault.undo_plan(&req.target)) {
        Ok(id) => id,
        Err(e) => {
            let _ = journal.finish();
            let _ = reply.send(Err(HoldError::Failed(format!(
                "cannot journal the injection: {}",
                chain(&e)
            ))));
            return;
        }
    };
    let journaled = t0.elapsed();
    let ctx = Context {
        self_exe: req.self_exe.clone(),
        seed: req.seed,
        duration: req.duration.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
    };
    let mut inj = match fault.inject(&req.target, &ctx) {
        Ok(i) => i,
        Err(e) => {
            // A failed inject removes what it applied (its guard dropped); the journal goes too.
            let _ = journal.finish();
            let _ = reply.send(Err(match e {
                havoc_faults::FaultError::TargetGone { .. }
                | havoc_faults::FaultError::Refused { .. }
                | havoc_faults::FaultError::Conflict { .. } => HoldError::Precondition(chain(&e)),
                _ => HoldError::Failed(chain(&e)),
            }));
            return;
        }
    };
    tracing::debug!(id = %req.id, check_and_journal = ?journaled, inject = ?(t0.elapsed() - journaled), "inject timings");
    let late = inj.late_undo();
    note_helpers(&registry, &late);
    if let Err(e) = journal.extend(entry, late) {
        tracing::warn!(id = %req.id, error = %chain(&e), "cannot journal helper processes");
    }
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(Held {
        id: req.id.clone(),
        key: req.key.clone(),
        kind,
        summary: format!("{} in {label}", fault.requested()),
        owner: req.owner.clone(),
        api_target: req.api_target.clone(),
        pid: req.pid,
        // When the fault was in effect: the caller counts the duration from here.
        injected_unix_ms: inj
            .in_effect_since()
            .map(|i| now_ms() - i.elapsed().as_millis() as i64)
            .unwrap_or_else(now_ms),
        ttl_ms: AtomicU64::new(req.ttl.as_millis() as u64),
        expires_unix_ms: AtomicI64::new(now_ms() + req.ttl.as_millis() as i64),
        effect: Mutex::new(inj.effect()),
        cmd: Mutex::new(tx),
        ending: Mutex::new(None),
    });
    registry.insert(held.clone());
    tracing::info!(id = %req.id, fault = kind, target = %label, owner = %req.owner, "injected");
    let _ = reply.send(Ok(held.clone()));

    let mut last_sample = Instant::now();
    let (reason, answer) = loop {
        match rx.recv_timeout(TICK) {
            Ok(Cmd::Recover(answer)) => break ("recovered".to_string(), Some(answer)),
            Err(mpsc::RecvTimeoutError::Disconnected) => break ("agent stopping".into(), None),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if now_ms() >= held.expires_unix_ms() {
            registry.metrics.lease_expirations.inc();
            registry.metrics.count(kind, "expire", "ok");
            tracing::warn!(id = %req.id, "lease expired: recovering");
            break ("lease expired".into(), None);
        }
        if let Err(e) = inj.tick() {
            tracing::warn!(id = %req.id, error = %chain(&e), "injection failed while held: recovering");
            break (format!("failed while held: {}", chain(&e)), None);
        }
        if last_sample.elapsed() >= Duration::from_millis(500) {
            last_sample = Instant::now();
            sample(&registry, &held, inj.as_ref());
            let late = inj.late_undo();
            if !late.is_empty() {
                note_helpers(&registry, &late);
                let _ = journal.extend(entry, late);
            }
        }
    };
    *held.ending.lock().expect("ending lock") = Some(reason.clone());
    let result = match inj.recover() {
        Ok(()) => {
            let _ = journal.forget(entry);
            if let Err(e) = journal.finish() {
                tracing::warn!(id = %req.id, error = %chain(&e), "cannot remove the journal");
            }
            registry.metrics.count(kind, "recover", "ok");
            Ok(reason.clone())
        }
        Err(e) => {
            // The journal stays for the next start's replay.
            registry.metrics.count(kind, "recover", "error");
            tracing::error!(id = %req.id, error = %chain(&e), "recovery failed; the journal is kept");
            Err(format!("recovery failed: {}", chain(&e)))
        }
    };
    drop(inj);
    registry.remove(&req.id, &reason);
    tracing::info!(id = %req.id, reason = %reason, "recovered");
    if let Some(a) = answer {
        let _ = a.send(result);
    }
}

fn note_helpers(registry: &Registry, undo: &[havoc_faults::UndoAction]) {
    let mut h = registry.helpers.lock().expect("helpers lock");
    for u in undo {
        if let havoc_faults::UndoAction::KillHelper { pid, .. } = u {
            h.insert(*pid);
        }
    }
}

fn sample(registry: &Registry, held: &Held, inj: &dyn havoc_faults::Injection) {
    let e = inj.effect();
    for (name, v) in &e.metrics {
        registry
            .metrics
            .effects
            .get_or_create(&EffectLabels {
                injection_id: held.id.clone(),
                kind: held.kind.into(),
                metric: name.clone(),
            })
            .set(*v);
    }
    *held.effect.lock().expect("effect lock") = e;
}

/// The agent's `oom_score_adj`: above its watchdog's (which asks for -1000 and otherwise keeps
/// the value it inherited before this was set), so that if the agent's memory runs away the
/// kernel kills the agent and the watchdog lives to undo what it held.
pub const AGENT_OOM_SCORE_ADJ: i32 = 900;

/// How often the agent checks that its watchdog still runs.
const WATCHDOG_CHECK: Duration = Duration::from_millis(250);

/// The agent's watchdog: a process of its own that replays every journal this agent wrote (one
/// per injection) if the agent dies, through [`havoc_engine::watchdog`], the mechanism of
/// `havoc run`. A thread checks that it runs and starts a new one if it ended.
pub struct Guardian {
    stop: mpsc::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: Arc<AtomicU64>,
}

impl std::fmt::Debug for Guardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardian")
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Guardian {
    /// Starts the watchdog of this process's journals under `state_dir`, then raises this
    /// process's `oom_score_adj` to [`AGENT_OOM_SCORE_ADJ`] (the watchdog keeps the lower one).
    /// The watchdog is one of `registry`'s helpers, so no request can target it.
    pub fn start(
        self_exe: &std::path::Path,
        state_dir: &std::path::Path,
        registry: &Arc<Registry>,
    ) -> std::io::Result<Self> {
        use havoc_engine::watchdog::Watchdog;
        let first = Watchdog::spawn_for_owner(self_exe, state_dir)?;
        registry.swap_helper(None, first.pid());
        match havoc_engine::watchdog::raise_own_oom_score(AGENT_OOM_SCORE_ADJ) {
            Ok(adj) => tracing::debug!(oom_score_adj = adj, "agent"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the agent's oom_score_adj"),
        }
        let pid = Arc::new(AtomicU64::new(u64::from(first.pid())));
        tracing::info!(pid = first.pid(), "watchdog started");
        let (stop, stopped) = mpsc::channel::<bool>();
        let (exe, dir, shown, registry) = (
            self_exe.to_path_buf(),
            state_dir.to_path_buf(),
            pid.clone(),
            registry.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("havoc-watchdog".into())
            .spawn(move || {
                let mut w = Some(first);
                let disarm = loop {
                    match stopped.recv_timeout(WATCHDOG_CHECK) {
                        Ok(disarm) => break disarm,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break false,
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    let ended = match w.as_mut().map(|w| w.try_wait()) {
                        Some(Ok(None)) => continue,
                        Some(Ok(Some(status))) => format!("ended ({status})"),
                        Some(Err(e)) => format!("cannot be checked ({e})"),
                        None => "is not running".into(),
                    };
                    tracing::error!("the watchdog {ended}: starting a new one");
                    w = match Watchdog::spawn_for_owner(&exe, &dir) {
                        Ok(n) => {
                            let old = shown.swap(u64::from(n.pid()), Ordering::SeqCst);
                            registry.swap_helper(Some(old as u32), n.pid());
                            Some(n)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a watchdog");
                            None
                        }
                    };
                };
                if let Some(w) = w {
                    if disarm {
                        w.disarm();
                    } else {
                        // Closing the pipe arms it: it replays what is left, then exits.
                        std::mem::forget(w);
                    }
                }
            })?;
        Ok(Guardian {
            stop,
            thread: Some(thread),
            pid,
        })
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst) as u32
    }

    /// Ends the watchdog: after a clean shutdown (`recovered`: every injection recovered) it
    /// exits without touching the journals; otherwise it stays armed and replays what is left
    /// when this process exits, as after a crash. Dropping a Guardian is `finish(false)`.
    pub fn finish(mut self, recovered: bool) {
        let _ = self.stop.send(recovered);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.send(false);
            let _ = t.join();
        }
    }
}
