//! Benchmarks (ignored by default; they print numbers, they assert only that the work was done):
//!
//! ```text
//! cargo test -p havoc-agent --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//! - idle RSS and CPU of the agent process (`havoc-agent-testd`, mutual TLS) over 30 s;
//! - Inject-to-active latency over mTLS on loopback for an eBPF loss rule: the time until the
//!   Inject call returns, each one then checked to be in effect (100% UDP loss from outside).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use havoc_api::v1::RecoverRequest;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_idle_cost_and_inject_latency() {
    if !root_or_skip("bench_idle_cost_and_inject_latency") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let s = &pki.server;
    let mut child = Command::new(testd())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--tls")
        .args([&s.ca, &s.cert, &s.key])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn testd");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening")
        .parse()
        .expect("addr");
    let mut c = client(addr, &pki.client).await;
    c.health(havoc_api::v1::HealthRequest {})
        .await
        .expect("health");

    let secs = std::env::var("HAVOC_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let hz = havoc_sys::process::clock_ticks_per_second() as f64;
    let t0 = cpu_ticks(pid);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (cpu_ticks(pid) - t0) as f64 / hz;
    let wall = w0.elapsed().as_secs_f64();
    println!(
        "idle over {wall:.1} s: RSS {:.1} MiB, CPU {:.3} s = {:.3} % of a core",
        rss_kib(pid) as f64 / 1024.0,
        cpu,
        100.0 * cpu / wall
    );

    let ns = NetnsSleeper::new();
    let rx = ns.bind_inside(7501);
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let tx = std::net::UdpSocket::bind((ns.host_ip, 0)).expect("bind");
    let dst = std::net::SocketAddr::from((ns.inner_ip, 7501));
    let mut inject_ms = Vec::new();
    let mut recover_ms = Vec::new();
    let mut buf = [0u8; 16];
    for i in 0..50 {
        let t = Instant::now();
        let r = c
            .inject(inject_pid(
                &format!("bench-{i}"),
                ns.pid(),
                r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "direction": "from", "loss": {"loss": "100"}, "protocols": ["udp"]}}"#,
                30_000,
            ))
            .await
            .expect("inject")
            .into_inner();
        inject_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // In effect: nothing gets through.
        for _ in 0..5 {
            tx.send_to(b"x", dst).expect("send");
        }
        assert!(
            rx.recv(&mut buf).is_err(),
            "loss in effect after inject {i}"
        );
        let t = Instant::now();
        c.recover(RecoverRequest {
            injection_id: r.injection_id,
        })
        .await
        .expect("recover");
        recover_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        tx.send_to(b"y", dst).expect("send");
        assert!(rx.recv(&mut buf).is_ok(), "gone after recover {i}");
    }
    let max = inject_ms.iter().cloned().fold(0.0, f64::max);
    println!(
        "Inject-to-active over mTLS (eBPF loss rule, n=50): median {:.2} ms, max {max:.2} ms; Recover median {:.2} ms",
        median(&mut inject_ms),
        median(&mut recover_ms)
    );
    println!(
        "RSS after 50 inject/recover cycles: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
    havoc_sys::process::send_signal(pid as i32, 15).expect("sigterm");
    assert!(child.wait().expect("wait").success());
}
