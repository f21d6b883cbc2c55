//! [`ProbeSet`]: runs every probe of a steady state on its own thread, through the phases.
//!
//! Thread model: one OS thread per probe (`havoc-probe-<name>`), plus short-lived reader threads
//! for a command's output. Each thread samples at once when its probe becomes active (at start
//! and at every phase change that activates it), then every `interval` from the start of the
//! previous sample; samples of one probe never overlap. Threads sleep on a condition variable, so
//! a phase change or a stop wakes them immediately. Stopping waits for the samples in flight: at
//! most the longest HTTP/TCP/Prometheus timeout (a running command is killed at once).
//!
//! The breach callback runs on the probe's thread, outside every lock, at most once per probe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::{self, Check};
use crate::spec::{Abort, Phase, ProbeMode, SteadyState, Tolerance};
use crate::tolerance::{evaluate, BreachRule, Sample, Stats};
use crate::ProbeError;

/// Called with (probe name, reason) when a probe of `abort.when` breaches.
pub type BreachCallback = Box<dyn Fn(&str, &str) + Send + Sync>;

/// The most recent samples `wait_steady` requires to pass (fewer when the recovery time does not
/// fit that many intervals, but at least one).
pub const STEADY_SAMPLES: usize = 3;

/// The running probes of one experiment. Dropping it stops them (without results).
pub struct ProbeSet {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ProbeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeSet")
            .field(
                "probes",
                &self
                    .shared
                    .probes
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>(),
            )
            .field("phase", &self.phase())
            .finish()
    }
}

struct ProbeInfo {
    name: String,
    kind: &'static str,
    mode: ProbeMode,
    interval: Duration,
    tolerance: Tolerance,
    /// Some for probes in `abort.when`.
    breach: Option<BreachRule>,
}

struct Shared {
    origin: Instant,
    probes: Vec<ProbeInfo>,
    on_breach: BreachCallback,
    /// Mirrors `State::stopped` for checks that poll it without the lock.
    stopping: AtomicBool,
    state: Mutex<State>,
    /// Phase changes and stop.
    changed: Condvar,
    /// A sample was recorded.
    sampled: Condvar,
}

struct State {
    stopped: bool,
    phase: Phase,
    generation: u64,
    spans: Vec<PhaseSpan>,
    series: Vec<Vec<Sample>>,
    breaches: Vec<Breach>,
    breached: Vec<bool>,
    /// Per probe: the outcome of the last `wait_steady` (seconds since origin when it was steady),
    /// None if `wait_steady` never judged it.
    steady: Vec<Option<Result<f64, String>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_seconds(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}

/// A phase as it happened, in seconds since the clock origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseSpan {
    pub phase: Phase,
    pub start_seconds: f64,
    /// None while the phase is current.
    pub end_seconds: Option<f64>,
}

/// A probe breach, as passed to the callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Breach {
    pub probe: String,
    pub phase: Phase,
    pub t_seconds: f64,
    pub reason: String,
}

/// Every sample of one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSeries {
    pub probe: String,
    /// `http`, `tcp`, `cmd` or `prometheus`.
    pub kind: String,
    pub mode: ProbeMode,
    pub interval_ms: f64,
    pub samples: Vec<Sample>,
}

/// A probe's verdict in one phase.
///
/// Baseline and chaos: the tolerance over all of the phase's samples. Recovery: whether the probe
/// became steady again within `steadyState.recovery` (as judged by [`ProbeSet::wait_steady`]; the
/// tolerance over all recovery samples if it was never called); the statistics cover all recovery
/// samples either way.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub probe: String,
    pub phase: Phase,
    pub pass: bool,
    pub samples: usize,
    pub success_ratio: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub reason: String,
}

/// Everything the probes saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResults {
    pub phases: Vec<PhaseSpan>,
    pub probes: Vec<ProbeSeries>,
    /// One per probe per phase the run entered and the probe was active in.
    pub verdicts: Vec<Verdict>,
    pub breaches: Vec<Breach>,
}

impl ProbeResults {
    /// True if every verdict passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }

