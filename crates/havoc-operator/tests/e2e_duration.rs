//! End-to-end against a real API server (`../shared/k8s`, no kubelet needed): a fault's duration
//! counts from EACH target's injection. The controllers run in-process over pods bound to a fake
//! node (their container status patched by the test) and an agent pool that is slow on purpose
//! (400 ms per injection, one at a time: bounded parallelism at its narrowest) and notes when
//! every injection and recovery happened. Two NetworkChaos run at once:
//!
//! - `staggered`: three pods injected 0.4 s apart, a fourth whose container starts 1.5 s after;
//!   each must be held for the duration from its own injection (never less, at most the stated
//!   tolerance more), recovered at its own end, the record's `since` must be the measured
//!   injection time and `endsAt` the last recovery;
//! - `paused`: two pods paused mid-run and resumed: each is held for the duration in all.
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set; without it, it prints that it skipped, or fails when `CI`
//! is set. Leaves nothing: the namespace (pods, chaos objects) and the fake node are removed,
//! from a guard's `Drop` too if the test panics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use havoc_api::v1::{
    InjectRequest, InjectResponse, Injection, RecoverRequest, RecoverResponse, RenewRequest,
    RenewResponse,
};
use havoc_k8s::status::{ChaosStatus, Phase};
use havoc_k8s::NetworkChaos;
use havoc_operator::agent::AgentError;
use havoc_operator::{AgentPool, FakeAgentPool};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// The fault's duration in both experiments.
const DURATION: Duration = Duration::from_secs(6);
/// How long a slow agent takes per injection.
const INJECT_DELAY: Duration = Duration::from_millis(400);
/// How much longer than the duration a target may be held: the reconcile that recovers it
/// lists nodes and pods first (never shorter: that is the point).
const LATE: Duration = Duration::from_millis(500);
/// The record's `since` against the injection's measured end.
const SINCE_SKEW: Duration = Duration::from_millis(50);

fn kubeconfig() -> Option<String> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but HAVOC_E2E_KUBECONFIG is not: this e2e test must run in CI")
        }
        _ => {
            println!("skipped: HAVOC_E2E_KUBECONFIG not set (start ../shared/k8s, source env.sh)");
            None
        }
    }
}

async fn client_from(path: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

/// What the agent did, and when (wall clock, as the records keep it).
#[derive(Debug, Clone)]
enum Did {
    Inject { key: String, id: String },
    Recover { id: String },
}

/// A [`FakeAgentPool`] that takes [`INJECT_DELAY`] per injection and logs each injection and
/// recovery with the time it completed.
#[derive(Clone, Default)]
struct TimedAgents {
    inner: FakeAgentPool,
    log: Arc<Mutex<Vec<(SystemTime, Did)>>>,
}

impl AgentPool for TimedAgents {
    fn inject(
        &self,
        node: &str,
        req: InjectRequest,
    ) -> BoxFuture<'_, Result<InjectResponse, AgentError>> {
        let node = node.to_string();
        Box::pin(async move {
            tokio::time::sleep(INJECT_DELAY).await;
            let key = req.idempotency_key.clone();
            let r = self.inner.inject(&node, req).await?;
            let did = Did::Inject {
                key,
                id: r.injection_id.clone(),
            };
            self.log.lock().expect("log").push((SystemTime::now(), did));
            Ok(r)
        })
    }
    fn renew(
        &self,
        node: &str,
        req: RenewRequest,
    ) -> BoxFuture<'_, Result<RenewResponse, AgentError>> {
        self.inner.renew(node, req)
    }
    fn recover(
        &self,
        node: &str,
        req: RecoverRequest,
    ) -> BoxFuture<'_, Result<RecoverResponse, AgentError>> {
        let node = node.to_string();
        Box::pin(async move {
            let id = req.injection_id.clone();
            let r = self.inner.recover(&node, req).await?;
            let did = Did::Recover { id };
            self.log.lock().expect("log").push((SystemTime::now(), did));
            Ok(r)
        })
    }
    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<Injection>, AgentError>> {
        self.inner.list(node)
    }
}

impl TimedAgents {
    /// Per pod uid: the periods its fault was held, `(injected, recovered)` in order.
    fn periods(&self) -> BTreeMap<String, Vec<(SystemTime, Option<SystemTime>)>> {
        let log = self.log.lock().expect("log").clone();
        let mut uid_of: BTreeMap<String, String> = BTreeMap::new();
        let mut out: BTreeMap<String, Vec<(SystemTime, Option<SystemTime>)>> = BTreeMap::new();
        for (at, did) in log {
            match did {
                Did::Inject { key, id } => {
                    let uid = key
                        .split('/')
                        .nth(1)
                        .expect("key has a pod uid")
                        .to_string();
                    uid_of.insert(id, uid.clone());
                    out.entry(uid).or_default().push((at, None));
                }
                Did::Recover { id } => {
                    let uid = &uid_of[&id];
                    let last = out
                        .get_mut(uid)
                        .and_then(|p| p.last_mut())
                        .expect("injected");
                    last.1.get_or_insert(at);
                }
            }
        }
        out
    }
}

