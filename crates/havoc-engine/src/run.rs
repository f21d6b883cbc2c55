//! The lifecycle of one experiment: plan (resolve and check every target), then inject on
//! schedule, hold, and recover — on the normal end, on an injection failure, on a signal, on a
//! panic — with the journal written before every injection and the watchdog armed.
//!
//! A run is a set of independent lifecycles, one per fault and target, each on its own thread
//! ([`crate::lifecycle`]): wait for its start, inject, hold for its duration counted from when it
//! is in effect, recover. One slow injection or recovery never moves another. The thread that
//! calls [`execute`] only watches: it forwards progress to the observer, turns signals and probe
//! breaches into an abort that every lifecycle sees at once, and assembles the report.
//! Helper processes are tied to the thread that spawned them (`PR_SET_PDEATHSIG`), which is the
//! lifecycle's, and it lives until its injection is recovered.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havoc_faults::{Fault, Target};
use havoc_spec::{Experiment, FaultEntry};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::journal::Journal;
use crate::lifecycle::{self, Lifecycle, Msg, Outcome, Shared};
use crate::report::{FaultReport, RunReport, TargetReport, Timing, Verdict};
use crate::resolve::{self, Protection, ResolveError};
use crate::watchdog::Watchdog;

/// One fault of the plan, with its concrete targets.
pub struct PlannedFault {
    pub entry: FaultEntry,
    pub start: Duration,
    pub duration: Duration,
    pub targets: Vec<Target>,
    /// Targets the selector chose that conflict with something else holding them (a process
    /// stopped by someone other than Havoc): not injected, named in the report with the reason.
    pub conflicts: Vec<(Target, String)>,
    pub fault: Box<dyn Fault>,
}

pub struct Plan {
    pub experiment: Experiment,
    pub seed: u64,
    pub faults: Vec<PlannedFault>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("fault `{fault}`: {source}")]
    Refused {
        fault: String,
        #[source]
        source: havoc_faults::FaultError,
    },
}

/// A stable per-fault seed: the run's seed mixed with the fault's name.
pub(crate) fn fault_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    seed ^ h
}

/// Resolves every fault's targets and checks each one, touching nothing.
pub fn plan(experiment: &Experiment, seed: u64, protect: &Protection) -> Result<Plan, PlanError> {
    let mut faults = Vec::new();
    for entry in &experiment.spec.faults {
        let mut rng = ChaCha8Rng::seed_from_u64(fault_seed(seed, &entry.name));
        let sel = entry.spec.selector();
        let targets = if entry.spec.targets_network_namespaces() {
            resolve::resolve_netns(&entry.name, sel, protect, &mut rng)?
        } else {
            resolve::resolve_processes(&entry.name, sel, protect, &mut rng)?
        };
        let fault = havoc_faults::build(&entry.spec);
        let mut ok = Vec::with_capacity(targets.len());
        let mut conflicts = Vec::new();
        for t in targets {
            match fault.check(&t) {
                Ok(()) => ok.push(t),
                Err(havoc_faults::FaultError::Conflict { reason, .. }) => {
                    conflicts.push((t, reason))
                }
                Err(source) => {
                    return Err(PlanError::Refused {
                        fault: entry.name.clone(),
                        source,
                    })
                }
            }
        }
        faults.push(PlannedFault {
            entry: entry.clone(),
            start: entry.after.map(|a| a.0).unwrap_or_default(),
            duration: experiment.fault_duration(entry).unwrap_or_default(),
            targets: ok,
            conflicts,
            fault,
        });
    }
    Ok(Plan {
        experiment: experiment.clone(),
        seed,
        faults,
    })
}

impl Plan {
    /// Human-readable description of what a run would do (for `--dry-run`).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "experiment {} (seed {})\n",
            self.experiment.metadata.name, self.seed
        );
        for f in &self.faults {
            out.push_str(&format!(
                "  at +{:.1}s for {:.1}s: {} [{}] {}\n",
                f.start.as_secs_f64(),
                f.duration.as_secs_f64(),
                f.entry.name,
                f.entry.spec.kind(),
                f.fault.requested()
            ));
            for t in &f.targets {
                out.push_str(&format!("    -> {}\n", t.label()));
            }
            for (t, why) in &f.conflicts {
                out.push_str(&format!("    -> {} SKIPPED: {why}\n", t.label()));
            }
        }
        out
    }

    /// When the last fault is planned to end (each is held from when it is in effect, so the
    /// real end is later by the injection latency).
    pub fn length(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.start.saturating_add(f.duration))
            .max()
            .unwrap_or_default()
    }
}

