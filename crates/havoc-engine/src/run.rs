//! The lifecycle of one experiment: plan (resolve and check every target), then inject on
//! schedule, hold, and recover — on the normal end, on an injection failure, on a signal, on a
//! panic — with the journal written before every injection and the watchdog armed.
//!
//! All injection and recovery runs on the thread that calls [`execute`]: helper processes are
//! tied to the life of the thread that spawned them (`PR_SET_PDEATHSIG`), and faults are plain
//! synchronous code.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havoc_faults::{Context, Fault, Injection, Target};
use havoc_spec::{Experiment, FaultEntry, FaultSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::journal::Journal;
use crate::report::{FaultReport, RunReport, TargetReport, Timing, Verdict};
use crate::resolve::{self, Protection, ResolveError};
use crate::watchdog::Watchdog;

/// One fault of the plan, with its concrete targets.
pub struct PlannedFault {
    pub entry: FaultEntry,
    pub start: Duration,
    pub duration: Duration,
    pub targets: Vec<Target>,
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
fn fault_seed(seed: u64, name: &str) -> u64 {
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
        let targets = match &entry.spec {
            FaultSpec::NetworkChaos(_) => {
                resolve::resolve_netns(&entry.name, sel, protect, &mut rng)?
            }
            _ => resolve::resolve_processes(&entry.name, sel, protect, &mut rng)?,
        };
        let fault = havoc_faults::build(&entry.spec);
        for t in &targets {
            fault.check(t).map_err(|source| PlanError::Refused {
                fault: entry.name.clone(),
                source,
            })?;
        }
        faults.push(PlannedFault {
            entry: entry.clone(),
            start: entry.after.map(|a| a.0).unwrap_or_default(),
            duration: experiment.fault_duration(entry).unwrap_or_default(),
            targets,
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
        }
        out
    }

    /// When the last fault ends.
    pub fn length(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.start + f.duration)
            .max()
            .unwrap_or_default()
    }
}

/// Progress of a run, for the terminal display.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started {
        run_id: &'a str,
        length: Duration,
    },
    Injected {
        fault: &'a str,
        target: &'a str,
        effect: &'a str,
    },
    Recovered {
        fault: &'a str,
        target: &'a str,
        effect: &'a str,
    },
    Failed {
        fault: &'a str,
        target: &'a str,
        error: &'a str,
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

struct Live {
    journal_id: u64,
    injection: Box<dyn Injection>,
}

struct FaultState {
    live: Vec<(usize, Live)>,
    reports: Vec<TargetReport>,
    done: bool,
    started: bool,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
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
    let started_at = now_unix_ms();
    for f in &plan.faults {
        f.fault.prepare();
    }
    let mut errors: Vec<String> = Vec::new();
    let mut states: Vec<FaultState> = plan
        .faults
        .iter()
        .map(|f| FaultState {
            live: Vec::new(),
            reports: f
                .targets
                .iter()
                .map(|t| TargetReport {
                    target: t.clone(),
                    label: t.label(),
                    injected_at_seconds: None,
                    recovered_at_seconds: None,
                    effect: Default::default(),
                    error: None,
                })
                .collect(),
            done: false,
            started: false,
        })
        .collect();
    let mut timing = Timing::default();
    let mut journal = match Journal::create(&cfg.state_dir, &run_id, &plan.experiment.metadata.name)
    {
        Ok(j) => j,
        Err(e) => {
            return finish_report(
                &plan,
                run_id,
                started_at,
                Verdict::Failed,
                Some(format!(
                    "cannot write the journal: {}",
                    crate::error_chain(&e)
                )),
                states,
                errors,
                true,
                timing,
                Duration::ZERO,
            );
        }
    };
    if let Err(e) = journal.describe_run(plan.seed, started_at, &cfg.report_dir_for(&run_id)) {
        errors.push(crate::error_chain(&e));
    }
    let watchdog = if cfg.watchdog {
        match Watchdog::spawn(&cfg.self_exe, journal.path()) {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = journal.finish();
                return finish_report(
                    &plan,
                    run_id,
                    started_at,
                    Verdict::Failed,
                    Some(format!(
                        "cannot start the watchdog ({}): {e}",
                        cfg.self_exe.display()
                    )),
                    states,
                    errors,
                    true,
                    timing,
                    Duration::ZERO,
                );
            }
        }
    } else {
        None
    };
    let steady = plan.experiment.spec.steady_state.clone();
    let baseline = steady.as_ref().map(|s| s.baseline.0).unwrap_or_default();
    let length = plan.length() + baseline;
    obs.event(Event::Started {
        run_id: &run_id,
        length,
    });
    let t0 = Instant::now();
    let mut probes = None;
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
                return finish_report(
                    &plan,
                    run_id,
                    started_at,
                    Verdict::Failed,
                    Some(why),
                    states,
                    errors,
                    true,
                    timing,
                    Duration::ZERO,
                );
            }
        }
    }
    let mut in_chaos = false;
    let tick = Duration::from_millis(20);
    let mut verdict = Verdict::Completed;
    let mut reason = None;
    let mut last_tick_event = Instant::now() - Duration::from_secs(1);

    'run: loop {
        if let Some((v, r)) = stop.check() {
            verdict = v;
            obs.event(Event::Stopping { reason: &r });
            reason = Some(r);
            break 'run;
        }
        // Baseline: probes only.
        let Some(elapsed) = t0.elapsed().checked_sub(baseline) else {
            std::thread::sleep(tick);
            continue;
        };
        if !in_chaos {
            in_chaos = true;
            if let Some(p) = &probes {
                p.set_phase(havoc_probe::Phase::Chaos);
            }
        }
        // Recover faults whose window has ended.
        for (fi, f) in plan.faults.iter().enumerate() {
            let st = &mut states[fi];
            if st.started && !st.done && elapsed >= f.start + f.duration {
                recover_fault(f, st, &mut journal, t0, &mut timing, &mut errors, obs);
                st.done = true;
            }
        }
        // Inject faults whose window has begun.
        for (fi, f) in plan.faults.iter().enumerate() {
            if states[fi].started || elapsed < f.start {
                continue;
            }
            states[fi].started = true;
            let ctx = Context {
                self_exe: cfg.self_exe.clone(),
                seed: fault_seed(plan.seed, &f.entry.name),
                duration: f.duration,
            };
            for (ti, target) in f.targets.iter().enumerate() {
                let label = target.label();
                let undo = f.fault.undo_plan(target);
                let jid = match journal.record(&f.entry.name, &label, undo) {
                    Ok(id) => id,
                    Err(e) => {
                        let msg = format!("cannot journal {label}: {}", crate::error_chain(&e));
                        states[fi].reports[ti].error = Some(msg.clone());
                        errors.push(format!("{}: {msg}", f.entry.name));
                        verdict = Verdict::Failed;
                        reason = Some(format!("injecting fault `{}` failed", f.entry.name));
                        break 'run;
                    }
                };
                match f.fault.inject(target, &ctx) {
                    Ok(inj) => {
                        let at = t0.elapsed();
                        if timing.apply_latency_ms.is_none() {
                            // The baseline phase is waiting on purpose, not latency.
                            timing.apply_latency_ms = Some(
                                cfg.command_started
                                    .elapsed()
                                    .saturating_sub(baseline)
                                    .as_secs_f64()
                                    * 1000.0,
                            );
                        }
                        if let Err(e) = journal.extend(jid, inj.late_undo()) {
                            errors.push(format!(
                                "{}: cannot journal helpers of {label}: {}",
                                f.entry.name,
                                crate::error_chain(&e)
                            ));
                        }
                        let rep = &mut states[fi].reports[ti];
                        rep.injected_at_seconds = Some(at.as_secs_f64());
                        rep.effect = inj.effect();
                        obs.event(Event::Injected {
                            fault: &f.entry.name,
                            target: &label,
                            effect: &rep.effect.summary,
                        });
                        states[fi].live.push((
                            ti,
                            Live {
                                journal_id: jid,
                                injection: inj,
                            },
                        ));
                    }
                    Err(e) => {
                        let msg = crate::error_chain(&e);
                        let _ = journal.forget(jid);
                        obs.event(Event::Failed {
                            fault: &f.entry.name,
                            target: &label,
                            error: &msg,
                        });
                        states[fi].reports[ti].error = Some(msg.clone());
                        errors.push(format!("{}: {label}: {msg}", f.entry.name));
                        verdict = Verdict::Failed;
                        reason = Some(format!("injecting fault `{}` into {label} failed; everything injected was recovered", f.entry.name));
                        break 'run;
                    }
                }
            }
        }
        // Periodic work of live injections.
        let mut active = 0;
        for (fi, f) in plan.faults.iter().enumerate() {
            let st = &mut states[fi];
            for (ti, live) in st.live.iter_mut() {
                active += 1;
                if let Err(e) = live.injection.tick() {
                    let msg = crate::error_chain(&e);
                    st.reports[*ti].error = Some(msg.clone());
                    errors.push(format!(
                        "{}: {}: {msg}",
                        f.entry.name, st.reports[*ti].label
                    ));
                    verdict = Verdict::Failed;
                    reason = Some(format!("fault `{}` failed while active", f.entry.name));
                    break 'run;
                }
                if let Err(e) = journal.extend(live.journal_id, live.injection.late_undo()) {
                    errors.push(crate::error_chain(&e));
                }
            }
        }
        if states.iter().all(|s| s.done) {
            break;
        }
        if last_tick_event.elapsed() >= Duration::from_millis(200) {
            obs.event(Event::Tick {
                elapsed,
                length,
                active,
            });
            last_tick_event = Instant::now();
        }
        std::thread::sleep(tick);
    }

    // Recover everything still live, newest fault first.
    for (fi, f) in plan.faults.iter().enumerate().rev() {
        if !states[fi].live.is_empty() {
            recover_fault(
                f,
                &mut states[fi],
                &mut journal,
                t0,
                &mut timing,
                &mut errors,
                obs,
            );
        }
        states[fi].done = true;
    }
    if let (Verdict::Aborted, Some(at)) = (verdict, stop.requested_at()) {
        timing.abort_to_recovered_ms = Some(at.elapsed().as_secs_f64() * 1000.0);
    }
    let all_recovered = journal.entries().is_empty();
    if all_recovered {
        if let Err(e) = journal.finish() {
            errors.push(crate::error_chain(&e));
        }
        if let Some(w) = watchdog {
            w.disarm();
        }
    } else {
        errors.push(format!(
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
            let s = p.wait_steady(ss.recovery.0, None);
            for (probe, why) in &s.not_steady {
                errors.push(format!(
                    "probe `{probe}` not steady {:.1}s after recovery: {why}",
                    s.waited.as_secs_f64()
                ));
            }
        }
        let results = p.stop();
        if verdict == Verdict::Completed && !results.passed() {
            verdict = Verdict::Deviated;
            reason = Some("a steady-state probe failed its tolerance".into());
        }
        steady_results = Some(results);
    }
    let mut report = finish_report(
        &plan,
        run_id,
        started_at,
        verdict,
        reason,
        states,
        errors,
        all_recovered,
        timing,
        t0.elapsed(),
    );
    report.steady_state = steady_results;
    report
}

