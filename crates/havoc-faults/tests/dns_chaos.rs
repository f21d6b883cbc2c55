//! DNSChaos on a real resolver: dnsmasq in a server namespace, queries from a client namespace
//! the fault targets, through the `Fault`/`Injection` seam. Error, random and delay per pattern,
//! percent over 2,000 queries, non-matching names unchanged, and nothing left after recovery;
//! the same over TCP (`dig +tcp`, pipelined queries on one connection, percent over 2,000 TCP
//! queries).

mod dns_support;

use std::time::{Duration, Instant};

use dns_support::{ctx, fault, DnsLab, RECORDS};
use havoc_faults::Target;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(2);

fn target(lab: &DnsLab) -> Target {
    Target::Netns {
        path: format!("/run/netns/{}", lab.client).into(),
        label: lab.client.clone(),
    }
}

fn addr_of(name: &str) -> std::net::IpAddr {
    RECORDS.iter().find(|(n, _)| *n == name).unwrap().1.into()
}

#[test]
fn error_and_random_hit_matching_names_only_and_recovery_leaves_nothing() {
    if dns_support::skip("error_and_random_hit_matching_names_only_and_recovery_leaves_nothing") {
        return;
    }
    let lab = DnsLab::new();
    let mut c = lab.client_socket();
    let before: Vec<_> = ["good.test", "other.example"]
        .iter()
        .map(|n| c.query(n, RecordType::A, T).expect("baseline"))
        .collect();

    // error for bad.test (exact) and ba?.tes* patterns: SERVFAIL; other names unchanged.
    let spec = fault(
        "    - name: e\n      kind: DNSChaos\n      action: error\n      patterns: [\"bad.test\", \"fa?t.tes*\"]\n      selector: { netns: [x] }\n",
    );
    let f = havoc_faults::build(&spec);
    f.check(&target(&lab)).expect("check");
    let mut inj = f.inject(&target(&lab), &ctx(1)).expect("inject");
    for name in ["bad.test", "BAD.test", "fast.test"] {
        let a = c.query(name, RecordType::A, T).expect("answer");
        assert_eq!(a.rcode, ResponseCode::ServFail, "{name}: {a:?}");
        assert!(a.addrs.is_empty());
    }
    let after: Vec<_> = ["good.test", "other.example"]
        .iter()
        .map(|n| c.query(n, RecordType::A, T).expect("unfaulted"))
        .collect();
    assert_eq!(before, after, "non-matching names must get the same answer");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_answered_error"], 3.0, "{e:?}");
    assert_eq!(e.metrics["dns_queries_matched"], 3.0, "{e:?}");
    assert_eq!(e.metrics["dns_passed"], 2.0, "{e:?}");
    assert!(!lab.havoc_chains().is_empty(), "the rules are in place");
    inj.recover().expect("recover");
    inj.recover().expect("recover is idempotent");
    assert!(
        lab.havoc_chains().is_empty(),
        "left: {:?}",
        lab.havoc_chains()
    );
    let a = c
        .query("bad.test", RecordType::A, T)
        .expect("after recovery");
    assert_eq!(a.addrs, vec![addr_of("bad.test")]);

    // random: A gets one random address with TTL 10, AAAA one IPv6 address, MX SERVFAIL.
    let spec = fault(
        "    - name: r\n      kind: DNSChaos\n      action: random\n      patterns: [\"bad.*\"]\n      selector: { netns: [x] }\n",
    );
    let f = havoc_faults::build(&spec);
    let mut inj = f.inject(&target(&lab), &ctx(2)).expect("inject");
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..20 {
        let a = c.query("bad.test", RecordType::A, T).expect("answer");
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.addrs.len(), 1, "{a:?}");
        assert!(a.addrs[0].is_ipv4());
        assert_eq!(a.ttls, vec![10]);
        assert!(a.authoritative);
        distinct.insert(a.addrs[0]);
    }
    assert!(distinct.len() >= 19, "random addresses: {distinct:?}");
    assert!(!distinct.contains(&addr_of("bad.test")));
    let a = c.query("bad.test", RecordType::AAAA, T).expect("aaaa");
    assert!(a.addrs.len() == 1 && a.addrs[0].is_ipv6(), "{a:?}");
    let a = c.query("bad.test", RecordType::MX, T).expect("mx");
    assert_eq!(a.rcode, ResponseCode::ServFail);
    let a = c.query("good.test", RecordType::A, T).expect("good");
    assert_eq!(a.addrs, vec![addr_of("good.test")]);
    assert_eq!(inj.effect().metrics["dns_answered_random"], 22.0);
    inj.recover().expect("recover");
    assert!(lab.havoc_chains().is_empty());
}

