//! Each check against a real endpoint on 127.0.0.1 (or a real process), one sample at a time.

mod fixtures;

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fixtures::{parse_spec, TestServer};
use havoc_probe::check::{self, Outcome};

/// Takes one sample of the only probe of `yaml`'s steady state.
fn sample(yaml: &str) -> Outcome {
    let (steady, _) = parse_spec(yaml);
    let mut c = check::build(&steady.probes[0]).expect("build the check");
    c.sample(&AtomicBool::new(false))
}

fn one_probe(probe: &str) -> String {
    format!("spec:\n  steadyState:\n    probes:\n      - name: p\n        {probe}\n")
}

#[test]
fn http_probe_follows_the_server_status() {
    let server = TestServer::start();
    let yaml = one_probe(&format!(
        "http: {{ url: \"{}\", method: GET, timeout: 1s, expectStatus: [200] }}",
        server.url("/health")
    ));
    let ok = sample(&yaml);
    assert!(ok.ok, "{ok:?}");
    server.set_status(500);
    let bad = sample(&yaml);
    assert!(!bad.ok);
    let err = bad.error.expect("an error");
    assert!(
        err.contains("HTTP 500")
            && err.contains("expected 200")
            && err.contains("database unavailable"),
        "{err}"
    );
}

#[test]
fn http_probe_times_out_on_a_slow_server() {
    let server = TestServer::start();
    server.set_delay(Duration::from_millis(1500));
    let yaml = one_probe(&format!(
        "http: {{ url: \"{}\", timeout: 200ms }}",
        server.url("/health")
    ));
    let begun = Instant::now();
    let out = sample(&yaml);
    let took = begun.elapsed();
    assert!(!out.ok);
    assert!(took < Duration::from_millis(1400), "took {took:?}");
    let err = out.error.expect("an error");
    assert!(err.contains("timed out after 200ms"), "{err}");
}

#[test]
fn http_probe_matches_the_body() {
    let server = TestServer::start();
    let yaml = one_probe(&format!(
        "http: {{ url: \"{}\", bodyMatches: \"^ok$\" }}",
        server.url("/health")
    ));
    assert!(sample(&yaml).ok);
    let yaml = one_probe(&format!(
        "http: {{ url: \"{}\", bodyMatches: \"healthy\" }}",
        server.url("/health")
    ));
    let out = sample(&yaml);
    assert!(!out.ok);
    assert!(out.error.expect("an error").contains("does not match"));
}

#[test]
fn http_probe_reports_a_refused_connection() {
    let port = closed_port();
    let out = sample(&one_probe(&format!(
        "http: {{ url: \"http://127.0.0.1:{port}/\" }}"
    )));
    assert!(!out.ok);
    assert!(out.error.expect("an error").contains("failed"));
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

#[test]
fn tcp_probe_sees_open_and_closed_ports() {
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = open.local_addr().expect("addr").port();
    let ok = sample(&one_probe(&format!(
        "tcp: {{ address: \"127.0.0.1:{port}\", timeout: 500ms }}"
    )));
    assert!(ok.ok, "{ok:?}");
    let closed = closed_port();
    let bad = sample(&one_probe(&format!(
        "tcp: {{ address: \"127.0.0.1:{closed}\", timeout: 500ms }}"
    )));
    assert!(!bad.ok);
    let err = bad.error.expect("an error");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
}

#[test]
fn cmd_probe_reads_a_value() {
    let out = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "echo 42"], expect: { exitCode: 0, stdoutMatches: "^[0-9]+$", value: "<= 1000" } }"#,
    ));
    assert_eq!(
        out,
        Outcome {
            ok: true,
            value: Some(42.0),
            error: None
        }
    );
    let over = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "echo 4200"], expect: { value: "<= 1000" } }"#,
    ));
    assert!(!over.ok);
    assert_eq!(over.value, Some(4200.0));
    assert!(over
        .error
        .expect("an error")
        .contains("4200 violates <= 1000"));
    let text = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "echo many"], expect: { stdoutMatches: "^[0-9]+$" } }"#,
    ));
    assert!(!text.ok);
    assert!(text.error.expect("an error").contains("`many`"));
}

#[test]
fn cmd_probe_fails_on_exit_status() {
    let out = sample(&one_probe(r#"cmd: { argv: ["false"] }"#));
    assert!(!out.ok);
    let err = out.error.expect("an error");
    assert!(
        err.contains("exited with status 1") && err.contains("expected exit code 0"),
        "{err}"
    );
    let stderr = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "echo broken pipe to db >&2; exit 3"] }"#,
    ));
    assert!(stderr
        .error
        .expect("an error")
        .contains("broken pipe to db"));
    let missing = sample(&one_probe(
        r#"cmd: { argv: ["/nonexistent/havoc-probe-test"] }"#,
    ));
    assert!(missing.error.expect("an error").contains("failed to run"));
}

#[test]
fn cmd_probe_kills_a_command_that_times_out() {
    // The shell starts a child that would keep stdout open: the process group is killed.
    let begun = Instant::now();
    let out = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "sleep 30 & sleep 30"], timeout: 200ms }"#,
    ));
    let took = begun.elapsed();
    assert!(!out.ok);
    assert!(out
        .error
        .expect("an error")
        .contains("timed out after 200ms"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn cmd_probe_caps_stdout() {
    let out = sample(&one_probe(
        r#"cmd: { argv: ["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' 'x'"], expect: { stdoutMatches: "^y" } }"#,
    ));
    assert!(!out.ok);
    assert!(out.error.expect("an error").contains("(truncated)"));
}

#[test]
fn prometheus_probe_compares_the_query_value() {
    let server = TestServer::start();
    server.set_prometheus_value("1.5");
    let yaml = one_probe(&format!(
        "prometheus: {{ url: \"{}\", query: 'sum(rate(http_errors_total[30s]))', value: \"<= 5\" }}",
        server.url("")
    ));
    let ok = sample(&yaml);
    assert_eq!(
        ok,
        Outcome {
            ok: true,
            value: Some(1.5),
            error: None
        }
    );
    assert_eq!(
        server.control.queries.lock().expect("lock").as_slice(),
        ["sum(rate(http_errors_total[30s]))"]
    );
    server.set_prometheus_value("7.25");
    let bad = sample(&yaml);
    assert!(!bad.ok);
    assert_eq!(bad.value, Some(7.25));
    let err = bad.error.expect("an error");
    assert!(
        err.contains("7.25") && err.contains(r#"job="api""#) && err.contains("<= 5"),
        "{err}"
    );
    server
        .set_prometheus_body(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
    assert!(sample(&yaml).error.expect("an error").contains("no series"));
    server.set_prometheus_body(
        r#"{"status":"error","errorType":"bad_data","error":"unknown function"}"#,
    );
    assert!(sample(&yaml)
        .error
        .expect("an error")
        .contains("unknown function"));
}
