//! `havoc dashboard` driven in a real headless Chromium (Debian's `chromium`, through
//! Playwright's `playwright-core` from npm: crates/havoc-dashboard/e2e/dashboard.mjs), as a user
//! would use it:
//!
//! - host mode, as root: a mistake shown at its line as it is typed; a dry-run preview naming the
//!   target; an experiment started against a sandbox of two namespaces joined by veth (a delay
//!   between them, a probe pinging across them) and a real `sleep` (paused); both fault windows
//!   seen live, drawn on the live timeline from their measured starts (the report's, within
//!   1 ms), and the probe's chart with its points; Halt; the report opened; the run in the list. Then the machine is checked: the process runs, the namespaces
//!   are as before, the report says the run was aborted (Halt) and every target recovered.
//! - cluster mode, against the real API server of `../shared/k8s` (`HAVOC_E2E_KUBECONFIG`): a
//!   PodChaos created from the page (dry run first), opened with the records and the event an
//!   operator writes (written here as admin: no operator runs in this test), paused, resumed and
//!   deleted through the page, each step checked on the API server.
//!
//! Needs `node`, `/usr/bin/chromium` and the e2e directory's `npm ci` (done here when missing).
//! Without them, or without the cluster, the tests say they skipped, and fail when `CI` is set.
//! `HAVOC_SCREENSHOTS=DIR` keeps the screenshots (docs/ holds the committed ones).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netpair::Pair;
use common::{root_or_skip, state, wait_until, Reaped};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../havoc-dashboard/e2e")
}

