//! The kube glue: one `kube::runtime::Controller` per chaos kind, generic over [`ChaosObject`].
//!
//! [`reconcile`] reads the world (the object, its targets' pods, nodes), asks
//! [`crate::plan::decide`] what to do, carries the steps out (API calls for PodChaos, the node
//! agent for everything node-level), writes status with a merge patch on the status
//! subresource and publishes an Event per transition. The finalizer [`FINALIZER`] is handled by
//! `kube::runtime::finalizer`: deletion recovers every target first.
//!
//! Status keeps no agent injection ids (they would not fit for thousands of targets): the
//! operator finds its injections on a node through the agent's `List`, by the idempotency keys
//! it builds itself (`<chaos uid>/<pod uid>/<container id>/<fault>`), listing each node at most
//! once per reconcile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use havoc_api::v1::{InjectRequest, Injection, RecoverRequest, RenewRequest, Target as ApiTarget};
use havoc_k8s::status::{self as st, ChaosStatus, Record, RecordPhase};
use havoc_k8s::{ChaosAction, ChaosObject, NamespacePolicy, SelectionInput};
use havoc_spec::network::Cidr;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::agent::{fault_json, idempotency_key, parse_idempotency_key, AgentPool};
use crate::metrics::Metrics;
use crate::plan::{
    self, decide, ActionKind, Clock, ExperimentPhase, LivePod, Observed, Phase, Step, TargetId,
    FINALIZER, FORCE_CLEANUP_ANNOTATION, PAUSE_ANNOTATION,
};

/// Annotation on a pod under pod-failure holding its original images (`{"container": "image"}`).
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "havoc.dev/original-images";
/// Image put in place by pod-failure: `.invalid` never resolves, so the container cannot start
/// and no registry is needed.
pub const DEFAULT_FAILURE_IMAGE: &str = "havoc.invalid/pod-failure:never-starts";

/// Targets injected at once by default: enough to hit 1,000 pods in about a second on a
/// small API server without flooding it.
pub const DEFAULT_MAX_CONCURRENT_INJECTIONS: usize = 32;
/// How often a long injection batch writes its progress to status.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a reconcile can fail with; the message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API call failed: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Agent(String),
    #[error("{failed} of {total} target(s) failed: {first}")]
    Targets {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no namespace")]
    NoNamespace,
}

/// An error and its causes on one line (`what failed: why: why`), for logs, Events and status.
/// An API error gives the server's own message and reason (`pods "x" not found (NotFound,
/// 404)`), which a plain `Display` of the top error would lose.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let part = match err.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(s)) => {
                let reason = if s.reason.is_empty() {
                    String::new()
                } else {
                    format!("{}, ", s.reason)
                };
                parts.push(format!("{} ({reason}{})", s.message, s.code));
                break;
            }
            _ => err.to_string(),
        };
        if !parts.last().is_some_and(|p| p.contains(&part)) {
            parts.push(part);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// The node agents.
    pub agents: Arc<dyn AgentPool>,
    /// Which namespaces may be touched.
    pub policy: NamespacePolicy,
    /// Event publisher.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Lease ttl of agent injections.
    pub lease_ttl: Duration,
    /// Image used by pod-failure.
    pub failure_image: String,
    /// How many targets are injected at once (API calls or agent calls in flight).
    pub max_concurrent_injections: usize,
    /// Consecutive failures per object (for backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// Last phase per object (for the experiments gauge).
    phases: Mutex<HashMap<String, &'static str>>,
    /// Which running experiments target which pods (for the pod watch).
    targets: Mutex<TargetIndex>,
}

/// Pods (`namespace/name`) targeted by running experiments, and the reverse, so that a pod
/// event (a pod replaced under the same name, a container restarted) wakes the experiments
/// that target it at once rather than at their next requeue.
#[derive(Default)]
struct TargetIndex {
    by_pod: HashMap<String, BTreeSet<(String, String, String)>>,
    by_object: HashMap<(String, String, String), Vec<String>>,
}

impl TargetIndex {
    fn set(&mut self, object: (String, String, String), pods: Vec<String>) {
        for p in self.by_object.remove(&object).unwrap_or_default() {
            if let Some(set) = self.by_pod.get_mut(&p) {
                set.remove(&object);
                if set.is_empty() {
                    self.by_pod.remove(&p);
                }
            }
        }
        if pods.is_empty() {
            return;
        }
        for p in &pods {
            self.by_pod
                .entry(p.clone())
                .or_default()
                .insert(object.clone());
        }
        self.by_object.insert(object, pods);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("policy", &self.policy)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `failure_image` defaults to [`DEFAULT_FAILURE_IMAGE`] when empty.
    pub fn new(
        client: kube::Client,
        agents: Arc<dyn AgentPool>,
        policy: NamespacePolicy,
        recorder: Recorder,
        metrics: Metrics,
        lease_ttl: Duration,
    ) -> Self {
        Context {
            client,
            agents,
            policy,
            recorder,
            metrics,
            lease_ttl,
            failure_image: DEFAULT_FAILURE_IMAGE.into(),
            max_concurrent_injections: DEFAULT_MAX_CONCURRENT_INJECTIONS,
            failures: Mutex::new(HashMap::new()),
            phases: Mutex::new(HashMap::new()),
            targets: Mutex::new(TargetIndex::default()),
        }
    }

    /// The experiments of kind `K` that target `pod` while they run (the pod watch's mapper).
    pub fn objects_targeting<K: ChaosObject>(&self, pod: &Pod) -> Vec<ObjectRef<K>> {
        let key = pod_key(
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        let kind = K::kind(&()).to_string();
        let index = self.targets.lock().expect("targets");
        index
            .by_pod
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, ns, name)| ObjectRef::new(name).within(ns))
            .collect()
    }
}

fn object_key<K: ChaosObject>(o: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

/// Backoff after a failed reconcile: grows per object, never a hot loop.
pub fn error_policy<K: ChaosObject>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&*obj);
    let n = {
        let mut f = ctx.failures.lock().expect("failures");
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    ctx.metrics.reconciled(&K::kind(&()), false);
    let d = plan::backoff(n);
    tracing::warn!(object = %key, failures = n, retry_in = ?d, error = %chain(err), "reconcile failed");
    Action::requeue(d)
}

