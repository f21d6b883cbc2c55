//! Chaos Mesh manifests (chaos objects, Schedules and Workflows) converted by `havoc convert` are
//! accepted by a real API server with
//! Havoc's CRDs (`kubectl apply --dry-run=server`: the schema, its patterns and the CEL rules),
//! and the object the server would store means what the converter wrote (its spec reads back
//! equal after the server's defaulting).
//!
//! Runs with `HAVOC_E2E_KUBECONFIG` set, like the e2e suite (no kubelet needed); without it,
//! it prints that it skipped, or fails when `CI` is set. It installs the CRDs (as the e2e suite
//! does) and creates nothing else: every apply is a dry run in the `default` namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

fn kubeconfig() -> Option<String> {
    match std::env::var("HAVOC_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI is set but HAVOC_E2E_KUBECONFIG is not: this test must run in CI \
             (start ../shared/k8s and source its env.sh)"
        ),
        _ => {
            println!("skipped: HAVOC_E2E_KUBECONFIG not set (start ../shared/k8s, source env.sh)");
            None
        }
    }
}

/// The harness's kubectl: its state dir (the kubeconfig's) names the binaries' dir in
/// `bin-dir`; else the first `kubectl` on PATH.
fn kubectl(kubeconfig: &str) -> PathBuf {
    let state = Path::new(kubeconfig).parent().expect("kubeconfig dir");
    if let Ok(dir) = std::fs::read_to_string(state.join("bin-dir")) {
        let k = Path::new(dir.trim()).join("kubectl");
        if k.exists() {
            return k;
        }
    }
    PathBuf::from("kubectl")
}

