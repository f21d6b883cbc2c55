//! NetworkChaos reports what it measured beside what was requested: a delay and a bandwidth limit
//! on a real namespace pair, with traffic, through the `Fault`/`Injection` seam. Skipped (with a
//! printed reason) when not root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use havoc_faults::{Context, Target};
use havoc_sys::netns::NetNs;

/// Two namespaces `<name>-t` (target, 10.78.<n>.1) and `<name>-p` (peer, .2) joined by a veth.
struct Pair {
    target: String,
    peer: String,
}

fn sh(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    fn new() -> Self {
        let name = format!("hvfe-{}", std::process::id());
        let p = Pair {
            target: format!("{name}-t"),
            peer: format!("{name}-p"),
        };
        sh(&["ip", "netns", "add", &p.target]);
        sh(&["ip", "netns", "add", &p.peer]);
        sh(&[
            "ip", "link", "add", "hvfet", "netns", &p.target, "type", "veth", "peer", "name",
            "hvfep", "netns", &p.peer,
        ]);
        for (ns, dev, addr) in [
            (&p.target, "hvfet", "10.78.9.1/24"),
            (&p.peer, "hvfep", "10.78.9.2/24"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        std::thread::sleep(Duration::from_millis(200));
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in [&self.target, &self.peer] {
            let _ = Command::new("ip").args(["netns", "delete", n]).status();
        }
    }
}

fn fault(yaml_fault: &str) -> havoc_spec::FaultSpec {
    let src = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: t }}\nspec:\n  duration: 5s\n  faults:\n{yaml_fault}"
    );
    let exp = havoc_spec::experiment::parse_experiment(&src).expect("parse experiment");
    exp.spec.faults[0].spec.clone()
}

#[test]
fn delay_and_bandwidth_report_measured_beside_requested() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED delay_and_bandwidth_report_measured_beside_requested: needs root");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let pair = Pair::new();
    let target = Target::Netns {
        path: format!("/run/netns/{}", pair.target).into(),
        label: pair.target.clone(),
    };
    let ctx = Context {
        self_exe: std::env::current_exe().expect("exe"),
        seed: 3,
        duration: Duration::from_secs(5),
    };
    let (t_ns, p_ns) = (NetNs::named(&pair.target), NetNs::named(&pair.peer));

    // Delay what the target receives: UDP from the peer, timed by the application.
    let spec = fault(&format!(
        "    - name: d\n      kind: NetworkChaos\n      action: delay\n      selector: {{ netns: [{}] }}\n      direction: from\n      delay: {{ latency: 30ms, jitter: 6ms }}\n",
        pair.target
    ));
    let mut inj = havoc_faults::build(&spec)
        .inject(&target, &ctx)
        .expect("inject delay");
    let server: SocketAddr = "10.78.9.1:7700".parse().expect("addr");
    let rx = t_ns
        .run(move || UdpSocket::bind(server))
        .expect("netns")
        .expect("bind");
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let tx = p_ns
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("netns")
        .expect("bind");
    let n = 300u32;
    let reader = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut buf = [0u8; 8];
        while got < n && rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    for _ in 0..n {
        tx.send_to(b"x", server).expect("send");
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(reader.join().expect("reader"), n);
    std::thread::sleep(Duration::from_millis(1100));
    inj.tick().expect("tick");
    inj.recover().expect("recover delay");
    let e = inj.effect();
    println!("{}\n{:?}", e.summary, e.metrics);
    let m = |k: &str| {
        *e.metrics
            .get(k)
            .unwrap_or_else(|| panic!("metric {k} missing: {:?}", e.metrics))
    };
    assert_eq!(m("delay_mean_ms_requested"), 30.0);
    assert_eq!(m("delay_jitter_ms_requested"), 6.0);
    assert!(m("packets_delayed") >= n as f64, "{e:?}");
    assert_eq!(m("packets_bypassed"), 0.0);
    assert_eq!(m("delay_packets_matched"), m("delay_packets_seen"));
    // The engine measures each hold from receive to verdict, so thread wake-up lateness on this
    // shared 2-vCPU machine is in it (measured: mean +0.8 ms, jitter 7.4 ms for 6 ms requested
    // while other builds ran). The bounds still fail if the delay or the jitter is not applied.
    assert!((m("delay_mean_ms") - 30.0).abs() <= 2.0, "{e:?}");
    // sqrt(3)·sd of a uniform ±6 ms: 6 ms without noise.
    assert!((4.5..=9.0).contains(&m("delay_jitter_ms")), "{e:?}");
    assert!(e.summary.contains("bypassed"), "{}", e.summary);
    drop(inj);

    // Limit what the target sends to 10 Mbit/s: TCP to the peer.
    let spec = fault(&format!(
        "    - name: b\n      kind: NetworkChaos\n      action: bandwidth\n      selector: {{ netns: [{}] }}\n      direction: to\n      bandwidth: {{ rate: 10mbit }}\n",
        pair.target
    ));
    let mut inj = havoc_faults::build(&spec)
        .inject(&target, &ctx)
        .expect("inject bandwidth");
    let to: SocketAddr = "10.78.9.2:7701".parse().expect("addr");
    let listener = p_ns
        .run(move || TcpListener::bind(to))
        .expect("netns")
        .expect("listen");
    let mut c = t_ns
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .expect("netns")
        .expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    let writer = std::thread::spawn(move || {
        c.set_write_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let buf = vec![1u8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let _ = c.write(&buf);
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k as u64,
        }
    }
    writer.join().expect("writer");
    inj.tick().expect("tick");
    inj.recover().expect("recover bandwidth");
    let e = inj.effect();
    println!("{}\n{:?}\nreceiver got {got} bytes", e.summary, e.metrics);
    let m = |k: &str| {
        *e.metrics
            .get(k)
            .unwrap_or_else(|| panic!("metric {k} missing: {:?}", e.metrics))
    };
    assert_eq!(m("rate_bps_requested"), 10e6);
    assert!(m("rate_bps") > 0.0 && m("rate_bps") <= 10.5e6, "{e:?}");
    let ratio = m("bytes_sent") / got as f64;
    assert!(
        (1.0..=1.08).contains(&ratio),
        "TBF bytes {} vs received {got}",
        m("bytes_sent")
    );
    assert!(m("packets_sent") > 0.0 && m("overlimits") > 0.0, "{e:?}");
    assert!(e.metrics.contains_key("tbf_packets_dropped"));
}
