//! The dashboard's HTTP API and pages, against the real server on 127.0.0.1.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{request, sse_until, write_report, Server};
use havoc_dashboard::live::{self, Record, SampleRecord};

fn server_with_reports() -> Server {
    let state = tempfile::tempdir().expect("tempdir");
    write_report(state.path(), "run-a", "completed", 1_000);
    write_report(state.path(), "run-b", "deviated", 3_000);
    write_report(state.path(), "run-c", "completed", 2_000);
    // A run in progress: its report directory exists, its report not yet.
    std::fs::create_dir_all(state.path().join("reports/run-d")).expect("mkdir");
    Server::start(state, "/nonexistent/havoc".into())
}

#[test]
fn lists_every_report_newest_first_and_filters_by_verdict() {
    let s = server_with_reports();
    let all = s.get("/api/runs");
    assert_eq!(all.status, 200, "{}", all.body);
    let v = all.json();
    let keys: Vec<&str> = v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["run-b", "run-c", "run-a"]);
    assert_eq!(v["total"], 3);
    assert_eq!(v["runs"][0]["experiment"], "fixture");
    assert_eq!(v["runs"][0]["faults"], 2);

    let completed = s.get("/api/runs?verdict=completed").json();
    let keys: Vec<&str> = completed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["run-c", "run-a"]);
    assert_eq!(completed["total"], 3);

    let bad = s.get("/api/runs?verdict=exploded");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .expect("error")
        .contains("completed"));
}

#[test]
fn report_page_is_the_rendered_report_and_keys_cannot_escape() {
    let s = server_with_reports();
    let page = s.get("/runs/run-b");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("text/html"), "{}", page.head);
    assert!(page.body.contains("Timeline"), "no timeline");
    assert!(page.body.contains("<svg"), "no chart");
    assert!(
        page.body.contains("Requested"),
        "no requested-vs-measured table"
    );
    assert!(page.body.contains("pid 6978 (sleep)"));
    assert!(
        page.body.contains(r#"<a href="/">"#),
        "no way back to the list"
    );
    assert_eq!(s.get("/api/runs/run-b").json()["verdict"], "deviated");
    for bad in [
        "/runs/run-d",
        "/runs/nope",
        "/runs/..",
        "/runs/%2e%2e",
        "/runs/..%2Freports",
    ] {
        assert_eq!(s.get(bad).status, 404, "{bad}");
    }
}

#[test]
fn index_embeds_the_token_and_loads_nothing_from_elsewhere() {
    let s = server_with_reports();
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(s.token.len(), 32);
    assert!(s.token.bytes().all(|b| b.is_ascii_hexdigit()));
    for asset in ["/", "/assets/app.js", "/assets/app.css"] {
        // The SVG namespace is a name, not an address anything is fetched from.
        let body = s
            .get(asset)
            .body
            .replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{asset} refers to another site"
        );
    }
    assert_eq!(s.get("/assets/app.js").status, 200);
    for path in ["/", "/runs/run-a"] {
        let head = s.get(path).head.to_ascii_lowercase();
        assert!(head.contains("frame-ancestors 'none'"), "{path}: {head}");
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
    }
}

#[test]
fn validate_returns_positioned_errors_as_havoc_validate_does() {
    let s = server_with_reports();
    let yaml = "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: { name: x }\nspec:\n  duration: 30s\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: { pids: [1] , mode: one }\n      duration: 10parsecs\n";
    let r = s.post("/api/validate", yaml);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["valid"], false);
    let errs = v["errors"].as_array().expect("errors");
    assert!(!errs.is_empty());
    // The same problems, at the same places, as the spec code reports for `havoc validate`.
    let expected = havoc_spec::parse_experiment(yaml).expect_err("invalid");
    assert_eq!(errs.len(), expected.len());
    for (got, want) in errs.iter().zip(expected.iter()) {
        assert_eq!(got["line"], want.pos.line);
        assert_eq!(got["col"], want.pos.col);
        assert_eq!(got["message"], want.message.as_str());
    }
    let dur = errs
        .iter()
        .find(|e| e["path"].as_str().unwrap_or("").ends_with("duration"))
        .unwrap_or_else(|| panic!("no error on the duration: {errs:?}"));
    assert_eq!(dur["line"], 11);
    assert_eq!(dur["col"], 17);

    let ok = s
        .post("/api/validate", &yaml.replace("10parsecs", "10s"))
        .json();
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["faults"][0]["kind"], "ProcessChaos");

    // Not UTF-8: positioned too.
    let r = request(
        s.addr,
        "POST",
        "/api/validate",
        &[("Host", &s.host()), ("X-Havoc-CSRF", &s.token)],
        b"kind: Experiment\nmetadata: \xff\n",
    );
    let v = r.json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 2);
}

