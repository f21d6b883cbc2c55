//! Chaos Mesh manifests to Havoc's, and validation of Kubernetes-mode manifests.
//!
//! `chaos-mesh.org/v1alpha1` PodChaos, NetworkChaos, StressChaos, TimeChaos, IOChaos, DNSChaos and
//! HTTPChaos map to `havoc.dev/v1alpha1` field by field (Havoc kept Chaos Mesh's names, including
//! HTTPChaos's `request_headers` and its base64 `replace.body`); SyscallChaos is Havoc's
//! own kind and exists only as `havoc.dev/v1alpha1`. A Chaos Mesh field Havoc does not support is an
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

use crate::chaos_mesh;
use crate::crd::{
    DNSChaos, DNSChaosSpec, HTTPChaos, HTTPChaosSpec, IOChaos, IOChaosSpec, NetworkChaos,
    NetworkChaosSpec, PodChaos, PodChaosSpec, StressChaos, StressChaosSpec, SyscallChaos,
    SyscallChaosSpec, TimeChaos, TimeChaosSpec, API_VERSION,
};

/// `apiVersion` of Chaos Mesh's resources.
pub const CHAOS_MESH_API_VERSION: &str = "chaos-mesh.org/v1alpha1";

/// The kinds both API groups share.
pub const KINDS: &[&str] = &[
    "PodChaos",
    "NetworkChaos",
    "StressChaos",
    "TimeChaos",
    "IOChaos",
    "DNSChaos",
    "HTTPChaos",
];

/// Every kind of `havoc.dev/v1alpha1`: the shared ones and Havoc's own.
pub const HAVOC_KINDS: &[&str] = &[
    "PodChaos",
    "NetworkChaos",
    "StressChaos",
    "TimeChaos",
    "IOChaos",
    "DNSChaos",
    "HTTPChaos",
    "SyscallChaos",
];

/// Chaos Mesh fields Havoc does not support, by kind (`*` for every kind), with why or what instead.
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    ("*", "remoteCluster", "multi-cluster chaos is not supported: apply the object in the target cluster"),
    ("*", "scheduler", "scheduling inside a chaos object is not supported: use a Schedule or a CronJob that applies it"),
    ("NetworkChaos", "bandwidth.peakrate", "peakrate is not supported: Havoc's TBF shapes to `rate` only (a second bucket needs a field in havoc-spec's BandwidthSpec)"),
    ("NetworkChaos", "bandwidth.minburst", "minburst is not supported: it sizes the peakrate bucket, and Havoc shapes to `rate` only"),
    ("DNSChaos", "containerNames", "containerNames cannot be honoured: Havoc intercepts DNS in the pod's network namespace, which all its containers share (Chaos Mesh rewrites the named containers' resolv.conf); remove it, and every container of the selected pods is hit"),
    ("HTTPChaos", "tls", "tls is not supported in Kubernetes mode yet: Havoc's agent reads no secrets, so it cannot terminate TLS with the certificate in `secretName`; fault plain-HTTP ports only"),
    ("StressChaos", "stressors.memory.oomScoreAdj", "oomScoreAdj is not supported: Havoc's memory workers cannot set their OOM score yet (needs a field in havoc-spec's MemoryStressor); remove it"),
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
    TimeChaos(TimeChaos),
    SyscallChaos(SyscallChaos),
    IOChaos(IOChaos),
    DNSChaos(DNSChaos),
    HTTPChaos(HTTPChaos),
}