/// Removes the namespace (pods without grace: no kubelet finalizes them; chaos objects'
/// finalizers stripped) and the fake node; waits until the namespace is gone, bounded.
async fn remove_all(client: &kube::Client, ns: &str, node: &str) -> Result<(), String> {
    let chaos: Api<NetworkChaos> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = chaos.list(&ListParams::default()).await {
        for o in list.items {
            let strip = json!({"metadata": {"finalizers": null}});
            let _ = chaos
                .patch(
                    &o.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&strip),
                )
                .await;
            let _ = chaos.delete(&o.name_any(), &DeleteParams::default()).await;
        }
    }
    let _ = Api::<Pod>::namespaced(client.clone(), ns)
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(ns, &DeleteParams::default()).await;
    let _ = Api::<Node>::all(client.clone())
        .delete(node, &DeleteParams::default())
        .await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if matches!(nss.get_opt(ns).await, Ok(None)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("namespace {ns} still there after 90 s"))
}

/// Cleanup on panic, on its own thread, runtime and client.
struct Cleanup {
    kubeconfig: String,
    ns: String,
    node: String,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (path, ns, node) = (self.kubeconfig.clone(), self.ns.clone(), self.node.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(async move {
                let client = client_from(&path).await;
                remove_all(&client, &ns, &node).await
            });
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup: {e}"),
            Err(_) => eprintln!("cleanup: timed out"),
        }
    }
}

fn container_status(name: &str, i: usize) -> serde_json::Value {
    json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "main", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
        "containerID": format!("containerd://{:0>16x}{i:0>48x}", crate_hash(name)),
        "state": {"running": {}}
    }]}})
}

fn crate_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn network_chaos(name: &str, app: &str) -> NetworkChaos {
    serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "NetworkChaos",
        "metadata": {"name": name},
        "spec": {"action": "loss", "mode": "all", "duration": format!("{}s", DURATION.as_secs()),
                 "loss": {"loss": "10%"}, "selector": {"labelSelectors": {"app": app}}}
    }))
    .expect("NetworkChaos")
}