fn mean_latency(c: &mut dns_support::DnsClient, name: &str, n: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let t0 = Instant::now();
        let a = c.query(name, RecordType::A, T).expect("answer");
        total += t0.elapsed();
        assert_eq!(
            a.addrs,
            vec![addr_of(name)],
            "{name}: a delayed answer is the real one"
        );
    }
    total / n as u32
}

#[test]
fn delay_holds_matching_queries_within_5_percent() {
    if dns_support::skip("delay_holds_matching_queries_within_5_percent") {
        return;
    }
    let lab = DnsLab::new();
    let mut c = lab.client_socket();
    let base = mean_latency(&mut c, "slow.test", 20);
    let spec = fault(
        "    - name: d\n      kind: DNSChaos\n      action: delay\n      delay: 200ms\n      patterns: [\"slow*\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(3))
        .expect("inject");
    let slow = mean_latency(&mut c, "slow.test", 15);
    let fast = mean_latency(&mut c, "fast.test", 20);
    let added = slow.saturating_sub(base).as_secs_f64();
    assert!(
        (added - 0.2).abs() <= 0.2 * 0.05,
        "added {added:.4}s for a 200ms delay (baseline {base:?})"
    );
    assert!(
        fast < Duration::from_millis(50),
        "a non-matching name must not be held: {fast:?}"
    );
    let e = inj.effect();
    assert_eq!(e.metrics["dns_delayed"], 15.0, "{e:?}");
    let mean = e.metrics["dns_delay_mean_ms"];
    assert!((mean - 200.0).abs() <= 10.0, "measured hold {mean} ms");
    inj.recover().expect("recover");
    assert!(lab.havoc_chains().is_empty());
}

#[test]
fn percent_is_met_within_2_points_over_2000_queries() {
    if dns_support::skip("percent_is_met_within_2_points_over_2000_queries") {
        return;
    }
    let lab = DnsLab::new();
    let mut c = lab.client_socket();
    let spec = fault(
        "    - name: p\n      kind: DNSChaos\n      action: error\n      percent: 30\n      patterns: [\"bad.test\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(4))
        .expect("inject");
    let n = 2000;
    let mut failed = 0;
    for _ in 0..n {
        let a = c.query("bad.test", RecordType::A, T).expect("answer");
        match a.rcode {
            ResponseCode::ServFail => failed += 1,
            ResponseCode::NoError => assert_eq!(a.addrs, vec![addr_of("bad.test")]),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pct = 100.0 * failed as f64 / n as f64;
    assert!((pct - 30.0).abs() <= 2.0, "{pct:.2}% hit for 30% requested");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_answered_error"], failed as f64);
    assert_eq!(e.metrics["dns_queries_matched"], n as f64);
    inj.recover().expect("recover");
}

fn expect_tables_gone(lab: &DnsLab) {
    assert!(
        lab.havoc_tables().is_empty(),
        "nft tables left: {:?}",
        lab.havoc_tables()
    );
}

#[test]
fn tcp_queries_get_the_fault_for_matching_names_and_the_real_answer_otherwise() {
    let test = "tcp_queries_get_the_fault_for_matching_names_and_the_real_answer_otherwise";
    if dns_support::skip(test) {
        return;
    }
    let lab = DnsLab::new();
    assert_eq!(lab.dig("bad.test", true), "NOERROR 10.9.9.2", "baseline");
    let spec = fault(
        "    - name: e\n      kind: DNSChaos\n      action: error\n      patterns: [\"bad.test\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(11))
        .expect("inject");
    assert!(
        !lab.havoc_tables().is_empty(),
        "the TCP redirect is in place"
    );
    assert_eq!(lab.dig("bad.test", true), "SERVFAIL", "dig +tcp, matching");
    assert_eq!(
        lab.dig("good.test", true),
        "NOERROR 10.9.9.1",
        "dig +tcp, other"
    );
    assert_eq!(lab.dig("other.example", true), "NOERROR 10.9.9.99");
    assert_eq!(lab.dig("bad.test", false), "SERVFAIL", "UDP still faulted");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_tcp_answered_error"], 1.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_passed"], 2.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_queries_seen"], 3.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_connections"], 3.0, "{e:?}");
    assert_eq!(e.metrics["dns_udp_answered_error"], 1.0, "{e:?}");
    assert_eq!(
        e.metrics["dns_answered_error"], 2.0,
        "totals add both: {e:?}"
    );
    assert_eq!(e.metrics["dns_tcp_upstream_errors"], 0.0, "{e:?}");
    assert!(e.summary.contains("(1 UDP, 1 TCP)"), "{}", e.summary);
    inj.recover().expect("recover");
    expect_tables_gone(&lab);
    assert_eq!(
        lab.dig("bad.test", true),
        "NOERROR 10.9.9.2",
        "after recovery"
    );

    // random over TCP: one random address, TTL 10, authoritative; other names real.
    let spec = fault(
        "    - name: r\n      kind: DNSChaos\n      action: random\n      patterns: [\"bad.*\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(12))
        .expect("inject");
    let mut c = lab.client_tcp();
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..10 {
        let a = c.query("bad.test", RecordType::A, T).expect("answer");
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.ttls, vec![10], "{a:?}");
        assert!(a.authoritative);
        distinct.insert(a.addrs[0]);
        let g = c.query("good.test", RecordType::A, T).expect("good");
        assert_eq!(g.addrs, vec![addr_of("good.test")]);
    }
    assert!(distinct.len() >= 9 && !distinct.contains(&addr_of("bad.test")));
    assert!(c.finish(T), "the connection ends cleanly");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_tcp_answered_random"], 10.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_connections"], 1.0, "{e:?}");
    inj.recover().expect("recover");
    expect_tables_gone(&lab);
}