    pub fn verdict(&self, probe: &str, phase: Phase) -> Option<&Verdict> {
        self.verdicts
            .iter()
            .find(|v| v.probe == probe && v.phase == phase)
    }

    pub fn series(&self, probe: &str) -> Option<&ProbeSeries> {
        self.probes.iter().find(|s| s.probe == probe)
    }
}

/// What [`ProbeSet::wait_steady`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Steadiness {
    pub steady: bool,
    pub waited: Duration,
    /// (probe, why) for each probe that was not steady when the wait ended.
    pub not_steady: Vec<(String, String)>,
}

/// The samples at the end of `series` taken in `phase`, at most `max`.
fn tail_in(series: &[Sample], phase: Phase, max: usize) -> &[Sample] {
    let n = series
        .iter()
        .rev()
        .take(max)
        .take_while(|s| s.phase == phase)
        .count();
    &series[series.len() - n..]
}

impl ProbeSet {
    /// Starts every probe of `steady`; those named in `abort.when` call `on_breach` when they
    /// breach (see [`BreachRule`]) in the baseline or chaos phase.
    ///
    /// The run begins in [`Phase::Baseline`] if `steady.baseline` is greater than 0, else in
    /// [`Phase::Chaos`]. Sample times are seconds since `clock_origin`. `steady` and `abort` must
    /// have passed validation.
    pub fn start(
        steady: &SteadyState,
        abort: Option<&Abort>,
        clock_origin: Instant,
        on_breach: BreachCallback,
    ) -> Result<ProbeSet, ProbeError> {
        let watched: Vec<&str> = abort
            .map(|a| a.when.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for name in &watched {
            if steady.probe(name).is_none() {
                return Err(ProbeError::UnknownAbortProbe {
                    name: name.to_string(),
                });
            }
        }
        let mut checks: Vec<Box<dyn Check>> = Vec::new();
        let mut probes = Vec::new();
        for p in &steady.probes {
            checks.push(check::build(p)?);
            probes.push(ProbeInfo {
                name: p.name.clone(),
                kind: p.check().map_or("none", |c| c.kind()),
                mode: p.mode,
                interval: p.interval.0,
                tolerance: p.tolerance.clone(),
                breach: watched
                    .contains(&p.name.as_str())
                    .then(|| BreachRule::new(&p.tolerance)),
            });
        }
        let phase = if steady.baseline.0.is_zero() {
            Phase::Chaos
        } else {
            Phase::Baseline
        };
        let n = probes.len();
        let shared = Arc::new(Shared {
            origin: clock_origin,
            probes,
            on_breach,
            stopping: AtomicBool::new(false),
            state: Mutex::new(State {
                stopped: false,
                phase,
                generation: 0,
                spans: Vec::new(),
                series: vec![Vec::new(); n],
                breaches: Vec::new(),
                breached: vec![false; n],
                steady: vec![None; n],
            }),
            changed: Condvar::new(),
            sampled: Condvar::new(),
        });
        shared.lock().spans.push(PhaseSpan {
            phase,
            start_seconds: shared.now_seconds(),
            end_seconds: None,
        });
        let mut set = ProbeSet {
            shared,
            threads: Vec::new(),
        };
        for (idx, check) in checks.into_iter().enumerate() {
            let shared = Arc::clone(&set.shared);
            let name = set.shared.probes[idx].name.clone();
            let handle = std::thread::Builder::new()
                .name(format!("havoc-probe-{name}"))
                .spawn(move || probe_loop(&shared, idx, check))
                .map_err(|source| ProbeError::Spawn {
                    probe: name.clone(),
                    source,
                })?; // `set` is dropped on error, stopping the threads already started.
            set.threads.push(handle);
        }
        Ok(set)
    }

    /// Moves the run to `phase`; samples started from now on are tagged with it. Probes that
    /// become active sample at once.
    pub fn set_phase(&self, phase: Phase) {
        let mut st = self.shared.lock();
        if st.phase == phase {
            return;
        }
        let now = self.shared.now_seconds();
        if let Some(last) = st.spans.last_mut() {
            last.end_seconds = Some(now);
        }
        st.spans.push(PhaseSpan {
            phase,
            start_seconds: now,
            end_seconds: None,
        });
        st.phase = phase;
        st.generation += 1;
        tracing::debug!(phase = %phase, "probe phase");
        drop(st);
        self.shared.changed.notify_all();
    }

    pub fn phase(&self) -> Phase {
        self.shared.lock().phase
    }

    /// The samples recorded since the last call, for a live view: `seen[i]` is how many of probe
    /// `i`'s samples the caller already has (start with an empty `Vec`; it is sized here).
    /// Returned in order per probe, as (probe name, sample).
    pub fn new_samples(&self, seen: &mut Vec<usize>) -> Vec<(&str, Sample)> {
        let st = self.shared.lock();
        seen.resize(st.series.len(), 0);
        let mut out = Vec::new();
        for (idx, series) in st.series.iter().enumerate() {
            let from = seen[idx].min(series.len());
            let name = self.shared.probes[idx].name.as_str();
            out.extend(series[from..].iter().map(|s| (name, s.clone())));
            seen[idx] = series.len();
        }
        out
    }

    /// Enters [`Phase::Recovery`] (if not already there) and waits until every probe active in it
    /// is steady again, or `within` (normally `steadyState.recovery`) has passed, or `cancel` is
    /// set. A probe is steady when its tolerance holds over its last `k` samples, all taken in
    /// the recovery phase, with `k` = [`STEADY_SAMPLES`], or fewer if `within` holds fewer
    /// intervals (at least 1).
    pub fn wait_steady(&self, within: Duration, cancel: Option<&AtomicBool>) -> Steadiness {
        self.set_phase(Phase::Recovery);
        let begun = Instant::now();
        let deadline = begun + within;
        let mut st = self.shared.lock();
        loop {
            let mut not_steady = Vec::new();
            for (idx, info) in self.shared.probes.iter().enumerate() {
                if !info.mode.active_in(Phase::Recovery) {
                    continue;
                }
                if matches!(st.steady[idx], Some(Ok(_))) {
                    continue;
                }
                let fits = (within.as_secs_f64() / info.interval.as_secs_f64()).floor() as usize;
                let need = fits.clamp(1, STEADY_SAMPLES);
                let recent = tail_in(&st.series[idx], Phase::Recovery, need);
                let why = if recent.len() < need {
                    Some(format!(
                        "{} of {need} samples taken since recovery began",
                        recent.len()
                    ))
                } else {
                    let (pass, why) = evaluate(&info.tolerance, &Stats::of(recent));
                    (!pass).then(|| format!("over its last {need} samples: {why}"))
                };
                match why {
                    None => st.steady[idx] = Some(Ok(self.shared.now_seconds())),
                    Some(why) => {
                        st.steady[idx] = Some(Err(why.clone()));
                        not_steady.push((info.name.clone(), why));
                    }
                }
            }
            let now = Instant::now();
            let cancelled = cancel.is_some_and(|c| c.load(Ordering::Relaxed));
            if not_steady.is_empty() || now >= deadline || cancelled || st.stopped {
                return Steadiness {
                    steady: not_steady.is_empty(),
                    waited: now - begun,
                    not_steady,
                };
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            st = self
                .shared
                .sampled
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops every probe (waiting for samples in flight) and returns what they saw.
    pub fn stop(mut self) -> ProbeResults {
        self.halt();
        let shared = &self.shared;
        let mut st = shared.lock();
        let end = shared.now_seconds();
        if let Some(last) = st.spans.last_mut() {
            last.end_seconds.get_or_insert(end);
        }
        let mut entered: Vec<Phase> = Vec::new();
        for span in &st.spans {
            if !entered.contains(&span.phase) {
                entered.push(span.phase);
            }
        }
        entered.sort();
        let mut verdicts = Vec::new();
        for phase in entered {
            for (idx, info) in shared.probes.iter().enumerate() {
                if !info.mode.active_in(phase) {
                    continue;
                }
                let samples: Vec<&Sample> =
                    st.series[idx].iter().filter(|s| s.phase == phase).collect();
                let stats = Stats::of(samples.iter().copied());
                let (pass, reason) = match (phase, &st.steady[idx]) {
                    (Phase::Recovery, Some(Ok(t))) => {
                        let since = st
                            .spans
                            .iter()
                            .find(|s| s.phase == Phase::Recovery)
                            .map_or(0.0, |s| s.start_seconds);
                        (
                            true,
                            format!(
                                "steady again {:.2}s after recovery began ({} samples in recovery)",
                                (t - since).max(0.0),
                                stats.samples
                            ),
                        )
                    }
                    (Phase::Recovery, Some(Err(why))) => {
                        (false, format!("not steady within the recovery time: {why}"))
                    }
                    _ => evaluate(&info.tolerance, &stats),
                };
                verdicts.push(Verdict {
                    probe: info.name.clone(),
                    phase,
                    pass,
                    samples: stats.samples,
                    success_ratio: stats.success_ratio,
                    latency_p50_ms: stats.latency_p50_ms,
                    latency_p99_ms: stats.latency_p99_ms,
                    value_min: stats.value_min,
                    value_max: stats.value_max,
                    reason,
                });
            }
        }
        let probes = shared
            .probes
            .iter()
            .zip(st.series.iter_mut())
            .map(|(info, series)| ProbeSeries {
                probe: info.name.clone(),
                kind: info.kind.to_string(),
                mode: info.mode,
                interval_ms: info.interval.as_secs_f64() * 1000.0,
                samples: std::mem::take(series),
            })
            .collect();
        ProbeResults {
            phases: st.spans.clone(),
            probes,
            verdicts,
            breaches: st.breaches.clone(),
        }
    }

    fn halt(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopped = true;
            self.shared.stopping.store(true, Ordering::Relaxed);
        }
        self.shared.changed.notify_all();
        self.shared.sampled.notify_all();
        for t in self.threads.drain(..) {
            // A probe thread only panics on a bug; its samples so far are kept.
            let _ = t.join();
        }
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        self.halt();
    }
}

fn probe_loop(shared: &Shared, idx: usize, mut check: Box<dyn Check>) {
    let info = &shared.probes[idx];
    loop {
        // Wait until the probe is active in the current phase.
        let (phase, generation) = {
            let mut st = shared.lock();
            loop {
                if st.stopped {
                    return;
                }
                if info.mode.active_in(st.phase) {
                    break (st.phase, st.generation);
                }
                st = shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let started = Instant::now();
        let t_seconds = started.duration_since(shared.origin).as_secs_f64();
        let outcome = check.sample(&shared.stopping);
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let sample = Sample {
            t_seconds,
            phase,
            ok: outcome.ok,
            latency_ms,
            value: outcome.value,
            error: outcome.error,
        };
        if !sample.ok {
            tracing::debug!(probe = %info.name, %phase, latency_ms, error = sample.error.as_deref().unwrap_or_default(), "probe sample failed");
        }
        let breach = {
            let mut st = shared.lock();
            st.series[idx].push(sample);
            let mut breach = None;
            if let Some(rule) = &info.breach {
                let current = st.phase;
                if !st.breached[idx] && current == phase && phase != Phase::Recovery {
                    let recent = tail_in(&st.series[idx], phase, rule.window);
                    if let Some(reason) = rule.check(&info.name, recent) {
                        st.breached[idx] = true;
                        st.breaches.push(Breach {
                            probe: info.name.clone(),
                            phase,
                            t_seconds: shared.now_seconds(),
                            reason: reason.clone(),
                        });
                        breach = Some(reason);
                    }
                }
            }
            breach
        };
        shared.sampled.notify_all();
        if let Some(reason) = breach {
            tracing::warn!(probe = %info.name, %phase, %reason, "steady-state probe breached");
            (shared.on_breach)(&info.name, &reason);
        }
        // Sleep until the next sample is due, the phase changes, or the set stops.
        let due = started + info.interval;
        let mut st = shared.lock();
        loop {
            if st.stopped {
                return;
            }
            if st.generation != generation {
                break;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            st = shared
                .changed
                .wait_timeout(st, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
