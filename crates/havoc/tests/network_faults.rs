//! NetworkChaos through the real `havoc` binary, in two namespaces joined by a veth pair that the
//! test creates and removes: eBPF loss measured at the receiver against the run report's
//! counters, delay + loss together, and SIGKILL in the middle leaving nothing behind.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netpair::Pair;
use common::*;
use havoc_sys::netns::NetNs;

/// The tests of this file run one at a time: `havoc recover` sweeps every namespace, and the
/// statistics are steadier without neighbours.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `n` numbered datagrams from `a` to `b` and returns how many distinct ones arrived.
fn udp_count(pair: &Pair, port: u16, n: u32) -> u32 {
    udp_stats(pair, port, n).0
}

/// Sends `n` numbered datagrams (sequence number, its complement, a fixed pattern) from `a` to
/// `b`; returns
/// (distinct intact datagrams, datagrams whose content was altered).
fn udp_stats(pair: &Pair, port: u16, n: u32) -> (u32, u32) {
    let ip_b = pair.ip_b.clone();
    let receiver = NetNs::named(&pair.b);
    let sender = NetNs::named(&pair.a);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let recv = s.spawn(move || {
            receiver
                .run(move || {
                    let sock = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
                    sock.set_read_timeout(Some(Duration::from_millis(800)))
                        .expect("timeout");
                    tx.send(()).expect("ready");
                    let mut seen = std::collections::HashSet::new();
                    let mut altered = 0u32;
                    let mut buf = [0u8; 64];
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_secs(30) {
                        match sock.recv(&mut buf) {
                            Ok(32)
                                if buf[8..32].iter().all(|b| *b == 0xAB)
                                    && buf[..4].iter().zip(&buf[4..8]).all(|(a, b)| *a == !*b) =>
                            {
                                seen.insert(u32::from_le_bytes(
                                    buf[..4].try_into().expect("4 bytes"),
                                ));
                            }
                            Ok(_) => altered += 1,
                            Err(_) => break,
                        }
                    }
                    (seen.len() as u32, altered)
                })
                .expect("receiver netns")
        });
        rx.recv().expect("receiver ready");
        sender
            .run(|| {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
                for i in 0..n {
                    let mut msg = [0xABu8; 32];
                    msg[..4].copy_from_slice(&i.to_le_bytes());
                    msg[4..8].copy_from_slice(&(!i).to_le_bytes());
                    sock.send_to(&msg, (ip_b.as_str(), port)).expect("send");
                    if i % 8 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                }
            })
            .expect("sender netns");
        recv.join().expect("receiver thread")
    })
}

fn experiment(netns: &str, body: &str, duration: &str) -> String {
    format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: net-test }}\nspec:\n  seed: 7\n  duration: {duration}\n  faults:\n    - name: net\n      kind: NetworkChaos\n      selector: {{ netns: [{netns}] }}\n{body}"
    )
}

#[test]
fn loss_measured_at_the_receiver_matches_the_report() {
    if !root_or_skip("loss_measured_at_the_receiver_matches_the_report") {
        return;
    }
    let _serial = serial();
    let pair = Pair::new("l");
    let before = Pair::snapshot(&pair.b);
    let dir = tempfile::tempdir().expect("tempdir");
    // 30 % loss on packets the receiver gets (its ingress), UDP port 7100 only.
    let file = write(dir.path(), "loss.yaml", &experiment(&pair.b, "      action: loss\n      direction: from\n      loss: { loss: \"30\" }\n      ports: [7100]\n      protocols: [udp]\n", "20s"));
    let mut child = Reaped::spawn(&mut havoc_run(&dir.path().join("state"), &file, true));
    // Wait until the rule is attached: a burst on port 7100 shows loss.
    let t0 = Instant::now();
    while udp_count(&pair, 7100, 200) == 200 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = 6000;
    let other_port = udp_count(&pair, 7101, 1000);
    let got = udp_count(&pair, 7100, sent);
    // Stop the run early with SIGTERM: everything recovers and the report has the counters.
    Command::new("kill")
        .args(["-TERM", &child.pid().to_string()])
        .status()
        .expect("kill");
    let mut out = Vec::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read report");
    let _ = child.0.wait();
    let report: serde_json::Value = serde_json::from_slice(&out).expect("json report");
    assert_eq!(report["allRecovered"], true);
    let loss = 100.0 * (sent - got) as f64 / sent as f64;
    assert!(
        (28.5..=31.5).contains(&loss),
        "receiver-side loss 30 % ± 1.5, got {loss:.2} %"
    );
    assert_eq!(other_port, 1000, "port 7101 is not filtered");
    let m = &report["faults"][0]["targets"][0]["effect"]["metrics"];
    let dropped = m["packets_dropped"].as_f64().expect("dropped");
    // The report counts every drop the rule made, including the probing bursts above.
    assert!(
        dropped >= (sent - got) as f64,
        "report counted {dropped} drops, receiver missed {}",
        sent - got
    );
    assert!(
        dropped <= (sent - got) as f64 + 300.0,
        "report counted {dropped} drops, receiver missed {} (+ at most the probe bursts)",
        sent - got
    );
    assert_eq!(
        Pair::snapshot(&pair.b),
        before,
        "namespace exactly as before"
    );
}

