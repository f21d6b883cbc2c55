//! Conversion of Chaos Mesh `Schedule` and `Workflow` manifests to `havoc.dev/v1alpha1`.
//!
//! The fields are the same; what changes is the embedded chaos: each `podChaos`,
//! `networkChaos`, `stressChaos`, `ioChaos`, `timeChaos`, `dnsChaos`, `httpChaos` (in a schedule,
//! or in a workflow template) goes through the chaos converter ([`crate::convert::convert`]), so it means what a converted standalone object
//! means. The result is then checked with the operator's own rules
//! ([`crate::workflow_crd::WorkflowSpec::to_spec`], [`crate::schedule_crd::ScheduleSpec::plan`]),
//! so a converted manifest is one the operator runs. Branch expressions are CEL in Havoc: an
//! expr-only form (`and`, `contains`...) is refused with its CEL spelling, not rewritten.
//!
//! The converter ([`crate::convert::convert`], `havoc convert`) calls [`convert_document`] for
//! each document before its own kinds.

use havoc_spec::error::SpecError;
use havoc_spec::yaml::{Node, Pos, Value};
use havoc_spec::FieldPath;
use serde_json::{Map, Value as J};

use crate::convert::CHAOS_MESH_API_VERSION;
use crate::crd::API_VERSION;

/// The embedded chaos keys Havoc's Schedule and Workflow take, and their kinds.
const CHAOS_KEYS: &[(&str, &str)] = &[
    ("podChaos", "PodChaos"),
    ("networkChaos", "NetworkChaos"),
    ("stressChaos", "StressChaos"),
    ("ioChaos", "IOChaos"),
    ("timeChaos", "TimeChaos"),
    ("dnsChaos", "DNSChaos"),
    ("httpChaos", "HTTPChaos"),
];

/// The metadata kept (as the chaos converter keeps it).
const META_KEYS: &[&str] = &["name", "namespace", "labels", "annotations"];

fn err(pos: Pos, path: FieldPath, message: impl Into<String>) -> SpecError {
    SpecError {
        path,
        pos,
        message: message.into(),
    }
}

/// A YAML node as JSON: an unquoted scalar is a bool, a number or null when it reads as one
/// (YAML's core schema), else a string.
pub fn node_to_json(n: &Node) -> J {
    match &n.value {
        Value::Null => J::Null,
        Value::Scalar { text, quoted: true } => J::String(text.clone()),
        Value::Scalar {
            text,
            quoted: false,
        } => match text.as_str() {
            "true" | "True" | "TRUE" => J::Bool(true),
            "false" | "False" | "FALSE" => J::Bool(false),
            "null" | "Null" | "NULL" | "~" => J::Null,
            t => {
                if let Ok(i) = t.parse::<i64>() {
                    J::from(i)
                } else if let Some(f) = t
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && t.contains('.'))
                {
                    J::from(f)
                } else {
                    J::String(t.to_string())
                }
            }
        },
        Value::Seq(items) => J::Array(items.iter().map(node_to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_scalar().unwrap_or_default().to_string(),
                        node_to_json(v),
                    )
                })
                .collect(),
        ),
    }
}

/// Converts one embedded Chaos Mesh chaos spec (at `path` in `doc`) with the chaos converter;
/// its problems get paths and positions in `doc`.
fn convert_chaos(
    kind: &str,
    node: &Node,
    path: &FieldPath,
    doc: &Node,
    errors: &mut Vec<SpecError>,
) -> Option<J> {
    let synthetic = serde_json::json!({
        "apiVersion": CHAOS_MESH_API_VERSION,
        "kind": kind,
        "metadata": {"name": "embedded"},
        "spec": node_to_json(node),
    });
    let text = serde_yaml_ng::to_string(&synthetic).expect("JSON serializes to YAML");
    match crate::convert::convert(&text) {
        Ok(out) => {
            let v: J = serde_yaml_ng::from_str(&out).ok()?;
            Some(v["spec"].clone())
        }
        Err(es) => {
            for e in es.0 {
                // `spec.x` in the synthetic document is `path.x` here.
                let mut p = path.clone();
                for seg in e.path.segments().iter().skip(1) {
                    p = match seg {
                        havoc_spec::path::Segment::Key(k) => p.key(k.clone()),
                        havoc_spec::path::Segment::Index(i) => p.index(*i),
                    };
                }
                errors.push(err(p.locate(doc), p, e.message));
            }
            None
        }
    }
}

