//! End-to-end against a real API server and a real node (`../shared/k8s`, started with
//! `K8S_KUBELET=1`): real pods run busybox under containerd + runc, a Deployment brings killed
//! pods back, and the operator runs as real `havoc operator` processes (this test binary
//! re-executed into [`operator_process`]), two of them with leader election on the Lease API.
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set (a path to the cluster's admin kubeconfig); without it,
//! it prints that it skipped, or fails when `CI` is set (CI must run it).
//!
//! It leaves nothing behind: the namespaces it made (and with them the pods, the Lease and the
//! chaos objects) are removed and waited for, finalizers of chaos objects an operator could no
//! longer remove are stripped first, and the operator processes are stopped. The cleanup runs
//! at the end of the test, and again from a guard's `Drop` if the test panicked (on its own
//! thread, runtime and client: the test's client is tied to the test's runtime).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_k8s::status::{ChaosStatus, Phase, RecordPhase};
use havoc_k8s::{NetworkChaos, PodChaos, StressChaos};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// Env var carrying the options of a re-executed operator process.
const CHILD_ENV: &str = "HAVOC_E2E_OPERATOR";
/// How long one wait may take before the test fails (pods start in ~1 s on the harness).
const WAIT: Duration = Duration::from_secs(60);
/// The busybox image the harness imports into its containerd.
const BUSYBOX: &str = "havoc.local/busybox:1";

fn kubeconfig() -> Option<String> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI is set but HAVOC_E2E_KUBECONFIG is not: the e2e suite must run in CI \
             (start ../shared/k8s with K8S_KUBELET=1 and source its env.sh)"
        ),
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

// ---------------------------------------------------------------------------------------------
// The operator as a process.

/// Re-executed by [`Operator::spawn`] with [`CHILD_ENV`] set: runs `havoc operator` (the
/// library's `run`, as the binary does) until SIGTERM. Without that env var it does nothing:
/// it is a helper of the e2e test, not a test of its own.
#[test]
fn operator_process() {
    let Ok(cfg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("operator options");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,havoc_operator=debug,kube=warn,tower=warn,hyper=warn",
        ))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let s = |k: &str| cfg[k].as_str().expect(k).to_string();
    let opts = havoc_operator::OperatorOptions {
        operator_namespace: s("namespace"),
        identity: s("identity"),
        metrics_addr: ([127, 0, 0, 1], 0).into(),
        // No agent certificates: PodChaos must run all the same.
        agent_tls: havoc_operator::AgentTls {
            ca: "/nonexistent/havoc-e2e/ca.pem".into(),
            cert: "/nonexistent/havoc-e2e/operator.pem".into(),
            key: "/nonexistent/havoc-e2e/operator-key.pem".into(),
            server_name: havoc_operator::agent::AGENT_TLS_NAME.into(),
        },
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let r = rt.block_on(havoc_operator::run(opts));
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = r {
        eprintln!("havoc operator failed: {e:#}");
        std::process::exit(3);
    }
    eprintln!("havoc operator stopped cleanly");
}

