//! `havoc dashboard` end to end, as root: start an experiment from the API (a pause of a real
//! `sleep`), see it in effect over server-sent events, halt it, and find its report in the list.

mod common;
#[path = "../../havoc-dashboard/tests/common/mod.rs"]
mod http;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use std::time::{Duration, Instant};

use common::{root_or_skip, state, wait_until, Reaped};

/// `havoc dashboard` on a free port of 127.0.0.1; killed when dropped.
struct Dashboard {
    child: Reaped,
    addr: SocketAddr,
    token: String,
}

impl Dashboard {
    fn start(state_dir: &std::path::Path) -> Dashboard {
        let (child, addr) = common::spawn_dashboard(state_dir, &[]);
        let host = format!("127.0.0.1:{}", addr_port(addr));
        let page = http::request(addr, "GET", "/", &[("Host", &host)], b"");
        Dashboard {
            child,
            addr,
            token: http::token_of(&page.body),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", addr_port(self.addr))
    }

    fn get(&self, path: &str) -> http::Resp {
        http::request(self.addr, "GET", path, &[("Host", &self.host())], b"")
    }

    fn post(&self, path: &str, body: &str) -> http::Resp {
        let origin = format!("http://{}", self.host());
        http::request(
            self.addr,
            "POST",
            path,
            &[
                ("Host", &self.host()),
                ("Origin", &origin),
                ("X-Havoc-CSRF", &self.token),
            ],
            body.as_bytes(),
        )
    }
}

fn addr_port(a: SocketAddr) -> u16 {
    a.port()
}

/// Reads server-sent `state` events until one satisfies `f` (or the deadline passes).
fn sse_until(
    d: &Dashboard,
    timeout: Duration,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(d.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        d.host()
    )
    .expect("send");
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let mut seen = 0;
    while t0.elapsed() < timeout {
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading events: {e}"),
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let datas: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        for data in &datas[seen.min(datas.len())..] {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                if f(&v) {
                    return Some(v);
                }
            }
        }
        seen = datas.len();
    }
    None
}

#[test]
fn start_watch_and_halt_a_pause_from_the_dashboard() {
    if !root_or_skip("start_watch_and_halt_a_pause_from_the_dashboard") {
        return;
    }
    let state_dir = tempfile::tempdir().expect("state dir");
    let sleeper = Reaped::sleeper();
    let d = Dashboard::start(state_dir.path());
    let yaml = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: dash-pause }}\nspec:\n  duration: 60s\n  faults:\n    - name: pause-sleep\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n",
        sleeper.pid()
    );
    // Invalid YAML is refused with its positioned problems; nothing starts.
    let bad = d.post("/api/runs", "kind: Experiment\nspec: 3\n");
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.json()["errors"][0]["line"].as_u64().is_some());

    let started = d.post("/api/runs", &yaml);
    assert_eq!(started.status, 201, "{}", started.body);
    let job = started.json()["job"].clone();
    let id = job["id"].as_str().expect("job id").to_string();

    // Live: the run shows up with the pause in effect on our sleep.
    let label = format!("pid {}", sleeper.pid());
    let live = sse_until(&d, Duration::from_secs(15), |v| {
        v["active"].as_array().is_some_and(|a| {
            a.iter().any(|r| {
                r["reportKey"] == id.as_str()
                    && r["inEffect"].as_array().is_some_and(|e| {
                        e.iter().any(|f| {
                            f["fault"] == "pause-sleep"
                                && f["target"].as_str().unwrap_or("").contains(&label)
                        })
                    })
            })
        })
    });
    let job_dir = state_dir.path().join("dashboard").join(&id);
    assert!(
        live.is_some(),
        "the run never showed the pause in effect; output: {}",
        std::fs::read_to_string(job_dir.join("output.log")).unwrap_or_default()
    );
    assert_eq!(state(sleeper.pid()), Some('T'), "the sleep is not stopped");

    // Halt it (SIGUSR1 to the run, as `havoc halt`): it recovers and reports `aborted`.
    let t0 = Instant::now();
    let halted = d.post(&format!("/api/runs/{id}/halt"), "");
    assert_eq!(halted.status, 200, "{}", halted.body);
    let mut report = serde_json::Value::Null;
    let appeared = wait_until(Duration::from_secs(15), || {
        let runs = d.get("/api/runs?verdict=aborted").json();
        match runs["runs"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["key"] == id.as_str()))
        {
            Some(r) => {
                report = r.clone();
                true
            }
            None => false,
        }
    });
    assert!(
        appeared,
        "no aborted report for {id}; output: {}",
        std::fs::read_to_string(job_dir.join("output.log")).unwrap_or_default()
    );
    eprintln!(
        "halt to report listed: {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(report["allRecovered"], true, "{report}");
    assert_ne!(
        state(sleeper.pid()),
        Some('T'),
        "the sleep is still stopped after the halt"
    );
    let page = d.get(&format!("/runs/{id}"));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&label),
        "the report page does not name the target"
    );
    // The run is over: nothing left in progress, and the job knows its exit code (4, aborted).
    assert!(wait_until(Duration::from_secs(5), || {
        let a = d.get("/api/active").json();
        a["active"].as_array().is_some_and(|a| a.is_empty())
            && a["jobs"][0]["exitCode"].as_i64().is_some()
    }));
    drop(d.child);
}