/// Replaces the Chaos Mesh chaos embedded in `map` (a schedule spec or a workflow template).
fn convert_embedded(
    map: &mut Map<String, J>,
    node: &Node,
    path: &FieldPath,
    doc: &Node,
    errors: &mut Vec<SpecError>,
) {
    for (key, kind) in CHAOS_KEYS {
        if let Some(n) = node.get(key) {
            if let Some(v) = convert_chaos(kind, n, &path.key(*key), doc, errors) {
                map.insert((*key).to_string(), v);
            }
        }
    }
    if let Value::Map(entries) = &node.value {
        for (k, _) in entries {
            let k = k.as_scalar().unwrap_or_default();
            if k.ends_with("Chaos") && !CHAOS_KEYS.iter().any(|(c, _)| *c == k) {
                let why = if k == "syscallChaos" {
                    "SyscallChaos is Havoc's own kind, not Chaos Mesh's: write this object as \
                     havoc.dev/v1alpha1 (it needs no conversion)"
                        .to_string()
                } else {
                    format!(
                        "`{k}` is not a kind Havoc has: a Schedule or Workflow embeds podChaos, \
                         networkChaos, stressChaos, ioChaos, timeChaos, dnsChaos or httpChaos"
                    )
                };
                errors.push(err(node.pos, path.key(k), why));
            }
        }
    }
}

fn convert_workflow_spec(
    spec: &Node,
    sp: &FieldPath,
    doc: &Node,
    errors: &mut Vec<SpecError>,
) -> J {
    let mut out = match node_to_json(spec) {
        J::Object(m) => m,
        _ => Map::new(),
    };
    if let (Some(Value::Seq(ts)), Some(J::Array(jts))) = (
        spec.get("templates").map(|n| &n.value),
        out.get_mut("templates"),
    ) {
        for (i, (tn, tj)) in ts.iter().zip(jts.iter_mut()).enumerate() {
            let tp = sp.key("templates").index(i);
            if let J::Object(m) = tj {
                convert_embedded(m, tn, &tp, doc, errors);
                // A Schedule template's `schedule` (Chaos Mesh's ChaosOnlyScheduleSpec) embeds
                // its chaos the same way; its `startingDeadlineSeconds` may be null there.
                if let (Some(sn), Some(J::Object(sm))) = (tn.get("schedule"), m.get_mut("schedule"))
                {
                    convert_embedded(sm, sn, &tp.key("schedule"), doc, errors);
                    if sm.get("startingDeadlineSeconds") == Some(&J::Null) {
                        sm.remove("startingDeadlineSeconds");
                    }
                }
                // Chaos Mesh's task may carry volumes; Havoc's task pod has none.
                if let Some(J::Object(task)) = m.get("task") {
                    if task.contains_key("volumes") {
                        errors.push(err(
                            tn.pos,
                            tp.key("task").key("volumes"),
                            "task volumes are not supported: a task pod has its container only",
                        ));
                    }
                }
            }
        }
    }
    J::Object(out)
}

