//! ProcessChaos and StressChaos against real processes, through the real `havoc` binary.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn pause_experiment(pid: i32, duration: &str) -> String {
    format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: pause-test }}\nspec:\n  duration: {duration}\n  faults:\n    - name: pause-it\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{pid}] }}\n"
    )
}

#[test]
fn pause_stops_the_target_during_the_fault_and_resumes_it_after() {
    if !root_or_skip("pause_stops_the_target_during_the_fault_and_resumes_it_after") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    let file = write(
        dir.path(),
        "pause.yaml",
        &pause_experiment(target.pid(), "2s"),
    );
    let child = havoc_run(&dir.path().join("state"), &file, true)
        .spawn()
        .expect("spawn havoc run");
    assert!(
        wait_until(Duration::from_secs(5), || state(target.pid()) == Some('T')),
        "target is stopped (T) during the fault"
    );
    let out = child.wait_with_output().expect("havoc run finishes");
    assert!(out.status.success(), "havoc run exits 0");
    let st = state(target.pid()).expect("target alive");
    assert_ne!(st, 'T', "target runs again after the fault");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["verdict"], "completed");
    let t = &report["faults"][0]["targets"][0];
    let paused = t["effect"]["metrics"]["paused_seconds"]
        .as_f64()
        .expect("paused_seconds");
    assert!(
        (1.9..=2.5).contains(&paused),
        "paused about 2 s, got {paused}"
    );
    assert_eq!(
        t["effect"]["metrics"]["signals_delivered"].as_f64(),
        Some(2.0),
        "SIGSTOP + SIGCONT"
    );
    assert!(report["allRecovered"].as_bool().expect("bool"));
}

#[test]
fn kill_dash_nine_of_havoc_during_a_pause_resumes_the_target_and_stops_workers() {
    if !root_or_skip("kill_dash_nine_of_havoc_during_a_pause_resumes_the_target_and_stops_workers")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    let pid = target.pid();
    // A unique duration makes the workers' deadline argument a marker we can find them by.
    let exp = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: kill9-test }}\nspec:\n  duration: 61237ms\n  faults:\n    - name: pause-it\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{pid}] }}\n    - name: burn\n      kind: StressChaos\n      selector: {{ pids: [{pid}] }}\n      stressors:\n        cpu: {{ workers: 2, load: 20 }}\n        memory: {{ workers: 1, size: 16MiB }}\n"
    );
    let marker = "91237"; // 61237 ms + 30 s grace
    let file = write(dir.path(), "kill9.yaml", &exp);
    let state_dir = dir.path().join("state");
    let mut child = Reaped::spawn(&mut havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(10), || state(pid) == Some('T')
            && workers_with(marker).len() == 3),
        "target paused and 3 workers running"
    );
    let killed_at = Instant::now();
    child.0.kill().expect("SIGKILL havoc run");
    child.0.wait().expect("reap havoc run");
    assert!(
        wait_until(Duration::from_secs(2), || state(pid)
            .is_some_and(|s| s != 'T')),
        "target running again within 2 s of SIGKILL"
    );
    assert!(
        wait_until(Duration::from_secs(2), || workers_with(marker).is_empty()),
        "no stress worker survives"
    );
    eprintln!(
        "target resumed and workers gone {:?} after SIGKILL",
        killed_at.elapsed()
    );
    // The watchdog replayed and removed the journal.
    assert!(
        wait_until(Duration::from_secs(2), || std::fs::read_dir(
            state_dir.join("runs")
        )
        .map(|d| d
            .flatten()
            .all(|e| !e.path().to_string_lossy().ends_with(".json")))
        .unwrap_or(true)),
        "journal replayed and removed"
    );
    // The watchdog also wrote the report of the dead run.
    let reports: Vec<_> = std::fs::read_dir(state_dir.join("reports"))
        .expect("reports dir")
        .flatten()
        .collect();
    assert_eq!(reports.len(), 1, "one report directory");
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(reports[0].path().join("report.json")).expect("crash report.json"),
    )
    .expect("json");
    havoc_report::validate(&r).expect("the crash report matches the schema");
    assert_eq!(r["verdict"], "interrupted");
    assert!(
        r["reason"].as_str().expect("reason").contains("watchdog"),
        "{}",
        r["reason"]
    );
    assert!(reports[0].path().join("report.html").exists());
    let out = run_havoc(&state_dir, &["recover"]);
    assert!(
        out.status.success(),
        "recover finds nothing left: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stress_experiment(pid: i32, stressors: &str, duration: &str) -> String {
    format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: stress-test }}\nspec:\n  duration: {duration}\n  faults:\n    - name: burn\n      kind: StressChaos\n      selector: {{ pids: [{pid}] }}\n      stressors:\n{stressors}"
    )
}