#[test]
fn halt_all_stops_every_run_started_from_the_dashboard() {
    if !root_or_skip("halt_all_stops_every_run_started_from_the_dashboard") {
        return;
    }
    let state_dir = tempfile::tempdir().expect("state dir");
    let sleepers = [Reaped::sleeper(), Reaped::sleeper()];
    let d = Dashboard::start(state_dir.path());
    let mut ids = Vec::new();
    for (i, s) in sleepers.iter().enumerate() {
        let yaml = format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: dash-all-{i} }}\nspec:\n  duration: 60s\n  faults:\n    - name: pause-{i}\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n",
            s.pid()
        );
        let r = d.post("/api/runs", &yaml);
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["job"]["id"].as_str().expect("id").to_string());
    }
    assert!(
        wait_until(Duration::from_secs(15), || sleepers
            .iter()
            .all(|s| state(s.pid()) == Some('T'))),
        "both sleeps should be paused"
    );
    // Both journals are live before halting, so both runs have their signal handlers.
    assert!(wait_until(Duration::from_secs(5), || d
        .get("/api/active")
        .json()["active"]
        .as_array()
        .is_some_and(|a| a.len() == 2)));
    let r = d.post("/api/halt", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["halted"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            let runs = d.get("/api/runs?verdict=aborted").json();
            ids.iter().all(|id| {
                runs["runs"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["key"] == id.as_str()))
            })
        }),
        "both runs should report aborted"
    );
    for s in &sleepers {
        assert_ne!(state(s.pid()), Some('T'), "pid {} still stopped", s.pid());
    }
}