/// Progress of a run, for the terminal display and the dashboard's live stream. Times (`at`) are
/// from the start of the run, the origin of the report's times: an `Injected` at equals the
/// report's `injectedAtSeconds` of that target, a `Recovered` at its `recoveredAtSeconds`.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started {
        run_id: &'a str,
        length: Duration,
    },
    /// The run entered a phase: baseline (probes only), chaos (faults start), recovery (every
    /// fault recovered; probes only, until steady again). Recovery is only entered with probes.
    Phase {
        phase: havoc_probe::Phase,
        at: Duration,
    },
    /// The fault is in effect on the target (measured, not planned).
    Injected {
        fault: &'a str,
        target: &'a str,
        effect: &'a str,
        at: Duration,
    },
    /// Its recovery on the target ended.
    Recovered {
        fault: &'a str,
        target: &'a str,
        effect: &'a str,
        at: Duration,
    },
    /// A steady-state probe took a sample (its `t_seconds` is from the start of the run too).
    ProbeSample {
        probe: &'a str,
        sample: &'a havoc_probe::Sample,
    },
    Failed {
        fault: &'a str,
        target: &'a str,
        error: &'a str,
    },
    /// A target left alone because something else holds it (a conflict, decided per target).
    Skipped {
        fault: &'a str,
        target: &'a str,
        reason: &'a str,
    },
    Tick {
        elapsed: Duration,
        length: Duration,
        active: usize,
    },
    Stopping {
        reason: &'a str,
    },
}

pub trait Observer {
    fn event(&mut self, ev: Event<'_>);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _ev: Event<'_>) {}
}

/// Set from signal handlers and panic hooks; checked by the run loop every tick.
#[derive(Debug, Clone, Default)]
pub struct StopFlag {
    signal: Arc<AtomicUsize>,
    reason: Arc<std::sync::Mutex<Option<(String, Instant)>>>,
}

/// Set by the panic hook of [`install_panic_hook`], from any thread.
pub static PANICKED: AtomicBool = AtomicBool::new(false);

/// Makes a panic in any thread stop the run (after the default hook prints it).
pub fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        prev(info);
    }));
}

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run on SIGINT, SIGTERM and SIGHUP (interrupted) and SIGUSR1 (`havoc halt`: aborted).
    pub fn register_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] {
            signal_hook::flag::register_usize(sig, self.signal.clone(), sig as usize)?;
        }
        Ok(())
    }

    /// Asks the run to stop (from another thread: a probe, a halt request).
    /// The first request wins; its time is when the abort clock starts.
    pub fn request(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some((reason.into(), Instant::now()));
        }
    }

    /// When an abort was requested, if one was.
    pub fn requested_at(&self) -> Option<Instant> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, t)| *t)
    }

    /// Why the run must stop, if it must.
    pub fn check(&self) -> Option<(Verdict, String)> {
        match self.signal.load(Ordering::SeqCst) {
            0 => {}
            2 => return Some((Verdict::Interrupted, "interrupted (SIGINT)".into())),
            15 => return Some((Verdict::Interrupted, "terminated (SIGTERM)".into())),
            1 => return Some((Verdict::Interrupted, "hangup (SIGHUP)".into())),
            10 => return Some((Verdict::Aborted, "halted by `havoc halt`".into())),
            n => return Some((Verdict::Interrupted, format!("signal {n}"))),
        }
        if PANICKED.load(Ordering::SeqCst) {
            return Some((Verdict::Interrupted, "a thread of havoc panicked".into()));
        }
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(r, _)| (Verdict::Aborted, r.clone()))
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub state_dir: PathBuf,
    /// The havoc binary, for helper processes (watchdog, stress workers).
    pub self_exe: PathBuf,
    /// When the command started, for the apply-latency measurement.
    pub command_started: Instant,
    /// Run the watchdog (tests of the engine alone may turn it off).
    pub watchdog: bool,
    /// Where report.json and report.html go (default: `<state dir>/reports/<run id>`). The
    /// engine records it in the journal so a crash report lands there too.
    pub report_dir: Option<PathBuf>,
}

