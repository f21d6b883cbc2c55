//! The operator's side of the agent API against the real agent: what the controller sends for
//! each chaos kind must be accepted by the agent exactly as sent, over mutual TLS.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_api::v1::{target::Kind, InjectRequest, RecoverRequest, Target};
use havoc_k8s::convert::validate_manifest;
use havoc_k8s::ChaosAction;
use havoc_operator::agent::{container_kill_fault_json, fault_json, AgentLocator};
use havoc_operator::{AgentPool, AgentTls, GrpcAgentPool};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A `sleep` killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("120")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letter of the process (`S`, `R`, `T` when stopped).
fn proc_state(pid: i32) -> char {
    havoc_faults::procinfo::ProcInfo::read(pid)
        .expect("the target exists")
        .state
}

/// The agent's fault for a Kubernetes manifest, exactly as the controller encodes it.
fn agent_fault_of(manifest: &str) -> String {
    let m = validate_manifest(manifest).unwrap_or_else(|e| panic!("{}", e.render("manifest")));
    match m.action() {
        ChaosAction::Agent { fault, .. } => fault_json(&fault).expect("encode"),
        ChaosAction::ContainerKill { .. } => container_kill_fault_json(),
        other => panic!("not an agent action: {other:?}"),
    }
}

const NETWORK: &[&str] = &[
    "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: a, namespace: shop}\nspec:\n  action: loss\n  mode: all\n  selector: {namespaces: [shop]}\n  loss: {loss: \"25\", correlation: \"10\"}\n  duration: 30s\n",
    "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: b, namespace: shop}\nspec:\n  action: delay\n  mode: one\n  selector: {labelSelectors: {app: web}}\n  delay: {latency: 90ms, jitter: 10ms, correlation: \"25\"}\n  direction: to\n",
    "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata: {name: c, namespace: shop}\nspec:\n  action: bandwidth\n  mode: all\n  selector: {namespaces: [shop]}\n  bandwidth: {rate: 1mbps, limit: 20971520, buffer: 10000}\n",
    "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: d, namespace: shop}\nspec:\n  action: partition\n  mode: all\n  selector: {namespaces: [shop]}\n",
];

const STRESS: &str = "apiVersion: havoc.dev/v1alpha1\nkind: StressChaos\nmetadata: {name: s, namespace: shop}\nspec:\n  mode: all\n  selector: {namespaces: [shop]}\n  stressors:\n    cpu: {workers: 1, load: 20}\n    memory: {workers: 1, size: 16MiB}\n  duration: 1m\n";

const CONTAINER_KILL: &str = "apiVersion: havoc.dev/v1alpha1\nkind: PodChaos\nmetadata: {name: k, namespace: shop}\nspec:\n  action: container-kill\n  containerNames: [app]\n  mode: one\n  selector: {namespaces: [shop]}\n";

#[test]
fn every_fault_the_operator_encodes_is_accepted_by_the_agents_parser() {
    for m in NETWORK.iter().chain([&STRESS, &CONTAINER_KILL]) {
        let json = agent_fault_of(m);
        let parsed = havoc_agent::fault::parse_fault_json(&json)
            .unwrap_or_else(|e| panic!("agent refused {json}: {}", e.render("fault_json")));
        let kind = serde_json::from_str::<serde_json::Value>(&json).expect("json")["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        assert_eq!(parsed.spec.kind(), kind, "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_pool_injects_and_recovers_through_a_real_agent_over_mtls() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (the agent injects into real processes)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let b = havoc_api::pki::write_bundle(&dir.path().join("pki"), &["havoc-agent".into()])
        .expect("pki");
    let mut opts = havoc_agent::AgentOptions::new(Some(havoc_api::tls::TlsFiles {
        ca: b.ca.clone(),
        cert: b.agent_cert.clone(),
        key: b.agent_key.clone(),
    }));
    opts.listen = "127.0.0.1:0".parse().expect("addr");
    opts.metrics_addr = None;
    opts.state_dir = dir.path().join("state");
    // The watchdog re-runs `self_exe __watchdog`, and this test binary is not `havoc`; the
    // agent's own tests cover it.
    opts.watchdog = false;
    let agent = havoc_agent::start(opts).await.expect("agent starts");
    let pool = GrpcAgentPool::new(
        AgentLocator::Static(BTreeMap::from([(
            "node-a".to_string(),
            format!("https://127.0.0.1:{}", agent.addr().port()),
        )])),
        &AgentTls {
            ca: b.ca.clone(),
            cert: b.operator_cert.clone(),
            key: b.operator_key.clone(),
            server_name: havoc_operator::agent::AGENT_TLS_NAME.into(),
        },
    )
    .expect("pool");
    let req = |key: &str, fault: String, pid: i32| InjectRequest {
        idempotency_key: key.into(),
        fault_json: fault,
        target: Some(Target {
            kind: Some(Kind::Pid(pid)),
        }),
        lease_ttl_ms: 30_000,
        owner: "StressChaos shop/s".into(),
    };

    // A held fault (pause: no helper process needed here; the encoding of every kind the
    // operator sends is checked against the agent's parser above). A retried Inject returns the
    // same injection.
    let pause = r#"{"kind":"ProcessChaos","spec":{"action":"pause"}}"#.to_string();
    let target = Sleeper::new();
    let first = pool
        .inject("node-a", req("uid/pod/c/0", pause.clone(), target.pid()))
        .await
        .expect("inject pause");
    assert!(!first.existing);
    assert_eq!(first.pid, target.pid());
    let again = pool
        .inject("node-a", req("uid/pod/c/0", pause.clone(), target.pid()))
        .await
        .expect("retry");
    assert!(again.existing, "a retry injects nothing new");
    assert_eq!(again.injection_id, first.injection_id);
    let held = pool.list("node-a").await.expect("list");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].kind, "ProcessChaos");
    assert_eq!(proc_state(target.pid()), 'T', "the target is stopped");
    let rec = pool
        .recover(
            "node-a",
            RecoverRequest {
                injection_id: first.injection_id.clone(),
            },
        )
        .await
        .expect("recover");
    assert!(rec.recovered, "{}", rec.reason);
    assert!(pool.list("node-a").await.expect("list").is_empty());
    assert_ne!(proc_state(target.pid()), 'T', "the target runs again");

    // container-kill: SIGKILL to the target.
    let mut victim = Sleeper::new();
    pool.inject(
        "node-a",
        req("uid/pod/c/kill", container_kill_fault_json(), victim.pid()),
    )
    .await
    .expect("inject kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = victim.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the target was not killed");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    agent.shutdown().await.expect("shutdown");
}
