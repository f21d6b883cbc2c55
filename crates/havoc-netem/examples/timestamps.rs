//! Which tools see a delay that the engine adds on a *receive* path (run as root):
//! `cargo run -p havoc-netem --example timestamps`
//!
//! Namespace `b` holds the packets arriving at it for 50 ms (the engine's ingress hook, which is
//! also where a `to` delay of a target in `a` holds that target's packets, in the peer). From `b`
//! it then measures the RTT to `a` with `ping` (kernel receive timestamp, `SO_TIMESTAMP`),
//! `ping -U` (user-space time after `recvmsg`) and a UDP echo timed by the application. The
//! result is written up in README.md (network faults) and in `havoc_netem::delay`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use common::{mean_ms, rtts, Echo, Sandbox};
use havoc_netem::{DelayConfig, DelayEngine};

fn ping(sb: &Sandbox, extra: &[&str]) -> String {
    let mut argv = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        sb.name_b.clone(),
        "ping".into(),
        "-c".into(),
        "20".into(),
        "-i".into(),
        "0.05".into(),
        "-q".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.push(sb.addr_a.to_string());
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("run ping");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("rtt"))
        .collect()
}

/// Mean gap (ms) between each ICMP echo request and its reply as `tcpdump` in `ns` on `dev`
/// stamps them, for 5 pings from `b` to `a`.
fn tcpdump_rtt(sb: &Sandbox, ns: &str, dev: &str) -> String {
    let dump = Command::new("ip")
        .args([
            "netns", "exec", ns, "tcpdump", "-n", "-l", "-tt", "-c", "10", "-i", dev,
        ])
        .args(["icmp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    let _ = ping(sb, &["-c", "5"]);
    let out = dump.wait_with_output().expect("tcpdump output");
    let mut request = None;
    let mut gaps = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let t: f64 = match l.split_whitespace().next().and_then(|t| t.parse().ok()) {
            Some(t) => t,
            None => continue,
        };
        if l.contains("echo request") {
            request = Some(t);
        } else if let (true, Some(r)) = (l.contains("echo reply"), request.take()) {
            gaps.push((t - r) * 1e3);
        }
    }
    format!(
        "{:.3} ms (mean of {})",
        gaps.iter().sum::<f64>() / gaps.len().max(1) as f64,
        gaps.len()
    )
}

fn main() {
    if !common::root_or_skip("timestamps") {
        return;
    }
    let sb = Sandbox::new();
    let server = SocketAddr::V4(SocketAddrV4::new(sb.addr_a, 7009));
    let _echo = Echo::start(&sb.a, server);
    println!("without delay: ping    {}", ping(&sb, &[]));
    let engine = DelayEngine::start(
        &sb.b,
        DelayConfig {
            delay: Duration::from_millis(50),
            ..DelayConfig::default()
        },
    )
    .expect("start delay engine");
    println!("50 ms at b's receive path:");
    println!("  ping (SO_TIMESTAMP)  {}", ping(&sb, &[]));
    println!("  ping -U (user time)  {}", ping(&sb, &["-U"]));
    let udp = rtts(&sb.b, server, 20, Duration::from_millis(20));
    println!(
        "  UDP echo, app clock  mean {:.3} ms over {} samples",
        mean_ms(&udp),
        udp.len()
    );
    for (ns, dev) in [(&sb.name_b, sb.dev_b), (&sb.name_a, sb.dev_a)] {
        println!(
            "  tcpdump in {ns} on {dev}: echo request -> reply {}",
            tcpdump_rtt(&sb, ns, dev)
        );
    }
    let s = engine.stats();
    println!("  engine: seen {} delayed {}", s.seen, s.delayed);
}
