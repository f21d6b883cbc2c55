//! The probe set end to end: threads, phases, verdicts, abort on breach, waiting for steadiness.

mod fixtures;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fixtures::{parse_spec, TestServer};
use havoc_probe::{Phase, ProbeSet};

fn no_breach() -> havoc_probe::BreachCallback {
    Box::new(|probe, why| panic!("unexpected breach of {probe}: {why}"))
}

fn breach_channel() -> (
    havoc_probe::BreachCallback,
    mpsc::Receiver<(String, String)>,
) {
    let (tx, rx) = mpsc::channel();
    let cb: havoc_probe::BreachCallback = Box::new(move |probe, why| {
        let _ = tx.send((probe.to_string(), why.to_string()));
    });
    (cb, rx)
}

#[test]
fn phases_tag_samples_and_get_verdicts() {
    let server = TestServer::start();
    let url = server.url("/health");
    let (steady, abort) = parse_spec(&format!(
        r#"
spec:
  steadyState:
    baseline: 300ms
    recovery: 5s
    probes:
      - name: api-ok
        http: {{ url: "{url}", timeout: 1s }}
        interval: 50ms
      - name: before-only
        http: {{ url: "{url}" }}
        interval: 50ms
        mode: before
      - name: during-only
        http: {{ url: "{url}" }}
        interval: 50ms
        mode: during
        tolerance: {{ successRatio: ">= 0" }}
      - name: after-only
        cmd: {{ argv: ["/bin/sh", "-c", "echo 7"], expect: {{ value: "== 7" }} }}
        interval: 50ms
        mode: after
"#
    ));
    assert!(abort.is_none());
    let origin = Instant::now();
    let set = ProbeSet::start(&steady, None, origin, no_breach()).expect("start the probes");
    assert_eq!(set.phase(), Phase::Baseline);
    thread::sleep(Duration::from_millis(300));
    set.set_phase(Phase::Chaos);
    // Let a baseline sample still in flight finish before the server turns bad: a sample belongs
    // to the phase it started in.
    thread::sleep(Duration::from_millis(100));
    server.set_status(503);
    thread::sleep(Duration::from_millis(300));
    server.set_status(200);
    let s = set.wait_steady(steady.recovery.0, None);
    assert!(s.steady, "{s:?}");
    assert!(s.waited < Duration::from_secs(4), "{s:?}");
    let results = set.stop();

    let v = |probe: &str, phase| {
        results
            .verdict(probe, phase)
            .unwrap_or_else(|| panic!("a verdict for {probe} in {phase}"))
    };
    let base = v("api-ok", Phase::Baseline);
    assert!(base.pass, "{base:?}");
    assert!(base.samples >= 2, "{base:?}");
    assert_eq!(base.success_ratio, Some(1.0));
    let chaos = v("api-ok", Phase::Chaos);
    assert!(!chaos.pass, "{chaos:?}");
    assert!(
        chaos.reason.contains("violates successRatio == 1"),
        "{chaos:?}"
    );
    assert!(v("api-ok", Phase::Recovery).pass);

    // Modes: each probe sampled only in its phase(s), and has verdicts only there.
    let phases_of = |probe: &str| {
        let mut p: Vec<Phase> = results
            .series(probe)
            .expect("a series")
            .samples
            .iter()
            .map(|s| s.phase)
            .collect();
        p.dedup();
        p
    };
    assert_eq!(phases_of("before-only"), [Phase::Baseline]);
    assert_eq!(phases_of("during-only"), [Phase::Chaos]);
    assert_eq!(phases_of("after-only"), [Phase::Recovery]);
    assert!(results.verdict("before-only", Phase::Chaos).is_none());
    assert!(
        v("during-only", Phase::Chaos).pass,
        "successRatio >= 0 always holds"
    );
    let after = v("after-only", Phase::Recovery);
    assert_eq!((after.value_min, after.value_max), (Some(7.0), Some(7.0)));

    // Samples are in time order, timed from the origin, and the phases line up.
    let api = &results.series("api-ok").expect("series").samples;
    assert!(api.windows(2).all(|w| w[0].t_seconds <= w[1].t_seconds));
    assert_eq!(
        results.phases.iter().map(|p| p.phase).collect::<Vec<_>>(),
        [Phase::Baseline, Phase::Chaos, Phase::Recovery]
    );
    assert!(!results.passed());
    let json = serde_json::to_value(&results).expect("serialize");
    assert!(json["verdicts"][0]["successRatio"].is_number());
    assert!(json["probes"][0]["samples"][0]["latencyMs"].is_number());
    assert_eq!(json["probes"][0]["samples"][0]["phase"], "baseline");
}

