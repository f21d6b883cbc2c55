//! The reconcile decision as a pure function: what to do next for one chaos object.
//!
//! [`decide`] looks at the object (its spec as [`Spec`], its targets and experiment clock from
//! status, its annotations and deletion), the live state of the targeted pods and `now`, and
//! returns [`Step`]s for the thin kube glue in [`crate::controller`] to carry out in order. Every
//! rule of the lifecycle lives here and is unit-tested without an API server: selection once,
//! injection, lease renewal, each target's own duration (requeued at exactly the next target's
//! end), pause and resume with each target's remaining time, re-injection of restarted
//! containers, vanished targets counted as recovered with a reason, forced cleanup.
//!
//! # Each target has its own clock
//!
//! A fault's duration counts from the moment it came into effect on that target
//! ([`Target::since`], measured when its injection succeeded), not from the experiment's start:
//! 1,000 pods injected with bounded parallelism, or a container that starts late, each get the
//! whole duration. A pause takes every fault off and banks each target's active time in
//! [`Target::served`]; on resume each gets what it has left. A target injected again after its
//! container restarted (or its pod was replaced under the same name) continues its own clock:
//! it is recovered when its first injection's duration is over, as if the fault had stayed on
//! (the restart does not buy it a fresh duration, which could otherwise hold an experiment open
//! forever on a crash-looping pod).
//!
//! Targets are injected while the experiment's injection window is open: until some target
//! has served the whole duration (pauses excluded), or the duration has passed since the start
//! when none has come into effect yet. A target not in effect when the window closes (its
//! container never started, its agent never answered) is given up with the reason
//! [`NOT_INJECTED`]. The experiment finishes when every target has served its duration, is gone
//! or was given up; status then shows the measured end (the last recovery).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Annotation that pauses an experiment while it is `"true"`.
pub const PAUSE_ANNOTATION: &str = "havoc.dev/pause";
/// Annotation that lets deletion finish even when some target cannot be recovered.
pub const FORCE_CLEANUP_ANNOTATION: &str = "havoc.dev/force-cleanup";
/// The finalizer on every chaos object.
pub const FINALIZER: &str = "havoc.dev/recover";

/// Reason recorded for a target whose pod was deleted.
pub const POD_DELETED: &str = "pod deleted";
/// Reason recorded for a target whose node is gone.
pub const NODE_GONE: &str = "node gone";
/// Reason recorded for a target that never came into effect before the injection window closed.
pub const NOT_INJECTED: &str = "not injected before the experiment's injection window closed";

/// How the action behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Done once, nothing to recover (pod-kill, container-kill).
    OneShot,
    /// Held by the operator through the API until recovery (pod-failure).
    Held,
    /// Held by the agent under a lease the operator renews (node-level faults).
    Leased,
}

/// What the decision needs of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// How long the fault is held; `None`: until the object is deleted (ignored for one-shots).
    pub duration: Option<Duration>,
    /// How the action behaves over time.
    pub kind: ActionKind,
    /// Lease ttl of agent injections.
    pub lease_ttl: Duration,
}

/// One target: a pod, or one container of a pod for container-level actions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetId {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The key matching the target to its live pod (`namespace/name` in the controller).
    pub pod_uid: String,
    /// Container name; empty for pod-level targets.
    pub container: String,
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Selected, not injected yet.
    Pending,
    /// The fault is on it.
    Injected,
    /// The fault was removed (or the target vanished: see the reason).
    Recovered,
    /// The last attempt failed; retried.
    Failed,
    /// The pod vanished (deleted, its node gone) with the fault on it. Its clock runs on to its
    /// end: a pod back under the same name is injected for the rest of the target's time.
    Gone,
}

/// One target as recorded in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which target.
    pub id: TargetId,
    /// Node the pod ran on when selected.
    pub node: String,
    /// Container id at the last injection (restarts change it).
    pub container_id: String,
    /// Current phase.
    pub phase: Phase,
    /// When the target's current period in effect began: `None` while its fault is off by
    /// design (never injected, or taken off by a pause). Still set after a container restart,
    /// a lost lease or a vanished pod: the clock runs on until the target's end.
    pub since: Option<SystemTime>,
    /// Active time served in earlier periods (before a pause; once recovered, in all).
    pub served: Duration,
}

/// The live state of a targeted pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePod {
    /// Node it is bound to.
    pub node: String,
    /// Whether that node still exists.
    pub node_exists: bool,
    /// container name -> current container id (`containerd://...`), for started containers.
    pub containers: BTreeMap<String, String>,
}

/// The experiment's clock, kept in status (each target's own clock is on its [`Target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    /// When the experiment started (whole seconds: status keeps `startedAt` to the second, and
    /// records count their own clocks in milliseconds from it).
    pub started: Option<SystemTime>,
    /// When the current pause began.
    pub paused_at: Option<SystemTime>,
    /// When the experiment finished (every target served, one-shot done).
    pub finished: Option<SystemTime>,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The time of this reconcile.
    pub now: SystemTime,
    /// What the spec asks.
    pub spec: Spec,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The pause annotation is `"true"`.
    pub pause: bool,
    /// The force-cleanup annotation is `"true"`.
    pub force_cleanup: bool,
    /// Whether targets were selected already (status says so).
    pub selected: bool,
    /// The recorded targets.
    pub targets: &'a [Target],
    /// Clock from status.
    pub clock: Clock,
    /// Live pods by [`TargetId::pod_uid`]; a recorded pod missing here no longer exists.
    pub live: &'a BTreeMap<String, LivePod>,
}