impl RunConfig {
    /// The report directory of a run.
    pub fn report_dir_for(&self, run_id: &str) -> PathBuf {
        self.report_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("reports").join(run_id))
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The state of a run between its start and its report: what [`execute`]'s early exits and its
/// normal end all need to write the report.
struct Run<'p> {
    plan: &'p Plan,
    run_id: String,
    started_at: u64,
    errors: Vec<String>,
    timing: Timing,
}

impl Run<'_> {
    /// A run that ended before any fault could start.
    fn failed_early(self, why: String) -> RunReport {
        let outcomes = self
            .plan
            .faults
            .iter()
            .map(|f| f.targets.iter().map(|_| Outcome::default()).collect())
            .collect();
        self.report(
            Verdict::Failed,
            Some(why),
            outcomes,
            Instant::now(),
            true,
            Duration::ZERO,
        )
    }

    /// The report. `t0` is the start of the run (the baseline, if any, comes first).
    fn report(
        self,
        verdict: Verdict,
        reason: Option<String>,
        outcomes: Vec<Vec<Outcome>>,
        t0: Instant,
        all_recovered: bool,
        took: Duration,
    ) -> RunReport {
        let Run {
            plan,
            run_id,
            started_at,
            errors,
            timing,
        } = self;
        let baseline = plan
            .experiment
            .spec
            .steady_state
            .as_ref()
            .map(|s| s.baseline.0)
            .unwrap_or_default();
        let secs = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
        let mut not_held = Vec::new();
        let faults: Vec<FaultReport> = plan
            .faults
            .iter()
            .zip(outcomes)
            .map(|(f, outs)| {
                let planned_start = t0 + baseline + f.start;
                let mut targets: Vec<TargetReport> = f
                    .targets
                    .iter()
                    .zip(outs)
                    .map(|(t, o)| target_report(t, o, f.duration, planned_start, &secs))
                    .collect();
                targets.extend(f.conflicts.iter().map(|(t, why)| TargetReport {
                    skipped: Some(why.clone()),
                    ..TargetReport::new(t, f.duration)
                }));
                let n = targets
                    .iter()
                    .filter(|t| t.skipped.is_some() || t.hold_deviation.is_some())
                    .count();
                if n > 0 {
                    not_held.push(format!("`{}` on {n} target(s)", f.entry.name));
                }
                FaultReport {
                    name: f.entry.name.clone(),
                    kind: f.entry.spec.kind().to_string(),
                    requested: f.fault.requested(),
                    start_offset_seconds: (baseline + f.start).as_secs_f64(),
                    planned_duration_seconds: f.duration.as_secs_f64(),
                    targets,
                }
            })
            .collect();
        let mut verdict = if matches!(verdict, Verdict::Completed | Verdict::Deviated)
            && errors.iter().any(|e| !e.starts_with("probe `"))
        {
            Verdict::Failed
        } else {
            verdict
        };
        let mut reason = reason;
        if verdict == Verdict::Completed && !not_held.is_empty() {
            verdict = Verdict::Deviated;
            reason = Some(format!(
                "not every fault was held as requested: {} (see holdDeviation and skipped)",
                not_held.join(", ")
            ));
        }
        RunReport {
            run_id,
            experiment: plan.experiment.metadata.name.clone(),
            seed: plan.seed,
            verdict,
            reason,
            started_at_unix_ms: started_at,
            duration_seconds: took.as_secs_f64(),
            faults,
            errors,
            all_recovered,
            timing,
            steady_state: None,
        }
    }
}