/// The Havoc YAML of a Chaos Mesh `Schedule` or `Workflow` document, or its problems; `None`
/// when the document is another kind.
pub fn convert_document(doc: &Node) -> Option<Result<String, Vec<SpecError>>> {
    let kind = doc.get("kind").and_then(Node::as_scalar)?;
    if kind != "Schedule" && kind != "Workflow" {
        return None;
    }
    let mut errors = Vec::new();
    let top = FieldPath::root();
    // Argo's Workflow (argoproj.io) and the like are other things with the same kind.
    match doc.get("apiVersion") {
        None => errors.push(err(doc.pos, top.key("apiVersion"), "is required")),
        Some(n) if n.as_scalar() != Some(CHAOS_MESH_API_VERSION) => errors.push(err(
            n.pos,
            top.key("apiVersion"),
            format!(
                "unsupported apiVersion `{}`: expected `{CHAOS_MESH_API_VERSION}` (a Chaos Mesh manifest)",
                n.as_scalar().unwrap_or_default()
            ),
        )),
        Some(_) => {}
    }
    let mut meta = Map::new();
    if let Some(m) = doc.get("metadata") {
        if let J::Object(all) = node_to_json(m) {
            for (k, v) in all {
                if META_KEYS.contains(&k.as_str()) {
                    meta.insert(k, v);
                }
            }
        }
    }
    if !meta.contains_key("name") {
        errors.push(err(doc.pos, top.key("metadata").key("name"), "is required"));
    }
    let sp = top.key("spec");
    let Some(spec) = doc.get("spec") else {
        errors.push(err(doc.pos, sp, "is required"));
        return Some(Err(errors));
    };
    let spec_json = if kind == "Workflow" {
        convert_workflow_spec(spec, &sp, doc, &mut errors)
    } else {
        let mut m = match node_to_json(spec) {
            J::Object(m) => m,
            _ => Map::new(),
        };
        convert_embedded(&mut m, spec, &sp, doc, &mut errors);
        if let Some(w) = spec.get("workflow") {
            m.insert(
                "workflow".into(),
                convert_workflow_spec(w, &sp.key("workflow"), doc, &mut errors),
            );
        }
        J::Object(m)
    };
    if !errors.is_empty() {
        return Some(Err(errors));
    }
    // The operator's own checks, so the output is what it runs.
    let checked = if kind == "Workflow" {
        serde_json::from_value::<crate::workflow_crd::WorkflowSpec>(spec_json.clone())
            .map_err(|e| vec![e.to_string()])
            .and_then(|w| w.to_spec(&sp).map(|_| ()).map_err(|e| e.0))
    } else {
        serde_json::from_value::<crate::schedule_crd::ScheduleSpec>(spec_json.clone())
            .map_err(|e| vec![e.to_string()])
            .and_then(|s| s.plan(&sp).map(|_| ()).map_err(|e| e.0))
    };
    if let Err(lines) = checked {
        for l in lines {
            // `spec.templates[2].deadline: message` -> that path and its position.
            let (path, msg) = match l.split_once(": ") {
                Some((p, m)) if p.starts_with("spec") => (FieldPath::parse(p), m.to_string()),
                _ => (sp.clone(), l.clone()),
            };
            errors.push(err(path.locate(doc), path, msg));
        }
        return Some(Err(errors));
    }
    let out = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": meta,
        "spec": spec_json,
    });
    Some(Ok(
        serde_yaml_ng::to_string(&out).expect("JSON serializes to YAML")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Result<String, Vec<SpecError>> {
        let docs = havoc_spec::yaml::parse_documents(src).expect("yaml");
        convert_document(&docs[0]).expect("a Schedule or Workflow")
    }

    #[test]
    fn a_chaos_mesh_schedule_template_converts_with_its_embedded_chaos() {
        let out = one(r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf, namespace: chaos}
spec:
  entry: main
  templates:
    - name: main
      templateType: Serial
      children: [kill-often]
    - name: kill-often
      templateType: Schedule
      deadline: 5m
      schedule:
        schedule: "@every 30s"
        startingDeadlineSeconds: null
        concurrencyPolicy: Forbid
        historyLimit: 3
        type: PodChaos
        podChaos:
          action: pod-kill
          mode: one
          selector: {labelSelectors: {app: web}}
"#)
        .expect("converts");
        let w: crate::workflow_crd::Workflow = serde_yaml_ng::from_str(&out).expect("a Workflow");
        let t = w.spec.template("kill-often").expect("template");
        let s = t.schedule.as_ref().expect("schedule");
        assert_eq!(s.schedule, "@every 30s");
        assert_eq!(s.history_limit, Some(3));
        assert_eq!(s.starting_deadline_seconds, None);
        assert!(s.pod_chaos.is_some());
        w.spec
            .to_spec(&FieldPath::root().key("spec"))
            .expect("the operator runs it");
        // Without a deadline the operator refuses it, at its path.
        let e = one(
            r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entry: s
  templates:
    - name: s
      templateType: Schedule
      schedule:
        schedule: "@every 30s"
        type: NetworkChaos
        networkChaos: {action: bandwidth, mode: all, selector: {}, bandwidth: {rate: 1mbps, limit: 100, buffer: 10000}}
"#,
        )
        .expect_err("no deadline");
        assert!(
            e.iter()
                .any(|e| e.path.to_string() == "spec.templates[0].deadline"),
            "{e:?}"
        );
    }

    #[test]
    fn a_chaos_mesh_schedule_converts_with_its_embedded_chaos() {
        let out = one(r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: kill-often, namespace: shop, uid: x}
spec:
  schedule: "@every 30s"
  concurrencyPolicy: Forbid
  historyLimit: 3
  type: PodChaos
  podChaos:
    action: pod-kill
    mode: one
    selector: {namespaces: [shop], labelSelectors: {app: web}}
"#)
        .unwrap_or_else(|e| panic!("{e:?}"));
        let v: J = serde_yaml_ng::from_str(&out).expect("yaml out");
        assert_eq!(v["apiVersion"], "havoc.dev/v1alpha1");
        assert_eq!(
            v["metadata"],
            serde_json::json!({"name": "kill-often", "namespace": "shop"})
        );
        assert_eq!(v["spec"]["historyLimit"], 3);
        assert_eq!(v["spec"]["podChaos"]["action"], "pod-kill");
        let s: crate::schedule_crd::Schedule = serde_yaml_ng::from_str(&out).expect("a Schedule");
        assert_eq!(s.spec.history_limit, Some(3));
    }

    #[test]
    fn a_chaos_mesh_workflow_converts_and_bad_parts_say_where() {
        let src = r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entry: main
  templates:
    - {name: main, templateType: Serial, children: [net, wait]}
    - name: net
      templateType: NetworkChaos
      deadline: 30s
      networkChaos:
        action: delay
        mode: all
        selector: {labelSelectors: {app: web}}
        delay: {latency: 100ms}
    - {name: wait, templateType: Suspend, deadline: 10s}
"#;
        let out = one(src).unwrap_or_else(|e| panic!("{e:?}"));
        let w: crate::workflow_crd::Workflow = serde_yaml_ng::from_str(&out).expect("a Workflow");
        assert_eq!(w.spec.templates.len(), 3);
        assert!(w.spec.templates[1].network_chaos.is_some());

        let bad = src
            .replace("deadline: 10s", "deadline: 10s}\n    - {name: t, templateType: Task, task: {container: {name: c, image: i}}, conditionalBranches: [{target: wait, expression: 'exitCode == 0 and true'}]")
            .replace("children: [net, wait]", "children: [net, wait, t]")
            .replace("action: delay", "action: nothing");
        let errs = one(&bad).expect_err("refused");
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}:{}: {}: {}", e.pos.line, e.pos.col, e.path, e.message))
            .collect();
        let all = text.join("\n");
        assert!(
            all.contains("spec.templates[1].networkChaos.action"),
            "{all}"
        );
        assert!(!all.contains("embedded"), "{all}");
    }

    #[test]
    fn expr_branches_are_refused_with_their_cel_spelling() {
        let errs = one(r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entry: t
  templates:
    - name: t
      templateType: Task
      task: {container: {name: c, image: busybox, command: [sh, -c, "exit 1"]}}
      conditionalBranches:
        - {target: w, expression: "exitCode == 0 and stdout == 'ok'"}
    - {name: w, templateType: Suspend, deadline: 1s}
"#)
        .expect_err("refused");
        let all: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        let all = all.join("\n");
        assert!(
            all.contains("spec.templates[0].conditionalBranches[0].expression"),
            "{all}"
        );
        assert!(all.contains("`&&`"), "{all}");
        assert!(
            errs.iter().all(|e| e.pos.line > 1),
            "positions in the document: {all}"
        );
    }

    #[test]
    fn every_chaos_mesh_kind_havoc_has_converts_inside_a_workflow() {
        let out = one(r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: all-kinds}
spec:
  entry: main
  templates:
    - {name: main, templateType: Parallel, children: [io, time, dns, http]}
    - name: io
      templateType: IOChaos
      deadline: 30s
      ioChaos: {action: latency, mode: one, selector: {}, volumePath: /data, delay: 1s500ms, percent: 50}
    - name: time
      templateType: TimeChaos
      timeChaos: {mode: one, selector: {}, timeOffset: -1h30m, duration: 20s}
    - name: dns
      templateType: DNSChaos
      deadline: 1m
      dnsChaos: {action: error, mode: all, selector: {}, patterns: [google.com]}
    - name: http
      templateType: HTTPChaos
      deadline: 10s
      httpChaos: {mode: all, selector: {}, target: Request, port: 80, abort: true}
"#)
        .unwrap_or_else(|e| panic!("{e:?}"));
        let w: crate::workflow_crd::Workflow = serde_yaml_ng::from_str(&out).expect("a Workflow");
        let t = |n: &str| w.spec.template(n).expect(n).clone();
        // Through the chaos converter: Go durations, Chaos Mesh's meaning.
        let io = t("io").io_chaos.expect("ioChaos");
        assert_eq!(io.volume_path, "/data");
        assert!(
            out.contains("delay: 1.5s") || out.contains("delay: 1s500ms"),
            "{out}"
        );
        assert_eq!(
            t("time").time_chaos.expect("timeChaos").duration,
            Some(havoc_spec::units::HumanDuration(
                std::time::Duration::from_secs(20)
            ))
        );
        assert!(t("dns").dns_chaos.is_some() && t("http").http_chaos.is_some());
        w.spec
            .to_spec(&FieldPath::root().key("spec"))
            .expect("the operator runs it");
    }

    #[test]
    fn kinds_havoc_does_not_embed_are_refused_by_name() {
        let errs = one(r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata: {name: s}
spec:
  schedule: "@hourly"
  type: JVMChaos
  jvmChaos: {action: gc, mode: one, selector: {}}
  syscallChaos: {}
"#)
        .expect_err("refused");
        let all: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        let all = all.join("\n");
        assert!(
            all.contains("spec.jvmChaos: `jvmChaos` is not a kind Havoc has"),
            "{all}"
        );
        assert!(
            all.contains("spec.syscallChaos: SyscallChaos is Havoc's own kind"),
            "{all}"
        );
    }

    #[test]
    fn a_workflow_of_another_api_group_is_refused() {
        let errs = one("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entry: a\n  templates: [{name: a, templateType: Suspend, deadline: 1s}]\n")
            .expect_err("Argo's Workflow is not Chaos Mesh's");
        assert_eq!(errs[0].path.to_string(), "apiVersion");
        assert!(
            errs[0]
                .message
                .contains("unsupported apiVersion `argoproj.io/v1alpha1`"),
            "{errs:?}"
        );
        assert_eq!((errs[0].pos.line, errs[0].pos.col), (1, 13));
    }

    #[test]
    fn other_kinds_are_left_to_the_chaos_converter() {
        let docs = havoc_spec::yaml::parse_documents("kind: PodChaos\nspec: {}\n").expect("yaml");
        assert!(convert_document(&docs[0]).is_none());
    }
}