/// Reconciles one chaos object (wrapped in the finalizer).
pub async fn reconcile<K: ChaosObject>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.meta().namespace.clone().ok_or(Error::NoNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let key = object_key(&*obj);
    let r = finalizer(&api, FINALIZER, obj, |ev| async {
        match ev {
            FinalizerEvent::Apply(o) => apply(o, &ctx, false).await,
            FinalizerEvent::Cleanup(o) => apply(o, &ctx, true).await,
        }
    })
    .await;
    match r {
        Ok(a) => {
            ctx.failures.lock().expect("failures").remove(&key);
            ctx.metrics.reconciled(&K::kind(&()), true);
            Ok(a)
        }
        Err(kube::runtime::finalizer::Error::ApplyFailed(e))
        | Err(kube::runtime::finalizer::Error::CleanupFailed(e)) => Err(e),
        // Deleted meanwhile (a second reconcile of a deletion already let it go): done.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)))
            if s.code == 404 =>
        {
            Ok(Action::await_change())
        }
        Err(kube::runtime::finalizer::Error::AddFinalizer(source)) => Err(Error::Kube {
            what: "add the finalizer".into(),
            source,
        }),
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(source)) => Err(Error::Kube {
            what: "remove the finalizer".into(),
            source,
        }),
        Err(e) => Err(Error::Finalizer(chain(&e))),
    }
}

fn action_kind(a: &ChaosAction) -> ActionKind {
    match a {
        ChaosAction::PodKill { .. } | ChaosAction::ContainerKill { .. } => ActionKind::OneShot,
        ChaosAction::PodFailure => ActionKind::Held,
        ChaosAction::Agent { .. } => ActionKind::Leased,
    }
}

fn container_names(a: &ChaosAction) -> Option<&[String]> {
    match a {
        ChaosAction::ContainerKill { container_names }
        | ChaosAction::Agent {
            container_names, ..
        } => Some(container_names),
        _ => None,
    }
}

/// The container a container-level action hits in `pod`: the first named one that exists
/// (the first container when no names are given).
pub fn target_container(pod: &Pod, names: &[String]) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| names.is_empty() || names.contains(&c.name))
        .map(|c| c.name.clone())
}

fn container_ids(pod: &Pod) -> BTreeMap<String, String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| Some((c.name.clone(), c.container_id.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// How targets and live pods are matched: `namespace/name` (records keep no uid).
fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn to_system(t: &Time) -> SystemTime {
    let ms = t.0.as_millisecond().max(0) as u64;
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn to_time(t: SystemTime) -> Time {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The plan's clock from status: `startedAt`, the Paused condition, and `endsAt` once finished
/// (each target's own clock is on its record: see [`targets_of`]).
pub fn clock_of(status: &ChaosStatus) -> Clock {
    let started = status.started_at.as_ref().map(to_system);
    let paused_at = status
        .condition(st::PAUSED)
        .filter(|c| c.status == "True")
        .map(|c| to_system(&c.last_transition_time));
    let finished = (status.phase == st::Phase::Finished)
        .then(|| status.ends_at.as_ref().map(to_system).or(started))
        .flatten();
    Clock {
        started,
        paused_at,
        finished,
    }
}

/// The target's own clock from its record: when its period in effect began (a record written
/// before records kept it, in effect, falls back to `startedAt`) and what it served before.
fn record_clock(status: &ChaosStatus, r: &Record) -> (Option<SystemTime>, Duration) {
    let since = status
        .since_unix_ms(r)
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    (since, Duration::from_millis(r.served_ms))
}

/// The latest end of the targets in effect according to their records (status `endsAt`).
fn planned_end(status: &ChaosStatus, spec: &plan::Spec) -> Option<SystemTime> {
    let targets: Vec<plan::Target> = status
        .records
        .iter()
        .map(|r| {
            let (since, served) = record_clock(status, r);
            plan::Target {
                id: TargetId {
                    namespace: r.namespace.clone(),
                    pod: r.name.clone(),
                    pod_uid: String::new(),
                    container: String::new(),
                },
                node: String::new(),
                container_id: String::new(),
                phase: record_phase(r.phase),
                since,
                served,
            }
        })
        .collect();
    plan::planned_end(spec, &targets)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn record_phase(p: RecordPhase) -> Phase {
    match p {
        RecordPhase::Injecting => Phase::Pending,
        RecordPhase::Injected | RecordPhase::Recovering => Phase::Injected,
        RecordPhase::Recovered => Phase::Recovered,
        RecordPhase::Gone => Phase::Gone,
        RecordPhase::Failed => Phase::Failed,
    }
}

/// What the reconcile sees of the cluster around one object.
struct World {
    pods: Vec<Pod>,
    nodes: Vec<Node>,
}

impl World {
    fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && pod_key(
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default(),
                ) == key
        })
    }

    fn live(&self, names: Option<&[String]>) -> BTreeMap<String, LivePod> {
        let nodes: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        self.pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let mut containers = container_ids(p);
                if let Some(names) = names {
                    let t = target_container(p, names);
                    containers.retain(|k, _| Some(k) == t.as_ref());
                }
                (
                    pod_key(
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default(),
                    ),
                    LivePod {
                        // A pod not bound to a node (Pending) has no node to lose.
                        node_exists: node.is_empty() || nodes.contains(node.as_str()),
                        node,
                        containers,
                    },
                )
            })
            .collect()
    }
}

fn targets_of(status: &ChaosStatus, world: &World, names: Option<&[String]>) -> Vec<plan::Target> {
    status
        .records
        .iter()
        .map(|r| {
            let container = names
                .and_then(|n| {
                    world
                        .pod(&pod_key(&r.namespace, &r.name))
                        .and_then(|p| target_container(p, n))
                })
                .unwrap_or_default();
            let (since, served) = record_clock(status, r);
            plan::Target {
                since,
                served,
                id: TargetId {
                    namespace: r.namespace.clone(),
                    pod: r.name.clone(),
                    pod_uid: pod_key(&r.namespace, &r.name),
                    container,
                },
                node: r.node.clone(),
                container_id: r.container_id.clone(),
                phase: if replaced(r, world) {
                    // The pod injected is gone; one of the same name stands in its place and
                    // carries no fault: inject it.
                    Phase::Pending
                } else {
                    record_phase(r.phase)
                },
            }
        })
        .collect()
}

/// Whether the pod of a pod-level record that held the fault (or went away) was replaced by
/// another of the same name (a StatefulSet pod, or a pod deleted and recreated): another uid.
fn replaced(r: &Record, world: &World) -> bool {
    matches!(r.phase, RecordPhase::Injected | RecordPhase::Gone)
        && !r.pod_uid.is_empty()
        && world
            .pod(&pod_key(&r.namespace, &r.name))
            .and_then(|p| p.metadata.uid.as_deref())
            .is_some_and(|u| st::short_uid(u) != r.pod_uid)
}

async fn load_world(
    client: &kube::Client,
    namespaces: impl IntoIterator<Item = String>,
) -> Result<World, Error> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list nodes"))?
        .items;
    let mut pods = Vec::new();
    for ns in namespaces.into_iter().collect::<BTreeSet<_>>() {
        let list = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(kube_err(format!("list pods in {ns}")))?;
        pods.extend(list.items);
    }
    Ok(World { pods, nodes })
}

fn truthy(obj: &impl Resource, key: &str) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

