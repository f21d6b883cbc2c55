//! `deploy/` is a kustomize base: `kubectl kustomize deploy/` builds it offline, with the
//! harness's kubectl (../shared/k8s/bin), into the same objects as `deploy/install.yaml`; an
//! overlay's knobs (namespace, image, resources) reach every object they should.
//!
//! Needs kubectl: `$KUBECTL`, else the one of a running harness (`HAVOC_E2E_KUBECONFIG`'s state
//! dir), else `../shared/k8s/bin/kubectl.xz` unpacked with `xz` into a temporary directory.
//! Without any it prints that it skipped, or fails when `CI` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A kubectl, and the temporary directory it was unpacked into (kept alive by the caller).
fn kubectl() -> Option<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return Some((k.into(), None));
    }
    if let Ok(kc) = std::env::var("HAVOC_E2E_KUBECONFIG") {
        if let Some(state) = Path::new(&kc).parent() {
            if let Ok(dir) = std::fs::read_to_string(state.join("bin-dir")) {
                let k = Path::new(dir.trim()).join("kubectl");
                if k.exists() {
                    return Some((k, None));
                }
            }
        }
    }
    let xz = repo().join("../shared/k8s/bin/kubectl.xz");
    if xz.exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("kubectl");
        let status = Command::new("sh")
            .arg("-c")
            .arg("xz -dc \"$1\" > \"$2\" && chmod +x \"$2\"")
            .args([
                "sh",
                xz.to_str().expect("path"),
                out.to_str().expect("path"),
            ])
            .status()
            .expect("run xz");
        assert!(status.success(), "unpack {}", xz.display());
        return Some((out, Some(dir)));
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but no kubectl was found (KUBECTL, the harness, or ../shared/k8s/bin/kubectl.xz)");
    }
    println!("skipped: no kubectl (set KUBECTL or keep ../shared/k8s beside the repository)");
    None
}

fn kustomize(kubectl: &Path, dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).expect("utf-8"))
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn deploy_is_a_kustomize_base_with_image_namespace_and_resources_knobs() {
    let Some((kubectl, _keep)) = kubectl() else {
        return;
    };
    let deploy = repo().join("deploy");
    // The base alone: the same objects as install.yaml.
    let base = kustomize(&kubectl, &deploy);
    let install =
        docs(&std::fs::read_to_string(deploy.join("install.yaml")).expect("install.yaml"));
    let key = |d: &serde_json::Value| {
        format!(
            "{}/{}/{}",
            d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]
        )
    };
    let mut a: Vec<String> = base.iter().map(key).collect();
    let mut b: Vec<String> = install.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "kustomize build and install.yaml hold different objects"
    );
    for d in &base {
        let same = install.iter().find(|i| key(i) == key(d)).expect("object");
        // Numbers compare by value (`0.0` in install.yaml, `0` after kustomize).
        assert!(
            numbers_as_f64(&d["spec"]) == numbers_as_f64(&same["spec"]),
            "{}: spec differs from install.yaml",
            key(d)
        );
    }

    // An overlay turning every knob.
    let overlay = tempfile::tempdir().expect("overlay dir");
    let rel = pathdiff(
        &deploy.canonicalize().expect("deploy"),
        &overlay.path().canonicalize().expect("overlay"),
    );
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "resources: [{rel}]\nnamespace: chaos-ops\nimages:\n  - name: havoc\n    newName: registry.example.com/havoc\n    newTag: \"1.2\"\npatches:\n  - target: {{kind: Deployment, name: havoc-operator}}\n    patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/0/resources\n        value: {{requests: {{cpu: 200m, memory: 128Mi}}, limits: {{memory: 1Gi}}}}\n",
            rel = rel.display()
        ),
    )
    .expect("write overlay");
    let built = kustomize(&kubectl, overlay.path());
    assert!(
        built
            .iter()
            .any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == "chaos-ops"),
        "the Namespace object follows the namespace knob"
    );
    for d in &built {
        let kind = d["kind"].as_str().unwrap_or_default();
        if !matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            assert_eq!(d["metadata"]["namespace"], "chaos-ops", "{}", key(d));
        }
        for s in d["subjects"].as_array().into_iter().flatten() {
            assert_eq!(s["namespace"], "chaos-ops", "{}: subject", key(d));
        }
    }
    for (kind, name) in [
        ("Deployment", "havoc-operator"),
        ("DaemonSet", "havoc-agent"),
    ] {
        let c = &find(&built, kind, name)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example.com/havoc:1.2", "{kind}");
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{kind} has resources"
        );
    }
    let op =
        &find(&built, "Deployment", "havoc-operator")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(op["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(op["resources"]["requests"]["cpu"], "200m");
    // The operator's own namespace comes from its pod, so the knob moves it too.
    assert!(
        op["args"]
            .as_array()
            .expect("args")
            .iter()
            .any(|a| a == "--operator-namespace=$(POD_NAMESPACE)"),
        "{op}"
    );
}

fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => serde_json::json!(n.as_f64()),
        J::Array(a) => J::Array(a.iter().map(numbers_as_f64).collect()),
        J::Object(o) => J::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `to` relative to `from` (both absolute), for a kustomize `resources:` entry.
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c);
    }
    p
}
