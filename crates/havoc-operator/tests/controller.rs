//! Controller tests against kube-rs's mock service (tower-test): a scripted API server answers
//! from an in-memory world, records every call, and the tests assert the exact calls (method,
//! path, body fields) one reconcile makes. The agent is the [`FakeAgentPool`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use havoc_k8s::status::{self as st, ChaosStatus, RecordPhase};
use havoc_k8s::{NetworkChaos, PodChaos};
use havoc_operator::agent::FakeCall;
use havoc_operator::controller::{self, Context};
use havoc_operator::metrics::Metrics;
use havoc_operator::FakeAgentPool;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

/// The cluster the fake API server answers from.
#[derive(Clone)]
struct World {
    chaos: Value,
    pods: Vec<Value>,
    nodes: Vec<&'static str>,
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn respond(w: &World, c: &Call) -> (u16, Value) {
    let segs: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
    match (c.method.as_str(), segs.as_slice()) {
        ("GET", ["api", "v1", "nodes"]) => (
            200,
            list(
                "NodeList",
                w.nodes
                    .iter()
                    .map(|n| json!({"metadata": {"name": n}}))
                    .collect(),
            ),
        ),
        ("GET", ["api", "v1", "namespaces"]) => (
            200,
            list(
                "NamespaceList",
                vec![
                    json!({"metadata": {"name": "app", "labels": {"havoc.dev/chaos": "enabled"}}}),
                    json!({"metadata": {"name": "closed"}}),
                    json!({"metadata": {"name": "kube-system"}}),
                ],
            ),
        ),
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => (
            200,
            list(
                "PodList",
                w.pods
                    .iter()
                    .filter(|p| p["metadata"]["namespace"] == *ns)
                    .cloned()
                    .collect(),
            ),
        ),
        ("DELETE" | "PATCH", ["api", "v1", "namespaces", _, "pods", name]) => {
            match w.pods.iter().find(|p| p["metadata"]["name"] == *name) {
                Some(p) => (200, p.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }
        ("PATCH", ["apis", "havoc.dev", "v1alpha1", "namespaces", _, _, _, "status"]) => {
            let mut o = w.chaos.clone();
            o["status"] = c.body["status"].clone();
            (200, o)
        }
        ("PATCH", ["apis", "havoc.dev", "v1alpha1", "namespaces", _, _, _]) => {
            (200, w.chaos.clone())
        }
        ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            (201, c.body.clone())
        }
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                   "message": format!("unexpected {} {}", c.method, c.path)}),
        ),
    }
}

struct Harness {
    ctx: Arc<Context>,
    calls: Arc<Mutex<Vec<Call>>>,
    agents: FakeAgentPool,
}

fn harness(world: World) -> Harness {
    harness_with(world, FakeAgentPool::new())
}

/// A harness whose node agents are `agents` (which may hold injections already).
fn harness_with(world: World, agents: FakeAgentPool) -> Harness {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let rec = calls.clone();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, v) = respond(&world, &call);
            rec.lock().expect("calls").push(call);
            let resp = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&v).expect("json")))
                .expect("response");
            send.send_response(resp);
        }
    });
    let client = kube::Client::new(svc, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "havoc-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context::new(
        client,
        Arc::new(agents.clone()),
        havoc_k8s::NamespacePolicy::default(),
        recorder,
        Metrics::new(),
        Duration::from_secs(30),
    );
    Harness {
        ctx: Arc::new(ctx),
        calls,
        agents,
    }
}

fn pod(name: &str, uid: &str, app: &str, node: &str, cid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "app", "uid": uid, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "web:1"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "main", "containerID": cid, "image": "web:1", "imageID": "", "ready": true,
             "restartCount": 0}
        ]}
    })
}

