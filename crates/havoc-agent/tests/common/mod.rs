//! Fixtures for the agent's integration tests: certificates, an in-process agent, a client, a
//! `sleep` in a network namespace of its own with a veth to the host, UDP loss measurement.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use havoc_agent::{AgentOptions, RunningAgent};
use havoc_api::pki::{Ca, Role, Validity};
use havoc_api::tls::TlsFiles;
use havoc_api::v1::agent_client::AgentClient;
use havoc_api::v1::{target, InjectRequest, Target};
use tonic::transport::Channel;

pub fn root_or_skip(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: needs root (netns, eBPF, cgroups, signals)");
    }
    root
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{:x}{:04x}",
        std::process::id() & 0xffff,
        rand::random::<u16>()
    )
}

pub fn testd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_havoc-agent-testd"))
}

/// A CA and files for the agent (server) and the operator (client), in a tempdir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: TlsFiles,
    pub client: TlsFiles,
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    havoc_api::pki::write_pem(&p, text, name.contains("key")).expect("write pem");
    p
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("test CA", Validity::days(1)).expect("ca");
        let s = ca
            .issue(
                Role::Server,
                "agent",
                &["localhost".into(), "127.0.0.1".into()],
                Validity::days(1),
            )
            .expect("server cert");
        let c = ca
            .issue(Role::Client, "operator", &[], Validity::days(1))
            .expect("client cert");
        let server = TlsFiles {
            ca: write(dir.path(), "ca.pem", ca.cert_pem()),
            cert: write(dir.path(), "agent.pem", &s.cert_pem),
            key: write(dir.path(), "agent-key.pem", &s.key_pem),
        };
        let client = TlsFiles {
            ca: server.ca.clone(),
            cert: write(dir.path(), "operator.pem", &c.cert_pem),
            key: write(dir.path(), "operator-key.pem", &c.key_pem),
        };
        Pki {
            dir,
            ca,
            server,
            client,
        }
    }

    /// Client files whose certificate comes from `issuer` with `validity`.
    pub fn client_from(&self, issuer: &Ca, validity: Validity, name: &str) -> TlsFiles {
        let c = issuer
            .issue(Role::Client, "intruder", &[], validity)
            .expect("cert");
        TlsFiles {
            ca: self.server.ca.clone(),
            cert: write(self.dir.path(), &format!("{name}.pem"), &c.cert_pem),
            key: write(self.dir.path(), &format!("{name}-key.pem"), &c.key_pem),
        }
    }
}

/// Options for an in-process agent on loopback with mutual TLS and a private state dir.
pub fn options(pki: &Pki, state: &Path) -> AgentOptions {
    let mut o = AgentOptions::new(Some(pki.server.clone()));
    o.listen = "127.0.0.1:0".parse().expect("addr");
    o.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    o.state_dir = state.to_path_buf();
    o.node_name = "test-node".into();
    o.self_exe = testd();
    o
}

pub async fn start(pki: &Pki, state: &Path) -> RunningAgent {
    havoc_agent::start(options(pki, state))
        .await
        .expect("agent starts")
}

pub async fn client(agent_addr: SocketAddr, files: &TlsFiles) -> AgentClient<Channel> {
    let ch = havoc_api::tls::client_channel(
        &format!("https://127.0.0.1:{}", agent_addr.port()),
        &files.ca,
        &files.cert,
        &files.key,
    )
    .await
    .expect("connect");
    AgentClient::new(ch)
}

pub fn inject_pid(key: &str, pid: i32, fault_json: &str, ttl_ms: u32) -> InjectRequest {
    InjectRequest {
        idempotency_key: key.into(),
        fault_json: fault_json.into(),
        target: Some(Target {
            kind: Some(target::Kind::Pid(pid)),
        }),
        lease_ttl_ms: ttl_ms,
        owner: "test".into(),
    }
}

pub const PAUSE: &str = r#"{"kind": "ProcessChaos", "spec": {"action": "pause"}}"#;

/// A child process reaped (killed) on drop.
pub struct Reaped(pub Child);