struct Run<'a, K: ChaosObject> {
    obj: &'a K,
    ctx: &'a Context,
    status: ChaosStatus,
    action: ChaosAction,
    errors: Vec<String>,
    events: Vec<(EventType, &'static str, String)>,
    /// Why nothing was selected: kept on the Selected condition over the derived message.
    selected_note: Option<(&'static str, String)>,
    /// `<chaos uid>/`: the start of the idempotency key of every agent injection of this object.
    key_prefix: String,
    /// What each node's agent holds (listed at most once per reconcile, then kept up to date
    /// with this reconcile's injects and recovers), or why it could not be listed.
    listed: HashMap<String, Result<Vec<Injection>, String>>,
    /// The status as last written to the server (progress writes move it).
    written: ChaosStatus,
}

/// Whether the injection with idempotency key `key` is one of the target whose live pod has
/// uid `pod_uid` (if known) or whose container has the short id `short_cid`.
fn belongs_to(key: &str, pod_uid: Option<&str>, short_cid: &str) -> bool {
    let Some((_, pod, cid, _)) = parse_idempotency_key(key) else {
        return false;
    };
    pod_uid.is_some_and(|u| !u.is_empty() && u == pod)
        || (!short_cid.is_empty() && st::short_container_id(cid) == short_cid)
}

impl<K: ChaosObject> Run<'_, K> {
    fn event(&mut self, t: EventType, reason: &'static str, msg: String) {
        self.events.push((t, reason, msg));
    }

    fn record(&mut self, id: &TargetId) -> Option<&mut Record> {
        self.status.find_mut(&id.namespace, &id.pod)
    }

    /// This object's injections on `node`: one agent `List` per node per reconcile.
    async fn held_on(&mut self, node: &str) -> Result<Vec<Injection>, String> {
        if !self.listed.contains_key(node) {
            let r = self.ctx.agents.list(node).await.map_err(|e| chain(&e));
            self.listed.insert(node.to_string(), r);
        }
        match &self.listed[node] {
            Ok(all) => Ok(all
                .iter()
                .filter(|i| i.idempotency_key.starts_with(&self.key_prefix))
                .cloned()
                .collect()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Recovers `injections` on `node`, all of them even if one fails; the first error.
    async fn recover_injections(
        &mut self,
        node: &str,
        injections: Vec<Injection>,
    ) -> Result<(), String> {
        let (result, done) = recover_on(&*self.ctx.agents, node, injections).await;
        if let Some(Ok(held)) = self.listed.get_mut(node) {
            held.retain(|i| !done.contains(&i.injection_id));
        }
        result
    }

    /// Deletion or the end: recovers every injection of this object still held on the nodes of
    /// its records (a vanished pod's, a restarted container's that could not be recovered
    /// then). An agent that cannot be listed is left to the leases, which are no longer renewed.
    async fn sweep(&mut self, best_effort: bool) {
        let nodes: BTreeSet<String> = self
            .status
            .records
            .iter()
            .filter(|r| !r.node.is_empty())
            .map(|r| r.node.clone())
            .collect();
        for node in nodes {
            let left = match self.held_on(&node).await {
                Ok(left) => left,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot list the agent: its injections are left to their leases");
                    continue;
                }
            };
            if left.is_empty() {
                continue;
            }
            if let Err(e) = self.recover_injections(&node, left).await {
                if !best_effort {
                    self.errors.push(format!("node {node}: {e}"));
                }
            }
        }
    }

    async fn select(&mut self) -> Result<Option<Action>, Error> {
        let client = &self.ctx.client;
        let ns_default = self.obj.meta().namespace.clone().unwrap_or_default();
        let namespaces = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(kube_err("list namespaces"))?
            .items;
        let sel = self.obj.selector();
        let targets = sel.target_namespaces(&ns_default);
        let allowed: Vec<String> = targets
            .iter()
            .filter(|t| {
                namespaces.iter().any(|n| {
                    n.metadata.name.as_deref() == Some(t.as_str())
                        && self.ctx.policy.permits(n).is_ok()
                })
            })
            .cloned()
            .collect();
        let world = load_world(client, allowed).await?;
        let input = SelectionInput {
            pods: &world.pods,
            nodes: &world.nodes,
            namespaces: &namespaces,
        };
        let selection = match havoc_k8s::select(
            sel,
            self.obj.mode(),
            self.obj.seed(),
            &ns_default,
            &self.ctx.policy,
            &input,
        ) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("spec.selector: {e}");
                self.event(EventType::Warning, "Failed", msg.clone());
                self.selected_note = Some(("InvalidSelector", msg));
                return Ok(Some(Action::await_change()));
            }
        };
        for r in &selection.refused {
            self.event(
                EventType::Warning,
                "Refused",
                format!("namespace {}: {}", r.namespace, r.reason),
            );
        }
        let names = container_names(&self.action).map(<[String]>::to_vec);
        for pod in &selection.pods {
            let cid = names
                .as_deref()
                .and_then(|n| target_container(pod, n))
                .and_then(|c| container_ids(pod).remove(&c))
                .unwrap_or_default();
            st::upsert_target(&mut self.status, pod, &cid);
        }
        if selection.pods.is_empty() {
            let refused: Vec<String> = selection
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.namespace, r.reason))
                .collect();
            let msg = if refused.is_empty() {
                format!(
                    "no pod matched the selector ({} candidates)",
                    selection.matched
                )
            } else {
                format!(
                    "no pod selected; refused namespaces: {}",
                    refused.join("; ")
                )
            };
            self.selected_note = Some(("NoPodsSelected", msg.clone()));
            self.event(EventType::Warning, "Failed", msg);
            return Ok(Some(Action::requeue(Duration::from_secs(30))));
        }
        self.event(
            EventType::Normal,
            "Selected",
            format!(
                "{} of {} matching pod(s) selected",
                selection.pods.len(),
                selection.matched
            ),
        );
        Ok(None)
    }

    /// The peer addresses of a NetworkChaos with a `target` or host names, looked up now (as
    /// Chaos Mesh does when it injects): the target pods' IPs and the names' A/AAAA records.
    /// They go to `status.peers`. An empty result is an error: the fault would hit all traffic.
    async fn resolve_peers(&mut self, peers: &havoc_k8s::Peers) -> Result<Vec<Cidr>, String> {
        let mut found: Vec<(IpAddr, String)> = Vec::new();
        if let Some(t) = &peers.target {
            let client = &self.ctx.client;
            let ns_default = self.obj.meta().namespace.clone().unwrap_or_default();
            let namespaces = Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list namespaces for target: {}", chain(&e)))?
                .items;
            let wanted = t.selector.target_namespaces(&ns_default);
            let existing = wanted.into_iter().filter(|w| {
                namespaces
                    .iter()
                    .any(|n| n.metadata.name.as_deref() == Some(w.as_str()))
            });
            let world = load_world(client, existing)
                .await
                .map_err(|e| format!("list target pods: {}", chain(&e)))?;
            let input = SelectionInput {
                pods: &world.pods,
                nodes: &world.nodes,
                namespaces: &namespaces,
            };
            // Target pods only filter addresses: they are not faulted, so no namespace policy.
            let open = NamespacePolicy {
                allowed: namespaces
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect(),
                opt_in_label: String::new(),
                operator_namespace: String::new(),
                allow_protected: true,
            };
            let seed = self.obj.seed().rotate_left(17) ^ 0x7461_7267_6574;
            let chosen = havoc_k8s::select(&t.selector, t.mode(), seed, &ns_default, &open, &input)
                .map_err(|e| format!("spec.target.selector: {e}"))?;
            for pod in &chosen.pods {
                let name = format!(
                    "pod {}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                let status = pod.status.as_ref();
                let mut ips: Vec<String> = status
                    .and_then(|s| s.pod_ips.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.ip)
                    .collect();
                if ips.is_empty() {
                    ips.extend(status.and_then(|s| s.pod_ip.clone()));
                }
                found.extend(
                    ips.iter()
                        .filter_map(|ip| ip.parse().ok())
                        .map(|ip| (ip, name.clone())),
                );
            }
        }
        for name in &peers.names {
            let lookup = tokio::net::lookup_host((name.as_str(), 0));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => found.extend(addrs.map(|a| (a.ip(), name.clone()))),
                Ok(Err(e)) => return Err(format!("resolve externalTargets host `{name}`: {e}")),
                Err(_) => {
                    return Err(format!(
                        "resolve externalTargets host `{name}`: no answer within 5s"
                    ))
                }
            }
        }
        found.sort();
        found.dedup();
        self.status.peers = found
            .iter()
            .take(64)
            .map(|(ip, from)| format!("{ip} ({from})"))
            .collect();
        let mut cidrs: Vec<Cidr> = found
            .iter()
            .map(|(ip, _)| Cidr {
                addr: *ip,
                prefix: if ip.is_ipv4() { 32 } else { 128 },
            })
            .collect();
        // The literal addresses and CIDRs of externalTargets are peers too.
        if let ChaosAction::Agent {
            fault: havoc_spec::FaultSpec::NetworkChaos(f),
            ..
        } = &self.action
        {
            cidrs.extend(f.cidrs());
        }
        if cidrs.is_empty() {
            return Err("the target selects no pod with an IP address and externalTargets resolved to nothing: there is no peer to limit the fault to, so nothing is injected".into());
        }
        Ok(cidrs)
    }

    /// Injects a batch of targets concurrently, at most [`Context::max_concurrent_injections`]
    /// at a time, and writes progress to status every [`PROGRESS_EVERY`] while a large batch
    /// runs (a 1,000-pod experiment shows its counts moving, not nothing for seconds).
    async fn inject_many(&mut self, world: &World, batch: Vec<(TargetId, String)>) {
        let action = match self.obj.lookups() {
            None => self.action.clone(),
            Some(peers) => match self.resolve_peers(&peers).await {
                Ok(cidrs) => self.obj.action_with_peers(&cidrs),
                Err(msg) => {
                    for (id, _) in &batch {
                        if let Some(r) = self.record(id) {
                            st::mark_failed(r, &msg);
                        }
                    }
                    self.event(EventType::Warning, "Failed", msg.clone());
                    self.errors.push(msg);
                    return;
                }
            },
        };
        let injector = Injector::new(self.obj, self.ctx, action);
        let mut work = Vec::with_capacity(batch.len());
        for (id, cid) in batch {
            match world.pod(&id.pod_uid) {
                Some(pod) => work.push((id, cid, pod.clone())),
                None => {
                    if let Some(r) = self.record(&id) {
                        st::mark_gone(r, plan::POD_DELETED);
                    }
                }
            }
        }
        let limit = self.ctx.max_concurrent_injections.max(1);
        let large = work.len() > limit;
        let injector = &injector;
        let mut results =
            futures::stream::iter(work.into_iter().map(|(id, cid, pod)| async move {
                let started = Instant::now();
                let r = injector.inject_pod(&pod, &id, &cid).await;
                // The moment the fault came into effect: the target's clock starts here.
                let at = SystemTime::now();
                (id, cid, pod, r, at, started.elapsed())
            }))
            .buffer_unordered(limit);
        let mut last_progress = Instant::now();
        while let Some((id, cid, pod, result, at, took)) = results.next().await {
            self.after_inject(&id, &cid, &pod, result, at, took).await;
            if large && last_progress.elapsed() >= PROGRESS_EVERY {
                self.write_progress().await;
                last_progress = Instant::now();
            }
        }
    }

    /// Writes the status as it stands mid-reconcile (best effort: the final write follows).
    async fn write_progress(&mut self) {
        let mut now_status = self.status.clone();
        st::derive_conditions(&mut now_status, &to_time(SystemTime::now()));
        if now_status == self.written {
            return;
        }
        match write_status(self.ctx, self.obj, &self.written, &now_status).await {
            Ok(()) => self.written = now_status,
            Err(e) => {
                tracing::warn!(object = %object_key(self.obj), error = %chain(&e), "failed to write progress to status")
            }
        }
    }

    /// Records the outcome of one injection.
    async fn after_inject(
        &mut self,
        id: &TargetId,
        cid: &str,
        pod: &Pod,
        result: Result<Option<(String, Injection)>, String>,
        at: SystemTime,
        took: Duration,
    ) {
        let Some(before) = self.status.find(&id.namespace, &id.pod).cloned() else {
            return;
        };
        let kind = action_kind(&self.action);
        let at_ms = self.status.offset_ms(unix_ms(at));
        let Some(r) = self.record(id) else { return };
        let held = match result {
            Ok(held) => {
                if !cid.is_empty() {
                    r.container_id = st::short_container_id(cid);
                } else {
                    r.pod_uid = st::short_uid(pod.metadata.uid.as_deref().unwrap_or_default());
                }
                if let Some((node, _)) = &held {
                    r.node.clone_from(node);
                }
                st::mark_injected_at(r, at_ms);
                if kind == ActionKind::OneShot {
                    st::mark_recovered(r);
                }
                self.ctx.metrics.injected(took);
                held
            }
            Err(e) => {
                st::mark_failed(r, &e);
                self.errors
                    .push(format!("{}/{}: {e}", id.namespace, id.pod));
                return;
            }
        };
        if cid.is_empty() && !before.pod_uid.is_empty() {
            let now = st::short_uid(pod.metadata.uid.as_deref().unwrap_or_default());
            if now != before.pod_uid {
                self.event(
                    EventType::Normal,
                    "Reinjected",
                    format!(
                        "{}/{}: the pod was replaced under the same name (uid {} -> {now}): injected again",
                        id.namespace, id.pod, before.pod_uid
                    ),
                );
            }
        }
        let Some((node, injection)) = held.filter(|_| kind == ActionKind::Leased) else {
            return;
        };
        if let Some(Ok(list)) = self.listed.get_mut(&node) {
            if !list
                .iter()
                .any(|i| i.injection_id == injection.injection_id)
            {
                list.push(injection.clone());
            }
        }
        // A restarted container (or a pod replaced under the same name): the injection of the
        // previous container is recovered now rather than left to its lease.
        let short = st::short_container_id(cid);
        if before.injected == 0 || before.container_id.is_empty() || before.container_id == short {
            return;
        }
        let uid = pod.metadata.uid.as_deref();
        let result = match self.held_on(&before.node).await {
            Ok(held) => {
                let stale: Vec<Injection> = held
                    .into_iter()
                    .filter(|i| {
                        i.idempotency_key != injection.idempotency_key
                            && belongs_to(&i.idempotency_key, uid, &before.container_id)
                    })
                    .collect();
                self.recover_injections(&before.node, stale).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.event(
                EventType::Warning,
                "Failed",
                format!(
                    "{}/{}: the fault on the previous container {} was not recovered (left to its lease): {e}",
                    id.namespace, id.pod, before.container_id
                ),
            );
        }
    }
}