fn chaos(kind: &str, plural_spec: Value, status: Option<Value>, deleting: bool) -> Value {
    let mut o = json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "exp", "namespace": "app", "uid": "chaos-uid-1",
                     "generation": 1, "resourceVersion": "7",
                     "finalizers": ["havoc.dev/recover"]},
        "spec": plural_spec,
    });
    if let Some(s) = status {
        o["status"] = s;
    }
    if deleting {
        o["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
    o
}

fn summary(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn world_pods() -> Vec<Value> {
    vec![
        pod(
            "web-0",
            "aaaaaaaa-0000",
            "web",
            "n1",
            "containerd://c0c0c0c0c0c0c0c0",
        ),
        pod(
            "web-1",
            "bbbbbbbb-1111",
            "web",
            "n1",
            "containerd://c1c1c1c1c1c1c1c1",
        ),
        pod(
            "db-0",
            "cccccccc-2222",
            "db",
            "n1",
            "containerd://d0d0d0d0d0d0d0d0",
        ),
    ]
}

fn status_patch(calls: &[Call]) -> Value {
    calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
        .map(|c| c.body["status"].clone())
        .expect("a status patch")
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn create_selects_and_kills_every_matching_pod_with_the_grace_period() {
    let spec = json!({"action": "pod-kill", "mode": "all", "gracePeriod": 5,
                      "selector": {"labelSelectors": {"app": "web"}}});
    let obj = chaos("PodChaos", spec, None, false);
    let h = harness(World {
        chaos: obj.clone(),
        pods: world_pods(),
        nodes: vec!["n1"],
    });
    let o: PodChaos = serde_json::from_value(obj).expect("PodChaos");
    controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("reconcile");
    let calls = h.calls.lock().expect("calls").clone();
    let s = summary(&calls);
    assert_eq!(
        &s[..9],
        &[
            "GET /api/v1/nodes",
            "GET /api/v1/namespaces",
            "GET /api/v1/nodes",
            "GET /api/v1/namespaces/app/pods",
            "GET /api/v1/nodes",
            "GET /api/v1/namespaces/app/pods",
            "DELETE /api/v1/namespaces/app/pods/web-0",
            "DELETE /api/v1/namespaces/app/pods/web-1",
            "PATCH /apis/havoc.dev/v1alpha1/namespaces/app/podchaos/exp/status",
        ],
        "{s:#?}"
    );
    for (c, uid) in calls[6..8].iter().zip(["aaaaaaaa-0000", "bbbbbbbb-1111"]) {
        assert_eq!(c.body["gracePeriodSeconds"], 5, "{:?}", c.body);
        assert_eq!(c.body["preconditions"]["uid"], uid, "{:?}", c.body);
    }
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Finished", "{st:#}");
    assert_eq!(st["counts"]["selected"], 2, "{st:#}");
    let names: Vec<String> = parsed(&st).records.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, vec!["web-0".to_string(), "web-1".to_string()]);
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(cond("Selected").as_deref(), Some("True"));
    assert_eq!(cond("AllInjected").as_deref(), Some("True"));
    assert_eq!(cond("AllRecovered").as_deref(), Some("True"));
    let reasons = event_reasons(&calls);
    assert!(reasons.contains(&"Selected".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Injected".to_string()), "{reasons:?}");
    assert!(h.agents.calls().is_empty(), "pod-kill never calls an agent");
}

#[tokio::test]
async fn a_closed_namespace_is_refused_with_an_event() {
    let spec = json!({"action": "pod-kill", "mode": "all",
                      "selector": {"namespaces": ["closed"]}});
    let obj = chaos("PodChaos", spec, None, false);
    let h = harness(World {
        chaos: obj.clone(),
        pods: vec![],
        nodes: vec!["n1"],
    });
    let o: PodChaos = serde_json::from_value(obj).expect("PodChaos");
    let action = controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );
    let calls = h.calls.lock().expect("calls").clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("namespaces/closed/pods")),
        "a refused namespace is never listed: {:#?}",
        summary(&calls)
    );
    let st = status_patch(&calls);
    let sel = st["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Selected")
        .expect("Selected condition")
        .clone();
    assert_eq!(sel["status"], "False");
    assert!(
        sel["message"]
            .as_str()
            .unwrap_or_default()
            .contains("closed"),
        "{sel}"
    );
    assert!(event_reasons(&calls).contains(&"Refused".to_string()));
}

fn network_spec() -> Value {
    json!({"action": "loss", "mode": "all", "duration": "60s", "loss": {"loss": "10%"},
           "selector": {"labelSelectors": {"app": "web"}}})
}

#[tokio::test]
async fn network_chaos_injects_through_the_agent_with_keys_and_a_lease() {
    let obj = chaos("NetworkChaos", network_spec(), None, false);
    let h = harness(World {
        chaos: obj.clone(),
        pods: world_pods(),
        nodes: vec!["n1"],
    });
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    let action = controller::reconcile(Arc::new(o.clone()), h.ctx.clone())
        .await
        .expect("reconcile");
    // Renewal every ttl/3.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
    let injects: Vec<_> = h
        .agents
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Inject { node, req } => Some((node, req)),
            _ => None,
        })
        .collect();
    assert_eq!(injects.len(), 2);
    assert_eq!(injects[0].0, "n1");
    assert_eq!(
        injects[0].1.idempotency_key,
        "chaos-uid-1/aaaaaaaa-0000/containerd://c0c0c0c0c0c0c0c0/0"
    );
    assert_eq!(injects[0].1.lease_ttl_ms, 30_000);
    let fault: Value = serde_json::from_str(&injects[0].1.fault_json).expect("fault json");
    assert_eq!(fault["kind"], "NetworkChaos");
    // Then the leases: one List of the node, one Renew per injection found there.
    let rest: Vec<_> = h.agents.calls().into_iter().skip(2).collect();
    assert_eq!(
        rest,
        vec![
            FakeCall::List { node: "n1".into() },
            renew_call("inj-1"),
            renew_call("inj-2"),
        ]
    );
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert!(st["endsAt"].is_string(), "{st:#}");
    assert!(
        !st["records"].to_string().contains("id="),
        "no agent injection ids in status: {st:#}"
    );
    let p = parsed(&st);
    assert_eq!(p.records[0].injected, 1);
    assert_eq!(p.records[0].container_id, "c0c0c0c0c0c0");
    assert_eq!(p.records[0].node, "n1");
}

