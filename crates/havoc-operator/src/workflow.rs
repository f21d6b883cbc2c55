//! The Workflow controller: runs a workflow's steps as child objects, moved by host mode's pure
//! [`havoc_spec::workflow::Tree`].
//!
//! Each reconcile rebuilds the tree from the journal in status
//! ([`havoc_k8s::workflow_crd::Machine::replay`]), observes the children of running leaf nodes
//! (a chaos object's phase, a task pod's exit code and log, a status check's verdict), reports
//! what ended to the tree, advances it, carries its actions out (create or delete children) and
//! then writes status (the node tree and the journal). Children are created BEFORE the journal
//! that started them is written, under names derived from the node index
//! ([`havoc_k8s::workflow_crd::child_name`]): an operator that dies in between starts the same
//! node again after its restart, and the create finds the child it made (AlreadyExists), so no
//! step runs twice.
//!
//! Children carry a controller owner reference: deleting the workflow deletes them, and each
//! chaos child's own finalizer recovers its faults. Aborting (`havoc.dev/abort: "true"`) stops
//! every running step the same way (its child is deleted and so recovered) and skips the rest.

use std::sync::Arc;
use std::time::Duration;

use havoc_k8s::schedule_crd::Schedule;
use havoc_k8s::status::Phase;
use havoc_k8s::statuscheck_crd::{StatusCheck, FAILURE_THRESHOLD_EXCEED};
use havoc_k8s::workflow_crd::{
    chaos_duration, child_labels, child_name, Machine, Template, TemplateType, Workflow,
    WorkflowPhase, ABORT_ANNOTATION, TASK_STDOUT_MAX,
};
use havoc_k8s::{
    DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, StressChaos, SyscallChaos, TimeChaos,
};
use havoc_spec::units::HumanDuration;
use havoc_spec::workflow::{Action as TreeAction, NodePhase, WorkOutcome};
use havoc_spec::FieldPath;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::{chain, Context, Error};
use crate::schedule::{
    already_exists, child_meta, conflict, is_annotated, kube_err, micro_of, not_found, now_ms,
    publish,
};

/// How often running steps are looked at besides the watches on children.
const POLL: Duration = Duration::from_secs(2);