/// What injecting needs, cloned out of a [`Run`] so that many injections can borrow it at
/// once while the run's records are updated with each result.
struct Injector {
    client: kube::Client,
    agents: Arc<dyn AgentPool>,
    action: ChaosAction,
    failure_image: String,
    lease_ttl: Duration,
    chaos_uid: String,
    owner: String,
}

impl Injector {
    fn new<K: ChaosObject>(obj: &K, ctx: &Context, action: ChaosAction) -> Self {
        Injector {
            client: ctx.client.clone(),
            agents: ctx.agents.clone(),
            action,
            failure_image: ctx.failure_image.clone(),
            lease_ttl: ctx.lease_ttl,
            chaos_uid: obj.meta().uid.clone().unwrap_or_default(),
            owner: format!(
                "{} {}/{}",
                K::kind(&()),
                obj.meta().namespace.as_deref().unwrap_or_default(),
                obj.meta().name.as_deref().unwrap_or_default()
            ),
        }
    }

    /// Does the action to one pod; for agent actions, the node and what the agent now holds.
    async fn inject_pod(
        &self,
        pod: &Pod,
        id: &TargetId,
        cid: &str,
    ) -> Result<Option<(String, Injection)>, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &id.namespace);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match &self.action {
            ChaosAction::PodKill {
                grace_period_seconds,
            } => {
                let dp = DeleteParams {
                    grace_period_seconds: grace_period_seconds.map(|g| g.max(0) as u32),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pods.delete(&id.pod, &dp).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(e) => Err(format!("delete pod: {}", chain(&e))),
                }
            }
            ChaosAction::PodFailure => {
                let patch = failure_patch(pod, &self.failure_image)?;
                pods.patch(&id.pod, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                    .map(|_| None)
                    .map_err(|e| format!("patch pod images: {}", chain(&e)))
            }
            ChaosAction::ContainerKill { .. } | ChaosAction::Agent { .. } => {
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .ok_or("the pod is not scheduled on a node yet")?;
                if cid.is_empty() {
                    return Err("the target container has not started".into());
                }
                let fault = match &self.action {
                    ChaosAction::Agent { fault, .. } => {
                        fault_json(fault).map_err(|e| format!("encode fault: {e}"))?
                    }
                    _ => crate::agent::container_kill_fault_json(),
                };
                let key = idempotency_key(&self.chaos_uid, &uid, cid, 0);
                let req = InjectRequest {
                    idempotency_key: key.clone(),
                    fault_json: fault,
                    target: Some(ApiTarget {
                        kind: Some(havoc_api::v1::target::Kind::ContainerId(cid.to_string())),
                    }),
                    lease_ttl_ms: self.lease_ttl.as_millis().clamp(1000, 3_600_000) as u32,
                    owner: self.owner.clone(),
                };
                self.agents
                    .inject(&node, req)
                    .await
                    .map(|r| {
                        Some((
                            node,
                            Injection {
                                injection_id: r.injection_id,
                                idempotency_key: key,
                                ..Default::default()
                            },
                        ))
                    })
                    .map_err(|e| chain(&e))
            }
        }
    }
}

