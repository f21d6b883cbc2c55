//! Two network namespaces joined by a veth pair, made for one test and removed when dropped.
#![allow(dead_code)]

use std::process::Command;

/// Two namespaces `<name>-a` (10.201.x.1) and `<name>-b` (10.201.x.2) joined by veth; removed on drop.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub ip_b: String,
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let n = std::process::id() % 200 + 20;
        let base = format!("hvt{}{tag}", std::process::id());
        let (a, b) = (format!("{base}a"), format!("{base}b"));
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        let (va, vb) = (format!("{base}x"), format!("{base}y"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("10.201.{n}.1/24"),
            "dev",
            &va,
        ]);
        ip(&[
            "-n",
            &b,
            "addr",
            "add",
            &format!("10.201.{n}.2/24"),
            "dev",
            &vb,
        ]);
        for (ns, v) in [(&a, &va), (&b, &vb)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", v, "up"]);
        }
        Pair {
            a,
            b,
            ip_b: format!("10.201.{n}.2"),
        }
    }

    /// Everything a fault could leave behind in a namespace.
    pub fn snapshot(ns: &str) -> String {
        let run = |args: &[&str]| {
            String::from_utf8_lossy(
                &Command::new("ip")
                    .args(["netns", "exec", ns])
                    .args(args)
                    .output()
                    .expect("run")
                    .stdout,
            )
            .to_string()
        };
        let mut s = run(&["tc", "qdisc", "show"]);
        s += &run(&["ip", "-o", "link", "show"]);
        s += &run(&["iptables-save"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        s
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