/// The experiment's phase, shown in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentPhase {
    /// Not selected yet.
    Selecting,
    /// Faults are on.
    Running,
    /// Paused by annotation: faults off.
    Paused,
    /// Duration over or one-shot done: faults off.
    Finished,
    /// Being deleted: recovering.
    Deleting,
}

impl ExperimentPhase {
    /// The name used in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentPhase::Selecting => "Selecting",
            ExperimentPhase::Running => "Running",
            ExperimentPhase::Paused => "Paused",
            ExperimentPhase::Finished => "Finished",
            ExperimentPhase::Deleting => "Deleting",
        }
    }
}

/// One thing to do. The glue carries steps out in order and stops at the first failure (except
/// under forced cleanup), so a later step can rely on the earlier ones having succeeded.
/// Consecutive `Inject` steps, and consecutive `Recover` steps, are one batch each, run
/// concurrently (bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Select targets, record them as Pending, then decide again.
    Select,
    /// Apply the action to a target (with this container id for container-level ones).
    Inject { id: TargetId, container_id: String },
    /// Renew the leases of every agent injection of this object.
    RenewLeases,
    /// Remove the fault from a target, then record it in phase `then` (Pending while paused, so
    /// it is injected again on resume; Recovered otherwise). With `best_effort` (forced cleanup)
    /// a failure is recorded and the next steps still run.
    Recover {
        id: TargetId,
        then: Phase,
        best_effort: bool,
    },
    /// The target vanished: record it as recovered with `reason`.
    MarkGone { id: TargetId, reason: &'static str },
    /// Write this clock to status.
    SetClock(Clock),
    /// Set the experiment phase (status, metrics).
    SetPhase(ExperimentPhase),
    /// Emit a Kubernetes Event.
    Event {
        reason: &'static str,
        message: String,
    },
    /// Let the deletion finish.
    RemoveFinalizer,
    /// Reconcile again after this long (otherwise: on the next change).
    RequeueAfter(Duration),
}

impl Target {
    /// Whether the target's clock runs: its fault came into effect and it is not recovered.
    pub fn in_effect(&self) -> bool {
        self.since.is_some() && self.phase != Phase::Recovered
    }

    /// Active time served by `now`.
    pub fn served_by(&self, now: SystemTime) -> Duration {
        match self.since {
            Some(s) if self.in_effect() => self.served + now.duration_since(s).unwrap_or_default(),
            _ => self.served,
        }
    }
}

/// When `t` is due for recovery: its period in effect began at `since`, plus what remains of
/// the duration. `None` without a duration or while its clock does not run.
pub fn target_end(spec: &Spec, t: &Target) -> Option<SystemTime> {
    if !t.in_effect() {
        return None;
    }
    Some(t.since? + spec.duration?.saturating_sub(t.served))
}

/// The latest end of the targets in effect: the experiment's planned end as it stands (status
/// `endsAt` while running).
pub fn planned_end(spec: &Spec, targets: &[Target]) -> Option<SystemTime> {
    targets.iter().filter_map(|t| target_end(spec, t)).max()
}

/// `t` rounded down to the whole second.
pub fn whole_second(t: SystemTime) -> SystemTime {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs())
}

/// Whether targets not yet in effect may still be injected: no target has served the whole
/// duration yet (or, when none ever came into effect, the duration has not passed since the
/// start). Always open without a duration.
fn window_open(o: &Observed<'_>, started: SystemTime) -> bool {
    let Some(d) = o.spec.duration else {
        return true;
    };
    let ever = o
        .targets
        .iter()
        .any(|t| t.since.is_some() || !t.served.is_zero());
    if ever {
        !o.targets.iter().any(|t| t.served_by(o.now) >= d)
    } else {
        o.now < started + d
    }
}

fn vanished(t: &Target, live: &BTreeMap<String, LivePod>) -> Option<&'static str> {
    match live.get(&t.id.pod_uid) {
        None => Some(POD_DELETED),
        Some(p) if !p.node_exists => Some(NODE_GONE),
        Some(_) => None,
    }
}

fn needs_recovery(t: &Target) -> bool {
    matches!(t.phase, Phase::Injected | Phase::Failed)
}

/// Steps that take every fault off (recover live targets, mark vanished ones).
fn recover_all(o: &Observed<'_>, then: Phase, steps: &mut Vec<Step>) -> usize {
    let mut n = 0;
    if o.spec.kind == ActionKind::OneShot {
        return 0;
    }
    for t in o.targets.iter().filter(|t| needs_recovery(t)) {
        n += 1;
        match vanished(t, o.live) {
            Some(reason) => steps.push(Step::MarkGone {
                id: t.id.clone(),
                reason,
            }),
            None => steps.push(Step::Recover {
                id: t.id.clone(),
                then,
                best_effort: o.deleting && o.force_cleanup,
            }),
        }
    }
    n
}

