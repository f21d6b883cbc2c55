//! A failure in the middle of a multi-target injection leaves nothing injected: the engine recovers
//! what it already injected (here: a real paused process) before reporting the failure.

mod common;

use std::time::{Duration, Instant};

use common::{misbehave, root, state, Misbehave, Sleeper};
use havoc_engine::report::Verdict;
use havoc_engine::{RunConfig, StopFlag};

#[test]
fn failure_mid_injection_recovers_the_targets_already_hit() {
    if !root() {
        return;
    }
    let (a, b) = (Sleeper::new(), Sleeper::new());
    let src = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: partial }}\nspec:\n  duration: 30s\n  faults:\n    - name: pause-both\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}, {}], mode: all }}\n",
        a.pid(),
        b.pid()
    );
    let exp = havoc_spec::parse_experiment(&src).expect("valid");
    let protect = havoc_engine::resolve::Protection::for_this_process(&[]);
    let mut plan = havoc_engine::plan(&exp, 1, &protect).expect("plan");
    assert_eq!(plan.faults[0].targets.len(), 2);
    // Faults are injected concurrently; the failing one fails late, so the good one is in
    // effect by then and must be recovered.
    misbehave(
        &mut plan.faults[0],
        Misbehave {
            fail_pid: Some(b.pid()),
            fail_after: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let good = plan.faults[0]
        .targets
        .iter()
        .position(|t| t.pid() == Some(a.pid()))
        .expect("a is a target");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let cfg = RunConfig {
        state_dir: state_dir.path().to_path_buf(),
        self_exe: "/nonexistent".into(),
        command_started: Instant::now(),
        watchdog: false,
        report_dir: None,
    };
    let t0 = Instant::now();
    let report = havoc_engine::execute(plan, &cfg, &StopFlag::new(), &mut havoc_engine::run::Quiet);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stopped at the failure, not after the 30 s duration"
    );
    assert_eq!(report.verdict, Verdict::Failed);
    assert!(report.all_recovered);
    let targets = &report.faults[0].targets;
    assert!(
        targets[good].injected_at_seconds.is_some() && targets[good].recovered_at_seconds.is_some(),
        "the good target injected then recovered"
    );
    assert!(targets[1 - good]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("injected failure")));
    assert_ne!(state(a.pid()), Some('T'), "the good target runs again");
    assert_ne!(state(b.pid()), Some('T'));
    assert!(
        std::fs::read_dir(state_dir.path().join("runs"))
            .expect("runs dir")
            .next()
            .is_none(),
        "journal removed"
    );
}