#[test]
fn queries_pipelined_on_one_tcp_connection_each_get_their_own_fate() {
    let test = "queries_pipelined_on_one_tcp_connection_each_get_their_own_fate";
    if dns_support::skip(test) {
        return;
    }
    let lab = DnsLab::new();
    let spec = fault(
        "    - name: e\n      kind: DNSChaos\n      action: error\n      patterns: [\"bad.test\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(13))
        .expect("inject");
    let mut c = lab.client_tcp();
    // Two queries in one segment, then two more, one at a time, on the same connection.
    let ids = c.send_all(&[("bad.test", RecordType::A), ("good.test", RecordType::A)]);
    let mut got = std::collections::HashMap::new();
    for _ in 0..2 {
        let (id, a) = c.recv(T).expect("answer");
        got.insert(id, a);
    }
    assert_eq!(got[&ids[0]].rcode, ResponseCode::ServFail, "{got:?}");
    assert_eq!(got[&ids[1]].addrs, vec![addr_of("good.test")], "{got:?}");
    let g = c.query("good.test", RecordType::A, T).expect("third");
    assert_eq!(g.addrs, vec![addr_of("good.test")]);
    let b = c.query("bad.test", RecordType::A, T).expect("fourth");
    assert_eq!(b.rcode, ResponseCode::ServFail);
    assert!(c.finish(T), "the connection ends cleanly");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_tcp_connections"], 1.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_queries_seen"], 4.0, "{e:?}");
    assert_eq!(e.metrics["dns_tcp_answered_error"], 2.0, "{e:?}");
    inj.recover().expect("recover");

    // delay: a held query does not hold back the one behind it; the answers come out of order.
    let spec = fault(
        "    - name: d\n      kind: DNSChaos\n      action: delay\n      delay: 200ms\n      patterns: [\"slow*\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(14))
        .expect("inject");
    let mut c = lab.client_tcp();
    let mut slow_total = Duration::ZERO;
    let n = 5;
    for _ in 0..n {
        let t0 = Instant::now();
        let ids = c.send_all(&[("slow.test", RecordType::A), ("fast.test", RecordType::A)]);
        let (first, a) = c.recv(T).expect("first answer");
        let fast_after = t0.elapsed();
        assert_eq!(first, ids[1], "the non-matching query is answered first");
        assert_eq!(a.addrs, vec![addr_of("fast.test")]);
        assert!(fast_after < Duration::from_millis(100), "{fast_after:?}");
        let (second, a) = c.recv(T).expect("second answer");
        slow_total += t0.elapsed();
        assert_eq!(second, ids[0]);
        assert_eq!(
            a.addrs,
            vec![addr_of("slow.test")],
            "a held query gets the real answer"
        );
    }
    let mean = (slow_total / n).as_secs_f64();
    assert!(
        (mean - 0.2).abs() <= 0.2 * 0.05,
        "held query answered after {mean:.4}s on average for a 200ms delay"
    );
    assert!(c.finish(T), "the connection ends cleanly");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_tcp_delayed"], n as f64, "{e:?}");
    let held = e.metrics["dns_delay_mean_ms"];
    assert!((held - 200.0).abs() <= 10.0, "measured hold {held} ms");
    inj.recover().expect("recover");
    expect_tables_gone(&lab);
}

