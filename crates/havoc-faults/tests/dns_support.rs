//! Shared by the DNSChaos tests and benchmark: a client namespace and a server namespace joined
//! by a veth, dnsmasq answering in the server namespace (UDP and TCP), and DNS clients whose
//! sockets live in the client namespace: UDP, TCP (several queries on one connection) and `dig`.
//! Everything is removed in `Drop`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use havoc_sys::netns::NetNs;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Names dnsmasq answers, with their addresses.
pub const RECORDS: &[(&str, Ipv4Addr)] = &[
    ("good.test", Ipv4Addr::new(10, 9, 9, 1)),
    ("bad.test", Ipv4Addr::new(10, 9, 9, 2)),
    ("slow.test", Ipv4Addr::new(10, 9, 9, 3)),
    ("fast.test", Ipv4Addr::new(10, 9, 9, 4)),
];

/// Why this environment cannot run the test, if it cannot.
pub fn cannot_run() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !std::path::Path::new(DNSMASQ).exists() {
        return Some(format!("{DNSMASQ} is not installed"));
    }
    None
}

/// Returns true (after printing why) when the test must be skipped; fails in CI instead.
pub fn skip(test: &str) -> bool {
    match cannot_run() {
        None => false,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test} cannot run in CI: {why}"
            );
            eprintln!("SKIPPED {test}: {why}");
            true
        }
    }
}

pub fn sh(argv: &[&str]) {
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

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Client namespace (`10.213.<n>.1`) and server namespace (`.2`, dnsmasq on port 53).
#[allow(clippy::new_without_default)]
pub struct DnsLab {
    pub client: String,
    pub server: String,
    pub server_addr: Ipv4Addr,
    pid_file: std::path::PathBuf,
    dnsmasq: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

#[allow(clippy::new_without_default)]
impl DnsLab {
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let sub = (std::process::id() % 200 + n * 7) % 250 + 1;
        let base = format!("hvdns{}-{n}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lab = DnsLab {
            client: format!("{base}c"),
            server: format!("{base}s"),
            server_addr: Ipv4Addr::new(10, 213, sub as u8, 2),
            pid_file: dir.path().join("dnsmasq.pid"),
            dnsmasq: None,
            _dir: dir,
        };
        sh(&["ip", "netns", "add", &lab.client]);
        sh(&["ip", "netns", "add", &lab.server]);
        let (vc, vs) = (
            format!("hvd{n}c{}", std::process::id() % 10000),
            format!("hvd{n}s{}", std::process::id() % 10000),
        );
        sh(&[
            "ip",
            "link",
            "add",
            &vc,
            "netns",
            &lab.client,
            "type",
            "veth",
            "peer",
            "name",
            &vs,
            "netns",
            &lab.server,
        ]);
        for (ns, dev, host) in [(&lab.client, &vc, 1), (&lab.server, &vs, 2)] {
            let addr = format!("10.213.{sub}.{host}/24");
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let mut argv: Vec<String> = [
            "ip",
            "netns",
            "exec",
            &lab.server,
            DNSMASQ,
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--bind-interfaces",
            "--cache-size=0",
            "--port=53",
            "--user=root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(format!("--listen-address={}", lab.server_addr));
        argv.push(format!("--pid-file={}", lab.pid_file.display()));
        for (name, ip) in RECORDS {
            argv.push(format!("--address=/{name}/{ip}"));
        }
        // Anything else: a known answer too, so "unchanged" can be compared for any name.
        argv.push("--address=/#/10.9.9.99".into());
        lab.dnsmasq = Some(
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start dnsmasq"),
        );
        // Ready when it answers.
        let mut client = lab.client_socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if client
                .query("good.test", RecordType::A, Duration::from_millis(200))
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer within 10 s"
            );
        }
        lab
    }

    pub fn client_netns(&self) -> NetNs {
        NetNs::from_path(format!("/run/netns/{}", self.client))
    }

    /// A UDP socket created inside the client namespace, connected to dnsmasq.
    pub fn client_socket(&self) -> DnsClient {
        let server = SocketAddr::from((self.server_addr, 53));
        let sock = self
            .client_netns()
            .run(move || {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(server)?;
                Ok::<_, std::io::Error>(s)
            })
            .expect("enter client netns")
            .expect("client socket");
        DnsClient { sock, next_id: 1 }
    }

    /// A TCP connection to dnsmasq's port 53, made inside the client namespace.
    pub fn client_tcp(&self) -> TcpDnsClient {
        let server = SocketAddr::from((self.server_addr, 53));
        self.client_netns()
            .run(move || TcpDnsClient::connect(server))
            .expect("enter client netns")
    }

    /// `dig +tcp` (or over UDP) from the client namespace: `STATUS ADDRESSES` of one A query
    /// (one try, 2 s timeout), e.g. `NOERROR 10.9.9.1` or `SERVFAIL`.
    pub fn dig(&self, name: &str, tcp: bool) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "dig", "+tries=1", "+time=2"])
            .args(tcp.then_some("+tcp"))
            .arg(format!("@{}", self.server_addr))
            .args([name, "A", "+noall", "+comments", "+answer"])
            .output()
            .expect("dig");
        dig_summary(&String::from_utf8_lossy(&out.stdout))
    }

    /// Names of nftables tables in the client namespace that belong to Havoc.
    pub fn havoc_tables(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "nft", "list", "tables"])
            .output()
            .expect("nft list tables");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("havoc"))
            .map(str::to_string)
            .collect()
    }

    /// Names of iptables chains in the client namespace that belong to Havoc.
    pub fn havoc_chains(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "iptables-save"])
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(":HAVOC-") || l.contains("NFQUEUE"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        for n in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "delete", n]).status();
        }
    }
}