/// Creates the child of node `i`; an error message makes the node fail.
async fn start_node(
    ctx: &Context,
    w: &Workflow,
    t: &Template,
    i: usize,
    deadline_ms: Option<u64>,
) -> Result<(), String> {
    let ns = w.namespace().unwrap_or_default();
    let wname = w.name_any();
    let name = child_name(&wname, i, &t.name);
    let meta = child_meta(w, &name, child_labels(&wname, i));
    let pp = PostParams::default();
    let c = ctx.client.clone();
    let dur = |d: Option<HumanDuration>| chaos_duration(t, d).map(HumanDuration);
    // A chaos step lasting its duration, else its node's deadline.
    macro_rules! chaos {
        ($k:ty, $field:ident) => {{
            let mut spec = t.$field.clone().ok_or(concat!("no ", stringify!($field)))?;
            spec.duration = dur(spec.duration);
            let mut o = <$k>::new(&name, spec);
            o.metadata = meta;
            Api::<$k>::namespaced(c, &ns)
                .create(&pp, &o)
                .await
                .map(|_| ())
        }};
    }
    let r = match t.template_type {
        TemplateType::PodChaos => {
            let mut spec = t.pod_chaos.clone().ok_or("no podChaos")?;
            if spec.action == havoc_k8s::PodAction::PodFailure {
                spec.duration = dur(spec.duration);
            }
            let mut o = PodChaos::new(&name, spec);
            o.metadata = meta;
            Api::<PodChaos>::namespaced(c, &ns)
                .create(&pp, &o)
                .await
                .map(|_| ())
        }
        TemplateType::NetworkChaos => chaos!(NetworkChaos, network_chaos),
        TemplateType::StressChaos => chaos!(StressChaos, stress_chaos),
        TemplateType::IOChaos => chaos!(IOChaos, io_chaos),
        TemplateType::TimeChaos => chaos!(TimeChaos, time_chaos),
        TemplateType::SyscallChaos => chaos!(SyscallChaos, syscall_chaos),
        TemplateType::DNSChaos => chaos!(DNSChaos, dns_chaos),
        TemplateType::HTTPChaos => chaos!(HTTPChaos, http_chaos),
        TemplateType::StatusCheck => {
            let mut spec = t.status_check.clone().ok_or("no statusCheck")?;
            if spec.mode == havoc_k8s::statuscheck_crd::CheckMode::Continuous
                && spec.duration.is_none()
            {
                // Bounded by its node: it runs until the node's deadline.
                let left = deadline_ms
                    .map(|d| d.saturating_sub(now_ms() as u64).max(1000))
                    .unwrap_or(havoc_spec::workflow::DEFAULT_CHECK_DEADLINE.as_millis() as u64);
                spec.duration = Some(HumanDuration(Duration::from_millis(left)));
            }
            let mut o = StatusCheck::new(&name, spec);
            o.metadata = meta;
            Api::<StatusCheck>::namespaced(c, &ns)
                .create(&pp, &o)
                .await
                .map(|_| ())
        }
        TemplateType::Task => {
            let task = t.task.as_ref().ok_or("no task")?;
            let ct = &task.container;
            let mut container = json!({"name": ct.name, "image": ct.image});
            if let Some(p) = &ct.image_pull_policy {
                container["imagePullPolicy"] = json!(p);
            }
            if !ct.command.is_empty() {
                container["command"] = json!(ct.command);
            }
            if !ct.args.is_empty() {
                container["args"] = json!(ct.args);
            }
            let mut pod: Pod = serde_json::from_value(json!({
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container]
                }
            }))
            .map_err(|e| format!("task pod: {e}"))?;
            pod.metadata = meta;
            Api::<Pod>::namespaced(c, &ns)
                .create(&pp, &pod)
                .await
                .map(|_| ())
        }
        TemplateType::Schedule => {
            // Runs until the node's deadline (required): the Schedule controller makes its runs.
            let spec = t.schedule.as_ref().ok_or("no schedule")?.to_schedule_spec();
            let mut o = Schedule::new(&name, spec);
            o.metadata = meta;
            Api::<Schedule>::namespaced(c, &ns)
                .create(&pp, &o)
                .await
                .map(|_| ())
        }
        TemplateType::Serial | TemplateType::Parallel | TemplateType::Suspend => return Ok(()),
    };
    match r {
        Ok(()) => Ok(()),
        // Made before a restart (or by another operator): the same step, not a second one.
        Err(e) if already_exists(&e) => Ok(()),
        Err(e) => Err(format!(
            "create {} {ns}/{name}: {}",
            t.template_type.child_kind().unwrap_or("object"),
            chain(&e)
        )),
    }
}

/// Deletes the child of node `i` (its finalizer recovers what it injected).
async fn stop_node(ctx: &Context, w: &Workflow, t: &Template, i: usize) -> Result<(), Error> {
    let ns = w.namespace().unwrap_or_default();
    let name = child_name(&w.name_any(), i, &t.name);
    let c = ctx.client.clone();
    let dp = DeleteParams::background();
    macro_rules! delete {
        ($k:ty) => {
            Api::<$k>::namespaced(c, &ns)
                .delete(&name, &dp)
                .await
                .map(|_| ())
        };
    }
    let r = match t.template_type {
        TemplateType::PodChaos => delete!(PodChaos),
        TemplateType::NetworkChaos => delete!(NetworkChaos),
        TemplateType::StressChaos => delete!(StressChaos),
        TemplateType::IOChaos => delete!(IOChaos),
        TemplateType::TimeChaos => delete!(TimeChaos),
        TemplateType::SyscallChaos => delete!(SyscallChaos),
        TemplateType::DNSChaos => delete!(DNSChaos),
        TemplateType::HTTPChaos => delete!(HTTPChaos),
        TemplateType::StatusCheck => Api::<StatusCheck>::namespaced(c, &ns)
            .delete(&name, &dp)
            .await
            .map(|_| ()),
        // Foreground: the Schedule is gone only once its runs are (each run's own finalizer
        // recovers its faults), so the node ends after its chaos is recovered.
        TemplateType::Schedule => Api::<Schedule>::namespaced(c, &ns)
            .delete(&name, &DeleteParams::foreground())
            .await
            .map(|_| ()),
        TemplateType::Task => Api::<Pod>::namespaced(c, &ns)
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(format!("stop step {ns}/{name}"))(e)),
    }
}

