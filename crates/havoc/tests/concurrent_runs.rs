//! Concurrent runs compose: 50 `havoc run` processes at once (pauses, two runs per process,
//! CPU stress, loss and delay on one namespace) each hold their faults for the requested time,
//! measured in the paused targets and in each report, and leave the namespaces byte-identical.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netpair::Pair;
use common::*;

const HOLD: Duration = Duration::from_secs(4);

/// The longest span a process was seen stopped, sampled every millisecond.
fn watch_stopped(pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut spans = Vec::new();
        let mut since: Option<Instant> = None;
        let t0 = Instant::now();
        while !stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
            let stopped = state(pid) == Some('T');
            match (stopped, since) {
                (true, None) => since = Some(Instant::now()),
                (false, Some(s)) => {
                    spans.push(s.elapsed());
                    since = None;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        spans
    })
}

fn doc(name: &str, fault: &str) -> String {
    format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: {name} }}\nspec:\n  seed: 3\n  duration: {}ms\n  faults:\n    - name: f\n{fault}",
        HOLD.as_millis()
    )
}

#[test]
fn fifty_concurrent_mixed_runs_each_hold_their_duration_and_leave_nothing() {
    if !root_or_skip("fifty_concurrent_mixed_runs_each_hold_their_duration_and_leave_nothing") {
        return;
    }
    let pair = Pair::new("c50");
    let before = (Pair::snapshot(&pair.a), Pair::snapshot(&pair.b));
    let sleepers: Vec<Reaped> = (0..10).map(|_| Reaped::sleeper()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, s) in sleepers.iter().enumerate() {
        for j in 0..2 {
            files.push(doc(
                &format!("pause{i}x{j}"),
                &format!(
                    "      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n",
                    s.pid()
                ),
            ));
        }
        files.push(doc(
            &format!("stress{i}"),
            &format!(
                "      kind: StressChaos\n      selector: {{ pids: [{}] }}\n      stressors: {{ cpu: {{ workers: 1, load: 5 }} }}\n",
                s.pid()
            ),
        ));
        files.push(doc(
            &format!("loss{i}"),
            &format!(
                "      kind: NetworkChaos\n      action: loss\n      direction: from\n      ports: [{}]\n      loss: {{ loss: \"50\" }}\n      selector: {{ netns: [{}] }}\n",
                7000 + i,
                pair.b
            ),
        ));
        files.push(doc(
            &format!("delay{i}"),
            &format!(
                "      kind: NetworkChaos\n      action: delay\n      direction: from\n      ports: [{}]\n      delay: {{ latency: 20ms }}\n      selector: {{ netns: [{}] }}\n",
                7100 + i,
                pair.b
            ),
        ));
    }
    assert_eq!(files.len(), 50);
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = sleepers
        .iter()
        .map(|s| watch_stopped(s.pid(), stop.clone()))
        .collect();
    let children: Vec<(String, Reaped)> = files
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let file = write(dir.path(), &format!("r{i}.yaml"), text);
            let state = dir.path().join(format!("state{i}"));
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("metadata: { name: "))
                .expect("name")
                .trim_end_matches(" }")
                .to_string();
            (name, Reaped::spawn(&mut havoc_run(&state, &file, true)))
        })
        .collect();
    let mut reports = Vec::new();
    for (name, mut child) in children {
        let mut out = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut out)
            .expect("read report");
        let status = child.0.wait().expect("wait");
        let r: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{name}: report is JSON ({e}): {out}"));
        reports.push((name, status, r));
    }
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Vec<Duration>> = watchers
        .into_iter()
        .map(|w| w.join().expect("watcher"))
        .collect();

    let tol = HOLD.as_secs_f64() * 0.05;
    let mut holds = Vec::new();
    for (name, status, r) in &reports {
        assert!(
            status.success(),
            "{name}: exit {status}: verdict {} reason {}; targets {}",
            r["verdict"],
            r["reason"],
            r["faults"][0]["targets"]
        );
        assert_eq!(r["allRecovered"], true, "{name}");
        let t = &r["faults"][0]["targets"][0];
        let achieved = t["holdAchievedSeconds"].as_f64().expect("achieved hold");
        assert!(
            (achieved - HOLD.as_secs_f64()).abs() <= tol,
            "{name}: held {achieved:.3}s, {:.3}s ± 5 % asked",
            HOLD.as_secs_f64()
        );
        holds.push(achieved);
    }
    // Where the user would look: each paused process was stopped once, for the hold (the two
    // runs pausing it share the pause; the first to end does not resume it under the other).
    for (i, spans) in seen.iter().enumerate() {
        assert_eq!(spans.len(), 1, "sleeper {i} stopped once: {spans:?}");
        let s = spans[0].as_secs_f64();
        assert!(
            (s - HOLD.as_secs_f64()).abs() <= tol + 0.5,
            "sleeper {i} stopped for {s:.3}s"
        );
    }
    holds.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    eprintln!(
        "50 concurrent runs: achieved/requested hold min {:.4} median {:.4} max {:.4}",
        holds[0] / HOLD.as_secs_f64(),
        holds[holds.len() / 2] / HOLD.as_secs_f64(),
        holds[holds.len() - 1] / HOLD.as_secs_f64()
    );
    assert_eq!(
        (Pair::snapshot(&pair.a), Pair::snapshot(&pair.b)),
        before,
        "both namespaces exactly as before"
    );
    assert!(
        workers_with("__stress-worker").is_empty(),
        "no stress worker left"
    );
}
