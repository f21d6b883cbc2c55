//! The agent against real processes: a `sleep` in a network namespace of its own (pid target).

mod common;

use std::time::{Duration, Instant};

use common::*;
use havoc_api::v1::{ListRequest, RecoverRequest, RenewRequest};

const LOSS_30: &str = r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "direction": "from", "loss": {"loss": "30"}, "protocols": ["udp"]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss_in_the_netns_of_a_pid_is_measured_from_outside_and_recovered() {
    if !root_or_skip("packet_loss_in_the_netns_of_a_pid_is_measured_from_outside_and_recovered") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let ns = NetnsSleeper::new();
    let mut c = client(agent.addr(), &pki.client).await;

    let before = tokio::task::block_in_place(|| ns.udp_loss(7301, 500));
    assert!(before < 0.01, "no loss before: {before}");

    let r = c
        .inject(inject_pid("loss-1", ns.pid(), LOSS_30, 10_000))
        .await
        .expect("inject")
        .into_inner();
    assert!(!r.existing);
    assert_eq!(r.pid, ns.pid());
    assert!(r.summary.contains("loss"), "{}", r.summary);
    let loss = tokio::task::block_in_place(|| ns.udp_loss(7302, 4000));
    assert!(
        (0.26..=0.34).contains(&loss),
        "30% ± 4 loss from outside, got {:.2}%",
        loss * 100.0
    );

    // The datapath counters reach List and /metrics.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let list = c.list(ListRequest {}).await.expect("list").into_inner();
    assert_eq!(list.injections.len(), 1);
    let m = &list.injections[0].metrics;
    let dropped = m.get("packets_dropped").copied().unwrap_or_default();
    assert!(dropped > 800.0, "packets_dropped counted: {m:?}");
    let metrics_text = reqwest_metrics(agent.metrics_addr().expect("metrics")).await;
    assert!(
        metrics_text.contains("havoc_injections_active{kind=\"NetworkChaos\"} 1"),
        "{metrics_text}"
    );
    assert!(
        metrics_text.contains("metric=\"packets_dropped\""),
        "{metrics_text}"
    );
    assert!(
        metrics_text.contains("havoc_request_duration_seconds_bucket{le="),
        "{metrics_text}"
    );

    let rec = c
        .recover(RecoverRequest {
            injection_id: r.injection_id.clone(),
        })
        .await
        .expect("recover")
        .into_inner();
    assert!(rec.recovered, "{}", rec.reason);
    let after = tokio::task::block_in_place(|| ns.udp_loss(7303, 500));
    assert!(after < 0.01, "no loss after recovery: {after}");
    let again = c
        .recover(RecoverRequest {
            injection_id: r.injection_id,
        })
        .await
        .expect("recover again")
        .into_inner();
    assert!(again.recovered);
    assert_eq!(again.reason, "already recovered");
    assert!(
        std::fs::read_dir(state.path().join("runs"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "the journal is gone after recovery"
    );
    agent.shutdown().await.expect("shutdown");
}

/// GET /metrics over plain HTTP/1.1 without an HTTP client crate.
async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_injects_once_even_with_eight_concurrent_calls() {
    if !root_or_skip("the_same_key_injects_once_even_with_eight_concurrent_calls") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let target = Reaped::sleeper();
    let c = client(agent.addr(), &pki.client).await;

    let first = c
        .clone()
        .inject(inject_pid("same", target.pid(), PAUSE, 10_000))
        .await
        .expect("inject")
        .into_inner();
    assert!(!first.existing);
    assert!(wait_until(Duration::from_secs(2), || proc_state(
        target.pid()
    ) == Some('T')));
    let second = c
        .clone()
        .inject(inject_pid("same", target.pid(), PAUSE, 10_000))
        .await
        .expect("inject again")
        .into_inner();
    assert!(second.existing);
    assert_eq!(second.injection_id, first.injection_id);

    let other = Reaped::sleeper();
    let calls = (0..8).map(|_| {
        let mut c = c.clone();
        let req = inject_pid("concurrent", other.pid(), PAUSE, 10_000);
        tokio::spawn(async move { c.inject(req).await.map(|r| r.into_inner()) })
    });
    let results: Vec<_> = futures_join(calls).await;
    let ids: std::collections::HashSet<String> =
        results.iter().map(|r| r.injection_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one injection for eight calls: {results:?}");
    assert_eq!(
        results.iter().filter(|r| !r.existing).count(),
        1,
        "exactly one call injected"
    );
    assert_eq!(agent.active(), 2);
    assert_eq!(
        std::fs::read_dir(state.path().join("runs"))
            .expect("runs")
            .count(),
        2,
        "one journal per injection"
    );
    agent.shutdown().await.expect("shutdown recovers");
    assert_ne!(proc_state(target.pid()), Some('T'), "resumed at shutdown");
    assert_ne!(proc_state(other.pid()), Some('T'), "resumed at shutdown");
}

async fn futures_join<T: std::fmt::Debug>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<T, tonic::Status>>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.expect("task").expect("inject"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_lease_is_recovered_within_ttl_plus_one_second() {
    if !root_or_skip("an_unrenewed_lease_is_recovered_within_ttl_plus_one_second") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let target = Reaped::sleeper();
    let mut c = client(agent.addr(), &pki.client).await;

    let t0 = Instant::now();
    let r = c
        .inject(inject_pid("lease", target.pid(), PAUSE, 1500))
        .await
        .expect("inject")
        .into_inner();
    assert_eq!(proc_state(target.pid()), Some('T'));
    // Renewals keep it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.renew(RenewRequest {
            injection_id: r.injection_id.clone(),
            lease_ttl_ms: 0,
        })
        .await
        .expect("renew");
    }
    assert!(t0.elapsed() > Duration::from_millis(2000));
    assert_eq!(proc_state(target.pid()), Some('T'), "renewed: still paused");
    let last_renew = Instant::now();
    assert!(
        wait_until(Duration::from_millis(2500), || proc_state(target.pid())
            != Some('T')),
        "recovered after the lease"
    );
    let took = last_renew.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "within ttl + 1 s: {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1300),
        "not before the ttl: {took:?}"
    );
    let rec = c
        .recover(RecoverRequest {
            injection_id: r.injection_id.clone(),
        })
        .await
        .expect("recover")
        .into_inner();
    assert!(rec.recovered);
    assert_eq!(rec.reason, "lease expired");
    let renew = c
        .renew(RenewRequest {
            injection_id: r.injection_id,
            lease_ttl_ms: 0,
        })
        .await
        .expect_err("gone");
    assert_eq!(renew.code(), tonic::Code::NotFound);
    let m = reqwest_metrics(agent.metrics_addr().expect("metrics")).await;
    assert!(m.contains("havoc_lease_expirations_total 1"), "{m}");
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_protected_pids_are_refused() {
    if !root_or_skip("bad_requests_get_clear_errors_and_protected_pids_are_refused") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let target = Reaped::sleeper();
    let mut c = client(agent.addr(), &pki.client).await;

    let e = c
        .inject(inject_pid(
            "bad",
            target.pid(),
            "{\"kind\": \"ProcessChaos\",\n \"spec\": {\"action\": \"pauze\"}}",
            5000,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("fault_json:2:"), "{}", e.message());
    assert!(e.message().contains("spec.action"), "{}", e.message());

    let e = c
        .inject(inject_pid("ttl", target.pid(), PAUSE, 10))
        .await
        .expect_err("ttl");
    assert!(e.message().contains("lease_ttl_ms"), "{}", e.message());

    for pid in [1, std::process::id() as i32] {
        let e = c
            .inject(inject_pid("protected", pid, PAUSE, 5000))
            .await
            .expect_err("protected");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    }
    let e = c
        .inject(inject_pid("gone", i32::MAX - 3, PAUSE, 5000))
        .await
        .expect_err("missing");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let mut req = inject_pid("cid", 0, PAUSE, 5000);
    req.target = Some(havoc_api::v1::Target {
        kind: Some(havoc_api::v1::target::Kind::ContainerId("rkt://abc".into())),
    });
    let e = c.inject(req).await.expect_err("bad id");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("unknown runtime"), "{}", e.message());
    assert_eq!(agent.active(), 0);
    assert_ne!(proc_state(target.pid()), Some('T'));
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_stress_hit_the_process_and_its_cgroup() {
    if !root_or_skip("kill_and_stress_hit_the_process_and_its_cgroup") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let mut c = client(agent.addr(), &pki.client).await;

    let target = Reaped::sleeper();
    let cg = TestCgroup::new();
    cg.add(target.pid());
    let r = c
        .inject(inject_pid(
            "stress",
            target.pid(),
            r#"{"kind": "StressChaos", "spec": {"stressors": {"cpu": {"workers": 1, "load": 20}}}}"#,
            10_000,
        ))
        .await
        .expect("stress")
        .into_inner();
    let procs = cg.procs();
    assert!(
        procs.len() >= 2 && procs.contains(&target.pid()),
        "the worker joined the target's cgroup: {procs:?}"
    );
    c.recover(RecoverRequest {
        injection_id: r.injection_id,
    })
    .await
    .expect("recover");
    assert!(
        wait_until(Duration::from_secs(3), || cg.procs() == vec![target.pid()]),
        "the worker left: {:?}",
        cg.procs()
    );

    let mut victim = Reaped::sleeper();
    let r = c
        .inject(inject_pid(
            "kill",
            victim.pid(),
            r#"{"kind": "ProcessChaos", "spec": {"action": "kill"}}"#,
            5000,
        ))
        .await
        .expect("kill")
        .into_inner();
    assert!(r.summary.contains("SIGKILL"), "{}", r.summary);
    let status = victim.0.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    agent.shutdown().await.expect("shutdown");
}
