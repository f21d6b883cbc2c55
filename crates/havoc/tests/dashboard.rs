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
