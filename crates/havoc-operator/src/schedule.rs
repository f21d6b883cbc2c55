//! The Schedule controller: creates a run (a chaos object or a Workflow) at each start time.
//!
//! Which start time is due, and whether it may start, are host mode's pure decisions
//! ([`havoc_spec::schedule::due`], [`havoc_spec::schedule::admit`]); this module reads the runs,
//! carries the decision out and records it.
//!
//! No duplicate runs, across restarts and leader changes:
//! - a run's name is deterministic, `<schedule>-<start time in unix seconds>`
//!   ([`havoc_k8s::schedule_crd::run_name`]): two operators that decide the same start time create
//!   the same object, and the second `create` fails with AlreadyExists, which is read as "already
//!   run", not as an error;
//! - `lastScheduleTime` is written with a full status replace carrying the `resourceVersion` the
//!   decision was made from, so a writer working from a stale object gets a Conflict and decides
//!   again from the fresh one (never from a time already considered);
//! - an operator that dies between creating the run and writing `lastScheduleTime` decides the same
//!   start time again on restart and finds the run it made (AlreadyExists).
//!
//! Missed start times after an outage give at most one catch-up run (the latest), counted in
//! `status.missed` and told in an event; a schedule never stops for having missed many. Paused
//! (`havoc.dev/pause: "true"`): no new runs (start times passing meanwhile are skipped, not caught
//! up), and the running chaos children get the same annotation, so their faults are removed until
//! the schedule is resumed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use havoc_k8s::schedule_crd::{run_name, Schedule, ScheduleType, SCHEDULE_LABEL};
use havoc_k8s::status::Phase;
use havoc_k8s::workflow_crd::Workflow;
use havoc_k8s::{
    DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, StressChaos, SyscallChaos, TimeChaos,
};
use havoc_spec::schedule::{admit, due, DateTime, Utc};
use havoc_spec::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::{chain, Context, Error};
use crate::plan::PAUSE_ANNOTATION;

/// `$body` with the type `$k` bound to the chaos kind a schedule of type `$ty` creates, or
/// `$wf` for a Workflow schedule: one arm per kind, written once.
macro_rules! by_kind {
    ($ty:expr, $k:ident => $body:expr, Workflow => $wf:expr) => {
        match $ty {
            ScheduleType::PodChaos => {
                type $k = PodChaos;
                $body
            }
            ScheduleType::NetworkChaos => {
                type $k = NetworkChaos;
                $body
            }
            ScheduleType::StressChaos => {
                type $k = StressChaos;
                $body
            }
            ScheduleType::IOChaos => {
                type $k = IOChaos;
                $body
            }
            ScheduleType::TimeChaos => {
                type $k = TimeChaos;
                $body
            }
            ScheduleType::SyscallChaos => {
                type $k = SyscallChaos;
                $body
            }
            ScheduleType::DNSChaos => {
                type $k = DNSChaos;
                $body
            }
            ScheduleType::HTTPChaos => {
                type $k = HTTPChaos;
                $body
            }
            ScheduleType::Workflow => $wf,
        }
    };
}

/// A run of a schedule, as listed.
#[derive(Debug, Clone)]
struct Run {
    name: String,
    /// Start time (unix seconds) from the name, else from the creation time.
    at: i64,
    running: bool,
    paused: bool,
}

pub(crate) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn time_of(ms: i64) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

pub(crate) fn micro_of(ms: i64) -> MicroTime {
    havoc_k8s::workflow_crd::time_ms(ms)
}

pub(crate) fn ms_of(t: &Time) -> i64 {
    t.0.as_millisecond()
}

pub(crate) fn is_annotated(obj: &impl Resource, key: &str) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

pub(crate) fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

pub(crate) fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(crate) fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
}

/// Publishes an event on `obj` (a failure to publish is logged, never fatal).
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "failed to publish event");
    }
}

/// The metadata of a child: its name, the owner's namespace, a controller owner reference (so
/// deleting the owner deletes it, and its own finalizer recovers its faults) and labels.
pub(crate) fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: owner.meta().namespace.clone(),
        owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
        labels: Some(labels),
        ..Default::default()
    }
}

fn run_time(name: &str, prefix: &str, meta: &ObjectMeta) -> i64 {
    name.strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('-'))
        .and_then(|s| s.parse().ok())
        .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0.as_second()))
        .unwrap_or(0)
}

async fn list_runs(ctx: &Context, s: &Schedule, ns: &str) -> Result<Vec<Run>, Error> {
    let name = s.name_any();
    let lp = ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}"));
    macro_rules! chaos_runs {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(ctx.client.clone(), ns);
            api.list(&lp)
                .await
                .map_err(kube_err(format!("list runs of schedule {ns}/{name}")))?
                .items
                .into_iter()
                .map(|o| Run {
                    at: run_time(&o.name_any(), &name, &o.metadata),
                    running: o.metadata.deletion_timestamp.is_none()
                        && !o
                            .status
                            .as_ref()
                            .is_some_and(|st| matches!(st.phase, Phase::Finished | Phase::Failed)),
                    paused: is_annotated(&o, PAUSE_ANNOTATION),
                    name: o.name_any(),
                })
                .collect()
        }};
    }
    Ok(by_kind!(s.spec.type_, K => chaos_runs!(K), Workflow => {
        let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), ns);
        api.list(&lp)
            .await
            .map_err(kube_err(format!("list runs of schedule {ns}/{name}")))?
            .items
            .into_iter()
            .map(|o| Run {
                at: run_time(&o.name_any(), &name, &o.metadata),
                running: o.metadata.deletion_timestamp.is_none()
                    && !o.status.as_ref().is_some_and(|st| st.phase.is_done()),
                paused: false,
                name: o.name_any(),
            })
            .collect()
    }))
}