fn run_json(dir: &std::path::Path, exp: &str) -> serde_json::Value {
    let file = write(dir, "exp.yaml", exp);
    let out = run_havoc(
        &dir.join("state"),
        &["run", file.to_str().expect("utf8"), "--output", "json"],
    );
    assert!(
        out.status.success(),
        "havoc run succeeds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

#[test]
fn cpu_load_fifty_percent_is_within_five_points() {
    if !root_or_skip("cpu_load_fifty_percent_is_within_five_points") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    // Measured from the workers' own CPU time (utime+stime in /proc) over 10 s. Tolerance: ±5 points.
    let r = run_json(
        dir.path(),
        &stress_experiment(
            target.pid(),
            "        cpu: { workers: 1, load: 50 }\n",
            "10s",
        ),
    );
    let m = &r["faults"][0]["targets"][0]["effect"]["metrics"];
    let load = m["cpu_load_percent_per_worker"].as_f64().expect("load");
    assert!(
        (45.0..=55.0).contains(&load),
        "cpu load 50 % ± 5, got {load:.2}"
    );
}

#[test]
fn memory_held_is_within_two_percent_of_the_request() {
    if !root_or_skip("memory_held_is_within_two_percent_of_the_request") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    // Measured from the workers' RSS above their baseline. Tolerance: ±2 %.
    let r = run_json(
        dir.path(),
        &stress_experiment(
            target.pid(),
            "        memory: { workers: 2, size: 256MiB }\n",
            "3s",
        ),
    );
    let m = &r["faults"][0]["targets"][0]["effect"]["metrics"];
    let held = m["bytes_held"].as_f64().expect("bytes_held");
    let want = 256.0 * 1024.0 * 1024.0;
    assert!((held - want).abs() / want <= 0.02, "held {held} vs {want}");
}

#[test]
fn stress_workers_join_the_targets_cgroup_and_its_limit_applies() {
    if !root_or_skip("stress_workers_join_the_targets_cgroup_and_its_limit_applies") {
        return;
    }
    let cg = common_cgroup::MemCgroup::create(64 << 20);
    let Some(cg) = cg else {
        eprintln!(
            "SKIPPED: no writable memory cgroup hierarchy (v1 memory or v2 with memory controller)"
        );
        return;
    };
    let target = Reaped::sleeper();
    cg.add(target.pid());
    let dir = tempfile::tempdir().expect("tempdir");
    // 50 % of a 64 MiB limit: 32 MiB, within the limit.
    let r = run_json(
        dir.path(),
        &stress_experiment(
            target.pid(),
            "        memory: { workers: 1, size: \"50%\" }\n",
            "2s",
        ),
    );
    let m = &r["faults"][0]["targets"][0]["effect"]["metrics"];
    assert_eq!(
        m["bytes_requested"].as_f64(),
        Some((32u64 << 20) as f64),
        "50% of the cgroup limit"
    );
    assert!(
        cg.peak_usage() >= 30 << 20,
        "the worker's memory was charged to the target's cgroup"
    );
    // 200 MiB in a 64 MiB cgroup: the limit applies, the worker is OOM-killed and the report says so.
    let r = run_json(
        dir.path(),
        &stress_experiment(
            target.pid(),
            "        memory: { workers: 1, size: 200MiB }\n",
            "2s",
        ),
    );
    let summary = r["faults"][0]["targets"][0]["effect"]["summary"]
        .as_str()
        .expect("summary")
        .to_string();
    assert!(
        summary.contains("OOM") || summary.contains("SIGKILL"),
        "worker killed by the cgroup limit: {summary}"
    );
}

mod common_cgroup {
    use std::path::PathBuf;

    /// A uniquely named memory cgroup, removed on drop (after moving its processes out).
    pub struct MemCgroup {
        dir: PathBuf,
        v2: bool,
    }

    impl MemCgroup {
        pub fn create(limit: u64) -> Option<MemCgroup> {
            let name = format!("havoc-test-{}-{}", std::process::id(), rand_suffix());
            let v1 = PathBuf::from("/sys/fs/cgroup/memory");
            let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
                (v1.join(&name), false)
            } else if std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("memory"))
            {
                (PathBuf::from("/sys/fs/cgroup").join(&name), true)
            } else {
                return None;
            };
            std::fs::create_dir(&dir).ok()?;
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            std::fs::write(dir.join(file), limit.to_string()).ok()?;
            Some(MemCgroup { dir, v2 })
        }

        pub fn add(&self, pid: i32) {
            std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("join cgroup");
        }

        pub fn peak_usage(&self) -> u64 {
            let f = if self.v2 {
                "memory.peak"
            } else {
                "memory.max_usage_in_bytes"
            };
            std::fs::read_to_string(self.dir.join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        }
    }

    fn rand_suffix() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    }

    impl Drop for MemCgroup {
        fn drop(&mut self) {
            let parent = self.dir.parent().expect("parent").join("cgroup.procs");
            if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(&parent, pid);
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&self.dir).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_missing_target_exits_3_and_injects_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "missing.yaml",
        &pause_experiment(i32::MAX - 3, "1s"),
    );
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", file.to_str().expect("utf8")],
    );
    if !root_or_skip("a_missing_target_exits_3_and_injects_nothing") {
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was injected"));
}

