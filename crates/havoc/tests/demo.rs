//! `havoc demo` end to end: the sandbox comes up, the bundled experiment completes with every
//! probe passing and every fault recovered, and nothing is left behind; `--keep` and `--remove`.

mod common;

use std::process::Command;

use common::*;

fn netns_list() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns")
            .stdout,
    )
    .to_string()
}

fn demo_processes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("__demo-server") || cmd.contains("__demo-load") {
            out.push(cmd);
        }
    }
    out
}

#[test]
fn demo_runs_end_to_end_and_leaves_nothing_behind() {
    if !root_or_skip("demo_runs_end_to_end_and_leaves_nothing_behind") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let reports = dir.path().join("reports");
    let out = run_havoc(
        &dir.path().join("state"),
        &[
            "demo",
            "--output",
            "json",
            "--report-dir",
            reports.to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "demo exits 0 ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["verdict"], "completed", "{}", r["reason"]);
    assert_eq!(r["allRecovered"], true);
    let faults = r["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 3);
    for f in faults {
        for t in f["targets"].as_array().expect("targets") {
            assert!(
                t["injectedAtSeconds"].is_number() && t["recoveredAtSeconds"].is_number(),
                "{} injected and recovered",
                f["name"]
            );
        }
    }
    let delay = &faults[0]["targets"][0]["effect"]["metrics"];
    let mean = delay["mean_added_delay_ms"].as_f64().expect("mean delay");
    assert!(
        (35.0..=45.0).contains(&mean),
        "delay 40 ms ± 10 jitter measured {mean:.2} ms"
    );
    assert!(
        r["steadyState"]["verdicts"]
            .as_array()
            .expect("verdicts")
            .iter()
            .all(|v| v["pass"] == true),
        "every probe passes every phase"
    );
    assert!(!netns_list().contains("havoc-demo"), "sandbox removed");
    assert!(
        demo_processes().is_empty(),
        "no demo process left: {:?}",
        demo_processes()
    );
    // report.json validates against its schema; report.html is well-formed XHTML with the fault
    // windows and probe series.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).expect("report.json"))
            .expect("json");
    havoc_report::validate(&json).expect("report.json matches its schema");
    let html = std::fs::read_to_string(reports.join("report.html")).expect("report.html");
    assert_eq!(
        html.matches("class=\"fault-window\"").count(),
        3,
        "one shaded window per fault target"
    );
    assert!(
        html.contains("data-probe=\"api-ok\""),
        "probe series present"
    );
}

#[test]
fn demo_keep_leaves_the_sandbox_and_remove_deletes_it() {
    if !root_or_skip("demo_keep_leaves_the_sandbox_and_remove_deletes_it") {
        return;
    }
    // Both demo tests use the same namespace names: run after the other test (tests in this
    // binary are serialized by this lock).
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = run_havoc(&self.0, &["demo", "--remove"]);
        }
    }
    let _cleanup = Remove(state.clone());
    let reports = dir.path().join("reports");
    let out = run_havoc(
        &state,
        &[
            "demo",
            "--keep",
            "--report-dir",
            reports.to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("havoc demo --remove"),
        "says how to remove it"
    );
    assert!(netns_list().contains("havoc-demo-server"), "sandbox kept");
    assert_eq!(
        demo_processes().len(),
        2,
        "the service and its client keep running"
    );
    let out = run_havoc(&state, &["demo", "--remove"]);
    assert!(out.status.success());
    assert!(!netns_list().contains("havoc-demo"), "sandbox removed");
    assert!(
        wait_until(std::time::Duration::from_secs(2), || demo_processes()
            .is_empty()),
        "no demo process left: {:?}",
        demo_processes()
    );
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
