//! Reading the `fault_json` of an Inject request with havoc-spec's own parser and validation, so
//! the agent answers a mistake with the same `LINE:COL: field.path: message` as `havoc validate`.
//!
//! The document is `{"kind": "NetworkChaos", "spec": {...}}`, the spec being a single-fault
//! manifest's spec. Its selector is ignored (the request's target is the only thing hit), so it
//! may be left out; an optional `duration` is passed to faults that size work by it.

use std::time::Duration;

use havoc_spec::error::Problems;
use havoc_spec::experiment::{load_fault, FAULT_KINDS};
use havoc_spec::yaml::{Node, Pos, Value};
use havoc_spec::{FaultSpec, FieldPath, SpecError, SpecErrors};

/// A fault read from a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedFault {
    pub spec: FaultSpec,
    /// The spec's `duration`, if given.
    pub duration: Option<Duration>,
}

fn err(pos: Pos, path: FieldPath, message: impl Into<String>) -> SpecErrors {
    SpecErrors(vec![SpecError {
        path,
        pos,
        message: message.into(),
    }])
}

/// Parses and validates `fault_json`. Errors render as `fault_json:LINE:COL: path: message`
/// with [`SpecErrors::render`].
pub fn parse_fault_json(src: &str) -> Result<RequestedFault, SpecErrors> {
    let root = FieldPath::root();
    let docs = havoc_spec::yaml::parse_documents(src)
        .map_err(|e| err(e.pos, root.clone(), format!("invalid JSON: {}", e.message)))?;
    let Some(doc) = docs.first() else {
        return Err(err(
            Pos { line: 1, col: 1 },
            root,
            "is empty: expected {\"kind\": ..., \"spec\": {...}}",
        ));
    };
    let Value::Map(entries) = &doc.value else {
        return Err(err(
            doc.pos,
            root,
            format!(
                "expected an object with kind and spec, got {}",
                doc.describe()
            ),
        ));
    };
    for (k, _) in entries {
        let name = k.as_scalar().unwrap_or_default();
        if name != "kind" && name != "spec" {
            return Err(err(
                k.pos,
                root.key(name),
                "unknown field: the fault document has only `kind` and `spec`",
            ));
        }
    }
    let kinds = FAULT_KINDS.join(", ");
    let kind = match doc.get("kind") {
        None => {
            return Err(err(
                doc.pos,
                root.key("kind"),
                format!("is required: one of {kinds}"),
            ))
        }
        Some(n) => match n.as_scalar() {
            Some(k) => k.to_string(),
            None => {
                return Err(err(
                    n.pos,
                    root.key("kind"),
                    format!("expected one of {kinds}, got {}", n.describe()),
                ))
            }
        },
    };
    let spec_path = root.key("spec");
    let Some(spec) = doc.get("spec") else {
        return Err(err(
            doc.pos,
            spec_path,
            "is required: the fault's fields, e.g. {\"action\": \"kill\"}",
        ));
    };
    // The selector is ignored; one must exist for the spec types, so supply an empty one.
    let mut spec = spec.without_keys(&["selector"]);
    if let Value::Map(e) = &mut spec.value {
        let at = spec.pos;
        e.push((
            Node::new(
                at,
                Value::Scalar {
                    text: "selector".into(),
                    quoted: false,
                },
            ),
            Node::new(at, Value::Map(Vec::new())),
        ));
    }
    let entry =
        load_fault(&spec, &spec_path, Some((&kind, "agent".to_string()))).map_err(SpecErrors)?;
    let mut p = Problems::new();
    entry.spec.validate(&spec_path, &mut p);
    let selector = spec_path.key("selector");
    let sel = selector.to_string();
    let problems: Vec<SpecError> = p
        .into_vec()
        .into_iter()
        .filter(|(path, _)| {
            let s = path.to_string();
            s != sel && !s.starts_with(&format!("{sel}."))
        })
        .map(|(path, message)| SpecError {
            pos: path.locate(doc),
            path,
            message,
        })
        .collect();
    if !problems.is_empty() {
        return Err(SpecErrors(problems));
    }
    Ok(RequestedFault {
        spec: entry.spec,
        duration: entry.duration.map(|d| d.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_fault_parses_without_selector() {
        let f = parse_fault_json(
            r#"{"kind": "NetworkChaos", "spec": {"action": "loss", "loss": {"loss": "25"}}}"#,
        )
        .expect("valid");
        assert_eq!(f.spec.kind(), "NetworkChaos");
        assert!(f.duration.is_none());
    }

    #[test]
    fn a_given_selector_is_ignored() {
        let f = parse_fault_json(
            r#"{"kind": "ProcessChaos", "spec": {"action": "kill", "duration": "1s", "selector": {"pids": [1]}}}"#,
        )
        .expect("valid");
        assert_eq!(f.spec.selector().pids, Vec::<i32>::new());
        assert_eq!(f.duration, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_typo_is_reported_with_line_column_and_field_path() {
        let src = "{\"kind\": \"ProcessChaos\",\n \"spec\": {\"acton\": \"kill\"}}";
        let e = parse_fault_json(src).expect_err("invalid");
        let text = e.render("fault_json");
        assert!(text.starts_with("fault_json:2:"), "{text}");
        assert!(text.contains("spec"), "{text}");
        assert!(text.contains("action"), "did-you-mean: {text}");
    }

    #[test]
    fn an_unknown_kind_suggests_the_closest() {
        let e = parse_fault_json(r#"{"kind": "NetworkChoas", "spec": {}}"#).expect_err("invalid");
        let text = e.render("fault_json");
        assert!(text.contains("kind"), "{text}");
        assert!(text.contains("NetworkChaos"), "{text}");
    }

    #[test]
    fn a_validation_problem_names_its_field() {
        let e = parse_fault_json(
            r#"{"kind": "StressChaos", "spec": {"stressors": {"cpu": {"workers": 0}}}}"#,
        )
        .expect_err("invalid");
        let text = e.render("fault_json");
        assert!(text.contains("spec.stressors.cpu.workers"), "{text}");
    }

    #[test]
    fn not_json_at_all_is_an_error() {
        assert!(parse_fault_json("[1, 2").is_err());
        assert!(parse_fault_json("").is_err());
        assert!(parse_fault_json(r#"{"kind": "ProcessChaos"}"#).is_err());
        assert!(parse_fault_json(r#"{"kind": "ProcessChaos", "spec": {}, "x": 1}"#).is_err());
    }
}
