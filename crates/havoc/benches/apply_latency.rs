//! Cold apply latency of a network fault, measured at the receiver: from the moment `havoc run`
//! is started (a new process, no baseline phase) to the first packet the fault dropped, beside the
//! same measurement for `iptables -A ... -j DROP` started at the same point of an identical stream.
//! Also the achieved/requested hold of 1, 10 and 50 concurrent pause runs.
//!
//! Run as root: `cargo bench -p havoc --bench apply_latency` (prints medians of 10 cold runs).

#[path = "../tests/common/netpair.rs"]
mod netpair;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use havoc_sys::netns::NetNs;
use netpair::Pair;

const PACE: Duration = Duration::from_micros(200);

/// Streams numbered datagrams from `a` to `b` for `total`, runs `act` (which starts the fault)
/// `lead` into the stream, and returns the time from `act`'s start to the send time of the first
/// datagram that never arrived (None if none was lost).
fn first_loss_after(pair: &Pair, port: u16, lead: Duration, act: impl FnOnce()) -> Option<f64> {
    let total = lead + Duration::from_millis(1500);
    let (recv_ns, send_ns) = (NetNs::named(&pair.b), NetNs::named(&pair.a));
    let ip_b = pair.ip_b.clone();
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = s.spawn(move || {
            recv_ns
                .run(move || {
                    let sock = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
                    sock.set_read_timeout(Some(Duration::from_millis(500)))
                        .expect("timeout");
                    ready_tx.send(()).expect("ready");
                    let mut seen = HashSet::new();
                    let mut buf = [0u8; 16];
                    while let Ok(n) = sock.recv(&mut buf) {
                        if n >= 4 {
                            seen.insert(u32::from_le_bytes(buf[..4].try_into().expect("4")));
                        }
                    }
                    seen
                })
                .expect("receiver netns")
        });
        ready_rx.recv().expect("receiver ready");
        let sender = s.spawn(move || {
            send_ns
                .run(move || {
                    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    let t0 = Instant::now();
                    let mut sent = Vec::new();
                    let mut i = 0u32;
                    while t0.elapsed() < total {
                        let at = Instant::now();
                        let _ = sock.send_to(&i.to_le_bytes(), (ip_b.as_str(), port));
                        sent.push(at);
                        i += 1;
                        let next = t0 + PACE * i;
                        if let Some(d) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(d);
                        }
                    }
                    sent
                })
                .expect("sender netns")
        });
        std::thread::sleep(lead);
        let started = Instant::now();
        act();
        let sent = sender.join().expect("sender");
        let seen = receiver.join().expect("receiver");
        (0..sent.len() as u32)
            .find(|i| sent[*i as usize] >= started && !seen.contains(i))
            .map(|i| (sent[i as usize] - started).as_secs_f64() * 1000.0)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn main() {
    if !root() {
        eprintln!("apply_latency: needs root, skipped");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_havoc");
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("bl");
    let port = 7300;
    let file = dir.path().join("loss.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: cold }}\nspec:\n  duration: 400ms\n  faults:\n    - name: drop\n      kind: NetworkChaos\n      action: loss\n      direction: from\n      ports: [{port}]\n      loss: {{ loss: \"100\" }}\n      selector: {{ netns: [{}] }}\n",
            pair.b
        ),
    )
    .expect("write");
    let (mut havoc, mut iptables, mut reported) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..10 {
        let state = dir.path().join(format!("state{round}"));
        let mut report = String::new();
        let l = first_loss_after(&pair, port, Duration::from_millis(200), || {
            let out = Command::new(exe)
                .args(["run", file.to_str().expect("utf8"), "--output", "json"])
                .env("HAVOC_STATE_DIR", &state)
                .stderr(Stdio::null())
                .output()
                .expect("havoc run");
            report = String::from_utf8_lossy(&out.stdout).into_owned();
        });
        havoc.push(l.expect("havoc dropped packets"));
        let r: serde_json::Value = serde_json::from_str(&report).expect("report");
        reported.push(
            r["timing"]["applyLatencyMs"]
                .as_f64()
                .expect("applyLatencyMs"),
        );
        let rule = [
            "netns", "exec", &pair.b, "iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport",
            "7300", "-j", "DROP",
        ];
        let l = first_loss_after(&pair, port, Duration::from_millis(200), || {
            Command::new("ip").args(rule).status().expect("iptables");
            std::thread::sleep(Duration::from_millis(400));
        });
        let mut del = rule;
        del[5] = "-D";
        Command::new("ip").args(del).status().expect("iptables -D");
        iptables.push(l.expect("iptables dropped packets"));
    }
    println!(
        "cold apply latency to the first dropped packet, at the receiver, median of 10 (min-max): havoc run {:.1} ms ({:.1}-{:.1}); havoc's own applyLatencyMs {:.1} ms; iptables -A {:.1} ms ({:.1}-{:.1})",
        median(havoc.clone()),
        havoc.iter().cloned().fold(f64::MAX, f64::min),
        havoc.iter().cloned().fold(0.0, f64::max),
        median(reported),
        median(iptables.clone()),
        iptables.iter().cloned().fold(f64::MAX, f64::min),
        iptables.iter().cloned().fold(0.0, f64::max),
    );

    // Achieved/requested hold of N concurrent pause runs (each on its own sleeper).
    for n in [1usize, 10, 50] {
        let sleepers: Vec<_> = (0..n)
            .map(|_| Command::new("sleep").arg("300").spawn().expect("sleep"))
            .collect();
        let children: Vec<_> = sleepers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let f = dir.path().join(format!("p{n}-{i}.yaml"));
                std::fs::write(&f, format!("apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: c{i} }}\nspec:\n  duration: 3s\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n", s.id())).expect("write");
                Command::new(exe)
                    .args(["run", f.to_str().expect("utf8"), "--output", "json"])
                    .env("HAVOC_STATE_DIR", dir.path().join(format!("s{n}-{i}")))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("havoc run")
            })
            .collect();
        let ratios: Vec<f64> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().expect("wait");
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
                r["faults"][0]["targets"][0]["holdAchievedSeconds"]
                    .as_f64()
                    .expect("achieved")
                    / 3.0
            })
            .collect();
        for mut s in sleepers {
            let _ = s.kill();
            let _ = s.wait();
        }
        println!(
            "{n:>2} concurrent pause runs of 3 s: achieved/requested min {:.4} median {:.4} max {:.4}",
            ratios.iter().cloned().fold(f64::MAX, f64::min),
            median(ratios.clone()),
            ratios.iter().cloned().fold(0.0, f64::max)
        );
    }
}