impl Manifest {
    /// `PodChaos`, `NetworkChaos`, `StressChaos`, `TimeChaos`, `SyscallChaos`, `IOChaos`,
    /// `DNSChaos` or `HTTPChaos`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::PodChaos(_) => "PodChaos",
            Manifest::NetworkChaos(_) => "NetworkChaos",
            Manifest::StressChaos(_) => "StressChaos",
            Manifest::TimeChaos(_) => "TimeChaos",
            Manifest::SyscallChaos(_) => "SyscallChaos",
            Manifest::IOChaos(_) => "IOChaos",
            Manifest::DNSChaos(_) => "DNSChaos",
            Manifest::HTTPChaos(_) => "HTTPChaos",
        }
    }

    /// What the operator does for the object (see [`crate::ChaosObject::action`]).
    pub fn action(&self) -> crate::ChaosAction {
        use crate::ChaosObject;
        match self {
            Manifest::PodChaos(o) => o.action(),
            Manifest::NetworkChaos(o) => o.action(),
            Manifest::StressChaos(o) => o.action(),
            Manifest::TimeChaos(o) => o.action(),
            Manifest::SyscallChaos(o) => o.action(),
            Manifest::IOChaos(o) => o.action(),
            Manifest::DNSChaos(o) => o.action(),
            Manifest::HTTPChaos(o) => o.action(),
        }
    }

    /// Short text of the action (see [`crate::ChaosObject::action_name`]).
    pub fn action_name(&self) -> String {
        use crate::ChaosObject;
        match self {
            Manifest::PodChaos(o) => o.action_name(),
            Manifest::NetworkChaos(o) => o.action_name(),
            Manifest::StressChaos(o) => o.action_name(),
            Manifest::TimeChaos(o) => o.action_name(),
            Manifest::SyscallChaos(o) => o.action_name(),
            Manifest::IOChaos(o) => o.action_name(),
            Manifest::DNSChaos(o) => o.action_name(),
            Manifest::HTTPChaos(o) => o.action_name(),
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::PodChaos(o) => &o.metadata,
            Manifest::NetworkChaos(o) => &o.metadata,
            Manifest::StressChaos(o) => &o.metadata,
            Manifest::TimeChaos(o) => &o.metadata,
            Manifest::SyscallChaos(o) => &o.metadata,
            Manifest::IOChaos(o) => &o.metadata,
            Manifest::DNSChaos(o) => &o.metadata,
            Manifest::HTTPChaos(o) => &o.metadata,
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
    // Chaos Mesh objects are Kubernetes objects whatever their selector (`selector: {}` is all
    // pods of the object's namespace).
    let api_version = doc
        .get("apiVersion")
        .and_then(Node::as_scalar)
        .unwrap_or_default();
    if api_version == CHAOS_MESH_API_VERSION && KINDS.contains(&kind) {
        return true;
    }
    if !HAVOC_KINDS.contains(&kind) {
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
    let chaos_mesh = api_version.as_deref() == Some(CHAOS_MESH_API_VERSION);
    if let Some(k) = &kind {
        let pos = doc.get("kind").map_or(doc.pos, |n| n.pos);
        if chaos_mesh && k == "SyscallChaos" {
            errors.push(err(
                pos,
                top.key("kind"),
                format!("SyscallChaos is Havoc's own kind (Chaos Mesh has none): write apiVersion `{API_VERSION}`"),
            ));
        } else if !HAVOC_KINDS.contains(&k.as_str()) {
            errors.push(err(
                pos,
                top.key("kind"),
                format!("unsupported kind `{k}`: expected one of {} (other Chaos Mesh kinds are not converted yet)", HAVOC_KINDS.join(", ")),
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
    let Some(kind) = kind.filter(|k| HAVOC_KINDS.contains(&k.as_str())) else {
        return Err(errors);
    };
    if chaos_mesh && kind == "SyscallChaos" {
        return Err(errors);
    }
    unsupported(&kind, spec, &sp, &mut errors);
    let spec = strip_unsupported(&kind, spec);
    let (spec, pending) = if chaos_mesh {
        chaos_mesh::prepare(&kind, &spec, &sp, &mut errors)
    } else {
        (spec, chaos_mesh::Pending::default())
    };
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
        "NetworkChaos" => from_node::<NetworkChaosSpec>(&spec, &sp).map(|mut s| {
            if chaos_mesh {
                chaos_mesh::finish_network(&mut s, &pending);
            }
            s.validate_spec(&sp, &mut p);
            Manifest::NetworkChaos(NetworkChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "TimeChaos" => from_node::<TimeChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::TimeChaos(TimeChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "SyscallChaos" => from_node::<SyscallChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::SyscallChaos(SyscallChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "IOChaos" => from_node::<IOChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::IOChaos(IOChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "DNSChaos" => from_node::<DNSChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::DNSChaos(DNSChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        "HTTPChaos" => from_node::<HTTPChaosSpec>(&spec, &sp).map(|s| {
            s.validate_spec(&sp, &mut p);
            Manifest::HTTPChaos(HTTPChaos {
                metadata: meta,
                spec: s,
                status: None,
            })
        }),
        _ => from_node::<StressChaosSpec>(&spec, &sp).map(|mut s| {
            if chaos_mesh {
                for (path, message) in chaos_mesh::finish_stress(&mut s, &pending, &sp) {
                    p.add(&path, message);
                }
            }
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
            "the file is empty: expected a PodChaos, NetworkChaos, StressChaos, TimeChaos, SyscallChaos, IOChaos, DNSChaos or HTTPChaos",
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
        let mut v = serde_json::to_value(Out {
            api_version: API_VERSION,
            kind,
            metadata: meta,
            spec,
        })
        .expect("a chaos object serializes");
        go_durations(&mut v["spec"]);
        serde_yaml_ng::to_string(&v).expect("a chaos object serializes to YAML")
    }
    match m {
        Manifest::PodChaos(o) => y("PodChaos", &o.metadata, &o.spec),
        Manifest::NetworkChaos(o) => y("NetworkChaos", &o.metadata, &o.spec),
        Manifest::StressChaos(o) => y("StressChaos", &o.metadata, &o.spec),
        Manifest::TimeChaos(o) => y("TimeChaos", &o.metadata, &o.spec),
        Manifest::SyscallChaos(o) => y("SyscallChaos", &o.metadata, &o.spec),
        Manifest::IOChaos(o) => y("IOChaos", &o.metadata, &o.spec),
        Manifest::DNSChaos(o) => y("DNSChaos", &o.metadata, &o.spec),
        Manifest::HTTPChaos(o) => y("HTTPChaos", &o.metadata, &o.spec),
    }
}

/// Rewrites the durations of a spec (`duration`, `delay` or `delay.latency` and `delay.jitter`)
/// as Go writes them, which the CRD's pattern and CEL accept (`1m30s`, not humantime's `1m 30s`).
fn go_durations(spec: &mut serde_json::Value) {
    fn fix(v: Option<&mut serde_json::Value>) {
        if let Some(v) = v {
            if let Some(d) = v
                .as_str()
                .and_then(|s| s.parse::<havoc_spec::units::HumanDuration>().ok())
            {
                *v = serde_json::Value::String(chaos_mesh::go_duration(d.0));
            }
        }
    }
    fix(spec.get_mut("duration"));
    if let Some(v) = spec.get_mut("timeOffset") {
        if let Some(o) = v
            .as_str()
            .and_then(|s| s.parse::<havoc_spec::time::TimeOffset>().ok())
        {
            let abs = std::time::Duration::from_nanos(o.nanos.unsigned_abs() as u64);
            let sign = if o.nanos < 0 { "-" } else { "" };
            *v = serde_json::Value::String(format!("{sign}{}", chaos_mesh::go_duration(abs)));
        }
    }
    match spec.get_mut("delay") {
        Some(d @ serde_json::Value::String(_)) => fix(Some(d)),
        Some(d) => {
            fix(d.get_mut("latency"));
            fix(d.get_mut("jitter"));
        }
        None => {}
    }
}

/// Converts Chaos Mesh manifests (one document or a `---` stream) to `havoc.dev/v1alpha1` YAML,
/// one output document per input document. Every problem in every document is reported.
/// `Schedule` and `Workflow` documents go to [`crate::program_convert::convert_document`], which
/// converts the chaos they embed with this function.
pub fn convert(src: &str) -> Result<String, SpecErrors> {
    let docs = parse(src)?;
    if docs.is_empty() {
        return Err(SpecErrors(vec![err(
            Pos { line: 1, col: 1 },
            FieldPath::root(),
            "the file is empty: expected Chaos Mesh PodChaos, NetworkChaos, StressChaos, TimeChaos, IOChaos, DNSChaos, HTTPChaos, Schedule or Workflow manifests",
        )]));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in &docs {
        // Schedule and Workflow (their embedded chaos goes through `load` below).
        if let Some(r) = crate::program_convert::convert_document(d) {
            match r {
                Ok(y) => out.push(y),
                Err(e) => errors.extend(e),
            }
            continue;
        }
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
            Manifest::TimeChaos(o) => o.selector(),
            Manifest::SyscallChaos(o) => o.selector(),
            Manifest::IOChaos(o) => o.selector(),
            Manifest::DNSChaos(o) => o.selector(),
            Manifest::HTTPChaos(o) => o.selector(),
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
        // Without a target Chaos Mesh's netem acts on egress only, whatever the direction.
        assert_eq!(f.direction, havoc_spec::network::Direction::To);
        assert_eq!(f.external_targets, ["1.2.3.4", "10.0.0.0/8"]);
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
            "  remoteCluster: east\n  stressors:\n    cpu: { workers: 1, options: [\"--cpu-method all\"] }\n    memory: { size: 1GB, oomScoreAdj: -1000 }\n",
        );
        let e = convert(&src).unwrap_err();
        let text = e.render("cm.yaml");
        for want in [
            "cm.yaml:25:3: spec.remoteCluster: unsupported Chaos Mesh field: multi-cluster",
            "spec.stressors.cpu.options: stress-ng option `--cpu-method` has no Havoc equivalent",
            "cm.yaml:28:26: spec.stressors.memory.oomScoreAdj: unsupported Chaos Mesh field: oomScoreAdj",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        let net = cm(
            "NetworkChaos",
            "  action: bandwidth\n  bandwidth: { rate: 1mbps, peakrate: 2, minburst: 3 }\n",
        );
        let text = convert(&net).unwrap_err().render("n.yaml");
        assert!(
            text.contains("spec.bandwidth.peakrate: unsupported")
                && text.contains("spec.bandwidth.minburst: unsupported"),
            "{text}"
        );
        let typo = cm("NetworkChaos", "  action: loss\n  los: { loss: \"1\" }\n");
        let text = convert(&typo).unwrap_err().render("t.yaml");
        assert!(
            text.contains("t.yaml:26:3: spec.los: unknown field `los`: did you mean `loss`?"),
            "{text}"
        );
    }

    fn agent_fault(m: &Manifest) -> (havoc_spec::FaultSpec, Vec<String>) {
        match m.action() {
            crate::ChaosAction::Agent {
                fault,
                container_names,
            } => (fault, container_names),
            other => panic!("not an agent action: {other:?}"),
        }
    }

    #[test]
    fn time_chaos_fields_map() {
        let src = cm(
            "TimeChaos",
            "  mode: fixed\n  value: \"2\"\n  timeOffset: -1h30m\n  clockIds: [CLOCK_REALTIME, CLOCK_MONOTONIC]\n  containerNames: [app]\n  duration: 90s\n",
        );
        let m = round_trip(&src);
        check_selector(&m);
        let out = convert(&src).expect("converts");
        assert!(out.contains("kind: TimeChaos"), "{out}");
        assert!(out.contains("timeOffset: -1h30m\n"), "Go spelling: {out}");
        assert!(out.contains("duration: 1m30s\n"), "Go spelling: {out}");
        let Manifest::TimeChaos(o) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(o.mode(), crate::Mode::Fixed(2));
        assert_eq!(o.duration(), Some(std::time::Duration::from_secs(90)));
        let (fault, containers) = agent_fault(&m);
        let havoc_spec::FaultSpec::TimeChaos(t) = fault else {
            panic!("{fault:?}")
        };
        assert_eq!(t.time_offset.as_sec_nsec(), (-5400, 0));
        assert_eq!(t.clock_mask(), 0b11, "REALTIME and MONOTONIC");
        assert_eq!(containers, ["app"]);
        assert_eq!(m.action_name(), t.summary());
        // Without clockIds the realtime clock moves, as in Chaos Mesh.
        let m = round_trip(&cm("TimeChaos", "  mode: all\n  timeOffset: \"+10m\"\n"));
        let (havoc_spec::FaultSpec::TimeChaos(t), _) = agent_fault(&m) else {
            panic!()
        };
        assert_eq!(t.clock_mask(), 1);
    }

    #[test]
    fn io_chaos_fields_map_for_every_action() {
        use havoc_spec::io::{FileKind, Filling, IoAction, IoMethod};
        let io = |spec: &str| -> havoc_spec::io::IOChaos {
            let m = round_trip(&cm("IOChaos", spec));
            check_selector(&m);
            assert_eq!(m.kind(), "IOChaos");
            match agent_fault(&m) {
                (havoc_spec::FaultSpec::IOChaos(f), names) => {
                    assert_eq!(names, ["app"]);
                    f
                }
                other => panic!("{other:?}"),
            }
        };
        let f = io("  action: latency\n  mode: one\n  volumePath: /var/lib/app\n  path: /var/lib/app/**/*.db\n  methods: [READ, write]\n  percent: 50\n  delay: 100ms\n  containerNames: [app]\n  duration: 5m\n");
        assert_eq!(f.action, IoAction::Latency);
        assert_eq!(f.volume_path, "/var/lib/app");
        assert!(f.glob().expect("glob").matches("x/y.db"));
        assert!(!f.glob().expect("glob").matches("x/y.log"));
        assert_eq!(f.methods, [IoMethod::Read, IoMethod::Write]);
        assert_eq!(f.percent, 50);
        assert_eq!(f.delay.unwrap().0, std::time::Duration::from_millis(100));
        let f = io("  action: fault\n  mode: all\n  volumePath: /data\n  errno: 5\n  percent: 30\n  containerNames: [app]\n");
        assert_eq!(f.errno.map(|e| e.0), Some(5));
        assert_eq!(f.percent, 30);
        assert!(f.methods.is_empty(), "every operation");
        let f = io("  action: attrOverride\n  mode: all\n  volumePath: /data\n  attr: { perm: 420, size: 1024, kind: regularFile, uid: 0 }\n  containerNames: [app]\n");
        let a = f.attr.expect("attr");
        assert_eq!(
            a.perm.map(|p| p.0),
            Some(0o644),
            "Chaos Mesh's decimal perm"
        );
        assert_eq!(
            (a.size, a.kind, a.uid),
            (Some(1024), Some(FileKind::RegularFile), Some(0))
        );
        let f = io("  action: mistake\n  mode: all\n  volumePath: /data\n  methods: [read]\n  mistake: { filling: random, maxOccurrences: 2, maxLength: 16 }\n  containerNames: [app]\n");
        let mk = f.mistake.expect("mistake");
        assert_eq!(
            (mk.filling, mk.max_occurrences, mk.max_length),
            (Filling::Random, 2, 16)
        );
    }

    #[test]
    fn io_and_time_chaos_refuse_what_would_change_meaning_with_positions() {
        // Line 25 is the first line after the selector.
        let text = refused(
            "IOChaos",
            "  action: latency\n  volumePath: /data\n  path: \"*.db\"\n  delay: 10ms\n  containerNames: [a, b]\n  remoteCluster: east\n",
        );
        for want in [
            "cm.yaml:27:9: spec.path: a relative path matches no file in Chaos Mesh (it matches absolute paths): write it under volumePath, e.g. `/data/*.db`",
            "spec.containerNames: containerNames takes at most one name",
            "cm.yaml:30:3: spec.remoteCluster: unsupported Chaos Mesh field: multi-cluster",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        let text = refused(
            "IOChaos",
            "  action: fault\n  volumePath: /proc\n  errno: 5\n  delay: 1s\n",
        );
        assert!(
            text.contains("cm.yaml:26:15: spec.volumePath: `/proc` cannot be faulted"),
            "{text}"
        );
        assert!(
            text.contains("spec.delay: delay does not apply to action fault"),
            "{text}"
        );
        let text = refused("TimeChaos", "  timeOfset: -5m\n");
        assert!(
            text.contains("cm.yaml:25:3: spec.timeOfset: unknown field `timeOfset`: did you mean `timeOffset`?"),
            "{text}"
        );
        let text = refused(
            "TimeChaos",
            "  timeOffset: -5m\n  clockIds: [CLOCK_MONOTONC]\n",
        );
        assert!(text.contains("did you mean `CLOCK_MONOTONIC`"), "{text}");
        let text = refused("TimeChaos", "  timeOffset: 0s\n");
        assert!(text.contains("spec.timeOffset: must not be zero"), "{text}");
        let text = refused("SyscallChaos", "  syscalls: [openat]\n  errno: EIO\n");
        assert!(
            text.contains("cm.yaml:2:7: kind: SyscallChaos is Havoc's own kind"),
            "{text}"
        );
    }

    #[test]
    fn syscall_chaos_is_a_havoc_manifest() {
        let src = format!("apiVersion: havoc.dev/v1alpha1\nkind: SyscallChaos\nmetadata: {{name: s, namespace: shop}}\nspec:\n{SELECTOR}  mode: all\n  syscalls: [openat]\n  errno: EACCES\n  percent: \"30\"\n  path: /data/**\n  containerNames: [app]\n");
        let m = validate_manifest(&src).unwrap_or_else(|e| panic!("{}", e.render("s.yaml")));
        let (havoc_spec::FaultSpec::SyscallChaos(f), names) = agent_fault(&m) else {
            panic!("{m:?}")
        };
        assert_eq!(f.errno.map(|e| e.0), Some(13));
        assert_eq!(f.percent.0, 30.0);
        assert_eq!(names, ["app"]);
        let bad = src.replace("syscalls: [openat]", "syscalls: [opneat]");
        let text = validate_manifest(&bad).unwrap_err().render("s.yaml");
        assert!(
            text.contains("spec.syscalls[0]: unknown system call `opneat`: did you mean `openat`?"),
            "{text}"
        );
        assert!(crate::convert::is_kubernetes_manifest(&src));
        // A host-mode SyscallChaos (process selector) is not a Kubernetes manifest.
        assert!(!crate::convert::is_kubernetes_manifest(
            "apiVersion: havoc.dev/v1alpha1\nkind: SyscallChaos\nspec:\n  selector: {pids: [1]}\n  syscalls: [openat]\n  errno: EIO\n"
        ));
    }

    #[test]
    fn objects_read_back_from_the_api_server_keep_numeric_errnos_and_perms() {
        // The API server stores int-or-string fields as written: JSON numbers here.
        let o: crate::IOChaos = serde_json::from_value(serde_json::json!({
            "apiVersion": "havoc.dev/v1alpha1", "kind": "IOChaos",
            "metadata": {"name": "x", "namespace": "shop"},
            "spec": {"action": "fault", "selector": {}, "volumePath": "/data",
                     "faults": [{"errno": 5, "weight": 2}, {"errno": "ENOSPC"}]}
        }))
        .expect("numeric errno");
        assert_eq!(o.spec.faults[0].errno.0, 5);
        assert_eq!(o.spec.faults[1].weight, 1);
        let o: crate::IOChaosSpec = serde_json::from_value(serde_json::json!({
            "action": "attrOverride", "selector": {}, "volumePath": "/data", "attr": {"perm": 420}
        }))
        .expect("numeric perm");
        assert_eq!(o.attr.unwrap().perm.unwrap().0, 0o644);
        let o: crate::SyscallChaosSpec = serde_json::from_value(serde_json::json!({
            "selector": {}, "syscalls": ["connect"], "errno": 111
        }))
        .expect("numeric errno");
        assert_eq!(o.errno.unwrap().to_string(), "ECONNREFUSED");
        // And they serialize to what the CRD accepts (names for errnos).
        let back = serde_json::to_value(&o).unwrap();
        assert_eq!(back["errno"], "ECONNREFUSED");
        assert_eq!(back["percent"], "100");
    }

    fn dns(spec: &str) -> (crate::DNSChaos, havoc_spec::dns::DNSChaos) {
        let m = round_trip(&cm("DNSChaos", spec));
        check_selector(&m);
        let (havoc_spec::FaultSpec::DNSChaos(f), names) = agent_fault(&m) else {
            panic!("{m:?}")
        };
        assert!(
            names.is_empty(),
            "the pod's network namespace, not a container"
        );
        assert_eq!(m.action_name(), f.summary());
        let Manifest::DNSChaos(o) = m else { panic!() };
        (o, f)
    }

    #[test]
    fn dns_chaos_fields_map_one_by_one() {
        use havoc_spec::dns::DnsAction;
        type Check = fn(&crate::DNSChaos, &havoc_spec::dns::DNSChaos);
        let cases: &[(&str, Check)] = &[
            ("  action: error\n", |o, f| {
                assert_eq!(f.action, DnsAction::Error);
                assert!(
                    f.patterns.is_empty() && f.matches("any.name.at.all"),
                    "no patterns: every name"
                );
                assert_eq!(f.percent.0, 100.0, "every matching query, as in Chaos Mesh");
                assert_eq!(f.delay, None);
                assert_eq!(o.mode(), crate::Mode::One, "Chaos Mesh's default mode");
                assert_eq!(o.duration(), None);
            }),
            ("  action: random\n", |_, f| {
                assert_eq!(f.action, DnsAction::Random)
            }),
            (
                "  action: error\n  patterns: [google.com, \"chaos-mesh.*\", github.?om]\n",
                |_, f| {
                    assert!(f.matches("google.com") && !f.matches("www.google.com"));
                    assert!(f.matches("chaos-mesh.org") && f.matches("chaos-mesh.org.cn"));
                    assert!(
                        f.matches("github.com")
                            && f.matches("github.xom")
                            && !f.matches("github.coom")
                    );
                },
            ),
            (
                "  action: error\n  mode: fixed-percent\n  value: \"50\"\n",
                |o, _| assert_eq!(o.mode(), crate::Mode::FixedPercent(50)),
            ),
            (
                "  action: error\n  mode: fixed\n  value: \"2\"\n",
                |o, _| assert_eq!(o.mode(), crate::Mode::Fixed(2)),
            ),
            ("  action: random\n  duration: 90s\n", |o, _| {
                assert_eq!(o.duration(), Some(std::time::Duration::from_secs(90)))
            }),
        ];
        for (spec, check) in cases {
            let (o, f) = dns(spec);
            check(&o, &f);
        }
        let out = convert(&cm("DNSChaos", "  action: error\n  duration: 90s\n")).unwrap();
        assert!(
            out.contains("kind: DNSChaos") && out.contains("duration: 1m30s\n"),
            "{out}"
        );
    }

    #[test]
    fn dns_chaos_refuses_what_chaos_mesh_means_otherwise_by_name() {
        let cases: &[(&str, &str)] = &[
            ("  action: error\n  containerNames: [app]\n", "cm.yaml:26:3: spec.containerNames: unsupported Chaos Mesh field: containerNames cannot be honoured: Havoc intercepts DNS in the pod's network namespace"),
            ("  action: error\n  remoteCluster: east\n", "cm.yaml:26:3: spec.remoteCluster: unsupported Chaos Mesh field: multi-cluster"),
            ("  action: error\n  percent: \"50\"\n", "cm.yaml:26:3: spec.percent: `percent` is a Havoc field, not one of Chaos Mesh's DNSChaos: write apiVersion `havoc.dev/v1alpha1`"),
            ("  action: error\n  delay: 1s\n", "cm.yaml:26:3: spec.delay: `delay` is a Havoc field"),
            ("  action: delay\n  delay: 1s\n", "cm.yaml:25:11: spec.action: action `delay` is Havoc's"),
            ("  action: error\n  patterns: [\"chaos-*.org\"]\n", "spec.patterns[0]: `chaos-*.org`: the wildcard `*` is only allowed at the end"),
            ("  action: nxdomain\n", "spec.action"),
            ("  action: error\n  scope: ALL\n", "cm.yaml:26:3: spec.scope: unknown field `scope`"),
        ];
        for (spec, want) in cases {
            let text = refused("DNSChaos", spec);
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        // The same fields are Havoc's own under havoc.dev.
        let src = cm(
            "DNSChaos",
            "  action: delay\n  delay: 200ms\n  percent: \"50\"\n",
        )
        .replace("chaos-mesh.org/v1alpha1", "havoc.dev/v1alpha1");
        let m = validate_manifest(&src).unwrap_or_else(|e| panic!("{}", e.render("h.yaml")));
        assert_eq!(
            m.action_name(),
            "dns delay 200ms for every name on 50% of queries"
        );
    }

    fn http(spec: &str) -> havoc_spec::http::HTTPChaos {
        let m = round_trip(&cm("HTTPChaos", spec));
        check_selector(&m);
        let (havoc_spec::FaultSpec::HTTPChaos(f), names) = agent_fault(&m) else {
            panic!("{m:?}")
        };
        assert!(
            names.is_empty(),
            "the pod's network namespace, not a container"
        );
        assert_eq!(m.action_name(), f.summary());
        f
    }

    #[test]
    fn http_chaos_fields_map_one_by_one() {
        use havoc_spec::http::HttpTarget;
        use std::time::Duration;
        const REQ: &str = "  target: Request\n  port: 8080\n";
        const RESP: &str = "  target: Response\n  port: 8080\n";
        type Check = fn(&havoc_spec::http::HTTPChaos);
        let cases: &[(&str, &str, Check)] = &[
            (REQ, "  abort: true\n", |f| {
                assert_eq!((f.target, f.port, f.abort), (HttpTarget::Request, 8080, Some(true)));
                assert_eq!((&f.path, &f.method, f.code), (&None, &None, None), "every request");
                assert_eq!(f.percent.0, 100.0);
                assert!(f.tls.is_none());
            }),
            (RESP, "  abort: true\n", |f| assert_eq!(f.target, HttpTarget::Response)),
            (REQ, "  path: /api/*\n  abort: true\n", |f| {
                assert_eq!(f.path.as_deref(), Some("/api/*"));
                assert!(havoc_spec::http::wildcard_match("/api/*", "/api/v1/items"), "`*` spans `/` as in Chaos Mesh");
            }),
            (REQ, "  method: POST\n  abort: true\n", |f| assert_eq!(f.method.as_deref(), Some("POST"))),
            (RESP, "  code: 200\n  abort: true\n", |f| assert_eq!(f.code, Some(200))),
            (REQ, "  request_headers: {X-User: alice}\n  abort: true\n", |f| {
                assert_eq!(f.request_headers["X-User"], "alice")
            }),
            (RESP, "  response_headers: {Content-Type: application/json}\n  abort: true\n", |f| {
                assert_eq!(f.response_headers["Content-Type"], "application/json")
            }),
            (REQ, "  delay: 1.5s\n", |f| {
                assert_eq!(f.delay.map(|d| d.0), Some(Duration::from_millis(1500)))
            }),
            (REQ, "  replace: {path: /v2/items, method: PUT, queries: {page: \"1\"}, headers: {X-A: b}}\n", |f| {
                let r = f.replace.as_ref().expect("replace");
                assert_eq!((r.path.as_deref(), r.method.as_deref()), (Some("/v2/items"), Some("PUT")));
                assert_eq!((r.queries["page"].as_str(), r.headers["X-A"].as_str()), ("1", "b"));
            }),
            (RESP, "  replace: {code: 503, body: eyJvayI6ZmFsc2V9}\n", |f| {
                assert_eq!(f.replace.as_ref().and_then(|r| r.code), Some(503));
                assert_eq!(f.replace_body().as_deref(), Some(&br#"{"ok":false}"#[..]), "base64, as Chaos Mesh's []byte");
            }),
            (REQ, "  patch: {queries: [[foo, bar], [foo, baz]], headers: [[X-Chaos, \"1\"]]}\n", |f| {
                let p = f.patch.as_ref().expect("patch");
                assert_eq!(p.queries, [["foo", "bar"], ["foo", "baz"]]);
                assert_eq!(p.headers, [["X-Chaos", "1"]]);
            }),
            (RESP, "  patch: {body: {type: JSON, value: '{\"degraded\": true}'}}\n", |f| {
                let b = f.patch.as_ref().and_then(|p| p.body.as_ref()).expect("body");
                assert_eq!((b.kind.as_str(), b.value.as_str()), ("JSON", r#"{"degraded": true}"#));
            }),
            (REQ, "  abort: true\n  mode: all\n  duration: 2m\n", |_| {}),
        ];
        for (head, spec, check) in cases {
            check(&http(&format!("{head}{spec}")));
        }
        let out = convert(&cm(
            "HTTPChaos",
            "  target: Request\n  port: 80\n  delay: 1m30s\n  request_headers: {X-A: b}\n",
        ))
        .unwrap();
        assert!(
            out.contains("delay: 1m30s\n") && out.contains("request_headers:"),
            "{out}"
        );
    }

    #[test]
    fn http_chaos_refuses_what_chaos_mesh_means_otherwise_by_name() {
        let cases: &[(&str, &str)] = &[
            ("  target: Request\n  port: 443\n  abort: true\n  tls: {secretName: s, secretNamespace: shop, certName: tls.crt, keyName: tls.key}\n", "cm.yaml:28:3: spec.tls: unsupported Chaos Mesh field: tls is not supported in Kubernetes mode yet"),
            ("  target: Request\n  port: 80\n  abort: true\n  percent: \"50\"\n", "cm.yaml:28:3: spec.percent: `percent` is a Havoc field, not one of Chaos Mesh's HTTPChaos"),
            ("  target: Request\n  port: 80\n  abort: true\n  remoteCluster: east\n", "spec.remoteCluster: unsupported Chaos Mesh field"),
            ("  target: Request\n  port: 80\n  abort: true\n  containerNames: [app]\n", "spec.containerNames: unknown field `containerNames`"),
            ("  target: Request\n  port: 80\n  replace: {body: not base64!}\n", "spec.replace.body: not base64"),
            ("  target: Request\n  port: 80\n  code: 200\n  abort: true\n", "spec.code: code selects responses by status: it needs `target: Response`"),
            ("  target: Response\n  port: 80\n  replace: {path: /x}\n", "spec.replace.path: replace.path changes requests"),
            ("  target: Request\n  port: 80\n", "spec: no action: give at least one of abort: true, delay, replace, patch"),
            ("  target: Request\n  port: 80\n  patch: {body: {type: XML, value: x}}\n", "spec.patch.body.type: `XML` is not a patch type"),
            ("  target: Request\n  abort: true\n", "port"),
        ];
        for (spec, want) in cases {
            let text = refused("HTTPChaos", spec);
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }

    fn network(spec: &str) -> crate::NetworkChaos {
        match round_trip(&cm("NetworkChaos", spec)) {
            Manifest::NetworkChaos(o) => o,
            m => panic!("not a NetworkChaos: {m:?}"),
        }
    }

    fn stress(spec: &str) -> crate::StressChaos {
        match round_trip(&cm("StressChaos", spec)) {
            Manifest::StressChaos(o) => o,
            m => panic!("not a StressChaos: {m:?}"),
        }
    }

    fn refused(kind: &str, spec: &str) -> String {
        convert(&cm(kind, spec))
            .map(|out| panic!("converted, expected an error:\n{out}"))
            .unwrap_err()
            .render("cm.yaml")
    }

    #[test]
    fn target_keeps_chaos_mesh_direction_between_selected_and_target_pods() {
        use havoc_spec::network::Direction as D;
        // Chaos Mesh: `to` = packets from the selected pods to the target pods, `from` = from the
        // target pods to the selected ones, `both`. Havoc hits the same packets on the selected
        // pods' side: sent to (to), received from (from) the target pods' addresses.
        for action in [
            "delay\n  delay: { latency: 50ms }",
            "loss\n  loss: { loss: \"10\" }",
            "duplicate\n  duplicate: { duplicate: \"5\" }",
            "corrupt\n  corrupt: { corrupt: \"5\" }",
            "bandwidth\n  bandwidth: { rate: 1mbps, limit: 10000, buffer: 1000 }",
            "partition",
        ] {
            for (cm_dir, want) in [("to", D::To), ("from", D::From), ("both", D::Both)] {
                let o = network(&format!(
                    "  action: {action}\n  direction: {cm_dir}\n  target:\n    mode: fixed\n    value: \"2\"\n    selector:\n      namespaces: [db]\n      labelSelectors: {{app: pg}}\n"
                ));
                assert_eq!(o.spec.direction, want, "{action} {cm_dir}");
                let t = o.spec.target.as_ref().expect("target kept");
                assert_eq!(t.mode(), crate::Mode::Fixed(2));
                assert_eq!(t.selector.namespaces, ["db"]);
                assert_eq!(t.selector.label_selectors["app"], "pg");
                let look = o.lookups().expect("target pods are looked up");
                assert_eq!(look.target.as_ref(), Some(t));
                let f = o.spec.fault_with_peers(&["10.2.0.7".parse().unwrap()]);
                assert_eq!(
                    (f.direction, f.external_targets),
                    (want, vec!["10.2.0.7".into()])
                );
            }
        }
        // A target with no selector namespace looks in the object's namespace, as in Chaos Mesh.
        let o = network("  action: partition\n  target:\n    mode: all\n    selector: {}\n");
        let t = o.spec.target.unwrap();
        assert_eq!(t.selector.target_namespaces("shop"), ["shop"]);
        assert_eq!(t.mode(), crate::Mode::All);
    }

    #[test]
    fn direction_without_target_means_what_it_means_in_chaos_mesh() {
        use havoc_spec::network::Direction as D;
        let cases: [(&str, &str, Option<D>); 6] = [
            ("loss\n  loss: { loss: \"1\" }", "to", Some(D::To)),
            ("loss\n  loss: { loss: \"1\" }", "both", Some(D::To)),
            ("delay\n  delay: { latency: 1s }", "from", None),
            ("partition", "to", Some(D::To)),
            ("partition", "from", Some(D::From)),
            ("partition", "both", Some(D::Both)),
        ];
        for (action, dir, want) in cases {
            let spec = format!("  action: {action}\n  direction: {dir}\n");
            match want {
                Some(d) => assert_eq!(network(&spec).spec.direction, d, "{action} {dir}"),
                None => assert!(
                    refused("NetworkChaos", &spec).contains(
                        "spec.direction: direction `from` without target injects nothing"
                    ),
                    "{action} {dir}"
                ),
            }
        }
    }

    #[test]
    fn external_targets_take_host_names_and_ports() {
        use crate::crd::PeerHost;
        // (entry, host name to look up, literal address, port)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<u16>);
        let cases: [Case; 8] = [
            ("10.0.0.0/8", None, Some("10.0.0.0/8"), None),
            ("1.2.3.4", None, Some("1.2.3.4"), None),
            ("fd00::/64", None, Some("fd00::/64"), None),
            ("db.example.com", Some("db.example.com"), None, None),
            ("DB.Example.com.", Some("db.example.com"), None, None),
            (
                "db.example.com:5432",
                Some("db.example.com"),
                None,
                Some(5432),
            ),
            ("1.2.3.4:80", None, Some("1.2.3.4"), Some(80)),
            ("[fd00::1]:443", None, Some("fd00::1"), Some(443)),
        ];
        for (entry, name, literal, port) in cases {
            let o = network(&format!(
                "  action: loss\n  loss: {{ loss: \"1\" }}\n  externalTargets: [\"{entry}\"]\n"
            ));
            let peers = o.spec.peers();
            assert_eq!(peers.len(), 1, "{entry}");
            assert_eq!(peers[0].port, port, "{entry}");
            match (&peers[0].host, name, literal) {
                (PeerHost::Name(n), Some(want), None) => {
                    assert_eq!(n, want);
                    assert_eq!(o.lookups().unwrap().names, [want]);
                    // Until looked up, the fault names no address (the operator resolves first).
                    assert!(o.spec.fault().external_targets.is_empty());
                }
                (PeerHost::Cidr(_), None, Some(want)) => {
                    assert!(o.lookups().is_none(), "{entry}: nothing to look up");
                    assert_eq!(o.spec.fault().external_targets, [want], "{entry}");
                }
                other => panic!("{entry}: {other:?}"),
            }
            let f = o.spec.fault_with_peers(&["192.0.2.1".parse().unwrap()]);
            assert_eq!(f.ports, port.into_iter().collect::<Vec<_>>(), "{entry}");
        }
        for (list, want) in [
            ("[\"bad host!\"]", "spec.externalTargets[0]: `bad host!` is not an IP address, CIDR or host name"),
            ("[\"1.2.3.4:0\"]", "spec.externalTargets[0]: `1.2.3.4:0`: the port must be 1..=65535"),
            ("[\"a.example:80\", \"b.example:81\"]", "spec.externalTargets: entries with a port must all name the same port (got 80, 81)"),
            ("[\"a.example:80\", \"10.0.0.0/8\"]", "spec.externalTargets[1]: give this entry a port too (`:80`)"),
        ] {
            let text = refused("NetworkChaos", &format!("  action: loss\n  loss: {{ loss: \"1\" }}\n  externalTargets: {list}\n"));
            assert!(text.contains(want), "{list}: {text}");
        }
    }

    #[test]
    fn rate_becomes_a_bandwidth_limit() {
        let o = network("  action: rate\n  rate: { rate: 1mbps }\n");
        assert_eq!(o.spec.action, havoc_spec::network::NetworkAction::Bandwidth);
        assert_eq!(o.spec.bandwidth.as_ref().unwrap().rate.0, 8_000_000);
        let o = network("  action: netem\n  rate: { rate: 100kbit }\n  delay: { latency: 10ms }\n");
        assert_eq!(o.spec.bandwidth.as_ref().unwrap().rate.0, 100_000);
        assert!(o.spec.delay.is_some());
        for (spec, want) in [
            (
                "  action: rate\n",
                "spec.rate: is required with action rate",
            ),
            (
                "  action: rate\n  rate: { rate: fast }\n",
                "spec.rate.rate:",
            ),
            (
                "  action: rate\n  rate: { rate: 1mbps }\n  bandwidth: { rate: 1mbps }\n",
                "spec.rate: give either rate or bandwidth",
            ),
            (
                "  action: loss\n  loss: { loss: \"1\" }\n  rate: { rate: 1mbps }\n",
                "spec.rate: rate only applies to actions rate and netem",
            ),
        ] {
            let text = refused("NetworkChaos", spec);
            assert!(text.contains(want), "{spec}: {text}");
        }
    }

    #[test]
    fn device_is_kept_and_target_device_only_where_chaos_mesh_ignores_it() {
        let o = network("  action: loss\n  loss: { loss: \"1\" }\n  device: eth1\n");
        assert_eq!(o.spec.device.as_deref(), Some("eth1"));
        // netem `to`: Chaos Mesh injects on the selected pods only and never reads targetDevice.
        let o = network("  action: loss\n  loss: { loss: \"1\" }\n  direction: to\n  targetDevice: eth1\n  target: { mode: all, selector: {} }\n");
        assert!(o.spec.target.is_some());
        for spec in [
            "  action: loss\n  loss: { loss: \"1\" }\n  direction: from\n  targetDevice: eth1\n  target: { mode: all, selector: {} }\n",
            "  action: loss\n  loss: { loss: \"1\" }\n  direction: both\n  targetDevice: eth1\n  target: { mode: all, selector: {} }\n",
            "  action: partition\n  direction: to\n  targetDevice: eth1\n  target: { mode: all, selector: {} }\n",
        ] {
            let text = refused("NetworkChaos", spec);
            assert!(
                text.contains("spec.targetDevice: unsupported Chaos Mesh field: Havoc injects on the selected pods' side only"),
                "{spec}: {text}"
            );
        }
    }

    #[test]
    fn corrupt_leaves_checksums_broken_as_netem_does() {
        let o = network("  action: corrupt\n  corrupt: { corrupt: \"20\", correlation: \"5\" }\n");
        let c = o.spec.corrupt.unwrap();
        assert_eq!(c.checksum, havoc_spec::network::ChecksumMode::Break);
        assert_eq!((c.corrupt.value(), c.correlation.value()), (20.0, 5.0));
        let out = convert(&cm(
            "NetworkChaos",
            "  action: corrupt\n  corrupt: { corrupt: \"20\" }\n",
        ))
        .unwrap();
        assert!(out.contains("checksum: break"), "{out}");
    }

    #[test]
    fn durations_are_written_as_the_crd_accepts_them() {
        let pattern = regex::Regex::new(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$").unwrap();
        for (input, want) in [
            ("90s", "1m30s"),
            ("1m30s", "1m30s"),
            ("1h", "1h"),
            ("36h", "36h"),
            ("1500ms", "1s500ms"),
            ("250ms", "250ms"),
            ("100us", "100us"),
        ] {
            let out = convert(&cm(
                "PodChaos",
                &format!("  action: pod-failure\n  duration: {input}\n"),
            ))
            .unwrap();
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with("duration:"))
                .unwrap();
            let got = line.split_once(':').unwrap().1.trim().trim_matches('\'');
            assert_eq!(got, want, "{input}");
            assert!(pattern.is_match(got), "{got} fails the CRD pattern");
            assert!(!got.contains(' ') && !got.contains("day"));
        }
        let out = convert(&cm(
            "NetworkChaos",
            "  action: delay\n  delay: { latency: 60s, jitter: 1500ms }\n  duration: 2m\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.contains("latency: 1m\n") && out.contains("jitter: 1s500ms"),
            "{out}"
        );
    }

    #[test]
    fn stress_ng_options_translate_where_havoc_has_the_equivalent() {
        let o = stress("  duration: 1m\n  stressngStressors: \"--cpu 2 --cpu-load 50 --vm 2 --vm-bytes 128m --timeout 30s\"\n");
        let s = &o.spec.stressors;
        assert_eq!(
            (
                s.cpu.as_ref().unwrap().workers,
                s.cpu.as_ref().unwrap().load
            ),
            (2, 50)
        );
        let m = s.memory.as_ref().unwrap();
        // --vm-bytes is per worker in stress-ng; Havoc's size is what the workers hold together.
        assert_eq!((m.workers, m.size), (2, "256MiB".parse().unwrap()));
        assert_eq!(
            o.spec.duration.unwrap().0,
            std::time::Duration::from_secs(30)
        );
        // stressngStressors wins over stressors, as in Chaos Mesh.
        let o = stress("  stressngStressors: --vm=1\n  stressors: { cpu: { workers: 4 } }\n");
        assert!(o.spec.stressors.cpu.is_none());
        assert_eq!(
            o.spec.stressors.memory.as_ref().unwrap().size,
            "256MiB".parse().unwrap()
        );
        let o = stress("  stressors:\n    cpu: { workers: 1, load: 90, options: [\"--cpu-load 30\", \"--timeout 5m\"] }\n    memory: { size: 64MB, options: [\"--vm 4\"] }\n");
        assert_eq!(o.spec.stressors.cpu.as_ref().unwrap().load, 30);
        assert_eq!(o.spec.stressors.memory.as_ref().unwrap().workers, 4);
        assert_eq!(
            o.spec.duration.unwrap().0,
            std::time::Duration::from_secs(300)
        );
        for (spec, want) in [
            (
                "  stressngStressors: --cpu 1 --cpu-method all\n",
                "spec.stressngStressors: stress-ng option `--cpu-method` has no Havoc equivalent",
            ),
            (
                "  stressngStressors: --hdd 1\n",
                "stress-ng option `--hdd` has no Havoc equivalent",
            ),
            (
                "  stressngStressors: --cpu 0\n",
                "`--cpu 0` means one CPU worker per CPU in stress-ng",
            ),
            (
                "  stressngStressors: --vm 1 --vm-bytes 50%\n",
                "a percentage of the host's memory has no Havoc equivalent",
            ),
            (
                "  stressngStressors: --cpu-load 20\n",
                "`--cpu-load` needs `--cpu N`",
            ),
            (
                "  stressngStressors: --timeout 10s\n",
                "names no stressor Havoc runs",
            ),
            (
                "  stressors: { memory: { size: 1GB, options: [\"--vm-hang 1\"] } }\n",
                "spec.stressors.memory.options: stress-ng option `--vm-hang`",
            ),
        ] {
            let text = refused("StressChaos", spec);
            assert!(text.contains(want), "{spec}: {text}");
        }
    }

    #[test]
    fn empty_selector_is_every_pod_of_the_objects_namespace() {
        let src = "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata: {name: x, namespace: shop}\nspec:\n  action: loss\n  mode: all\n  selector: {}\n  loss: {loss: \"5\"}\n";
        assert!(
            is_kubernetes_manifest(src),
            "a Chaos Mesh object goes down the Kubernetes path"
        );
        let Manifest::NetworkChaos(o) = validate_manifest(src).expect("valid") else {
            panic!()
        };
        assert_eq!(o.spec.selector, crate::PodSelector::default());
        assert_eq!(o.spec.selector.target_namespaces("shop"), ["shop"]);
        let out = convert(src).unwrap();
        assert!(out.contains("selector: {}"), "{out}");
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
        let bad = convert(&format!(
            "{a}---\n{}",
            cm("KernelChaos", "  action: abort\n")
        ))
        .unwrap_err();
        assert!(
            bad.render("s.yaml")
                .contains("s.yaml:28:7: kind: unsupported kind `KernelChaos`"),
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
    fn schedules_and_workflows_convert_in_a_stream_with_chaos_objects() {
        let pod = cm("PodChaos", "  action: pod-kill\n");
        let schedule = "apiVersion: chaos-mesh.org/v1alpha1\nkind: Schedule\nmetadata: {name: io-nightly, namespace: shop}\nspec:\n  schedule: \"0 3 * * *\"\n  type: IOChaos\n  historyLimit: 2\n  ioChaos: {action: fault, mode: one, selector: {labelSelectors: {app: db}}, volumePath: /var/lib/db, errno: 5, percent: 30, duration: 90s}\n";
        let workflow = "apiVersion: chaos-mesh.org/v1alpha1\nkind: Workflow\nmetadata: {name: wf, namespace: shop}\nspec:\n  entry: main\n  templates:\n    - {name: main, templateType: Serial, children: [kill, skew]}\n    - {name: kill, templateType: PodChaos, podChaos: {action: pod-kill, mode: one, selector: {}}}\n    - {name: skew, templateType: TimeChaos, deadline: 1m30s, timeChaos: {mode: all, selector: {}, timeOffset: 10m}}\n";
        let out = convert(&format!("{pod}---\n{schedule}---\n{workflow}"))
            .unwrap_or_else(|e| panic!("{}", e.render("s.yaml")));
        let docs: Vec<&str> = out.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), 3, "{out}");
        assert!(docs[0].contains("kind: PodChaos"));
        let s: crate::schedule_crd::Schedule =
            serde_yaml_ng::from_str(docs[1]).expect("a Schedule");
        assert_eq!(s.spec.type_, crate::schedule_crd::ScheduleType::IOChaos);
        let io = s.spec.io_chaos.as_ref().expect("ioChaos");
        assert_eq!(
            io.duration.map(|d| d.0),
            Some(std::time::Duration::from_secs(90))
        );
        assert!(
            docs[1].contains("duration: 1m30s"),
            "Go durations: {}",
            docs[1]
        );
        s.spec
            .plan(&FieldPath::root().key("spec"))
            .expect("the operator runs it");
        let w: crate::workflow_crd::Workflow =
            serde_yaml_ng::from_str(docs[2]).expect("a Workflow");
        assert!(w
            .spec
            .template("skew")
            .and_then(|t| t.time_chaos.as_ref())
            .is_some());

        // Problems in an embedded spec carry the document's line and the full path.
        let bad = workflow.replace("timeOffset: 10m", "timeOffset: 10m, clockIds: [CLOCK_NOPE]");
        let e = convert(&format!("{pod}---\n{bad}")).expect_err("refused");
        let text = e.render("s.yaml");
        assert!(
            text.contains("spec.templates[2].timeChaos.clockIds"),
            "{text}"
        );
        assert!(
            text.contains("s.yaml:35:"),
            "the line in the stream: {text}"
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