/// `kubectl apply --dry-run=server -o json -f -` of `yaml`: the object the server would store,
/// or the server's refusal.
fn dry_run(kubectl: &Path, kubeconfig: &str, yaml: &str) -> Result<serde_json::Value, String> {
    let mut child = Command::new(kubectl)
        .args([
            "--kubeconfig",
            kubeconfig,
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl output");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(stderr);
    }
    assert!(
        !stderr.contains("Warning"),
        "the server warned about a converted manifest: {stderr}\n{yaml}"
    );
    serde_json::from_slice(&out.stdout).map_err(|e| format!("kubectl printed no object: {e}"))
}

/// Real-world shaped Chaos Mesh manifests, one per field the converter translates.
const MANIFESTS: &[(&str, &str)] = &[
    ("partition-both-target", "kind: NetworkChaos\nspec:\n  action: partition\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  direction: both\n  target:\n    mode: one\n    selector: {labelSelectors: {app: db}}\n  duration: 90s\n"),
    ("delay-to-target", "kind: NetworkChaos\nspec:\n  action: delay\n  mode: one\n  selector: {namespaces: [default], labelSelectors: {app: web}}\n  delay: {latency: 10ms, correlation: \"100\", jitter: 0ms}\n  direction: to\n  target:\n    mode: fixed-percent\n    value: \"50\"\n    selector: {namespaces: [default], labelSelectors: {app: db}}\n  duration: 1h30m\n"),
    ("loss-from-target", "kind: NetworkChaos\nspec:\n  action: loss\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  loss: {loss: \"25\", correlation: \"25\"}\n  direction: from\n  target: {mode: all, selector: {labelSelectors: {app: db}}}\n"),
    ("duplicate-both-target", "kind: NetworkChaos\nspec:\n  action: duplicate\n  mode: one\n  selector: {labelSelectors: {app: web}}\n  duplicate: {duplicate: \"40\", correlation: \"25\"}\n  direction: both\n  target: {mode: fixed, value: \"1\", selector: {labelSelectors: {app: db}}}\n"),
    ("corrupt", "kind: NetworkChaos\nspec:\n  action: corrupt\n  mode: one\n  selector: {labelSelectors: {app: web}}\n  corrupt: {corrupt: \"40\", correlation: \"25\"}\n  duration: 1500ms\n"),
    ("bandwidth-target", "kind: NetworkChaos\nspec:\n  action: bandwidth\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  bandwidth: {rate: 1mbps, limit: 20971520, buffer: 10000}\n  direction: to\n  target: {mode: all, selector: {labelSelectors: {app: db}}}\n"),
    ("rate", "kind: NetworkChaos\nspec:\n  action: rate\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  rate: {rate: 100kbps}\n"),
    ("external-hosts-ports", "kind: NetworkChaos\nspec:\n  action: delay\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  delay: {latency: 100ms}\n  direction: to\n  externalTargets: [\"db.example.com:5432\", \"10.0.0.0/8:5432\", \"[fd00::1]:5432\"]\n"),
    ("external-hosts", "kind: NetworkChaos\nspec:\n  action: loss\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  loss: {loss: \"100\"}\n  externalTargets: [www.example.com, 1.2.3.4, fd00::/64]\n"),
    ("device-target-device", "kind: NetworkChaos\nspec:\n  action: loss\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  loss: {loss: \"5\"}\n  device: eth0\n  direction: to\n  targetDevice: eth0\n  target: {mode: all, selector: {labelSelectors: {app: db}}}\n"),
    ("netem-both-no-target", "kind: NetworkChaos\nspec:\n  action: netem\n  mode: all\n  selector: {}\n  direction: both\n  delay: {latency: 1s, jitter: 90ms, reorder: {reorder: \"10\", correlation: \"0\", gap: 2}}\n  loss: {loss: \"1\"}\n"),
    ("stressng", "kind: StressChaos\nspec:\n  mode: one\n  selector: {labelSelectors: {app: web}}\n  stressngStressors: --cpu 2 --cpu-load 50 --vm 1 --vm-bytes 64m --timeout 5m\n  duration: 10m\n"),
    ("stress-options", "kind: StressChaos\nspec:\n  mode: all\n  selector: {}\n  stressors:\n    cpu: {workers: 1, load: 20, options: [\"--cpu-load 30\"]}\n    memory: {workers: 1, size: 256MB, options: [\"--vm 2\"]}\n  duration: 36h\n"),
    ("pod-failure-empty-selector", "kind: PodChaos\nspec:\n  action: pod-failure\n  mode: all\n  selector: {}\n  duration: 2m30s\n"),
    ("time-skew", "kind: TimeChaos\nspec:\n  mode: one\n  selector: {labelSelectors: {app: web}}\n  timeOffset: -1h30m\n  clockIds: [CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME]\n  containerNames: [web]\n  duration: 5m\n"),
    ("io-latency", "kind: IOChaos\nspec:\n  action: latency\n  mode: one\n  selector: {labelSelectors: {app: db}}\n  volumePath: /var/lib/db\n  path: /var/lib/db/**/*\n  methods: [READ, write]\n  percent: 50\n  delay: 1s500ms\n"),
    ("io-fault-errno-number", "kind: IOChaos\nspec:\n  action: fault\n  mode: all\n  selector: {labelSelectors: {app: db}}\n  volumePath: /var/lib/db\n  errno: 5\n  percent: 30\n"),
    ("io-attr-decimal-perm", "kind: IOChaos\nspec:\n  action: attrOverride\n  mode: all\n  selector: {}\n  volumePath: /etc/app\n  attr: {perm: 292, size: 0, kind: regularFile, mtime: {sec: 0, nsec: 5}}\n"),
    ("io-mistake", "kind: IOChaos\nspec:\n  action: mistake\n  mode: one\n  selector: {}\n  volumePath: /cache\n  methods: [read]\n  mistake: {filling: zero, maxOccurrences: 1, maxLength: 4096}\n"),
    ("dns-error-patterns", "kind: DNSChaos\nspec:\n  action: error\n  mode: all\n  selector: {labelSelectors: {app: web}}\n  patterns: [google.com, \"chaos-mesh.*\", github.?om]\n  duration: 90s\n"),
    ("dns-random-every-name", "kind: DNSChaos\nspec:\n  action: random\n  mode: fixed-percent\n  value: \"50\"\n  selector: {}\n"),
    ("http-request-abort", "kind: HTTPChaos\nspec:\n  mode: all\n  selector: {labelSelectors: {app: api}}\n  target: Request\n  port: 8080\n  method: GET\n  path: /api/*\n  request_headers: {X-User: alice}\n  abort: true\n  duration: 1m\n"),
    ("http-request-replace-patch", "kind: HTTPChaos\nspec:\n  mode: one\n  selector: {}\n  target: Request\n  port: 80\n  delay: 1.5s\n  replace: {path: /v2/items, method: PUT, queries: {page: \"1\"}, headers: {X-A: b}, body: aGk=}\n  patch: {queries: [[foo, bar]], headers: [[X-Chaos, \"1\"]]}\n"),
    ("http-response-replace-patch", "kind: HTTPChaos\nspec:\n  mode: one\n  selector: {}\n  target: Response\n  port: 8080\n  code: 200\n  response_headers: {Content-Type: application/json}\n  replace: {code: 503, body: eyJvayI6ZmFsc2V9, headers: {Retry-After: \"5\"}}\n  patch: {body: {type: JSON, value: '{\"degraded\": true}'}, headers: [[Set-Cookie, a=1], [Set-Cookie, b=2]]}\n"),
];

/// Chaos Mesh Schedules and Workflows (Chaos Mesh's documented shapes) embedding every chaos
/// kind both have.
const PROGRAMS: &[(&str, &str)] = &[
    (
        "schedule-pod-kill",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-pod-kill, namespace: default}
spec:
  schedule: "@every 30s"
  concurrencyPolicy: Forbid
  historyLimit: 5
  startingDeadlineSeconds: 10
  type: PodChaos
  podChaos: {action: pod-kill, mode: one, selector: {labelSelectors: {app: web}}}
"#,
    ),
    (
        "schedule-io",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-io, namespace: default}
spec:
  schedule: "5 * * * *"
  type: IOChaos
  ioChaos: {action: latency, mode: one, selector: {labelSelectors: {app: db}}, volumePath: /var/lib/db, path: /var/lib/db/**/*, delay: 100ms, percent: 50, duration: 30s}
"#,
    ),
    (
        "schedule-time",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-time, namespace: default}
