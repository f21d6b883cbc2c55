//! TimeChaos, SyscallChaos and IOChaos through the operator's agent client and a real agent
//! over mutual TLS, into real processes: the fault is made from a Kubernetes manifest exactly as
//! the controller encodes it (a Chaos Mesh manifest converted first, for TimeChaos and IOChaos),
//! and the effect is read from what the target process itself observes: the time it reads, the
//! result of its `open` calls. Recovery through the agent leaves the target as it was.
//!
//! The targets are Python processes (`time.time()` through the vDSO, `open()` through `openat`);
//! the IOChaos target runs in a mount namespace of its own (as a container does), so the test
//! also checks that the fault is only seen there.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havoc_api::v1::{target::Kind, InjectRequest, RecoverRequest, Target};
use havoc_k8s::convert::{convert, validate_manifest};
use havoc_k8s::ChaosAction;
use havoc_operator::agent::{fault_json, AgentLocator};
use havoc_operator::{AgentPool, AgentTls, GrpcAgentPool};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test cannot run: {why}"
    );
    eprintln!("SKIPPED: {why}");
    true
}

/// The real Python interpreter (not a version manager's shim script).
fn python() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!p.is_empty()).then_some(p)
}

/// A target process whose stdout lines arrive on a channel with the time they were read;
/// killed and reaped on drop.
struct Reader {
    child: Child,
    lines: mpsc::Receiver<(SystemTime, String)>,
}

impl Reader {
    fn spawn(mut cmd: Command) -> Reader {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the target");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send((SystemTime::now(), line)).is_err() {
                    return;
                }
            }
        });
        Reader { child, lines: rx }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lines read from now on, for `d`.
    fn collect(&self, d: Duration) -> Vec<(SystemTime, String)> {
        while self.lines.try_recv().is_ok() {}
        let end = Instant::now() + d;
        let mut v = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the target exited"),
            }
        }
        v
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real agent on loopback with mTLS and the operator's pool pointed at it.
struct Agent {
    _dir: tempfile::TempDir,
    handle: Option<havoc_agent::RunningAgent>,
    pool: GrpcAgentPool,
}

impl Agent {
    async fn start() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = havoc_api::pki::write_bundle(&dir.path().join("pki"), &["havoc-agent".into()])
            .expect("pki");
        let mut opts = havoc_agent::AgentOptions::new(Some(havoc_api::tls::TlsFiles {
            ca: b.ca.clone(),
            cert: b.agent_cert.clone(),
            key: b.agent_key.clone(),
        }));
        opts.listen = "127.0.0.1:0".parse().expect("addr");
        opts.metrics_addr = None;
        opts.state_dir = dir.path().join("state");
        // The watchdog re-runs `self_exe __watchdog`, and this test binary is not `havoc`.
        opts.watchdog = false;
        let handle = havoc_agent::start(opts).await.expect("agent starts");
        let pool = GrpcAgentPool::new(
            AgentLocator::Static(BTreeMap::from([(
                "node-a".to_string(),
                format!("https://127.0.0.1:{}", handle.addr().port()),
            )])),
            &AgentTls {
                ca: b.ca.clone(),
                cert: b.operator_cert.clone(),
                key: b.operator_key.clone(),
                server_name: havoc_operator::agent::AGENT_TLS_NAME.into(),
            },
        )
        .expect("pool");
        Agent {
            _dir: dir,
            handle: Some(handle),
            pool,
        }
    }

    /// Injects `manifest`'s agent fault into `pid`; returns the injection id.
    async fn inject(&self, key: &str, manifest: &str, pid: i32) -> String {
        let m = validate_manifest(manifest).unwrap_or_else(|e| panic!("{}", e.render("manifest")));
        let ChaosAction::Agent { fault, .. } = m.action() else {
            panic!("not an agent action: {manifest}")
        };
        let r = self
            .pool
            .inject(
                "node-a",
                InjectRequest {
                    idempotency_key: key.into(),
                    fault_json: fault_json(&fault).expect("encode"),
                    target: Some(Target {
                        kind: Some(Kind::Pid(pid)),
                    }),
                    lease_ttl_ms: 30_000,
                    owner: format!("{} shop/x", m.kind()),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("inject {}: {e}", m.kind()));
        assert_eq!(r.pid, pid);
        r.injection_id
    }

    async fn recover(&self, id: &str) {
        let r = self
            .pool
            .recover(
                "node-a",
                RecoverRequest {
                    injection_id: id.into(),
                },
            )
            .await
            .expect("recover");
        assert!(r.recovered, "{}", r.reason);
        assert!(self.pool.list("node-a").await.expect("list").is_empty());
    }

    async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
    }
}

