//! HTTPChaos interceptor cost, side by side in one run: latency added with a rule that matches
//! nothing (p50, p99 of keep-alive HTTP/1.1 round trips, direct vs through the interceptor) and
//! throughput with `wrk` (direct vs through). Goal (issue 14): p50 added <= 100 µs (Toxiproxy's
//! figure for its proxy without toxics), >= 80 % of direct throughput.
//!
//! `cargo bench -p havoc-faults --bench http_proxy` as root. Prints numbers; asserts nothing.

#[path = "../tests/http_common/mod.rs"]
mod http_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use http_common::{inject, spec, Sandbox, PORT, SERVER_IP};

const ROUND_TRIPS: usize = 5_000;

/// Keep-alive round trips from a thread in the client namespace; sorted latencies in µs.
fn round_trips(sb: &Sandbox, n: usize) -> Vec<f64> {
    let ns = std::fs::File::open(format!("/run/netns/{}", sb.client)).expect("client netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter client netns");
            let stream = std::net::TcpStream::connect((SERVER_IP, PORT)).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut w = stream.try_clone().expect("clone");
            let mut r = BufReader::new(stream);
            let req = format!("GET /bench HTTP/1.1\r\nHost: {SERVER_IP}\r\n\r\n");
            let mut out = Vec::with_capacity(n);
            let mut body = Vec::new();
            for i in 0..n + 200 {
                let t = Instant::now();
                w.write_all(req.as_bytes()).expect("send");
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).expect("read head");
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                }
                body.resize(len, 0);
                r.read_exact(&mut body).expect("read body");
                if i >= 200 {
                    // the first 200 warm up
                    out.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            out.sort_by(f64::total_cmp);
            out
        })
        .join()
        .expect("client thread")
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// `wrk` from the client namespace: requests per second.
fn wrk(sb: &Sandbox) -> f64 {
    let url = format!("http://{SERVER_IP}:{PORT}/bench");
    let out = sb.in_client(&["wrk", "-t2", "-c32", "-d4s", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"))
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("http_proxy bench skipped: needs root (netns, nftables)");
        return;
    }
    let sb = Sandbox::new("bn");
    let rule = || {
        spec(
            serde_json::json!({"target": "Request", "port": PORT, "path": "/never/*",
            "abort": true, "selector": {"netns": ["bench"]}}),
        )
    };
    let mut direct = Vec::new();
    let mut through = Vec::new();
    let (mut rps_direct, mut rps_through) = (Vec::new(), Vec::new());
    // Alternate, so a busy moment of the shared machine hits both sides.
    for _ in 0..2 {
        direct.extend(round_trips(&sb, ROUND_TRIPS));
        rps_direct.push(wrk(&sb));
        let mut inj = inject(&sb, rule());
        through.extend(round_trips(&sb, ROUND_TRIPS));
        rps_through.push(wrk(&sb));
        let e = inj.effect();
        println!(
            "  interceptor's own view: p50 {:.0} µs, mean {:.0} µs over unfaulted exchanges",
            e.metrics["http_proxy_overhead_p50_us"], e.metrics["http_proxy_overhead_mean_us"]
        );
        inj.recover().expect("recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    let (d50, d99) = (pct(&direct, 50.0), pct(&direct, 99.0));
    let (t50, t99) = (pct(&through, 50.0), pct(&through, 99.0));
    println!(
        "latency, keep-alive HTTP/1.1, {} round trips each, rule matching nothing:",
        direct.len()
    );
    println!("  direct:  p50 {d50:.0} µs  p99 {d99:.0} µs");
    println!("  through: p50 {t50:.0} µs  p99 {t99:.0} µs");
    println!(
        "  added:   p50 {:.0} µs  p99 {:.0} µs   (goal p50 <= 100 µs)",
        t50 - d50,
        t99 - d99
    );
    let rd = rps_direct.iter().sum::<f64>() / rps_direct.len() as f64;
    let rt = rps_through.iter().sum::<f64>() / rps_through.len() as f64;
    println!(
        "throughput, wrk -t2 -c32 -d4s (mean of {} runs):",
        rps_direct.len()
    );
    println!("  direct:  {rd:.0} req/s  {rps_direct:.0?}");
    println!("  through: {rt:.0} req/s  {rps_through:.0?}");
    println!("  ratio:   {:.1} %   (goal >= 80 %)", 100.0 * rt / rd);
}
