//! Mutual TLS: only clients with a valid certificate from the agent's CA get in; plain text only
//! exists on loopback.

mod common;

use std::time::Duration;

use common::*;
use havoc_api::pki::{Ca, Validity};
use havoc_api::tls::TlsFiles;
use havoc_api::v1::agent_client::AgentClient;
use havoc_api::v1::HealthRequest;

/// Tries Health and a pause Inject with `files`; returns whether any call succeeded.
async fn any_call_succeeds(addr: std::net::SocketAddr, files: &TlsFiles, pid: i32) -> bool {
    let ep = match files.client_endpoint(&format!("https://127.0.0.1:{}", addr.port())) {
        Ok(e) => e,
        Err(_) => return false,
    };
    let Ok(ch) = ep.connect().await else {
        return false;
    };
    let mut c = AgentClient::new(ch);
    let health = c.health(HealthRequest {}).await.is_ok();
    let inject = c
        .inject(inject_pid("intruder", pid, PAUSE, 5000))
        .await
        .is_ok();
    health || inject
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_valid_certificate_from_the_ca_get_in() {
    if !root_or_skip("only_clients_with_a_valid_certificate_from_the_ca_get_in") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start(&pki, state.path()).await;
    let target = Reaped::sleeper();
    let addr = agent.addr();

    // No client certificate at all: a plain TLS client that trusts the CA.
    let ca = tonic::transport::Certificate::from_pem(pki.ca.cert_pem());
    let no_cert =
        tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
            .expect("uri")
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca))
            .expect("tls");
    let refused = match no_cert.connect().await {
        Err(_) => true,
        Ok(ch) => {
            let mut c = AgentClient::new(ch);
            let h = c.health(HealthRequest {}).await;
            let i = c
                .inject(inject_pid("nocert", target.pid(), PAUSE, 5000))
                .await;
            h.is_err() && i.is_err()
        }
    };
    assert!(refused, "a client without a certificate is refused");

    // A certificate from another CA.
    let other = Ca::new("other CA", Validity::days(1)).expect("other ca");
    let foreign = pki.client_from(&other, Validity::days(1), "foreign");
    assert!(
        !any_call_succeeds(addr, &foreign, target.pid()).await,
        "a certificate from another CA is refused"
    );

    // An expired certificate from the right CA.
    let expired = pki.client_from(&pki.ca, Validity::expired(), "expired");
    assert!(
        !any_call_succeeds(addr, &expired, target.pid()).await,
        "an expired certificate is refused"
    );

    // Nothing was injected by any of them.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(agent.active(), 0, "nothing injected");
    assert_ne!(
        proc_state(target.pid()),
        Some('T'),
        "the target was not paused"
    );

    // The good client works.
    let mut c = client(addr, &pki.client).await;
    let h = c
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(h.node, "test-node");
    assert_eq!(h.active_injections, 0);
    // The probe used above does succeed with a valid certificate (so its `false` meant refusal).
    assert!(any_call_succeeds(addr, &pki.client, target.pid()).await);
    assert_eq!(agent.active(), 1);
    agent.shutdown().await.expect("shutdown");
    assert_ne!(proc_state(target.pid()), Some('T'), "resumed at shutdown");
}

#[tokio::test]
async fn insecure_mode_refuses_a_non_loopback_address_and_tls_is_otherwise_required() {
    let mut o = havoc_agent::AgentOptions::new(None);
    // testd, like every in-process agent of these tests: it answers `__watchdog`.
    o.self_exe = common::testd();
    o.insecure_dev = true;
    o.listen = "0.0.0.0:0".parse().expect("addr");
    o.metrics_addr = None;
    let e = havoc_agent::start(o.clone()).await.expect_err("refused");
    assert!(
        e.to_string().contains("loopback") || e.to_string().contains("127.0.0.1"),
        "{e}"
    );
    o.listen = "10.0.0.1:0".parse().expect("addr");
    assert!(havoc_agent::start(o.clone()).await.is_err());

    let mut plain = o.clone();
    plain.insecure_dev = false;
    let e = havoc_agent::start(plain).await.expect_err("TLS required");
    assert!(e.to_string().contains("mutual TLS"), "{e}");

    // On loopback it serves plain text.
    let state = tempfile::tempdir().expect("tempdir");
    o.listen = "127.0.0.1:0".parse().expect("addr");
    o.state_dir = state.path().to_path_buf();
    let agent = havoc_agent::start(o)
        .await
        .expect("loopback insecure starts");
    let mut c = AgentClient::connect(format!("http://{}", agent.addr()))
        .await
        .expect("plain connect");
    c.health(HealthRequest {}).await.expect("health");
    agent.shutdown().await.expect("shutdown");
}