/// Creates the run `name`; `Ok(false)` when it already exists (made by another operator, or by
/// this one before a restart): the start time was already run, never run it twice.
async fn create_run(ctx: &Context, s: &Schedule, ns: &str, name: &str) -> Result<bool, Error> {
    let meta = child_meta(s, name, [(SCHEDULE_LABEL.to_string(), s.name_any())].into());
    let what = format!("create run {ns}/{name}");
    macro_rules! create {
        ($k:ty, $spec:expr) => {{
            let api: Api<$k> = Api::namespaced(ctx.client.clone(), ns);
            let mut o = <$k>::new(name, $spec.clone());
            o.metadata = meta;
            api.create(&PostParams::default(), &o).await.map(|_| ())
        }};
    }
    let r = match (&s.spec.type_, &s.spec) {
        (ScheduleType::PodChaos, sp) => match &sp.pod_chaos {
            Some(c) => create!(PodChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::NetworkChaos, sp) => match &sp.network_chaos {
            Some(c) => create!(NetworkChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::StressChaos, sp) => match &sp.stress_chaos {
            Some(c) => create!(StressChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::IOChaos, sp) => match &sp.io_chaos {
            Some(c) => create!(IOChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::TimeChaos, sp) => match &sp.time_chaos {
            Some(c) => create!(TimeChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::SyscallChaos, sp) => match &sp.syscall_chaos {
            Some(c) => create!(SyscallChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::DNSChaos, sp) => match &sp.dns_chaos {
            Some(c) => create!(DNSChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::HTTPChaos, sp) => match &sp.http_chaos {
            Some(c) => create!(HTTPChaos, c),
            None => return Ok(false),
        },
        (ScheduleType::Workflow, sp) => match &sp.workflow {
            Some(c) => create!(Workflow, c),
            None => return Ok(false),
        },
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if already_exists(&e) => Ok(false),
        Err(e) => Err(kube_err(what)(e)),
    }
}

async fn delete_run(ctx: &Context, s: &Schedule, ns: &str, name: &str) -> Result<(), Error> {
    let dp = DeleteParams::background();
    let r = by_kind!(s.spec.type_,
        K => Api::<K>::namespaced(ctx.client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
        Workflow => Api::<Workflow>::namespaced(ctx.client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()));
    match r {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(format!("delete old run {ns}/{name}"))(e)),
    }
}

/// Sets (or removes) the pause annotation of a running chaos child.
async fn pause_run(
    ctx: &Context,
    s: &Schedule,
    ns: &str,
    name: &str,
    pause: bool,
) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {PAUSE_ANNOTATION: if pause { json!("true") } else { json!(null) }}}});
    let pp = PatchParams::default();
    let p = Patch::Merge(&patch);
    let r = by_kind!(s.spec.type_,
        K => Api::<K>::namespaced(ctx.client.clone(), ns)
            .patch(name, &pp, &p)
            .await
            .map(|_| ()),
        // A Workflow has no pause: its chaos steps are its own children.
        Workflow => Ok(()));
    match r {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(format!("pause run {ns}/{name}"))(e)),
    }
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Reconciles one Schedule.
pub async fn reconcile(s: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().ok_or(Error::NoNamespace)?;
    let name = s.name_any();
    if s.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let plan = match s.spec.plan(&FieldPath::root().key("spec")) {
        Ok(p) => p,
        Err(e) => {
            publish(&ctx, &*s, EventType::Warning, "Invalid", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let api: Api<Schedule> = Api::namespaced(ctx.client.clone(), &ns);
    let old = s.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut runs = list_runs(&ctx, &s, &ns).await?;
    let paused = is_annotated(&*s, PAUSE_ANNOTATION);
    let now = now_ms();

    // Pause follows the schedule onto its running children.
    for r in runs.iter().filter(|r| r.running && r.paused != paused) {
        pause_run(&ctx, &s, &ns, &r.name, paused).await?;
    }
    if paused != old.paused {
        let (reason, note) = if paused {
            (
                "Paused",
                "paused by annotation: no new runs; running runs paused",
            )
        } else {
            (
                "Resumed",
                "resumed: runs start again at the next start time",
            )
        };
        publish(&ctx, &*s, EventType::Normal, reason, note.into()).await;
    }
    st.paused = paused;

    let created = s.meta().creation_timestamp.as_ref().map_or(now, ms_of);
    let last = old.last_schedule_time.as_ref().map_or(created, ms_of);
    let d = due(&plan.schedule, utc(last), utc(now), plan.starting_deadline);
    let mut events: Vec<(EventType, &str, String)> = Vec::new();
    if let Some(mark) = d.mark {
        if paused {
            st.skipped += 1 + u64::from(d.missed);
        } else if let Some(t) = d.run {
            let running = runs.iter().filter(|r| r.running).count();
            if admit(plan.policy, running) {
                let run = run_name(&name, t.timestamp());
                // Counted whether this operator made the run or found it made (by another
                // operator, or by this one before a restart): the count is written with the
                // mark under the resourceVersion precondition, so exactly one writer counts it.
                st.runs += 1;
                if create_run(&ctx, &s, &ns, &run).await? {
                    events.push((
                        EventType::Normal,
                        "Run",
                        format!(
                            "started {} {run} for {}",
                            s.spec.type_.name(),
                            t.to_rfc3339()
                        ),
                    ));
                }
                runs.push(Run {
                    name: run,
                    at: t.timestamp(),
                    running: true,
                    paused: false,
                });
            } else {
                st.skipped += 1;
                events.push((
                    EventType::Normal,
                    "Skipped",
                    format!(
                        "start time {} skipped: concurrencyPolicy Forbid and {running} run(s) still running",
                        t.to_rfc3339()
                    ),
                ));
            }
        } else if d.skipped_late {
            st.skipped += 1;
            events.push((
                EventType::Warning,
                "MissedDeadline",
                format!(
                    "start time {} skipped: more than startingDeadlineSeconds late",
                    mark.to_rfc3339()
                ),
            ));
        }
        if d.missed > 0 && !paused {
            st.missed += u64::from(d.missed);
            let n = if d.missed > havoc_spec::schedule::MISSED_COUNT_CAP {
                format!("more than {}", havoc_spec::schedule::MISSED_COUNT_CAP)
            } else {
                d.missed.to_string()
            };
            events.push((
                EventType::Warning,
                "MissedStarts",
                format!("{n} start time(s) missed (was the operator down?); at most one catch-up run, the latest"),
            ));
        }
        st.last_schedule_time = Some(time_of(mark.timestamp_millis()));
    }

    // History: keep the newest `historyLimit` finished runs; running ones are never deleted.
    let mut finished: Vec<&Run> = runs.iter().filter(|r| !r.running).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.at));
    for r in finished.iter().skip(plan.history_limit as usize) {
        delete_run(&ctx, &s, &ns, &r.name).await?;
    }
    let mut active: Vec<String> = runs
        .iter()
        .filter(|r| r.running)
        .map(|r| r.name.clone())
        .collect();
    active.sort();
    active.dedup();
    st.active = active;

    if st != old {
        // A replace carries the resourceVersion the decision was made from: a stale writer gets
        // a Conflict and decides again from the fresh object (never from a time already run).
        let mut fresh = (*s).clone();
        fresh.status = Some(st);
        match api
            .replace_status(&name, &PostParams::default(), &fresh)
            .await
        {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) => return Err(kube_err(format!("write status of schedule {ns}/{name}"))(e)),
        }
    }
    for (t, reason, note) in events {
        publish(&ctx, &*s, t, reason, note).await;
    }
    let wait = d
        .next
        .map(|n| Duration::from_millis((n.timestamp_millis() - now_ms()).clamp(20, 300_000) as u64))
        .unwrap_or(Duration::from_secs(300));
    Ok(Action::requeue(wait))
}

/// The controller of this kind, until `shutdown` resolves.
pub fn controller(
    ctx: Arc<Context>,
    shutdown: crate::ShutdownSignal,
) -> futures::future::BoxFuture<'static, ()> {
    use futures::{FutureExt as _, StreamExt as _};
    use kube::runtime::{watcher, Controller};
    let c = ctx.client.clone();
    let runs = || watcher::Config::default().labels("havoc.dev/schedule");
    Controller::new(Api::<Schedule>::all(c.clone()), watcher::Config::default())
        .owns(Api::<PodChaos>::all(c.clone()), runs())
        .owns(Api::<NetworkChaos>::all(c.clone()), runs())
        .owns(Api::<StressChaos>::all(c.clone()), runs())
        .owns(Api::<IOChaos>::all(c.clone()), runs())
        .owns(Api::<TimeChaos>::all(c.clone()), runs())
        .owns(Api::<SyscallChaos>::all(c.clone()), runs())
        .owns(Api::<DNSChaos>::all(c.clone()), runs())
        .owns(Api::<HTTPChaos>::all(c.clone()), runs())
        .owns(
            Api::<Workflow>::all(c.clone()),
            watcher::Config::default().labels("havoc.dev/schedule"),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %chain(&e), "controller event");
            }
        })
        .boxed()
}

/// Requeues a failed reconcile after a short pause.
pub fn error_policy(s: Arc<Schedule>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(schedule = %s.name_any(), error = %chain(err), "schedule reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_time_comes_from_its_name() {
        let meta = ObjectMeta::default();
        assert_eq!(run_time("every-1700000000", "every", &meta), 1_700_000_000);
        assert_eq!(run_time("other", "every", &meta), 0);
    }
}