spec:
  schedule: "0 */2 * * *"
  concurrencyPolicy: Allow
  type: TimeChaos
  timeChaos: {mode: all, selector: {}, timeOffset: -10m, duration: 1m}
"#,
    ),
    (
        "schedule-dns",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-dns, namespace: default}
spec:
  schedule: "@hourly"
  type: DNSChaos
  dnsChaos: {action: error, mode: all, selector: {}, patterns: [google.com], duration: 90s}
"#,
    ),
    (
        "schedule-http",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-http, namespace: default}
spec:
  schedule: "*/10 * * * * *"
  type: HTTPChaos
  httpChaos: {mode: one, selector: {labelSelectors: {app: api}}, target: Request, port: 8080, method: GET, path: /api/*, abort: true, duration: 5s}
"#,
    ),
    (
        "schedule-workflow",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-workflow, namespace: default}
spec:
  schedule: "@daily"
  type: Workflow
  workflow:
    entry: main
    templates:
      - {name: main, templateType: Serial, children: [delay, pause]}
      - name: delay
        templateType: NetworkChaos
        deadline: 1m
        networkChaos: {action: delay, mode: all, selector: {labelSelectors: {app: web}}, delay: {latency: 90ms}}
      - {name: pause, templateType: Suspend, deadline: 30s}
"#,
    ),
    (
        "workflow-every-kind",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: workflow-every-kind, namespace: default}
spec:
  entry: main
  templates:
    - {name: main, templateType: Serial, children: [check, faults, probe]}
    - name: check
      templateType: StatusCheck
      deadline: 20s
      abortWithStatusCheck: true
      statusCheck:
        mode: Continuous
        type: HTTP
        intervalSeconds: 2
        failureThreshold: 2
        http: {url: "http://web.default.svc:8080/healthz", method: GET, criteria: {statusCode: "200"}}
    - {name: faults, templateType: Parallel, children: [kill, loss, cpu, io, skew, dns, http]}
    - {name: kill, templateType: PodChaos, podChaos: {action: pod-kill, mode: one, selector: {labelSelectors: {app: web}}}}
    - {name: loss, templateType: NetworkChaos, deadline: 30s, networkChaos: {action: loss, mode: all, selector: {}, loss: {loss: "20"}}}
    - {name: cpu, templateType: StressChaos, deadline: 30s, stressChaos: {mode: one, selector: {}, stressors: {cpu: {workers: 1, load: 50}}}}
    - {name: io, templateType: IOChaos, deadline: 30s, ioChaos: {action: fault, mode: one, selector: {}, volumePath: /data, errno: 5, percent: 10}}
    - {name: skew, templateType: TimeChaos, timeChaos: {mode: one, selector: {}, timeOffset: 1h, duration: 20s}}
    - {name: dns, templateType: DNSChaos, deadline: 30s, dnsChaos: {action: random, mode: all, selector: {}}}
    - {name: http, templateType: HTTPChaos, deadline: 30s, httpChaos: {mode: all, selector: {}, target: Response, port: 80, code: 200, replace: {code: 503}}}
    - name: probe
      templateType: Task
      deadline: 1m
      task: {container: {name: probe, image: busybox:1.36, command: [sh, -c, "echo ok"]}}
      conditionalBranches:
        - {target: pause, expression: 'exitCode == 0 && stdout == "ok"'}
    - {name: pause, templateType: Suspend, deadline: 5s}
"#,
    ),
    (
        "workflow-schedule-template",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: workflow-schedule-template, namespace: default}
spec:
  entry: main
  templates:
    - {name: main, templateType: Serial, children: [kill-often, lossy]}
    - name: kill-often
      templateType: Schedule
      deadline: 5m
      schedule:
        schedule: "*/30 * * * * *"
        startingDeadlineSeconds: null
        concurrencyPolicy: Forbid
        historyLimit: 3
        type: PodChaos
        podChaos: {action: pod-kill, mode: one, selector: {labelSelectors: {app: web}}}
    - name: lossy
      templateType: Schedule
      deadline: 10m
      schedule:
        schedule: "@every 2m"
        startingDeadlineSeconds: 30
        concurrencyPolicy: Allow
        type: NetworkChaos
        networkChaos: {action: loss, mode: all, selector: {}, loss: {loss: "20"}, duration: 30s}
"#,
    ),
    (
        "schedule-of-a-workflow-with-a-schedule-template",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: schedule-of-a-workflow-with-a-schedule-template, namespace: default}