#[test]
fn delay_and_loss_together_then_sigkill_leaves_nothing_behind() {
    if !root_or_skip("delay_and_loss_together_then_sigkill_leaves_nothing_behind") {
        return;
    }
    let _serial = serial();
    let pair = Pair::new("k");
    let (before_a, before_b) = (Pair::snapshot(&pair.a), Pair::snapshot(&pair.b));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "netem.yaml",
        &experiment(&pair.b, "      action: netem\n      direction: both\n      delay: { latency: 30ms, jitter: 5ms }\n      loss: { loss: \"5\" }\n      bandwidth: { rate: 100mbit }\n", "60s"),
    );
    let mut child = Reaped::spawn(&mut havoc_run(&state, &file, false));
    assert!(
        wait_until(Duration::from_secs(15), || Pair::snapshot(&pair.b)
            .contains("HAVOC-")
            && Pair::snapshot(&pair.a).contains("HAVOC-")),
        "delay rules installed on both sides"
    );
    assert_ne!(Pair::snapshot(&pair.b), before_b);
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reap");
    // The watchdog replays the journal: iptables chains, TBF and IFB go; the TCX links died with havoc.
    assert!(
        wait_until(Duration::from_secs(5), || Pair::snapshot(&pair.b)
            == before_b
            && Pair::snapshot(&pair.a) == before_a),
        "namespaces exactly as before after SIGKILL:\n--- before a\n{before_a}\n--- after a\n{}\n--- before b\n{before_b}\n--- after b\n{}",
        Pair::snapshot(&pair.a),
        Pair::snapshot(&pair.b)
    );
    let progs = String::from_utf8_lossy(
        &Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .to_string();
    assert!(
        !progs.contains("havoc_rules")
            || !progs
                .lines()
                .any(|l| l.contains("havoc_rules") && l.contains(&child.pid().to_string())),
        "no eBPF program of the killed run remains"
    );
    assert_eq!(udp_count(&pair, 7200, 500), 500, "traffic back to baseline");
    let out = run_havoc(&state, &["recover"]);
    assert!(out.status.success());
}

#[test]
fn a_missing_netns_exits_3() {
    if !root_or_skip("a_missing_netns_exits_3") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "x.yaml",
        &experiment(
            "hv-no-such-netns",
            "      action: loss\n      loss: { loss: \"10\" }\n",
            "1s",
        ),
    );
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", file.to_str().expect("utf8")],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn recover_without_a_journal_finds_leftovers_by_name() {
    if !root_or_skip("recover_without_a_journal_finds_leftovers_by_name") {
        return;
    }
    let _serial = serial();
    let pair = Pair::new("r");
    let before = Pair::snapshot(&pair.b);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let file = write(dir.path(), "d.yaml", &experiment(&pair.b, "      action: netem\n      direction: from\n      delay: { latency: 20ms }\n      bandwidth: { rate: 50mbit }\n", "60s"));
    let mut child = Reaped::spawn(&mut havoc_run(&state, &file, false));
    assert!(
        wait_until(Duration::from_secs(15), || Pair::snapshot(&pair.b)
            .contains("HAVOC-")
            && ingress_filter_of(&pair.b)),
        "delay and shaping installed"
    );
    // Kill the watchdog first, then havoc run, then lose the journal: only names are left to go by.
    let journal_dir = state.join("runs");
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("__watchdog") && cmd.contains(journal_dir.to_str().expect("utf8")) {
            Command::new("kill")
                .args(["-KILL", &e.file_name().to_string_lossy()])
                .status()
                .expect("kill watchdog");
        }
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reap");
    std::fs::remove_dir_all(&state).expect("lose the journal");
    assert_ne!(
        Pair::snapshot(&pair.b),
        before,
        "leftovers are there before recover"
    );
    let out = run_havoc(&state, &["recover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed delay chain"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Pair::snapshot(&pair.b),
        before,
        "namespace exactly as before"
    );
}

