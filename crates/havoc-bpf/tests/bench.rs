//! Measurements, not assertions: TCP throughput across the veth with and without 16
//! non-matching rules, `add_rule` latency, attach (load + verify + TCX attach) latency, and the
//! classifier's own cost per packet (BPF_PROG_TEST_RUN). Run with
//! `cargo test -p havoc-bpf --release --test bench -- --ignored --nocapture`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{privileged, run, Sandbox, IF_A, IF_B, IP_B};
use havoc_bpf::{Action, Datapath, Direction, Filter, PortFilter, Protocols, Rule};

/// Streams TCP from a to b for `secs` and returns the receiver's Gbit/s.
fn tcp_gbps(sb: &Sandbox, secs: u64) -> f64 {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            sb.b.run(move || {
                let l = TcpListener::bind(("0.0.0.0", 5201)).expect("bind tcp");
                tx.send(()).expect("signal ready");
                let (mut c, _) = l.accept().expect("accept");
                let mut buf = vec![0u8; 256 << 10];
                let start = Instant::now();
                let mut total = 0u64;
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                total as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
            })
            .expect("server in netns b")
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        sb.a.run(move || {
            let mut c = TcpStream::connect((IP_B, 5201)).expect("connect");
            let buf = vec![0x5au8; 256 << 10];
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                c.write_all(&buf).expect("write");
            }
        })
        .expect("client in netns a");
        server.join().expect("server thread")
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn bench_throughput_and_rule_latency() {
    let Some(_serial) = privileged() else { return };
    let sb = Sandbox::new();
    let non_matching = |i: u16| {
        Rule::new(Action::Loss {
            percent: 50.0,
            correlation: 0.0,
        })
        .with_filter(Filter {
            ports: PortFilter::List(vec![40_000 + i]),
            protocols: Protocols::UDP,
            ..Filter::default()
        })
    };
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base.push(tcp_gbps(&sb, 5));
        let mut ingress =
            Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach ingress");
        let mut egress = Datapath::attach(&sb.a, IF_A, Direction::Egress).expect("attach egress");
        for i in 0..16 {
            ingress
                .add_rule(&non_matching(i))
                .expect("add ingress rule");
            egress.add_rule(&non_matching(i)).expect("add egress rule");
        }
        with.push(tcp_gbps(&sb, 5));
    }
    let (b, w) = (median(base.clone()), median(with.clone()));
    eprintln!("TCP baseline Gbit/s {base:.2?} median {b:.2}");
    eprintln!(
        "TCP with 16 non-matching rules on b ingress + a egress {with:.2?} median {w:.2} ({:.1}%)",
        100.0 * w / b
    );

    let mut dp = Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach");
    let mut lat = Vec::new();
    for i in 0..100u16 {
        let rule = non_matching(i % 16);
        let t = Instant::now();
        let id = dp.add_rule(&rule).expect("add rule");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if dp.rule_count() == 16 {
            for id in dp.rules() {
                dp.remove_rule(id).expect("remove rule");
            }
        }
        let _ = id;
    }
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "add_rule latency ms: median {:.4} p99 {:.4} max {:.4}",
        sorted[50], sorted[98], sorted[99]
    );
    let t = Instant::now();
    let load = Datapath::attach(&sb.b, IF_B, Direction::Egress).expect("attach");
    eprintln!("load + attach: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(load);
}