impl Reaped {
    pub fn sleeper() -> Reaped {
        Reaped(
            Command::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = havoc_sys::process::send_signal(self.pid(), 18);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One-letter state of a process (R, S, T, Z...).
pub fn proc_state(pid: i32) -> Option<char> {
    havoc_faults::procinfo::ProcInfo::read(pid).map(|p| p.state)
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth to the host (host 10.213.N.1/30, inside 10.213.N.2/30) and a
/// `sleep` running in it; all removed on drop.
pub struct NetnsSleeper {
    pub name: String,
    pub host_veth: String,
    pub host_ip: Ipv4Addr,
    pub inner_ip: Ipv4Addr,
    pub sleeper: Option<Reaped>,
}

impl NetnsSleeper {
    pub fn new() -> NetnsSleeper {
        let name = unique("hvag");
        let n = rand::random::<u8>() & 0x3f;
        let host_veth = format!("{name}h");
        let inner = format!("{name}i");
        let host_ip = Ipv4Addr::new(10, 213, n, 1 + 4 * (rand::random::<u8>() & 0x3f) % 252);
        let inner_ip = Ipv4Addr::from(u32::from(host_ip) + 1);
        let me = NetnsSleeper {
            name: name.clone(),
            host_veth: host_veth.clone(),
            host_ip,
            inner_ip,
            sleeper: None,
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &inner, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inner_ip}/30"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let child = Command::new("ip")
            .args(["netns", "exec", &name, "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep in netns");
        let mut me = me;
        me.sleeper = Some(Reaped(child));
        // `ip netns exec` execs sleep: wait until the pid is in the namespace.
        let pid = me.pid();
        let want = std::fs::metadata(format!("/run/netns/{name}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("netns");
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == want)
                    .unwrap_or(false)
                    && proc_state(pid).is_some_and(|s| s != 'Z')
            }),
            "sleep entered the netns"
        );
        me
    }

    pub fn pid(&self) -> i32 {
        self.sleeper.as_ref().expect("sleeper").pid()
    }

    /// A UDP socket bound inside the namespace.
    pub fn bind_inside(&self, port: u16) -> UdpSocket {
        let ns = havoc_sys::netns::NetNs::named(&self.name);
        let addr = SocketAddr::from((self.inner_ip, port));
        ns.run(move || UdpSocket::bind(addr))
            .expect("enter netns")
            .expect("bind inside")
    }

    /// Sends `n` datagrams from the host to `port` inside and returns the fraction lost.
    pub fn udp_loss(&self, port: u16, n: u32) -> f64 {
        let rx = self.bind_inside(port);
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let tx = UdpSocket::bind((self.host_ip, 0)).expect("bind host side");
        let dst = SocketAddr::from((self.inner_ip, port));
        let mut got = 0u32;
        let mut buf = [0u8; 64];
        for i in 0..n {
            tx.send_to(&i.to_le_bytes(), dst).expect("send");
            if i % 64 == 63 {
                // Drain so the receive buffer never overflows.
                rx.set_nonblocking(true).expect("nonblocking");
                while rx.recv(&mut buf).is_ok() {
                    got += 1;
                }
                rx.set_nonblocking(false).expect("blocking");
            }
        }
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        1.0 - got as f64 / n as f64
    }
}

impl Drop for NetnsSleeper {
    fn drop(&mut self) {
        self.sleeper.take();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A v1 (or v2) cgroup made for a test, removed on drop (its processes moved back to the root).
pub struct TestCgroup {
    pub dir: PathBuf,
}

impl TestCgroup {
    /// A new cgroup in the cpu hierarchy (v1 `cpu,cpuacct`, else the v2 root).
    pub fn new() -> TestCgroup {
        let name = unique("havoc-agent-test-");
        let base = [
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
        let dir = base.join(name);
        std::fs::create_dir(&dir).expect("create cgroup");
        TestCgroup { dir }
    }

    pub fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("join cgroup");
    }

    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let root = self.dir.parent().expect("parent").join("cgroup.procs");
        for p in self.procs() {
            let _ = std::fs::write(&root, p.to_string());
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