/// The reconcile decision. Pure: same input, same steps.
pub fn decide(o: &Observed<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    if o.deleting {
        steps.push(Step::SetPhase(ExperimentPhase::Deleting));
        recover_all(o, Phase::Recovered, &mut steps);
        steps.push(Step::RemoveFinalizer);
        return steps;
    }
    if !o.selected {
        steps.push(Step::Select);
        return steps;
    }
    if o.clock.finished.is_some() {
        steps.push(Step::SetPhase(ExperimentPhase::Finished));
        return steps;
    }
    let mut clock = o.clock;
    // Pause and resume.
    if o.pause {
        if clock.paused_at.is_none() {
            recover_all(o, Phase::Pending, &mut steps);
            clock.paused_at = Some(o.now);
            steps.push(Step::SetClock(clock));
            steps.push(Step::Event {
                reason: "Paused",
                message: format!("paused by annotation {PAUSE_ANNOTATION}"),
            });
        }
        steps.push(Step::SetPhase(ExperimentPhase::Paused));
        return steps;
    }
    if clock.paused_at.take().is_some() {
        steps.push(Step::SetClock(clock));
        steps.push(Step::Event {
            reason: "Resumed",
            message: resumed_message(o),
        });
    }
    let started = match clock.started {
        Some(s) => s,
        None => {
            let s = whole_second(o.now);
            clock.started = Some(s);
            steps.push(Step::SetClock(clock));
            s
        }
    };
    if o.spec.kind == ActionKind::OneShot {
        steps.extend(injections(o));
        clock.finished = Some(o.now);
        steps.push(Step::SetClock(clock));
        steps.push(Step::SetPhase(ExperimentPhase::Finished));
        return steps;
    }
    let open = window_open(o, started);
    let duration = o.spec.duration;
    // Each target on its own clock: recover the ones whose time is over, give up on the ones
    // the window closed on, inject (or re-inject) the rest.
    let mut done = 0usize;
    let mut recovered_now = 0usize;
    let mut next: Option<SystemTime> = None;
    let mut soonest = |at: SystemTime| next = Some(next.map_or(at, |n: SystemTime| n.min(at)));
    let mut ending = Vec::new();
    let mut to_inject = Vec::new();
    for t in o.targets {
        if t.phase == Phase::Recovered {
            done += 1;
            continue;
        }
        let over = match (target_end(&o.spec, t), duration) {
            (Some(end), _) if o.now >= end => true,
            (Some(end), _) => {
                soonest(end);
                false
            }
            // Taken off by a pause right at its end: nothing left to serve.
            (None, Some(d)) => !t.served.is_zero() && t.served >= d,
            (None, None) => false,
        };
        if let Some(reason) = vanished(t, o.live) {
            if t.phase != Phase::Gone {
                ending.push(Step::MarkGone {
                    id: t.id.clone(),
                    reason,
                });
            }
            // One in effect keeps its clock: a pod back under the same name is injected until
            // the target's time is over.
            if over || !t.in_effect() {
                done += 1;
            }
            continue;
        }
        if over {
            ending.push(Step::Recover {
                id: t.id.clone(),
                then: Phase::Recovered,
                best_effort: false,
            });
            recovered_now += 1;
            done += 1;
            continue;
        }
        if t.phase == Phase::Gone && !t.in_effect() {
            done += 1;
            continue;
        }
        if duration.is_some() && !open && !t.in_effect() {
            ending.push(Step::MarkGone {
                id: t.id.clone(),
                reason: NOT_INJECTED,
            });
            done += 1;
            continue;
        }
        if let Some(inject) = injection(o, t) {
            if !t.in_effect() {
                // Comes into effect a little after now; the next reconcile requeues exactly.
                if let Some(d) = duration {
                    soonest(o.now + d.saturating_sub(t.served));
                }
            }
            to_inject.push(inject);
        }
    }
    let finished =
        duration.is_some() && done == o.targets.len() && (!o.targets.is_empty() || !open);
    steps.extend(ending);
    if finished {
        clock.finished = Some(o.now);
        steps.push(Step::SetClock(clock));
        steps.push(Step::SetPhase(ExperimentPhase::Finished));
        let held = o
            .targets
            .iter()
            .filter(|t| t.phase == Phase::Recovered && vanished(t, o.live).is_none())
            .count()
            + recovered_now;
        steps.push(Step::Event {
            reason: "Recovered",
            message: format!("every target served its duration: recovered {held} target(s)"),
        });
        return steps;
    }
    steps.extend(to_inject);
    steps.push(Step::SetPhase(ExperimentPhase::Running));
    if let Some(d) = duration {
        let ever = o
            .targets
            .iter()
            .any(|t| t.since.is_some() || !t.served.is_zero());
        if open && !ever {
            // Nothing in effect yet: the window closes the duration after the start.
            soonest(started + d);
        }
    }
    let mut next: Option<Duration> = next.map(|e| e.duration_since(o.now).unwrap_or_default());
    if o.spec.kind == ActionKind::Leased {
        steps.push(Step::RenewLeases);
        let renew = (o.spec.lease_ttl / 3).max(Duration::from_secs(1));
        next = Some(next.map_or(renew, |n| n.min(renew)));
    }
    if let Some(d) = next {
        steps.push(Step::RequeueAfter(d));
    }
    steps
}

