//! DNSChaos interceptor cost, side by side in one run: queries per second from one client
//! (sequential, one outstanding query) and the latency of non-matching queries (p50, p99),
//! direct to dnsmasq and through the interceptor with a fault whose pattern matches nothing.
//! `cargo bench -p havoc-faults --bench dns_intercept` (root, dnsmasq installed).

#[path = "../tests/dns_support.rs"]
mod dns_support;

use std::time::{Duration, Instant};

use dns_support::{ctx, fault, DnsLab};
use havoc_faults::Target;
use hickory_proto::rr::RecordType;

fn measure(c: &mut dns_support::DnsClient, n: usize) -> (f64, Duration, Duration) {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.query("good.test", RecordType::A, Duration::from_secs(2))
            .expect("answer");
        lat.push(t.elapsed());
    }
    let qps = n as f64 / t0.elapsed().as_secs_f64();
    lat.sort();
    (qps, lat[n / 2], lat[n * 99 / 100])
}

fn main() {
    if let Some(why) = dns_support::cannot_run() {
        eprintln!("dns_intercept bench skipped: {why}");
        return;
    }
    let n = 20_000;
    let lab = DnsLab::new();
    let mut c = lab.client_socket();
    measure(&mut c, 1000);
    let direct = measure(&mut c, n);
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
}
