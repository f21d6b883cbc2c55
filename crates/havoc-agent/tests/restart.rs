//! The agent as a process of its own: SIGKILL mid-injection leaves nothing behind once it is
//! restarted, even if its watchdog could not act (kernel-owned faults die with it, the journal
//! replay at the next start undoes the rest), and SIGTERM recovers everything before exit.
//! What the watchdog does on its own is in `watchdog.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use havoc_api::v1::ListRequest;

struct Testd {
    child: Child,
    addr: std::net::SocketAddr,
    watchdog: i32,
}

impl Testd {
    fn start(pki: &Pki, state: &Path) -> Testd {
        let s = &pki.server;
        let mut child = Command::new(testd())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(state)
            .arg("--tls")
            .args([&s.ca, &s.cert, &s.key])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn testd");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut said = |what: &str| loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).expect("read") > 0, "testd ended");
            if let Some(v) = line.trim().strip_prefix(what) {
                break v.to_string();
            }
        };
        let addr = said("listening ").parse().expect("addr");
        let watchdog = said("watchdog ").parse().expect("pid");
        Testd {
            child,
            addr,
            watchdog,
        }
    }

    fn signal(&mut self, signo: i32) -> std::process::ExitStatus {
        havoc_sys::process::send_signal(self.child.id() as i32, signo).expect("signal");
        self.child.wait().expect("wait")
    }
}

impl Drop for Testd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn journals(state: &Path) -> usize {
    std::fs::read_dir(state.join("runs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_injection_leaves_nothing_behind_after_restart() {
    if !root_or_skip("sigkill_mid_injection_leaves_nothing_behind_after_restart") {
        return;
    }
    let pki = Pki::new();
    let state = tempfile::tempdir().expect("tempdir");
    let ns = NetnsSleeper::new();
    let paused = Reaped::sleeper();

    let mut agent = Testd::start(&pki, state.path());
    let mut c = client(agent.addr, &pki.client).await;
    c.inject(inject_pid(
        "loss",
        ns.pid(),
        r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "direction": "from", "loss": {"loss": "60"}}}"#,
        60_000,
    ))
    .await
    .expect("inject loss");
    c.inject(inject_pid("pause", paused.pid(), PAUSE, 60_000))
        .await
        .expect("inject pause");
    let loss = tokio::task::block_in_place(|| ns.udp_loss(7401, 1000));
    assert!(loss > 0.45, "loss active: {loss}");
    assert_eq!(proc_state(paused.pid()), Some('T'));
    assert_eq!(journals(state.path()), 2, "journaled before injecting");

    // Its watchdog can do nothing while stopped (and the agent does not start another one for a
    // stopped watchdog): what follows is up to the restarted agent.
    let watchdog = agent.watchdog;
    havoc_sys::process::send_signal(watchdog, 19).expect("SIGSTOP the watchdog");
    let status = agent.signal(9);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    drop(c);
    // The eBPF datapath was held by a TCX link of the dead process: gone with it.
    let loss = tokio::task::block_in_place(|| ns.udp_loss(7402, 1000));
    assert!(loss < 0.01, "no loss once the holder is dead: {loss}");
    // A stopped process is not kernel-owned: it stays stopped until the journal is replayed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(proc_state(paused.pid()), Some('T'));
    havoc_sys::process::send_signal(watchdog, 9).expect("SIGKILL the watchdog");

    let mut agent = Testd::start(&pki, state.path());
    assert!(
        wait_until(Duration::from_secs(2), || proc_state(paused.pid())
            != Some('T')),
        "the restarted agent replayed the journal and resumed the target"
    );
    assert_eq!(journals(state.path()), 0, "replayed journals are removed");
    let mut c = client(agent.addr, &pki.client).await;
    let list = c.list(ListRequest {}).await.expect("list").into_inner();
    assert!(list.injections.is_empty(), "the new agent holds nothing");

    // SIGTERM recovers what is held before exiting.
    c.inject(inject_pid("pause-2", paused.pid(), PAUSE, 60_000))
        .await
        .expect("inject pause");
    assert_eq!(proc_state(paused.pid()), Some('T'));
    let status = agent.signal(15);
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    assert_ne!(proc_state(paused.pid()), Some('T'), "resumed at SIGTERM");
    assert_eq!(journals(state.path()), 0);
}