#[test]
fn sigkill_at_random_moments_of_twenty_network_experiments_leaves_nothing() {
    if !root_or_skip("sigkill_at_random_moments_of_twenty_network_experiments_leaves_nothing") {
        return;
    }
    let _serial = serial();
    let pair = Pair::new("z");
    let (before_a, before_b) = (Pair::snapshot(&pair.a), Pair::snapshot(&pair.b));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let bodies = [
        "      action: loss\n      direction: both\n      loss: { loss: \"50\" }\n",
        "      action: delay\n      direction: both\n      delay: { latency: 40ms, jitter: 10ms, reorder: { reorder: \"5\" } }\n",
        "      action: bandwidth\n      direction: both\n      bandwidth: { rate: 10mbit }\n",
        "      action: partition\n      direction: from\n      ports: [7300]\n",
        "      action: netem\n      direction: both\n      delay: { latency: 10ms }\n      duplicate: { duplicate: \"10\" }\n      corrupt: { corrupt: \"10\" }\n      bandwidth: { rate: 20mbit }\n",
    ];
    // A fixed pseudo-random sequence of kill moments between 0 and 1.2 s after start.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let wait = Duration::from_millis(x % 1200);
        let file = write(
            dir.path(),
            &format!("k{i}.yaml"),
            &experiment(&pair.b, bodies[i % bodies.len()], "30s"),
        );
        let mut child = Reaped::spawn(&mut havoc_run(&state, &file, false));
        std::thread::sleep(wait);
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap");
        // Within the rules' lease (5 s) everything is gone: the watchdog replays the journal, TCX
        // links die with their holder.
        assert!(
            wait_until(Duration::from_secs(5), || Pair::snapshot(&pair.b)
                == before_b
                && Pair::snapshot(&pair.a) == before_a),
            "experiment {i} killed after {wait:?}: namespaces as before"
        );
        assert!(
            wait_until(
                Duration::from_secs(5),
                || havoc_bpf_programs_of_dead_holders() == 0
            ),
            "experiment {i}: no eBPF program of Havoc left loaded"
        );
    }
    assert_eq!(udp_count(&pair, 7300, 500), 500, "traffic back to baseline");
    assert_eq!(udp_count(&pair, 7301, 500), 500, "traffic back to baseline");
}

/// Havoc eBPF programs loaded on the host (none may outlive the run that attached them).
fn havoc_bpf_programs_of_dead_holders() -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("havoc_")))
                .count()
        })
        .unwrap_or(0)
}

fn udp_csum_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (head, vals) = (udp.next().expect("header"), udp.next().expect("values"));
    let i = head
        .split_whitespace()
        .position(|h| h == "InCsumErrors")
        .expect("InCsumErrors");
    vals.split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("number")
}

fn features(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "for d in /sys/class/net/*; do ethtool -k $(basename $d); done",
        ])
        .output()
        .expect("ethtool");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn corrupt_keep_delivers_garbage_and_break_is_dropped_by_the_receiver() {
    if !root_or_skip("corrupt_keep_delivers_garbage_and_break_is_dropped_by_the_receiver") {
        return;
    }
    let _serial = serial();
    let pair = Pair::new("c");
    let (feat_a, feat_b) = (features(&pair.a), features(&pair.b));
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 6000u32;
    for mode in ["keep", "break"] {
        let file = write(dir.path(), &format!("{mode}.yaml"), &experiment(&pair.b, &format!("      action: corrupt\n      direction: from\n      corrupt: {{ corrupt: \"20\", checksum: {mode} }}\n      ports: [7400]\n      protocols: [udp]\n"), "30s"));
        let mut child = Reaped::spawn(&mut havoc_run(&dir.path().join("state"), &file, false));
        let t0 = Instant::now();
        while udp_stats(&pair, 7400, 200) == (200, 0) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let errors_before = udp_csum_errors(&pair.b);
        let (intact, altered) = udp_stats(&pair, 7400, n);
        let csum_errors = udp_csum_errors(&pair.b) - errors_before;
        Command::new("kill")
            .args(["-TERM", &child.pid().to_string()])
            .status()
            .expect("kill");
        let _ = child.0.wait();
        let hit = 100.0 * (n - intact) as f64 / n as f64;
        assert!(
            (18.5..=21.5).contains(&hit),
            "{mode}: 20 % ± 1.5 of datagrams corrupted, got {hit:.2} %"
        );
        match mode {
            "keep" => {
                assert!(
                    altered as f64 >= 0.95 * (n - intact) as f64,
                    "keep: the application receives the garbage ({altered} altered)"
                );
                assert_eq!(csum_errors, 0, "keep: checksums stay valid");
            }
            _ => {
                assert_eq!(
                    altered, 0,
                    "break: the application never sees a corrupted datagram"
                );
                assert!(
                    csum_errors as f64 >= 0.95 * (n - intact) as f64,
                    "break: the receiver's stack drops them as checksum errors ({csum_errors})"
                );
            }
        }
    }
    assert_eq!(
        (features(&pair.a), features(&pair.b)),
        (feat_a, feat_b),
        "offload settings restored"
    );
}

/// True once the ingress shaping filter (the last step of ingress bandwidth) is in place.
fn ingress_filter_of(ns: &str) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "for d in /sys/class/net/*; do tc filter show dev $(basename $d) ingress; done",
        ])
        .output()
        .expect("tc");
    String::from_utf8_lossy(&out.stdout).contains("64023")
}