/// The Inject step for `t`, if it needs one: not injected yet (or failed), or injected into a
/// container that has since restarted. `None` also when its container has not started.
fn injection(o: &Observed<'_>, t: &Target) -> Option<Step> {
    let live = o.live.get(&t.id.pod_uid)?;
    let current = if t.id.container.is_empty() {
        String::new()
    } else {
        // Not started (yet): nothing to hit; try again later.
        live.containers.get(&t.id.container)?.clone()
    };
    let restarted = o.spec.kind != ActionKind::OneShot
        && t.phase == Phase::Injected
        && !t.id.container.is_empty()
        // Status keeps the short form of the id (`crictl`'s 12 digits), the pod the full one.
        && havoc_k8s::status::short_container_id(&current)
            != havoc_k8s::status::short_container_id(&t.container_id);
    match t.phase {
        // Gone: the pod is back under the same name while the target's clock runs.
        Phase::Pending | Phase::Failed | Phase::Gone => Some(Step::Inject {
            id: t.id.clone(),
            container_id: current,
        }),
        Phase::Injected if restarted => Some(Step::Inject {
            id: t.id.clone(),
            container_id: current,
        }),
        Phase::Injected | Phase::Recovered => None,
    }
}

/// One-shot actions: inject what is not injected, mark vanished targets.
fn injections(o: &Observed<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in o.targets {
        if let Some(reason) = vanished(t, o.live) {
            if !matches!(t.phase, Phase::Recovered | Phase::Gone) {
                steps.push(Step::MarkGone {
                    id: t.id.clone(),
                    reason,
                });
            }
            continue;
        }
        steps.extend(injection(o, t));
    }
    steps
}

/// What the Resumed event says: each target gets what it has left of the duration.
fn resumed_message(o: &Observed<'_>) -> String {
    let Some(d) = o
        .spec
        .duration
        .filter(|_| o.spec.kind != ActionKind::OneShot)
    else {
        return "resumed".to_string();
    };
    let left: Vec<Duration> = o
        .targets
        .iter()
        .filter(|t| !matches!(t.phase, Phase::Recovered | Phase::Gone))
        .filter(|t| vanished(t, o.live).is_none())
        .map(|t| d.saturating_sub(t.served_by(o.now)))
        .collect();
    match (left.iter().min(), left.iter().max()) {
        (Some(lo), Some(hi)) if humanize(*lo) == humanize(*hi) => {
            format!("resumed for the remaining {}", humanize(*hi))
        }
        (Some(lo), Some(hi)) => format!(
            "resumed: each target for what it has left, {} to {}",
            humanize(*lo),
            humanize(*hi)
        ),
        _ => "resumed".to_string(),
    }
}

fn humanize(d: Duration) -> String {
    humantime_like(d.as_secs())
}