#[test]
fn a_failing_server_triggers_abort_quickly() {
    let server = TestServer::start();
    let (steady, abort) = parse_spec(&format!(
        r#"
spec:
  steadyState:
    probes:
      - name: api-ok
        http: {{ url: "{}", timeout: 500ms }}
        interval: 100ms
      - name: port-open
        tcp: {{ address: "{}" }}
        interval: 100ms
  abort:
    when: [api-ok]
    within: 1s
"#,
        server.url("/health"),
        server.addr
    ));
    let (cb, rx) = breach_channel();
    let set = ProbeSet::start(&steady, abort.as_ref(), Instant::now(), cb).expect("start");
    assert_eq!(
        set.phase(),
        Phase::Chaos,
        "no baseline: the run starts in chaos"
    );
    thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "no breach while the server is healthy"
    );
    let failing_since = Instant::now();
    server.set_status(500);
    let (probe, why) = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("a breach within 3s");
    let seen_after = failing_since.elapsed();
    // interval (100ms) plus a generous margin for a loaded machine.
    assert!(
        seen_after < Duration::from_millis(1500),
        "breach after {seen_after:?}"
    );
    assert_eq!(probe, "api-ok");
    assert!(
        why.contains("`api-ok`") && why.contains("1 of the last"),
        "{why}"
    );
    assert!(why.contains("HTTP 500"), "{why}");
    thread::sleep(Duration::from_millis(250));
    assert!(rx.try_recv().is_err(), "a probe breaches once");
    let results = set.stop();
    assert_eq!(results.breaches.len(), 1);
    assert_eq!(results.breaches[0].probe, "api-ok");
}

#[test]
fn a_lenient_tolerance_survives_one_failure_but_not_an_outage() {
    let server = TestServer::start();
    let (steady, abort) = parse_spec(&format!(
        r#"
spec:
  steadyState:
    probes:
      - name: api-ok
        http: {{ url: "{}", timeout: 500ms }}
        interval: 50ms
        tolerance: {{ successRatio: ">= 0.9" }}
  abort:
    when: [api-ok]
"#,
        server.url("/health")
    ));
    let (cb, rx) = breach_channel();
    let set = ProbeSet::start(&steady, abort.as_ref(), Instant::now(), cb).expect("start");
    thread::sleep(Duration::from_millis(200));
    server.fail_next(1);
    thread::sleep(Duration::from_millis(400));
    assert!(
        rx.try_recv().is_err(),
        "one failed sample is within >= 0.9 and must not abort"
    );
    server.set_status(500);
    let (probe, why) = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("an outage breaches");
    assert_eq!(probe, "api-ok");
    assert!(why.contains("api-ok") && why.contains("failed"), "{why}");
    let results = set.stop();
    let chaos = results.verdict("api-ok", Phase::Chaos).expect("a verdict");
    assert!(!chaos.pass);
    assert!(
        server
            .control
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            > 5
    );
}

#[test]
fn wait_steady_gives_up_after_the_recovery_time() {
    let server = TestServer::start();
    server.set_status(500);
    let (steady, _) = parse_spec(&format!(
        r#"
spec:
  steadyState:
    recovery: 400ms
    probes:
      - name: api-ok
        http: {{ url: "{}" }}
        interval: 50ms
"#,
        server.url("/health")
    ));
    let set = ProbeSet::start(&steady, None, Instant::now(), no_breach()).expect("start");
    let s = set.wait_steady(steady.recovery.0, None);
    assert!(!s.steady);
    assert!(s.waited >= Duration::from_millis(400), "{s:?}");
    assert!(s.waited < Duration::from_secs(3), "{s:?}");
    assert_eq!(s.not_steady[0].0, "api-ok");
    let results = set.stop();
    let rec = results
        .verdict("api-ok", Phase::Recovery)
        .expect("a recovery verdict");
    assert!(!rec.pass);
    assert!(rec.reason.contains("not steady"), "{rec:?}");
}

#[test]
fn stop_is_prompt_with_a_slow_command() {
    let (steady, _) = parse_spec(
        r#"
spec:
  steadyState:
    probes:
      - name: slow
        cmd: { argv: ["sleep", "30"], timeout: 60s }
"#,
    );
    let set = ProbeSet::start(&steady, None, Instant::now(), no_breach()).expect("start");
    thread::sleep(Duration::from_millis(200));
    let begun = Instant::now();
    let results = set.stop();
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        begun.elapsed()
    );
    let samples = &results.series("slow").expect("series").samples;
    assert_eq!(samples.len(), 1);
    assert!(samples[0]
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("probes stopped"));
}
