//! Sidecar mode with real injections on a child process: a fixed seed gives the same sequence.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;

fn config(pid: i32, seed: u64, state: &std::path::Path, dry: bool) -> havoc_agent::SidecarConfig {
    let src = format!(
        "interval: 250ms\nseed: {seed}\ndryRun: {dry}\nstateDir: {}\nfaults:\n  - name: pause-child\n    kind: ProcessChaos\n    probability: 0.5\n    duration: 100ms\n    action: pause\n    selector: {{ pids: [{pid}] }}\n  - name: cont-child\n    kind: ProcessChaos\n    probability: 0.3\n    duration: 50ms\n    action: signal\n    signal: SIGCONT\n    selector: {{ pids: [{pid}] }}\n",
        state.display()
    );
    havoc_agent::sidecar::parse_config(&src).expect("valid config")
}

fn injected(events: &[havoc_agent::sidecar::SidecarEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e.outcome == "injected" || e.outcome == "dry-run")
        .map(|e| (e.interval, e.fault.clone()))
        .collect()
}

#[test]
fn a_fixed_seed_gives_the_same_sequence_of_injections_twice() {
    if !root_or_skip("a_fixed_seed_gives_the_same_sequence_of_injections_twice") {
        return;
    }
    let target = Reaped::sleeper();
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = config(target.pid(), 42, state.path(), false);
    let n = 8;
    let run = || {
        havoc_agent::sidecar::run_loop(&cfg, &testd(), Some(n), Arc::new(AtomicBool::new(false)))
            .expect("loop runs")
    };
    let first = run();
    assert_ne!(proc_state(target.pid()), Some('T'), "recovered at the end");
    let second = run();
    for e in first.iter().chain(&second) {
        assert_eq!(e.outcome, "injected", "{e:?}");
        assert_eq!(e.targets.len(), 1, "{e:?}");
    }
    let planned: Vec<(u64, String)> = havoc_agent::plan(&cfg, n)
        .into_iter()
        .filter(|d| d.inject)
        .map(|d| (d.interval, d.fault))
        .collect();
    assert!(
        planned.len() >= 2,
        "the seed injects something: {planned:?}"
    );
    assert_eq!(injected(&first), planned, "the run follows the plan");
    assert_eq!(injected(&second), planned, "and so does the second");
    assert_ne!(proc_state(target.pid()), Some('T'));
    assert_eq!(
        std::fs::read_dir(state.path().join("runs"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "every journal removed"
    );

    let other = config(target.pid(), 43, state.path(), true);
    let dry =
        havoc_agent::sidecar::run_loop(&other, &testd(), Some(n), Arc::new(AtomicBool::new(false)))
            .expect("dry run");
    assert!(dry.iter().all(|e| e.outcome == "dry-run"), "{dry:?}");
    assert_ne!(injected(&dry), planned, "another seed, another sequence");
}

#[test]
fn the_sidecar_never_targets_itself() {
    if !root_or_skip("the_sidecar_never_targets_itself") {
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = config(std::process::id() as i32, 1, state.path(), false);
    let cfg = havoc_agent::SidecarConfig {
        faults: cfg
            .faults
            .into_iter()
            .map(|mut f| {
                f.probability = 1.0;
                f
            })
            .collect(),
        ..cfg
    };
    let events =
        havoc_agent::sidecar::run_loop(&cfg, &testd(), Some(1), Arc::new(AtomicBool::new(false)))
            .expect("loop");
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e.outcome, "failed", "{e:?}");
        assert!(e.detail.contains("protected"), "{e:?}");
    }
}
