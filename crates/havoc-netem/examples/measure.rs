//! Measurements of the delay engine (run as root, in release mode):
//! `cargo run --release -p havoc-netem --example measure`
//!
//! Prints TCP throughput across a veth without the engine, with the engine at 0 ms hold and at
//! 100 ms, and the RTT accuracy of 100 ms ± 10 ms. Everything runs inside two throw-away network
//! namespaces that are deleted at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use common::{mean_ms, rtts, tcp_goodput, Echo, Sandbox};
use havoc_netem::{DelayConfig, DelayEngine, PacketFilter, PortMatch, Protocol};

fn main() {
    if !common::root_or_skip("measure") {
        return;
    }
    let secs = std::env::var("HVNM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    let sb = Sandbox::new();
    let mut port = 7300;
    let mut tcp = |label: &str, cfg: Option<DelayConfig>| {
        port += 1;
        let engine = cfg.map(|c| DelayEngine::start(&sb.b, c).expect("start delay engine"));
        let to = SocketAddr::V4(SocketAddrV4::new(sb.addr_b, port));
        let bps = tcp_goodput(
            &sb.a,
            &sb.b,
            to,
            Duration::from_secs(1),
            Duration::from_secs(secs),
        );
        let stats = engine.as_ref().map(|e| e.stats());
        println!("{label:<32} {:>9.3} Gbit/s", bps / 1e9);
        if let Some(s) = stats {
            println!(
                "{:<32} seen {} verdict msgs {} in {} sends, overruns {}, kernel {:?}",
                "", s.seen, s.verdict_messages, s.verdict_sends, s.socket_overruns, s.queue
            );
        }
    };
    tcp("TCP baseline (no engine)", None);
    tcp("TCP engine, 0 ms hold", Some(DelayConfig::default()));
    tcp(
        "TCP engine, 100 ms hold",
        Some(DelayConfig {
            delay: Duration::from_millis(100),
            ..DelayConfig::default()
        }),
    );

    let server = SocketAddr::V4(SocketAddrV4::new(sb.addr_b, 7007));
    let _echo = Echo::start(&sb.b, server);
    let base = rtts(&sb.a, server, 500, Duration::from_millis(2));
    for (delay, jitter) in [(100, 10), (100, 0), (10, 0), (1, 0)] {
        let engine = DelayEngine::start(
            &sb.b,
            DelayConfig {
                delay: Duration::from_millis(delay),
                jitter: Duration::from_millis(jitter),
                filter: PacketFilter {
                    protocol: Some(Protocol::Udp),
                    ports: PortMatch::Local(vec![7007]),
                    ..PacketFilter::default()
                },
                ..DelayConfig::default()
            },
        )
        .expect("start delay engine");
        let s = rtts(&sb.a, server, 1000, Duration::from_millis(3));
        let hold = engine.stats().mean_added_delay;
        drop(engine);
        let added = mean_ms(&s) - mean_ms(&base);
        println!(
            "RTT {delay} ms ± {jitter}: baseline {:.3} ms, added {added:.3} ms ({:+.2} %), n={}, engine hold {hold:?}",
            mean_ms(&base),
            (added / delay as f64 - 1.0) * 100.0,
            s.len()
        );
    }
}
