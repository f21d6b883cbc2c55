//! Sandboxes and traffic tools shared by the privileged tests and the measurement example.
//!
//! A [`Sandbox`] is two uniquely named namespaces (`hvnm-<pid>-<n>-a/b`) joined by a veth with
//! 10.77.<n>.1/.2 addresses; its `Drop` deletes both. All traffic stays inside them, and every
//! loop below is bounded in count and time.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use havoc_sys::netns::NetNs;

/// Serialises the tests of one binary: timing measurements on 2 vCPUs must not overlap.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED {test}: needs root (network namespaces, iptables, tc)");
        false
    }
}

pub fn sh(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("spawn a setup tool");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn output_in(ns: &NetNs, argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    ns.run(move || Command::new(&argv[0]).args(&argv[1..]).output())
        .expect("enter netns")
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("run a tool in the netns")
}

/// Two namespaces joined by a veth, deleted on drop.
pub struct Sandbox {
    pub name_a: String,
    pub name_b: String,
    pub a: NetNs,
    pub b: NetNs,
    pub addr_a: Ipv4Addr,
    pub addr_b: Ipv4Addr,
    pub dev_a: &'static str,
    pub dev_b: &'static str,
}

impl Sandbox {
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name_a = format!("hvnm-{pid}-{n}-a");
        let name_b = format!("hvnm-{pid}-{n}-b");
        let sub = (n % 200) as u8 + 1;
        let sb = Sandbox {
            a: NetNs::named(&name_a),
            b: NetNs::named(&name_b),
            name_a,
            name_b,
            addr_a: Ipv4Addr::new(10, 77, sub, 1),
            addr_b: Ipv4Addr::new(10, 77, sub, 2),
            dev_a: "hva",
            dev_b: "hvb",
        };
        sh(&["ip", "netns", "add", &sb.name_a]);
        sh(&["ip", "netns", "add", &sb.name_b]);
        sh(&[
            "ip", "link", "add", "hva", "netns", &sb.name_a, "type", "veth", "peer", "name", "hvb",
            "netns", &sb.name_b,
        ]);
        for (ns, dev, addr) in [
            (&sb.name_a, "hva", sb.addr_a),
            (&sb.name_b, "hvb", sb.addr_b),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Wait (bounded) for carrier, so "before" snapshots do not catch the link coming up.
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [(&sb.a, "hva"), (&sb.b, "hvb")] {
            while Instant::now() < deadline {
                let state = output_in(ns, &["ip", "-j", "link", "show", "dev", dev]);
                if state.contains("\"operstate\":\"UP\"") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        sb
    }

    /// Everything the tests promise to restore: links, qdiscs, filters and iptables rules.
    pub fn snapshot(&self, ns: &NetNs) -> String {
        let mut s = String::new();
        let links = output_in(ns, &["ip", "-j", "link", "show"]);
        s += &links;
        s += &output_in(ns, &["tc", "-j", "qdisc", "show"]);
        let parsed: serde_json::Value = serde_json::from_str(&links).expect("ip -j link json");
        for l in parsed.as_array().expect("link array") {
            let dev = l["ifname"].as_str().expect("ifname");
            for hook in ["ingress", "egress"] {
                s += &format!("\n{dev} {hook}: ");
                s += &output_in(ns, &["tc", "-j", "filter", "show", "dev", dev, hook]);
            }
            s += &format!("\n{dev} root: ");
            s += &output_in(ns, &["tc", "-j", "filter", "show", "dev", dev]);
        }
        s += "\nnft:\n";
        s += &output_in(ns, &["nft", "list", "ruleset"]);
        for tool in ["iptables-save", "ip6tables-save"] {
            for line in output_in(ns, &[tool])
                .lines()
                .filter(|l| !l.starts_with('#'))
            {
                s += line;
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for name in [&self.name_a, &self.name_b] {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

/// A UDP echo server in `ns`, stopped on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Self {
        let sock = ns
            .run(move || UdpSocket::bind(addr))
            .expect("enter netns")
            .expect("bind echo");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("echo timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends `count` probes from `ns` to an echo server every `interval` and returns the RTT of
/// each answered probe (unanswered ones are missing).
pub fn rtts(ns: &NetNs, server: SocketAddr, count: u32, interval: Duration) -> Vec<Duration> {
    let sock = ns
        .run(|| UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))))
        .expect("enter netns")
        .expect("bind client");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("client timeout");
    let base = Instant::now();
    let rx = sock.try_clone().expect("clone client socket");
    let total = count;
    let collector = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + interval * total + Duration::from_secs(3);
        while out.len() < total as usize && Instant::now() < deadline {
            if let Ok(n) = rx.recv(&mut buf) {
                if n >= 16 {
                    let sent = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
                    let now = base.elapsed().as_nanos() as u64;
                    out.push(Duration::from_nanos(now.saturating_sub(sent)));
                }
            }
        }
        out
    });
    let start = Instant::now();
    for i in 0..count {
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        msg[8..].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
        let _ = sock.send_to(&msg, server);
        let next = start + interval * (i + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    collector.join().expect("collector thread")
}

pub fn mean_ms(v: &[Duration]) -> f64 {
    v.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / v.len().max(1) as f64
}

/// Streams TCP from `from_ns` to a listener at `to` in `to_ns` and returns the goodput in
/// bit/s measured at the receiver over `window`, after `warmup`.
pub fn tcp_goodput(
    from_ns: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    warmup: Duration,
    window: Duration,
) -> f64 {
    let listener = to_ns
        .run(move || TcpListener::bind(to))
        .expect("enter netns")
        .expect("bind listener");
    let stream = from_ns
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .expect("enter netns")
        .expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let total = warmup + window + Duration::from_secs(1);
    let writer = std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .expect("write timeout");
        let buf = vec![0x5au8; 128 * 1024];
        let end = Instant::now() + total;
        while !flag.load(Ordering::Relaxed) && Instant::now() < end {
            if stream.write(&buf).is_err() && Instant::now() >= end {
                break;
            }
        }
    });
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + window);
    let mut counted = 0u64;
    while Instant::now() < until + Duration::from_secs(1) {
        let n = server.read(&mut buf).unwrap_or(0);
        let now = Instant::now();
        if now >= from && now <= until {
            counted += n as u64;
        }
        if now > until {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(server);
    writer.join().expect("writer thread");
    counted as f64 * 8.0 / window.as_secs_f64()
}
