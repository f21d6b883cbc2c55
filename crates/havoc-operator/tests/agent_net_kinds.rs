//! DNSChaos and HTTPChaos through the operator's agent client and a real agent over mutual TLS,
//! into a real network namespace: each fault is made from a Chaos Mesh manifest converted by
//! `havoc convert` and encoded exactly as the controller encodes it, and the target is a process
//! in a namespace the test creates (the pod's), as the operator names a container's init process.
//! The agent intercepts in that process's network namespace. The effect is read by real clients:
//! `dig` in the pod's namespace asking a real dnsmasq outside it, `curl` from outside asking a
//! Python HTTP server inside it. After recovery (the object's deletion) both are unfaulted and
//! nothing of Havoc's is left in the namespace.
//!
//! Lab: namespace `pod` (10.217.N.1, the HTTP server, the DNS client) and namespace `peer`
//! (10.217.N.2, dnsmasq, the HTTP client) joined by a veth pair; removed on drop.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use havoc_api::v1::{target::Kind, InjectRequest, RecoverRequest, Target};
use havoc_k8s::convert::{convert, validate_manifest};
use havoc_k8s::ChaosAction;
use havoc_operator::agent::{fault_json, AgentLocator};
use havoc_operator::{AgentPool, AgentTls, GrpcAgentPool};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Why this test cannot run here, if it cannot; in CI that is a failure.
fn cannot_run(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, nftables)".into());
    }
    if !std::path::Path::new(DNSMASQ).exists() {
        return Some(format!("{DNSMASQ} is not installed"));
    }
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{t}` is not installed"));
        }
    }
    None
}

fn skip(test: &str, tools: &[&str]) -> bool {
    match cannot_run(tools) {
        None => false,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {test} cannot run: {why}"
            );
            eprintln!("SKIPPED {test}: {why}");
            true
        }
    }
}

fn sh(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real Python interpreter (not a version manager's shim script).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The two namespaces, dnsmasq in `peer`, and a Python HTTP server in `pod` (the target).
struct Lab {
    pod: String,
    peer: String,
    pod_ip: String,
    peer_ip: String,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = (std::process::id() + n * 17) % 250 + 1;
        let mut lab = Lab {
            pod: format!("hvnk{id}p"),
            peer: format!("hvnk{id}s"),
            pod_ip: format!("10.217.{sub}.1"),
            peer_ip: format!("10.217.{sub}.2"),
            children: Vec::new(),
            _dir: dir,
        };
        sh(&["ip", "netns", "add", &lab.pod]);
        sh(&["ip", "netns", "add", &lab.peer]);
        let (vp, vs) = (format!("hvnk{id}a"), format!("hvnk{id}b"));
        sh(&[
            "ip", "link", "add", &vp, "netns", &lab.pod, "type", "veth", "peer", "name", &vs,
            "netns", &lab.peer,
        ]);
        for (ns, dev, ip) in [(&lab.pod, &vp, &lab.pod_ip), (&lab.peer, &vs, &lab.peer_ip)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // dnsmasq: good.test and bad.test, and a known answer for any other name.
        let pid_file = lab._dir.path().join("dnsmasq.pid");
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &lab.peer, DNSMASQ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--bind-interfaces",
                "--cache-size=0",
                "--port=53",
                "--user=root",
                "--address=/good.test/10.9.9.1",
                "--address=/bad.test/10.9.9.2",
                "--address=/#/10.9.9.99",
            ])
            .arg(format!("--listen-address={}", lab.peer_ip))
            .arg(format!("--pid-file={}", pid_file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        lab.children.push(dnsmasq);
        // The HTTP server in the pod's namespace (`ip netns exec` execs it: the same pid).
        let site = lab._dir.path().join("site");
        std::fs::create_dir_all(site.join("api")).expect("mkdir");
        std::fs::write(site.join("api").join("item"), "item\n").expect("write");
        std::fs::write(site.join("health"), "ok\n").expect("write");
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.pod,
                &python(),
                "-m",
                "http.server",
                "8080",
            ])
            .args(["--bind", &lab.pod_ip, "--directory"])
            .arg(&site)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the HTTP server");
        lab.children.push(server);
        assert!(
            wait_until(Duration::from_secs(10), || lab.dig("good.test").0
                == "NOERROR"),
            "dnsmasq answers"
        );
        assert!(
            wait_until(Duration::from_secs(10), || lab.curl("/health") == (0, 200)),
            "the HTTP server answers"
        );
        lab
    }

    /// The target: the HTTP server's pid, a process in the pod's network namespace.
    fn target_pid(&self) -> i32 {
        self.children[1].id() as i32
    }

    /// `dig` in the pod's namespace for an A record: (status, answer addresses).
    fn dig(&self, name: &str) -> (String, Vec<String>) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.pod, "dig", "+tries=1", "+time=2"])
            .arg(format!("@{}", self.peer_ip))
            .args([name, "A"])
            .stdin(Stdio::null())
            .output()
            .expect("run dig");
        let text = String::from_utf8_lossy(&out.stdout);
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("NO ANSWER")
            .to_string();
        let answers = text
            .lines()
            .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        (status, answers)
    }

    /// `curl` from the peer namespace to the pod's server: (exit code, HTTP status).
    fn curl(&self, path: &str) -> (i32, u16) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.peer, "curl", "-s", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--max-time", "3"])
            .arg(format!("http://{}:8080{path}", self.pod_ip))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (out.status.code().unwrap_or(-1), status)
    }

    /// What Havoc could leave in the pod's namespace: nft tables, iptables NFQUEUE rules and
    /// HAVOC chains.
    fn havoc_leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for argv in [&["nft", "list", "tables"][..], &["iptables-save"][..]] {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.pod])
                .args(argv)
                .output()
                .expect("list rules");
            left.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.to_ascii_lowercase().contains("havoc") || l.contains("NFQUEUE"))
                    .map(str::to_string),
            );
        }
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real agent on loopback with mTLS and the operator's pool pointed at it.
struct Agent {
    _dir: tempfile::TempDir,
    handle: Option<havoc_agent::RunningAgent>,
    pool: GrpcAgentPool,
}

impl Agent {
    async fn start() -> Agent {
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
        // The watchdog re-runs `self_exe __watchdog`, and this test binary is not `havoc`.
        opts.watchdog = false;
        let handle = havoc_agent::start(opts).await.expect("agent starts");
        let pool = GrpcAgentPool::new(
            AgentLocator::Static(BTreeMap::from([(
                "node-a".to_string(),
                format!("https://127.0.0.1:{}", handle.addr().port()),
            )])),
            &AgentTls {
                ca: b.ca.clone(),
                cert: b.operator_cert.clone(),
                key: b.operator_key.clone(),
                server_name: havoc_operator::agent::AGENT_TLS_NAME.into(),
            },
        )
        .expect("pool");
        Agent {
            _dir: dir,
            handle: Some(handle),
            pool,
        }
    }

    /// Injects `manifest`'s agent fault into `pid`'s pod; returns the injection id.
    async fn inject(&self, key: &str, manifest: &str, pid: i32) -> String {
        let m = validate_manifest(manifest).unwrap_or_else(|e| panic!("{}", e.render("manifest")));
        let ChaosAction::Agent {
            fault,
            container_names,
        } = m.action()
        else {
            panic!("not an agent action: {manifest}")
        };
        assert!(
            container_names.is_empty(),
            "the pod's namespace, not a container"
        );
        let r = self
            .pool
            .inject(
                "node-a",
                InjectRequest {
                    idempotency_key: key.into(),
                    fault_json: fault_json(&fault).expect("encode"),
                    target: Some(Target {
                        kind: Some(Kind::Pid(pid)),
                    }),
                    lease_ttl_ms: 30_000,
                    owner: format!("{} shop/x", m.kind()),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("inject {}: {e}", m.kind()));
        r.injection_id
    }

    async fn recover(&self, id: &str) {
        let r = self
            .pool
            .recover(
                "node-a",
                RecoverRequest {
                    injection_id: id.into(),
                },
            )
            .await
            .expect("recover");
        assert!(r.recovered, "{}", r.reason);
        assert!(self.pool.list("node-a").await.expect("list").is_empty());
    }

    async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
    }
}

/// The only document of a `havoc convert` output.
fn converted(chaos_mesh: &str) -> String {
    convert(chaos_mesh)
        .unwrap_or_else(|e| panic!("{}", e.render("chaos-mesh.yaml")))
        .trim_start_matches("---\n")
        .to_string()
}

/// Runs blocking client commands off the async runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_chaos_mesh_dns_chaos_fails_the_matching_name_for_a_real_resolver_in_the_pod() {
    let test =
        "a_converted_chaos_mesh_dns_chaos_fails_the_matching_name_for_a_real_resolver_in_the_pod";
    if skip(test, &["dig", "nft", "iptables-save"]) {
        return;
    }
    let lab = std::sync::Arc::new(blocking(Lab::new).await);
    let l = lab.clone();
    let (bad, good) = blocking(move || (l.dig("bad.test"), l.dig("good.test"))).await;
    assert_eq!(bad, ("NOERROR".to_string(), vec!["10.9.9.2".to_string()]));
    assert_eq!(good, ("NOERROR".to_string(), vec!["10.9.9.1".to_string()]));

    let manifest = converted(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: DNSChaos\nmetadata: {name: dns, namespace: shop}\nspec:\n  action: error\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  patterns: [\"bad.t?st\"]\n  duration: 1m\n",
    );
    let agent = Agent::start().await;
    let id = agent
        .inject("uid/pod/c/dns", &manifest, lab.target_pid())
        .await;
    let l = lab.clone();
    let (during_bad, during_good) = blocking(move || {
        let bad: Vec<_> = (0..10).map(|_| l.dig("bad.test")).collect();
        let good: Vec<_> = (0..10).map(|_| l.dig("good.test")).collect();
        (bad, good)
    })
    .await;
    assert!(
        during_bad
            .iter()
            .all(|(s, a)| s == "SERVFAIL" && a.is_empty()),
        "every query for the matching name is answered SERVFAIL: {during_bad:?}"
    );
    assert!(
        during_good
            .iter()
            .all(|(s, a)| s == "NOERROR" && a == &["10.9.9.1"]),
        "other names reach dnsmasq unchanged: {during_good:?}"
    );

    // Deleting the object recovers the injection: the real answer again, nothing left.
    agent.recover(&id).await;
    let l = lab.clone();
    let (after, left) = blocking(move || {
        let after: Vec<_> = (0..5).map(|_| l.dig("bad.test")).collect();
        (after, l.havoc_leftovers())
    })
    .await;
    assert!(
        after
            .iter()
            .all(|(s, a)| s == "NOERROR" && a == &["10.9.9.2"]),
        "unfaulted after delete: {after:?}"
    );
    assert!(left.is_empty(), "left in the pod's namespace: {left:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_chaos_mesh_http_chaos_aborts_matching_requests_to_the_pods_server() {
    let test = "a_converted_chaos_mesh_http_chaos_aborts_matching_requests_to_the_pods_server";
    if skip(test, &["curl", "dig", "nft", "iptables-save"]) {
        return;
    }
    let lab = std::sync::Arc::new(blocking(Lab::new).await);
    let l = lab.clone();
    let before = blocking(move || l.curl("/api/item")).await;
    assert_eq!(before, (0, 200));

    let manifest = converted(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: HTTPChaos\nmetadata: {name: http, namespace: shop}\nspec:\n  mode: one\n  selector: {labelSelectors: {app: api}}\n  target: Request\n  port: 8080\n  method: GET\n  path: /api/*\n  abort: true\n  duration: 1m\n",
    );
    let agent = Agent::start().await;
    let id = agent
        .inject("uid/pod/c/http", &manifest, lab.target_pid())
        .await;
    let l = lab.clone();
    let (aborted, other, tables) = blocking(move || {
        let aborted: Vec<_> = (0..10).map(|_| l.curl("/api/item")).collect();
        let other: Vec<_> = (0..5).map(|_| l.curl("/health")).collect();
        (aborted, other, l.havoc_leftovers())
    })
    .await;
    // curl exit 52: the server closed the connection without a reply.
    assert!(
        aborted.iter().all(|r| *r == (52, 0)),
        "every GET /api/* is aborted: {aborted:?}"
    );
    assert!(
        other.iter().all(|r| *r == (0, 200)),
        "other paths are served: {other:?}"
    );
    assert!(
        tables.iter().any(|t| t.contains("havoc_http")),
        "the redirect lives in the pod's namespace: {tables:?}"
    );

    agent.recover(&id).await;
    let l = lab.clone();
    let (after, left) = blocking(move || {
        let after: Vec<_> = (0..5).map(|_| l.curl("/api/item")).collect();
        (after, l.havoc_leftovers())
    })
    .await;
    assert!(
        after.iter().all(|r| *r == (0, 200)),
        "unfaulted after delete: {after:?}"
    );
    assert!(left.is_empty(), "left in the pod's namespace: {left:?}");
    agent.stop().await;
}
