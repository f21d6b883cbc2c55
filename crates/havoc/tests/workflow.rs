//! Workflows and schedules through the binary, on real processes: the examples parse, wrong input
//! is refused with positions, serial order is kept (from the report's timestamps and the target's
//! state), a task's exit code picks its branch, a failing status check aborts and recovers, and
//! `havoc schedule` runs `@every` on time and skips an overlapping run under Forbid.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{havoc, root_or_skip, run_havoc, state, write, Reaped};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn report(dir: &Path) -> serde_json::Value {
    let bytes = std::fs::read(dir.join("report.json")).expect("report.json");
    serde_json::from_slice(&bytes).expect("report is JSON")
}

fn node<'a>(r: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    r["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["path"] == path)
        .unwrap_or_else(|| panic!("no node {path} in {r:#}"))
}

fn ms(n: &serde_json::Value, key: &str) -> u64 {
    n[key].as_u64().unwrap_or_else(|| panic!("{key} in {n}"))
}

#[test]
fn the_workflow_and_schedule_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let st = tempfile::tempdir().expect("state");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let cmd = if name.starts_with("workflow-") && name.ends_with(".yaml") {
            "run"
        } else if name.starts_with("schedule-") && name.ends_with(".yaml") {
            "schedule"
        } else {
            continue;
        };
        let out = run_havoc(st.path(), &[cmd, "--dry-run", p.to_str().expect("path")]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("dry run: nothing was run"),
            "{name}"
        );
        // `havoc validate` takes the same documents, with the same parsers.
        let out = run_havoc(st.path(), &["validate", p.to_str().expect("path")]);
        assert!(
            out.status.success(),
            "validate {name}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(if cmd == "run" {
                "ok (Workflow "
            } else {
                "ok (Schedule "
            }),
            "validate {name}: {}",
            text(&out.stdout)
        );
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "serial, parallel, status-check, custom-task, two schedules"
    );
}