#[test]
fn tcp_percent_is_met_within_2_points_over_2000_queries() {
    let test = "tcp_percent_is_met_within_2_points_over_2000_queries";
    if dns_support::skip(test) {
        return;
    }
    let lab = DnsLab::new();
    let spec = fault(
        "    - name: p\n      kind: DNSChaos\n      action: error\n      percent: 30\n      patterns: [\"bad.test\"]\n      selector: { netns: [x] }\n",
    );
    let mut inj = havoc_faults::build(&spec)
        .inject(&target(&lab), &ctx(15))
        .expect("inject");
    // 200 connections of 10 pipelined queries each.
    let (conns, per) = (200, 10);
    let t0 = Instant::now();
    let mut failed = 0;
    for _ in 0..conns {
        let mut c = lab.client_tcp();
        let ids = c.send_all(&[("bad.test", RecordType::A); 10]);
        for _ in 0..per {
            let (id, a) = c.recv(T).expect("answer");
            assert!(ids.contains(&id));
            match a.rcode {
                ResponseCode::ServFail => failed += 1,
                ResponseCode::NoError => assert_eq!(a.addrs, vec![addr_of("bad.test")]),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(c.finish(T), "the connection ends cleanly");
    }
    let n = conns * per;
    let pct = 100.0 * failed as f64 / n as f64;
    eprintln!(
        "TCP percent: {pct:.2}% of {n} queries over {conns} connections in {:?}",
        t0.elapsed()
    );
    assert!((pct - 30.0).abs() <= 2.0, "{pct:.2}% hit for 30% requested");
    let e = inj.effect();
    assert_eq!(e.metrics["dns_tcp_answered_error"], failed as f64);
    assert_eq!(e.metrics["dns_tcp_queries_matched"], n as f64);
    assert_eq!(e.metrics["dns_tcp_connections"], conns as f64);
    inj.recover().expect("recover");
    expect_tables_gone(&lab);
}