spec:
  schedule: "@daily"
  type: Workflow
  workflow:
    entry: hour
    templates:
      - name: hour
        templateType: Schedule
        deadline: 1h
        schedule:
          schedule: "@every 10m"
          type: StressChaos
          stressChaos: {mode: one, selector: {}, stressors: {cpu: {workers: 1, load: 50}}, duration: 1m}
"#,
    ),
];

#[tokio::test]
async fn converted_chaos_mesh_manifests_are_accepted_by_the_api_server() {
    let Some(path) = kubeconfig() else { return };
    let kc = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    let client = kube::Client::try_from(cfg).expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in havoc_k8s::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("havoc-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
        let t0 = Instant::now();
        loop {
            let established = crds
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "CRD {name} not Established"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let kubectl = kubectl(&path);
    // A freshly established CRD can take a moment to be served for dry runs.
    let mut served = false;
    for _ in 0..100 {
        let probe = havoc_k8s::convert(&format!(
            "apiVersion: chaos-mesh.org/v1alpha1\nmetadata: {{name: probe, namespace: default}}\n{}",
            MANIFESTS[0].1
        ))
        .expect("probe converts");
        if dry_run(&kubectl, &path, &probe).is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the havoc.dev CRDs are not served");

    for (name, body) in MANIFESTS {
        let src = format!(
            "apiVersion: chaos-mesh.org/v1alpha1\nmetadata:\n  name: {name}\n  namespace: default\n{body}"
        );
        let converted = havoc_k8s::convert(&src)
            .unwrap_or_else(|e| panic!("{name}: does not convert:\n{}", e.render(name)));
        let stored = dry_run(&kubectl, &path, &converted).unwrap_or_else(|e| {
            panic!("{name}: the API server refused the converted manifest: {e}\n{converted}")
        });
        // The server's object, read back, means what the converter wrote.
        let back = serde_yaml_ng::to_string(&serde_json::json!({
            "apiVersion": stored["apiVersion"],
            "kind": stored["kind"],
            "metadata": {"name": stored["metadata"]["name"], "namespace": stored["metadata"]["namespace"]},
            "spec": stored["spec"],
        }))
        .expect("yaml");
        let ours = havoc_k8s::validate_manifest(converted.trim_start_matches("---\n"))
            .unwrap_or_else(|e| panic!("{name}: {}", e.render(name)));
        let theirs = havoc_k8s::validate_manifest(&back).unwrap_or_else(|e| {
            panic!(
                "{name}: the stored object does not read back: {}\n{back}",
                e.render(name)
            )
        });
        assert_eq!(
            ours, theirs,
            "{name}: the stored object means something else\n{converted}\n{back}"
        );
        eprintln!("{name}: accepted");
    }

    // Chaos Mesh Schedule and Workflow manifests: converted (with the chaos they embed, of every
    // kind Havoc has) and accepted; the stored object reads back as the same spec.
    for (name, src) in PROGRAMS {
        let converted = havoc_k8s::convert(src)
            .unwrap_or_else(|e| panic!("{name}: does not convert:\n{}", e.render(name)));
        let stored = dry_run(&kubectl, &path, &converted).unwrap_or_else(|e| {
            panic!("{name}: the API server refused the converted manifest: {e}\n{converted}")
        });
        let ours: serde_json::Value =
            serde_yaml_ng::from_str(converted.trim_start_matches("---\n")).expect("yaml");
        match stored["kind"].as_str() {
            Some("Schedule") => {
                let a: havoc_k8s::schedule_crd::Schedule =
                    serde_json::from_value(ours).expect("ours is a Schedule");
                let b: havoc_k8s::schedule_crd::Schedule =
                    serde_json::from_value(stored.clone()).expect("the stored Schedule reads back");
                assert_eq!(
                    a.spec, b.spec,
                    "{name}: the stored Schedule means something else"
                );
                b.spec
                    .plan(&havoc_spec::FieldPath::root().key("spec"))
                    .unwrap_or_else(|e| panic!("{name}: the operator refuses it: {e}"));
            }
            Some("Workflow") => {
                let a: havoc_k8s::workflow_crd::Workflow =
                    serde_json::from_value(ours).expect("ours is a Workflow");
                let b: havoc_k8s::workflow_crd::Workflow =
                    serde_json::from_value(stored.clone()).expect("the stored Workflow reads back");
                assert_eq!(
                    a.spec, b.spec,
                    "{name}: the stored Workflow means something else"
                );
                b.spec
                    .to_spec(&havoc_spec::FieldPath::root().key("spec"))
                    .unwrap_or_else(|e| panic!("{name}: the operator refuses it: {e}"));
            }
            k => panic!("{name}: stored kind {k:?}"),
        }
        eprintln!("{name}: accepted");
    }
    // SyscallChaos is Havoc's own: a havoc.dev Schedule of it is accepted as written, and the
    // server's rule refuses a type without its spec.
    let syscall = "apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: syscall-every-hour, namespace: default}\nspec:\n  schedule: \"@hourly\"\n  type: SyscallChaos\n  syscallChaos: {mode: one, selector: {labelSelectors: {app: web}}, syscalls: [openat], errno: EACCES, percent: \"50\", duration: 5m}\n";
    dry_run(&kubectl, &path, syscall).unwrap_or_else(|e| panic!("syscall schedule: {e}"));
    for ty in [
        "IOChaos",
        "TimeChaos",
        "SyscallChaos",
        "DNSChaos",
        "HTTPChaos",
    ] {
        let field = match ty {
            "IOChaos" => "ioChaos",
            "DNSChaos" => "dnsChaos",
            "HTTPChaos" => "httpChaos",
            "TimeChaos" => "timeChaos",
            _ => "syscallChaos",
        };
        let yaml = format!("apiVersion: havoc.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: no-spec, namespace: default}}\nspec:\n  schedule: \"@hourly\"\n  type: {ty}\n");
        let e = dry_run(&kubectl, &path, &yaml).expect_err("a type without its spec");
        assert!(e.contains(&format!("type {ty} needs {field}")), "{e}");
    }

    // The server's CEL rules catch what the converter would refuse too (same message).
    let bad = "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: bad-target, namespace: default}\nspec:\n  action: partition\n  selector: {}\n  target: {mode: fixed, selector: {}}\n";
    let e = dry_run(&kubectl, &path, bad).expect_err("a target without its value is refused");
    assert!(
        e.contains("target.value is required with target modes fixed"),
        "{e}"
    );
    // DNSChaos and HTTPChaos rules, as the server evaluates them (kube-cel, used by the unit
    // tests, escapes `_` in field names differently: `response_headers` is checked only here).
    for (body, message) in [
        (
            "kind: DNSChaos\nspec:\n  action: error\n  selector: {}\n  patterns: [\"chaos-*.org\"]\n",
            "the wildcard `*` is only allowed at the end of a pattern",
        ),
        (
            "kind: DNSChaos\nspec:\n  action: delay\n  selector: {}\n",
            "action delay needs delay",
        ),
        (
            "kind: HTTPChaos\nspec:\n  selector: {}\n  target: Request\n  port: 80\n  abort: true\n  response_headers: {X-A: b}\n",
            "response_headers select responses: they need `target: Response`",
        ),
        (
            "kind: HTTPChaos\nspec:\n  selector: {}\n  target: Request\n  port: 80\n  abort: false\n",
            "no action: give at least one of abort: true, delay, replace, patch",
        ),
        (
            "kind: HTTPChaos\nspec:\n  selector: {}\n  target: Response\n  port: 80\n  replace: {queries: {a: b}}\n",
            "replace.queries changes requests: it needs `target: Request`",
        ),
    ] {
        let yaml = format!(
            "apiVersion: havoc.dev/v1alpha1\nmetadata: {{name: bad, namespace: default}}\n{body}"
        );
        let e = dry_run(&kubectl, &path, &yaml).expect_err(message);
        assert!(e.contains(message), "`{message}` not in the server's refusal: {e}");
        let ours = havoc_k8s::validate_manifest(&yaml).expect_err(message).to_string();
        assert!(
            ours.contains(message) || ours.contains("never matches") || ours.contains("only allowed at the end"),
            "havoc validate refuses it too: {ours}"
        );
    }
}