fn recover_fault(
    f: &PlannedFault,
    st: &mut FaultState,
    journal: &mut Journal,
    t0: Instant,
    timing: &mut Timing,
    errors: &mut Vec<String>,
    obs: &mut dyn Observer,
) {
    for (ti, mut live) in std::mem::take(&mut st.live).into_iter().rev() {
        let began = Instant::now();
        let _ = live.injection.tick();
        let result = live.injection.recover();
        let took = began.elapsed().as_secs_f64() * 1000.0;
        timing.max_recover_latency_ms =
            Some(timing.max_recover_latency_ms.unwrap_or(0.0).max(took));
        let rep = &mut st.reports[ti];
        rep.effect = live.injection.effect();
        match result {
            Ok(()) => {
                rep.recovered_at_seconds = Some(t0.elapsed().as_secs_f64());
                if let Err(e) = journal.forget(live.journal_id) {
                    errors.push(crate::error_chain(&e));
                }
                obs.event(Event::Recovered {
                    fault: &f.entry.name,
                    target: &rep.label,
                    effect: &rep.effect.summary,
                });
            }
            Err(e) => {
                let msg = format!("recovery failed: {}", crate::error_chain(&e));
                obs.event(Event::Failed {
                    fault: &f.entry.name,
                    target: &rep.label,
                    error: &msg,
                });
                errors.push(format!("{}: {}: {msg}", f.entry.name, rep.label));
                rep.error = Some(msg);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn finish_report(
    plan: &Plan,
    run_id: String,
    started_at: u64,
    verdict: Verdict,
    reason: Option<String>,
    states: Vec<FaultState>,
    errors: Vec<String>,
    all_recovered: bool,
    timing: Timing,
    took: Duration,
) -> RunReport {
    let baseline = plan
        .experiment
        .spec
        .steady_state
        .as_ref()
        .map(|s| s.baseline.0)
        .unwrap_or_default();
    let verdict = if matches!(verdict, Verdict::Completed | Verdict::Deviated)
        && errors.iter().any(|e| !e.starts_with("probe `"))
    {
        Verdict::Failed
    } else {
        verdict
    };
    RunReport {
        run_id,
        experiment: plan.experiment.metadata.name.clone(),
        seed: plan.seed,
        verdict,
        reason,
        started_at_unix_ms: started_at,
        duration_seconds: took.as_secs_f64(),
        faults: plan
            .faults
            .iter()
            .zip(states)
            .map(|(f, st)| FaultReport {
                name: f.entry.name.clone(),
                kind: f.entry.spec.kind().to_string(),
                requested: f.fault.requested(),
                start_offset_seconds: (baseline + f.start).as_secs_f64(),
                planned_duration_seconds: f.duration.as_secs_f64(),
                targets: st.reports,
            })
            .collect(),
        errors,
        all_recovered,
        timing,
        steady_state: None,
    }
}
