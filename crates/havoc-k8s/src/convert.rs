//! Chaos Mesh manifests to Havoc's, and validation of Kubernetes-mode manifests.
//!
//! `chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos and StressChaos map to `havoc.dev/v1alpha1`
//! field by field (Havoc kept Chaos Mesh's names). A Chaos Mesh field Havoc does not support is an
//! error naming it, with its file position; it is never dropped. Only what the API server writes
//! into an object (`status`, and `metadata` such as `uid`, `resourceVersion`, `managedFields`) is
//! left out, so `kubectl get -o yaml` output converts too.

use std::collections::BTreeMap;

use havoc_spec::de::from_node;
use havoc_spec::error::Problems;
use havoc_spec::yaml::{parse_documents, Node, Pos, Value};
use havoc_spec::{FieldPath, SpecError, SpecErrors};
use kube::core::ObjectMeta;
use serde::Serialize;

use crate::crd::{
    NetworkChaos, NetworkChaosSpec, PodChaos, PodChaosSpec, StressChaos, StressChaosSpec,
    API_VERSION,
};

/// `apiVersion` of Chaos Mesh's resources.
pub const CHAOS_MESH_API_VERSION: &str = "chaos-mesh.org/v1alpha1";

/// The kinds both API groups share.
pub const KINDS: &[&str] = &["PodChaos", "NetworkChaos", "StressChaos"];

/// Chaos Mesh fields Havoc does not support, by kind (`*` for every kind), with why or what instead.
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    ("*", "remoteCluster", "multi-cluster chaos is not supported: apply the object in the target cluster"),
    ("*", "scheduler", "scheduling inside a chaos object is not supported: use a Schedule or a CronJob that applies it"),
    ("NetworkChaos", "target", "the other side of the traffic (`target`) is not supported yet: use externalTargets with IP addresses or CIDRs"),
    ("NetworkChaos", "targetDevice", "`targetDevice` goes with `target`, which is not supported yet"),
    ("NetworkChaos", "bandwidth.peakrate", "peakrate is not supported: Havoc's TBF shapes to `rate` only"),
    ("NetworkChaos", "bandwidth.minburst", "minburst is not supported: Havoc's TBF shapes to `rate` only"),
    ("StressChaos", "stressngStressors", "raw stress-ng options are not supported: use stressors.cpu and stressors.memory"),
    ("StressChaos", "stressors.cpu.options", "raw stress-ng options are not supported: use workers and load"),
    ("StressChaos", "stressors.memory.options", "raw stress-ng options are not supported: use workers and size"),
    ("StressChaos", "stressors.memory.oomScoreAdj", "oomScoreAdj is not supported: the stress workers keep the container's OOM score"),
];

/// Metadata keys a user writes; the others are the API server's and are left out.
const USER_METADATA: &[&str] = &["name", "namespace", "labels", "annotations"];
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
    "ownerReferences",
    "generateName",
];

/// A validated Kubernetes-mode chaos object.
// Built once per file; boxing would burden every user.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    PodChaos(PodChaos),
    NetworkChaos(NetworkChaos),
    StressChaos(StressChaos),
}

impl Manifest {
    /// `PodChaos`, `NetworkChaos` or `StressChaos`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::PodChaos(_) => "PodChaos",
            Manifest::NetworkChaos(_) => "NetworkChaos",
            Manifest::StressChaos(_) => "StressChaos",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::PodChaos(o) => &o.metadata,
            Manifest::NetworkChaos(o) => &o.metadata,
            Manifest::StressChaos(o) => &o.metadata,
        }
    }
}

fn err(pos: Pos, path: FieldPath, message: impl Into<String>) -> SpecError {
    SpecError {
        path,
        pos,
        message: message.into(),
    }
}

fn parse(src: &str) -> Result<Vec<Node>, SpecErrors> {
    let docs = parse_documents(src).map_err(|e| {
        SpecErrors(vec![err(
            e.pos,
            FieldPath::root(),
            format!("invalid YAML: {}", e.message),
        )])
    })?;
    Ok(docs
        .into_iter()
        .filter(|d| !matches!(d.value, Value::Null))
        .collect())
}