/// What the child of a running leaf says: `Some(outcome)` when its work ended.
async fn observe_node(
    ctx: &Context,
    w: &Workflow,
    t: &Template,
    i: usize,
    stopping: bool,
) -> Result<Option<WorkOutcome>, Error> {
    let ns = w.namespace().unwrap_or_default();
    let name = child_name(&w.name_any(), i, &t.name);
    let c = ctx.client.clone();
    let what = format!("read step {ns}/{name}");
    let gone = |stopping: bool| {
        if stopping {
            Some(WorkOutcome::Succeeded)
        } else {
            Some(WorkOutcome::Failed(format!(
                "its {} {name} was deleted",
                t.template_type.child_kind().unwrap_or("object")
            )))
        }
    };
    macro_rules! chaos {
        ($k:ty) => {{
            match Api::<$k>::namespaced(c, &ns)
                .get_opt(&name)
                .await
                .map_err(kube_err(what))?
            {
                None => gone(stopping),
                Some(_) if stopping => {
                    stop_node(ctx, w, t, i).await?;
                    None
                }
                Some(o) => match o.status.as_ref().map(|s| s.phase) {
                    Some(Phase::Finished) => Some(WorkOutcome::Succeeded),
                    Some(Phase::Failed) => Some(WorkOutcome::Failed(format!(
                        "{name} failed: {}",
                        o.status
                            .as_ref()
                            .and_then(|s| s.conditions.iter().find(|c| c.status == "False"))
                            .map(|c| c.message.clone())
                            .unwrap_or_default()
                    ))),
                    _ => None,
                },
            }
        }};
    }
    Ok(match t.template_type {
        TemplateType::PodChaos => chaos!(PodChaos),
        TemplateType::NetworkChaos => chaos!(NetworkChaos),
        TemplateType::StressChaos => chaos!(StressChaos),
        TemplateType::IOChaos => chaos!(IOChaos),
        TemplateType::TimeChaos => chaos!(TimeChaos),
        TemplateType::SyscallChaos => chaos!(SyscallChaos),
        TemplateType::DNSChaos => chaos!(DNSChaos),
        TemplateType::HTTPChaos => chaos!(HTTPChaos),
        TemplateType::StatusCheck => {
            match Api::<StatusCheck>::namespaced(c, &ns)
                .get_opt(&name)
                .await
                .map_err(kube_err(what))?
            {
                None => gone(stopping),
                Some(_) if stopping => {
                    stop_node(ctx, w, t, i).await?;
                    None
                }
                Some(o) => match crate::statuscheck::verdict(o.status.as_ref()) {
                    Some(true) => Some(WorkOutcome::Succeeded),
                    Some(false) => Some(WorkOutcome::Failed(
                        o.status
                            .as_ref()
                            .and_then(|s| {
                                s.conditions
                                    .iter()
                                    .find(|c| c.type_ == FAILURE_THRESHOLD_EXCEED)
                            })
                            .and_then(|c| c.message.clone())
                            .unwrap_or_else(|| "the check failed".into()),
                    )),
                    None => None,
                },
            }
        }
        // A schedule never ends by itself: its node's deadline stops it (the tree asks for the
        // stop); until the object is gone the node keeps running.
        TemplateType::Schedule => {
            match Api::<Schedule>::namespaced(c, &ns)
                .get_opt(&name)
                .await
                .map_err(kube_err(what))?
            {
                None => gone(stopping),
                Some(_) if stopping => {
                    stop_node(ctx, w, t, i).await?;
                    None
                }
                Some(_) => None,
            }
        }
        TemplateType::Task => {
            let pods: Api<Pod> = Api::namespaced(c, &ns);
            match pods.get_opt(&name).await.map_err(kube_err(what))? {
                None if stopping => Some(WorkOutcome::TaskExited {
                    exit_code: -1,
                    stdout: String::new(),
                }),
                None => gone(false),
                Some(_) if stopping => {
                    stop_node(ctx, w, t, i).await?;
                    None
                }
                Some(p) => {
                    let st = p.status.as_ref();
                    let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("");
                    if phase != "Succeeded" && phase != "Failed" {
                        None
                    } else {
                        let term = st
                            .and_then(|s| s.container_statuses.as_ref())
                            .and_then(|cs| cs.first())
                            .and_then(|c| c.state.as_ref())
                            .and_then(|s| s.terminated.as_ref());
                        let exit_code = term.map_or(-1, |t| {
                            if t.signal.is_some() {
                                -1
                            } else {
                                i64::from(t.exit_code)
                            }
                        });
                        let lp = LogParams {
                            limit_bytes: Some(TASK_STDOUT_MAX as i64),
                            ..Default::default()
                        };
                        let stdout = pods.logs(&name, &lp).await.unwrap_or_default();
                        let stdout = stdout.strip_suffix('\n').unwrap_or(&stdout).to_string();
                        Some(WorkOutcome::TaskExited { exit_code, stdout })
                    }
                }
            }
        }
        _ => None,
    })
}