/// One target's part of the report, from what its lifecycle measured.
fn target_report(
    t: &Target,
    o: Outcome,
    requested: Duration,
    planned_start: Instant,
    secs: &dyn Fn(Instant) -> f64,
) -> TargetReport {
    let mut rep = TargetReport::new(t, requested);
    rep.error = o.error;
    rep.skipped = o.skipped;
    rep.effect = o.effect;
    rep.injected_at_seconds = o.in_effect.map(secs);
    rep.recovered_at_seconds = o.recovered.map(secs);
    rep.inject_latency_ms = o
        .in_effect
        .map(|i| i.saturating_duration_since(planned_start).as_secs_f64() * 1000.0);
    rep.recover_latency_ms = match (o.recover_started, o.recovered) {
        (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    if let Some(start) = o.in_effect {
        // The hold ends when the effect ended on its own, else when recovery removed it (the
        // injection says when, if before its cleanup ended), else at the end of recovery.
        let end = match (&o.ended_early, o.recovered) {
            (Some((e, _)), _) => Some(*e),
            (None, Some(r)) => Some(o.effect_removed.unwrap_or(r)),
            (None, None) => None,
        };
        if let Some(end) = end {
            let achieved = end.saturating_duration_since(start);
            rep.hold_achieved_seconds = Some(achieved.as_secs_f64());
            rep.hold_deviation =
                lifecycle::hold_deviation(requested, achieved).map(|d| match &o.ended_early {
                    Some((_, why)) => format!("{d}: {why}"),
                    None => d,
                });
            rep.effect = std::mem::take(&mut rep.effect)
                .metric("hold_seconds", achieved.as_secs_f64())
                .metric("hold_seconds_requested", requested.as_secs_f64());
        }
    }
    rep
}

/// Passes the probes' new samples to the observer.
fn forward_samples(p: &havoc_probe::ProbeSet, seen: &mut Vec<usize>, obs: &mut dyn Observer) {
    for (probe, sample) in p.new_samples(seen) {
        obs.event(Event::ProbeSample {
            probe,
            sample: &sample,
        });
    }
}

/// Runs a plan to its end and returns the report. Never returns with a fault in effect unless
/// recovery itself failed (the report then says so and the journal keeps the undo records).
pub fn execute(plan: Plan, cfg: &RunConfig, stop: &StopFlag, obs: &mut dyn Observer) -> RunReport {
    let run_id = format!(
        "{}-{}-{}",
        plan.experiment.metadata.name,
        std::process::id(),
        now_unix_ms()
    );
    for f in &plan.faults {
        f.fault.prepare();
    }
    let mut run = Run {
        plan: &plan,
        run_id,
        started_at: now_unix_ms(),
        errors: Vec::new(),
        timing: Timing::default(),
    };
    let mut journal =
        match Journal::create(&cfg.state_dir, &run.run_id, &plan.experiment.metadata.name) {
            Ok(j) => j,
            Err(e) => {
                let why = format!("cannot write the journal: {}", crate::error_chain(&e));
                return run.failed_early(why);
            }
        };
    if let Err(e) =
        journal.describe_run(plan.seed, run.started_at, &cfg.report_dir_for(&run.run_id))
    {
        run.errors.push(crate::error_chain(&e));
    }
    let watchdog = if cfg.watchdog {
        match Watchdog::spawn(&cfg.self_exe, journal.path()) {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = journal.finish();
                let why = format!(
                    "cannot start the watchdog ({}): {e}",
                    cfg.self_exe.display()
                );
                return run.failed_early(why);
            }
        }
    } else {
        None
    };
    let steady = plan.experiment.spec.steady_state.clone();
    let baseline = steady.as_ref().map(|s| s.baseline.0).unwrap_or_default();
    let length = plan.length().saturating_add(baseline);
    obs.event(Event::Started {
        run_id: &run.run_id,
        length,
    });
    let t0 = Instant::now();
    let mut probes: Option<havoc_probe::ProbeSet> = None;
    let mut seen_samples = Vec::new();
    if let Some(ss) = &steady {
        let stop2 = stop.clone();
        let on_breach: havoc_probe::BreachCallback = Box::new(move |probe: &str, why: &str| {
            stop2.request(format!("probe `{probe}` breached its abort limit: {why}"))
        });
        match havoc_probe::ProbeSet::start(ss, plan.experiment.spec.abort.as_ref(), t0, on_breach) {
            Ok(p) => probes = Some(p),
            Err(e) => {
                let _ = journal.finish();
                if let Some(w) = watchdog {
                    w.disarm();
                }
                let why = format!(
                    "cannot start the steady-state probes: {}",
                    crate::error_chain(&e)
                );
                return run.failed_early(why);
            }
        }
    }
    if !baseline.is_zero() {
        obs.event(Event::Phase {
            phase: havoc_probe::Phase::Baseline,
            at: Duration::ZERO,
        });
    }
    let chaos_start = t0 + baseline;
    let shared = Shared {
        journal: std::sync::Mutex::new(journal),
        abort: Default::default(),
    };
    let mut verdict = Verdict::Completed;
    let mut reason = None;
    let (tx, rx) = std::sync::mpsc::channel::<Msg>();
    let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (fi, f) in plan.faults.iter().enumerate() {
            let seed = fault_seed(plan.seed, &f.entry.name);
            for (ti, target) in f.targets.iter().enumerate() {
                let lc = Lifecycle {
                    fault_index: fi,
                    target_index: ti,
                    fault_name: &f.entry.name,
                    fault: f.fault.as_ref(),
                    target,
                    start_at: chaos_start + f.start,
                    duration: f.duration,
                    ctx: havoc_faults::Context {
                        self_exe: cfg.self_exe.clone(),
                        seed,
                        duration: f.duration,
                    },
                };
                let (shared, tx) = (&shared, tx.clone());
                let h = std::thread::Builder::new()
                    .name(format!("havoc-f{fi}-t{ti}"))
                    .spawn_scoped(scope, move || lc.run(shared, tx));
                match h {
                    Ok(h) => handles.push((fi, Some(h))),
                    Err(e) => {
                        handles.push((fi, None));
                        // Out of threads: stop the run; what started recovers.
                        run.errors.push(format!(
                            "{}: cannot start a thread for {}: {e}",
                            f.entry.name,
                            target.label()
                        ));
                        verdict = Verdict::Failed;
                        reason = Some("havoc could not start every fault".into());
                        shared.abort.raise();
                    }
                }
            }
        }
        drop(tx);
        let labels = |fi: usize, ti: usize| {
            let f = &plan.faults[fi];
            (f.entry.name.as_str(), f.targets[ti].label())
        };
        let mut in_chaos = false;
        let mut active = 0usize;
        let mut last_tick_event = Instant::now() - Duration::from_secs(1);
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Msg::Injected {
                    fault,
                    target,
                    summary,
                    at,
                }) => {
                    active += 1;
                    let (f, t) = labels(fault, target);
                    obs.event(Event::Injected {
                        fault: f,
                        target: &t,
                        effect: &summary,
                        at: at.saturating_duration_since(t0),
                    });
                }
                Ok(Msg::Recovered {
                    fault,
                    target,
                    summary,
                    at,
                }) => {
                    active = active.saturating_sub(1);
                    let (f, t) = labels(fault, target);
                    obs.event(Event::Recovered {
                        fault: f,
                        target: &t,
                        effect: &summary,
                        at: at.saturating_duration_since(t0),
                    });
                }
                Ok(Msg::Skipped {
                    fault,
                    target,
                    reason: why,
                }) => {
                    let (f, t) = labels(fault, target);
                    obs.event(Event::Skipped {
                        fault: f,
                        target: &t,
                        reason: &why,
                    });
                }
                Ok(Msg::Failed {
                    fault,
                    target,
                    error,
                    fatal,
                }) => {
                    let (f, t) = labels(fault, target);
                    obs.event(Event::Failed {
                        fault: f,
                        target: &t,
                        error: &error,
                    });
                    run.errors.push(format!("{f}: {t}: {error}"));
                    if fatal && !shared.abort.is_raised() {
                        verdict = Verdict::Failed;
                        let why = format!(
                            "injecting fault `{f}` into {t} failed; everything injected was recovered"
                        );
                        obs.event(Event::Stopping { reason: &why });
                        reason = Some(why);
                        shared.abort.raise();
                    }
                }
                Ok(Msg::Error(e)) => run.errors.push(e),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Every lifecycle has ended.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !shared.abort.is_raised() {
                if let Some((v, r)) = stop.check() {
                    verdict = v;
                    obs.event(Event::Stopping { reason: &r });
                    reason = Some(r);
                    shared.abort.raise();
                }
            }
            if let Some(p) = &probes {
                forward_samples(p, &mut seen_samples, obs);
            }
            let now = Instant::now();
            if !in_chaos && now >= chaos_start {
                in_chaos = true;
                if let Some(p) = &probes {
                    p.set_phase(havoc_probe::Phase::Chaos);
                }
                obs.event(Event::Phase {
                    phase: havoc_probe::Phase::Chaos,
                    at: now.saturating_duration_since(t0),
                });
            }
            if in_chaos && now.duration_since(last_tick_event) >= Duration::from_millis(200) {
                obs.event(Event::Tick {
                    elapsed: now.duration_since(chaos_start),
                    length,
                    active,
                });
                last_tick_event = now;
            }
        }
        let mut outcomes: Vec<Vec<Outcome>> = plan.faults.iter().map(|_| Vec::new()).collect();
        for (fi, h) in handles {
            let o = match h.map(|h| h.join()) {
                Some(Ok(o)) => o,
                Some(Err(_)) => Outcome {
                    error: Some("its thread panicked; the journal keeps its undo records".into()),
                    ..Default::default()
                },
                None => Outcome {
                    error: Some("not started: no thread could be created for it".into()),
                    ..Default::default()
                },
            };
            outcomes[fi].push(o);
        }
        outcomes
    });
    let last_recovery = outcomes.iter().flatten().filter_map(|o| o.recovered).max();
    if let (Verdict::Aborted, Some(at), Some(done)) = (verdict, stop.requested_at(), last_recovery)
    {
        run.timing.abort_to_recovered_ms =
            Some(done.saturating_duration_since(at).as_secs_f64() * 1000.0);
    }
    run.timing.max_recover_latency_ms = outcomes
        .iter()
        .flatten()
        .filter_map(|o| Some(o.recovered?.saturating_duration_since(o.recover_started?)))
        .max()
        .map(|d| d.as_secs_f64() * 1000.0);
    // From the command's start to the first fault in effect, less the wait that was planned
    // (the baseline and `after`).
    run.timing.apply_latency_ms = plan
        .faults
        .iter()
        .zip(&outcomes)
        .flat_map(|(f, outs)| {
            outs.iter().filter_map(move |o| {
                let planned = chaos_start + f.start;
                Some(o.in_effect?.saturating_duration_since(planned))
            })
        })
        .min()
        .map(|d| (d + t0.saturating_duration_since(cfg.command_started)).as_secs_f64() * 1000.0);
    let journal = shared
        .journal
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let all_recovered = journal.entries().is_empty();
    if all_recovered {
        if let Err(e) = journal.finish() {
            run.errors.push(crate::error_chain(&e));
        }
        if let Some(w) = watchdog {
            w.disarm();
        }
    } else {
        run.errors.push(format!(
            "the journal {} keeps what could not be undone: run `havoc recover`",
            journal.path().display()
        ));
        // The watchdog stays armed and retries when we exit.
        std::mem::forget(watchdog);
    }
    // Recovery phase: probes only, until steady again or the recovery timeout.
    let mut steady_results = None;
    if let (Some(p), Some(ss)) = (probes.take(), &steady) {
        if verdict != Verdict::Interrupted {
            obs.event(Event::Phase {
                phase: havoc_probe::Phase::Recovery,
                at: t0.elapsed(),
            });
            // Waits on its own thread while this one forwards the samples as they come.
            let s = std::thread::scope(|scope| {
                let waiter = scope.spawn(|| p.wait_steady(ss.recovery.0, None));
                while !waiter.is_finished() {
                    forward_samples(&p, &mut seen_samples, obs);
                    std::thread::sleep(Duration::from_millis(50));
                }
                forward_samples(&p, &mut seen_samples, obs);
                waiter.join()
            })
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (probe, why) in &s.not_steady {
                run.errors.push(format!(
                    "probe `{probe}` not steady {:.1}s after recovery: {why}",
                    s.waited.as_secs_f64()
                ));
            }
        }
        let results = p.stop();
        // The samples taken after the last forwarding (the stop waits for those in flight).
        for (i, series) in results.probes.iter().enumerate() {
            let from = seen_samples.get(i).copied().unwrap_or(0);
            for sample in series.samples.iter().skip(from) {
                obs.event(Event::ProbeSample {
                    probe: &series.probe,
                    sample,
                });
            }
        }
        if verdict == Verdict::Completed && !results.passed() {
            verdict = Verdict::Deviated;
            reason = Some("a steady-state probe failed its tolerance".into());
        }
        steady_results = Some(results);
    }
    let took = t0.elapsed();
    let mut report = run.report(verdict, reason, outcomes, t0, all_recovered, took);
    report.steady_state = steady_results;
    report
}