/// What recovering one target takes, worked out (one agent `List` per node) before the calls
/// of a batch run concurrently.
enum Undo {
    /// Nothing is held (a failed injection, a pod without the failure images).
    Nothing,
    /// Restore the images of a pod under pod-failure.
    Patch {
        namespace: String,
        name: String,
        patch: serde_json::Value,
    },
    /// Recover these injections on the node's agent.
    Agent {
        node: String,
        injections: Vec<Injection>,
    },
    /// The agent could not be listed.
    Unknown(String),
}

impl Undo {
    /// Does it; the ids of the agent injections recovered (to keep the run's view of the node).
    async fn run(
        self,
        client: kube::Client,
        agents: Arc<dyn AgentPool>,
    ) -> (Result<(), String>, Vec<String>) {
        match self {
            Undo::Nothing => (Ok(()), Vec::new()),
            Undo::Unknown(e) => (Err(e), Vec::new()),
            Undo::Patch {
                namespace,
                name,
                patch,
            } => {
                let pods: Api<Pod> = Api::namespaced(client, &namespace);
                let r = match pods
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(format!("restore pod images: {}", chain(&e))),
                };
                (r, Vec::new())
            }
            Undo::Agent { node, injections } => recover_on(&*agents, &node, injections).await,
        }
    }
}

/// Recovers `injections` on `node`, all of them even if one fails: the first error, and the ids
/// recovered.
async fn recover_on(
    agents: &dyn AgentPool,
    node: &str,
    injections: Vec<Injection>,
) -> (Result<(), String>, Vec<String>) {
    let mut first = None;
    let mut done = Vec::new();
    for inj in injections {
        let req = RecoverRequest {
            injection_id: inj.injection_id.clone(),
        };
        match agents.recover(node, req).await {
            Ok(r) if r.recovered => done.push(inj.injection_id),
            Ok(r) => {
                first.get_or_insert(format!(
                    "agent did not recover {}: {}",
                    inj.idempotency_key, r.reason
                ));
            }
            Err(e) => {
                first.get_or_insert(chain(&e));
            }
        }
    }
    (first.map_or(Ok(()), Err), done)
}