/// A running operator process; SIGKILLed on drop if still running.
struct Operator {
    identity: String,
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn spawn(kubeconfig: &str, namespace: &str, identity: &str, logs: &Path) -> Operator {
        let log = logs.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "operator_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                json!({"namespace": namespace, "identity": identity}).to_string(),
            )
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HAVOC_E2E_KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn the operator process");
        Operator {
            identity: identity.into(),
            child,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits (polling, bounded) for the process to exit; its status, or None on timeout.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last lines of operator {} ---", self.identity);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup.

/// Removes the test's namespaces and waits until they are gone: strips the finalizers of chaos
/// objects left in them (no operator may be left to remove them), deletes pods without grace,
/// then the namespaces. Bounded in time.
async fn remove_namespaces(client: &kube::Client, names: &[String]) -> Result<(), String> {
    let strip = json!({"metadata": {"finalizers": null}});
    for ns in names {
        macro_rules! unfinalize {
            ($k:ty) => {{
                let api: Api<$k> = Api::namespaced(client.clone(), ns);
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for o in list.items {
                        let _ = api
                            .patch(
                                &o.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&strip),
                            )
                            .await;
                        let _ = api.delete(&o.name_any(), &DeleteParams::default()).await;
                    }
                }
            }};
        }
        unfinalize!(PodChaos);
        unfinalize!(NetworkChaos);
        unfinalize!(StressChaos);
        let _ = Api::<Deployment>::namespaced(client.clone(), ns)
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await;
        let _ = Api::<Pod>::namespaced(client.clone(), ns)
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for ns in names {
            match nss.get_opt(ns).await {
                Ok(None) => {}
                Ok(Some(_)) => left.push(ns.clone()),
                Err(e) => left.push(format!("{ns} ({e})")),
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(90) {
            return Err(format!("namespaces still there after 90 s: {left:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Fallback cleanup on panic: runs [`remove_namespaces`] on its own thread, runtime and client.
struct Cleanup {
    kubeconfig: String,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.namespaces);
        if names.is_empty() {
            return;
        }
        let path = self.kubeconfig.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(async move {
                let client = client_from(&path).await;
                remove_namespaces(&client, &names).await
            });
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("e2e cleanup: {e}"),
            Err(_) => eprintln!("e2e cleanup: timed out"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A busybox pod that runs until SIGTERM (it exits at once on TERM).
fn pod_spec() -> serde_json::Value {
    json!({
        "terminationGracePeriodSeconds": 5,
        "automountServiceAccountToken": false,
        "containers": [{
            "name": "main",
            "image": BUSYBOX,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        }]
    })
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": pod_spec()
    }))
    .expect("pod")
}

fn pod_chaos(name: &str, spec: serde_json::Value) -> PodChaos {
    serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("PodChaos")
}

fn running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().all(|c| c.ready))
}

async fn status_of(api: &Api<PodChaos>, name: &str) -> Option<ChaosStatus> {
    api.get(name).await.ok().and_then(|o| o.status)
}

async fn wait_status(
    api: &Api<PodChaos>,
    name: &str,
    what: &str,
    pred: impl Fn(&ChaosStatus) -> bool,
) -> ChaosStatus {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < WAIT {
        last = status_of(api, name).await;
        if last.as_ref().is_some_and(&pred) {
            return last.expect("status");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{name}: timed out waiting for {what}; last status: {last:#?}");
}

async fn delete_and_wait_gone(api: &Api<PodChaos>, name: &str) -> Duration {
    let start = Instant::now();
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete chaos");
    wait_for(
        &format!("{name} to be gone (finalizer removed)"),
        WAIT,
        || async { api.get_opt(name).await.ok().flatten().is_none() },
    )
    .await;
    start.elapsed()
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(havoc_operator::leader::LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The image of container `main` and why it waits, if it does.
async fn container_state(pods: &Api<Pod>, name: &str) -> (String, Option<String>, i32) {
    let p = pods.get(name).await.expect("get pod");
    let image = p.spec.as_ref().expect("spec").containers[0]
        .image
        .clone()
        .unwrap_or_default();
    let cs = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next());
    let waiting = cs
        .as_ref()
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    let restarts = cs.map_or(0, |c| c.restart_count);
    (image, waiting, restarts)
}

fn secs(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// The suite.

#[tokio::test]
async fn operator_on_a_real_cluster_with_a_real_node() {
    let Some(path) = kubeconfig() else { return };
    let t0 = Instant::now();
    let client = client_from(&path).await;
    let logs = tempfile::tempdir().expect("log dir");
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());

    // A Ready node to run real pods on.
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .any(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
    assert!(
        ready,
        "no Ready node: start the harness with K8S_KUBELET=1 (real pods are needed)"
    );

    // CRDs (server-side apply, as `kubectl apply --server-side` would).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
        wait_for(&format!("CRD {name} Established"), WAIT, || async {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .await;
    }
    step("CRDs installed");

    let suffix = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos()
            & 0xfff
    );
    let sys = format!("havoc-e2e-sys-{suffix}");
    let open = format!("havoc-e2e-open-{suffix}");
    let closed = format!("havoc-e2e-closed-{suffix}");
    let mut cleanup = Cleanup {
        kubeconfig: path.clone(),
        namespaces: vec![sys.clone(), open.clone(), closed.clone()],
    };
    let nss: Api<Namespace> = Api::all(client.clone());
    for (n, opt_in) in [(&sys, false), (&open, true), (&closed, false)] {
        let mut ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": n}})).expect("ns");
        if opt_in {
            ns.metadata.labels = Some([("havoc.dev/chaos".into(), "enabled".into())].into());
        }
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    let chaos: Api<PodChaos> = Api::namespaced(client.clone(), &open);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &open);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &sys);

    // --- CEL rules: the API server rejects bad objects with our messages. -------------------
    for (spec, message) in [
        (
            json!({"action": "pod-kill", "mode": "fixed", "selector": {}}),
            "value is required with modes fixed",
        ),
        (
            json!({"action": "pod-kill", "mode": "fixed", "value": "abc", "selector": {}}),
            "value must be a whole number >= 1 with mode fixed",
        ),
        (
            json!({"action": "pod-kill", "mode": "one", "value": "3", "selector": {}}),
            "value is only used with modes fixed",
        ),
        (
            json!({"action": "pod-failure", "duration": "0s", "selector": {}}),
            "duration must be greater than 0",
        ),
        (
            json!({"action": "pod-failure", "gracePeriod": 3, "selector": {}}),
            "gracePeriod only applies to action pod-kill",
        ),
        (
            json!({"action": "container-kill", "selector": {}}),
            "containerNames is required with action container-kill",
        ),
    ] {
        match chaos
            .create(&PostParams::default(), &pod_chaos("bad", spec.clone()))
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{spec}: {s:?}");
                assert!(s.message.contains(message), "{spec}: {}", s.message);
            }
            other => panic!("{spec} was not rejected by the API server: {other:?}"),
        }
    }
    step("CEL rules reject bad objects");

    // --- A missing leader-election namespace is a clear error, not a loop. ------------------
    let mut lost = Operator::spawn(
        &path,
        &format!("havoc-e2e-missing-{suffix}"),
        "op-missing",
        logs.path(),
    );
    let status = lost.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "an operator whose namespace is missing must fail: {status:?}\n{}",
        lost.log_text()
    );
    assert!(
        lost.log_text().contains("does not exist"),
        "{}",
        lost.log_text()
    );
    step("missing leader namespace refused");

    // --- Two operator processes, leader election on the real Lease API. ---------------------
    let mut op_a = Operator::spawn(&path, &sys, "op-a", logs.path());
    wait_for("op-a to lead", WAIT, || async {
        lease_holder(&leases).await.as_deref() == Some("op-a")
    })
    .await;
    let mut op_b = Operator::spawn(&path, &sys, "op-b", logs.path());
    assert!(
        op_a.log_text().contains("cannot run"),
        "the operator says which kinds cannot run without agent certificates:\n{}",
        op_a.log_text()
    );
    step("op-a leads, op-b follows");

    // --- pod-kill, each mode, on a Deployment that brings the pods back. --------------------
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), &open)
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    let web = ListParams::default().labels("app=web");
    let running_web = || async {
        pods.list(&web)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(running)
                    .filter_map(|p| p.metadata.uid)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for (i, (mode, value, killed)) in [
        ("one", None, 1usize),
        ("fixed", Some("2"), 2),
        ("fixed-percent", Some("50"), 2),
        ("all", None, 4),
    ]
    .into_iter()
    .enumerate()
    {
        wait_for("4 web pods running", WAIT, || async {
            running_web().await.len() == 4
        })
        .await;
        let before = running_web().await;
        let name = format!("kill-{i}");
        let mut spec = json!({"action": "pod-kill", "mode": mode,
                              "selector": {"labelSelectors": {"app": "web"}}});
        if let Some(v) = value {
            spec["value"] = json!(v);
        }
        chaos
            .create(&PostParams::default(), &pod_chaos(&name, spec))
            .await
            .expect("create PodChaos");
        let st = wait_status(&chaos, &name, "Finished", |s| s.phase == Phase::Finished).await;
        assert_eq!(st.records.len(), killed, "mode {mode}: {st:#?}");
        for c in ["Selected", "AllInjected", "AllRecovered"] {
            assert_eq!(
                st.condition(c).map(|c| c.status.as_str()),
                Some("True"),
                "mode {mode}: {c}: {st:#?}"
            );
        }
        // The killed pods are gone (graceful delete, the kubelet stops them) and the
        // Deployment replaced each one.
        wait_for(
            &format!("mode {mode}: {killed} replacement pod(s) running"),
            WAIT,
            || async {
                let now = running_web().await;
                let survivors = before.iter().filter(|u| now.contains(u)).count();
                now.len() == 4 && survivors == 4 - killed
            },
        )
        .await;
        delete_and_wait_gone(&chaos, &name).await;
    }
    step("pod-kill: one, fixed, fixed-percent, all; the Deployment brought the pods back");

    // --- A namespace that did not opt in is refused. ----------------------------------------
    let closed_chaos: Api<PodChaos> = Api::namespaced(client.clone(), &closed);
    closed_chaos
        .create(
            &PostParams::default(),
            &pod_chaos(
                "refused",
                json!({"action": "pod-kill", "mode": "all", "selector": {}}),
            ),
        )
        .await
        .expect("create");
    wait_status(&closed_chaos, "refused", "the refusal", |s| {
        s.condition("Selected")
            .is_some_and(|c| c.status == "False" && c.message.contains("not open to chaos"))
    })
    .await;
    delete_and_wait_gone(&closed_chaos, "refused").await;
    step("closed namespace refused");

    // --- pod-failure with a duration, paused and resumed, on a running pod. -----------------
    pods.create(&PostParams::default(), &pod("held", "held"))
        .await
        .expect("create pod");
    wait_for("pod held running", WAIT, || async {
        pods.get("held").await.is_ok_and(|p| running(&p))
    })
    .await;
    chaos
        .create(
            &PostParams::default(),
            &pod_chaos(
                "fail",
                json!({"action": "pod-failure", "mode": "all", "duration": "15s",
                       "selector": {"pods": {(open.clone()): ["held"]}}}),
            ),
        )
        .await
        .expect("create");
    wait_for(
        "the container to fail on the swapped image",
        WAIT,
        || async {
            let (image, waiting, _) = container_state(&pods, "held").await;
            image.starts_with("havoc.invalid/pod-failure")
                && waiting.as_deref() == Some("ErrImageNeverPull")
        },
    )
    .await;
    let st = wait_status(&chaos, "fail", "Running", |s| s.phase == Phase::Running).await;
    assert_eq!((st.counts.injected, st.counts.recovered), (1, 0), "{st:#?}");
    let pause = |on: bool| {
        let v = if on { json!("true") } else { json!(null) };
        let chaos = chaos.clone();
        async move {
            chaos
                .patch(
                    "fail",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"havoc.dev/pause": v}}})),
                )
                .await
                .expect("pause annotation");
        }
    };
    pause(true).await;
    let paused_at = Instant::now();
    let st = wait_status(&chaos, "fail", "Paused", |s| s.phase == Phase::Paused).await;
    assert_eq!(
        st.counts.injected, 0,
        "nothing is injected while paused: {st:#?}"
    );
    wait_for(
        "pause to restore the image and the container to run again",
        WAIT,
        || async {
            let (image, waiting, _) = container_state(&pods, "held").await;
            image == BUSYBOX
                && waiting.is_none()
                && pods.get("held").await.is_ok_and(|p| running(&p))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pause(false).await;
    let paused_for = paused_at.elapsed().as_secs_f64();
    wait_for("resume to swap the image again", WAIT, || async {
        container_state(&pods, "held")
            .await
            .0
            .starts_with("havoc.invalid/pod-failure")
    })
    .await;
    let st = wait_status(&chaos, "fail", "Finished", |s| s.phase == Phase::Finished).await;
    let (start, end) = (
        secs(st.started_at.as_ref().expect("startedAt")),
        secs(st.ends_at.as_ref().expect("endsAt")),
    );
    let held_for = end - start - paused_for;
    assert!(
        (held_for - 15.0).abs() < 3.0,
        "duration 15s, paused {paused_for:.1}s: held {held_for:.1}s ({st:#?})"
    );
    assert_eq!(
        (st.counts.injected, st.counts.recovered, st.counts.selected),
        (0, 1, 1),
        "counts after the end: {st:#?}"
    );
    let (image, _, _) = container_state(&pods, "held").await;
    assert_eq!(image, BUSYBOX, "the original image is back");
    wait_for(
        "the container running again after the end",
        WAIT,
        || async { pods.get("held").await.is_ok_and(|p| running(&p)) },
    )
    .await;
    delete_and_wait_gone(&chaos, "fail").await;
    step("pod-failure: duration, pause and resume, counts to zero");

    // --- The leader dies mid-experiment: the follower takes over within the lease. ----------
    pods.create(&PostParams::default(), &pod("held2", "held2"))
        .await
        .expect("create pod");
    wait_for("pod held2 running", WAIT, || async {
        pods.get("held2").await.is_ok_and(|p| running(&p))
    })
    .await;
    chaos
        .create(
            &PostParams::default(),
            &pod_chaos(
                "fail2",
                json!({"action": "pod-failure", "mode": "all", "duration": "10m",
                       "selector": {"pods": {(open.clone()): ["held2"]}}}),
            ),
        )
        .await
        .expect("create");
    wait_status(&chaos, "fail2", "AllInjected", |s| {
        s.condition("AllInjected")
            .is_some_and(|c| c.status == "True")
    })
    .await;
    op_a.child.kill().expect("SIGKILL op-a");
    let killed_at = Instant::now();
    op_a.wait_exit(Duration::from_secs(5)).await;
    wait_for("op-b to take over", Duration::from_secs(30), || async {
        lease_holder(&leases).await.as_deref() == Some("op-b")
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(15 + 5 + 2),
        "took over after {takeover:?}: more than the 15 s lease and a 5 s round"
    );
    // op-b sees the experiment as it is: the target is held once, not injected again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = status_of(&chaos, "fail2").await.expect("status");
    assert_eq!(st.records.len(), 1, "{st:#?}");
    assert_eq!(
        (st.records[0].phase, st.records[0].injected),
        (RecordPhase::Injected, 1),
        "injected exactly once across the takeover: {st:#?}"
    );
    step(&format!("op-a killed; op-b took over after {takeover:.1?}"));

    // The pod is replaced under the same name (deleted and created again): the pod watch
    // notices, and the new pod is injected too.
    let old_uid = pods.get("held2").await.expect("pod").metadata.uid;
    pods.delete("held2", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete held2");
    wait_for("held2 deleted", WAIT, || async {
        pods.get_opt("held2").await.ok().flatten().is_none()
    })
    .await;
    let replaced_at = Instant::now();
    pods.create(&PostParams::default(), &pod("held2", "held2"))
        .await
        .expect("recreate held2");
    wait_for("the replacement pod to be injected", WAIT, || async {
        let p = pods.get("held2").await.expect("pod");
        p.metadata.uid != old_uid
            && p.spec.expect("spec").containers[0]
                .image
                .as_deref()
                .is_some_and(|i| i.starts_with("havoc.invalid/pod-failure"))
    })
    .await;
    let reinjected = replaced_at.elapsed();
    let st = wait_status(&chaos, "fail2", "the record of the new pod", |s| {
        s.records.first().is_some_and(|r| r.injected == 2)
    })
    .await;
    assert_eq!(st.records[0].phase, RecordPhase::Injected, "{st:#?}");
    step(&format!(
        "held2 replaced under the same name: injected again after {reinjected:.1?}"
    ));

    // The operator is restarted (op-a again, following); then op-b gets SIGTERM: it stops
    // within the grace, releases the lease, and op-a takes over at its next round.
    drop(op_a);
    let mut op_a = Operator::spawn(&path, &sys, "op-a2", logs.path());
    tokio::time::sleep(Duration::from_secs(1)).await;
    op_b.signal("TERM");
    let term_at = Instant::now();
    let exit = op_b
        .wait_exit(havoc_operator::SHUTDOWN_GRACE + Duration::from_secs(5))
        .await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "op-b did not stop cleanly on SIGTERM: {exit:?}\n{}",
        op_b.log_text()
    );
    let stopped_in = term_at.elapsed();
    wait_for(
        "op-a2 to take over the released lease",
        Duration::from_secs(15),
        || async { lease_holder(&leases).await.as_deref() == Some("op-a2") },
    )
    .await;
    let handover = term_at.elapsed();
    step(&format!(
        "op-b stopped on SIGTERM in {stopped_in:.1?}; op-a2 leads after {handover:.1?}"
    ));

    // Deleting the running experiment recovers it (under the new leader) and lets it go.
    let took = delete_and_wait_gone(&chaos, "fail2").await;
    let (image, _, _) = container_state(&pods, "held2").await;
    assert_eq!(image, BUSYBOX, "deletion restored the image");
    step(&format!("fail2 deleted and recovered in {took:.1?}"));

    // --- Stop the operator, remove everything, and check nothing is left. -------------------
    op_a.signal("TERM");
    let exit = op_a
        .wait_exit(havoc_operator::SHUTDOWN_GRACE + Duration::from_secs(5))
        .await;
    assert!(exit.is_some_and(|s| s.success()), "op-a2: {exit:?}");
    // No chaos object of ours still carries a finalizer.
    for ns in [&open, &closed] {
        let left = Api::<PodChaos>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("list");
        assert!(
            left.items.iter().all(|o| o.meta().finalizers.is_none()),
            "{ns}: {:?}",
            left.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
        );
    }
    let names = std::mem::take(&mut cleanup.namespaces);
    remove_namespaces(&client, &names)
        .await
        .expect("remove the test namespaces");
    step("namespaces gone");
    // Keep the log lines in the output of a passing run too (the operator's own view).
    for (op, text) in [("op-a2", op_a.log_text()), ("op-b", op_b.log_text())] {
        let lines = BufReader::new(text.as_bytes()).lines().count();
        eprintln!("operator {op}: {lines} log lines");
    }
}