/// The only document of a `havoc convert` output.
fn converted(chaos_mesh: &str) -> String {
    convert(chaos_mesh)
        .unwrap_or_else(|e| panic!("{}", e.render("chaos-mesh.yaml")))
        .trim_start_matches("---\n")
        .to_string()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Offsets (printed time minus the time the line was read) of the lines.
fn offsets(lines: &[(SystemTime, String)]) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|(at, l)| l.trim().parse::<f64>().ok().map(|v| v - unix(*at)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_chaos_mesh_time_chaos_skews_the_targets_clock_through_the_agent() {
    if !is_root() && skip("needs root (ptrace of the target)") {
        return;
    }
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let mut cmd = Command::new(&py);
    cmd.args([
        "-u",
        "-c",
        "import time\nwhile True:\n    print(repr(time.time()), flush=True)\n    time.sleep(0.05)\n",
    ]);
    let target = Reader::spawn(cmd);
    let before = offsets(&target.collect(Duration::from_millis(500)));
    assert!(before.len() >= 3, "the target prints its time: {before:?}");
    assert!(before.iter().all(|o| o.abs() < 0.5), "{before:?}");

    let manifest = converted(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: TimeChaos\nmetadata: {name: clock, namespace: shop}\nspec:\n  mode: one\n  selector: {labelSelectors: {app: clock}}\n  timeOffset: -10m\n  clockIds: [CLOCK_REALTIME]\n  duration: 1m\n",
    );
    let agent = Agent::start().await;
    let id = agent.inject("uid/pod/c/0", &manifest, target.pid()).await;
    let during = offsets(&target.collect(Duration::from_millis(700)));
    assert!(during.len() >= 5, "the target still runs: {during:?}");
    // Every line read after the injection answered is skewed by -600 s (the read adds a few ms).
    for o in &during {
        assert!(
            (o + 600.0).abs() < 0.5,
            "offset {o:.3}s, expected -600s: {during:?}"
        );
    }
    agent.recover(&id).await;
    let after = offsets(&target.collect(Duration::from_millis(500)));
    assert!(after.len() >= 3, "the target still runs: {after:?}");
    assert!(
        after.iter().all(|o| o.abs() < 0.5),
        "the real time is back: {after:?}"
    );
    agent.stop().await;
}

/// A Python loop that opens and reads each of `paths` every 20 ms and prints `ok` or the errno
/// per path: `ok ok`, `5 ok`.
fn opener(py: &str, paths: &[&std::path::Path], unshare_mounts: bool) -> Command {
    let script = "import sys, time\nwhile True:\n    out = []\n    for p in sys.argv[1:]:\n        try:\n            with open(p) as f:\n                f.read()\n            out.append('ok')\n        except OSError as e:\n            out.append(str(e.errno))\n    print(' '.join(out), flush=True)\n    time.sleep(0.02)\n";
    let mut cmd = if unshare_mounts {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", py]);
        c
    } else {
        Command::new(py)
    };
    cmd.args(["-u", "-c", script]);
    for p in paths {
        cmd.arg(p);
    }
    cmd
}

fn results(lines: &[(SystemTime, String)]) -> Vec<String> {
    lines.iter().map(|(_, l)| l.trim().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syscall_chaos_fails_the_matching_opens_of_the_target_through_the_agent() {
    if !is_root() && skip("needs root (ptrace of the target)") {
        return;
    }
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let hit = dir.path().join("data").join("a.db");
    let other = dir.path().join("other.txt");
    std::fs::create_dir_all(hit.parent().expect("parent")).expect("mkdir");
    std::fs::write(&hit, "x").expect("write");
    std::fs::write(&other, "y").expect("write");
    let target = Reader::spawn(opener(&py, &[&hit, &other], false));
    let before = results(&target.collect(Duration::from_millis(300)));
    assert!(
        !before.is_empty() && before.iter().all(|l| l == "ok ok"),
        "{before:?}"
    );
    let manifest = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: SyscallChaos\nmetadata: {{name: s, namespace: shop}}\nspec:\n  mode: one\n  selector: {{labelSelectors: {{app: db}}}}\n  syscalls: [openat]\n  errno: EACCES\n  path: {}/data/**\n",
        dir.path().display()
    );
    let agent = Agent::start().await;
    let id = agent.inject("uid/pod/c/1", &manifest, target.pid()).await;
    let during = results(&target.collect(Duration::from_millis(500)));
    assert!(during.len() >= 5, "the target still runs: {during:?}");
    assert!(
        during.iter().all(|l| l == "13 ok"),
        "only the matching path fails, with EACCES: {during:?}"
    );
    agent.recover(&id).await;
    let after = results(&target.collect(Duration::from_millis(300)));
    assert!(
        !after.is_empty() && after.iter().all(|l| l == "ok ok"),
        "{after:?}"
    );
    agent.stop().await;
}

/// The `havoc-io.*` FUSE mounts in the mount namespace of `pid`.
fn havoc_mounts(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains("havoc-io."))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_chaos_mesh_io_chaos_faults_only_the_targets_mount_namespace() {
    if !is_root() && skip("needs root (mounts in the target's mount namespace)") {
        return;
    }
    if !std::path::Path::new("/dev/fuse").exists() && skip("/dev/fuse is missing") {
        return;
    }
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let vol = dir.path().join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir");
    let file = vol.join("f.txt");
    std::fs::write(&file, "data").expect("write");
    // The target has a mount namespace of its own, as a container has.
    let target = Reader::spawn(opener(&py, &[&file], true));
    let before = results(&target.collect(Duration::from_millis(500)));
    assert!(
        !before.is_empty() && before.iter().all(|l| l == "ok"),
        "{before:?}"
    );
    let mounts_before =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", target.pid())).expect("mountinfo");
    let manifest = converted(&format!(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: IOChaos\nmetadata: {{name: io, namespace: shop}}\nspec:\n  action: fault\n  mode: one\n  selector: {{labelSelectors: {{app: db}}}}\n  volumePath: {}\n  path: {}/*.txt\n  errno: 5\n  percent: 100\n",
        vol.display(),
        vol.display()
    ));
    let agent = Agent::start().await;
    let id = agent.inject("uid/pod/c/2", &manifest, target.pid()).await;
    assert_eq!(
        havoc_mounts(target.pid()).len(),
        1,
        "one FUSE mount in the target's namespace"
    );
    assert!(
        havoc_mounts(std::process::id() as i32).is_empty(),
        "nothing is mounted in the test's own namespace"
    );
    let during = results(&target.collect(Duration::from_millis(500)));
    assert!(during.len() >= 5, "the target still runs: {during:?}");
    assert!(
        during.iter().all(|l| l == "5"),
        "EIO for the target: {during:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("the host reads the file"),
        "data",
        "outside the target's mount namespace the file is untouched"
    );
    agent.recover(&id).await;
    let after = results(&target.collect(Duration::from_millis(300)));
    assert!(
        !after.is_empty() && after.iter().all(|l| l == "ok"),
        "{after:?}"
    );
    assert!(havoc_mounts(target.pid()).is_empty(), "no mount left");
    let mounts_after =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", target.pid())).expect("mountinfo");
    assert_eq!(
        mounts_before, mounts_after,
        "the target's mount table is as before"
    );
    agent.stop().await;
}