async fn wait_status(
    api: &Api<NetworkChaos>,
    name: &str,
    what: &str,
    pred: impl Fn(&ChaosStatus) -> bool,
) -> ChaosStatus {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(60) {
        last = api.get(name).await.ok().and_then(|o| o.status);
        if last.as_ref().is_some_and(&pred) {
            return last.expect("status");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: timed out waiting for {what}; last status: {last:#?}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_default()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_held_for_the_duration_from_its_own_injection() {
    let Some(path) = kubeconfig() else { return };
    let client = client_from(&path).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-e2e-duration").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
    }
    // A CRD just created serves its kind only once established.
    let all: Api<NetworkChaos> = Api::all(client.clone());
    let t = Instant::now();
    while all.list(&ListParams::default().limit(1)).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "CRDs not established in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let suffix = format!("{:x}", std::process::id());
    let ns = format!("havoc-e2e-dur-{suffix}");
    let node = format!("havoc-e2e-dur-node-{suffix}");
    let mut cleanup = Cleanup {
        kubeconfig: path.clone(),
        ns: ns.clone(),
        node: node.clone(),
        armed: true,
    };
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}})).expect("node"),
        )
        .await
        .expect("create fake node");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"havoc.dev/chaos": "enabled"}}}),
            )
            .expect("ns"),
        )
        .await
        .expect("create namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let names = [
        ("s-0", "staggered"),
        ("s-1", "staggered"),
        ("s-2", "staggered"),
        ("s-late", "staggered"),
        ("p-0", "paused"),
        ("p-1", "paused"),
    ];
    for (i, (name, app)) in names.iter().enumerate() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
        // s-late's container has not started yet.
        if *name != "s-late" {
            pods.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(container_status(name, i)),
            )
            .await
            .expect("patch pod status");
        }
    }
    let uid_of: BTreeMap<String, String> = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.metadata.uid.clone().expect("uid")))
        .collect();

    let agents = TimedAgents::default();
    let mut ctx = havoc_operator::controller::Context::new(
        client.clone(),
        Arc::new(agents.clone()),
        havoc_k8s::NamespacePolicy::default(),
        kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "havoc-e2e-duration".into(),
                instance: None,
            },
        ),
        havoc_operator::metrics::Metrics::new(),
        // Renewed every second: also how soon a container that started is noticed.
        Duration::from_secs(3),
    );
    ctx.max_concurrent_injections = 1;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(havoc_operator::run_controllers(
        Arc::new(ctx),
        havoc_operator::shutdown_signal(async move {
            let _ = stop_rx.await;
        }),
    ));

    let chaos: Api<NetworkChaos> = Api::namespaced(client.clone(), &ns);
    for (name, app) in [("staggered", "staggered"), ("paused", "paused")] {
        chaos
            .create(&PostParams::default(), &network_chaos(name, app))
            .await
            .expect("create NetworkChaos");
    }
    // s-late's container starts 1.5 s after the other three are in.
    wait_status(&chaos, "staggered", "3 injected", |s| {
        s.counts.injected == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pods.patch_status(
        "s-late",
        &PatchParams::default(),
        &Patch::Merge(container_status("s-late", 3)),
    )
    .await
    .expect("start s-late's container");
    let late_start = SystemTime::now();
    // Pause `paused` once both targets are in, then resume 2 s later.
    wait_status(&chaos, "paused", "both injected", |s| {
        s.counts.injected == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let annotate = |v: serde_json::Value| {
        let chaos = chaos.clone();
        async move {
            chaos
                .patch(
                    "paused",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"havoc.dev/pause": v}}})),
                )
                .await
                .expect("pause annotation");
        }
    };
    annotate(json!("true")).await;
    wait_status(&chaos, "paused", "Paused", |s| s.phase == Phase::Paused).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    annotate(serde_json::Value::Null).await;

    let staggered = wait_status(&chaos, "staggered", "Finished", |s| {
        s.phase == Phase::Finished
    })
    .await;
    let paused = wait_status(&chaos, "paused", "Finished", |s| s.phase == Phase::Finished).await;
    let periods = agents.periods();

    // Staggered: one period per target, each from its own injection.
    let mut firsts = Vec::new();
    let mut last_recovery = SystemTime::UNIX_EPOCH;
    for name in ["s-0", "s-1", "s-2", "s-late"] {
        let p = &periods[&uid_of[name]];
        assert_eq!(p.len(), 1, "{name}: one injection, one recovery: {p:?}");
        let (inj, rec) = (p[0].0, p[0].1.expect("recovered"));
        let held = since(rec, inj);
        let r = staggered.find(&ns, name).expect("record");
        let rec_since = staggered.since_unix_ms(r).expect("record's since");
        let skew = (rec_since - unix_ms(inj)).unsigned_abs();
        eprintln!(
            "{name}: injected +{:.0} ms after the first, held {:.0} ms (duration {:.0} ms, +{:.0} ms); record: since {skew} ms from the measured injection, served {} ms",
            ms(since(inj, periods[&uid_of["s-0"]][0].0)),
            ms(held),
            ms(DURATION),
            ms(held.saturating_sub(DURATION)),
            r.served_ms
        );
        assert!(
            held >= DURATION,
            "{name} held {held:?}, less than {DURATION:?}"
        );
        assert!(
            held <= DURATION + LATE,
            "{name} held {held:?}, > {DURATION:?} + {LATE:?}"
        );
        assert!(
            Duration::from_millis(skew) <= SINCE_SKEW,
            "{name}: record since is {skew} ms off the injection"
        );
        let served = Duration::from_millis(r.served_ms);
        assert!(
            served >= DURATION && served <= DURATION + LATE,
            "{name}: record served {served:?}"
        );
        firsts.push(inj);
        last_recovery = last_recovery.max(rec);
    }
    // The injections really were staggered (else this test proves nothing): 0.4 s apart, and
    // the late container's once it started, 1.5 s after the others.
    for w in firsts[..3].windows(2) {
        assert!(
            since(w[1], w[0]) >= INJECT_DELAY - Duration::from_millis(50),
            "not staggered: {firsts:?}"
        );
    }
    assert!(
        firsts[3] >= late_start && since(firsts[3], firsts[2]) >= Duration::from_millis(1_500),
        "s-late injected {:?} after s-2, its container started {:?} after s-2",
        since(firsts[3], firsts[2]),
        since(late_start, firsts[2])
    );
    // endsAt is the measured end: the last recovery (status keeps whole seconds).
    let ends = staggered
        .ends_at
        .as_ref()
        .expect("endsAt")
        .0
        .as_millisecond();
    let off = ends - unix_ms(last_recovery);
    eprintln!("staggered: endsAt {off} ms from the last recovery (whole seconds)");
    assert!((-1000..=1000).contains(&off), "endsAt {off} ms off");

    // Paused: two periods each, summing to the duration.
    for name in ["p-0", "p-1"] {
        let p = &periods[&uid_of[name]];
        assert_eq!(p.len(), 2, "{name}: before and after the pause: {p:?}");
        let held: Duration = p
            .iter()
            .map(|(i, r)| since(r.expect("recovered"), *i))
            .sum();
        let gap = since(p[1].0, p[0].1.expect("paused"));
        let r = paused.find(&ns, name).expect("record");
        eprintln!(
            "{name}: held {:.0} ms + {:.0} ms = {:.0} ms around a {:.0} ms pause; record served {} ms",
            ms(since(p[0].1.expect("r"), p[0].0)),
            ms(since(p[1].1.expect("r"), p[1].0)),
            ms(held),
            ms(gap),
            r.served_ms
        );
        assert!(gap >= Duration::from_secs(2), "{name}: paused {gap:?}");
        assert!(
            held >= DURATION && held <= DURATION + LATE,
            "{name}: held {held:?} in all"
        );
        let served = Duration::from_millis(r.served_ms);
        assert!(
            served.abs_diff(held) <= SINCE_SKEW * 2,
            "{name}: record served {served:?}, measured {held:?}"
        );
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    remove_all(&client, &ns, &node)
        .await
        .expect("remove the namespace and the node");
    cleanup.armed = false;
}
