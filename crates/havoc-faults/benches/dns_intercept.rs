//! DNSChaos interceptor cost, side by side in one run: queries per second from one client
//! (sequential, one outstanding query) and the latency of non-matching queries (p50, p99),
//! direct to dnsmasq and through the interceptor with a fault whose pattern matches nothing;
//! over UDP, over TCP with 50 queries per connection, and over TCP with a new connection per query (as
//! `dig +tcp` does; dnsmasq forks a process per TCP connection, which dominates that row).
//! `cargo bench -p havoc-faults --bench dns_intercept` (root, dnsmasq installed).

#[path = "../tests/dns_support.rs"]
mod dns_support;

use std::time::{Duration, Instant};

use dns_support::{ctx, fault, DnsLab, TcpDnsClient};
use havoc_faults::Target;
use hickory_proto::rr::RecordType;

type Row = (f64, Duration, Duration);

const T: Duration = Duration::from_secs(2);

fn measure(c: &mut dns_support::DnsClient, n: usize) -> Row {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.query("good.test", RecordType::A, T).expect("answer");
        lat.push(t.elapsed());
    }
    row(n, t0.elapsed(), lat)
}

fn row(n: usize, wall: Duration, mut lat: Vec<Duration>) -> Row {
    lat.sort();
    (n as f64 / wall.as_secs_f64(), lat[n / 2], lat[n * 99 / 100])
}

/// TCP from the client namespace: `n` sequential queries on connections of `per_conn` queries
/// each (dnsmasq ends a connection after 100). Latency of each query, from connecting for the
/// first query of a connection; qps over the whole run.
fn measure_tcp(lab: &DnsLab, n: usize, per_conn: usize) -> Row {
    let server = std::net::SocketAddr::from((lab.server_addr, 53));
    lab.client_netns()
        .run(move || {
            let mut lat = Vec::with_capacity(n);
            let t0 = Instant::now();
            while lat.len() < n {
                let t = Instant::now();
                let mut c = TcpDnsClient::connect(server);
                for i in 0..per_conn.min(n - lat.len()) {
                    let t = if i == 0 { t } else { Instant::now() };
                    c.query("good.test", RecordType::A, T).expect("TCP answer");
                    lat.push(t.elapsed());
                }
            }
            row(n, t0.elapsed(), lat)
        })
        .expect("enter the client netns")
}

fn print_rows(title: &str, direct: Row, via: Row) {
    println!("{title}");
    println!("{:<22} {:>10} {:>10} {:>10}", "path", "qps", "p50", "p99");
    for (name, (qps, p50, p99)) in [("direct", direct), ("through interceptor", via)] {
        println!(
            "{name:<22} {qps:>10.0} {:>8.1}us {:>8.1}us",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "added: p50 {:+.1}us, p99 {:+.1}us, throughput {:.1}% of direct",
        (via.1.as_secs_f64() - direct.1.as_secs_f64()) * 1e6,
        (via.2.as_secs_f64() - direct.2.as_secs_f64()) * 1e6,
        100.0 * via.0 / direct.0,
    );
}

fn main() {
    if let Some(why) = dns_support::cannot_run() {
        eprintln!("dns_intercept bench skipped: {why}");
        return;
    }
    let n = 20_000;
    let lab = DnsLab::new();
    let mut c = lab.client_socket();
    let (n_tcp, per_conn, n_conns) = (20_000, 50, 2_000);
    measure(&mut c, 1000);
    let direct = measure(&mut c, n);
    measure_tcp(&lab, 1000, per_conn);
    let direct_tcp = measure_tcp(&lab, n_tcp, per_conn);
    measure_tcp(&lab, 200, 1);
    let direct_conns = measure_tcp(&lab, n_conns, 1);
    let spec = fault(
        "    - name: b\n      kind: DNSChaos\n      action: error\n      patterns: [\"never.matches\"]\n      selector: { netns: [x] }\n",
    );
    let target = Target::Netns {
        path: format!("/run/netns/{}", lab.client).into(),
        label: lab.client.clone(),
    };
    let mut inj = havoc_faults::build(&spec)
        .inject(&target, &ctx(1))
        .expect("inject");
    measure(&mut c, 1000);
    let via = measure(&mut c, n);
    measure_tcp(&lab, 1000, per_conn);
    let via_tcp = measure_tcp(&lab, n_tcp, per_conn);
    measure_tcp(&lab, 200, 1);
    let via_conns = measure_tcp(&lab, n_conns, 1);
    let e = inj.effect();
    inj.recover().expect("recover");
    println!("DNS, {n} sequential UDP queries, non-matching name, dnsmasq in a peer netns");
    println!("{:<22} {:>10} {:>10} {:>10}", "path", "qps", "p50", "p99");
    for (name, (qps, p50, p99)) in [("direct", direct), ("through interceptor", via)] {
        println!(
            "{name:<22} {qps:>10.0} {:>8.1}us {:>8.1}us",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "added: p50 {:+.1}us, p99 {:+.1}us, throughput {:.1}% of direct; interceptor's own userspace time per passed query {:.1}us",
        (via.1.as_secs_f64() - direct.1.as_secs_f64()) * 1e6,
        (via.2.as_secs_f64() - direct.2.as_secs_f64()) * 1e6,
        100.0 * via.0 / direct.0,
        e.metrics.get("dns_interceptor_added_us").copied().unwrap_or(f64::NAN)
    );
    print_rows(
        &format!(
            "DNS over TCP, {n_tcp} sequential queries, {per_conn} per connection (the first one's latency includes connecting)"
        ),
        direct_tcp,
        via_tcp,
    );
    print_rows(
        &format!("DNS over TCP, {n_conns} connections of one query each (dig +tcp's pattern)"),
        direct_conns,
        via_conns,
    );
    println!("effect: {}", e.summary);
}
