//! The gRPC listener under hostile clients: a connection that never starts TLS is closed after
//! the handshake deadline; connections beyond the cap are closed at once and the slots come back;
//! a huge or explosive `fault_json` gets a clear, clipped InvalidArgument, not an OOM.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use havoc_agent::listener::ListenerLimits;
use havoc_api::v1::HealthRequest;

fn needs_root(test: &str) -> bool {
    if root_or_skip(test) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run without root in CI"
    );
    false
}

async fn start_with(
    pki: &Pki,
    state: &std::path::Path,
    limits: ListenerLimits,
) -> havoc_agent::RunningAgent {
    let mut o = options(pki, state);
    o.limits = limits;
    o.metrics_addr = None;
    havoc_agent::start(o).await.expect("agent starts")
}

/// Waits (at most `within`) for the server to close `s`: true on EOF or reset.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

/// True if `s` is still open after `wait` (the read times out without EOF).
fn still_open(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("tcp connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_tls_is_closed_after_the_handshake_deadline() {
    if !needs_root("a_connection_that_never_starts_tls_is_closed_after_the_handshake_deadline") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    // The shipped default: 5 s.
    let agent = start_with(&pki, state.path(), ListenerLimits::default()).await;
    let addr = agent.addr();
    let (closed, elapsed) = tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        let started = Instant::now();
        let closed = closed_within(&mut s, Duration::from_secs(15));
        (closed, started.elapsed())
    })
    .await
    .expect("probe thread");
    assert!(closed, "the silent connection was closed");
    // Tolerance: the deadline is 5 s; allow scheduling slack on a busy 2-core machine.
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}, expected about 5 s"
    );
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_slots_come_back() {
    if !needs_root("connections_beyond_the_cap_are_closed_and_slots_come_back") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let cap = 4;
    let limits = ListenerLimits {
        max_connections: cap,
        // Long enough that the idle connections below stay for the whole test.
        handshake_timeout: Duration::from_secs(60),
        ..ListenerLimits::default()
    };
    let agent = start_with(&pki, state.path(), limits).await;
    let addr = agent.addr();
    let files = pki.client.clone();
    tokio::task::spawn_blocking(move || {
        let mut idle: Vec<TcpStream> = (0..cap).map(|_| connect(addr)).collect();
        // Give the server time to accept all of them.
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = connect(addr);
        assert!(
            closed_within(&mut extra, Duration::from_secs(3)),
            "connection {} of a cap of {cap} is closed",
            cap + 1
        );
        for (i, s) in idle.iter_mut().enumerate() {
            assert!(
                still_open(s, Duration::from_millis(100)),
                "idle connection {i} is still open"
            );
        }
        // Closing one frees its slot.
        drop(idle.pop());
        std::thread::sleep(Duration::from_millis(300));
        let mut again = connect(addr);
        assert!(
            still_open(&mut again, Duration::from_millis(500)),
            "a freed slot is reused"
        );
        drop(again);
        drop(idle);
    })
    .await
    .expect("probe thread");
    // Once the idle sockets are gone, an authenticated client gets in.
    let mut ok = false;
    for _ in 0..20 {
        let mut c = client(addr, &files).await;
        if c.health(HealthRequest {}).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "Health works once the slots are free");
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fault_json_gets_a_bounded_invalid_argument() {
    if !needs_root("hostile_fault_json_gets_a_bounded_invalid_argument") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let agent = start_with(&pki, state.path(), ListenerLimits::default()).await;
    let mut c = client(agent.addr(), &pki.client).await;

    // Billion laughs: one InvalidArgument, quickly, and the agent lives on.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    let started = Instant::now();
    let st = c
        .inject(inject_pid("bomb", std::process::id() as i32, &bomb, 5000))
        .await
        .expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(
        st.message()
            .starts_with("fault_json:5:7: invalid JSON: alias expansion exceeds 100000 nodes"),
        "{}",
        st.message()
    );

    // Thousands of problems: the message is clipped to fit HTTP/2 headers.
    let targets: Vec<String> = (0..3000)
        .map(|i| format!("\"not-an-address-{i}\""))
        .collect();
    let many = format!(
        "{{\"kind\": \"NetworkChaos\", \"spec\": {{\"action\": \"loss\", \"loss\": {{\"loss\": \"10\"}}, \"externalTargets\": [{}]}}}}",
        targets.join(", ")
    );
    let st = c
        .inject(inject_pid("many", std::process::id() as i32, &many, 5000))
        .await
        .expect_err("refused");
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(
        st.message().len() < 4096,
        "message is {} bytes",
        st.message().len()
    );
    assert!(st.message().contains("(message cut at"), "{}", st.message());

    assert!(
        c.health(HealthRequest {}).await.is_ok(),
        "the agent still serves"
    );
    agent.shutdown().await.expect("shutdown");
}