fn humantime_like(s: u64) -> String {
    if s >= 3600 {
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Per-object exponential backoff for failed reconciles: 1 s, 2 s, 4 s, ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn spec(kind: ActionKind, secs: Option<u64>) -> Spec {
        Spec {
            duration: secs.map(Duration::from_secs),
            kind,
            lease_ttl: Duration::from_secs(30),
        }
    }

    fn target(pod: &str, container: &str, cid: &str, phase: Phase) -> Target {
        Target {
            id: TargetId {
                namespace: "app".into(),
                pod: pod.into(),
                pod_uid: format!("uid-{pod}"),
                container: container.into(),
            },
            node: "n1".into(),
            container_id: cid.into(),
            phase,
            // Injected ones came into effect at the start unless a test says otherwise.
            since: (phase == Phase::Injected).then(|| at(0)),
            served: Duration::ZERO,
        }
    }

    fn at_ms(ms: u64) -> SystemTime {
        at(0) + Duration::from_millis(ms)
    }

    /// `t` in effect since `since_ms` after the start, having served `served_ms` before.
    fn clocked(mut t: Target, since_ms: Option<u64>, served_ms: u64) -> Target {
        t.since = since_ms.map(at_ms);
        t.served = Duration::from_millis(served_ms);
        t
    }

    fn observed_ms<'a>(
        s: Spec,
        now_ms: u64,
        targets: &'a [Target],
        live: &'a BTreeMap<String, LivePod>,
        clock: Clock,
    ) -> Observed<'a> {
        let mut o = observed(s, 0, targets, live, clock);
        o.now = at_ms(now_ms);
        o
    }

    fn recovers(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Recover { id, then, .. } => Some(format!("{}:{then:?}", id.pod)),
                _ => None,
            })
            .collect()
    }

    fn injects(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Inject { id, .. } => Some(id.pod.clone()),
                _ => None,
            })
            .collect()
    }

    fn requeue(steps: &[Step]) -> Option<Duration> {
        steps.iter().find_map(|s| match s {
            Step::RequeueAfter(d) => Some(*d),
            _ => None,
        })
    }

    fn finished(steps: &[Step]) -> bool {
        steps.contains(&Step::SetPhase(ExperimentPhase::Finished))
    }

    fn live(pods: &[(&str, &str, &str)]) -> BTreeMap<String, LivePod> {
        pods.iter()
            .map(|(pod, c, cid)| {
                (
                    format!("uid-{pod}"),
                    LivePod {
                        node: "n1".into(),
                        node_exists: true,
                        containers: [(c.to_string(), cid.to_string())].into(),
                    },
                )
            })
            .collect()
    }

    fn observed<'a>(
        s: Spec,
        now: u64,
        targets: &'a [Target],
        live: &'a BTreeMap<String, LivePod>,
        clock: Clock,
    ) -> Observed<'a> {
        Observed {
            now: at(now),
            spec: s,
            deleting: false,
            pause: false,
            force_cleanup: false,
            selected: true,
            targets,
            clock,
            live,
        }
    }

    fn started(s: u64) -> Clock {
        Clock {
            started: Some(at(s)),
            ..Clock::default()
        }
    }

    fn rec(t: &Target, then: Phase, best_effort: bool) -> Step {
        Step::Recover {
            id: t.id.clone(),
            then,
            best_effort,
        }
    }

    #[test]
    fn force_cleanup_makes_deletion_recovery_best_effort() {
        let t = [target("a", "app", "c://a1", Phase::Injected)];
        let l = live(&[("a", "app", "c://a1")]);
        let mut o = observed(spec(ActionKind::Leased, None), 5, &t, &l, started(0));
        o.deleting = true;
        o.force_cleanup = true;
        assert_eq!(
            decide(&o),
            vec![
                Step::SetPhase(ExperimentPhase::Deleting),
                rec(&t[0], Phase::Recovered, true),
                Step::RemoveFinalizer,
            ]
        );
    }

    #[test]
    fn a_new_object_selects_first() {
        let l = BTreeMap::new();
        let mut o = observed(
            spec(ActionKind::Leased, Some(60)),
            0,
            &[],
            &l,
            Clock::default(),
        );
        o.selected = false;
        assert_eq!(decide(&o), vec![Step::Select]);
    }

    #[test]
    fn selected_targets_are_all_injected_and_the_run_starts() {
        let t = [
            target("a", "app", "", Phase::Pending),
            target("b", "app", "", Phase::Pending),
        ];
        let l = live(&[("a", "app", "c://a1"), ("b", "app", "c://b1")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, Some(60)),
            0,
            &t,
            &l,
            Clock::default(),
        ));
        assert_eq!(
            steps,
            vec![
                Step::SetClock(started(0)),
                Step::Inject {
                    id: t[0].id.clone(),
                    container_id: "c://a1".into()
                },
                Step::Inject {
                    id: t[1].id.clone(),
                    container_id: "c://b1".into()
                },
                Step::SetPhase(ExperimentPhase::Running),
                Step::RenewLeases,
                Step::RequeueAfter(Duration::from_secs(10)),
            ]
        );
    }

    #[test]
    fn recovery_is_requeued_at_exactly_the_end_time() {
        let t = [target("a", "", "", Phase::Injected)];
        let l = live(&[("a", "app", "c://a1")]);
        let steps = decide(&observed(
            spec(ActionKind::Held, Some(60)),
            45,
            &t,
            &l,
            started(0),
        ));
        assert_eq!(
            steps,
            vec![
                Step::SetPhase(ExperimentPhase::Running),
                Step::RequeueAfter(Duration::from_secs(15))
            ]
        );
    }

    #[test]
    fn duration_end_recovers_all_and_finishes() {
        let t = [
            target("a", "app", "c://a1", Phase::Injected),
            target("b", "app", "c://b1", Phase::Injected),
        ];
        let l = live(&[("a", "app", "c://a1"), ("b", "app", "c://b1")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, Some(60)),
            60,
            &t,
            &l,
            started(0),
        ));
        let mut finished = started(0);
        finished.finished = Some(at(60));
        assert_eq!(
            steps,
            vec![
                rec(&t[0], Phase::Recovered, false),
                rec(&t[1], Phase::Recovered, false),
                Step::SetClock(finished),
                Step::SetPhase(ExperimentPhase::Finished),
                Step::Event {
                    reason: "Recovered",
                    message: "every target served its duration: recovered 2 target(s)".into()
                },
            ]
        );
        // Once finished, nothing more happens.
        let o = observed(spec(ActionKind::Leased, Some(60)), 61, &t, &l, finished);
        assert_eq!(decide(&o), vec![Step::SetPhase(ExperimentPhase::Finished)]);
    }

    #[test]
    fn pause_recovers_all_and_resume_runs_for_the_remaining_time() {
        let t = [target("a", "app", "c://a1", Phase::Injected)];
        let l = live(&[("a", "app", "c://a1")]);
        let s = spec(ActionKind::Leased, Some(60));
        let mut o = observed(s.clone(), 20, &t, &l, started(0));
        o.pause = true;
        let steps = decide(&o);
        let mut paused = started(0);
        paused.paused_at = Some(at(20));
        assert_eq!(steps[0], rec(&t[0], Phase::Pending, false));
        assert_eq!(steps[1], Step::SetClock(paused));
        assert!(matches!(
            steps[2],
            Step::Event {
                reason: "Paused",
                ..
            }
        ));
        assert_eq!(steps[3], Step::SetPhase(ExperimentPhase::Paused));
        assert_eq!(steps.len(), 4, "no requeue while paused: {steps:?}");

        // Still paused later: nothing to do.
        let pending = [target("a", "app", "c://a1", Phase::Pending)];
        let mut o = observed(s.clone(), 50, &pending, &l, paused);
        o.pause = true;
        assert_eq!(decide(&o), vec![Step::SetPhase(ExperimentPhase::Paused)]);

        // Resumed at 100 after 80 s paused: the target served 20 s (banked on its record by
        // the pause's recovery), 40 s remain.
        let pending = [clocked(pending[0].clone(), None, 20_000)];
        let steps = decide(&observed(s.clone(), 100, &pending, &l, paused));
        assert_eq!(steps[0], Step::SetClock(started(0)));
        assert_eq!(
            steps[1],
            Step::Event {
                reason: "Resumed",
                message: "resumed for the remaining 40s".into()
            }
        );
        assert!(steps.contains(&Step::Inject {
            id: t[0].id.clone(),
            container_id: "c://a1".into()
        }));
        // Injected again at 100.5: its end is 40 s later.
        let back = [clocked(t[0].clone(), Some(100_500), 20_000)];
        assert_eq!(planned_end(&s, &back), Some(at_ms(140_500)));
        assert_eq!(
            steps.last(),
            Some(&Step::RequeueAfter(Duration::from_secs(10)))
        );
    }

    #[test]
    fn a_recovered_target_is_not_injected_again() {
        // Pause leaves targets Pending (re-injected on resume); Recovered is final.
        let t = [target("a", "app", "c://a1", Phase::Recovered)];
        let l = live(&[("a", "app", "c://a1")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, Some(60)),
            5,
            &t,
            &l,
            started(0),
        ));
        assert!(!steps.iter().any(|s| matches!(s, Step::Inject { .. })));
    }

    #[test]
    fn a_restarted_container_is_injected_again() {
        let t = [target("a", "app", "c://old", Phase::Injected)];
        let l = live(&[("a", "app", "c://new")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, Some(60)),
            30,
            &t,
            &l,
            started(0),
        ));
        assert!(steps.contains(&Step::Inject {
            id: t[0].id.clone(),
            container_id: "c://new".into()
        }));
        // Remaining time: requeue for the lease renewal, the end is still at 60.
        assert!(steps.contains(&Step::RequeueAfter(Duration::from_secs(10))));
    }

    #[test]
    fn a_container_recorded_by_its_short_id_is_not_injected_again() {
        // Status keeps 12 digits of the id; the pod reports the full one.
        let t = [target("a", "app", "0123456789ab", Phase::Injected)];
        let l = live(&[("a", "app", "containerd://0123456789abcdef0123")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, Some(60)),
            30,
            &t,
            &l,
            started(0),
        ));
        assert!(!steps.iter().any(|s| matches!(s, Step::Inject { .. })));
        assert!(steps.contains(&Step::RenewLeases));
    }

    #[test]
    fn a_not_yet_started_container_is_skipped() {
        let t = [target("a", "sidecar", "", Phase::Pending)];
        let l = live(&[("a", "app", "c://a1")]);
        let steps = decide(&observed(
            spec(ActionKind::Leased, None),
            1,
            &t,
            &l,
            started(0),
        ));
        assert!(!steps.iter().any(|s| matches!(s, Step::Inject { .. })));
        assert!(steps.contains(&Step::RenewLeases));
    }

    #[test]
    fn vanished_targets_count_as_recovered_with_a_reason() {
        let t = [
            target("gone", "", "", Phase::Injected),
            target("lost", "", "", Phase::Injected),
        ];
        let mut l = live(&[("lost", "app", "c://x")]);
        l.get_mut("uid-lost").expect("lost").node_exists = false;
        let steps = decide(&observed(
            spec(ActionKind::Held, Some(60)),
            5,
            &t,
            &l,
            started(0),
        ));
        assert!(steps.contains(&Step::MarkGone {
            id: t[0].id.clone(),
            reason: POD_DELETED
        }));
        assert!(steps.contains(&Step::MarkGone {
            id: t[1].id.clone(),
            reason: NODE_GONE
        }));
    }

    #[test]
    fn deletion_recovers_live_targets_marks_vanished_ones_then_removes_the_finalizer() {
        let t = [
            target("a", "app", "c://a1", Phase::Injected),
            target("gone", "app", "c://g", Phase::Injected),
            target("done", "app", "c://d", Phase::Recovered),
        ];
        let l = live(&[("a", "app", "c://a1"), ("done", "app", "c://d")]);
        let mut o = observed(spec(ActionKind::Leased, Some(60)), 5, &t, &l, started(0));
        o.deleting = true;
        assert_eq!(
            decide(&o),
            vec![
                Step::SetPhase(ExperimentPhase::Deleting),
                rec(&t[0], Phase::Recovered, false),
                Step::MarkGone {
                    id: t[1].id.clone(),
                    reason: POD_DELETED
                },
                Step::RemoveFinalizer,
            ]
        );
    }

    #[test]
    fn one_shot_actions_finish_after_injecting_and_never_recover() {
        let t = [target("a", "", "", Phase::Pending)];
        let l = live(&[("a", "app", "c://a1")]);
        let steps = decide(&observed(
            spec(ActionKind::OneShot, Some(60)),
            0,
            &t,
            &l,
            Clock::default(),
        ));
        let mut done = started(0);
        done.finished = Some(at(0));
        assert_eq!(
            steps,
            vec![
                Step::SetClock(started(0)),
                Step::Inject {
                    id: t[0].id.clone(),
                    container_id: String::new()
                },
                Step::SetClock(done),
                Step::SetPhase(ExperimentPhase::Finished),
            ]
        );
        let injected = [target("a", "", "", Phase::Injected)];
        let mut o = observed(spec(ActionKind::OneShot, None), 1, &injected, &l, done);
        o.deleting = true;
        assert_eq!(
            decide(&o),
            vec![
                Step::SetPhase(ExperimentPhase::Deleting),
                Step::RemoveFinalizer
            ]
        );
    }

    #[test]
    fn staggered_injections_are_each_recovered_at_their_own_end() {
        // Injected 0.4 s and 1.2 s apart (bounded parallelism): each gets the full 60 s.
        let s = spec(ActionKind::Held, Some(60));
        let l = live(&[("a", "", ""), ("b", "", ""), ("c", "", "")]);
        let mut t = vec![
            clocked(target("a", "", "", Phase::Injected), Some(0), 0),
            clocked(target("b", "", "", Phase::Injected), Some(400), 0),
            clocked(target("c", "", "", Phase::Injected), Some(1_600), 0),
        ];
        let steps = decide(&observed_ms(s.clone(), 59_999, &t, &l, started(0)));
        assert!(
            recovers(&steps).is_empty(),
            "not a millisecond early: {steps:?}"
        );
        assert_eq!(requeue(&steps), Some(Duration::from_millis(1)));
        let steps = decide(&observed_ms(s.clone(), 60_000, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        assert!(!finished(&steps));
        assert_eq!(requeue(&steps), Some(Duration::from_millis(400)), "b's end");
        t[0].phase = Phase::Recovered;
        t[0].served = Duration::from_secs(60);
        let steps = decide(&observed_ms(s.clone(), 60_399, &t, &l, started(0)));
        assert!(recovers(&steps).is_empty(), "{steps:?}");
        let steps = decide(&observed_ms(s.clone(), 60_400, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["b:Recovered"]);
        assert_eq!(
            requeue(&steps),
            Some(Duration::from_millis(1_200)),
            "c's end"
        );
        t[1].phase = Phase::Recovered;
        let steps = decide(&observed_ms(s.clone(), 61_600, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["c:Recovered"]);
        assert!(
            finished(&steps),
            "the last target's end finishes the run: {steps:?}"
        );
        let mut done = started(0);
        done.finished = Some(at_ms(61_600));
        assert!(steps.contains(&Step::SetClock(done)));
        // The planned end while they ran was the last one's.
        let running = [
            clocked(target("a", "", "", Phase::Injected), Some(0), 0),
            clocked(target("c", "", "", Phase::Injected), Some(1_600), 0),
        ];
        assert_eq!(planned_end(&s, &running), Some(at_ms(61_600)));
    }

    #[test]
    fn a_pause_in_between_gives_each_target_its_remaining_time() {
        let s = spec(ActionKind::Leased, Some(60));
        let l = live(&[("a", "app", "c://a1"), ("b", "app", "c://b1")]);
        // a came into effect at 0, b at 2 s; paused at 10 s.
        let t = [
            clocked(target("a", "app", "c://a1", Phase::Injected), Some(0), 0),
            clocked(
                target("b", "app", "c://b1", Phase::Injected),
                Some(2_000),
                0,
            ),
        ];
        let mut o = observed(s.clone(), 10, &t, &l, started(0));
        o.pause = true;
        let steps = decide(&o);
        assert_eq!(recovers(&steps), ["a:Pending", "b:Pending"]);
        // The pause's recoveries banked 10 s and 8 s on the records; resumed at 100 s.
        let mut paused = started(0);
        paused.paused_at = Some(at(10));
        let t = [
            clocked(target("a", "app", "c://a1", Phase::Pending), None, 10_000),
            clocked(target("b", "app", "c://b1", Phase::Pending), None, 8_000),
        ];
        let steps = decide(&observed(s.clone(), 100, &t, &l, paused));
        assert_eq!(
            steps[1],
            Step::Event {
                reason: "Resumed",
                message: "resumed: each target for what it has left, 50s to 52s".into()
            }
        );
        assert_eq!(injects(&steps), ["a", "b"]);
        // Both back in effect at 100.2 s: a ends at 150.2 s, b at 152.2 s.
        let mut t = [
            clocked(
                target("a", "app", "c://a1", Phase::Injected),
                Some(100_200),
                10_000,
            ),
            clocked(
                target("b", "app", "c://b1", Phase::Injected),
                Some(100_200),
                8_000,
            ),
        ];
        let steps = decide(&observed_ms(s.clone(), 150_199, &t, &l, started(0)));
        assert!(recovers(&steps).is_empty());
        assert_eq!(requeue(&steps), Some(Duration::from_millis(1)));
        let steps = decide(&observed_ms(s.clone(), 150_200, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        assert_eq!(requeue(&steps), Some(Duration::from_secs(2)));
        t[0].phase = Phase::Recovered;
        let steps = decide(&observed_ms(s.clone(), 152_200, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["b:Recovered"]);
        assert!(finished(&steps));
    }

    #[test]
    fn a_restarted_container_continues_its_own_clock() {
        let s = spec(ActionKind::Leased, Some(60));
        // Injected at 5 s; its container restarted at 30 s.
        let t = [clocked(
            target("a", "app", "c://old", Phase::Injected),
            Some(5_000),
            0,
        )];
        let l = live(&[("a", "app", "c://new")]);
        let steps = decide(&observed(s.clone(), 30, &t, &l, started(0)));
        assert_eq!(injects(&steps), ["a"]);
        // Injected into the new container, the target keeps its start: it ends at 65 s, not
        // 90 s, and no sooner either.
        let t = [clocked(
            target("a", "app", "c://new", Phase::Injected),
            Some(5_000),
            0,
        )];
        assert_eq!(planned_end(&s, &t), Some(at(65)));
        let steps = decide(&observed(s.clone(), 64, &t, &l, started(0)));
        assert!(recovers(&steps).is_empty() && injects(&steps).is_empty());
        let steps = decide(&observed(s.clone(), 65, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        // Re-injection failed: still on its clock, recovered (not injected) at its end.
        let failed = [clocked(
            target("a", "app", "c://new", Phase::Failed),
            Some(5_000),
            0,
        )];
        let steps = decide(&observed(s.clone(), 40, &failed, &l, started(0)));
        assert_eq!(injects(&steps), ["a"], "retried while its time runs");
        let steps = decide(&observed(s, 65, &failed, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        assert!(injects(&steps).is_empty());
    }

    #[test]
    fn a_target_injected_after_a_delay_gets_the_full_duration() {
        let s = spec(ActionKind::Leased, Some(60));
        // b's container starts only at 20 s.
        let mut t = vec![
            clocked(target("a", "app", "c://a1", Phase::Injected), Some(0), 0),
            target("b", "app", "", Phase::Pending),
        ];
        let mut l = live(&[("a", "app", "c://a1"), ("b", "app", "c://b1")]);
        l.get_mut("uid-b").expect("b").containers.clear();
        let steps = decide(&observed(s.clone(), 10, &t, &l, started(0)));
        assert!(injects(&steps).is_empty(), "nothing to inject into yet");
        let l = live(&[("a", "app", "c://a1"), ("b", "app", "c://b1")]);
        let steps = decide(&observed(s.clone(), 20, &t, &l, started(0)));
        assert_eq!(injects(&steps), ["b"]);
        // In effect at 20.5 s: a is recovered at 60 s, b at 80.5 s.
        t[1] = clocked(
            target("b", "app", "c://b1", Phase::Injected),
            Some(20_500),
            0,
        );
        let steps = decide(&observed(s.clone(), 60, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        assert!(!finished(&steps));
        assert_eq!(
            requeue(&steps),
            Some(Duration::from_secs(10)),
            "lease renewal"
        );
        t[0].phase = Phase::Recovered;
        let steps = decide(&observed_ms(s.clone(), 80_499, &t, &l, started(0)));
        assert!(recovers(&steps).is_empty());
        let steps = decide(&observed_ms(s, 80_500, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["b:Recovered"]);
        assert!(finished(&steps));
    }

    #[test]
    fn a_target_never_in_effect_is_given_up_when_the_window_closes() {
        let s = spec(ActionKind::Held, Some(60));
        let t = [
            clocked(target("a", "", "", Phase::Injected), Some(0), 0),
            target("b", "", "", Phase::Failed),
        ];
        let l = live(&[("a", "", ""), ("b", "", "")]);
        let steps = decide(&observed(s.clone(), 59, &t, &l, started(0)));
        assert_eq!(injects(&steps), ["b"], "retried while the window is open");
        let steps = decide(&observed(s.clone(), 60, &t, &l, started(0)));
        assert_eq!(recovers(&steps), ["a:Recovered"]);
        assert!(steps.contains(&Step::MarkGone {
            id: t[1].id.clone(),
            reason: NOT_INJECTED
        }));
        assert!(finished(&steps) && injects(&steps).is_empty());
        // None ever in effect: the window is the duration from the start.
        let t = [target("b", "", "", Phase::Failed)];
        let steps = decide(&observed(s.clone(), 30, &t, &l, started(0)));
        assert_eq!(injects(&steps), ["b"]);
        assert_eq!(requeue(&steps), Some(Duration::from_secs(30)));
        let steps = decide(&observed(s, 60, &t, &l, started(0)));
        assert!(finished(&steps), "{steps:?}");
    }

    #[test]
    fn a_vanished_target_keeps_its_clock_until_its_end() {
        let s = spec(ActionKind::Held, Some(60));
        let t = [clocked(
            target("a", "", "", Phase::Injected),
            Some(3_000),
            0,
        )];
        let l = BTreeMap::new();
        let steps = decide(&observed(s.clone(), 10, &t, &l, started(0)));
        assert!(steps.contains(&Step::MarkGone {
            id: t[0].id.clone(),
            reason: POD_DELETED
        }));
        assert!(
            !finished(&steps),
            "a pod back under the same name is injected"
        );
        let gone = [clocked(target("a", "", "", Phase::Gone), Some(3_000), 0)];
        let steps = decide(&observed(s.clone(), 20, &gone, &l, started(0)));
        assert_eq!(
            steps,
            vec![
                Step::SetPhase(ExperimentPhase::Running),
                Step::RequeueAfter(Duration::from_secs(43))
            ]
        );
        // Back under the same name: injected for the rest of its time.
        let back = live(&[("a", "", "")]);
        let steps = decide(&observed(s.clone(), 20, &gone, &back, started(0)));
        assert_eq!(injects(&steps), ["a"]);
        let steps = decide(&observed(s, 63, &gone, &l, started(0)));
        assert!(finished(&steps));
    }

    #[test]
    fn the_start_is_kept_to_the_whole_second() {
        let t = [target("a", "", "", Phase::Pending)];
        let l = live(&[("a", "", "")]);
        let steps = decide(&observed_ms(
            spec(ActionKind::Held, Some(60)),
            1_700,
            &t,
            &l,
            Clock::default(),
        ));
        assert_eq!(steps[0], Step::SetClock(started(1)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