impl<K: ChaosObject> Run<'_, K> {
    /// Recovers a batch of targets concurrently, at most
    /// [`Context::max_concurrent_injections`] at a time (1,000 targets whose ends fall together
    /// are not recovered one after the other, the last ones seconds late), then records each
    /// with the moment its own recovery finished: its clock stops there.
    async fn recover_many(&mut self, world: &World, batch: Vec<(TargetId, Phase, bool)>) {
        let mut work = Vec::with_capacity(batch.len());
        for (id, then, best_effort) in batch {
            let Some(rec) = self.status.find(&id.namespace, &id.pod).cloned() else {
                continue;
            };
            if let Some(r) = self.record(&id) {
                st::mark_recovering(r);
            }
            let undo = match &self.action {
                ChaosAction::PodFailure => match world.pod(&id.pod_uid).and_then(restore_patch) {
                    None => Undo::Nothing,
                    Some(patch) => Undo::Patch {
                        namespace: id.namespace.clone(),
                        name: id.pod.clone(),
                        patch,
                    },
                },
                // A target that failed before anything was held has nothing to recover.
                ChaosAction::Agent { .. }
                    if rec.node.is_empty()
                        || (rec.phase == RecordPhase::Failed && rec.injected <= rec.recovered) =>
                {
                    Undo::Nothing
                }
                ChaosAction::Agent { .. } => {
                    let uid = world.pod(&id.pod_uid).and_then(|p| p.metadata.uid.clone());
                    match self.held_on(&rec.node).await {
                        Ok(held) => Undo::Agent {
                            node: rec.node.clone(),
                            injections: held
                                .into_iter()
                                .filter(|i| {
                                    belongs_to(
                                        &i.idempotency_key,
                                        uid.as_deref(),
                                        &rec.container_id,
                                    )
                                })
                                .collect(),
                        },
                        Err(e) => Undo::Unknown(e),
                    }
                }
                _ => Undo::Nothing,
            };
            let node = rec.node.clone();
            work.push((id, then, best_effort, node, undo));
        }
        let limit = self.ctx.max_concurrent_injections.max(1);
        let (client, agents) = (self.ctx.client.clone(), self.ctx.agents.clone());
        let results: Vec<_> =
            futures::stream::iter(work.into_iter().map(|(id, then, best_effort, node, undo)| {
                let (client, agents) = (client.clone(), agents.clone());
                async move {
                    let (result, done) = undo.run(client, agents).await;
                    // The moment the fault was off: the target's clock stops here.
                    let at = SystemTime::now();
                    (id, then, best_effort, node, result, done, at)
                }
            }))
            .buffer_unordered(limit)
            .collect()
            .await;
        for (id, then, best_effort, node, result, done, at) in results {
            if let Some(Ok(held)) = self.listed.get_mut(&node) {
                held.retain(|i| !done.contains(&i.injection_id));
            }
            let at_ms = self.status.offset_ms(unix_ms(at));
            let Some(r) = self.record(&id) else { continue };
            match result {
                Ok(()) => {
                    st::mark_recovered_at(r, at_ms, then == Phase::Pending);
                    if then == Phase::Pending {
                        r.phase = RecordPhase::Injecting;
                    }
                }
                Err(e) if best_effort => {
                    st::mark_gone(r, &format!("force-cleanup: not recovered: {e}"));
                }
                Err(e) => {
                    st::mark_failed(r, &e);
                    self.errors
                        .push(format!("{}/{}: {e}", id.namespace, id.pod));
                }
            }
        }
    }

    /// Renews the lease of every injection of the Injected targets: one `List` per node, then
    /// one `Renew` per injection. A target whose fault the agent no longer holds (lease ran out,
    /// agent restarted) fails, to be injected again.
    async fn renew(&mut self) {
        let ttl = self.ctx.lease_ttl.as_millis().clamp(1000, 3_600_000) as u32;
        let mut by_node: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for r in &self.status.records {
            if r.phase == RecordPhase::Injected {
                by_node.entry(r.node.clone()).or_default().push((
                    r.namespace.clone(),
                    r.name.clone(),
                    r.container_id.clone(),
                ));
            }
        }
        for (node, targets) in by_node {
            let held = self.held_on(&node).await;
            for (ns, name, cid) in targets {
                let result = match &held {
                    Err(e) => Err(format!("renew lease: {e}")),
                    Ok(held) => {
                        let mine: Vec<&Injection> = held
                            .iter()
                            .filter(|i| belongs_to(&i.idempotency_key, None, &cid))
                            .collect();
                        if mine.is_empty() {
                            if let Some(r) = self.status.find_mut(&ns, &name) {
                                st::mark_failed(r, "the agent no longer holds the fault (lease expired or agent restarted); injecting again");
                            }
                            self.errors.push(format!(
                                "{ns}/{name}: the agent on {node} no longer holds the fault"
                            ));
                            continue;
                        }
                        let mut result = Ok(());
                        for inj in mine {
                            let req = RenewRequest {
                                injection_id: inj.injection_id.clone(),
                                lease_ttl_ms: ttl,
                            };
                            if let Err(e) = self.ctx.agents.renew(&node, req).await {
                                result = Err(format!("renew lease: {}", chain(&e)));
                            }
                        }
                        result
                    }
                };
                if let Err(msg) = result {
                    if let Some(r) = self.status.find_mut(&ns, &name) {
                        r.last_error = Some(msg.clone());
                    }
                    self.errors.push(format!("{ns}/{name}: {msg}"));
                }
            }
        }
    }
}

/// The strategic merge patch that makes every container of `pod` fail: images swapped for
/// `image`, originals kept in [`ORIGINAL_IMAGES_ANNOTATION`]. Idempotent: the originals already
/// recorded are kept (never overwritten with the failure image).
pub fn failure_patch(pod: &Pod, image: &str) -> Result<serde_json::Value, String> {
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let mut originals: BTreeMap<String, String> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_IMAGES_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    for c in &spec.containers {
        if let Some(i) = &c.image {
            if i != image {
                originals.entry(c.name.clone()).or_insert_with(|| i.clone());
            }
        }
    }
    let containers: Vec<_> = spec
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": image}))
        .collect();
    Ok(json!({
        "metadata": {"annotations": {
            ORIGINAL_IMAGES_ANNOTATION: serde_json::to_string(&originals).map_err(|e| e.to_string())?
        }},
        "spec": {"containers": containers}
    }))
}

/// The patch that restores the images recorded by [`failure_patch`] and removes the
/// annotation; `None` when the pod carries no record (nothing to restore).
pub fn restore_patch(pod: &Pod) -> Option<serde_json::Value> {
    let originals: BTreeMap<String, String> = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ORIGINAL_IMAGES_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())?;
    let containers: Vec<_> = originals
        .iter()
        .map(|(n, i)| json!({"name": n, "image": i}))
        .collect();
    Some(json!({
        "metadata": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: null}},
        "spec": {"containers": containers}
    }))
}