/// Attach latency: load + verify + TCX attach of the classifier, first in the process and then
/// repeated (the figure behind a network fault's start lag and the agent's Inject-to-active).
#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn bench_attach_latency() {
    let Some(_serial) = privileged() else { return };
    let sb = Sandbox::new();
    // Part of the first attach in a process: aya's EbpfLoader::new() parses the kernel's BTF.
    let t = Instant::now();
    drop(aya::EbpfLoader::new());
    println!(
        "EbpfLoader::new() (parses /sys/kernel/btf/vmlinux): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let dp = Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(dp);
    }
    let first = times.remove(0);
    let dp = Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach");
    println!(
        "verifier: {} instructions processed",
        common::verified_insns(dp.program_id())
    );
    drop(dp);
    println!(
        "attach: first {first:.1} ms, then median {:.1} ms (min {:.1}, max {:.1}) over {}",
        median(times.clone()),
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
        times.len()
    );
    // With a spare kept warm (as the node agent does), an attach only attaches.
    havoc_bpf::prewarm(true);
    let mut warm = Vec::new();
    for _ in 0..10 {
        // Give the background load time to finish, as the gap between two Injects would.
        std::thread::sleep(Duration::from_millis(1500));
        let t = Instant::now();
        let dp = Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach");
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        drop(dp);
    }
    println!(
        "attach with a prewarmed classifier: median {:.1} ms (min {:.1}, max {:.1}) over {}",
        median(warm.clone()),
        warm.iter().cloned().fold(f64::MAX, f64::min),
        warm.iter().cloned().fold(0.0, f64::max),
        warm.len()
    );
}

/// A file holding one Ethernet + IPv4 + UDP datagram (to port 9999, which no rule matches),
/// removed on drop.
struct PacketFile(std::path::PathBuf);

impl PacketFile {
    fn new() -> Self {
        let payload = [0x5au8; 64];
        let udp_len = (8 + payload.len()) as u16;
        let mut pkt = Vec::new();
        pkt.extend_from_slice(&[2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 0x08, 0x00]);
        pkt.extend_from_slice(&[0x45, 0]);
        pkt.extend_from_slice(&(20 + udp_len).to_be_bytes());
        pkt.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 199, 0, 1, 10, 199, 0, 2]);
        pkt.extend_from_slice(&1234u16.to_be_bytes());
        pkt.extend_from_slice(&9999u16.to_be_bytes());
        pkt.extend_from_slice(&udp_len.to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&payload);
        let path = std::env::temp_dir().join(format!("havoc-bpf-bench-{}.pkt", std::process::id()));
        std::fs::write(&path, pkt).expect("write packet file");
        Self(path)
    }
}

impl Drop for PacketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// ns per packet of the classifier as `bpftool prog run ... repeat N` reports it (median of 5).
fn ns_per_packet(program_id: u32, pkt: &PacketFile) -> f64 {
    let runs = (0..5)
        .map(|_| {
            let out = run(
                "bpftool",
                &[
                    "prog",
                    "run",
                    "id",
                    &program_id.to_string(),
                    "data_in",
                    pkt.0.to_str().expect("utf-8 temp path"),
                    "repeat",
                    "1000000",
                ],
            );
            // "Return value: 4294967295, duration (average): 61ns"
            out.split("duration (average):")
                .nth(1)
                .and_then(|d| d.trim().trim_end_matches("ns").parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unexpected bpftool prog run output: {out}"))
        })
        .collect();
    median(runs)
}

/// The classifier's cost per packet (BPF_PROG_TEST_RUN, no network) for a UDP packet that no
/// rule matches, as the number of installed rules grows.
#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn bench_classifier_ns_per_packet() {
    let Some(_serial) = privileged() else { return };
    let sb = Sandbox::new();
    let pkt = PacketFile::new();
    let mut dp = Datapath::attach(&sb.b, IF_B, Direction::Ingress).expect("attach");
    let mut installed = 0u16;
    for n in [0u16, 1, 4, 16, 32] {
        while installed < n {
            let rule = Rule::new(Action::Loss {
                percent: 50.0,
                correlation: 0.0,
            })
            .with_filter(Filter {
                ports: PortFilter::List(vec![40_000 + installed]),
                protocols: Protocols::UDP,
                ..Filter::default()
            });
            dp.add_rule(&rule).expect("add rule");
            installed += 1;
        }
        println!(
            "classifier with {n:2} non-matching rules: {:.0} ns/packet",
            ns_per_packet(dp.program_id(), &pkt)
        );
    }
}
