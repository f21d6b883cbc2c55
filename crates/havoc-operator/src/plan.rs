//! The reconcile decision as a pure function: what to do next for one chaos object.
//!
//! [`decide`] looks at the object (its spec as [`Spec`], its targets and experiment clock from
//! status, its annotations and deletion), the live state of the targeted pods and `now`, and
//! returns [`Step`]s for the thin kube glue in [`crate::controller`] to carry out in order. Every
//! rule of the lifecycle lives here and is unit-tested without an API server: selection once,
//! injection, lease renewal, the duration end (requeued at exactly the end time), pause and
//! resume with the remaining duration, re-injection of restarted containers, vanished targets
//! counted as recovered with a reason, forced cleanup.

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

/// The experiment's clock, kept in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    /// When the targets were first injected.
    pub started: Option<SystemTime>,
    /// When the current pause began.
    pub paused_at: Option<SystemTime>,
    /// Total time spent paused before the current pause.
    pub paused_for: Duration,
    /// When the experiment finished (duration over, one-shot done).
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

/// When the experiment ends, accounting for pauses; `None` without a duration or start.
pub fn end_time(spec: &Spec, clock: &Clock) -> Option<SystemTime> {
    Some(clock.started? + clock.paused_for + spec.duration?)
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
    if let Some(p) = clock.paused_at.take() {
        clock.paused_for += o.now.duration_since(p).unwrap_or_default();
        steps.push(Step::SetClock(clock));
        steps.push(Step::Event {
            reason: "Resumed",
            message: match end_time(&o.spec, &clock) {
                Some(e) => format!(
                    "resumed for the remaining {}",
                    humanize(e.duration_since(o.now).unwrap_or_default())
                ),
                None => "resumed".to_string(),
            },
        });
    }
    if clock.started.is_none() {
        clock.started = Some(o.now);
        steps.push(Step::SetClock(clock));
    }
    // Duration over.
    let end = end_time(&o.spec, &clock).filter(|_| o.spec.kind != ActionKind::OneShot);
    if let Some(end) = end {
        if o.now >= end {
            let n = recover_all(o, Phase::Recovered, &mut steps);
            clock.finished = Some(o.now);
            steps.push(Step::SetClock(clock));
            steps.push(Step::SetPhase(ExperimentPhase::Finished));
            steps.push(Step::Event {
                reason: "Recovered",
                message: format!("duration over: recovered {n} target(s)"),
            });
            return steps;
        }
    }
    // Inject what is not injected; re-inject restarted containers; mark vanished targets.
    for t in o.targets {
        if let Some(reason) = vanished(t, o.live) {
            if t.phase != Phase::Recovered {
                steps.push(Step::MarkGone {
                    id: t.id.clone(),
                    reason,
                });
            }
            continue;
        }
        let live = &o.live[&t.id.pod_uid];
        let current = if t.id.container.is_empty() {
            String::new()
        } else {
            match live.containers.get(&t.id.container) {
                Some(c) => c.clone(),
                // Not started (yet): nothing to hit; try again later.
                None => continue,
            }
        };
        let restarted = o.spec.kind != ActionKind::OneShot
            && t.phase == Phase::Injected
            && !t.id.container.is_empty()
            // Status keeps the short form of the id (`crictl`'s 12 digits), the pod the full one.
            && havoc_k8s::status::short_container_id(&current)
                != havoc_k8s::status::short_container_id(&t.container_id);
        match t.phase {
            Phase::Pending | Phase::Failed => steps.push(Step::Inject {
                id: t.id.clone(),
                container_id: current,
            }),
            Phase::Injected if restarted => steps.push(Step::Inject {
                id: t.id.clone(),
                container_id: current,
            }),
            Phase::Injected | Phase::Recovered => {}
        }
    }
    if o.spec.kind == ActionKind::OneShot {
        clock.finished = Some(o.now);
        steps.push(Step::SetClock(clock));
        steps.push(Step::SetPhase(ExperimentPhase::Finished));
        return steps;
    }
    steps.push(Step::SetPhase(ExperimentPhase::Running));
    let mut next: Option<Duration> = end.map(|e| e.duration_since(o.now).unwrap_or_default());
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
        }
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
                    message: "duration over: recovered 2 target(s)".into()
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

        // Resumed at 100 after 80 s paused: 40 s remain, ending at 140.
        let steps = decide(&observed(s.clone(), 100, &pending, &l, paused));
        let mut resumed = started(0);
        resumed.paused_for = Duration::from_secs(80);
        assert_eq!(steps[0], Step::SetClock(resumed));
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
        assert_eq!(end_time(&s, &resumed), Some(at(140)));
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
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