/// A tiny HTTP server on 127.0.0.1 answering 200 (the probe's sandbox). Stops on drop.
struct Health {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Health {
    fn start() -> Health {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !s.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Health {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn live_streams(state_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(state_dir.join("runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".live.jsonl"))
                .collect()
        })
        .unwrap_or_default()
}

/// How far a live time may be from the report's: both are the same measurement (the same
/// instant, from the same origin), so only JSON's rendering of a float may differ.
const SAME_TIME: f64 = 0.001;

#[test]
fn a_running_run_streams_phase_measured_windows_and_probe_samples_that_match_its_report() {
    if !root_or_skip(
        "a_running_run_streams_phase_measured_windows_and_probe_samples_that_match_its_report",
    ) {
        return;
    }
    let state_dir = tempfile::tempdir().expect("state dir");
    let health = Health::start();
    let sleeper = Reaped::sleeper();
    let d = Dashboard::start(state_dir.path());
    let yaml = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: dash-live }}\nspec:\n  steadyState:\n    baseline: 600ms\n    recovery: 2s\n    probes:\n      - name: api\n        http: {{ url: \"http://127.0.0.1:{}/health\", timeout: 500ms, expectStatus: [200] }}\n        interval: 100ms\n  faults:\n    - name: pause-sleep\n      kind: ProcessChaos\n      action: pause\n      duration: 3s\n      selector: {{ pids: [{}] }}\n",
        health.port,
        sleeper.pid()
    );
    let started = d.post("/api/runs", &yaml);
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.json()["job"]["id"]
        .as_str()
        .expect("job id")
        .to_string();
    let job_dir = state_dir.path().join("dashboard").join(&id);
    let output = || std::fs::read_to_string(job_dir.join("output.log")).unwrap_or_default();

    // While it runs: the phase, the window opening with its measured start (the sleep really
    // stopped then), samples arriving; then the window closing with its measured end.
    let mut run_id = String::new();
    // Per run (a samples event may come before the first state that names the run).
    let mut streamed: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    let mut phases = Vec::new();
    let (mut start, mut end) = (None, None);
    let mut paused_while_open = false;
    let mut samples_while_open = 0;
    let done = http::sse_until(d.addr, &d.host(), Duration::from_secs(30), |name, v| {
        if name == "samples" && v["probe"] == "api" {
            let samples = streamed
                .entry(v["runId"].as_str().expect("run id").to_string())
                .or_default();
            assert_eq!(
                v["from"].as_u64(),
                Some(samples.len() as u64),
                "a gap in the samples"
            );
            samples.extend(v["samples"].as_array().expect("samples").iter().cloned());
        }
        if name != "state" {
            return false;
        }
        let Some(run) = v["active"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["reportKey"] == id.as_str()))
        else {
            return false;
        };
        run_id = run["runId"].as_str().expect("run id").to_string();
        let live = &run["live"];
        if let Some(p) = live["phase"].as_str() {
            if phases.last().map(String::as_str) != Some(p) {
                phases.push(p.to_string());
            }
        }
        let w = &live["windows"][0];
        if w["fault"] == "pause-sleep" {
            start = w["start"].as_f64();
            if w["end"].is_null() {
                paused_while_open |= state(sleeper.pid()) == Some('T');
                samples_while_open = streamed.get(&run_id).map_or(0, Vec::len);
            }
            end = w["end"].as_f64();
        }
        end.is_some() && phases.last().map(String::as_str) == Some("recovery")
    });
    assert!(
        done,
        "the stream never showed the window closing and the recovery phase (phases {phases:?}, start {start:?}, end {end:?}); output: {}",
        output()
    );
    assert_eq!(phases, ["baseline", "chaos", "recovery"]);
    assert!(
        paused_while_open,
        "the window was open while the sleep was not stopped"
    );
    assert!(
        samples_while_open >= 5,
        "{samples_while_open} samples by the time the window closed"
    );
    let (start, end) = (start.expect("start"), end.expect("end"));
    assert!(
        start >= 0.6 && (end - start - 3.0).abs() < 0.3,
        "window {start}..{end}"
    );

    // The report: the same window, and the samples the stream showed are the report's.
    assert!(
        wait_until(Duration::from_secs(20), || d
            .get(&format!("/api/runs/{id}"))
            .status
            == 200),
        "no report; output: {}",
        output()
    );
    let report = d.get(&format!("/api/runs/{id}")).json();
    assert_eq!(report["runId"], run_id.as_str());
    assert_eq!(report["verdict"], "completed", "{report}");
    let t = &report["faults"][0]["targets"][0];
    let (rs, re) = (
        t["injectedAtSeconds"].as_f64().expect("injected"),
        t["recoveredAtSeconds"].as_f64().expect("recovered"),
    );
    assert!(
        (rs - start).abs() <= SAME_TIME && (re - end).abs() <= SAME_TIME,
        "live window {start}..{end}, report {rs}..{re}"
    );
    let samples = streamed.remove(&run_id).unwrap_or_default();
    let series = report["steadyState"]["probes"][0]["samples"]
        .as_array()
        .expect("report samples");
    assert!(samples.len() >= 20, "{} samples streamed", samples.len());
    assert!(samples.len() <= series.len());
    eprintln!(
        "live window {start:.6}..{end:.6} s, report {rs:.6}..{re:.6} s; {} samples streamed, {} in the report",
        samples.len(),
        series.len()
    );
    for (live, rep) in samples.iter().zip(series) {
        let (lt, rt) = (
            live["t"].as_f64().expect("t"),
            rep["tSeconds"].as_f64().expect("t"),
        );
        assert!((lt - rt).abs() <= SAME_TIME, "sample at {lt} vs {rt}");
        assert_eq!(live["ok"], rep["ok"]);
        assert_eq!(live["phase"], rep["phase"]);
    }
    // The report is the record now: the stream is gone, and nothing is in progress.
    assert!(wait_until(Duration::from_secs(5), || live_streams(
        state_dir.path()
    )
    .is_empty()));
    assert_eq!(d.get(&format!("/api/live/{run_id}")).status, 404);
}

#[test]
fn a_killed_runs_live_stream_is_removed_by_havoc_recover() {
    if !root_or_skip("a_killed_runs_live_stream_is_removed_by_havoc_recover") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let sleeper = Reaped::sleeper();
    let file = common::write(
        dir.path(),
        "kill.yaml",
        &format!(
            "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: killed }}\nspec:\n  faults:\n    - name: pause-sleep\n      kind: ProcessChaos\n      action: pause\n      duration: 60s\n      selector: {{ pids: [{}] }}\n",
            sleeper.pid()
        ),
    );
    let mut run = Reaped::spawn(&mut common::havoc_run(&state_dir, &file, false));
    assert!(
        wait_until(Duration::from_secs(10), || state(sleeper.pid())
            == Some('T')
            && !live_streams(&state_dir).is_empty()),
        "the run never paused the sleep with its stream written"
    );
    run.0.kill().expect("SIGKILL the run");
    let _ = run.0.wait();
    // Its watchdog undoes the pause; the stream, a view of a run that is gone, stays until
    // someone sweeps.
    assert!(wait_until(Duration::from_secs(10), || state(sleeper.pid())
        != Some('T')));
    let left = live_streams(&state_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    let out = common::run_havoc(&state_dir, &["recover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        live_streams(&state_dir).is_empty(),
        "havoc recover left {left:?}"
    );
}