fn unavailable(why: String) -> Option<PathBuf> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and the browser tests cannot run: {why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// The e2e directory with its node modules installed, if node and Chromium are here.
fn browser_ready() -> Option<PathBuf> {
    let dir = e2e_dir();
    let chromium = std::env::var("HAVOC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return unavailable(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return unavailable("no node (apt-get install nodejs)".into());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        // One install at a time: both tests of this file may get here at once.
        let lock = std::fs::File::create(std::env::temp_dir().join("havoc-dashboard-e2e-npm.lock"))
            .expect("lock file");
        lock.lock().expect("lock");
        if !dir.join("node_modules/playwright-core").exists() {
            let out = Command::new("timeout")
                .args(["300", "npm", "ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .expect("run npm ci");
            if !out.status.success() {
                return unavailable(format!(
                    "npm ci in {} failed: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    Some(dir)
}

/// Runs one scenario of dashboard.mjs; its JSON results, or a panic with its reason.
fn drive(
    dir: &Path,
    scenario: &str,
    url: &str,
    shots: &Path,
    args: serde_json::Value,
) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["240", "node", "dashboard.mjs", scenario, url])
        .arg(shots)
        .arg(args.to_string())
        .current_dir(dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed (screenshot in {}): {}\n{stdout}",
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("scenario {scenario} printed no results ({e}): {stdout}"));
    assert_eq!(
        v["consoleErrors"],
        serde_json::json!([]),
        "the page logged errors"
    );
    v
}

fn shots_dir(tmp: &tempfile::TempDir) -> PathBuf {
    match std::env::var("HAVOC_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => {
            std::fs::create_dir_all(&d).expect("screenshot dir");
            PathBuf::from(d)
        }
        _ => tmp.path().to_path_buf(),
    }
}

#[test]
fn a_user_starts_watches_halts_and_reads_a_run_in_a_real_browser() {
    if !root_or_skip("a_user_starts_watches_halts_and_reads_a_run_in_a_real_browser") {
        return;
    }
    let Some(dir) = browser_ready() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let shots = shots_dir(&tmp);
    let state_dir = tmp.path().join("state");
    let pair = Pair::new("db");
    let before = Pair::snapshot(&pair.b);
    let sleeper = Reaped::sleeper();
    let pid = sleeper.pid();
    let (_dashboard, addr) = common::spawn_dashboard(&state_dir, &[]);
    let name = format!("browser-{}", std::process::id());
    let experiment = format!(
        "apiVersion: havoc.dev/v1alpha1
kind: Experiment
metadata:
  name: {name}
spec:
  duration: 120s
  steadyState:
    baseline: 1s
    recovery: 2s
    probes:
      - name: ping-b
        cmd: {{ argv: [\"/usr/sbin/ip\", \"netns\", \"exec\", \"{a}\", \"/usr/bin/ping\", \"-c1\", \"-W1\", \"{ip_b}\"] }}
        interval: 300ms
  faults:
    - name: pause-sleeper
      kind: ProcessChaos
      action: pause
      selector:
        pids: [{pid}]
      duration: 120s
    - name: slow-net
      kind: NetworkChaos
      action: delay
      delay:
        latency: 30ms
      selector:
        netns: [{b}]
      duration: 120s
",
        a = pair.a,
        b = pair.b,
        ip_b = pair.ip_b
    );

    let out = drive(
        &dir,
        "host",
        &format!("http://{addr}/"),
        &shots,
        serde_json::json!({ "experiment": experiment, "pid": pid, "name": name }),
    );
    assert!(
        out["problem"].as_str().unwrap_or_default().contains("paws"),
        "the mistake was not named: {out}"
    );
    assert!(
        !out["badLines"].as_array().expect("lines").is_empty(),
        "{out}"
    );
    assert!(
        out["plan"]
            .as_str()
            .expect("plan")
            .contains(&pid.to_string()),
        "{out}"
    );
    assert!(
        out["live"].as_str().expect("live").contains("slow-net"),
        "{out}"
    );
    assert!(
        out["runRow"].as_str().expect("row").contains("aborted"),
        "{out}"
    );
    // Before Halt, the live card drew the probe's samples and both faults' measured windows.
    let points = out["chartPoints"].as_u64().expect("chart points");
    assert!(
        points >= 2,
        "the live probe chart had {points} points: {out}"
    );
    let drawn = out["windows"].as_array().expect("windows");
    assert_eq!(drawn.len(), 2, "{out}");

    // The machine: the fault is gone, and the report on disk agrees with what the page showed.
    assert!(
        wait_until(Duration::from_secs(5), || state(pid) != Some('T')),
        "the sleeper is still stopped after the halt"
    );
    assert_eq!(Pair::snapshot(&pair.b), before, "namespace not restored");
    let reports: Vec<_> = std::fs::read_dir(state_dir.join("reports"))
        .expect("reports")
        .flatten()
        .map(|e| e.path().join("report.json"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reports[0]).expect("read")).expect("json");
    // Halt is an abort asked for by the user (exit 4), as `havoc halt` is.
    assert_eq!(report["verdict"], "aborted", "{report}");
    assert_eq!(report["allRecovered"], true, "{report}");
    let key = reports[0]
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .expect("key");
    assert!(
        out["reportUrl"]
            .as_str()
            .expect("url")
            .ends_with(&format!("/runs/{key}")),
        "{out}"
    );
    // The windows the page drew started when the report says each fault was in effect (the
    // same measurement: within 1 ms, JSON's rendering of a float aside).
    for w in drawn {
        let fault = w["fault"].as_str().expect("fault");
        let f = report["faults"]
            .as_array()
            .expect("faults")
            .iter()
            .find(|f| f["name"] == fault)
            .unwrap_or_else(|| panic!("no fault {fault} in the report"));
        let reported = f["targets"][0]["injectedAtSeconds"]
            .as_f64()
            .expect("injected");
        let drawn_at = w["start"].as_f64().expect("start");
        assert!(
            (reported - drawn_at).abs() <= 0.001,
            "{fault}: drawn from {drawn_at} s, reported {reported} s"
        );
    }
}

#[test]
fn a_user_manages_a_pod_chaos_in_the_cluster_in_a_real_browser() {
    let kubeconfig = match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            unavailable("HAVOC_E2E_KUBECONFIG not set (start ../shared/k8s)".into());
            return;
        }
    };
    let Some(dir) = browser_ready() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let shots = shots_dir(&tmp);
    let ns = Namespace::new(&kubeconfig);
    let (_dashboard, addr) =
        common::spawn_dashboard(&tmp.path().join("state"), &["--kubeconfig", &kubeconfig]);
    let url = format!("http://{addr}/");
    let manifest = "apiVersion: havoc.dev/v1alpha1
kind: PodChaos
metadata:
  name: kill-web
spec:
  action: pod-kill
  mode: one
  selector:
    labelSelectors:
      app: web
";
    let out = drive(
        &dir,
        "cluster-create",
        &url,
        &shots,
        serde_json::json!({ "namespace": ns.name, "manifest": manifest, "name": "kill-web" }),
    );
    assert!(
        out["action"].as_str().expect("action").contains("Created"),
        "{out}"
    );
    assert_eq!(
        ns.kubectl(&["get", "podchaos", "kill-web", "-o", "name"])
            .trim(),
        "podchaos.havoc.dev/kill-web"
    );

    // What an operator writes: status with a record, and an event.
    let status = {
        use havoc_k8s::status::{ChaosStatus, Phase, Record, RecordPhase};
        let mut v = serde_json::to_value(ChaosStatus {
            phase: Phase::Running,
            records: vec![Record {
                namespace: ns.name.clone(),
                name: "web-0".into(),
                node: "node-1".into(),
                container_id: "0123456789ab".into(),
                pod_uid: String::new(),
                phase: RecordPhase::Injected,
                injected: 1,
                recovered: 0,
                last_error: None,
                since_ms: None,
                served_ms: 0,
            }],
            ..Default::default()
        })
        .expect("status");
        v["counts"]["injected"] = 1.into();
        v["conditions"] = serde_json::json!([{"type": "AllInjected", "status": "True",
            "reason": "Injected", "message": "1 of 1", "lastTransitionTime": "2026-12-01T00:00:00Z"}]);
        serde_json::json!({ "status": v }).to_string()
    };
    ns.kubectl(&[
        "patch",
        "podchaos",
        "kill-web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    let uid = ns.kubectl(&[
        "get",
        "podchaos",
        "kill-web",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": "kill-web-", "namespace": ns.name},
        "involvedObject": {"apiVersion": "havoc.dev/v1alpha1", "kind": "PodChaos", "name": "kill-web",
                           "namespace": ns.name, "uid": uid.trim()},
        "reason": "Injected", "message": "pod-kill on web-0", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-12-01T00:00:00Z", "lastTimestamp": "2026-12-01T00:00:00Z",
    });
    let file = tmp.path().join("event.json");
    std::fs::write(&file, event.to_string()).expect("write");
    ns.kubectl(&["create", "-f", &file.to_string_lossy()]);

    let out = drive(
        &dir,
        "cluster-manage",
        &url,
        &shots,
        serde_json::json!({ "namespace": ns.name, "name": "kill-web", "eventMessage": "pod-kill on web-0" }),
    );
    let detail = out["detail"].as_str().expect("detail");
    assert!(detail.contains("AllInjected"), "no condition: {out}");
    assert!(
        detail.contains("web-0") && detail.contains("node-1"),
        "no record row: {out}"
    );
    assert_eq!(out["deleted"], true);
    assert!(
        wait_until(Duration::from_secs(10), || ns
            .kubectl_status(&["get", "podchaos", "kill-web"])
            .is_err()),
        "the PodChaos is still on the API server after Delete"
    );
}

/// A namespace of one test, removed (and waited for) on drop; `kubectl` of the test cluster.
struct Namespace {
    name: String,
    kubeconfig: String,
}

impl Namespace {
    fn new(kubeconfig: &str) -> Namespace {
        let ns = Namespace {
            name: format!("havoc-browser-{:x}", std::process::id()),
            kubeconfig: kubeconfig.into(),
        };
        // The CRDs, as `havoc crds` prints them (server-side apply: idempotent).
        let crds = Command::new(common::havoc())
            .arg("crds")
            .output()
            .expect("havoc crds");
        assert!(crds.status.success());
        let file =
            std::env::temp_dir().join(format!("havoc-browser-crds-{}.yaml", std::process::id()));
        std::fs::write(&file, &crds.stdout).expect("write");
        ns.kubectl_global(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &file.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&file);
        ns.kubectl_global(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ]);
        ns.kubectl_global(&["create", "namespace", &ns.name]);
        ns
    }

    /// The harness's kubectl: its state dir (the kubeconfig's) names the unpacked binaries' dir.
    fn kubectl_bin(&self) -> PathBuf {
        Path::new(&self.kubeconfig)
            .parent()
            .and_then(|state| std::fs::read_to_string(state.join("bin-dir")).ok())
            .map(|d| PathBuf::from(d.trim()).join("kubectl"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("kubectl"))
    }

    fn run(&self, args: &[&str], namespaced: bool) -> Result<String, String> {
        let mut cmd = Command::new(self.kubectl_bin());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if namespaced {
            cmd.args(["-n", &self.name]);
        }
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.run(args, true)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn kubectl_status(&self, args: &[&str]) -> Result<String, String> {
        self.run(args, true)
    }

    fn kubectl_global(&self, args: &[&str]) -> String {
        self.run(args, false)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(names) = self.run(&["get", "podchaos", "-o", "name"], true) {
            for n in names.lines() {
                let _ = self.run(
                    &[
                        "patch",
                        n,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    true,
                );
            }
        }
        let _ = self.run(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=true",
                "--timeout=60s",
            ],
            false,
        );
    }
}
