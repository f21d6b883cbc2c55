//! Test sandbox for the datapath: two fresh network namespaces joined by a veth pair, a UDP
//! sender/receiver pair that runs inside them, and readers for the kernel's SNMP counters.
//! Everything is removed by `Sandbox`'s `Drop`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use havoc_sys::netns::NetNs;

/// Statistical tests share 2 vCPUs: run them one at a time so they do not disturb each other.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

pub const IP_A: &str = "10.199.0.1";
pub const IP_B: &str = "10.199.0.2";
pub const IF_A: &str = "hva";
pub const IF_B: &str = "hvb";

/// Returns `None` (after printing why) when the test cannot run here.
pub fn privileged() -> Option<MutexGuard<'static, ()>> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: the havoc-bpf datapath tests need root (netns, eBPF)");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs `program` with `args` (no shell) and panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces `a` (10.199.0.1, dev hva) and `b` (10.199.0.2, dev hvb) joined by a veth pair.
pub struct Sandbox {
    pub name_a: String,
    pub name_b: String,
    pub a: NetNs,
    pub b: NetNs,
}

impl Sandbox {
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("hvbpf-{}-{n}", std::process::id());
        let sb = Self {
            name_a: format!("{base}-a"),
            name_b: format!("{base}-b"),
            a: NetNs::named(&format!("{base}-a")),
            b: NetNs::named(&format!("{base}-b")),
        };
        run("ip", &["netns", "add", &sb.name_a]);
        run("ip", &["netns", "add", &sb.name_b]);
        run(
            "ip",
            &[
                "link", "add", IF_A, "netns", &sb.name_a, "type", "veth", "peer", "name", IF_B,
                "netns", &sb.name_b,
            ],
        );
        for (ns, dev, ip) in [(&sb.name_a, IF_A, IP_A), (&sb.name_b, IF_B, IP_B)] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        sb
    }

    /// `ip netns exec NS program args...`: true if it exited 0.
    pub fn exec_ok(&self, ns: &str, program: &str, args: &[&str]) -> bool {
        let mut argv = vec!["netns", "exec", ns, program];
        argv.extend_from_slice(args);
        Command::new("ip")
            .args(&argv)
            .output()
            .expect("spawn ip netns exec")
            .status
            .success()
    }

    /// Pings b from a: true if at least one of `count` replies arrived.
    pub fn ping_b(&self, count: u32) -> bool {
        self.exec_ok(
            &self.name_a,
            "ping",
            &["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-q", IP_B],
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for ns in [&self.name_a, &self.name_b] {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns.as_str()])
                .output();
        }
    }
}

/// What the receiver saw of a UDP run.
#[derive(Debug, Default, Clone)]
pub struct UdpRun {
    pub sent: u32,
    pub send_errors: u32,
    pub received: u32,
    pub unique: u32,
    pub dupes: u32,
    pub corrupted: u32,
    /// `received_seq[i]`: datagram `i` arrived intact at least once.
    pub received_seq: Vec<bool>,
    /// Delta of /proc/net/snmp "Udp:" counters in b over the run.
    pub udp_b: HashMap<String, i64>,
    /// Delta of /proc/net/snmp "Udp:" counters in a over the run.
    pub udp_a: HashMap<String, i64>,
}

impl UdpRun {
    /// Datagrams that did not arrive, less those the receiver's own socket buffer dropped
    /// (`UdpRcvbufErrors` in b: a starved receiver on a loaded machine, not the fault).
    pub fn loss_pct(&self) -> f64 {
        let lost = i64::from(self.sent - self.unique) - self.snmp_b("RcvbufErrors").max(0);
        100.0 * lost.max(0) as f64 / f64::from(self.sent)
    }
    pub fn pct(&self, n: u32) -> f64 {
        100.0 * f64::from(n) / f64::from(self.sent)
    }
    pub fn snmp_b(&self, key: &str) -> i64 {
        self.udp_b.get(key).copied().unwrap_or(0)
    }
    pub fn snmp_a(&self, key: &str) -> i64 {
        self.udp_a.get(key).copied().unwrap_or(0)
    }
}

const DGRAM: usize = 64;