#[test]
fn protected_targets_are_refused() {
    if !root_or_skip("protected_targets_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "pid1.yaml", &pause_experiment(1, "1s"));
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", file.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PID 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Kernel threads (kthreadd is pid 2) are refused too.
    let file = write(dir.path(), "pid2.yaml", &pause_experiment(2, "1s"));
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", file.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kernel thread"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dry_run_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    let file = write(
        dir.path(),
        "dry.yaml",
        &pause_experiment(target.pid(), "5s"),
    );
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", "--dry-run", file.to_str().expect("utf8")],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("pid {}", target.pid())),
        "{stdout}"
    );
    assert!(stdout.contains("nothing was injected"));
    assert_ne!(state(target.pid()), Some('T'));
    assert!(!dir.path().join("state").exists(), "no journal written");
}

#[test]
fn sigterm_of_havoc_run_recovers_before_exit() {
    if !root_or_skip("sigterm_of_havoc_run_recovers_before_exit") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Reaped::sleeper();
    let file = write(
        dir.path(),
        "term.yaml",
        &pause_experiment(target.pid(), "60s"),
    );
    let child = havoc_run(&dir.path().join("state"), &file, true)
        .spawn()
        .expect("spawn");
    assert!(wait_until(Duration::from_secs(5), || state(target.pid()) == Some('T')));
    {
        let sig = "-TERM";
        std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "interrupted exit code");
    assert_ne!(
        state(target.pid()),
        Some('T'),
        "resumed before havoc exited"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["verdict"], "interrupted");
    assert_eq!(report["allRecovered"], true);
}

#[test]
fn havoc_halt_from_another_terminal_recovers_within_a_second() {
    if !root_or_skip("havoc_halt_from_another_terminal_recovers_within_a_second") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let target = Reaped::sleeper();
    let file = write(
        dir.path(),
        "halt.yaml",
        &pause_experiment(target.pid(), "60s"),
    );
    let child = havoc_run(&state_dir, &file, true).spawn().expect("spawn");
    assert!(wait_until(Duration::from_secs(5), || state(target.pid()) == Some('T')));
    let t0 = Instant::now();
    let out = run_havoc(&state_dir, &["halt"]);
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(state(target.pid()), Some('T'), "resumed when halt returns");
    assert!(took < Duration::from_secs(1), "halt took {took:?}");
    let run = child.wait_with_output().expect("wait");
    assert_eq!(run.status.code(), Some(4), "the halted run reports aborted");
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(r["verdict"], "aborted");
    assert!(r["reason"].as_str().expect("reason").contains("havoc halt"));
    let out = run_havoc(&state_dir, &["halt"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no havoc run is active"));
}
