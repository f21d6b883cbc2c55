//! The agent against a real containerd container (havoc-testbed: Debian's containerd + runc, a
//! locally built busybox image, its own netns with a veth to the host).

mod common;

use std::time::Duration;

use common::*;
use havoc_api::v1::{target, HealthRequest, InjectRequest, RecoverRequest, Target};

fn inject_container(key: &str, id: &str, fault_json: &str) -> InjectRequest {
    InjectRequest {
        idempotency_key: key.into(),
        fault_json: fault_json.into(),
        target: Some(Target {
            kind: Some(target::Kind::ContainerId(id.into())),
        }),
        lease_ttl_ms: 30_000,
        owner: "test".into(),
    }
}

/// Datagrams that reached the container's UDP stack (delivered or port unreachable).
fn reached(c: &havoc_testbed::Container) -> u64 {
    let u = c.udp_counters().expect("udp counters");
    u.in_datagrams + u.no_ports
}

/// Sends `n` datagrams from the host to the container; the fraction that did not reach it.
fn udp_loss(c: &havoc_testbed::Container, n: u64) -> f64 {
    let before = reached(c);
    let tx = std::net::UdpSocket::bind((c.host_ip, 0)).expect("bind host side");
    for i in 0..n {
        tx.send_to(&i.to_le_bytes(), (c.container_ip, 9999))
            .expect("send");
        if i % 256 == 255 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    1.0 - (reached(c) - before) as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containerd_container_is_resolved_hit_by_loss_stress_and_kill() {
    if !root_or_skip("a_containerd_container_is_resolved_hit_by_loss_stress_and_kill") {
        return;
    }
    let ctrd =
        tokio::task::block_in_place(havoc_testbed::Containerd::start).expect("containerd starts");
    let c = tokio::task::block_in_place(|| ctrd.run("agent-target", &["sleep", "300"]))
        .expect("container runs");

    // Both ways of resolving find the container's init.
    let via_api =
        havoc_agent::resolve::via_containerd(ctrd.socket(), &[ctrd.namespace().to_string()], &c.id)
            .await
            .expect("containerd API answers");
    assert_eq!(via_api, Some((c.pid, ctrd.namespace().to_string())));
    let id = c.id.clone();
    let via_proc = tokio::task::spawn_blocking(move || havoc_agent::resolve::via_proc(&id))
        .await
        .expect("scan");
    assert_eq!(
        via_proc,
        Some(c.pid),
        "the /proc cgroup scan finds the same init"
    );
    assert_eq!(
        havoc_agent::resolve::via_containerd(ctrd.socket(), &[], "no-such-container")
            .await
            .expect("answers"),
        None
    );

    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let mut opts = options(&pki, state.path());
    opts.runtimes.containerd_socket = ctrd.socket().to_path_buf();
    opts.runtimes.containerd_namespaces = vec![ctrd.namespace().to_string()];
    let agent = havoc_agent::start(opts).await.expect("agent");
    let mut cl = client(agent.addr(), &pki.client).await;
    let h = cl
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(h.runtimes, vec!["containerd".to_string()]);

    // Packet loss in the container's netns, measured from the host side of its veth.
    let before = tokio::task::block_in_place(|| udp_loss(&c, 1000));
    assert!(before < 0.01, "no loss before: {before}");
    let r = cl
        .inject(inject_container(
            "loss",
            &format!("containerd://{}", c.id),
            r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "direction": "from", "loss": {"loss": "30"}}}"#,
        ))
        .await
        .expect("inject loss")
        .into_inner();
    assert_eq!(r.pid, c.pid);
    let loss = tokio::task::block_in_place(|| udp_loss(&c, 4000));
    eprintln!("container loss: {:.2}% (requested 30%)", loss * 100.0);
    assert!(
        (0.26..=0.34).contains(&loss),
        "30% ± 4, got {:.2}%",
        loss * 100.0
    );
    cl.recover(RecoverRequest {
        injection_id: r.injection_id,
    })
    .await
    .expect("recover");
    let after = tokio::task::block_in_place(|| udp_loss(&c, 1000));
    assert!(after < 0.01, "no loss after: {after}");

    // Stress workers join the container's cgroups.
    let r = cl
        .inject(inject_container(
            "stress",
            &c.id,
            r#"{"kind": "StressChaos", "spec": {"stressors": {"cpu": {"workers": 1, "load": 20}}}}"#,
        ))
        .await
        .expect("inject stress")
        .into_inner();
    let procs = c.cgroup_procs();
    assert!(
        procs.len() >= 2 && procs.contains(&c.pid),
        "a worker is in the container's cgroup: {procs:?}"
    );
    cl.recover(RecoverRequest {
        injection_id: r.injection_id,
    })
    .await
    .expect("recover");
    assert!(
        wait_until(Duration::from_secs(3), || c.cgroup_procs() == vec![c.pid]),
        "the worker left: {:?}",
        c.cgroup_procs()
    );

    // container-kill: SIGKILL to the init process.
    cl.inject(inject_container(
        "kill",
        &c.id,
        r#"{"kind": "ProcessChaos", "spec": {"action": "kill"}}"#,
    ))
    .await
    .expect("inject kill");
    assert!(
        tokio::task::block_in_place(|| c.wait_stopped(Duration::from_secs(5))),
        "the container stopped"
    );
    agent.shutdown().await.expect("shutdown");
    drop(c);
    drop(ctrd);
}
