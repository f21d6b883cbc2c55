//! Parsing and validating `steadyState` and `abort` from YAML: defaults, and errors with paths.

mod fixtures;

use std::time::Duration;

use fixtures::{parse_spec, try_parse_spec};
use havoc_probe::spec::{CmpOp, HttpMethod, Threshold};
use havoc_probe::ProbeMode;

const FULL: &str = r#"
spec:
  steadyState:
    baseline: 5s
    recovery: 10s
    probes:
      - name: api-ok
        http: { url: http://10.99.0.2:8080/health, method: GET, timeout: 1s, expectStatus: [200] }
        interval: 200ms
        tolerance: { successRatio: ">= 0.99", latencyP99: "<= 250ms" }
        mode: continuous
      - name: port-open
        tcp: { address: 10.99.0.2:8080, timeout: 500ms }
      - name: queue-depth
        cmd: { argv: ["/usr/local/bin/depth"], expect: { exitCode: 0, stdoutMatches: "^[0-9]+$", value: "<= 1000" } }
      - name: error-rate
        prometheus: { url: http://127.0.0.1:9090, query: 'sum(rate(http_errors_total[30s]))', value: "<= 5" }
  abort:
    when: [api-ok]
    within: 1s
"#;

/// The problems of `yaml` (which must fail), as `path: message` lines.
fn problems(yaml: &str) -> Vec<String> {
    match try_parse_spec(yaml) {
        Ok(_) => panic!("expected problems in:\n{yaml}"),
        Err(p) => p,
    }
}

fn has(problems: &[String], path: &str, words: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{path}: ")) && p.contains(words)),
        "no problem at `{path}` mentioning `{words}` in {problems:#?}"
    );
}

#[test]
fn the_documented_example_parses_with_defaults() {
    let (steady, abort) = parse_spec(FULL);
    assert_eq!(steady.baseline.0, Duration::from_secs(5));
    assert_eq!(steady.probes.len(), 4);
    let api = &steady.probes[0];
    let http = api.http.as_ref().expect("an http check");
    assert_eq!(http.method, HttpMethod::Get);
    assert_eq!(http.expect_status, [200]);
    assert_eq!(api.interval.0, Duration::from_millis(200));
    assert_eq!(api.tolerance.success_ratio.op, CmpOp::Ge);
    assert_eq!(
        api.tolerance.latency_p99.expect("p99").threshold,
        Threshold::Duration(Duration::from_millis(250))
    );
    let port = &steady.probes[1];
    assert_eq!(port.interval.0, Duration::from_secs(1), "default interval");
    assert_eq!(port.mode, ProbeMode::Continuous, "default mode");
    assert_eq!(
        port.tolerance.success_ratio.to_string(),
        "== 1",
        "default tolerance"
    );
    let cmd = steady.probes[2].cmd.as_ref().expect("cmd");
    assert_eq!(cmd.timeout.0, Duration::from_secs(5), "default cmd timeout");
    assert_eq!(cmd.expect.value.expect("value").to_string(), "<= 1000");
    let abort = abort.expect("abort");
    assert_eq!(abort.when, ["api-ok"]);
    assert_eq!(abort.within.0, Duration::from_secs(1));

    let (minimal, _) = parse_spec(
        "spec:\n  steadyState:\n    probes:\n      - name: p\n        tcp: { address: \"127.0.0.1:1\" }\n",
    );
    assert_eq!(minimal.baseline.0, Duration::ZERO, "default baseline");
    assert_eq!(
        minimal.recovery.0,
        Duration::from_secs(5),
        "default recovery"
    );
}

#[test]
fn a_probe_has_exactly_one_check() {
    let p = problems(
        r#"
spec:
  steadyState:
    probes:
      - name: none
      - name: two
        http: { url: "http://127.0.0.1:1/" }
        tcp: { address: "127.0.0.1:1" }
"#,
    );
    has(
        &p,
        "spec.steadyState.probes[0]",
        "exactly one of http, tcp, cmd, prometheus",
    );
    has(&p, "spec.steadyState.probes[1].tcp", "http and tcp");
}

#[test]
fn bad_fields_are_reported_at_their_paths() {
    let p = problems(
        r#"
spec:
  steadyState:
    baseline: 0s
    recovery: 0s
    probes:
      - name: Api OK
        http: { url: "http://127.0.0.1:8080/", expectStatus: [700] }
        mode: before
      - name: secure
        http: { url: "https://10.99.0.2/health", timeout: 0s }
        interval: 1ms
      - name: port
        tcp: { address: "10.99.0.2" }
      - name: port
        cmd: { argv: [], expect: { stdoutMatches: "([0-9]", value: "<= 5s" } }
        tolerance: { successRatio: ">= 1.5", latencyP99: "<= 250" }
      - name: prom
        prometheus: { url: "http://127.0.0.1:9090", query: " ", value: "<= 5" }
        tolerance: { successRatio: "<= 0.5", latencyP50: ">= 1s" }
  abort:
    when: [api, prom, prom]
    within: 0s
"#,
    );
    has(&p, "spec.steadyState.recovery", "greater than 0");
    has(&p, "spec.steadyState.probes[0].name", "not a valid name");
    has(&p, "spec.steadyState.probes[0].http.expectStatus[0]", "700");
    has(&p, "spec.steadyState.probes[0].mode", "baseline");
    has(
        &p,
        "spec.steadyState.probes[1].http.url",
        "https is not supported",
    );
    has(
        &p,
        "spec.steadyState.probes[1].http.timeout",
        "greater than 0",
    );
    has(&p, "spec.steadyState.probes[1].interval", "at least 10ms");
    has(&p, "spec.steadyState.probes[2].tcp.address", "has no port");
    has(
        &p,
        "spec.steadyState.probes[3].name",
        "used by another probe",
    );
    has(
        &p,
        "spec.steadyState.probes[3].cmd.argv",
        "must name a program",
    );
    has(
        &p,
        "spec.steadyState.probes[3].cmd.expect.stdoutMatches",
        "invalid regular expression",
    );
    has(
        &p,
        "spec.steadyState.probes[3].cmd.expect.value",
        "plain number",
    );
    has(
        &p,
        "spec.steadyState.probes[3].tolerance.successRatio",
        "0..=1",
    );
    has(
        &p,
        "spec.steadyState.probes[3].tolerance.latencyP99",
        "duration with a unit",
    );
    has(&p, "spec.steadyState.probes[4].prometheus.query", "PromQL");
    has(
        &p,
        "spec.steadyState.probes[4].tolerance.successRatio",
        "use `>=`",
    );
    has(
        &p,
        "spec.steadyState.probes[4].tolerance.latencyP50",
        "upper bound",
    );
    has(&p, "spec.abort.when[0]", "no probe is named `api`");
    has(&p, "spec.abort.when[2]", "listed twice");
    has(&p, "spec.abort.within", "greater than 0");
}

#[test]
fn a_bad_url_in_the_second_probe_names_its_path() {
    let p = problems(
        r#"
spec:
  steadyState:
    probes:
      - name: a
        tcp: { address: "127.0.0.1:80" }
      - name: b
        http: { url: "10.99.0.2:8080/health" }
"#,
    );
    assert_eq!(p.len(), 1, "{p:#?}");
    has(&p, "spec.steadyState.probes[1].http.url", "not an http URL");
}

#[test]
fn deserialization_errors_carry_paths() {
    let typo = problems(
        r#"
spec:
  steadyState:
    probes:
      - name: a
        http: { url: "http://127.0.0.1/", expectStatuses: [200] }
"#,
    );
    assert!(
        typo[0].starts_with("spec.steadyState.probes[0].http.expectStatuses: ")
            && typo[0].contains("did you mean `expectStatus`"),
        "{typo:?}"
    );
    let no_op = problems(
        r#"
spec:
  steadyState:
    probes:
      - name: a
        tcp: { address: "127.0.0.1:80" }
        tolerance: { successRatio: 0.99 }
"#,
    );
    assert!(
        no_op[0].starts_with("spec.steadyState.probes[0].tolerance.successRatio: ")
            && no_op[0].contains("no comparison operator"),
        "{no_op:?}"
    );
    let mode = problems(
        r#"
spec:
  steadyState:
    probes:
      - name: a
        tcp: { address: "127.0.0.1:80" }
        mode: durring
"#,
    );
    assert!(
        mode[0].starts_with("spec.steadyState.probes[0].mode: ") && mode[0].contains("during"),
        "{mode:?}"
    );
}

#[test]
fn abort_needs_a_steady_state() {
    let a: havoc_probe::Abort = serde_json::from_str(r#"{"when": ["x"]}"#).expect("an abort");
    let mut p = havoc_spec::error::Problems::new();
    havoc_probe::validate(
        None,
        Some(&a),
        &havoc_spec::FieldPath::parse("spec"),
        &mut p,
    );
    let p = p.into_vec();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.to_string(), "spec.abort");
    assert!(p[0].1.contains("no spec.steadyState"));
}
