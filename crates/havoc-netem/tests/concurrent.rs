//! Many delay engines on one namespace, bypass accounting and TBF counters: real namespaces,
//! iptables, NFQUEUE and tc, with traffic measured at the receiver. Skipped (with a printed
//! reason) when not root; tests of this binary run one at a time (`common::serial`).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{mean_ms, output_in, root_or_skip, rtts, serial, sh, Echo, Sandbox};
use havoc_netem::{
    iptables, Bandwidth, BandwidthConfig, DelayConfig, DelayEngine, PacketFilter, PortMatch,
    Protocol, ShapeDirection,
};
use havoc_sys::netns::NetNs;

const RUNS: usize = 10;
const BASE_PORT: u16 = 7300;

fn udp_port(port: u16) -> PacketFilter {
    PacketFilter {
        protocol: Some(Protocol::Udp),
        ports: PortMatch::Local(vec![port]),
        ..PacketFilter::default()
    }
}

fn delay_of(i: usize) -> f64 {
    20.0 + 5.0 * i as f64
}

/// A small deterministic shuffle (xorshift), seeded and printed so a failure can be replayed.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn seed() -> u64 {
    std::env::var("HVNM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        })
}

/// Starts `RUNS` engines at once (one thread each, released by a barrier) on `ns`; engine `i`
/// delays UDP to port `BASE_PORT + i` by `delay_of(i)` ms.
fn start_concurrently(ns: &NetNs) -> Vec<DelayEngine> {
    let barrier = Arc::new(Barrier::new(RUNS));
    let handles: Vec<_> = (0..RUNS)
        .map(|i| {
            let ns = ns.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                DelayEngine::start(
                    &ns,
                    DelayConfig {
                        delay: Duration::from_secs_f64(delay_of(i) / 1e3),
                        filter: udp_port(BASE_PORT + i as u16),
                        seed: i as u64,
                        ..DelayConfig::default()
                    },
                )
                .unwrap_or_else(|e| panic!("start engine {i}: {e:?}"))
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("starter thread"))
        .collect()
}

fn median_ms(v: &[Duration]) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median RTT (ms) from `a` to the echo on each port in `ports`, measured concurrently, and the
/// number of answers. The median, because 30 threads share 2 vCPUs with other work here and one
/// descheduled probe would move a mean by more than the tolerance.
fn probe(sb: &Sandbox, ports: &[u16], count: u32) -> HashMap<u16, (f64, usize)> {
    let handles: Vec<_> = ports
        .iter()
        .map(|&p| {
            let a = sb.a.clone();
            let server = SocketAddr::V4(SocketAddrV4::new(sb.addr_b, p));
            std::thread::spawn(move || {
                let r = rtts(&a, server, count, Duration::from_millis(5));
                println!("port {p}: mean {:.2} ms", mean_ms(&r));
                (p, (median_ms(&r), r.len()))
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("probe thread"))
        .collect()
}

/// Jump rules to `HAVOC-<tag>` in an iptables-save dump.
fn jumps_to(saved: &str, tag: &str) -> usize {
    let target = format!("-j HAVOC-{tag}");
    saved
        .lines()
        .filter(|l| l.starts_with("-A PREROUTING") && l.ends_with(&target))
        .count()
}

const TOLERANCE_MS: f64 = 3.0;

#[test]
fn ten_concurrent_delays_hold_and_each_removal_takes_only_its_own_rules() {
    if !root_or_skip("ten_concurrent_delays_hold_and_each_removal_takes_only_its_own_rules") {
        return;
    }
    let _serial = serial();
    let sb = Sandbox::new();
    let before = sb.snapshot(&sb.b);
    let ports: Vec<u16> = (0..RUNS as u16).map(|i| BASE_PORT + i).collect();
    let _echos: Vec<Echo> = ports
        .iter()
        .map(|&p| Echo::start(&sb.b, SocketAddr::V4(SocketAddrV4::new(sb.addr_b, p))))
        .collect();

    let mut engines: Vec<Option<DelayEngine>> =
        start_concurrently(&sb.b).into_iter().map(Some).collect();
    let tags: Vec<String> = engines
        .iter()
        .map(|e| e.as_ref().expect("engine").tag().to_string())
        .collect();
    let got = probe(&sb, &ports, 40);
    for (i, p) in ports.iter().enumerate() {
        let (mean, n) = got[p];
        println!(
            "run {i}: port {p} median RTT {mean:.2} ms over {n} probes, requested {:.0} ms",
            delay_of(i)
        );
        assert!(n >= 38, "run {i}: probes lost ({n}/40)");
        assert!(
            (mean - delay_of(i)).abs() <= TOLERANCE_MS,
            "run {i}: RTT {mean:.2} ms is not {} ms ± {TOLERANCE_MS}",
            delay_of(i)
        );
    }

    let seed = seed();
    let order = shuffled(RUNS, seed);
    println!("removal order {order:?} (HVNM_SEED={seed})");
    for (step, &k) in order.iter().enumerate() {
        let mut engine = engines[k].take().expect("not removed yet");
        engine.stop().expect("stop engine");
        let stats = engine.stats();
        assert_eq!(stats.bypassed, 0, "run {k}: packets bypassed: {stats:?}");
        let v4 = output_in(&sb.b, &["iptables-save", "-t", "mangle"]);
        let v6 = output_in(&sb.b, &["ip6tables-save", "-t", "mangle"]);
        for (i, tag) in tags.iter().enumerate() {
            let alive = engines[i].is_some();
            let want = usize::from(alive);
            for (fam, saved) in [("v4", &v4), ("v6", &v6)] {
                assert_eq!(
                    jumps_to(saved, tag),
                    want,
                    "step {step} (removed run {k}): run {i} {fam} jumps\n{saved}"
                );
                assert_eq!(
                    saved.contains(&format!(":HAVOC-{tag} ")),
                    alive,
                    "step {step} (removed run {k}): run {i} {fam} chain\n{saved}"
                );
            }
        }
        // The removed run's port is undelayed, every other run still holds its delay.
        let got = probe(&sb, &ports, 10);
        for (i, p) in ports.iter().enumerate() {
            let (mean, n) = got[p];
            assert!(n >= 9, "step {step}: run {i} lost probes ({n}/10)");
            let want = if engines[i].is_some() {
                delay_of(i)
            } else {
                0.0
            };
            assert!(
                (mean - want).abs() <= TOLERANCE_MS,
                "step {step} (removed run {k}): port {p} RTT {mean:.2} ms, expected {want} ms"
            );
        }
    }
    assert_eq!(
        sb.snapshot(&sb.b),
        before,
        "namespace not byte-identical after all ten runs were removed"
    );
}

/// Ten runs started together and stopped from their own threads in a random order, with and
/// without tables that existed before Havoc.
#[test]
fn ten_concurrent_runs_finishing_in_any_order_leave_exactly_what_was_there() {
    if !root_or_skip("ten_concurrent_runs_finishing_in_any_order_leave_exactly_what_was_there") {
        return;
    }
    let _serial = serial();
    let sb = Sandbox::new();
    let ns_b = &sb.name_b;
    for (round, setup) in ["none", "user-tables"].iter().enumerate() {
        if *setup == "user-tables" {
            // A user's v4 mangle table with a rule, and an empty v6 mangle table without chains:
            // both must stay exactly as they are.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns_b,
                "iptables",
                "-w",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                "udp",
                "--dport",
                "9",
                "-j",
                "ACCEPT",
            ]);
            sh(&[
                "ip", "netns", "exec", ns_b, "nft", "add", "table", "ip6", "mangle",
            ]);
        }
        let before = sb.snapshot(&sb.b);
        let engines = start_concurrently(&sb.b);
        assert_eq!(
            iptables::leftovers(&sb.b).expect("list").len(),
            2 * RUNS,
            "round {round}: every run has a v4 and a v6 chain"
        );
        let seed = seed().wrapping_add(round as u64);
        let mut rng = seed | 1;
        let handles: Vec<_> = engines
            .into_iter()
            .map(|mut e| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let wait = Duration::from_millis(rng % 200);
                std::thread::spawn(move || {
                    std::thread::sleep(wait);
                    e.stop().expect("stop engine");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("stopper thread");
        }
        let after = sb.snapshot(&sb.b);
        assert_eq!(
            after, before,
            "round {round} ({setup}, HVNM_SEED={seed}): namespace differs after the runs"
        );
        println!("round {round} ({setup}): restored byte-identically");
    }
    // Havoc never deletes a table it did not create, even through the leftover sweep.
    let removed = iptables::remove_leftovers(&sb.b, "").expect("sweep");
    assert!(
        removed.leftovers.is_empty() && removed.tables.is_empty(),
        "{removed:?}"
    );
    let nft = output_in(&sb.b, &["nft", "list", "ruleset"]);
    assert!(
        nft.contains("table ip mangle") && nft.contains("table ip6 mangle"),
        "{nft}"
    );
}

#[test]
fn empty_table_left_by_a_crash_is_removed_by_the_sweep() {
    if !root_or_skip("empty_table_left_by_a_crash_is_removed_by_the_sweep") {
        return;
    }
    let _serial = serial();
    let sb = Sandbox::new();
    let before = sb.snapshot(&sb.b);
    let engine = DelayEngine::start(
        &sb.b,
        DelayConfig {
            tag: Some("crash-tbl".into()),
            delay: Duration::from_millis(5),
            ..DelayConfig::default()
        },
    )
    .expect("start");
    // While its holder lives, a sweep leaves the rules alone.
    let kept = iptables::remove_leftovers(&sb.b, "").expect("sweep");
    assert!(
        kept.leftovers.is_empty(),
        "a live engine's rules are no leftovers: {kept:?}"
    );
    assert_ne!(sb.snapshot(&sb.b), before);
    engine.abandon(); // a crash: rules, chains and the marked tables stay, the owner lock goes
    let removed = iptables::remove_leftovers(&sb.b, "").expect("sweep");
    assert_eq!(removed.leftovers.len(), 2, "{removed:?}");
    assert_eq!(removed.tables.len(), 2, "{removed:?}");
    assert_eq!(sb.snapshot(&sb.b), before);
}

/// A queue of 8 packets with a 40 ms hold overflows at 4,000 packets/s: the kernel then accepts
/// packets without queueing them (fail-open). The engine must count them.
#[test]
fn packets_that_bypass_a_full_queue_are_counted() {
    if !root_or_skip("packets_that_bypass_a_full_queue_are_counted") {
        return;
    }
    let _serial = serial();
    let sb = Sandbox::new();
    let port = 7400;
    let mut engine = DelayEngine::start(
        &sb.b,
        DelayConfig {
            delay: Duration::from_millis(40),
            filter: udp_port(port),
            queue_maxlen: 8,
            ..DelayConfig::default()
        },
    )
    .expect("start delay engine");
    let addr = SocketAddr::V4(SocketAddrV4::new(sb.addr_b, port));
    let rx =
        sb.b.run(move || UdpSocket::bind(addr))
            .expect("enter netns")
            .expect("bind rx");
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("rx timeout");
    let tx =
        sb.a.run(|| UdpSocket::bind("0.0.0.0:0"))
            .expect("enter netns")
            .expect("bind tx");
    let n: u32 = 4000;
    let base = Instant::now();
    let receiver = std::thread::spawn(move || {
        // One-way delay of each datagram: both ends share this process's monotonic clock.
        let mut delays = Vec::with_capacity(n as usize);
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(20);
        while delays.len() < n as usize && Instant::now() < deadline {
            match rx.recv(&mut buf) {
                Ok(8) => {
                    let sent = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                    let now = base.elapsed().as_nanos() as u64;
                    delays.push(Duration::from_nanos(now.saturating_sub(sent)));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        delays
    });
    let start = Instant::now();
    for i in 0..n {
        let stamp = base.elapsed().as_nanos() as u64;
        tx.send_to(&stamp.to_le_bytes(), addr).expect("send");
        let next = start + Duration::from_micros(250) * (i + 1);
        if let Some(w) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
    let delays = receiver.join().expect("receiver thread");
    engine.refresh_counters();
    let running = engine.stats();
    engine.stop().expect("stop");
    let s = engine.stats();
    let late = delays
        .iter()
        .filter(|d| **d >= Duration::from_millis(30))
        .count() as u64;
    let early = delays
        .iter()
        .filter(|d| **d < Duration::from_millis(10))
        .count() as u64;
    println!(
        "sent {n}, received {} ({late} held >= 30 ms, {early} < 10 ms); engine: rule packets \
         {:?}, seen {}, delayed {}, bypassed {} (estimate while running {}), kernel dropped {}",
        delays.len(),
        s.rule_packets,
        s.seen,
        s.delayed,
        s.bypassed,
        running.bypassed,
        s.kernel_dropped
    );
    assert_eq!(
        delays.len() as u64,
        n as u64,
        "fail-open must not lose packets"
    );
    assert_eq!(
        s.rule_packets,
        Some(n as u64),
        "the rules count every packet"
    );
    assert!(s.bypassed > n as u64 / 10, "bypass not counted: {s:?}");
    assert!(s.delayed > 0, "nothing delayed: {s:?}");
    assert_eq!(
        s.delayed + s.bypassed,
        n as u64,
        "delayed + bypassed = sent"
    );
    assert!(
        running.bypassed <= s.bypassed,
        "the running estimate overshoots"
    );
    // At the receiver: the held ones arrive >= 30 ms late, the bypassed ones at once (±1 %).
    let tol = n as u64 / 100;
    assert!(
        late.abs_diff(s.delayed) <= tol,
        "late {late} vs delayed {}",
        s.delayed
    );
    assert!(
        early.abs_diff(s.bypassed) <= tol,
        "early {early} vs bypassed {}",
        s.bypassed
    );
}

/// Streams TCP from `from` to `to` for `secs` and returns the payload bytes the receiver got.
fn tcp_bytes(from: &NetNs, to_ns: &NetNs, to: SocketAddr, secs: f64) -> u64 {
    let listener = to_ns
        .run(move || TcpListener::bind(to))
        .expect("enter netns")
        .expect("bind listener");
    let stream = from
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .expect("enter netns")
        .expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let writer = std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .expect("write timeout");
        let buf = vec![0x5au8; 64 * 1024];
        while Instant::now() < end {
            let _ = stream.write(&buf);
        }
        // Closing lets the reader see EOF after the queued data drained.
    });
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let hard_end = end + Duration::from_secs(5);
    while Instant::now() < hard_end {
        match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => total += k as u64,
        }
    }
    writer.join().expect("writer thread");
    total
}

#[test]
fn tbf_counters_match_what_the_receiver_got() {
    if !root_or_skip("tbf_counters_match_what_the_receiver_got") {
        return;
    }
    let _serial = serial();
    let rate = 10_000_000u64;
    for dir in [ShapeDirection::Egress, ShapeDirection::Ingress] {
        let sb = Sandbox::new();
        let before_a = sb.snapshot(&sb.a);
        // Egress limits a's sending device; ingress limits what b's device receives.
        let (ns, dev) = match dir {
            ShapeDirection::Egress => (&sb.a, sb.dev_a),
            ShapeDirection::Ingress => (&sb.b, sb.dev_b),
        };
        let before = sb.snapshot(ns);
        let mut guard =
            Bandwidth::apply(ns, dev, BandwidthConfig::new(rate, dir)).expect("apply TBF");
        let to = SocketAddr::V4(SocketAddrV4::new(sb.addr_b, 7500));
        let got = tcp_bytes(&sb.a, &sb.b, to, 3.0);
        guard.refresh_stats().expect("read TBF stats");
        guard.recover().expect("recover");
        let s = guard.stats().expect("final stats");
        // Frames carry 1448 payload bytes in 1514 (and GSO super-packets are counted whole): the
        // TBF's byte count is the payload plus 2..6 % of headers and handshake/ack frames.
        let ratio = s.bytes_sent as f64 / got as f64;
        println!(
            "{dir:?}: receiver got {got} payload bytes; TBF sent {} bytes / {} packets (ratio \
             {ratio:.4}), dropped {}, overlimits {}, {:.3} Mbit/s over {:.2} s",
            s.bytes_sent,
            s.packets_sent,
            s.packets_dropped,
            s.overlimits,
            s.rate_bps() / 1e6,
            s.elapsed.as_secs_f64()
        );
        assert!(got > 0, "no traffic");
        assert!(
            (1.0..=1.08).contains(&ratio),
            "{dir:?}: TBF bytes {} inconsistent with {got} received",
            s.bytes_sent
        );
        assert!(s.overlimits > 0, "{dir:?}: the limit never bound: {s:?}");
        assert!(
            s.rate_bps() <= rate as f64 * 1.05 && s.rate_bps() >= rate as f64 * 0.5,
            "{dir:?}: achieved {} bit/s",
            s.rate_bps()
        );
        assert_eq!(sb.snapshot(ns), before, "{dir:?}: not restored");
        if dir == ShapeDirection::Ingress {
            assert_eq!(sb.snapshot(&sb.a), before_a);
        }
    }
}