/// Pod-selector keys: a NetworkChaos or StressChaos whose selector has one is a Kubernetes-mode
/// manifest (host mode selects pids, process names, cgroups, containers or network namespaces).
const POD_SELECTOR_KEYS: &[&str] = &[
    "namespaces",
    "nodes",
    "pods",
    "nodeSelectors",
    "fieldSelectors",
    "labelSelectors",
    "expressionSelectors",
    "annotationSelectors",
    "podPhaseSelectors",
];

/// True if this YAML document is a Kubernetes-mode chaos object rather than a host-mode
/// experiment: its kind is PodChaos, or its `spec.selector` uses pod-selector fields.
pub fn is_kubernetes_document(doc: &Node) -> bool {
    let kind = doc
        .get("kind")
        .and_then(Node::as_scalar)
        .unwrap_or_default();
    if kind == "PodChaos" {
        return true;
    }
    if !KINDS.contains(&kind) {
        return false;
    }
    match doc.get("spec").and_then(|s| s.get("selector")) {
        Some(Node {
            value: Value::Map(entries),
            ..
        }) => entries.iter().any(|(k, _)| {
            k.as_scalar()
                .is_some_and(|k| POD_SELECTOR_KEYS.contains(&k))
        }),
        _ => false,
    }
}

/// True if the file's first document is a Kubernetes-mode chaos object (see
/// [`is_kubernetes_document`]); `havoc validate` sends those to [`validate_manifest`].
pub fn is_kubernetes_manifest(src: &str) -> bool {
    parse_documents(src)
        .ok()
        .and_then(|d| d.into_iter().find(|d| !matches!(d.value, Value::Null)))
        .is_some_and(|d| is_kubernetes_document(&d))
}

/// Reports the Chaos Mesh fields Havoc does not support that appear in `spec`.
fn unsupported(kind: &str, spec: &Node, sp: &FieldPath, errors: &mut Vec<SpecError>) {
    for (k, path, why) in UNSUPPORTED {
        if *k != "*" && *k != kind {
            continue;
        }
        let mut node = spec;
        let mut fp = sp.clone();
        let parts: Vec<&str> = path.split('.').collect();
        let mut found = None;
        for (i, part) in parts.iter().enumerate() {
            fp = fp.key(*part);
            if i + 1 == parts.len() {
                found = node.key_node(part);
            } else {
                match node.get(part) {
                    Some(n) => node = n,
                    None => break,
                }
            }
        }
        if let Some(key) = found {
            errors.push(err(
                key.pos,
                fp,
                format!("unsupported Chaos Mesh field: {why}"),
            ));
        }
    }
}

/// The spec node without the unsupported fields (already reported), so the rest is still checked.
fn strip_unsupported(kind: &str, spec: &Node) -> Node {
    fn strip(node: &Node, parts: &[&str]) -> Node {
        match parts {
            [] => node.clone(),
            [last] => node.without_keys(&[last]),
            [first, rest @ ..] => match &node.value {
                Value::Map(entries) => Node::new(
                    node.pos,
                    Value::Map(
                        entries
                            .iter()
                            .map(|(k, v)| {
                                if k.as_scalar() == Some(first) {
                                    (k.clone(), strip(v, rest))
                                } else {
                                    (k.clone(), v.clone())
                                }
                            })
                            .collect(),
                    ),
                ),
                _ => node.clone(),
            },
        }
    }
    let mut out = spec.clone();
    for (k, path, _) in UNSUPPORTED {
        if *k == "*" || *k == kind {
            let parts: Vec<&str> = path.split('.').collect();
            out = strip(&out, &parts);
        }
    }
    out
}