fn datagram(seq: u32) -> [u8; DGRAM] {
    let mut b = [0u8; DGRAM];
    // The complement makes any bit flip in the sequence number detectable.
    b[..4].copy_from_slice(&seq.to_le_bytes());
    b[4..8].copy_from_slice(&(!seq).to_le_bytes());
    for (i, x) in b[8..].iter_mut().enumerate() {
        *x = (seq.wrapping_mul(7) as u8).wrapping_add(i as u8);
    }
    b
}

/// The "Udp:" row of /proc/net/snmp as seen from the calling thread's netns.
pub fn udp_snmp() -> HashMap<String, i64> {
    // /proc/net follows the thread group leader's netns; thread-self follows this thread's.
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let keys = rows[0].split_whitespace().skip(1);
    let vals = rows[1]
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<i64>().expect("snmp value"));
    keys.map(str::to_owned).zip(vals).collect()
}

fn delta(after: HashMap<String, i64>, before: &HashMap<String, i64>) -> HashMap<String, i64> {
    after
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or(0);
            (k, v - b)
        })
        .collect()
}

/// Sends `n` numbered datagrams from a to b:`port` and reports what b received. The receiver
/// stops after 1 s idle (or 60 s); sending is paced so the receiver never overflows.
pub fn udp_run(sb: &Sandbox, port: u16, n: u32) -> UdpRun {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            sb.b.run(move || {
                let before = udp_snmp();
                let sock = UdpSocket::bind(("0.0.0.0", port)).expect("bind receiver");
                rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 8 << 20)
                    .expect("raise SO_RCVBUF");
                sock.set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("set read timeout");
                ready_tx.send(()).expect("signal ready");
                let mut run = UdpRun {
                    received_seq: vec![false; n as usize],
                    ..UdpRun::default()
                };
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut buf = [0u8; 2048];
                while Instant::now() < deadline && run.received < n.saturating_mul(3) {
                    let Ok(len) = sock.recv(&mut buf) else { break };
                    run.received += 1;
                    let seq = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
                    if len != DGRAM || seq >= n || buf[..DGRAM] != datagram(seq) {
                        run.corrupted += 1;
                    } else if run.received_seq[seq as usize] {
                        run.dupes += 1;
                    } else {
                        run.received_seq[seq as usize] = true;
                        run.unique += 1;
                    }
                }
                run.udp_b = delta(udp_snmp(), &before);
                run
            })
            .expect("run receiver in netns b")
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("receiver ready");
        let (sent, send_errors, udp_a) =
            sb.a.run(move || {
                let before = udp_snmp();
                let sock = UdpSocket::bind(("0.0.0.0", 0)).expect("bind sender");
                let dst: SocketAddr = format!("{IP_B}:{port}").parse().expect("dst addr");
                let mut errors = 0;
                for seq in 0..n {
                    if sock.send_to(&datagram(seq), dst).is_err() {
                        errors += 1;
                    }
                    if seq % 32 == 31 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                }
                (n, errors, delta(udp_snmp(), &before))
            })
            .expect("run sender in netns a");
        let mut run = receiver.join().expect("receiver thread");
        run.sent = sent;
        run.send_errors = send_errors;
        run.udp_a = udp_a;
        run
    })
}

/// Lengths of the runs of consecutive lost datagrams.
pub fn loss_bursts(received: &[bool]) -> Vec<u32> {
    let mut bursts = Vec::new();
    let mut cur = 0;
    for &r in received {
        if r {
            if cur > 0 {
                bursts.push(cur);
            }
            cur = 0;
        } else {
            cur += 1;
        }
    }
    if cur > 0 {
        bursts.push(cur);
    }
    bursts
}

/// `bpftool -j SUBCOMMAND show` as JSON values.
pub fn bpftool_show(object: &str) -> Vec<serde_json::Value> {
    let out = run("bpftool", &["-j", object, "show"]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&out).expect("parse bpftool json")
}

/// Instructions the verifier processed to load program `id` (`verified_insns`, kernel 5.16+).
pub fn verified_insns(id: u32) -> u32 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("our program is loaded")
        .verified_instruction_count()
        .expect("the kernel reports verified_insns")
}