#[tokio::test]
async fn an_unreachable_agent_fails_the_targets_and_backs_off() {
    let obj = chaos("NetworkChaos", network_spec(), None, false);
    let h = harness(World {
        chaos: obj.clone(),
        pods: world_pods(),
        nodes: vec!["n1"],
    });
    h.agents.set_unreachable("n1", true);
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    let o = Arc::new(o);
    let err = controller::reconcile(o.clone(), h.ctx.clone())
        .await
        .expect_err("agent down");
    assert!(err.to_string().contains("2 of 2 target(s) failed"), "{err}");
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    assert_eq!(st["counts"]["failed"], 2, "{st:#}");
    let p = parsed(&st);
    assert!(
        p.records.iter().all(|r| r
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connection refused")),
        "{p:#?}"
    );
    assert!(event_reasons(&calls).contains(&"Failed".to_string()));
    // Backoff grows per object.
    let a1 = controller::error_policy(o.clone(), &err, h.ctx.clone());
    let a2 = controller::error_policy(o.clone(), &err, h.ctx.clone());
    assert_eq!(
        a1,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        a2,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
}

fn renew_call(id: &str) -> FakeCall {
    FakeCall::Renew {
        node: "n1".into(),
        req: havoc_api::v1::RenewRequest {
            injection_id: id.into(),
            lease_ttl_ms: 30_000,
        },
    }
}

/// The idempotency key the operator gives the injection into this pod's container.
fn key(pod_uid: &str, cid: &str) -> String {
    format!("chaos-uid-1/{pod_uid}/{cid}/0")
}

/// A status with these pods (name, uid, container id, agent injection id) injected on n1 (built
/// with havoc-k8s's own bookkeeping, so the test does not depend on the compact record
/// encoding); the agent of n1 holds the injections.
fn injected_status(
    agents: &FakeAgentPool,
    pods: &[(&str, &str, &str, &str)],
    started: &str,
    ends: &str,
) -> Value {
    let mut s = ChaosStatus::default();
    for (name, uid, cid, inj) in pods {
        let p: Pod = serde_json::from_value(pod(name, uid, "web", "n1", cid)).expect("pod");
        let r = st::upsert_target(&mut s, &p, cid);
        st::mark_injected(r);
        agents.preload("n1", &key(uid, cid), inj);
    }
    let t = |x: &str| Time(x.parse().expect("timestamp"));
    s.started_at = Some(t(started));
    s.ends_at = Some(t(ends));
    st::derive_conditions(&mut s, &t(started));
    serde_json::to_value(&s).expect("status json")
}

fn parsed(st: &Value) -> ChaosStatus {
    serde_json::from_value(st.clone()).expect("the patched status parses")
}

#[tokio::test]
async fn delete_recovers_live_targets_and_counts_a_vanished_pod_as_gone() {
    let agents = FakeAgentPool::new();
    let status = injected_status(
        &agents,
        &[
            (
                "web-0",
                "aaaaaaaa-0000",
                "containerd://c0c0c0c0c0c0c0c0",
                "inj-7",
            ),
            (
                "web-9",
                "99999999-9999",
                "containerd://c9c9c9c9c9c9c9c9",
                "inj-8",
            ),
        ],
        "2025-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
    );
    // Another experiment's injection on the same node is not touched.
    agents.preload(
        "n1",
        "chaos-uid-2/aaaaaaaa-0000/containerd://c0c0c0c0c0c0c0c0/0",
        "inj-9",
    );
    let obj = chaos("NetworkChaos", network_spec(), Some(status), true);
    let h = harness_with(
        World {
            chaos: obj.clone(),
            pods: world_pods(),
            nodes: vec!["n1"],
        },
        agents,
    );
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("cleanup");
    let recover = |id: &str| FakeCall::Recover {
        node: "n1".into(),
        req: havoc_api::v1::RecoverRequest {
            injection_id: id.into(),
        },
    };
    // The live target's injection, found through one List; then the vanished pod's, left on
    // the node, by the final sweep (not left to its lease).
    assert_eq!(
        h.agents.calls(),
        vec![
            FakeCall::List { node: "n1".into() },
            recover("inj-7"),
            recover("inj-8"),
        ]
    );
    assert_eq!(
        h.agents.held(),
        vec!["chaos-uid-2/aaaaaaaa-0000/containerd://c0c0c0c0c0c0c0c0/0".to_string()]
    );
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    let p = parsed(&st);
    let gone = p.find("app", "web-9").expect("web-9 record");
    assert_eq!(gone.phase, RecordPhase::Gone);
    assert_eq!(gone.last_error.as_deref(), Some("pod deleted"));
    assert_eq!(st["counts"]["gone"], 1, "{st:#}");
    assert_eq!(st["counts"]["recovered"], 1, "{st:#}");
    // Then the finalizer is removed with a JSON patch on the object.
    let last = calls
        .iter()
        .rfind(|c| c.method == Method::PATCH && !c.path.ends_with("/status"))
        .expect("finalizer patch");
    assert_eq!(
        last.path,
        "/apis/havoc.dev/v1alpha1/namespaces/app/networkchaos/exp"
    );
    assert!(last.body.to_string().contains("remove"), "{}", last.body);
}

#[tokio::test]
async fn force_cleanup_removes_the_finalizer_when_the_agent_is_down() {
    let agents = FakeAgentPool::new();
    let status = injected_status(
        &agents,
        &[(
            "web-0",
            "aaaaaaaa-0000",
            "containerd://c0c0c0c0c0c0c0c0",
            "inj-7",
        )],
        "2025-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
    );
    let mut obj = chaos("NetworkChaos", network_spec(), Some(status), true);
    let h = harness_with(
        World {
            chaos: obj.clone(),
            pods: world_pods(),
            nodes: vec!["n1"],
        },
        agents,
    );
    h.agents.set_unreachable("n1", true);
    let o: NetworkChaos = serde_json::from_value(obj.clone()).expect("NetworkChaos");
    let err = controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect_err("without force-cleanup deletion waits for the agent");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert_eq!(
        h.agents.calls(),
        vec![FakeCall::List { node: "n1".into() }],
        "one List of the unreachable node, no sweep after the failure"
    );
    obj["metadata"]["annotations"] = json!({"havoc.dev/force-cleanup": "true"});
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("forced cleanup finishes");
    let calls = h.calls.lock().expect("calls").clone();
    let st = calls
        .iter()
        .rev()
        .find(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
        .map(|c| c.body["status"].clone())
        .expect("a status patch");
    let gone = parsed(&st).records[0].clone();
    assert_eq!(gone.phase, RecordPhase::Gone, "{st:#}");
    assert!(
        gone.last_error
            .as_deref()
            .unwrap_or_default()
            .starts_with("force-cleanup: not recovered"),
        "{gone:?}"
    );
    assert!(calls
        .iter()
        .any(|c| c.method == Method::PATCH && c.path.ends_with("/networkchaos/exp")));
}

#[tokio::test]
async fn duration_end_recovers_everything_and_finishes() {
    let agents = FakeAgentPool::new();
    let status = injected_status(
        &agents,
        &[
            (
                "web-0",
                "aaaaaaaa-0000",
                "containerd://c0c0c0c0c0c0c0c0",
                "inj-7",
            ),
            (
                "web-1",
                "bbbbbbbb-1111",
                "containerd://c1c1c1c1c1c1c1c1",
                "inj-8",
            ),
        ],
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:01:00Z",
    );
    let obj = chaos("NetworkChaos", network_spec(), Some(status), false);
    let h = harness_with(
        World {
            chaos: obj.clone(),
            pods: world_pods(),
            nodes: vec!["n1"],
        },
        agents,
    );
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    let action = controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let recovered = h
        .agents
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::Recover { .. }))
        .count();
    assert_eq!(recovered, 2);
    let lists = h
        .agents
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::List { .. }))
        .count();
    assert_eq!(lists, 1, "one List per node, not per target");
    assert!(h.agents.held().is_empty());
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Finished", "{st:#}");
    assert!(event_reasons(&calls).contains(&"Recovered".to_string()));
}