async fn apply<K: ChaosObject>(
    obj: Arc<K>,
    ctx: &Context,
    deleting: bool,
) -> Result<Action, Error> {
    let action = obj.action();
    let kind = action_kind(&action);
    let names = container_names(&action).map(<[String]>::to_vec);
    let before = obj.status().cloned().unwrap_or_default();
    let mut run = Run {
        obj: &*obj,
        ctx,
        status: before.clone(),
        action,
        errors: Vec::new(),
        events: Vec::new(),
        selected_note: None,
        key_prefix: format!("{}/", obj.meta().uid.as_deref().unwrap_or_default()),
        listed: HashMap::new(),
        written: before.clone(),
    };
    run.status.observed_generation = obj.meta().generation;
    let spec = plan::Spec {
        duration: obj.duration(),
        kind,
        lease_ttl: ctx.lease_ttl,
    };
    let mut requeue: Option<Action> = None;
    let mut selected_now = false;
    let mut experiment_phase: Option<ExperimentPhase> = None;
    let mut finished_at: Option<SystemTime> = None;
    // Deletion or the end of the experiment: sweep the nodes for leftover injections after.
    let mut sweep: Option<bool> = None;
    'outer: for _round in 0..2 {
        let world = load_world(
            &ctx.client,
            run.status.records.iter().map(|r| r.namespace.clone()),
        )
        .await?;
        let live = world.live(names.as_deref());
        let targets = targets_of(&run.status, &world, names.as_deref());
        let observed = Observed {
            now: SystemTime::now(),
            spec: spec.clone(),
            deleting,
            pause: truthy(&*obj, PAUSE_ANNOTATION),
            force_cleanup: truthy(&*obj, FORCE_CLEANUP_ANNOTATION),
            selected: selected_now
                || !run.status.records.is_empty()
                || run.status.started_at.is_some(),
            targets: &targets,
            clock: clock_of(&run.status),
            live: &live,
        };
        let steps = decide(&observed);
        tracing::debug!(object = %object_key(&*obj), ?steps, "decided");
        let mut steps = steps.into_iter().peekable();
        while let Some(step) = steps.next() {
            match step {
                Step::Select => {
                    if let Some(a) = run.select().await? {
                        requeue = Some(a);
                        break 'outer;
                    }
                    selected_now = true;
                    continue 'outer;
                }
                Step::Inject { id, container_id } => {
                    let mut batch = vec![(id, container_id)];
                    while let Some(Step::Inject { .. }) = steps.peek() {
                        if let Some(Step::Inject { id, container_id }) = steps.next() {
                            batch.push((id, container_id));
                        }
                    }
                    run.inject_many(&world, batch).await;
                }
                Step::RenewLeases => run.renew().await,
                Step::Recover {
                    id,
                    then,
                    best_effort,
                } => {
                    let mut batch = vec![(id, then, best_effort)];
                    while let Some(Step::Recover { .. }) = steps.peek() {
                        if let Some(Step::Recover {
                            id,
                            then,
                            best_effort,
                        }) = steps.next()
                        {
                            batch.push((id, then, best_effort));
                        }
                    }
                    let forced = batch.iter().all(|(_, _, b)| *b);
                    run.recover_many(&world, batch).await;
                    if !forced && !run.errors.is_empty() && deleting {
                        break 'outer;
                    }
                }
                Step::MarkGone { id, reason } => {
                    if let Some(r) = run.record(&id) {
                        let why = match (reason, r.last_error.take()) {
                            // Say why it never came into effect.
                            (plan::NOT_INJECTED, Some(e)) => format!("{reason}: last error: {e}"),
                            _ => reason.to_string(),
                        };
                        st::mark_gone(r, &why);
                    }
                }
                Step::SetClock(c) => {
                    run.status.started_at = c.started.map(to_time);
                    if c.finished.is_some() && finished_at.is_none() {
                        // After this reconcile's recoveries: the measured end.
                        finished_at = Some(SystemTime::now());
                    }
                    let now = to_time(SystemTime::now());
                    let was = run
                        .status
                        .condition(st::PAUSED)
                        .is_some_and(|c| c.status == "True");
                    if c.paused_at.is_some() != was {
                        st::set_paused(&mut run.status, c.paused_at.is_some(), &now);
                    }
                }
                Step::SetPhase(p) => {
                    experiment_phase = Some(p);
                    if kind == ActionKind::Leased
                        && matches!(p, ExperimentPhase::Deleting | ExperimentPhase::Finished)
                    {
                        sweep = Some(deleting && truthy(&*obj, FORCE_CLEANUP_ANNOTATION));
                    }
                    let key = object_key(&*obj);
                    let mut phases = ctx.phases.lock().expect("phases");
                    let old = phases.insert(key, p.as_str());
                    ctx.metrics
                        .phase_changed(&K::kind(&()), old, Some(p.as_str()));
                    if p == ExperimentPhase::Deleting {
                        // Gone from the gauge once deleted.
                    }
                }
                Step::Event { reason, message } => run.event(EventType::Normal, reason, message),
                Step::RemoveFinalizer => {
                    requeue = Some(Action::await_change());
                }
                Step::RequeueAfter(d) => requeue = Some(Action::requeue(d)),
            }
        }
        break;
    }
    if let Some(best_effort) = sweep {
        if run.errors.is_empty() || best_effort {
            run.sweep(best_effort).await;
        }
    }
    match (finished_at, experiment_phase) {
        (Some(end), _) => run.status.ends_at = Some(to_time(end)),
        // While running: the latest end of the targets in effect, as it stands.
        (None, Some(ExperimentPhase::Running)) => {
            run.status.ends_at = planned_end(&run.status, &spec).map(to_time);
        }
        // Paused: no end until resumed.
        (None, Some(ExperimentPhase::Paused)) => run.status.ends_at = None,
        _ => {}
    }
    let now = to_time(SystemTime::now());
    st::derive_conditions(&mut run.status, &now);
    if experiment_phase == Some(ExperimentPhase::Running) && run.status.phase == st::Phase::Finished
    {
        // Every target went away, but the experiment's time is not over: a pod that comes
        // back under the same name is injected (Finished would end the experiment for good).
        run.status.phase = st::Phase::Running;
    }
    if let Some((reason, msg)) = run.selected_note.take() {
        st::set_condition(&mut run.status, st::SELECTED, false, reason, msg, &now);
    }
    transition_events(&before, &mut run);
    let Run {
        status,
        errors,
        events,
        written,
        ..
    } = run;
    if status != written {
        write_status(ctx, &*obj, &written, &status).await?;
    }
    let reference = obj.object_ref(&());
    for (type_, reason, note) in events {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "failed to publish event");
        }
    }
    let running = !deleting && !matches!(status.phase, st::Phase::Finished | st::Phase::Failed);
    ctx.targets.lock().expect("targets").set(
        (
            K::kind(&()).to_string(),
            obj.meta().namespace.clone().unwrap_or_default(),
            obj.name_any(),
        ),
        if running {
            status
                .records
                .iter()
                .map(|r| pod_key(&r.namespace, &r.name))
                .collect()
        } else {
            Vec::new()
        },
    );
    if deleting {
        let key = object_key(&*obj);
        let old = ctx.phases.lock().expect("phases").remove(&key);
        ctx.metrics.phase_changed(&K::kind(&()), old, None);
    }
    if !errors.is_empty() {
        return Err(Error::Targets {
            failed: errors.len(),
            total: status.records.len(),
            first: errors[0].clone(),
        });
    }
    Ok(requeue.unwrap_or_else(Action::await_change))
}