/// Reconciles one Workflow.
pub async fn reconcile(w: Arc<Workflow>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = w.namespace().ok_or(Error::NoNamespace)?;
    let name = w.name_any();
    let old = w.status.clone().unwrap_or_default();
    if w.meta().deletion_timestamp.is_some() || old.phase.is_done() {
        return Ok(Action::await_change());
    }
    let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), &ns);
    let write = |st: havoc_k8s::workflow_crd::WorkflowStatus| {
        let mut fresh = (*w).clone();
        fresh.status = Some(st);
        let api = api.clone();
        let name = name.clone();
        async move {
            api.replace_status(&name, &PostParams::default(), &fresh)
                .await
        }
    };
    let spec = match w.spec.to_spec(&FieldPath::root().key("spec")) {
        Ok(s) => s,
        Err(e) => {
            let mut st = old.clone();
            st.phase = WorkflowPhase::Failed;
            st.message = Some(e.to_string());
            st.end_time = Some(micro_of(now_ms()));
            match write(st).await {
                Ok(_) => {}
                Err(e) if conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
                Err(e) => return Err(kube_err(format!("write status of workflow {ns}/{name}"))(e)),
            }
            publish(&ctx, &*w, EventType::Warning, "Invalid", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let mut m = Machine::replay(spec, &old.journal);
    let before: Vec<NodePhase> = m.tree.nodes.iter().map(|n| n.phase).collect();
    let now = now_ms() as u64;
    if is_annotated(&*w, ABORT_ANNOTATION) {
        m.abort(&format!("aborted by annotation {ABORT_ANNOTATION}"), now);
    }
    // Observe the children of running leaves.
    for i in 0..m.tree.nodes.len() {
        let n = &m.tree.nodes[i];
        if n.phase != NodePhase::Running || n.work_done {
            continue;
        }
        let Some(t) = w.spec.template(&n.template) else {
            continue;
        };
        if t.template_type.child_kind().is_none() {
            continue;
        }
        let stopping = n.stopping.is_some();
        if let Some(o) = observe_node(&ctx, &w, t, i, stopping).await? {
            m.work_finished(i, o, now_ms() as u64);
        }
    }
    // Advance and carry out; a failed start feeds back at once.
    for _ in 0..8 {
        let now = now_ms() as u64;
        let actions = m.advance(now);
        if actions.is_empty() {
            break;
        }
        for a in actions {
            match a {
                TreeAction::Start(i) => {
                    let n = &m.tree.nodes[i];
                    let t = w
                        .spec
                        .template(&n.template)
                        .expect("a node of a template")
                        .clone();
                    let deadline = n.deadline_ms;
                    if let Err(msg) = start_node(&ctx, &w, &t, i, deadline).await {
                        m.work_finished(i, WorkOutcome::Failed(msg), now_ms() as u64);
                    }
                }
                TreeAction::Stop(i, _) => {
                    let t = w
                        .spec
                        .template(&m.tree.nodes[i].template)
                        .expect("a node of a template")
                        .clone();
                    stop_node(&ctx, &w, &t, i).await?;
                }
                TreeAction::Finished(_) => {}
            }
        }
    }
    let mut st = old.clone();
    st.nodes = m.nodes(&w.spec, &name);
    st.journal = m.journal.clone();
    st.phase = match m.phase() {
        WorkflowPhase::Pending => WorkflowPhase::Running,
        p => p,
    };
    st.start_time.get_or_insert_with(|| micro_of(now as i64));
    if st.phase.is_done() {
        st.end_time = Some(micro_of(now_ms()));
        st.message = m
            .tree
            .abort_reason()
            .map(str::to_string)
            .or_else(|| m.tree.nodes[0].message.clone());
    }
    if st != old {
        match write(st.clone()).await {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(e) => return Err(kube_err(format!("write status of workflow {ns}/{name}"))(e)),
        }
    }
    // One event per node transition.
    for (i, n) in m.tree.nodes.iter().enumerate() {
        if before.get(i) == Some(&n.phase) {
            continue;
        }
        let kind = w
            .spec
            .template(&n.template)
            .map_or(n.template_type, |t| t.template_type.name());
        let ty = if matches!(n.phase, NodePhase::Failed | NodePhase::Aborted) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = match &n.message {
            Some(msg) => format!("{} ({kind}): {:?}: {msg}", n.path, n.phase),
            None => format!("{} ({kind}): {:?}", n.path, n.phase),
        };
        publish(&ctx, &*w, ty, &format!("Node{:?}", n.phase), note).await;
    }
    if st.phase.is_done() {
        publish(
            &ctx,
            &*w,
            if st.phase == WorkflowPhase::Succeeded {
                EventType::Normal
            } else {
                EventType::Warning
            },
            &format!("Workflow{:?}", st.phase),
            st.message
                .clone()
                .unwrap_or_else(|| format!("{:?}", st.phase)),
        )
        .await;
        return Ok(Action::await_change());
    }
    let wait = m
        .tree
        .next_deadline_ms()
        .map(|d| Duration::from_millis(d.saturating_sub(now_ms() as u64).max(20)))
        .map_or(POLL, |d| d.min(POLL));
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
    let steps = || watcher::Config::default().labels("havoc.dev/workflow");
    Controller::new(Api::<Workflow>::all(c.clone()), watcher::Config::default())
        .owns(Api::<PodChaos>::all(c.clone()), steps())
        .owns(Api::<NetworkChaos>::all(c.clone()), steps())
        .owns(Api::<StressChaos>::all(c.clone()), steps())
        .owns(Api::<IOChaos>::all(c.clone()), steps())
        .owns(Api::<TimeChaos>::all(c.clone()), steps())
        .owns(Api::<SyscallChaos>::all(c.clone()), steps())
        .owns(Api::<DNSChaos>::all(c.clone()), steps())
        .owns(Api::<HTTPChaos>::all(c.clone()), steps())
        .owns(Api::<StatusCheck>::all(c.clone()), steps())
        .owns(Api::<Schedule>::all(c.clone()), steps())
        .owns(Api::<Pod>::all(c.clone()), steps())
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
pub fn error_policy(w: Arc<Workflow>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(workflow = %w.name_any(), error = %chain(err), "workflow reconcile failed");
    Action::requeue(Duration::from_secs(2))
}
