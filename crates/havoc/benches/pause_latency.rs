//! Apply latency (from the start of `havoc run` to the first fault in effect) and recover latency
//! (the pause fault's recovery) for a pause, median of 20 runs of the real binary.
//! Run as root: `cargo bench -p havoc --bench pause_latency`.

use std::process::{Command, Stdio};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn main() {
    let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !uid
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        eprintln!("pause_latency: needs root, skipped");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_havoc");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut target = Command::new("sleep").arg("300").spawn().expect("sleep");
    let file = dir.path().join("pause.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: bench }}\nspec:\n  duration: 100ms\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n", target.id()),
    )
    .expect("write");
    let (mut apply, mut recover, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let t0 = std::time::Instant::now();
        let out = Command::new(exe)
            .args(["run", file.to_str().expect("utf8"), "--output", "json"])
            .env("HAVOC_STATE_DIR", dir.path().join("state"))
            .stderr(Stdio::null())
            .output()
            .expect("havoc run");
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        apply.push(r["timing"]["applyLatencyMs"].as_f64().expect("apply"));
        recover.push(
            r["timing"]["maxRecoverLatencyMs"]
                .as_f64()
                .expect("recover"),
        );
    }
    let _ = target.kill();
    let _ = target.wait();
    println!(
        "pause apply latency   median {:.2} ms (min {:.2}, max {:.2})",
        median(apply.clone()),
        apply.iter().cloned().fold(f64::MAX, f64::min),
        apply.iter().cloned().fold(0.0, f64::max)
    );
    println!("pause recover latency median {:.3} ms", median(recover));
    println!(
        "whole `havoc run` (100 ms fault) median {:.1} ms",
        median(wall)
    );
}