#[tokio::test]
async fn pause_annotation_recovers_and_sets_the_paused_condition() {
    let agents = FakeAgentPool::new();
    let status = injected_status(
        &agents,
        &[(
            "web-0",
            "aaaaaaaa-0000",
            "containerd://c0c0c0c0c0c0c0c0",
            "inj-7",
        )],
        "2025-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
    );
    let mut obj = chaos("NetworkChaos", network_spec(), Some(status), false);
    obj["metadata"]["annotations"] = json!({"havoc.dev/pause": "true"});
    let h = harness_with(
        World {
            chaos: obj.clone(),
            pods: world_pods(),
            nodes: vec!["n1"],
        },
        agents,
    );
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    let action = controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(h
        .agents
        .calls()
        .iter()
        .any(|c| matches!(c, FakeCall::Recover { req, .. } if req.injection_id == "inj-7")));
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Paused", "{st:#}");
    let paused = st["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Paused")
        .expect("Paused")
        .clone();
    assert_eq!(paused["status"], "True");
    assert!(event_reasons(&calls).contains(&"Paused".to_string()));
    // The pod itself is untouched.
    assert!(!calls.iter().any(|c| c.path.contains("/pods/")));
}

#[tokio::test]
async fn a_restarted_container_is_injected_again_and_its_old_injection_recovered() {
    let agents = FakeAgentPool::new();
    let old = "containerd://c0c0c0c0c0c0c0c0";
    let status = injected_status(
        &agents,
        &[
            ("web-0", "aaaaaaaa-0000", old, "inj-7"),
            (
                "web-1",
                "bbbbbbbb-1111",
                "containerd://c1c1c1c1c1c1c1c1",
                "inj-8",
            ),
        ],
        // Injected a moment ago (records without their own clock count from startedAt): the
        // 60 s are not over.
        &k8s_openapi::jiff::Timestamp::now().to_string(),
        "2099-01-01T00:00:00Z",
    );
    let obj = chaos("NetworkChaos", network_spec(), Some(status), false);
    // web-0's container restarted: same pod, new container id.
    let new = "containerd://e0e0e0e0e0e0e0e0";
    let mut pods = world_pods();
    pods[0] = pod("web-0", "aaaaaaaa-0000", "web", "n1", new);
    let h = harness_with(
        World {
            chaos: obj.clone(),
            pods,
            nodes: vec!["n1"],
        },
        agents,
    );
    let o: NetworkChaos = serde_json::from_value(obj).expect("NetworkChaos");
    let action = controller::reconcile(Arc::new(o), h.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
    let calls = h.agents.calls();
    let FakeCall::Inject { node, req } = &calls[0] else {
        panic!("{calls:#?}")
    };
    assert_eq!(
        (node.as_str(), req.idempotency_key.as_str()),
        ("n1", key("aaaaaaaa-0000", new).as_str())
    );
    assert_eq!(
        calls[1..],
        [
            // The old container's injection is recovered now, not left to its lease...
            FakeCall::List { node: "n1".into() },
            FakeCall::Recover {
                node: "n1".into(),
                req: havoc_api::v1::RecoverRequest {
                    injection_id: "inj-7".into(),
                },
            },
            // ...and the leases renewed from the same List: the new injection and web-1's.
            renew_call("inj-1"),
            renew_call("inj-8"),
        ],
        "{calls:#?}"
    );
    assert_eq!(
        h.agents.held(),
        vec![
            key("aaaaaaaa-0000", new),
            key("bbbbbbbb-1111", "containerd://c1c1c1c1c1c1c1c1"),
        ]
    );
    let calls = h.calls.lock().expect("calls").clone();
    let st = status_patch(&calls);
    let p = parsed(&st);
    let r = p.find("app", "web-0").expect("web-0 record");
    assert_eq!(
        (r.phase, r.injected, r.container_id.as_str()),
        (RecordPhase::Injected, 2, "e0e0e0e0e0e0")
    );
    assert_eq!(
        r.since_ms,
        Some(0),
        "injected again, the target continues its own clock (here: from startedAt)"
    );
    let unchanged = p.find("app", "web-1").expect("web-1 record");
    assert_eq!(
        unchanged.injected, 1,
        "an unchanged container is not injected again"
    );
}