/// What came back for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub addrs: Vec<std::net::IpAddr>,
    pub ttls: Vec<u32>,
    pub authoritative: bool,
}

pub struct DnsClient {
    sock: UdpSocket,
    next_id: u16,
}

impl DnsClient {
    /// Sends one query and waits for its answer (matched by id) up to `timeout`.
    pub fn query(
        &mut self,
        name: &str,
        t: RecordType,
        timeout: Duration,
    ) -> Result<Answer, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.queries
            .push(Query::query(Name::from_ascii(name).expect("name"), t));
        self.sock
            .send(&m.to_vec().expect("encode"))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer for {name} within {timeout:?}"));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(e.to_string()),
            };
            let Ok(r) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if r.metadata.id != id {
                continue;
            }
            let mut addrs = Vec::new();
            let mut ttls = Vec::new();
            for rec in &r.answers {
                match &rec.data {
                    RData::A(a) => addrs.push(a.0.into()),
                    RData::AAAA(a) => addrs.push(a.0.into()),
                    _ => continue,
                }
                ttls.push(rec.ttl);
            }
            return Ok(Answer {
                rcode: r.metadata.response_code,
                addrs,
                ttls,
                authoritative: r.metadata.authoritative,
            });
        }
    }
}

/// `STATUS ADDRESSES` from dig's `+noall +comments +answer` output.
pub fn dig_summary(text: &str) -> String {
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO-ANSWER")
        .to_string();
    let addrs: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    format!("{status} {}", addrs.join(",")).trim().to_string()
}

/// What a DNS answer says, from its wire form.
pub fn read_answer(wire: &[u8]) -> Option<(u16, Answer)> {
    let r = Message::from_vec(wire).ok()?;
    let mut addrs = Vec::new();
    let mut ttls = Vec::new();
    for rec in &r.answers {
        match &rec.data {
            RData::A(a) => addrs.push(a.0.into()),
            RData::AAAA(a) => addrs.push(a.0.into()),
            _ => continue,
        }
        ttls.push(rec.ttl);
    }
    Some((
        r.metadata.id,
        Answer {
            rcode: r.metadata.response_code,
            addrs,
            ttls,
            authoritative: r.metadata.authoritative,
        },
    ))
}

/// A DNS client on one TCP connection: queries can be sent back to back before any answer is
/// read (pipelining), answers are read in whatever order they come.
pub struct TcpDnsClient {
    sock: TcpStream,
    next_id: u16,
    buf: Vec<u8>,
}

impl TcpDnsClient {
    /// A connection to `server` from the calling thread's namespace.
    pub fn connect(server: SocketAddr) -> TcpDnsClient {
        let sock = TcpStream::connect_timeout(&server, Duration::from_secs(2))
            .expect("client TCP connection");
        sock.set_nodelay(true).expect("nodelay");
        TcpDnsClient {
            sock,
            next_id: 1,
            buf: Vec::new(),
        }
    }

    /// Sends one length-prefixed query; returns its id.
    pub fn send(&mut self, name: &str, t: RecordType) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.queries
            .push(Query::query(Name::from_ascii(name).expect("name"), t));
        let wire = m.to_vec().expect("encode");
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&wire);
        self.sock.write_all(&framed).expect("send over TCP");
        id
    }

    /// Sends several queries in one write (one segment): pipelined for sure.
    pub fn send_all(&mut self, queries: &[(&str, RecordType)]) -> Vec<u16> {
        let mut framed = Vec::new();
        let mut ids = Vec::new();
        for (name, t) in queries {
            self.next_id = self.next_id.wrapping_add(1);
            let mut m = Message::query();
            m.metadata.id = self.next_id;
            m.metadata.recursion_desired = true;
            m.queries
                .push(Query::query(Name::from_ascii(*name).expect("name"), *t));
            let wire = m.to_vec().expect("encode");
            framed.extend_from_slice(&(wire.len() as u16).to_be_bytes());
            framed.extend_from_slice(&wire);
            ids.push(self.next_id);
        }
        self.sock.write_all(&framed).expect("send over TCP");
        ids
    }

    /// The next answer on the connection (id and content), within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<(u16, Answer), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() >= 2 + len {
                    let wire: Vec<u8> = self.buf.drain(..2 + len).skip(2).collect();
                    return read_answer(&wire).ok_or_else(|| "unreadable answer".to_string());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {timeout:?}"));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// One query and its answer.
    pub fn query(
        &mut self,
        name: &str,
        t: RecordType,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let id = self.send(name, t);
        let (got, a) = self.recv(timeout)?;
        if got != id {
            return Err(format!("answer for id {got}, expected {id}"));
        }
        Ok(a)
    }

    /// Closes the sending side (the server sees end of stream) and reads to the end: true if
    /// the connection ends cleanly within `timeout` with nothing more to read.
    pub fn finish(mut self, timeout: Duration) -> bool {
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        let _ = self.sock.set_read_timeout(Some(timeout));
        let mut rest = Vec::new();
        self.sock.read_to_end(&mut rest).is_ok() && rest.is_empty() && self.buf.is_empty()
    }
}

/// The fault spec of a one-fault experiment written as YAML (`faults:` item body).
pub fn fault(yaml_fault: &str) -> havoc_spec::FaultSpec {
    let src = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: t }}\nspec:\n  duration: 5s\n  faults:\n{yaml_fault}"
    );
    let exp = havoc_spec::experiment::parse_experiment(&src).expect("parse experiment");
    exp.spec.faults[0].spec.clone()
}

pub fn ctx(seed: u64) -> havoc_faults::Context {
    havoc_faults::Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed,
        duration: Duration::from_secs(60),
    }
}
