//! DNSChaos through the real `havoc` binary: a kill -9 of `havoc run` mid-fault leaves DNS over
//! UDP and TCP working, unfaulted, within 1 s (the kernel bypasses the queue and deletes the
//! owned TCP redirect table with its nft session), no nft table is left, and the watchdog
//! removes the chain; the dns-*.yaml examples validate. Client: `dig` in a namespace the test makes; server:
//! dnsmasq in another.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Client (`10.214.<n>.1`) and server (`.2`, dnsmasq) namespaces; removed in Drop.
struct Lab {
    client: String,
    server: String,
    server_addr: String,
    dnsmasq: Reaped,
    sleeper: Reaped,
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

impl Lab {
    fn new() -> Lab {
        let id = std::process::id();
        let (client, server) = (format!("hvdnsb{id}c"), format!("hvdnsb{id}s"));
        let sub = id % 250 + 1;
        sh(&["ip", "netns", "add", &client]);
        sh(&["ip", "netns", "add", &server]);
        let (vc, vs) = (
            format!("hvb{}c", id % 100000),
            format!("hvb{}s", id % 100000),
        );
        sh(&[
            "ip", "link", "add", &vc, "netns", &client, "type", "veth", "peer", "name", &vs,
            "netns", &server,
        ]);
        for (ns, dev, host) in [(&client, &vc, 1), (&server, &vs, 2)] {
            let addr = format!("10.214.{sub}.{host}/24");
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let server_addr = format!("10.214.{sub}.2");
        let dnsmasq = Reaped::spawn(
            Command::new("ip")
                .args(["netns", "exec", &server, DNSMASQ])
                .args([
                    "--no-resolv",
                    "--no-hosts",
                    "-k",
                    "--bind-interfaces",
                    "--cache-size=0",
                    "--user=root",
                    "--pid-file=",
                    "--address=/bad.test/10.9.9.2",
                    "--address=/good.test/10.9.9.1",
                ])
                .arg(format!("--listen-address={server_addr}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let sleeper =
            Reaped::spawn(Command::new("ip").args(["netns", "exec", &client, "sleep", "300"]));
        let lab = Lab {
            client,
            server,
            server_addr,
            dnsmasq,
            sleeper,
        };
        assert!(
            wait_until(Duration::from_secs(10), || lab.dig("good.test")
                == "NOERROR 10.9.9.1"),
            "dnsmasq answers"
        );
        lab
    }

    /// `STATUS ADDRESSES` of one A query over UDP from the client namespace (one try, 1 s
    /// timeout).
    fn dig(&self, name: &str) -> String {
        self.dig_over(name, false)
    }

    /// The same over UDP or TCP (`dig +tcp`).
    fn dig_over(&self, name: &str, tcp: bool) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "dig", "+tries=1", "+time=1"])
            .args(tcp.then_some("+tcp"))
            .arg(format!("@{}", self.server_addr))
            .args([name, "A", "+noall", "+comments", "+answer"])
            .output()
            .expect("dig");
        let text = String::from_utf8_lossy(&out.stdout);
        let status = text
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .and_then(|s| s.split(',').next())
            .unwrap_or("NO-ANSWER")
            .to_string();
        let addrs: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        format!("{status} {}", addrs.join(",")).trim().to_string()
    }

    fn chains(&self) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "iptables-save"])
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(":HAVOC-") || l.contains("NFQUEUE"))
            .count()
    }

    /// Havoc's nftables tables in the client namespace.
    fn tables(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "nft", "list", "tables"])
            .output()
            .expect("nft list tables");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("havoc"))
            .map(str::to_string)
            .collect()
    }

    /// The process whose namespace is targeted: `ip netns exec`'s child, `sleep`.
    fn target_pid(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pid = self.sleeper.pid();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                return pid;
            }
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.0.kill();
        let _ = self.sleeper.0.kill();
        for n in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "delete", n]).status();
        }
    }
}

fn tools_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let missing: Vec<&str> = [DNSMASQ, "/usr/bin/dig"]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {missing:?} not installed (.ci installs dnsmasq and dig)"
        );
        eprintln!("SKIPPED {test}: {missing:?} not installed");
        return false;
    }
    true
}

#[test]
fn kill_dash_nine_during_dns_chaos_leaves_dns_working_within_a_second() {
    let test = "kill_dash_nine_during_dns_chaos_leaves_dns_working_within_a_second";
    if !tools_or_skip(test) {
        return;
    }
    let lab = Lab::new();
    let pid = lab.target_pid();
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: DNSChaos\nmetadata: {{ name: dns-kill9 }}\nspec:\n  duration: 60s\n  action: error\n  patterns: [\"bad.*\"]\n  selector: {{ pids: [{pid}] }}\n"
    );
    let file = write(dir.path(), "dns.yaml", &exp);
    let state_dir = dir.path().join("state");
    let mut run = Reaped::spawn(&mut havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(15), || lab.dig("bad.test")
            == "SERVFAIL"),
        "bad.test fails during the fault: {}",
        lab.dig("bad.test")
    );
    assert_eq!(lab.dig("good.test"), "NOERROR 10.9.9.1", "others unchanged");
    assert_eq!(
        lab.dig_over("bad.test", true),
        "SERVFAIL",
        "TCP is faulted too"
    );
    assert_eq!(
        lab.dig_over("good.test", true),
        "NOERROR 10.9.9.1",
        "TCP others"
    );
    assert!(
        !lab.tables().is_empty(),
        "the TCP redirect table is in place"
    );
    let killed = Instant::now();
    run.0.kill().expect("SIGKILL havoc run");
    run.0.wait().expect("reap");
    // TCP first: it depends on the nft session noticing its pipe closed.
    assert!(
        wait_until(Duration::from_secs(1), || lab.dig_over("bad.test", true)
            == "NOERROR 10.9.9.2"),
        "bad.test resolves again over TCP within 1 s: {}",
        lab.dig_over("bad.test", true)
    );
    let tcp_ok = killed.elapsed();
    assert!(
        wait_until(Duration::from_secs(1), || lab.tables().is_empty()),
        "no nft table left: {:?}",
        lab.tables()
    );
    let tables_gone = killed.elapsed();
    assert!(
        wait_until(Duration::from_secs(1), || lab.dig("bad.test")
            == "NOERROR 10.9.9.2"),
        "bad.test resolves again over UDP within 1 s: {}",
        lab.dig("bad.test")
    );
    eprintln!(
        "after SIGKILL: DNS over TCP unfaulted after {tcp_ok:?}, no nft table after {tables_gone:?}, UDP unfaulted after {:?}",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "both transports unfaulted within 1 s of the kill: {:?}",
        killed.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.chains() == 0),
        "the watchdog removes the chain ({} left)",
        lab.chains()
    );
}

#[test]
fn the_dns_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("dns-") {
            continue;
        }
        let out = Command::new(havoc())
            .args(["validate", p.to_str().expect("path")])
            .output()
            .expect("run havoc validate");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "dns-*.yaml examples checked");
}
