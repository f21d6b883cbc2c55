//! End-to-end through the node agent, installed as a user installs it: the `havoc` image (the
//! stripped binary, built without Docker by havoc-testbed's `havoc_image` tool) imported into the
//! harness node's containerd, the mTLS certificates made by the code `havoc certs` runs, the
//! Secret, and the agent DaemonSet of `deploy/` (privileged, host PID) running as a real pod on
//! the real node of `../shared/k8s` (`K8S_KUBELET=1`). The operator runs on the host as a
//! `havoc operator` process (this test binary re-executed into [`operator_process`]) with the
//! operator's certificates, and dials the agent's pod IP over mutual TLS.
//!
//! Against real busybox pods, each fault is created as a chaos object, its effect is measured
//! from inside the pod, its status records are checked, and it is deleted and the effect is
//! gone:
//! - NetworkChaos loss 50 % on the packets pod `rx` receives from pod `tx` (`target`,
//!   direction `from`): `ping` from `tx` loses about half, `ping` from a third pod loses none;
//! - StressChaos cpu: the container's own `cpuacct.usage` (read inside the pod) grows by about
//!   one core while the stress runs, and stops growing after;
//! - TimeChaos -1h on a pod whose main process is busybox `awk` printing `systime()` each
//!   second: `awk` reads the clock itself through the vDSO the agent patched. (A shell loop
//!   running `date` would show nothing: each `date` is a fresh `exec`, with a fresh vDSO.)
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` (the harness's admin kubeconfig; its directory is the
//! harness state dir, holding `node/containerd/containerd.sock`). Needs the `havoc` binary and
//! the `havoc_image` example that `cargo test --workspace` builds (`target/*/havoc`,
//! `target/*/examples/havoc_image`; or `HAVOC_BIN` / `HAVOC_IMAGE_TOOL`), `ctr`, and root.
//! Without them it prints that it skipped, or fails when `CI` is set.
//!
//! It leaves nothing behind but the image in the harness's containerd: the namespaces it made
//! (with the DaemonSet, the pods, the Secret and the chaos objects) are removed and waited for,
//! finalizers an operator could no longer remove are stripped first, the operator process is
//! stopped, and the agent's host state directory is a temporary directory removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havoc_k8s::status::{ChaosStatus, Phase, RecordPhase};
use havoc_k8s::{ChaosObject, NetworkChaos, StressChaos, TimeChaos};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// Env var carrying the options of a re-executed operator process.
const CHILD_ENV: &str = "HAVOC_E2E_AGENT_OPERATOR";
/// How long one wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);
/// The busybox image the harness imports into its containerd.
const BUSYBOX: &str = "havoc.local/busybox:1";
/// The name the havoc image is imported under (it may stay in the harness's containerd).
const HAVOC_IMAGE: &str = "havoc.local/havoc:e2e-agent";

fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the agent e2e test cannot run: {why}"
    );
    println!("skipped: {why}");
}

fn kubeconfig() -> Option<String> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            skip("HAVOC_E2E_KUBECONFIG is not set (start ../shared/k8s with K8S_KUBELET=1, source env.sh)");
            None
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The newest of `target/{debug,release}/REL` (the workspace's target dir), or `env`'s value.
fn built(env: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(p.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join(rel))
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
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
/// library's `run`, as the binary does) with the agent certificates until SIGTERM. Without that
/// env var it does nothing: it is a helper of the e2e test, not a test of its own.
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
    let pki = PathBuf::from(s("pki"));
    let opts = havoc_operator::OperatorOptions {
        operator_namespace: s("namespace"),
        agent_namespace: Some(s("namespace")),
        identity: "op-agent-e2e".into(),
        leader_election: false,
        metrics_addr: ([127, 0, 0, 1], 0).into(),
        agent_tls: havoc_operator::AgentTls {
            ca: pki.join("ca.pem"),
            cert: pki.join("operator.pem"),
            key: pki.join("operator-key.pem"),
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

/// A running operator process; SIGKILLed on drop if still running (its log printed on panic).
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn spawn(kubeconfig: &str, namespace: &str, pki: &Path, logs: &Path) -> Operator {
        let log = logs.join("operator.log");
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
                json!({"namespace": namespace, "pki": pki}).to_string(),
            )
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HAVOC_E2E_KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn the operator process");
        Operator { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < havoc_operator::SHUTDOWN_GRACE + Duration::from_secs(5) {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
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
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- last lines of the operator's log ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup.

/// Removes the test's namespaces and waits until they are gone: strips the finalizers of chaos
/// objects left in them, deletes pods without grace, then the namespaces. Bounded in time.
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
        unfinalize!(NetworkChaos);
        unfinalize!(StressChaos);
        unfinalize!(TimeChaos);
        let _ = Api::<DaemonSet>::namespaced(client.clone(), ns)
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

/// Fallback cleanup on panic: runs [`remove_namespaces`] on its own thread, runtime and client
/// (the test's client is tied to the test's runtime, which is unwinding).
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A busybox pod running `command` as its main process (PID 1 of the container).
fn pod(name: &str, command: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": command
            }]
        }
    }))
    .expect("pod")
}

const SLEEPER: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

fn running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

fn chaos<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "havoc.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

async fn wait_status<K: ChaosObject>(
    api: &Api<K>,
    name: &str,
    what: &str,
    pred: impl Fn(&ChaosStatus) -> bool,
) -> ChaosStatus {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < WAIT {
        last = api.get(name).await.ok().and_then(|o| o.status().cloned());
        if last.as_ref().is_some_and(&pred) {
            return last.expect("status");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: timed out waiting for {what}; last status: {last:#?}");
}

fn all_injected(s: &ChaosStatus) -> bool {
    s.condition("AllInjected")
        .is_some_and(|c| c.status == "True")
}

/// Checks the status of a one-target experiment that is in effect: one record, for `pod`'s
/// container, Injected once.
fn check_injected(st: &ChaosStatus, pod: &Pod, what: &str) {
    assert_eq!(st.phase, Phase::Running, "{what}: {st:#?}");
    assert_eq!(st.records.len(), 1, "{what}: {st:#?}");
    let r = &st.records[0];
    assert_eq!(
        (r.name.as_str(), r.phase, r.injected, r.recovered),
        (pod.name_any().as_str(), RecordPhase::Injected, 1, 0),
        "{what}: {st:#?}"
    );
    let cid = container_id(pod);
    assert!(
        !r.container_id.is_empty() && cid.starts_with(&r.container_id),
        "{what}: record container {} is not the pod's {cid}",
        r.container_id
    );
    assert_eq!(
        (
            st.counts.selected,
            st.counts.injected,
            st.counts.recovered,
            st.counts.failed
        ),
        (1, 1, 0, 0),
        "{what}: {st:#?}"
    );
}

/// The pod's first container id, without the runtime prefix.
fn container_id(p: &Pod) -> String {
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("container id");
    id.split_once("://")
        .map_or(id.clone(), |(_, i)| i.to_string())
}

/// Deletes the object and waits until it is gone (the finalizer removed after recovery).
async fn delete_and_wait_gone<K: ChaosObject>(api: &Api<K>, name: &str) -> Duration {
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

/// `kubectl exec` into container `main` of a pod; its stdout (panics on failure).
fn exec(kubectl: &Path, kubeconfig: &str, ns: &str, pod: &str, cmd: &str) -> String {
    let out = Command::new(kubectl)
        .args([
            "--kubeconfig",
            kubeconfig,
            "-n",
            ns,
            "exec",
            pod,
            "-c",
            "main",
        ])
        .args(["--", "sh", "-c", cmd])
        .output()
        .expect("run kubectl exec");
    assert!(
        out.status.success(),
        "kubectl exec {pod} -- {cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Percent of pings from `from` to `ip` that got no reply (busybox ping's summary line).
fn ping_loss(kubectl: &Path, kc: &str, ns: &str, from: &str, ip: &str, count: u32) -> f64 {
    let out = exec(
        kubectl,
        kc,
        ns,
        from,
        &format!("ping -q -c {count} -i 0.02 -W 2 {ip} || true"),
    );
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {out}"));
    // `200 packets transmitted, 101 packets received, 49% packet loss`
    let n: Vec<f64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(n.len() >= 2 && n[0] > 0.0, "{line}");
    100.0 * (n[0] - n[1]) / n[0]
}

/// CPU the pod's container used over `over`, in cores, from its own `cpuacct.usage` (read
/// inside the pod: runc mounts the container's cgroup at `/sys/fs/cgroup/cpuacct`).
fn cpu_cores(kubectl: &Path, kc: &str, ns: &str, pod: &str, over: Duration) -> f64 {
    let cmd = format!(
        "a=$(cat /sys/fs/cgroup/cpuacct/cpuacct.usage); s=$(cat /proc/uptime); sleep {}; \
         b=$(cat /sys/fs/cgroup/cpuacct/cpuacct.usage); e=$(cat /proc/uptime); echo $a $b ${{s%% *}} ${{e%% *}}",
        over.as_secs()
    );
    let out = exec(kubectl, kc, ns, pod, &cmd);
    let v: Vec<f64> = out
        .split_whitespace()
        .map(|s| s.parse().expect("number"))
        .collect();
    assert_eq!(v.len(), 4, "{out}");
    (v[1] - v[0]) / 1e9 / (v[3] - v[2])
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The clock the `clock` pod's main process read most recently, minus the real time it was
/// logged at (kubelet log timestamps, RFC 3339 with nanoseconds), in seconds.
async fn clock_offset(pods: &Api<Pod>, name: &str) -> f64 {
    let text = pods
        .logs(
            name,
            &LogParams {
                timestamps: true,
                since_seconds: Some(5),
                ..Default::default()
            },
        )
        .await
        .expect("pod logs");
    let line = text
        .lines()
        .rev()
        .find(|l| l.split_whitespace().count() == 2)
        .unwrap_or_else(|| panic!("no clock line in the last 5 s of logs: {text:?}"));
    let (ts, printed) = line.split_once(' ').expect("timestamped line");
    let logged: k8s_openapi::jiff::Timestamp = ts.parse().unwrap_or_else(|e| panic!("{ts}: {e}"));
    let printed: f64 = printed.trim().parse().expect("seconds");
    // systime() is whole seconds: the clock read is in [printed, printed + 1).
    printed + 0.5 - logged.as_millisecond() as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// The test.

#[tokio::test]
async fn agent_kinds_on_a_real_cluster_through_the_agent_daemonset() {
    let Some(path) = kubeconfig() else { return };
    if !is_root() {
        return skip("not root (importing the image into the node's containerd needs root)");
    }
    let Some(havoc) = built("HAVOC_BIN", "havoc") else {
        return skip("no havoc binary (cargo build -p havoc, or set HAVOC_BIN)");
    };
    let Some(image_tool) = built("HAVOC_IMAGE_TOOL", "examples/havoc_image") else {
        return skip(
            "no havoc_image tool (cargo build -p havoc-testbed --example havoc_image, or set HAVOC_IMAGE_TOOL)",
        );
    };
    let state = Path::new(&path)
        .parent()
        .expect("kubeconfig dir")
        .to_path_buf();
    let socket = state.join("node/containerd/containerd.sock");
    assert!(
        socket.exists(),
        "{} is missing: start the harness with K8S_KUBELET=1 (a real node is needed)",
        socket.display()
    );
    let kubectl = std::fs::read_to_string(state.join("bin-dir"))
        .map(|d| Path::new(d.trim()).join("kubectl"))
        .ok()
        .filter(|k| k.exists())
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let client = client_from(&path).await;
    let work = tempfile::tempdir().expect("tempdir");

    // --- The havoc image, imported into the node's containerd. -------------------------------
    let archive = work.path().join("havoc-oci.tar");
    let out = Command::new(&image_tool)
        .arg(&archive)
        .arg(HAVOC_IMAGE)
        .arg(&havoc)
        .output()
        .expect("run havoc_image");
    assert!(
        out.status.success(),
        "havoc_image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let t = Instant::now();
    let out = Command::new("ctr")
        .arg("-a")
        .arg(&socket)
        .args(["-n", "k8s.io", "image", "import"])
        .arg(&archive)
        .output()
        .expect("run ctr (apt-get install containerd)");
    assert!(
        out.status.success(),
        "ctr image import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&archive).expect("remove the archive");
    step(&format!(
        "havoc image built and imported (import {:.1?})",
        t.elapsed()
    ));

    // --- A Ready node, the CRDs. --------------------------------------------------------------
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
    assert!(ready, "no Ready node: start the harness with K8S_KUBELET=1");
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

    // --- Namespaces: one for the agents and the operator, one open to chaos. -------------------
    let suffix = format!(
        "{:x}{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos()
            & 0xfff
    );
    let sys = format!("havoc-e2e-agent-sys-{suffix}");
    let open = format!("havoc-e2e-agent-{suffix}");
    let mut cleanup = Cleanup {
        kubeconfig: path.clone(),
        namespaces: vec![open.clone(), sys.clone()],
    };
    let nss: Api<Namespace> = Api::all(client.clone());
    for (n, opt_in) in [(&sys, false), (&open, true)] {
        let mut ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": n}})).expect("ns");
        if opt_in {
            ns.metadata.labels = Some([("havoc.dev/chaos".into(), "enabled".into())].into());
        }
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    // --- Certificates (`havoc certs --san havoc-agent`, as deploy/certs.sh), the Secret. ------
    let pki = work.path().join("pki");
    let b = havoc_api::pki::write_bundle(&pki, &["havoc-agent".into()]).expect("certificates");
    let read = |p: &Path| std::fs::read_to_string(p).expect("read a pem");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "havoc-agent-tls"},
        "stringData": {
            "ca.pem": read(&b.ca),
            "agent.pem": read(&b.agent_cert),
            "agent-key.pem": read(&b.agent_key),
        }
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &sys)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the agent Secret");
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "havoc-agent"}, "automountServiceAccountToken": false
    }))
    .expect("sa");
    Api::<ServiceAccount>::namespaced(client.clone(), &sys)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create the agent ServiceAccount");

    // --- The agent DaemonSet of deploy/, with this install's image and namespace. ------------
    // Two host paths are pointed at what this node has: the harness's containerd socket
    // directory (it is not /run/containerd) and a temporary directory for the agent's journal
    // (not /var/lib/havoc, which the test would leave behind).
    let agent_state = work.path().join("agent-state");
    let yaml = havoc_operator::manifests::agent(&havoc_operator::InstallOptions {
        namespace: sys.clone(),
        image: HAVOC_IMAGE.into(),
        ..Default::default()
    });
    let mut ds: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("agent.yaml");
    let pod_spec = &mut ds["spec"]["template"]["spec"];
    assert_eq!(pod_spec["hostPID"], true, "{yaml}");
    assert_eq!(
        pod_spec["containers"][0]["securityContext"]["privileged"],
        true
    );
    pod_spec["containers"][0]["imagePullPolicy"] = json!("Never");
    pod_spec["terminationGracePeriodSeconds"] = json!(5);
    for v in pod_spec["volumes"].as_array_mut().expect("volumes") {
        match v["name"].as_str() {
            Some("containerd") => {
                v["hostPath"]["path"] = json!(socket.parent().expect("socket dir"))
            }
            Some("state") => v["hostPath"]["path"] = json!(agent_state),
            _ => {}
        }
    }
    let ds: DaemonSet = serde_json::from_value(ds).expect("DaemonSet");
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &sys);
    let t = Instant::now();
    dss.create(&PostParams::default(), &ds)
        .await
        .expect("create the agent DaemonSet");
    let agents: Api<Pod> = Api::namespaced(client.clone(), &sys);
    let agent_pods = ListParams::default().labels(havoc_operator::agent::AGENT_LABEL);
    wait_for("the agent pod running", WAIT, || async {
        agents
            .list(&agent_pods)
            .await
            .is_ok_and(|l| l.items.len() == 1 && l.items.iter().all(running))
    })
    .await;
    let agent_pod = agents.list(&agent_pods).await.expect("list").items[0].clone();
    let agent_ip = agent_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("agent pod IP");
    step(&format!(
        "agent DaemonSet pod {} running at {agent_ip} after {:.1?}",
        agent_pod.name_any(),
        t.elapsed()
    ));

    // --- The operator, with the operator's certificates. -------------------------------------
    let mut operator = Operator::spawn(&path, &sys, &pki, work.path());

    // --- Target pods. -------------------------------------------------------------------------
    let pods: Api<Pod> = Api::namespaced(client.clone(), &open);
    let clock_cmd = [
        "awk",
        "BEGIN { while (1) { print systime(); fflush(); system(\"sleep 1\") } }",
    ];
    for (name, cmd) in [
        ("rx", SLEEPER),
        ("tx", SLEEPER),
        ("bystander", SLEEPER),
        ("cpu", SLEEPER),
        ("clock", &clock_cmd[..]),
    ] {
        pods.create(&PostParams::default(), &pod(name, cmd))
            .await
            .expect("create pod");
    }
    for name in ["rx", "tx", "bystander", "cpu", "clock"] {
        wait_for(&format!("pod {name} running"), WAIT, || async {
            pods.get(name).await.is_ok_and(|p| running(&p))
        })
        .await;
    }
    let pod_ip = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP")
    };
    let rx = pods.get("rx").await.expect("rx");
    let tx = pods.get("tx").await.expect("tx");
    let (rx_ip, tx_ip) = (pod_ip(&rx), pod_ip(&tx));
    step(&format!("pods running: rx {rx_ip}, tx {tx_ip}"));

    // --- NetworkChaos: loss 50 % of what rx receives from tx. --------------------------------
    let (kc, k) = (path.as_str(), kubectl.as_path());
    let before = ping_loss(k, kc, &open, "tx", &rx_ip, 100);
    assert!(before <= 2.0, "loss before the fault: {before}%");
    let nets: Api<NetworkChaos> = Api::namespaced(client.clone(), &open);
    let t = Instant::now();
    nets.create(
        &PostParams::default(),
        &chaos(
            "NetworkChaos",
            "loss",
            json!({"action": "loss", "mode": "all", "direction": "from",
                   "loss": {"loss": "50"},
                   "selector": {"pods": {(open.clone()): ["rx"]}},
                   "target": {"mode": "all", "selector": {"pods": {(open.clone()): ["tx"]}}}}),
        ),
    )
    .await
    .expect("create NetworkChaos");
    let st = wait_status(&nets, "loss", "AllInjected", all_injected).await;
    let injected_in = t.elapsed();
    check_injected(&st, &rx, "NetworkChaos");
    assert!(
        st.peers.iter().any(|p| p.starts_with(&tx_ip)),
        "status.peers names tx's address {tx_ip}: {:?}",
        st.peers
    );
    let during = ping_loss(k, kc, &open, "tx", &rx_ip, 400);
    let bystander = ping_loss(k, kc, &open, "bystander", &rx_ip, 200);
    assert!(
        (35.0..=65.0).contains(&during),
        "loss 50% from tx: tx's pings to rx lost {during:.1}%"
    );
    assert!(
        bystander <= 2.0,
        "traffic from a pod that is not the target is not hit: {bystander:.1}% lost"
    );
    let took = delete_and_wait_gone(&nets, "loss").await;
    let after = ping_loss(k, kc, &open, "tx", &rx_ip, 200);
    assert!(after <= 2.0, "loss after the delete: {after:.1}%");
    step(&format!(
        "NetworkChaos loss 50%: AllInjected {injected_in:.2?} after create; tx->rx ping lost \
         {during:.1}% (400), bystander->rx {bystander:.1}%; deleted in {took:.2?}, then {after:.1}%"
    ));

    // --- StressChaos: one cpu worker in the cpu pod's cgroup. --------------------------------
    let cpu_pod = pods.get("cpu").await.expect("cpu");
    let idle = cpu_cores(k, kc, &open, "cpu", Duration::from_secs(2));
    let stresses: Api<StressChaos> = Api::namespaced(client.clone(), &open);
    let t = Instant::now();
    stresses
        .create(
            &PostParams::default(),
            &chaos(
                "StressChaos",
                "cpu",
                json!({"mode": "all", "stressors": {"cpu": {"workers": 1, "load": 100}},
                       "selector": {"pods": {(open.clone()): ["cpu"]}}}),
            ),
        )
        .await
        .expect("create StressChaos");
    let st = wait_status(&stresses, "cpu", "AllInjected", all_injected).await;
    let injected_in = t.elapsed();
    check_injected(&st, &cpu_pod, "StressChaos");
    let busy = cpu_cores(k, kc, &open, "cpu", Duration::from_secs(3));
    // One busy loop is one core; the machine's 2 cores are shared, so allow for less.
    assert!(
        (0.5..=1.2).contains(&busy),
        "cpu 1 worker at 100%: the container used {busy:.2} cores (idle: {idle:.2})"
    );
    let took = delete_and_wait_gone(&stresses, "cpu").await;
    let after = cpu_cores(k, kc, &open, "cpu", Duration::from_secs(2));
    assert!(
        after < 0.1,
        "the container still uses {after:.2} cores after the delete"
    );
    step(&format!(
        "StressChaos cpu: AllInjected {injected_in:.2?} after create; the container's \
         cpuacct: {idle:.3} cores idle, {busy:.2} stressed, {after:.3} after; deleted in {took:.2?}"
    ));

    // --- TimeChaos: -1h on the clock pod's awk. -----------------------------------------------
    let clock_pod = pods.get("clock").await.expect("clock");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = clock_offset(&pods, "clock").await;
    assert!(before.abs() < 2.0, "clock offset before: {before:.1}s");
    let times: Api<TimeChaos> = Api::namespaced(client.clone(), &open);
    let t = Instant::now();
    let created_at = now_secs();
    times
        .create(
            &PostParams::default(),
            &chaos(
                "TimeChaos",
                "skew",
                json!({"mode": "all", "timeOffset": "-1h",
                       "selector": {"pods": {(open.clone()): ["clock"]}}}),
            ),
        )
        .await
        .expect("create TimeChaos");
    let st = wait_status(&times, "skew", "AllInjected", all_injected).await;
    let injected_in = t.elapsed();
    check_injected(&st, &clock_pod, "TimeChaos");
    // The first line the skewed clock printed, then the offset the process sees.
    let mut seen_in = None;
    let mut during = 0.0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        during = clock_offset(&pods, "clock").await;
        if (during + 3600.0).abs() < 2.0 {
            seen_in = Some(now_secs() - created_at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen_in.is_some(),
        "timeOffset -1h: the pod's own clock is off by {during:.1}s"
    );
    let took = delete_and_wait_gone(&times, "skew").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = clock_offset(&pods, "clock").await;
    assert!(
        after.abs() < 2.0,
        "clock offset after the delete: {after:.1}s"
    );
    step(&format!(
        "TimeChaos -1h: AllInjected {injected_in:.2?} after create; the pod's awk read \
         {during:.1}s off (first seen {:.1}s after create); deleted in {took:.2?}, then {after:.1}s",
        seen_in.unwrap_or_default()
    ));

    // --- Stop the operator; nothing of ours keeps a finalizer; remove everything. -----------
    let exit = operator.stop().await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the operator did not stop cleanly on SIGTERM: {exit:?}\n{}",
        operator.log_text()
    );
    for (kind, left) in [
        (
            "NetworkChaos",
            nets.list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "StressChaos",
            stresses
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "TimeChaos",
            times
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
    ] {
        assert_eq!(left, 0, "{kind} objects left");
    }
    let names = std::mem::take(&mut cleanup.namespaces);
    remove_namespaces(&client, &names)
        .await
        .expect("remove the test namespaces");
    assert!(
        agents
            .list(&agent_pods)
            .await
            .is_ok_and(|l| l.items.is_empty()),
        "the agent pod is gone"
    );
    step("namespaces gone (the DaemonSet and its pod with them)");
}
