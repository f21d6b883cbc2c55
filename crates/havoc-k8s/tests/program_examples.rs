//! The Kubernetes Workflow and Schedule examples (`examples/kubernetes/{workflow,schedule}-*.yaml`:
//! Chaos Mesh's serial, parallel, status-check and custom-task workflow shapes, and schedules)
//! are valid as the operator reads them, and each one's Chaos Mesh form (`chaos-mesh.org/v1alpha1`)
//! is what `havoc convert` turns into the same spec, so the examples and the converter cannot
//! drift apart. The e2e suite applies them to a real API server (`e2e_kubelet.rs`).

use havoc_k8s::schedule_crd::{Schedule, ScheduleType};
use havoc_k8s::workflow_crd::{TemplateType, Workflow, WorkflowSpec};
use havoc_spec::FieldPath;

fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            (n.starts_with("workflow-") || n.starts_with("schedule-")) && n.ends_with(".yaml")
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read example");
            (p.display().to_string(), text)
        })
        .collect();
    out.sort();
    out
}

fn types(w: &WorkflowSpec) -> Vec<TemplateType> {
    w.templates.iter().map(|t| t.template_type).collect()
}

#[test]
fn workflow_and_schedule_examples_are_valid_and_convert_from_chaos_mesh() {
    let mut shapes = Vec::new();
    for (name, text) in examples() {
        let sp = FieldPath::root().key("spec");
        let chaos_mesh = text.replace(
            "apiVersion: havoc.dev/v1alpha1",
            "apiVersion: chaos-mesh.org/v1alpha1",
        );
        let converted =
            havoc_k8s::convert(&chaos_mesh).unwrap_or_else(|e| panic!("{}", e.render(&name)));
        let converted = converted.trim_start_matches("---\n");
        let (spec, kind) = if text.contains("\nkind: Schedule\n") {
            let s: Schedule = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}: not a Schedule: {e}"));
            s.spec
                .plan(&sp)
                .unwrap_or_else(|e| panic!("{name}: the operator refuses it: {e}"));
            let c: Schedule = serde_yaml_ng::from_str(converted).expect("converted Schedule");
            assert_eq!(
                c.spec, s.spec,
                "{name}: the conversion differs:\n{converted}"
            );
            shapes.push(format!("schedule of {}", s.spec.type_.name()));
            (s.spec.workflow.clone(), s.spec.type_)
        } else {
            let w: Workflow = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}: not a Workflow: {e}"));
            w.spec
                .to_spec(&sp)
                .unwrap_or_else(|e| panic!("{name}: the operator refuses it: {e}"));
            let c: Workflow = serde_yaml_ng::from_str(converted).expect("converted Workflow");
            assert_eq!(
                c.spec, w.spec,
                "{name}: the conversion differs:\n{converted}"
            );
            (Some(w.spec), ScheduleType::Workflow)
        };
        if let Some(w) = spec {
            let ty = types(&w);
            let entry = w.template(&w.entry).expect("entry").template_type;
            if ty.contains(&TemplateType::Task)
                && w.templates
                    .iter()
                    .any(|t| !t.conditional_branches.is_empty())
            {
                shapes.push("custom-task".into());
            } else if ty.contains(&TemplateType::StatusCheck) {
                shapes.push("status-check".into());
            } else if kind == ScheduleType::Workflow && entry == TemplateType::Parallel {
                shapes.push("parallel".into());
            } else if entry == TemplateType::Serial {
                shapes.push("serial".into());
            }
        }
    }
    shapes.sort();
    shapes.dedup();
    for want in [
        "custom-task",
        "parallel",
        "schedule of PodChaos",
        "schedule of Workflow",
        "serial",
        "status-check",
    ] {
        assert!(
            shapes.iter().any(|s| s == want),
            "no {want} example in examples/kubernetes: {shapes:?}"
        );
    }
}
