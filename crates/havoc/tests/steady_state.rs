//! Steady-state probes around real faults: a healthy run passes every phase; a probe breach
//! during chaos aborts the run and recovers every fault within a generous bound.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A tiny HTTP server on 127.0.0.1 answering 200, or 500 while `fail` is set. Stops on drop.
struct Server {
    port: u16,
    fail: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let (fail, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (f, s) = (fail.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !s.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let status = if f.load(Ordering::SeqCst) {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        let _ = c.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            port,
            fail,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn experiment(pid: i32, port: u16, pause: &str) -> String {
    format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: steady }}\nspec:\n  steadyState:\n    baseline: 600ms\n    recovery: 3s\n    probes:\n      - name: api-ok\n        http: {{ url: \"http://127.0.0.1:{port}/health\", timeout: 500ms, expectStatus: [200] }}\n        interval: 100ms\n        tolerance: {{ successRatio: \">= 0.9\", latencyP99: \"<= 400ms\" }}\n      - name: port-open\n        tcp: {{ address: \"127.0.0.1:{port}\" }}\n        interval: 200ms\n      - name: cmd-ok\n        cmd: {{ argv: [\"/bin/echo\", \"7\"], expect: {{ exitCode: 0, stdoutMatches: \"^[0-9]+$\", value: \"<= 10\" }} }}\n        interval: 300ms\n  abort:\n    when: [api-ok]\n    within: 1s\n  faults:\n    - name: pause-it\n      kind: ProcessChaos\n      action: pause\n      duration: {pause}\n      selector: {{ pids: [{pid}] }}\n"
    )
}

#[test]
fn a_healthy_run_passes_every_phase() {
    if !root_or_skip("a_healthy_run_passes_every_phase") {
        return;
    }
    let server = Server::start();
    let target = Reaped::sleeper();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ok.yaml",
        &experiment(target.pid(), server.port, "1s"),
    );
    let out = run_havoc(
        &dir.path().join("state"),
        &["run", file.to_str().expect("utf8"), "--output", "json"],
    );
    assert!(
        out.status.success(),
        "exit 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["verdict"], "completed");
    let verdicts = r["steadyState"]["verdicts"].as_array().expect("verdicts");
    for phase in ["baseline", "chaos", "recovery"] {
        let v = verdicts
            .iter()
            .find(|v| v["probe"] == "api-ok" && v["phase"] == phase)
            .expect("api-ok verdict per phase");
        assert_eq!(v["pass"], true, "{v}");
        assert!(v["samples"].as_u64().expect("samples") >= 1, "{v}");
    }
    assert!(verdicts
        .iter()
        .any(|v| v["probe"] == "cmd-ok" && v["pass"] == true));
    assert!(verdicts
        .iter()
        .any(|v| v["probe"] == "port-open" && v["pass"] == true));
    // The report is always written (default: the state directory) and matches its schema.
    havoc_report::validate(&r).expect("--output json matches the report schema");
    let dir = dir
        .path()
        .join("state")
        .join("reports")
        .join(r["runId"].as_str().expect("run id"));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
            .expect("json");
    assert_eq!(on_disk, r, "report.json is the run report");
    assert!(std::fs::read_to_string(dir.join("report.html"))
        .expect("report.html")
        .contains("class=\"probe-series\""));
}

#[test]
fn a_breach_during_chaos_aborts_and_recovers_within_a_second() {
    if !root_or_skip("a_breach_during_chaos_aborts_and_recovers_within_a_second") {
        return;
    }
    let server = Server::start();
    let target = Reaped::sleeper();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "abort.yaml",
        &experiment(target.pid(), server.port, "30s"),
    );
    let child = havoc_run(&dir.path().join("state"), &file, true)
        .spawn()
        .expect("spawn");
    assert!(
        wait_until(Duration::from_secs(10), || state(target.pid()) == Some('T')),
        "paused during chaos"
    );
    let broke = Instant::now();
    server.fail.store(true, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(5), || state(target.pid()) != Some('T')),
        "resumed after the breach"
    );
    let resumed_after = broke.elapsed();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(4), "exit code 4 = aborted");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["verdict"], "aborted");
    havoc_report::validate(&r).expect("an aborted run's report matches the schema too");
    assert!(
        r["reason"].as_str().expect("reason").contains("api-ok"),
        "{}",
        r["reason"]
    );
    let ms = r["timing"]["abortToRecoveredMs"]
        .as_f64()
        .expect("abort latency");
    // Generous bounds here; the benchmark reports the precise number.
    assert!(
        ms < 1000.0,
        "recovered {ms:.1} ms after the breach was seen (abort.within 1s)"
    );
    assert!(
        resumed_after < Duration::from_secs(3),
        "target resumed {resumed_after:?} after the server broke"
    );
    eprintln!(
        "breach→recovered {ms:.1} ms (havoc), server broke→target resumed {resumed_after:?} (test)"
    );
}