#[test]
fn plan_previews_targets_without_touching_them() {
    let s = server_with_reports();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let yaml = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: preview }}\nspec:\n  duration: 5s\n  faults:\n    - name: p\n      kind: ProcessChaos\n      action: pause\n      selector: {{ pids: [{}] }}\n",
        sleeper.id()
    );
    let v = s.post("/api/plan", &yaml).json();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["root"], havoc_dashboard::is_root());
    let plan = v["plan"].as_str().unwrap_or_else(|| panic!("no plan: {v}"));
    assert!(plan.contains(&format!("pid {}", sleeper.id())), "{plan}");
    assert_eq!(v["note"].is_null(), havoc_dashboard::is_root());
}

#[test]
fn cross_site_and_rebound_requests_are_refused() {
    let s = server_with_reports();
    let host = s.host();
    let yaml = "kind: Experiment\n";
    // No token (a cross-site form post): refused, and nothing is started.
    for path in [
        "/api/runs",
        "/api/halt",
        "/api/validate",
        "/api/runs/x/halt",
    ] {
        let r = request(
            s.addr,
            "POST",
            path,
            &[("Host", &host), ("Origin", "https://evil.example")],
            yaml.as_bytes(),
        );
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        let r = request(s.addr, "POST", path, &[("Host", &host)], yaml.as_bytes());
        assert_eq!(r.status, 403, "{path} without Origin: {}", r.body);
    }
    // A wrong token.
    let r = request(
        s.addr,
        "POST",
        "/api/halt",
        &[
            ("Host", &host),
            ("X-Havoc-CSRF", "0123456789abcdef0123456789abcdef"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    // The right token from another origin.
    let r = request(
        s.addr,
        "POST",
        "/api/halt",
        &[
            ("Host", &host),
            ("X-Havoc-CSRF", &s.token),
            ("Origin", "http://evil.example"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]
        .as_str()
        .expect("error")
        .contains("evil.example"));
    // DNS rebinding: another name for 127.0.0.1 cannot even read the page (and its token).
    let r = request(
        s.addr,
        "GET",
        "/",
        &[("Host", &format!("evil.example:{}", s.addr.port()))],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(!r.body.contains(&s.token));
    let r = request(s.addr, "GET", "/api/runs", &[], b"");
    assert_eq!(r.status, 403, "no Host");
    // The page's own request passes (and localhost is the same dashboard).
    assert_eq!(s.post("/api/halt", "").status, 200);
    let r = request(
        s.addr,
        "GET",
        "/",
        &[("Host", &format!("localhost:{}", s.addr.port()))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(
        std::fs::read_dir(s.state.path())
            .expect("state")
            .all(|e| e.expect("entry").file_name() != "dashboard"),
        "a refused request started something"
    );
}

fn sample(t: f64, ok: bool) -> Record {
    Record::Sample(SampleRecord {
        probe: "api".into(),
        t,
        phase: "chaos".into(),
        ok,
        latency_ms: 1.5 + t,
        value: None,
        error: (!ok).then(|| "HTTP 500".into()),
    })
}

/// A live stream as `havoc run` writes it, owned by this (live) test process.
fn live_stream(state: &std::path::Path, run_id: &str) -> live::Writer {
    let pid = std::process::id() as i32;
    let start = havoc_faults::procinfo::ProcInfo::read(pid)
        .expect("own /proc entry")
        .start_time;
    let mut w = live::Writer::create(
        state,
        live::RunHeader {
            run_id: run_id.into(),
            experiment: "live-exp".into(),
            pid,
            pid_start_time: start,
            started_at_unix_ms: 1_000,
            report_dir: Some(state.join("reports").join("live-key")),
            baseline_seconds: 0.5,
            length_seconds: 3.5,
            sample_cap: live::MAX_SAMPLES_PER_PROBE,
            faults: vec![live::PlannedFault {
                name: "pause".into(),
                kind: "ProcessChaos".into(),
                requested: "pause".into(),
                start_seconds: 0.5,
                duration_seconds: 3.0,
                targets: vec!["pid 7 (sleep)".into()],
            }],
            probes: vec![live::ProbeInfo {
                name: "api".into(),
                kind: "http".into(),
                interval_ms: 100.0,
            }],
        },
    )
    .expect("create the live stream");
    w.write(&Record::Phase {
        phase: "chaos".into(),
        at: 0.5,
    });
    w.write(&Record::InEffect {
        fault: "pause".into(),
        target: "pid 7 (sleep)".into(),
        at: 0.512,
        effect: "stopped".into(),
    });
    w.write(&sample(0.6, true));
    w.write(&sample(0.7, false));
    w
}

#[test]
fn live_streams_are_served_whole_and_streamed_as_samples_and_state() {
    let state = tempfile::tempdir().expect("tempdir");
    let w = live_stream(state.path(), "live-1");
    // The writer is mid-line: the half line must wait, not break the view.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path())
        .expect("open");
    f.write_all(br#"{"type":"sample","probe":"api","t":0.8,"pha"#)
        .expect("half a line");
    let s = Server::start(state, "/nonexistent/havoc".into());

    let a = s.get("/api/active");
    assert_eq!(a.status, 200, "{}", a.body);
    let a = a.json();
    let run = &a["active"][0];
    assert_eq!(run["runId"], "live-1", "{a}");
    assert_eq!(run["reportKey"], "live-key", "{a}");
    assert_eq!(run["live"]["phase"], "chaos");
    assert_eq!(run["live"]["windows"][0]["start"], 0.512);
    assert!(run["live"]["windows"][0]["end"].is_null());
    assert_eq!(run["live"]["faults"][0]["durationSeconds"], 3.0);
    let p = &run["live"]["probeSamples"][0];
    assert_eq!(
        (p["sampleCount"].as_u64(), p["samples"][1]["ok"].as_bool()),
        (Some(2), Some(false)),
        "{p}"
    );
    assert_eq!(run["live"]["badLines"], 0);
    let one = s.get("/api/live/live-1");
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["ownerAlive"], true);
    assert_eq!(one.json()["probeSamples"][0]["samples"][0]["t"], 0.6);
    assert_eq!(s.get("/api/live/nope").status, 404);
    assert_eq!(s.get("/api/live/..").status, 404);

    // Events: the samples first (from 0), then the state without them but with their count.
    let mut got = Vec::new();
    let mut state_seen = None;
    assert!(sse_until(
        s.addr,
        &s.host(),
        Duration::from_secs(10),
        |name, v| {
            match name {
                "samples" => got.push(v.clone()),
                "state" => state_seen = Some(v.clone()),
                _ => {}
            }
            state_seen.is_some()
        }
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (
            got[0]["runId"].as_str(),
            got[0]["probe"].as_str(),
            got[0]["from"].as_u64()
        ),
        (Some("live-1"), Some("api"), Some(0))
    );
    assert_eq!(got[0]["samples"].as_array().map(Vec::len), Some(2));
    let st = state_seen.expect("state");
    let p = &st["active"][0]["live"]["probeSamples"][0];
    assert_eq!(p["sampleCount"], 2, "{st}");
    assert_eq!(
        p["samples"],
        serde_json::json!([]),
        "samples travel in their own events"
    );

    // As the run goes on: the rest of the half line, the recovery, a new sample; a connection
    // gets each sample once, in order, and sees the window close.
    let mut w = w;
    let mut more = Vec::new();
    let mut closed = None;
    let mut fed = false;
    assert!(
        sse_until(s.addr, &s.host(), Duration::from_secs(10), |name, v| {
            if !fed && name == "state" {
                fed = true;
                f.write_all(b"se\":\"chaos\",\"ok\":true,\"latencyMs\":2.0}\n")
                    .expect("rest of the line");
                w.write(&Record::Recovered {
                    fault: "pause".into(),
                    target: "pid 7 (sleep)".into(),
                    at: 3.52,
                    effect: "resumed".into(),
                });
                w.write(&sample(3.6, true));
            }
            if name == "samples" {
                more.push(v.clone());
            }
            if name == "state" && v["active"][0]["live"]["windows"][0]["end"] == 3.52 {
                closed = Some(v.clone());
            }
            closed.is_some()
                && more
                    .iter()
                    .map(|m| m["samples"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
                    >= 4
        }),
        "samples {more:?}, closed {closed:?}"
    );
    let ts: Vec<f64> = more
        .iter()
        .flat_map(|m| m["samples"].as_array().expect("samples").clone())
        .map(|x| x["t"].as_f64().expect("t"))
        .collect();
    assert_eq!(ts, [0.6, 0.7, 0.8, 3.6], "each sample once, in order");

    // The run wrote its report and removed its stream: nothing in progress.
    w.remove().expect("remove");
    let a = s.get("/api/active").json();
    assert_eq!(a["active"], serde_json::json!([]), "{a}");
    assert_eq!(s.get("/api/live/live-1").status, 404);
}