#[test]
fn wrong_workflows_and_schedules_are_refused_with_positions() {
    let dir = tempfile::tempdir().expect("dir");
    let head = "apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entry: main\n  templates:\n";
    let cases: &[(&str, &str, &str)] = &[
        ("run", "  - {name: main, templateType: Serial, children: [gone]}\n", "bad.yaml:7:51: spec.templates[0].children[0]: no template is named `gone`"),
        ("run", "  - {name: main, templateType: Suspend}\n", "bad.yaml:7:5: spec.templates[0].deadline: is required"),
        ("run", "  - {name: main, templateType: Task, task: {command: [x]}, conditionalBranches: [{target: main, expression: 'exitCode == 0 and true'}]}\n", "`&&` in CEL"),
        ("run", "  - {name: main, templateType: Task, task: {container: {name: c, image: busybox}}}\n", "task.container runs a pod in Kubernetes"),
    ];
    for (cmd, body, want) in cases {
        let f = write(dir.path(), "bad.yaml", &format!("{head}{body}"));
        let out = run_havoc(dir.path(), &[cmd, "--dry-run", f.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{body}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(want),
            "{body}: want {want:?}, got {}",
            text(&out.stderr)
        );
        // The spec errors (not the host-only refusal) come from `validate` too.
        if !want.contains("Kubernetes") {
            let out = run_havoc(dir.path(), &["validate", f.to_str().expect("path")]);
            assert_eq!(out.status.code(), Some(2), "validate {body}");
            assert!(
                text(&out.stderr).contains(want),
                "validate {body}: {}",
                text(&out.stderr)
            );
        }
    }
    let f = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: s}\nspec:\n  schedule: '61 * * * *'\n  type: ProcessChaos\n  processChaos: {action: pause, selector: {pids: [1]}, duration: 1s}\n",
    );
    let out = run_havoc(
        dir.path(),
        &["schedule", "--dry-run", f.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("bad.yaml:5:13: spec.schedule: `61 * * * *` is not a cron schedule"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serial_pauses_run_one_after_the_other() {
    if !root_or_skip("serial_pauses_run_one_after_the_other") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "serial.yaml",
        &format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: serial}}\nspec:\n  entry: main\n  templates:\n  - {{name: main, templateType: Serial, children: [first, gap, second]}}\n  - {{name: first, templateType: ProcessChaos, deadline: 2s, processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 1s}}}}\n  - {{name: gap, templateType: Suspend, deadline: 500ms}}\n  - {{name: second, templateType: ProcessChaos, processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 1s}}}}\n"
        ),
    );
    let rd = dir.path().join("report");
    let mut child = Command::new(havoc())
        .args([
            "run",
            f.to_str().expect("path"),
            "--report-dir",
            rd.to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("havoc run");
    // Sample the target's state: stopped, running (the gap), stopped again.
    let t0 = Instant::now();
    let mut states = Vec::new();
    while t0.elapsed() < Duration::from_secs(15) {
        if let Some(s) = state(pid) {
            if states.last() != Some(&s) {
                states.push(s);
            }
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(status.success(), "{err}");
    assert_eq!(
        state(pid),
        Some('S'),
        "the sleeper runs again after the workflow"
    );
    let stops = states.iter().filter(|&&c| c == 'T').count();
    assert_eq!(stops, 2, "two separate pauses, not one merged: {states:?}");
    let r = report(&rd);
    assert_eq!(r["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["allRecovered"], true);
    let (first, gap, second) = (
        node(&r, "main/first"),
        node(&r, "main/gap"),
        node(&r, "main/second"),
    );
    assert!(
        ms(first, "finishedMs") <= ms(gap, "startedMs"),
        "first ends before the gap"
    );
    assert!(
        ms(gap, "finishedMs") <= ms(second, "startedMs"),
        "the gap ends before second"
    );
    let gap_len = ms(gap, "finishedMs") - ms(gap, "startedMs");
    assert!(
        (500..800).contains(&gap_len),
        "suspend lasted {gap_len} ms, want 500 ms (+300 ms tolerance)"
    );
    for n in [first, second] {
        let held = n["fault"]["faults"][0]["targets"][0]["holdSeconds"].as_f64();
        let total = ms(n, "finishedMs") - ms(n, "startedMs");
        assert!(
            (1000..2000).contains(&total),
            "a 1 s pause node took {total} ms ({held:?})"
        );
    }
}

#[test]
fn a_task_exit_code_picks_the_branch() {
    if !root_or_skip("a_task_exit_code_picks_the_branch") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "task.yaml",
        "apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {name: task}\nspec:\n  entry: probe\n  templates:\n  - name: probe\n    templateType: Task\n    task: {command: [sh, -c, 'echo degraded; exit 3']}\n    conditionalBranches:\n    - {target: zero, expression: 'exitCode == 0'}\n    - {target: three, expression: 'exitCode == 3 && stdout.contains(\"degraded\")'}\n  - {name: zero, templateType: Suspend, deadline: 100ms}\n  - {name: three, templateType: Suspend, deadline: 100ms}\n",
    );
    let rd = dir.path().join("report");
    let out = Command::new(havoc())
        .args([
            "run",
            f.to_str().expect("path"),
            "--report-dir",
            rd.to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("havoc run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&rd);
    let paths: Vec<&str> = r["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["probe", "probe/three"], "{r:#}");
    assert_eq!(node(&r, "probe")["exitCode"], 3);
    assert_eq!(node(&r, "probe")["stdout"], "degraded");
    assert_eq!(node(&r, "probe/three")["phase"], "Succeeded");
}

/// A tiny HTTP server on 127.0.0.1 that answers 200 to the first `healthy` requests, then 500.
fn server(healthy: usize) -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || {
        let served = AtomicUsize::new(0);
        let t0 = Instant::now();
        while !s2.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).expect("blocking");
                    c.set_read_timeout(Some(Duration::from_secs(1)))
                        .expect("timeout");
                    let mut line = String::new();
                    let mut rd = BufReader::new(c.try_clone().expect("clone"));
                    while rd.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                        line.clear();
                    }
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    let status = if n < healthy {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = write!(
                        c,
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        served.load(Ordering::SeqCst)
    });
    (port, stop, h)
}

#[test]
fn a_failing_status_check_aborts_and_recovers() {
    if !root_or_skip("a_failing_status_check_aborts_and_recovers") {
        return;
    }
    let (port, stop_server, server) = server(2);
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "check.yaml",
        &format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: check}}\nspec:\n  entry: main\n  templates:\n  - {{name: main, templateType: Parallel, children: [pause, health]}}\n  - {{name: pause, templateType: ProcessChaos, deadline: 30s, processChaos: {{action: pause, selector: {{pids: [{pid}]}}}}}}\n  - name: health\n    templateType: StatusCheck\n    abortWithStatusCheck: true\n    statusCheck: {{mode: Continuous, intervalSeconds: 1, failureThreshold: 2, http: {{url: 'http://127.0.0.1:{port}/', criteria: {{statusCode: '200'}}}}}}\n"
        ),
    );
    let rd = dir.path().join("report");
    let t0 = Instant::now();
    let out = Command::new(havoc())
        .args([
            "run",
            f.to_str().expect("path"),
            "--report-dir",
            rd.to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("havoc run");
    let took = t0.elapsed();
    stop_server.store(true, Ordering::SeqCst);
    let served = server.join().expect("server");
    assert_eq!(out.status.code(), Some(4), "aborted: {}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(10),
        "aborted after 2 ok + 2 failed checks (~4 s), not the 30 s deadline: {took:?}"
    );
    assert_eq!(state(pid), Some('S'), "the pause was recovered");
    assert!(
        (4..=5).contains(&served),
        "2 healthy + 2 failing probes (one more may race the abort): {served}"
    );
    let r = report(&rd);
    assert_eq!(r["phase"], "Aborted", "{r:#}");
    assert_eq!(r["allRecovered"], true);
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("status check `main/health` failed")),
        "{r:#}"
    );
    assert_eq!(node(&r, "main/health")["phase"], "Failed");
    assert_eq!(node(&r, "main/pause")["phase"], "Aborted");
    assert_eq!(
        node(&r, "main/health")["checks"].as_array().map(Vec::len),
        Some(4)
    );
}

/// Runs `havoc schedule` for `secs`, then SIGTERM; returns its stderr and exit status.
fn schedule_for(dir: &Path, body: &str, secs: f64) -> (String, std::process::ExitStatus) {
    let f = write(dir, "schedule.yaml", body);
    let mut child = Command::new(havoc())
        .args([
            "schedule",
            f.to_str().expect("path"),
            "--report-dir",
            dir.join("runs").to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("havoc schedule");
    std::thread::sleep(Duration::from_secs_f64(secs));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "havoc schedule did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    (err, status)
}

#[test]
fn every_two_seconds_runs_on_time_and_stops_cleanly() {
    if !root_or_skip("every_two_seconds_runs_on_time_and_stops_cleanly") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let (err, status) = schedule_for(
        dir.path(),
        &format!("apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: every}}\nspec:\n  schedule: '@every 2s'\n  historyLimit: 2\n  type: ProcessChaos\n  processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 300ms}}\n"),
        5.0,
    );
    assert!(status.success(), "{err}");
    let started = err.matches("ms after its time; report in").count();
    assert!(
        (2..=3).contains(&started),
        "@every 2s for 5 s: 2 runs (3 with rounding): {err}"
    );
    assert_eq!(
        err.matches("run finished: Succeeded").count(),
        started,
        "{err}"
    );
    assert_eq!(state(pid), Some('S'), "nothing left paused");
    let kept = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs")
        .count();
    assert_eq!(kept, 2.min(started), "historyLimit 2 keeps 2 runs' reports");
}

#[test]
fn sigterm_aborts_a_workflow_and_recovers() {
    if !root_or_skip("sigterm_aborts_a_workflow_and_recovers") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "long.yaml",
        &format!("apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: long}}\nspec:\n  entry: main\n  templates:\n  - {{name: main, templateType: Serial, children: [pause, after]}}\n  - {{name: pause, templateType: ProcessChaos, deadline: 60s, processChaos: {{action: pause, selector: {{pids: [{pid}]}}}}}}\n  - {{name: after, templateType: Suspend, deadline: 1s}}\n"),
    );
    let rd = dir.path().join("report");
    let mut child = Command::new(havoc())
        .args([
            "run",
            f.to_str().expect("path"),
            "--report-dir",
            rd.to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("havoc run");
    assert!(
        common::wait_until(Duration::from_secs(10), || state(pid) == Some('T')),
        "the pause is in effect"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "havoc run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(state(pid), Some('S'), "the pause was recovered");
    let r = report(&rd);
    assert_eq!(r["phase"], "Aborted", "{r:#}");
    assert_eq!(node(&r, "main/pause")["phase"], "Aborted");
    assert_eq!(node(&r, "main/after")["phase"], "Skipped");
    assert_eq!(r["allRecovered"], true);
}

#[test]
fn a_schedule_node_runs_until_its_deadline() {
    if !root_or_skip("a_schedule_node_runs_until_its_deadline") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "sched.yaml",
        &format!("apiVersion: havoc.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: sched}}\nspec:\n  entry: tick\n  templates:\n  - name: tick\n    templateType: Schedule\n    deadline: 2500ms\n    schedule: {{schedule: '@every 1s', historyLimit: 5, type: ProcessChaos, processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 200ms}}}}\n"),
    );
    let rd = dir.path().join("report");
    let out = Command::new(havoc())
        .args([
            "run",
            f.to_str().expect("path"),
            "--report-dir",
            rd.to_str().expect("path"),
        ])
        .env("HAVOC_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("havoc run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&rd);
    let tick = node(&r, "tick");
    assert_eq!(tick["phase"], "DeadlineExceeded", "{r:#}");
    assert_eq!(
        tick["runs"].as_array().map(Vec::len),
        Some(2),
        "@every 1s for 2.5 s: {r:#}"
    );
    assert_eq!(state(pid), Some('S'));
}

#[test]
fn forbid_skips_a_run_while_one_runs_and_sigterm_recovers() {
    if !root_or_skip("forbid_skips_a_run_while_one_runs_and_sigterm_recovers") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let (err, status) = schedule_for(
        dir.path(),
        &format!("apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: forbid}}\nspec:\n  schedule: '@every 1s'\n  type: ProcessChaos\n  processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 10s}}\n"),
        3.5,
    );
    assert!(status.success(), "{err}");
    assert_eq!(
        err.matches("ms after its time; report in").count(),
        1,
        "one run holds the pause: {err}"
    );
    assert!(
        err.matches("(concurrencyPolicy Forbid)").count() >= 2,
        "the next starts are skipped: {err}"
    );
    assert_eq!(state(pid), Some('S'), "SIGTERM recovered the running pause");
}

#[test]
fn kill_9_of_a_schedule_mid_run_leaves_nothing_paused() {
    if !root_or_skip("kill_9_of_a_schedule_mid_run_leaves_nothing_paused") {
        return;
    }
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let dir = tempfile::tempdir().expect("dir");
    let f = write(
        dir.path(),
        "schedule.yaml",
        &format!("apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: killed}}\nspec:\n  schedule: '@every 1s'\n  type: ProcessChaos\n  processChaos: {{action: pause, selector: {{pids: [{pid}]}}, duration: 60s}}\n"),
    );
    let mut child = Reaped::spawn(
        Command::new(havoc())
            .args(["schedule", f.to_str().expect("path")])
            .env("HAVOC_STATE_DIR", dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || state(pid) == Some('T')),
        "the scheduled pause is in effect"
    );
    child.0.kill().expect("SIGKILL havoc schedule");
    child.0.wait().expect("reap");
    // The run's watchdog (one per fault, as for `havoc run`) resumes the target.
    let t0 = Instant::now();
    assert!(
        common::wait_until(Duration::from_secs(5), || state(pid) == Some('S')),
        "still paused after the holder died"
    );
    eprintln!("resumed {:?} after SIGKILL", t0.elapsed());
}
