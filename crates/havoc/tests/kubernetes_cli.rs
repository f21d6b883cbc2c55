//! The Kubernetes-facing commands of the binary, without a cluster: `crds`, `install --print`,
//! `certs`, `convert`, `validate` of Kubernetes objects, and that the arguments the shipped
//! manifests give `havoc agent` / `havoc operator` are ones the binary accepts.

mod common;

use std::process::{Command, Output};

use common::havoc;

fn run(args: &[&str]) -> Output {
    Command::new(havoc())
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run havoc")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `args:` list of the container of `kind` in the install stream.
fn container_args(install: &str, kind: &str) -> Vec<String> {
    let doc = install
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l == format!("kind: {kind}")))
        .unwrap_or_else(|| panic!("no {kind} in the install manifests"));
    let mut lines = doc.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for l in lines.by_ref() {
        match l.trim().strip_prefix("- ") {
            Some(a) => args.push(a.to_string()),
            None => break,
        }
    }
    assert!(!args.is_empty(), "{kind} has container args");
    args
}

#[test]
fn crds_prints_every_definition_with_status_and_columns() {
    let out = run(&["crds"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    let names = [
        "podchaos",
        "networkchaos",
        "stresschaos",
        "iochaos",
        "timechaos",
        "syscallchaos",
        "dnschaos",
        "httpchaos",
        "schedules",
        "workflows",
        "statuschecks",
    ];
    for name in names {
        assert!(y.contains(&format!("name: {name}.havoc.dev")), "CRD {name}");
    }
    assert_eq!(
        y.matches("kind: CustomResourceDefinition").count(),
        names.len()
    );
    assert!(y.contains("x-kubernetes-validations"), "CEL rules present");
    assert!(y.contains("additionalPrinterColumns"), "printer columns");
    assert!(y.contains("status: {}"), "status subresource");
}

#[test]
fn the_manifests_args_are_accepted_by_the_binary() {
    let out = run(&["install", "--print", "--image", "example/havoc:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let install = text(&out.stdout);
    assert!(install.contains("image: example/havoc:1"));
    // The TLS files named by the manifests do not exist here, so each command must get past
    // argument parsing (clap exits 2 with a usage message) and fail on what it then needs.
    for kind in ["DaemonSet", "Deployment"] {
        let args = container_args(&install, kind);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&argv);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(2), "{kind} args rejected: {err}");
        assert!(!err.contains("Usage:"), "{kind} args rejected: {err}");
        assert!(!out.status.success(), "{kind} cannot start here: {err}");
    }
}

#[test]
fn certs_writes_a_bundle_and_never_overwrites_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("pki");
    let d = out_dir.to_str().expect("utf-8 path");
    let first = run(&["certs", "--out", d]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    for f in [
        "ca.pem",
        "ca-key.pem",
        "agent.pem",
        "agent-key.pem",
        "operator.pem",
        "operator-key.pem",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} written");
    }
    let ca = std::fs::read(out_dir.join("ca.pem")).expect("ca");
    let again = run(&["certs", "--out", d]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "says how to replace"
    );
    assert_eq!(
        std::fs::read(out_dir.join("ca.pem")).expect("ca"),
        ca,
        "CA untouched"
    );
}

const CHAOS_MESH_POD_KILL: &str = "\
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: kill-web
  namespace: shop
spec:
  action: pod-kill
  mode: fixed-percent
  value: \"50\"
  gracePeriod: 5
  selector:
    namespaces: [shop]
    labelSelectors:
      app: web
";

#[test]
fn convert_and_validate_a_chaos_mesh_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cm = dir.path().join("kill.yaml");
    std::fs::write(&cm, CHAOS_MESH_POD_KILL).expect("write");
    let out = run(&["convert", cm.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let converted = text(&out.stdout);
    assert!(
        converted.contains("apiVersion: havoc.dev/v1alpha1"),
        "{converted}"
    );
    assert!(converted.contains("kind: PodChaos"));
    assert!(converted.contains("app: web"));
    let hv = dir.path().join("kill-havoc.yaml");
    std::fs::write(&hv, &converted).expect("write");
    for f in [&cm, &hv] {
        let out = run(&["validate", f.to_str().expect("path")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("ok (Kubernetes PodChaos shop/kill-web"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn an_unsupported_chaos_mesh_field_is_named_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cm = dir.path().join("bad.yaml");
    let src = CHAOS_MESH_POD_KILL.replace(
        "  gracePeriod: 5\n",
        "  gracePeriod: 5\n  remoteCluster: east\n",
    );
    std::fs::write(&cm, src).expect("write");
    for cmd in ["convert", "validate"] {
        let out = run(&[cmd, cm.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: invalid input exit code");
        let err = text(&out.stderr);
        assert!(
            err.contains("bad.yaml:11:") && err.contains("spec.remoteCluster"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn the_kubernetes_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples/kubernetes") {
        let p = e.expect("entry").path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if n == "sidecar.yaml" {
            let text = std::fs::read_to_string(&p).expect("read");
            havoc_agent::sidecar::parse_config(&text)
                .unwrap_or_else(|e| panic!("{}", e.render(&p.display().to_string())));
        } else {
            let out = run(&["validate", p.to_str().expect("path")]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(
                text(&out.stdout).contains("ok (Kubernetes "),
                "{}",
                text(&out.stdout)
            );
        }
        checked += 1;
    }
    // Workflows and Schedules too (they are also compared with their Chaos Mesh form by
    // havoc-k8s's tests/program_examples.rs).
    assert_eq!(checked, 19, "every example checked");
}