/// Writes `status` to the status subresource as a merge patch from `written` (what the server
/// holds).
async fn write_status<K: ChaosObject>(
    ctx: &Context,
    obj: &K,
    written: &ChaosStatus,
    status: &ChaosStatus,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let patch = merge_patch(
        &serde_json::to_value(written).unwrap_or_default(),
        &serde_json::to_value(status).unwrap_or_default(),
    );
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": patch })),
    )
    .await
    .map_err(kube_err("patch status"))?;
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `before` into `after`: `after` itself, plus a
/// `null` for every field `before` has and `after` left out (a field omitted from a merge patch
/// keeps its old value on the server: a cleared `endsAt`, a group of records that emptied).
pub fn merge_patch(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in a {
                let v = match b.get(k) {
                    Some(old) => merge_patch(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => after.clone(),
    }
}

/// Events for condition transitions (Injected, Recovered, Failed).
fn transition_events<K: ChaosObject>(before: &ChaosStatus, run: &mut Run<'_, K>) {
    let became = |t: &str| {
        let was = before.condition(t).is_some_and(|c| c.status == "True");
        let is = run.status.condition(t).is_some_and(|c| c.status == "True");
        !was && is
    };
    let (inj, rec) = (became(st::ALL_INJECTED), became(st::ALL_RECOVERED));
    let c = run.status.counts;
    if inj {
        run.event(
            EventType::Normal,
            "Injected",
            format!("{} target(s) injected", c.injected.max(c.recovered)),
        );
    }
    if rec && !run.events.iter().any(|e| e.1 == "Recovered") {
        run.event(
            EventType::Normal,
            "Recovered",
            format!("{} recovered, {} gone", c.recovered, c.gone),
        );
    }
    let failed_before = before.counts.failed;
    if c.failed > failed_before {
        let first = run
            .status
            .records
            .iter()
            .find(|r| r.phase == RecordPhase::Failed)
            .and_then(|r| r.last_error.clone().map(|e| format!("{}: {e}", r.key())))
            .unwrap_or_default();
        run.event(
            EventType::Warning,
            "Failed",
            format!("{} target(s) failed: {first}", c.failed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn pod_failure_swaps_images_and_restores_them_exactly() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "app"},
            "spec": {"containers": [
                {"name": "app", "image": "registry.local/app:1.2@sha256:abc"},
                {"name": "proxy", "image": "envoy:1.30"}
            ]}
        }));
        let patch = failure_patch(&p, DEFAULT_FAILURE_IMAGE).expect("patch");
        assert_eq!(
            patch["spec"]["containers"],
            json!([
                {"name": "app", "image": DEFAULT_FAILURE_IMAGE},
                {"name": "proxy", "image": DEFAULT_FAILURE_IMAGE}
            ])
        );
        // Apply the patch by hand, then patch again: the originals must survive.
        let mut failed = p.clone();
        failed.metadata.annotations = Some(
            [(
                ORIGINAL_IMAGES_ANNOTATION.to_string(),
                patch["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]
                    .as_str()
                    .expect("annotation")
                    .to_string(),
            )]
            .into(),
        );
        for c in &mut failed.spec.as_mut().expect("spec").containers {
            c.image = Some(DEFAULT_FAILURE_IMAGE.into());
        }
        let again = failure_patch(&failed, DEFAULT_FAILURE_IMAGE).expect("patch again");
        assert_eq!(
            again["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION],
            patch["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]
        );
        let restore = restore_patch(&failed).expect("restore");
        assert_eq!(
            restore,
            json!({
                "metadata": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: null}},
                "spec": {"containers": [
                    {"name": "app", "image": "registry.local/app:1.2@sha256:abc"},
                    {"name": "proxy", "image": "envoy:1.30"}
                ]}
            })
        );
        assert_eq!(
            restore_patch(&p),
            None,
            "nothing to restore on an untouched pod"
        );
    }

    #[test]
    fn merge_patch_clears_what_was_left_out() {
        let before = json!({"phase": "Paused", "endsAt": "t", "counts": {"injected": 2, "selected": 2},
                            "records": {"groups": [1, 2]}});
        let after =
            json!({"phase": "Running", "counts": {"selected": 2}, "records": {"groups": [1]}});
        assert_eq!(
            merge_patch(&before, &after),
            json!({"phase": "Running", "endsAt": null, "counts": {"selected": 2, "injected": null},
                   "records": {"groups": [1]}})
        );
    }

    #[test]
    fn target_container_prefers_named_containers() {
        let p = pod(json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app"}, {"name": "db"}]}
        }));
        assert_eq!(target_container(&p, &[]), Some("app".into()));
        assert_eq!(target_container(&p, &["db".into()]), Some("db".into()));
        assert_eq!(target_container(&p, &["x".into()]), None);
    }

    #[test]
    fn clock_comes_from_started_at_the_paused_condition_and_a_finished_end() {
        let mut s = ChaosStatus::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        s.started_at = Some(to_time(t0));
        s.ends_at = Some(to_time(t0 + Duration::from_secs(100)));
        let c = clock_of(&s);
        assert_eq!(c.started, Some(t0));
        assert_eq!(c.paused_at, None);
        assert_eq!(c.finished, None, "endsAt of a running experiment is a plan");
        st::set_paused(&mut s, true, &to_time(t0 + Duration::from_secs(70)));
        let c = clock_of(&s);
        assert_eq!(c.paused_at, Some(t0 + Duration::from_secs(70)));
        s.phase = st::Phase::Finished;
        assert_eq!(clock_of(&s).finished, Some(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn records_map_to_targets_on_their_own_clocks() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s = ChaosStatus {
            started_at: Some(to_time(t0)),
            ..Default::default()
        };
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "app", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]}
        }))
        .expect("pod");
        let r = st::upsert_target(&mut s, &p, "containerd://0123456789abcdef");
        st::mark_injected_at(r, 1_234);
        let (since, served) = record_clock(&s, &s.records[0]);
        assert_eq!(since, Some(t0 + Duration::from_millis(1_234)));
        assert_eq!(served, Duration::ZERO);
        // A record from before records kept their clock: in effect since startedAt.
        s.records[0].since_ms = None;
        assert_eq!(record_clock(&s, &s.records[0]).0, Some(t0));
        let spec = plan::Spec {
            duration: Some(Duration::from_secs(60)),
            kind: ActionKind::Leased,
            lease_ttl: Duration::from_secs(30),
        };
        s.records[0].since_ms = Some(500);
        s.records[0].served_ms = 10_000;
        assert_eq!(
            planned_end(&s, &spec),
            Some(t0 + Duration::from_millis(500 + 50_000))
        );
    }
}