/// Reads one document into a validated object; `chaos_mesh_only` refuses havoc.dev documents.
fn load(doc: &Node, chaos_mesh_only: bool) -> Result<Manifest, Vec<SpecError>> {
    let top = FieldPath::root();
    let mut errors = Vec::new();
    if !matches!(doc.value, Value::Map(_)) {
        return Err(vec![err(
            doc.pos,
            top,
            format!(
                "expected a mapping with apiVersion, kind, metadata and spec, got {}",
                doc.describe()
            ),
        )]);
    }
    if let Value::Map(entries) = &doc.value {
        for (k, _) in entries {
            let name = k.as_scalar().unwrap_or_default();
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&name) {
                errors.push(err(
                    k.pos,
                    top.key(name),
                    format!("unknown field `{name}`: expected apiVersion, kind, metadata, spec"),
                ));
            }
        }
    }
    let scalar = |key: &str, errors: &mut Vec<SpecError>| -> Option<String> {
        match doc.get(key) {
            None => {
                errors.push(err(doc.pos, top.key(key), "is required"));
                None
            }
            Some(n) => match n.as_scalar() {
                Some(s) => Some(s.to_string()),
                None => {
                    errors.push(err(
                        n.pos,
                        top.key(key),
                        format!("expected a string, got {}", n.describe()),
                    ));
                    None
                }
            },
        }
    };
    let api_version = scalar("apiVersion", &mut errors);
    let kind = scalar("kind", &mut errors);
    if let Some(av) = &api_version {
        let ok = av == CHAOS_MESH_API_VERSION || (!chaos_mesh_only && av == API_VERSION);
        if !ok {
            let expected = if chaos_mesh_only {
                format!("`{CHAOS_MESH_API_VERSION}` (a Chaos Mesh manifest)")
            } else {
                format!("`{API_VERSION}` or `{CHAOS_MESH_API_VERSION}`")
            };
            let pos = doc.get("apiVersion").map_or(doc.pos, |n| n.pos);
            errors.push(err(
                pos,
                top.key("apiVersion"),
                format!("unsupported apiVersion `{av}`: expected {expected}"),
            ));
        }
    }
    if let Some(k) = &kind {
        if !KINDS.contains(&k.as_str()) {
            let pos = doc.get("kind").map_or(doc.pos, |n| n.pos);
            errors.push(err(
                pos,
                top.key("kind"),
                format!("unsupported kind `{k}`: expected one of {} (other Chaos Mesh kinds are not converted yet)", KINDS.join(", ")),
            ));
        }
    }
    let mut meta = ObjectMeta::default();
    match doc.get("metadata") {
        None => errors.push(err(
            doc.pos,
            top.key("metadata"),
            "is required (at least metadata.name)",
        )),
        Some(m) => {
            let mp = top.key("metadata");
            if let Value::Map(entries) = &m.value {
                for (k, _) in entries {
                    let name = k.as_scalar().unwrap_or_default();
                    if !USER_METADATA.contains(&name) && !SERVER_METADATA.contains(&name) {
                        errors.push(err(
                            k.pos,
                            mp.key(name),
                            format!("unknown metadata field `{name}`: expected name, namespace, labels, annotations"),
                        ));
                    }
                }
            }
            let name: Option<String> = m.get("name").and_then(|n| {
                from_node(n, &mp.key("name"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
            match name {
                Some(n) if crate::selector::valid_dns_label(&n) || valid_subdomain(&n) => meta.name = Some(n),
                Some(n) => errors.push(err(
                    m.get("name").map_or(m.pos, |x| x.pos),
                    mp.key("name"),
                    format!("`{n}` is not a valid object name: lowercase letters, digits, `-` and `.`, at most 253"),
                )),
                None if m.get("name").is_none() => errors.push(err(m.pos, mp.key("name"), "is required")),
                None => {}
            }
            meta.namespace = m.get("namespace").and_then(|n| {
                from_node(n, &mp.key("namespace"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
            meta.labels = m.get("labels").and_then(|n| {
                from_node::<BTreeMap<String, String>>(n, &mp.key("labels"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
            meta.annotations = m.get("annotations").and_then(|n| {
                from_node::<BTreeMap<String, String>>(n, &mp.key("annotations"))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
        }
    }
    let sp = top.key("spec");
    let Some(spec) = doc.get("spec") else {
        errors.push(err(doc.pos, sp, "is required"));
        return Err(errors);
    };
    let Some(kind) = kind.filter(|k| KINDS.contains(&k.as_str())) else {
        return Err(errors);
    };
    unsupported(&kind, spec, &sp, &mut errors);
    let spec = strip_unsupported(&kind, spec);
    let mut p = Problems::new();
    let manifest = match kind.as_str() {
        "PodChaos" => from_node::<PodChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::PodChaos(PodChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "NetworkChaos" => from_node::<NetworkChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::NetworkChaos(NetworkChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        _ => from_node::<StressChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::StressChaos(StressChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
    };
    for (path, message) in p.into_vec() {
        errors.push(err(path.locate(doc), path, message));
    }
    match manifest {
        Ok(m) if errors.is_empty() => Ok(m),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

fn valid_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(crate::selector::valid_dns_label)
}

fn finish(mut errors: Vec<SpecError>) -> SpecErrors {
    errors.sort_by_key(|a| (a.pos, a.path.to_string()));
    errors.dedup();
    SpecErrors(errors)
}

/// Parses and validates one Kubernetes-mode manifest (`havoc.dev/v1alpha1` or
/// `chaos-mesh.org/v1alpha1`), with `FILE:LINE:COL: path: message` errors.
pub fn validate_manifest(src: &str) -> Result<Manifest, SpecErrors> {
    let docs = parse(src)?;
    match docs.len() {
        0 => Err(SpecErrors(vec![err(
            Pos { line: 1, col: 1 },
            FieldPath::root(),
            "the file is empty: expected a PodChaos, NetworkChaos or StressChaos",
        )])),
        1 => load(&docs[0], false).map_err(finish),
        n => Err(SpecErrors(vec![err(
            docs[1].pos,
            FieldPath::root(),
            format!("expected one YAML document, found {n}: validate each object on its own"),
        )])),
    }
}

/// The havoc.dev form of an object, as written by [`convert`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Out<'a, S: Serialize> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a ObjectMeta,
    spec: &'a S,
}

fn to_yaml(m: &Manifest) -> String {
    fn y<S: Serialize>(kind: &'static str, meta: &ObjectMeta, spec: &S) -> String {
        serde_yaml_ng::to_string(&Out {
            api_version: API_VERSION,
            kind,
            metadata: meta,
            spec,
        })
        .expect("a chaos object serializes to YAML")
    }
    match m {
        Manifest::PodChaos(o) => y("PodChaos", &o.metadata, &o.spec),
        Manifest::NetworkChaos(o) => y("NetworkChaos", &o.metadata, &o.spec),
        Manifest::StressChaos(o) => y("StressChaos", &o.metadata, &o.spec),
    }
}

/// Converts Chaos Mesh manifests (one document or a `---` stream) to `havoc.dev/v1alpha1` YAML,
/// one output document per input document. Every problem in every document is reported.
pub fn convert(src: &str) -> Result<String, SpecErrors> {
    let docs = parse(src)?;
    if docs.is_empty() {
        return Err(SpecErrors(vec![err(
            Pos { line: 1, col: 1 },
            FieldPath::root(),
            "the file is empty: expected Chaos Mesh PodChaos, NetworkChaos or StressChaos manifests",
        )]));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in &docs {
        match load(d, true) {
            Ok(m) => out.push(to_yaml(&m)),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(finish(errors));
    }
    Ok(out.iter().map(|d| format!("---\n{d}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{ExpressionSelector, Operator};
    use crate::ChaosObject;

    const SELECTOR: &str = r#"  selector:
    namespaces: [shop, db]
    labelSelectors:
      app: web
    expressionSelectors:
      - { key: tier, operator: In, values: [front] }
    annotationSelectors:
      owner: team-a
    fieldSelectors:
      spec.nodeName: n1
    podPhaseSelectors: [Running]
    nodes: [n1]
    nodeSelectors:
      zone: a
    pods:
      shop: [web-1]
"#;

    fn cm(kind: &str, spec: &str) -> String {
        format!("apiVersion: chaos-mesh.org/v1alpha1\nkind: {kind}\nmetadata:\n  name: x\n  namespace: shop\n  labels: {{team: a}}\n  annotations: {{note: b}}\nspec:\n{SELECTOR}{spec}")
    }

    fn round_trip(src: &str) -> Manifest {
        let out = convert(src).unwrap_or_else(|e| panic!("{}", e.render("in.yaml")));
        assert!(
            out.starts_with("---\napiVersion: havoc.dev/v1alpha1\n"),
            "{out}"
        );
        let back = validate_manifest(out.trim_start_matches("---\n"))
            .unwrap_or_else(|e| panic!("{}\n{out}", e.render("out.yaml")));
        assert_eq!(
            back,
            validate_manifest(src).expect("chaos mesh input validates"),
            "conversion keeps everything"
        );
        back
    }

    fn check_selector(m: &Manifest) {
        let s = match m {
            Manifest::PodChaos(o) => o.selector(),
            Manifest::NetworkChaos(o) => o.selector(),
            Manifest::StressChaos(o) => o.selector(),
        };
        assert_eq!(s.namespaces, ["shop", "db"]);
        assert_eq!(s.label_selectors["app"], "web");
        assert_eq!(
            s.expression_selectors,
            [ExpressionSelector {
                key: "tier".into(),
                operator: Operator::In,
                values: vec!["front".into()]
            }]
        );
        assert_eq!(s.annotation_selectors["owner"], "team-a");
        assert_eq!(s.field_selectors["spec.nodeName"], "n1");
        assert_eq!(s.pod_phase_selectors, ["Running"]);
        assert_eq!(s.nodes, ["n1"]);
        assert_eq!(s.node_selectors["zone"], "a");
        assert_eq!(s.pods["shop"], ["web-1"]);
        let meta = m.metadata();
        assert_eq!(
            (meta.name.as_deref(), meta.namespace.as_deref()),
            (Some("x"), Some("shop"))
        );
        assert_eq!(meta.labels.as_ref().unwrap()["team"], "a");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "b");
    }

    #[test]
    fn pod_chaos_fields_map() {
        let m = round_trip(&cm("PodChaos", "  action: pod-kill\n  mode: fixed\n  value: \"2\"\n  gracePeriod: 5\n  duration: 30s\n"));
        check_selector(&m);
        let Manifest::PodChaos(o) = &m else { panic!() };
        assert_eq!(o.mode(), crate::Mode::Fixed(2));
        assert_eq!(o.spec.grace_period, Some(5));
        assert_eq!(o.duration(), Some(std::time::Duration::from_secs(30)));
        let m = round_trip(&cm(
            "PodChaos",
            "  action: container-kill\n  mode: one\n  containerNames: [app, sidecar]\n",
        ));
        let Manifest::PodChaos(o) = &m else { panic!() };
        assert_eq!(o.spec.container_names, ["app", "sidecar"]);
        round_trip(&cm(
            "PodChaos",
            "  action: pod-failure\n  mode: all\n  duration: 1m\n",
        ));
    }

    #[test]
    fn network_chaos_fields_map() {
        let m = round_trip(&cm(
            "NetworkChaos",
            r#"  action: netem
  mode: random-max-percent
  value: "50"
  direction: both
  externalTargets: [10.0.0.0/8, 1.2.3.4]
  device: eth0
  duration: 2m
  loss: { loss: "10", correlation: "25" }
  delay: { latency: 100ms, jitter: 10ms, correlation: "5", reorder: { reorder: "10", correlation: "1", gap: 3 } }
  duplicate: { duplicate: "1", correlation: "2" }
  corrupt: { corrupt: "3", correlation: "4" }
  bandwidth: { rate: 1mbps, limit: 20971520, buffer: 10000 }
"#,
        ));
        check_selector(&m);
        let Manifest::NetworkChaos(o) = &m else {
            panic!()
        };
        let f = o.spec.fault();
        assert_eq!(o.mode(), crate::Mode::RandomMaxPercent(50));
        assert_eq!(f.direction, havoc_spec::network::Direction::Both);
        assert_eq!(f.external_targets, ["10.0.0.0/8", "1.2.3.4"]);
        assert_eq!(f.device.as_deref(), Some("eth0"));
        assert_eq!(
            (
                f.loss.as_ref().unwrap().loss.value(),
                f.loss.as_ref().unwrap().correlation.value()
            ),
            (10.0, 25.0)
        );
        let d = f.delay.as_ref().unwrap();
        assert_eq!(
            (
                d.latency.to_string(),
                d.jitter.to_string(),
                d.correlation.value()
            ),
            ("100ms".into(), "10ms".into(), 5.0)
        );
        assert_eq!(d.reorder.as_ref().unwrap().gap, 3);
        assert_eq!(f.duplicate.as_ref().unwrap().correlation.value(), 2.0);
        assert_eq!(f.corrupt.as_ref().unwrap().corrupt.value(), 3.0);
        let b = f.bandwidth.as_ref().unwrap();
        assert_eq!(
            (b.rate.0, b.limit.unwrap().0, b.buffer.unwrap().0),
            (8_000_000, 20_971_520, 10_000)
        );
        for action in ["loss: { loss: \"1\" }", "delay: { latency: 1s }"] {
            let name = action.split(':').next().unwrap();
            round_trip(&cm(
                "NetworkChaos",
                &format!("  action: {name}\n  {action}\n"),
            ));
        }
        round_trip(&cm(
            "NetworkChaos",
            "  action: partition\n  direction: to\n",
        ));
    }

    #[test]
    fn stress_chaos_fields_map() {
        let m = round_trip(&cm(
            "StressChaos",
            "  mode: fixed-percent\n  value: \"30\"\n  duration: 10m\n  containerNames: [app]\n  stressors:\n    cpu: { workers: 2, load: 60 }\n    memory: { workers: 1, size: 256MB }\n",
        ));
        check_selector(&m);
        let Manifest::StressChaos(o) = &m else {
            panic!()
        };
        assert_eq!(o.spec.stressors.cpu.as_ref().unwrap().load, 60);
        assert_eq!(
            o.spec.stressors.memory.as_ref().unwrap().size,
            "256MB".parse().unwrap()
        );
        assert_eq!(o.spec.container_names, ["app"]);
    }

    #[test]
    fn unsupported_fields_are_errors_with_positions() {
        let src = cm(
            "StressChaos",
            "  remoteCluster: east\n  stressngStressors: --cpu 1\n  stressors:\n    cpu: { workers: 1, options: [\"--cpu-method all\"] }\n    memory: { size: 1GB, oomScoreAdj: -1000 }\n",
        );
        let e = convert(&src).unwrap_err();
        let text = e.render("cm.yaml");
        for want in [
            "cm.yaml:25:3: spec.remoteCluster: unsupported Chaos Mesh field: multi-cluster",
            "cm.yaml:26:3: spec.stressngStressors: unsupported Chaos Mesh field",
            "cm.yaml:28:24: spec.stressors.cpu.options: unsupported Chaos Mesh field",
            "cm.yaml:29:26: spec.stressors.memory.oomScoreAdj: unsupported Chaos Mesh field",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        let net = cm("NetworkChaos", "  action: bandwidth\n  target:\n    mode: all\n  bandwidth: { rate: 1mbps, peakrate: 2 }\n");
        let text = convert(&net).unwrap_err().render("n.yaml");
        assert!(
            text.contains("spec.target: unsupported Chaos Mesh field: the other side"),
            "{text}"
        );
        assert!(
            text.contains("spec.bandwidth.peakrate: unsupported"),
            "{text}"
        );
        let typo = cm("NetworkChaos", "  action: loss\n  los: { loss: \"1\" }\n");
        let text = convert(&typo).unwrap_err().render("t.yaml");
        assert!(
            text.contains("t.yaml:26:3: spec.los: unknown field `los`: did you mean `loss`?"),
            "{text}"
        );
    }

    #[test]
    fn streams_convert_document_by_document_and_report_every_error() {
        let a = cm("PodChaos", "  action: pod-kill\n");
        let b = cm("StressChaos", "  stressors: { cpu: { workers: 1 } }\n");
        let out = convert(&format!("{a}---\n{b}")).expect("both convert");
        assert_eq!(
            out.matches("---\napiVersion: havoc.dev/v1alpha1").count(),
            2
        );
        assert!(out.contains("kind: StressChaos"));
        let bad =
            convert(&format!("{a}---\n{}", cm("IOChaos", "  action: latency\n"))).unwrap_err();
        assert!(
            bad.render("s.yaml")
                .contains("s.yaml:28:7: kind: unsupported kind `IOChaos`"),
            "{}",
            bad.render("s.yaml")
        );
        let e = convert(&a.replace("chaos-mesh.org", "havoc.dev")).unwrap_err();
        assert!(
            e.to_string().contains("expected `chaos-mesh.org/v1alpha1`"),
            "{e}"
        );
    }

    #[test]
    fn server_written_metadata_and_status_are_left_out() {
        let src = "apiVersion: chaos-mesh.org/v1alpha1\nkind: PodChaos\nmetadata:\n  name: x\n  uid: 1234\n  resourceVersion: \"9\"\n  creationTimestamp: 2024-01-01T00:00:00Z\nspec:\n  action: pod-kill\n  selector: {}\nstatus:\n  experiment: {}\n";
        let out = convert(src).expect("converts");
        assert!(
            !out.contains("uid") && !out.contains("status") && !out.contains("resourceVersion"),
            "{out}"
        );
        let e = convert(&src.replace("  uid: 1234\n", "  colour: red\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("metadata.colour: unknown metadata field"),
            "{e}"
        );
    }

    #[test]
    fn validate_manifest_reports_rule_errors_at_their_fields() {
        let src = "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata:\n  name: slow\nspec:\n  action: delay\n  mode: fixed\n  selector:\n    labelSelectors: {app: web}\n  delay:\n    latency: 10ms\n    jitter: 50ms\n";
        let e = validate_manifest(src).unwrap_err();
        let text = e.render("k.yaml");
        assert!(
            text.contains("k.yaml:6:3: spec.value: is required with mode `fixed`"),
            "{text}"
        );
        assert!(
            text.contains("k.yaml:12:13: spec.delay.jitter: must not exceed latency"),
            "{text}"
        );
        assert!(
            validate_manifest(&src.replace("  mode: fixed\n", "").replace("50ms", "5ms")).is_ok()
        );
        let e = validate_manifest("apiVersion: havoc.dev/v1alpha1\nkind: PodChaos\nmetadata: {name: Bad_Name}\nspec: {action: pod-kil, selector: {}}\n").unwrap_err();
        let text = e.render("p.yaml");
        assert!(
            text.contains("metadata.name: `Bad_Name` is not a valid object name"),
            "{text}"
        );
        assert!(
            text.contains("spec.action: unknown value `pod-kil`: did you mean `pod-kill`?"),
            "{text}"
        );
    }

    #[test]
    fn kubernetes_manifests_are_told_from_host_ones() {
        let k8s = cm("NetworkChaos", "  action: loss\n  loss: {loss: \"1\"}\n");
        assert!(is_kubernetes_manifest(&k8s));
        assert!(is_kubernetes_manifest("apiVersion: havoc.dev/v1alpha1\nkind: PodChaos\nmetadata: {name: a}\nspec: {action: pod-kill, selector: {}}\n"));
        let host = "apiVersion: havoc.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: a}\nspec:\n  action: loss\n  selector: {processNames: [nginx]}\n  loss: {loss: \"1\"}\n  duration: 10s\n";
        assert!(!is_kubernetes_manifest(host));
        assert!(
            havoc_spec::parse_experiment(host).is_ok(),
            "host manifests still parse in host mode"
        );
        assert!(!is_kubernetes_manifest("apiVersion: havoc.dev/v1alpha1\nkind: Experiment\nmetadata: {name: a}\nspec: {faults: []}\n"));
    }
}
