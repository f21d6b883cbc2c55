//! How big the dashboard's page is, and how long listing N reports takes through the API (the
//! real server on 127.0.0.1, N copies of the 17 KB fixture report). Prints one line per number.
//!
//! `cargo bench -p havoc-dashboard --bench list` (N from HAVOC_BENCH_REPORTS, default 1000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let n: usize = std::env::var("HAVOC_BENCH_REPORTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let state = tempfile::tempdir().expect("tempdir");
    let verdicts = ["completed", "deviated", "aborted", "failed", "interrupted"];
    for i in 0..n {
        common::write_report(
            state.path(),
            &format!("run-{i:05}"),
            verdicts[i % verdicts.len()],
            1_000 + i as u64,
        );
    }
    let s = common::Server::start(state, "/nonexistent/havoc".into());
    let sizes: Vec<(&str, usize)> = ["/", "/assets/app.js", "/assets/app.css"]
        .iter()
        .map(|p| (*p, s.get(p).body.len()))
        .collect();
    let total: usize = sizes.iter().map(|(_, b)| b).sum();
    println!("page: {sizes:?}, {total} bytes in all (uncompressed)");
    let report = s.get("/runs/run-00000").body.len();
    println!("one report page: {report} bytes");
    for (path, what) in [
        ("/api/runs", "list all"),
        ("/api/runs?verdict=aborted", "list aborted"),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t0 = Instant::now();
            let r = s.get(path);
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(r.status, 200);
            bytes = r.body.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{what} of {n} reports: median {:.1} ms, min {:.1} ms, max {:.1} ms ({bytes} bytes of JSON)",
            times[2], times[0], times[4]
        );
    }
}
